"""The dense Jacobian of ``xcorr2d`` written through strided views, and the chain's route to it.

Oracles: the notes' loops (``tests/oracles.py``), scaled column by column by hand, compared bit
for bit (each entry is one product, so there is nothing to round differently), and central
differences for whole chains.
"""

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given
from hypothesis import strategies as st

from service.engine import xcorr
from service.engine.chain import Chain
from service.engine.chain_dense import stencil_dense
from service.engine.errors import NonFiniteError
from service.engine.kernels.xcorr import jacobian as xcorr_jacobian
from service.engine.op import ElementwiseOp, get_op
from service.engine.sparse import to_coo
from tests import oracles
from tests.engine.test_xcorr import Case, cases, layouts, orders, tensors

BIG = {"max_dense_elements": 10**8, "max_nnz": 10**8}


def loops_dense(case: Case, k: np.ndarray, order: str, scale: np.ndarray | None) -> np.ndarray:
    """The loops' entries times ``scale[col]``, where neither factor is zero; in_out layout."""
    entries = oracles.xcorr_jacobian_loops(
        case.x_shape, k, case.stride, case.pairs, case.dilation, order
    )
    n_in = int(np.prod(case.x_shape))
    n_out = int(np.prod(xcorr.output_shape(case.x_shape, k.shape, case.geometry)))
    dense = np.zeros((n_in, n_out))
    for (row, col), value in entries.items():
        factor = 1.0 if scale is None else float(scale[col])
        if value != 0 and factor != 0:
            dense[row, col] = value * factor + 0.0  # a negative underflow is stored as +0.0
    return dense


def assert_same_bits(actual: np.ndarray, expected: np.ndarray) -> None:
    assert actual.shape == expected.shape
    assert actual.flags.c_contiguous
    np.testing.assert_array_equal(actual.view(np.int64), expected.view(np.int64))


@given(case=cases(), order=orders, layout=layouts, scaled=st.booleans(), data=st.data())
def test_dense_matches_the_loops_bit_for_bit(
    case: Case, order: str, layout: str, scaled: bool, data: st.DataObject
) -> None:
    k = data.draw(tensors(case.k_shape))
    n_out = int(np.prod(xcorr.output_shape(case.x_shape, case.k_shape, case.geometry)))
    scale = data.draw(tensors((n_out,))) if scaled else None
    dense = xcorr.jacobian_x_dense(k, case.x_shape, case.geometry, order, layout, scale)
    expected = loops_dense(case, k, order, scale)
    assert_same_bits(dense, expected if layout == "in_out" else np.ascontiguousarray(expected.T))


@pytest.mark.parametrize("padding", ["valid", "same"])
def test_zero_factors_store_nothing_whatever_the_other(padding: str) -> None:
    # A zero (or -0.0) on either side stores nothing, even against inf or NaN; a negative
    # product that underflows is +0.0; every other product is kept as computed.
    geometry = xcorr.XCorrGeometry(padding=padding)
    pairs = ((0, 0), (0, 0))
    if padding == "same":
        pairs = (oracles.same_padding(5, 2, 1, 1), oracles.same_padding(6, 3, 1, 1))
    case = Case((2, 5, 6), (2, 2, 3), geometry, (1, 1), (1, 1), pairs)
    rng = np.random.default_rng(5)
    k = rng.standard_normal(case.k_shape)
    k[0, 1, 2], k[1, 0, 0] = 0.0, -0.0
    n_out = int(np.prod(xcorr.output_shape(case.x_shape, k.shape, case.geometry)))
    scale = rng.standard_normal(n_out)
    scale[:4] = [0.0, -0.0, -1e-320, 1e-320]
    dense = xcorr.jacobian_x_dense(k, case.x_shape, case.geometry, "F", "in_out", scale)
    assert not np.any(np.signbit(dense[dense == 0]))
    np.testing.assert_array_equal(dense, loops_dense(case, k, "F", scale))
    scale[4:8] = [np.inf, -np.inf, np.nan, np.nan]
    nothing = xcorr.jacobian_x_dense(np.zeros_like(k), case.x_shape, case.geometry, scale=scale)
    assert not np.any(nothing) and not np.any(np.signbit(nothing))
    with pytest.raises(NonFiniteError, match="the Jacobian has non-finite entries"):
        xcorr.jacobian_x_dense(k, case.x_shape, case.geometry, scale=scale)


def chain_of(names: list[str], kernel: np.ndarray, x_shape: tuple[int, ...], **geometry) -> Chain:
    ops = [get_op("xcorr2d")(kernel=kernel, **geometry)] + [get_op(name)() for name in names]
    return Chain(ops, x_shape)


@pytest.mark.parametrize(
    ("names", "geometry"),
    [
        (["tanh"], {}),
        (["tanh", "sigmoid"], {"stride": [2, 1], "padding": "same"}),
        ([], {"padding": "full", "dilation": [1, 2]}),
    ],
)
@pytest.mark.parametrize("layout", ["in_out", "out_in"])
def test_chain_writes_the_dense_jacobian_without_the_sparse_one(
    monkeypatch: pytest.MonkeyPatch, names: list[str], geometry: dict, layout: str
) -> None:
    rng = np.random.default_rng(6)
    x, k = rng.standard_normal((2, 6, 7)), 0.5 * rng.standard_normal((3, 2, 3, 3))
    chain = chain_of(names, k, x.shape, **geometry)
    assert chain.plan(fmt="dense", **BIG).strategy == "chain"

    def no_sparse(*args: object, **kwargs: object) -> None:
        raise AssertionError("the dense route built the sparse Jacobian")

    monkeypatch.setattr(xcorr_jacobian, "_paired_jacobian", no_sparse)
    dense = chain.jacobian(x, fmt="dense", layout=layout, order="C", **BIG).matrix
    in_out = dense if layout == "in_out" else dense.T
    # Row i of J (in_out) is the derivative along the input basis vector e_i (C order).
    expected = oracles.central_difference_jacobian(chain.forward, x, "C")
    np.testing.assert_allclose(in_out, expected, rtol=0, atol=1e-7)


def test_other_chains_take_the_sparse_product() -> None:
    rng = np.random.default_rng(7)
    k = rng.standard_normal((1, 2, 2))
    for ops in (
        [get_op("tanh")(), get_op("xcorr2d")(kernel=k)],
        [get_op("xcorr2d")(kernel=k), get_op("sum")()],
    ):
        chain = Chain(ops, (1, 4, 4))
        split, _, _ = chain._association()
        assert stencil_dense(chain.ops, split, lambda t: pytest.fail("no factor needed")) is None


def test_an_overflowing_dense_jacobian_is_refused() -> None:
    k = np.full((1, 2, 2), 1e308)
    chain = Chain([get_op("xcorr2d")(kernel=k), get_op("square")()], (1, 3, 3))
    x = np.full((1, 3, 3), 1e-308)  # y = 4: square' = 8, times 1e308 overflows
    with pytest.raises(NonFiniteError, match="the Jacobian has non-finite entries"):
        chain.jacobian(x, fmt="dense", strategy="chain", **BIG)


def test_an_elementwise_rule_that_is_not_diagonal_takes_the_sparse_product() -> None:
    # An elementwise operation may write its own local Jacobian (tests/engine/test_fdcheck.py
    # breaks one on purpose); whatever it is, the dense answer is the sparse product's.
    class Moves(ElementwiseOp):  # a diagonal that claims to move every entry one place on
        name = "test_moves"

        def _forward(self, x: np.ndarray) -> np.ndarray:
            return 2.0 * x

        def derivative(self, x: np.ndarray) -> np.ndarray:
            return np.full(x.shape, 2.0)

        def _local_jacobian(self, x: np.ndarray, order: str) -> sp.coo_array:
            n = x.size
            return sp.coo_array((np.full(n, 2.0), (np.arange(n), (np.arange(n) + 1) % n)))

    k = np.random.default_rng(9).standard_normal((1, 2, 2))
    chain = Chain([get_op("xcorr2d")(kernel=k), Moves()], (1, 4, 4))
    dense = chain.jacobian(np.zeros((1, 4, 4)), fmt="dense", strategy="chain", **BIG).matrix
    correlation = xcorr.jacobian_x(k, (1, 4, 4)).toarray()
    moved = to_coo(Moves().local_factor(np.zeros((3, 3)), "F")).toarray()
    np.testing.assert_array_equal(dense, correlation @ moved)
