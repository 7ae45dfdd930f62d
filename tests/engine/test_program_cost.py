"""Program costs against measurements: every estimate bounds the measured peak, within a factor.

As ``test_cost.py`` does for op lists: each program kind (evaluate, VJP, Jacobian by each strategy
and format, HVP, dense Hessian) runs under :mod:`tracemalloc` on programs built from expressions
that use every family of n-ary operation (contractions, broadcasting, xcorr2d of image and kernel,
joining, slicing, selection), and ``measured <= estimate <= FACTOR * measured + BUFFERS``.
"""

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from service.api.programs import build_program
from service.engine.cost import BUFFERS, Cost
from service.engine.descent import DescentParams, collect
from service.engine.estimates import minimize_step_cost
from service.engine.functions import FunctionLimits
from service.engine.graph import costs, strategies
from service.engine.graph import requests as programs
from service.engine.graph.curvature import hessian_plan, program_hessian
from service.engine.graph.descent import descend_program
from service.engine.graph.hvp import program_hvp
from service.engine.graph.program import Program
from service.engine.minimize import minimize_program
from service.engine.minimize_params import MinimizeParams
from tests.engine.test_cost import FACTOR, FD_CHECK_FACTOR, NS_PER_UNIT, measured
from tests.engine.test_cost_second_order import RUN_LIMITS, STEPS, check_run

LIMITS = FunctionLimits(10**8, 10**8, 10**8)
# A structural Hessian is costed from its non-zero bound, which lets every element a curved node
# reads meet every other (n^2 for tanh(matmul(A, x)), 285x the entries it has); a dense one as
# batches of whole HVP passes, while the engine linearizes once and reuses it.
STRUCTURAL_FACTOR = 400
PROGRAMS: list[tuple[str, dict[str, tuple[int, ...]]]] = [
    ("sum(tanh(matmul(A, x)))", {"A": (60, 80), "x": (80,)}),
    ("sum(einsum(a, b, subscripts='i,j->ij'))", {"a": (120,), "b": (90,)}),
    ("sum(square(xcorr2d(x, k, padding='full')))", {"x": (2, 12, 14), "k": (3, 2, 3, 3)}),
    ("sum(a * b + c)", {"a": (40, 1), "b": (1, 50), "c": (50,)}),
    ("sum(concatenate(exp(a), sin(b)))", {"a": (100,), "b": (200,)}),
    ("mse(maximum(a, b), d)", {"a": (30, 40), "b": (30, 40), "d": (30, 40)}),
    ("sum(stack(a, b) * 2)", {"a": (50, 60), "b": (50, 60)}),
    ("sum(square(a[1:, ::2]))", {"a": (80, 90)}),
    ("sum(matmul(A, B))", {"A": (70, 60), "B": (60, 50)}),
]


def check(cost: Cost, call: Callable[[], Any], inputs: int, factor: int = FACTOR) -> None:
    peak, seconds = measured(call)
    assert peak <= cost.peak_bytes, f"measured {peak} B > estimated {cost.peak_bytes} B"
    assert cost.peak_bytes <= factor * (peak + inputs) + BUFFERS, (cost.peak_bytes, peak)
    assert seconds * 1e9 <= NS_PER_UNIT * cost.work + 0.05e9, (seconds, cost.work)


def setup(
    expression: str, shapes: dict[str, tuple[int, ...]]
) -> tuple[Program, dict[str, np.ndarray], int]:
    program = build_program(expression, shapes, "F")
    rng = np.random.default_rng(len(expression))
    inputs = {name: rng.uniform(0.5, 1.5, shape) for name, shape in shapes.items()}
    return program, inputs, sum(value.nbytes for value in inputs.values())


@pytest.mark.parametrize(("expression", "shapes"), PROGRAMS, ids=[e for e, _ in PROGRAMS])
def test_evaluate_products_and_second_order_are_bounded(
    expression: str, shapes: dict[str, tuple[int, ...]]
) -> None:
    program, inputs, size = setup(expression, shapes)
    names = tuple(program.inputs)
    check(costs.trace_cost(program), lambda: program.trace(inputs), size)
    cotangent = np.ones(program.out_shape)
    check(
        costs.product_cost(program, names),
        lambda: programs.product(program, inputs, cotangent, None, direction="vjp", limits=LIMITS),
        size,
    )
    checked = costs.product_cost(program, names).then(costs.fd_check_cost(program, names))
    check(
        checked,
        lambda: programs.product(
            program, inputs, cotangent, None, direction="vjp", limits=LIMITS, check=True
        ),
        size,
        FD_CHECK_FACTOR,
    )
    vectors = {name: np.ones((1, *shape)) for name, shape in shapes.items()}
    check(costs.hvp_cost(program, names), lambda: program_hvp(program, inputs, vectors), 2 * size)
    n = sum(int(np.prod(shape)) for shape in shapes.values())
    if n <= 2500:
        check(
            costs.dense_hessian_cost(program, names, LIMITS.max_tensor_elements),
            lambda: program_hessian(program, inputs, None, order="F", fmt="dense", limits=LIMITS),
            size,
            STRUCTURAL_FACTOR,  # batched HVPs costed as full passes: 117x for the outer product
        )
    plan = hessian_plan(program, names)
    check(
        costs.structural_hessian_cost(program, plan),
        lambda: program_hessian(program, inputs, None, order="F", fmt="coo", limits=LIMITS),
        size,
        STRUCTURAL_FACTOR,
    )


@pytest.mark.parametrize("strategy", ["chain", "forward", "reverse"])
@pytest.mark.parametrize("fmt", ["coo", "dense"])
@pytest.mark.parametrize(("expression", "shapes"), PROGRAMS, ids=[e for e, _ in PROGRAMS])
def test_jacobians_are_bounded_per_strategy_and_format(
    expression: str, shapes: dict[str, tuple[int, ...]], strategy: str, fmt: str
) -> None:
    program, inputs, size = setup(expression, shapes)
    names = tuple(program.inputs)
    plan = strategies.plan(program, names, strategy=strategy, fmt=fmt,  # type: ignore[arg-type]
                           max_dense_elements=10**8, max_nnz=10**8)  # fmt: skip
    check(
        costs.jacobian_cost(program, plan, names, fmt),  # type: ignore[arg-type]
        lambda: programs.jacobian(
            program, inputs, None, fmt=fmt, strategy=strategy, layout="in_out", order="F",  # type: ignore[arg-type]
            limits=LIMITS,
        ),
        size,
    )  # fmt: skip


@pytest.mark.parametrize(("expression", "shapes"), PROGRAMS, ids=[e for e, _ in PROGRAMS])
def test_runs_are_bounded_per_step(expression: str, shapes: dict[str, tuple[int, ...]]) -> None:
    """A few steps of descent and of L-BFGS over every input: one step's peak, the trajectory."""
    program, inputs, size = setup(expression, shapes)
    names = tuple(program.inputs)
    step = costs.run_step_cost(program, names, RUN_LIMITS.max_nnz)
    params = DescentParams(learning_rate=1e-3, max_steps=STEPS, record_x=True)
    check_run(step, lambda: collect(descend_program(program, inputs, None, params, RUN_LIMITS)[0]),
              size, STEPS)  # fmt: skip
    n = sum(int(np.prod(shape)) for shape in shapes.values())
    lbfgs = MinimizeParams(method="lbfgs", max_steps=STEPS, record_x=True)
    per_iteration = minimize_step_cost(step, Cost(), n, "lbfgs", lbfgs.memory)
    check_run(
        per_iteration,
        lambda: list(minimize_program(program, inputs, None, lbfgs, RUN_LIMITS)[0]),
        size,
        STEPS,
    )


# The same checks on random shapes, for one program of each family whose shapes vary freely.
def random_program(data: st.DataObject) -> tuple[str, dict[str, tuple[int, ...]]]:
    m, n, k = (data.draw(st.integers(1, 60)) for _ in range(3))
    c, h, w = (data.draw(st.integers(lo, hi)) for lo, hi in ((1, 3), (3, 16), (3, 16)))
    kh, kw = data.draw(st.integers(1, h)), data.draw(st.integers(1, w))
    padding = data.draw(st.sampled_from(["'valid'", "'same'", "'full'"]))
    return data.draw(st.sampled_from([
        ("sum(tanh(matmul(A, x)))", {"A": (m, n), "x": (n,)}),
        ("sum(matmul(A, B))", {"A": (m, n), "B": (n, k)}),
        (f"sum(square(xcorr2d(x, k, padding={padding})))",
         {"x": (c, h, w), "k": (data.draw(st.integers(1, 3)), c, kh, kw)}),
        ("sum(a * b + c)", {"a": (m, 1), "b": (1, n), "c": (n,)}),
        ("sum(concatenate(exp(a), sin(b)))", {"a": (m,), "b": (n,)}),
    ]))  # fmt: skip


@settings(max_examples=6, deadline=None)
@given(data=st.data())
def test_programs_on_random_shapes_are_bounded(data: st.DataObject) -> None:
    """Every check of the fixed programs above, and the COO Jacobians by every strategy."""
    expression, shapes = random_program(data)
    test_evaluate_products_and_second_order_are_bounded(expression, shapes)
    for strategy in ("chain", "forward", "reverse"):
        test_jacobians_are_bounded_per_strategy_and_format(expression, shapes, strategy, "coo")
