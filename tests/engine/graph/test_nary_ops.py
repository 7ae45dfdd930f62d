"""Every n-ary operation, every argument: JVP vs central differences, VJP dot-product test,
local COO Jacobian = dense Jacobian from basis vectors = finite differences.

The oracles are independent of the rules under test: central differences of ``forward`` (one
argument moved, the others fixed), and ``<u, J v>`` computed two ways.
"""

from collections.abc import Callable

import numpy as np
import pytest

from service.engine.errors import DomainError, ParameterError, ShapeError
from service.engine.graph.nary import NaryOp, nary_classes
from service.engine.graph.ops import broadcast, linalg, structure

RNG = np.random.default_rng(99)


def _u(*shape: int) -> np.ndarray:
    return RNG.uniform(0.5, 1.5, shape)


def _n(*shape: int) -> np.ndarray:
    return RNG.standard_normal(shape)


CASES: list[tuple[str, NaryOp, list[np.ndarray]]] = [
    ("add", broadcast.Add(), [_n(2, 3), _n(3)]),
    ("add-scalar", broadcast.Add(), [_n(), _n(2, 1)]),
    ("subtract", broadcast.Subtract(), [_n(2, 1, 3), _n(4, 1)]),
    ("multiply", broadcast.Multiply(), [_n(2, 3), _n(2, 1)]),
    ("divide", broadcast.Divide(), [_n(3, 2), _u(2)]),
    ("maximum", broadcast.Maximum(), [_n(2, 3), _n(3)]),
    ("minimum", broadcast.Minimum(), [_n(4), _n(2, 4)]),
    ("power", broadcast.Power(), [_u(2, 3), _n(3)]),
    ("where", broadcast.Where(mask=[[True, False, True]]), [_n(2, 3), _n(2, 1)]),
    ("mse", broadcast.MeanSquaredError(), [_n(2, 3), _n(3)]),
    ("matmul-2d", linalg.MatMul(), [_n(3, 4), _n(4, 2)]),
    ("matmul-batched", linalg.MatMul(), [_n(2, 3, 4), _n(2, 4, 2)]),
    ("matmul-vector", linalg.MatMul(), [_n(3, 4), _n(4)]),
    ("matmul-dot", linalg.MatMul(), [_n(4), _n(4)]),
    # batch axes broadcast as NumPy's: a size 1, an axis absent, 1-D operands promoted
    ("matmul-broadcast", linalg.MatMul(), [_n(2, 1, 3, 2), _n(3, 2, 2)]),
    ("matmul-row-batched", linalg.MatMul(), [_n(3), _n(2, 3, 2)]),
    ("matmul-batched-column", linalg.MatMul(), [_n(1, 2, 2, 3), _n(3)]),
    ("einsum", linalg.Einsum("ij,jk,k->i"), [_n(2, 3), _n(3, 4), _n(4)]),
    ("einsum-outer-sum", linalg.Einsum("ab,c->ca"), [_n(2, 3), _n(2)]),
    ("einsum-ellipsis", linalg.Einsum("...ij,...jk->...ik"), [_n(2, 1, 2, 3), _n(3, 3, 2)]),
    ("einsum-ellipsis-middle", linalg.Einsum("a...,...b->...ab"), [_n(2, 3, 1), _n(2, 2)]),
    ("xcorr2d", linalg.XCorr2D(), [_n(2, 5, 6), _n(2, 2, 3)]),
    ("xcorr2d-4d", linalg.XCorr2D(stride=[2, 1], padding="same"), [_n(2, 2, 5, 5), _n(3, 2, 3, 2)]),
    (
        "xcorr2d-dilated",
        linalg.XCorr2D(padding="full", dilation=[1, 2]),
        [_n(2, 2, 4, 6), _n(2, 2, 2, 2)],
    ),
    ("concatenate", structure.Concatenate(axis=1), [_n(2, 1), _n(2, 3), _n(2, 2)]),
    ("stack", structure.Stack(axis=-1), [_n(2, 3), _n(2, 3)]),
    ("slice", structure.Slice(index=[[1, None, None], [None, None, -2]]), [_n(3, 5)]),
    ("slice-int", structure.Slice(index=[1, [0, 3, 2]]), [_n(3, 4, 2)]),
]
IDS = [name for name, _, _ in CASES]


def test_every_registered_nary_operation_has_a_case() -> None:
    assert {type(op).name for _, op, _ in CASES} == set(nary_classes())


def _fd_jacobian(op: NaryOp, values: list[np.ndarray], i: int) -> np.ndarray:
    """Central differences, one argument entry at a time: (size_i, out_size), C order."""
    h = 1e-6
    columns = []
    for k in range(values[i].size):
        plus = [v.copy() for v in values]
        minus = [v.copy() for v in values]
        plus[i].reshape(-1)[k] += h
        minus[i].reshape(-1)[k] -= h
        columns.append(((op.forward(plus) - op.forward(minus)) / (2 * h)).reshape(-1))
    return np.array(columns)


def _per_argument(test: Callable[[NaryOp, list[np.ndarray], int], None]) -> Callable[..., None]:
    @pytest.mark.parametrize(("name", "op", "values"), CASES, ids=IDS)
    def run(name: str, op: NaryOp, values: list[np.ndarray]) -> None:
        for i in range(len(values)):
            test(op, values, i)

    return run


@_per_argument
def test_jvp_matches_central_differences(op: NaryOp, values: list[np.ndarray], i: int) -> None:
    fd = _fd_jacobian(op, values, i)
    v = RNG.standard_normal((2, *values[i].shape))
    jvp = op.jvp(values, i, v).reshape(2, -1)
    np.testing.assert_allclose(jvp, v.reshape(2, -1) @ fd, rtol=1e-6, atol=1e-7)


@_per_argument
def test_vjp_passes_the_dot_product_test(op: NaryOp, values: list[np.ndarray], i: int) -> None:
    out = op.forward(values)
    v = RNG.standard_normal((1, *values[i].shape))
    u = RNG.standard_normal((1, *out.shape))
    left = float(np.vdot(u, op.jvp(values, i, v)))
    right = float(np.vdot(op.vjp(values, i, u), v))
    assert left == pytest.approx(right, rel=1e-12, abs=1e-12)


@_per_argument
def test_local_jacobian_equals_basis_and_differences(
    op: NaryOp, values: list[np.ndarray], i: int
) -> None:
    for order in ("F", "C"):
        coo = op.local_jacobian(values, i, order)
        assert coo.has_canonical_format and np.all(coo.data != 0)
        n, m = values[i].size, op.forward(values).size
        # rows of J from the JVP of each input basis vector e_k (flat index k in `order`)
        basis = np.stack([np.reshape(e, values[i].shape, order=order) for e in np.eye(n)])
        rows = op.jvp(values, i, basis)
        dense = np.stack([np.reshape(r, -1, order=order) for r in rows]).reshape(n, m)
        np.testing.assert_allclose(coo.toarray(), dense, rtol=1e-12, atol=1e-12)
        if order == "C":
            np.testing.assert_allclose(dense, _fd_jacobian(op, values, i), rtol=1e-6, atol=1e-7)


def test_refusals() -> None:
    with pytest.raises(ShapeError, match="do not broadcast"):
        broadcast.Add().forward([_n(2, 3), _n(4)])
    with pytest.raises(DomainError):
        broadcast.Divide().forward([_n(2), np.array([1.0, 0.0])])
    with pytest.raises(DomainError):
        broadcast.Power().forward([np.array([-1.0]), np.array([0.5])])
    with pytest.raises(ParameterError, match="repeats"):
        linalg.Einsum("ii->i")
    with pytest.raises(ShapeError, match="batch axes"):
        linalg.MatMul().forward([_n(2, 3, 4), _n(3, 4, 2)])
    with pytest.raises(ParameterError, match="step 0"):
        structure.Slice(index=[[None, None, 0]])
    with pytest.raises(ShapeError, match="sliced to nothing"):
        structure.Slice(index=[[3, 1, None]]).forward([_n(4)])
    with pytest.raises(ParameterError, match="takes 2"):
        broadcast.Add().forward([_n(2)])


MATMUL_SHAPES = [
    ((2, 1, 3, 4), (5, 4, 2)),
    ((3, 4), (2, 4, 5)),
    ((4,), (2, 3, 4, 5)),
    ((2, 3, 4), (4,)),
    ((1, 3, 4), (2, 1, 4, 2)),
    ((6, 1, 3, 4), (1, 2, 4, 5)),
    ((4,), (4,)),
]


@pytest.mark.parametrize(("a", "b"), MATMUL_SHAPES)
def test_matmul_broadcasts_batch_axes_as_numpy(a: tuple[int, ...], b: tuple[int, ...]) -> None:
    x, y = _n(*a), _n(*b)
    found = linalg.MatMul().forward([x, y])
    # np.matmul's own broadcasting and 1-D promotion are the oracle
    assert found.shape == np.matmul(x, y).shape
    np.testing.assert_allclose(found, np.matmul(x, y), rtol=1e-12, atol=1e-12)


ELLIPSIS = [
    ("...ij,...jk->...ik", [(2, 1, 3, 4), (5, 4, 2)]),
    ("i...,i...->...", [(3, 2, 1), (3, 4)]),
    ("...,...->...", [(3, 1), (4,)]),
    ("a...b,b->...a", [(2, 3, 4, 5), (5,)]),
    ("...i,i->...", [(4,), (4,)]),
]


@pytest.mark.parametrize(("subscripts", "shapes"), ELLIPSIS)
def test_einsum_ellipsis_broadcasts_as_numpy(
    subscripts: str, shapes: list[tuple[int, ...]]
) -> None:
    arrays = [_n(*s) for s in shapes]
    expected = np.einsum(subscripts, *arrays)  # NumPy's own '...' parsing is the oracle
    found = linalg.Einsum(subscripts).forward(arrays)
    assert found.shape == expected.shape
    np.testing.assert_allclose(found, expected, rtol=1e-12, atol=1e-12)


def test_einsum_ellipsis_refusals() -> None:
    with pytest.raises(ShapeError, match="needs '...'"):
        linalg.Einsum("...i->i").forward([_n(2, 3)])
    with pytest.raises(ShapeError, match="rank >= 2"):
        linalg.Einsum("...ij->...").forward([_n(3)])
    with pytest.raises(ShapeError, match="do not broadcast"):
        linalg.Einsum("...i,...i->...").forward([_n(2, 3), _n(4, 3)])
    with pytest.raises(ParameterError, match="one '...'"):
        linalg.Einsum("......i->i")
