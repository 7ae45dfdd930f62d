"""Programs' Hessians as COO from structural sparsity, against independent oracles.

Oracles: ``scipy.optimize.rosen_hess`` (Rosenbrock: tridiagonal, structure and values), closed
forms (a diagonal for an elementwise loss), central differences of the gradient (joint blocks over
several inputs, random programs), and the operations' own VJPs differenced along each argument
(every n-ary operation's curvature block).
"""

import numpy as np
import pytest
import scipy.optimize
from hypothesis import given, settings
from hypothesis import strategies as st

from service.api.programs import build_program
from service.engine.errors import LimitExceeded
from service.engine.functions import FunctionLimits
from service.engine.graph.curvature import hessian_plan, program_hessian
from service.engine.graph.hvp import program_hvp
from service.engine.graph.nary import NaryOp
from service.engine.graph.program import Program
from service.engine.sparse import is_canonical
from tests import oracles
from tests.engine.graph.dags import DagCase, dags
from tests.engine.graph.test_nary_ops import CASES, IDS

ROSEN = "sum(100 * (x[1:] - x[:-1] ** 2) ** 2 + (1 - x[:-1]) ** 2)"
LIMITS = FunctionLimits(max_tensor_elements=10**6, max_dense_elements=10**6, max_nnz=10**6)
EPS = np.finfo(np.float64).eps


def _coo(program: Program, inputs: dict[str, np.ndarray], wrt: list[str] | None, order: str):
    found = program_hessian(program, inputs, wrt, order=order, fmt="coo", limits=LIMITS)  # type: ignore[arg-type]
    assert not isinstance(found.matrix, np.ndarray)
    assert is_canonical(found.matrix)
    return found


@pytest.mark.parametrize("n", [2, 3, 8, 101])
def test_rosenbrock_is_rosen_hess_entry_for_entry(n: int) -> None:
    x = np.random.default_rng(n).uniform(-2, 2, n)
    program = build_program(ROSEN, {"x": (n,)}, "F")
    found = _coo(program, {"x": x}, None, "F")
    matrix = found.matrix
    expected = scipy.optimize.rosen_hess(x)
    # Structure: exactly scipy's non-zeros, the tridiagonal band.
    rows, cols = np.nonzero(expected)
    assert np.array_equal(matrix.row, rows) and np.array_equal(matrix.col, cols)
    assert np.all(np.abs(matrix.row - matrix.col) <= 1) and matrix.nnz == 3 * n - 2
    # Values: to the rounding of the largest entry.
    np.testing.assert_allclose(
        matrix.data, expected[rows, cols], rtol=0, atol=8 * EPS * np.abs(expected).max()
    )
    dense = matrix.toarray()
    np.testing.assert_array_equal(dense, dense.T)
    assert float(found.value) == pytest.approx(scipy.optimize.rosen(x), rel=1e-14)


def test_an_elementwise_loss_gives_its_diagonal() -> None:
    # f = sum(softplus(x) * c) over x, c held fixed: H = diag(c σ(x)(1 - σ(x))), the C order.
    rng = np.random.default_rng(5)
    x, c = rng.normal(size=(3, 4)), rng.normal(size=(3, 4))
    program = build_program("sum(softplus(x) * c)", {"x": (3, 4), "c": (3, 4)}, "C")
    matrix = _coo(program, {"x": x, "c": c}, ["x"], "C").matrix
    sigma = 1 / (1 + np.exp(-x))
    assert np.array_equal(matrix.row, np.arange(12)) and np.array_equal(matrix.col, np.arange(12))
    np.testing.assert_allclose(matrix.data, (c * sigma * (1 - sigma)).ravel(), rtol=1e-14)


def _gradient(program: Program, inputs: dict[str, np.ndarray], names: list[str], order: str):
    shapes = [program.inputs[name] for name in names]
    sizes = [int(np.prod(shape, dtype=int)) for shape in shapes]
    offsets = np.cumsum([0, *sizes])

    def gradient(z: np.ndarray) -> np.ndarray:
        values = dict(inputs)
        for k, name in enumerate(names):
            values[name] = z[offsets[k] : offsets[k + 1]].reshape(shapes[k], order=order)
        zeros = {name: np.zeros((1, *program.inputs[name])) for name in names}
        found = program_hvp(program, values, zeros)
        return np.concatenate([found.gradient[name].ravel(order=order) for name in names])

    z = np.concatenate([inputs[name].ravel(order=order) for name in names])
    return gradient, z


@pytest.mark.parametrize("order", ["F", "C"])
@pytest.mark.parametrize(
    ("expression", "shapes", "wrt"),
    [
        ("mse(xcorr2d(x, k), y)", {"x": (2, 4, 5), "k": (2, 2, 2), "y": (3, 4)}, ["x", "k"]),
        ("mse(xcorr2d(x, k), y)", {"x": (2, 4, 5), "k": (2, 2, 2), "y": (3, 4)}, ["k", "y"]),
        ("sum(tanh(x * w) + exp(w) / (1 + x ** 2))", {"x": (3, 4), "w": (4,)}, None),
        ("sum(softmax(x) * w) + logsumexp(x @ w)", {"x": (3, 4), "w": (4,)}, ["w", "x"]),
        ("sum(x ** (w * w + 1)) + mse(x, w)", {"x": (3, 4), "w": (4,)}, None),
        (
            "sum(maximum(x, w) * x) + sum(einsum(x, w, subscripts='ij,j->i') ** 2)",
            {"x": (3, 4), "w": (4,)},
            None,
        ),
        ("sum(concatenate(x, x * x, axis=0)[1:, ::2] ** 3)", {"x": (3, 4)}, None),
    ],  # fmt: skip
)
def test_joint_blocks_match_central_differences_of_the_gradient(
    expression: str, shapes: dict[str, tuple[int, ...]], wrt: list[str] | None, order: str
) -> None:
    rng = np.random.default_rng(len(expression))
    inputs = {name: rng.uniform(0.3, 1.2, size=shape) for name, shape in shapes.items()}
    program = build_program(expression, shapes, order)  # type: ignore[arg-type]
    names = list(program.check_wrt(wrt))
    dense = _coo(program, inputs, wrt, order).matrix.toarray()
    gradient, z = _gradient(program, inputs, names, order)
    fd = oracles.central_difference_jacobian(gradient, z, order)
    np.testing.assert_allclose(dense, fd, atol=1e-6 * max(1.0, np.abs(fd).max()))
    np.testing.assert_array_equal(dense, dense.T)


@settings(max_examples=25, deadline=None)
@given(case=dags(max_nodes=6), order=st.sampled_from(["F", "C"]))
def test_random_programs_match_central_differences_of_the_gradient(
    case: DagCase, order: str
) -> None:
    shapes = {name: value.shape for name, value in case.inputs.items()}
    program = build_program(f"sum({case.expression})", shapes, order)  # type: ignore[arg-type]
    names = list(program.inputs)
    found = _coo(program, case.inputs, names, order)
    gradient, z = _gradient(program, case.inputs, names, order)
    fd = oracles.central_difference_jacobian(gradient, z, order)
    dense = found.matrix.toarray()
    np.testing.assert_allclose(dense, fd, atol=1e-6 * max(1.0, np.abs(fd).max()))
    assert found.matrix.nnz <= hessian_plan(program, names).nnz_bound


def test_auto_takes_coo_when_the_bound_is_sparse_and_dense_otherwise() -> None:
    for n, kind in [(40, "coo"), (6, "dense")]:
        x = np.linspace(-1, 1, n)
        program = build_program(ROSEN, {"x": (n,)}, "F")
        found = program_hessian(program, {"x": x}, None, order="F", fmt="auto", limits=LIMITS)
        assert isinstance(found.matrix, np.ndarray) == (kind == "dense")
        dense = found.matrix if kind == "dense" else found.matrix.toarray()  # type: ignore[union-attr]
        np.testing.assert_allclose(
            dense, scipy.optimize.rosen_hess(x), rtol=0, atol=8 * EPS * np.abs(dense).max()
        )


def test_limits_are_checked_before_any_arithmetic() -> None:
    n = 1000
    program = build_program(ROSEN, {"x": (n,)}, "F")
    small = FunctionLimits(max_tensor_elements=10**6, max_dense_elements=10, max_nnz=3 * n)
    # A NaN point would fail evaluation: refusing it proves nothing was computed.
    with pytest.raises(LimitExceeded, match="Hessian non-zeros"):
        program_hessian(program, {"x": np.full(n, np.nan)}, None, order="F", fmt="coo",
                        limits=small)  # fmt: skip
    with pytest.raises(LimitExceeded, match="Hessian non-zeros"):
        program_hessian(program, {"x": np.full(n, np.nan)}, None, order="F", fmt="auto",
                        limits=small)  # fmt: skip


def _vjp_difference(op: NaryOp, values: list[np.ndarray], i: int, j: int, u: np.ndarray):
    """Column c of ``D_ij``: the VJP of argument i, differenced along element c of argument j."""
    columns = []
    h = 1e-6
    for c in range(values[j].size):
        step = np.zeros(values[j].size)
        step[c] = h
        moved = [v + (step.reshape(v.shape) if k == j else 0) for k, v in enumerate(values)]
        back = [v - (step.reshape(v.shape) if k == j else 0) for k, v in enumerate(values)]
        diff = op.vjp(moved, i, u[np.newaxis])[0] - op.vjp(back, i, u[np.newaxis])[0]
        columns.append(diff.ravel() / (2 * h))
    return np.stack(columns, axis=1)


@pytest.mark.parametrize(("name", "op", "values"), CASES, ids=IDS)
def test_every_curvature_block_is_the_derivative_of_the_vjp(
    name: str, op: NaryOp, values: list[np.ndarray]
) -> None:
    rng = np.random.default_rng(23)
    shapes = [v.shape for v in values]
    u = rng.normal(size=op.out_shape(shapes))
    for i in range(len(values)):
        for j in range(len(values)):
            expected = _vjp_difference(op, values, i, j, u)
            scale = max(1.0, float(np.abs(expected).max()))
            fan = op.curvature_fan(shapes, i, j)
            if fan is None:
                np.testing.assert_allclose(expected, 0.0, atol=1e-7 * scale)
                continue
            block = op.curvature(values, i, j, u, "C")
            assert block.shape == expected.shape
            assert np.diff(block.indptr).max(initial=0) <= fan
            np.testing.assert_allclose(block.toarray(), expected, rtol=1e-6, atol=1e-7 * scale)
