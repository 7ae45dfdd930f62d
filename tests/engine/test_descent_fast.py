"""The descent fast path (issue 12): direct CSR kernels, one errstate per step, fewer tests.

Every answer is pinned bit for bit in ``tests/api/test_perf_pinned.py``. Here: the raw kernel
call against SciPy's product and a naive loop; overflow blamed on the first operation whose
output overflows, as ``Chain.trace`` (which tests every output) names it; and a non-finite
gradient mid-run reported as the checked path reports it.
"""

import numpy as np
import pytest
import scipy.sparse as sp

from service.engine import descent
from service.engine.chain import Chain
from service.engine.descent import DescentParams, DescentState, Objective, Stop
from service.engine.errors import NonFiniteError, ShapeError
from service.engine.op import Op, get_op
from service.engine.sparse import CsrMatVec


def op(name: str, **params: object) -> Op:
    return get_op(name)(**params)


@pytest.mark.parametrize("index_dtype", [np.int32, np.int64])
@pytest.mark.parametrize(("in_shape", "out_shape"), [((7,), (5,)), ((2, 3, 4), (6, 2)), ((1,), ())])
def test_csr_matvec_is_scipys_product_bit_for_bit(
    index_dtype: type, in_shape: tuple[int, ...], out_shape: tuple[int, ...]
) -> None:
    rng = np.random.default_rng(12)
    m, n = int(np.prod(out_shape)), int(np.prod(in_shape))
    matrix = sp.random_array((m, n), density=0.6, format="csr", rng=rng)
    matrix.indices = matrix.indices.astype(index_dtype)
    matrix.indptr = matrix.indptr.astype(index_dtype)
    v = rng.standard_normal(in_shape)
    got = CsrMatVec(matrix, in_shape, out_shape)(v)
    assert got.shape == out_shape
    flat = got.reshape(m)
    assert flat.tobytes() == (matrix @ v.reshape(n)).tobytes()
    dense = matrix.toarray()
    naive = [sum(dense[i, j] * v.reshape(n)[j] for j in range(n)) for i in range(m)]
    np.testing.assert_allclose(flat, naive, rtol=1e-12, atol=1e-12)


def test_csr_matvec_refuses_a_vector_of_another_size() -> None:
    apply = CsrMatVec(sp.csr_array(np.eye(3)), (3,), (3,))
    with pytest.raises(ShapeError, match="expected 3 elements"):
        apply(np.zeros(4))
    with pytest.raises(ShapeError, match="cannot map"):
        CsrMatVec(sp.csr_array(np.eye(3)), (4,), (3,))


# f = ||scale(add(xcorr2d(x), c))||²: xcorr2d runs as a prepared matrix; add, scale and
# squared_norm propagate non-finite entries, so only f itself is tested on the way.
KERNEL = np.array([[[1.0, -2.0], [0.5, 3.0]]])


def _stencil(constant: float, factor: float) -> Chain:
    ops = [
        op("xcorr2d", kernel=KERNEL),
        op("add", constant=np.full((3, 3), constant)),
        op("scale", factor=factor),
        op("squared_norm"),
    ]
    return Chain(ops, (1, 4, 4))


@pytest.mark.parametrize(
    ("x_scale", "constant", "factor", "blamed"),
    [
        (1e307, 0.0, 1.0, "operation 0 (xcorr2d)"),  # the correlation's sums overflow
        (1e306, 1.7e308, 1.0, "operation 1 (add)"),  # the constant pushes past the largest float
        (1e200, 0.0, 1e200, "operation 2 (scale)"),
        (1e160, 0.0, 1.0, "operation 3 (squared_norm)"),  # the squares overflow
    ],
)
def test_overflow_is_blamed_where_a_test_after_every_operation_blames_it(
    x_scale: float, constant: float, factor: float, blamed: str
) -> None:
    chain = _stencil(constant, factor)
    objective = Objective(chain)
    assert objective.prepared == (0,)
    x = x_scale * np.arange(1.0, 17.0).reshape(1, 4, 4)
    with pytest.raises(NonFiniteError) as oracle, np.errstate(invalid="ignore"):
        chain.trace(x)
    assert str(oracle.value).startswith(blamed)
    with pytest.raises(NonFiniteError) as raised:
        objective.evaluate(x)
    assert str(raised.value) == str(oracle.value)


@pytest.mark.parametrize("wrap", [False, True])
def test_a_gradient_overflowing_mid_run_is_diverged_on_either_path(wrap: bool) -> None:
    # d/dx log(x) = 1/x is inf at the subnormal 1e-320, where log is -736.8: f stays finite.
    chain = Chain([op("log"), op("sum")], (1,))
    objective: descent.Descendable = Objective(chain)
    if wrap:  # not an Objective: the checked path (evaluate and gradient test everything)

        class Wrapped:
            in_shape = objective.in_shape
            evaluate = objective.evaluate
            gradient = objective.gradient

        objective = Wrapped()
    x = np.array([2e-320])
    state = DescentState(0, x, -735.0, np.array([1e-320]), 1e-320, None, None)
    following = descent.update(objective, state, DescentParams(learning_rate=1.0, max_steps=5))
    assert following == Stop("diverged", "step 1: the gradient has non-finite entries (overflow)")


@pytest.mark.parametrize("last", [True, False])
def test_a_final_loss_hands_back_its_gradient(last: bool) -> None:
    # The loss as the last operation passes its gradient back as is (times the seed 1.0 it is
    # the same float); anywhere else it is the op's VJP. Oracle: the derivative by hand,
    # f = ||3 x||^2 + 0 or mean((3 x - t)^2) * 0.5, evaluated in the op's order of operations.
    rng = np.random.default_rng(8)
    x, target = rng.standard_normal((2, 3)), rng.standard_normal((2, 3))
    for loss, gradient in (
        (op("squared_norm"), 2.0 * (3.0 * x)),
        (op("mse", target=target), 2.0 * (3.0 * x - target) / x.size),
    ):
        tail = [] if last else [op("scale", factor=0.5)]
        objective = Objective(Chain([op("scale", factor=3.0), loss, *tail], x.shape))
        expected = 3.0 * (gradient if last else gradient * 0.5)
        got = objective.gradient(objective.evaluate(x))
        np.testing.assert_array_equal(got, expected)
