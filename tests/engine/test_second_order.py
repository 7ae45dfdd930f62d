"""Second-order rules, Hessian-vector products and sparse Hessians against independent oracles.

Oracles: central differences of the VJP (per operation) and of the gradient (per chain), closed
forms (½ xᵀAx has Hessian A; mse after a cross-correlation has 2/m J Jᵀ with J from the notes'
loops), and analytic sparsity structures.
"""

import numpy as np
import pytest
import scipy.sparse as sp

from service.engine import hessian
from service.engine.chain import Chain
from service.engine.errors import LimitExceeded, ParameterError, ShapeError
from service.engine.functions import FunctionLimits
from service.engine.op import ElementwiseOp, get_op
from tests import oracles
from tests.engine.test_ops import CASES, make_example

LIMITS = FunctionLimits(max_tensor_elements=10**6, max_dense_elements=10**6, max_nnz=10**6)


def _flat(a: np.ndarray, order: str = "F") -> np.ndarray:
    return np.reshape(a, -1, order=order)  # type: ignore[call-overload]


def _unflat(v: np.ndarray, shape: tuple[int, ...], order: str = "F") -> np.ndarray:
    return np.reshape(v, shape, order=order)  # type: ignore[call-overload]


# -- one operation ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "index"), CASES)
def test_second_order_rule_is_the_derivative_of_the_vjp(name: str, index: int) -> None:
    ex = make_example(name, index)
    rng = np.random.default_rng(11)
    out_shape = ex.op.out_shape(ex.x.shape)
    u = rng.normal(size=out_shape)
    tangents = rng.normal(size=(2, *ex.x.shape))
    got = ex.op.second_order(ex.x, u, tangents)
    assert got.shape == tangents.shape
    h = 1e-5 * max(1.0, float(np.abs(ex.x).max()))
    for t, row in zip(tangents, got, strict=True):
        plus = ex.op.vjp(ex.x + h * t, u[np.newaxis])[0]
        minus = ex.op.vjp(ex.x - h * t, u[np.newaxis])[0]
        expected = (plus - minus) / (2 * h)
        np.testing.assert_allclose(
            row, expected, rtol=1e-6, atol=1e-7 * max(1, np.abs(expected).max())
        )


@pytest.mark.parametrize(("name", "index"), CASES)
@pytest.mark.parametrize("order", ["F", "C"])
def test_curvature_blocks_contain_every_coupling(name: str, index: int, order: str) -> None:
    ex = make_example(name, index)
    n = ex.x.size
    rng = np.random.default_rng(3)
    u = rng.normal(size=ex.op.out_shape(ex.x.shape))
    # The weighted Hessian column by column, from basis tangents flattened in `order`.
    basis = np.stack([_unflat(e, ex.x.shape, order) for e in np.eye(n)])
    dense = np.stack([_flat(c, order) for c in ex.op.second_order(ex.x, u, basis)], axis=1)
    blocks = ex.op.curvature_blocks(ex.x.shape, order)
    if blocks is None:
        assert not dense.any()
        return
    assert sorted(blocks.flat) == list(range(n))  # a partition of the elements
    group = np.empty(n, dtype=int)
    group[blocks] = np.arange(len(blocks))[:, np.newaxis]
    outside = group[:, np.newaxis] != group[np.newaxis, :]
    assert not dense[outside].any()


def test_an_op_without_a_second_order_rule_is_refused() -> None:
    class Cube(ElementwiseOp):
        name = "cube_without_rule"

        def _forward(self, x: np.ndarray) -> np.ndarray:
            return x**3

        def derivative(self, x: np.ndarray) -> np.ndarray:
            return 3 * x**2

    chain = Chain([Cube(), get_op("sum")()], (3,))
    with pytest.raises(ParameterError, match="cube_without_rule has no second-order rule"):
        hessian.hvp(chain, np.ones(3), np.ones((1, 3)))


# -- chains ----------------------------------------------------------------------------------------


def _chain(specs: list[tuple[str, dict]], shape: tuple[int, ...]) -> Chain:
    return Chain([get_op(name)(**params) for name, params in specs], shape)


RNG = np.random.default_rng(5)
CHAINS = {
    "elementwise": ([("sin", {}), ("square", {}), ("sum", {})], (3, 4)),
    "softmax": (
        [("softmax", {"axis": 0}), ("log", {}), ("multiply", {"constant": RNG.normal(size=(3, 4))}),
         ("sum", {})],
        (3, 4),
    ),
    "log_softmax-logsumexp-mse": (
        [("log_softmax", {"axis": 1}), ("tanh", {}), ("logsumexp", {"axes": (0,)}),
         ("mse", {"target": np.ones(4)})],
        (3, 4),
    ),
    "xcorr-sigmoid": (
        [("xcorr2d", {"kernel": RNG.normal(size=(1, 2, 2))}), ("sigmoid", {}),
         ("squared_norm", {})],
        (1, 5, 5),
    ),
    "max_pool-softplus": ([("max_pool2d", {"size": 2}), ("softplus", {}), ("mean", {})], (1, 4, 4)),
    "powers": (
        [("power", {"p": 3.0}), ("exp", {}), ("sqrt", {}), ("cos", {}), ("abs", {}), ("relu", {}),
         ("sum", {})],
        (5,),
    ),
}  # fmt: skip


def _fd_hessian(chain: Chain, x: np.ndarray, order: str) -> np.ndarray:
    def gradient(z: np.ndarray) -> np.ndarray:
        return chain.vjp(z, np.ones((1, *chain.out_shape)))[0]

    return oracles.central_difference_jacobian(gradient, x, order)


@pytest.mark.parametrize("case", sorted(CHAINS))
@pytest.mark.parametrize("order", ["F", "C"])
def test_hvp_and_hessian_match_differences_of_the_gradient(case: str, order: str) -> None:
    specs, shape = CHAINS[case]
    chain = _chain(specs, shape)
    rng = np.random.default_rng(1)
    x = rng.uniform(0.2, 1.0, size=shape)
    fd = _fd_hessian(chain, x, order)
    scale = max(1.0, float(np.abs(fd).max()))
    vectors = rng.normal(size=(3, *shape))
    result = hessian.hvp(chain, x, vectors)
    expected = np.stack([fd @ _flat(v, order) for v in vectors])
    got = np.stack([_flat(p, order) for p in result.products])
    np.testing.assert_allclose(got, expected, atol=1e-6 * scale * 10)
    np.testing.assert_allclose(result.gradient, chain.vjp(x, np.ones((1,)))[0], rtol=1e-14)
    matrix = hessian.hessian(chain, x, order=order, fmt="coo", limits=LIMITS).matrix
    assert isinstance(matrix, sp.coo_array)
    np.testing.assert_allclose(matrix.toarray(), fd, atol=1e-6 * scale)
    assert matrix.nnz <= hessian.hessian_nnz_bound(chain)


@pytest.mark.parametrize("case", sorted(CHAINS))
def test_hessian_is_symmetric_and_equals_stacked_hvps(case: str) -> None:
    specs, shape = CHAINS[case]
    chain = _chain(specs, shape)
    x = np.random.default_rng(2).uniform(0.2, 1.0, size=shape)
    dense = hessian.hessian(chain, x, order="F", fmt="dense", limits=LIMITS).matrix
    assert isinstance(dense, np.ndarray)
    np.testing.assert_array_equal(dense, dense.T)
    basis = np.stack([_unflat(e, shape) for e in np.eye(x.size)])
    stacked = np.stack([_flat(p) for p in hessian.hvp(chain, x, basis).products], axis=1)
    scale = max(1.0, float(np.abs(stacked).max()))
    np.testing.assert_allclose(dense, stacked, rtol=1e-12, atol=1e-12 * scale)


def test_quadratic_has_the_hessian_of_its_matrix() -> None:
    # ½ ||L x||² = ½ xᵀ A x with A = LᵀL.
    rng = np.random.default_rng(4)
    weight = rng.normal(size=(6, 5))
    a = weight.T @ weight
    chain = _chain(
        [("linear", {"weight": weight}), ("squared_norm", {}), ("scale", {"factor": 0.5})], (5,)
    )
    x, v = rng.normal(size=(2, 5))
    result = hessian.hvp(chain, x, v[np.newaxis])
    np.testing.assert_allclose(result.products[0], a @ v, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(result.gradient, a @ x, rtol=1e-12, atol=1e-12)
    dense = hessian.hessian(chain, x, order="C", fmt="dense", limits=LIMITS).matrix
    np.testing.assert_allclose(dense, a, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("order", ["F", "C"])
def test_mse_of_a_cross_correlation_has_hessian_two_j_jt_over_m(order: str) -> None:
    rng = np.random.default_rng(6)
    x_shape, kernel = (2, 5, 6), rng.normal(size=(2, 2, 3))
    stride = (1, 2)
    entries = oracles.xcorr_jacobian_loops(x_shape, kernel, stride, ((0, 0), (0, 0)), (1, 1), order)
    out_shape = get_op("xcorr2d")(kernel=kernel, stride=stride).out_shape(x_shape)
    cols = int(np.prod(out_shape))
    j = np.zeros((int(np.prod(x_shape)), cols))
    for (r, c), value in entries.items():
        j[r, c] = value
    target = rng.normal(size=out_shape)
    chain = _chain(
        [("xcorr2d", {"kernel": kernel, "stride": stride}), ("mse", {"target": target})], x_shape
    )
    expected = 2.0 / cols * j @ j.T
    x = rng.normal(size=x_shape)
    v = rng.normal(size=x_shape)
    product = hessian.hvp(chain, x, v[np.newaxis]).products[0]
    np.testing.assert_allclose(
        _flat(product, order), expected @ _flat(v, order), rtol=1e-12, atol=1e-12
    )
    matrix = hessian.hessian(chain, x, order=order, fmt="coo", limits=LIMITS).matrix
    assert isinstance(matrix, sp.coo_array)
    np.testing.assert_allclose(matrix.toarray(), expected, rtol=1e-12, atol=1e-12)
    # The structure is the analytic one: (i, j) coupled when one output reads both.
    np.testing.assert_array_equal(matrix.toarray() != 0, (np.abs(j) @ np.abs(j.T)) != 0)


def test_elementwise_loss_has_a_diagonal_coo_hessian() -> None:
    chain = _chain([("sin", {}), ("square", {}), ("sum", {})], (4, 3))
    x = np.random.default_rng(8).uniform(0.2, 1.0, size=(4, 3))
    matrix = hessian.hessian(chain, x, order="F", fmt="coo", limits=LIMITS).matrix
    assert isinstance(matrix, sp.coo_array)
    np.testing.assert_array_equal(matrix.row, np.arange(12))
    np.testing.assert_array_equal(matrix.col, np.arange(12))
    # d²/dx² sin(x)² = 2 cos(2x)
    np.testing.assert_allclose(matrix.data, 2 * np.cos(2 * _flat(x)), rtol=1e-13)
    assert hessian.hessian_nnz_bound(chain) == 2 * 12  # two curved ops, one entry per row each


def test_a_stencil_gives_a_banded_coo_hessian() -> None:
    # sum(square(xcorr(x, [1, 2, 1]))): H = 2 K Kᵀ couples elements at most 2 apart.
    n = 30
    chain = _chain(
        [("xcorr2d", {"kernel": np.array([[[1.0, 2.0, 1.0]]])}), ("square", {}), ("sum", {})],
        (1, 1, n),
    )
    x = np.random.default_rng(9).normal(size=(1, 1, n))
    matrix = hessian.hessian(chain, x, order="C", fmt="coo", limits=LIMITS).matrix
    assert isinstance(matrix, sp.coo_array)
    band = {(i, j) for i in range(n) for j in range(n) if abs(i - j) <= 2}
    assert set(zip(matrix.row.tolist(), matrix.col.tolist(), strict=True)) == band


def test_limits_come_before_any_arithmetic() -> None:
    chain = _chain([("softmax", {}), ("sum", {})], (4, 50))
    small = FunctionLimits(max_tensor_elements=10**6, max_dense_elements=10**6, max_nnz=100)
    with pytest.raises(LimitExceeded, match="Hessian non-zeros"):
        hessian.hessian(chain, np.full((4, 50), np.nan), order="F", fmt="coo", limits=small)
    dense = FunctionLimits(max_tensor_elements=10**6, max_dense_elements=100, max_nnz=10**6)
    with pytest.raises(LimitExceeded, match="dense Hessian elements"):
        hessian.hessian(chain, np.full((4, 50), np.nan), order="F", fmt="dense", limits=dense)


def test_a_non_scalar_function_is_refused() -> None:
    chain = _chain([("sin", {})], (3,))
    with pytest.raises(ShapeError, match="a Hessian needs a scalar function"):
        hessian.hessian(chain, np.ones(3), order="F", fmt="coo", limits=LIMITS)
    with pytest.raises(ShapeError, match="a Hessian-vector product needs a scalar function"):
        hessian.hvp(chain, np.ones(3), np.ones((1, 3)))
