"""Second-order and run estimates against measurements, per operation, on random shapes.

As ``test_cost.py`` does for first-order requests: each registered operation, followed by
``sum`` to make it scalar, is costed from its shapes and run under :mod:`tracemalloc`:

* an exact Hessian-vector product (``/v1/hvp``) and the structural Hessian, COO and dense
  (``/v1/hessian``): ``measured <= estimate <= factor * measured + BUFFERS``, with the factors
  stated below (the README quotes them);
* gradient descent and minimization (``/v1/gradient-descent``, ``/v1/minimize``), which are
  costed per iteration (their number is bounded by ``max_steps`` and by the deadline, not by the
  work limit): a run of a few iterations holds at most one iteration's estimated peak plus its
  recorded trajectory, and its CPU time stays within the per-unit allowance of the estimated
  work of its iterations.
"""

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from service.engine import estimates, functions, hessian
from service.engine.chain import Chain
from service.engine.cost import FLOAT, Cost
from service.engine.descent import DescentLimits, DescentParams, collect, descend
from service.engine.minimize import minimize
from service.engine.minimize_params import MinimizeParams
from service.engine.ops.reduce import Sum
from tests.engine.test_cost import (
    FACTOR,
    NS_PER_UNIT,
    SHAPES,
    check,
    measured,
    one_op_chain,
)
from tests.strategies import BUILDERS

# A Hessian-vector product is costed as three full batched passes (forward over reverse) with
# every rule's temporaries; the engine reuses the trace.
HVP_FACTOR = FACTOR
# A structural Hessian is costed from its non-zero bound, which lets every element of a
# curvature group meet every element each of its inputs reaches (the dense sides of linear and
# xcorr2d factors around an elementwise curvature are far below it).
HESSIAN_FACTOR = FACTOR
LIMITS = functions.FunctionLimits(10**9, 10**8, 10**8)
RUN_LIMITS = DescentLimits(max_steps=10, max_trajectory_elements=10**7,
                           max_tensor_elements=10**9, max_nnz=10**8)  # fmt: skip
STEPS = 3


# A dense Hessian has n^2 entries: its requests are drawn on smaller shapes than test_cost's.
SMALL_SHAPES: tuple[tuple[int, ...], ...] = ((3, 8, 10), (2, 3, 6, 7), (12, 14), (300,))


def scalar_chain(
    data: st.DataObject, builder_index: int, shapes: tuple[tuple[int, ...], ...] = SHAPES
) -> tuple[Chain, np.ndarray]:
    chain, x = one_op_chain(data, builder_index, shapes)
    if int(np.prod(chain.out_shape)) == 1:
        return chain, x
    return Chain([*chain.ops, Sum()], chain.in_shape), x


@pytest.mark.parametrize("builder_index", range(len(BUILDERS)), ids=[b.name for b in BUILDERS])
@settings(max_examples=2, deadline=None)
@given(data=st.data())
def test_hvp_and_hessians_are_bounded_per_operation(
    builder_index: int, data: st.DataObject
) -> None:
    chain, x = scalar_chain(data, builder_index)
    v = np.ones((1, *x.shape))
    check(estimates.hvp_cost(chain), lambda: hessian.hvp(chain, x, v), 2 * x.nbytes, HVP_FACTOR)
    chain, x = scalar_chain(data, builder_index, SMALL_SHAPES)
    bound = hessian.hessian_nnz_bound(chain)
    for fmt in ("coo", "dense"):
        resolved = hessian.hessian_format(x.size, bound, fmt, LIMITS.max_dense_elements)
        check(
            estimates.hessian_cost(chain, bound, resolved),
            lambda: hessian.hessian(chain, x, order="F", fmt=fmt, limits=LIMITS),  # noqa: B023
            x.nbytes,
            HESSIAN_FACTOR,
        )


def check_run(step: Cost, call: Callable[[], Any], x_bytes: int, iterations: int) -> None:
    """A run holds at most one iteration's peak plus its trajectory, in time for its work."""
    peak, seconds = measured(call)
    trajectory = (iterations + 1) * (x_bytes + 4 * FLOAT)
    assert peak <= step.peak_bytes + trajectory, (peak, step.peak_bytes)
    assert seconds * 1e9 <= NS_PER_UNIT * step.work * iterations + 0.05e9, (seconds, step.work)


@pytest.mark.parametrize("builder_index", range(len(BUILDERS)), ids=[b.name for b in BUILDERS])
@settings(max_examples=2, deadline=None)
@given(data=st.data())
def test_runs_are_bounded_per_iteration(builder_index: int, data: st.DataObject) -> None:
    chain, x = scalar_chain(data, builder_index)
    params = DescentParams(learning_rate=1e-3, max_steps=STEPS, record_x=True)
    check_run(
        estimates.descent_step_cost(chain, RUN_LIMITS.max_nnz),
        lambda: collect(descend(chain, x, params, RUN_LIMITS)),
        x.nbytes,
        STEPS,
    )
    step = estimates.descent_step_cost(chain, RUN_LIMITS.max_nnz)
    product = estimates.hvp_cost(chain)
    for method in ("lbfgs", "newton-cg"):
        params = MinimizeParams(method=method, max_steps=STEPS, record_x=True)  # type: ignore[arg-type]
        check_run(
            estimates.minimize_step_cost(step, product, x.size, method, params.memory),
            lambda: list(minimize(chain, x, params, RUN_LIMITS)),  # noqa: B023
            x.nbytes,
            STEPS,
        )
