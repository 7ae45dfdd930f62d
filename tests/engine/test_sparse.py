"""Canonical COO (CONVENTIONS section 4) against a dict-accumulation oracle, and the size guards.

Values are small integers and halves so every sum is exact whatever order SciPy adds in; the
oracle can then be compared with ``==``.
"""

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st

from service.engine.errors import LimitExceeded, ShapeError
from service.engine.sparse import (
    RowMap,
    canonicalize,
    check_dense,
    check_nnz,
    coo_from_triplets,
    factor_of,
    is_canonical,
    matmul,
    to_coo,
    to_dense,
)

# Includes 0.0 and -0.0 (explicit zeros) and values that cancel (duplicates summing to zero).
value_st = st.sampled_from([0.0, -0.0, 1.0, -1.0, 0.5, -0.5, 2.0, -3.0, 4.5])


@st.composite
def triplets(draw):
    rows = draw(st.integers(1, 6))
    cols = draw(st.integers(1, 6))
    n = draw(st.integers(0, 30))
    row = draw(st.lists(st.integers(0, rows - 1), min_size=n, max_size=n))
    col = draw(st.lists(st.integers(0, cols - 1), min_size=n, max_size=n))
    data = draw(st.lists(value_st, min_size=n, max_size=n))
    return (rows, cols), row, col, data


def canonical_oracle(row, col, data):
    """Sum duplicates in a dict, drop exact zeros, sort by (row, col)."""
    acc: dict[tuple[int, int], float] = {}
    for r, c, v in zip(row, col, data, strict=True):
        acc[(r, c)] = acc.get((r, c), 0.0) + v
    kept = sorted((key, v) for key, v in acc.items() if v != 0)
    return [k[0] for k, _ in kept], [k[1] for k, _ in kept], [v for _, v in kept]


def dense_oracle(shape, row, col, data):
    dense = np.zeros(shape)
    for r, c, v in zip(row, col, data, strict=True):
        dense[r, c] += v
    return dense


def as_arrays(row, col, data):
    return (
        np.asarray(row, dtype=np.int64),
        np.asarray(col, dtype=np.int64),
        np.asarray(data, dtype=np.float64),
    )


def assert_matches_oracle(matrix: sp.coo_array, shape, row, col, data) -> None:
    want_row, want_col, want_data = canonical_oracle(row, col, data)
    assert isinstance(matrix, sp.coo_array)
    assert matrix.shape == shape
    assert matrix.row.tolist() == want_row
    assert matrix.col.tolist() == want_col
    assert matrix.data.tolist() == want_data
    assert matrix.nnz == len(want_data)
    assert matrix.has_canonical_format


@given(triplets())
def test_coo_from_triplets_is_canonical(case) -> None:
    shape, row, col, data = case
    matrix = coo_from_triplets(*as_arrays(row, col, data), shape)
    assert_matches_oracle(matrix, shape, row, col, data)
    assert is_canonical(matrix)


@given(triplets(), st.sampled_from(["coo", "csr", "csc"]))
def test_canonicalize_any_format(case, fmt: str) -> None:
    shape, row, col, data = case
    r, c, d = as_arrays(row, col, data)
    raw = sp.coo_array((d, (r, c)), shape=shape)  # duplicates and zeros kept, unsorted
    matrix = canonicalize(raw.asformat(fmt))
    assert_matches_oracle(matrix, shape, row, col, data)


@given(triplets())
def test_to_dense_equals_scatter_add(case) -> None:
    shape, row, col, data = case
    dense = to_dense(coo_from_triplets(*as_arrays(row, col, data), shape))
    assert isinstance(dense, np.ndarray)
    assert dense.dtype == np.float64
    np.testing.assert_array_equal(dense, dense_oracle(shape, row, col, data))


def test_hand_written_example() -> None:
    # (1,2) twice -> 5; (0,1) + (0,1) cancel -> dropped; explicit zero at (2,0) dropped;
    # input unsorted.
    row = np.array([1, 0, 2, 1, 0, 0])
    col = np.array([2, 1, 0, 2, 1, 0])
    data = np.array([2.0, 3.0, 0.0, 3.0, -3.0, 7.0])
    m = coo_from_triplets(row, col, data, (3, 3))
    assert (m.row.tolist(), m.col.tolist(), m.data.tolist()) == ([0, 1], [0, 2], [7.0, 5.0])


def test_is_canonical_spots_each_violation() -> None:
    def coo(row, col, data):
        return sp.coo_array((np.array(data, float), (np.array(row), np.array(col))), shape=(3, 3))

    assert is_canonical(coo([0, 1], [2, 0], [1.0, 1.0]))
    assert not is_canonical(coo([1, 0], [0, 2], [1.0, 1.0]))  # unsorted
    assert not is_canonical(coo([0, 0], [2, 2], [1.0, 1.0]))  # duplicate
    assert not is_canonical(coo([0, 1], [2, 0], [1.0, 0.0]))  # stored zero


@pytest.mark.parametrize(
    ("row", "col"),
    [([0, 3], [0, 0]), ([0, 0], [0, 4]), ([-1, 0], [0, 0]), ([0, 0], [0, -1])],
    ids=["row==M", "col==N", "row<0", "col<0"],
)
def test_out_of_bounds_triplets_are_a_shape_error(row, col) -> None:
    with pytest.raises(ShapeError):
        coo_from_triplets(np.array(row), np.array(col), np.array([1.0, 2.0]), (3, 4))


@pytest.mark.parametrize(
    ("row", "col", "data"),
    [
        (np.array([0, 1]), np.array([0]), np.array([1.0, 2.0])),
        (np.array([0]), np.array([0]), np.array([1.0, 2.0])),
        (np.zeros((1, 1), int), np.zeros((1, 1), int), np.ones((1, 1))),
    ],
    ids=["col-short", "data-long", "2-D"],
)
def test_unequal_or_non_vector_triplets_are_a_shape_error(row, col, data) -> None:
    with pytest.raises(ShapeError):
        coo_from_triplets(row, col, data, (2, 2))


def test_empty_triplets_give_an_empty_canonical_matrix() -> None:
    empty = np.array([], dtype=np.int64)
    m = coo_from_triplets(empty, empty, np.array([], dtype=np.float64), (2, 3))
    assert m.shape == (2, 3) and m.nnz == 0
    np.testing.assert_array_equal(to_dense(m), np.zeros((2, 3)))


@pytest.mark.parametrize(("rows", "cols", "limit"), [(3, 4, 11), (1000, 1000, 999_999), (7, 1, 6)])
def test_check_dense_raises_over_the_limit(rows: int, cols: int, limit: int) -> None:
    with pytest.raises(LimitExceeded) as excinfo:
        check_dense(rows, cols, limit)
    assert excinfo.value.estimate == rows * cols
    assert excinfo.value.limit == limit
    assert excinfo.value.quantity == "dense Jacobian elements"


@pytest.mark.parametrize(("rows", "cols", "limit"), [(3, 4, 12), (3, 4, 13), (1, 1, 1)])
def test_check_dense_allows_up_to_the_limit(rows: int, cols: int, limit: int) -> None:
    check_dense(rows, cols, limit)


def test_check_nnz_raises_over_the_limit() -> None:
    with pytest.raises(LimitExceeded) as excinfo:
        check_nnz(101, 100)
    assert (excinfo.value.estimate, excinfo.value.limit) == (101, 100)
    assert excinfo.value.quantity == "COO non-zeros"
    with pytest.raises(LimitExceeded) as excinfo:
        check_nnz(5, 4, what="trajectory points")
    assert (excinfo.value.quantity, excinfo.value.estimate, excinfo.value.limit) == (
        "trajectory points",
        5,
        4,
    )
    check_nnz(100, 100)
    check_nnz(0, 100)


# -- factors of the chain-rule product ------------------------------------------------------------

# Products of two of these and sums of a few are exact in float64, whatever the order of the sum.
factor_value_st = st.sampled_from([1.0, -1.0, 0.5, -0.5, 2.0, -3.0, 4.5])


@st.composite
def factors(draw, rows: int, cols: int):
    """A factor of shape (rows, cols) and its dense oracle, drawn independently of each other.

    A RowMap (a diagonal when square, sometimes) with empty rows, or canonical CSR whose entries
    may cancel; both kinds also come with at most one entry per row, which a CSR may hold too.
    """
    dense = np.zeros((rows, cols))
    kind = draw(st.sampled_from(["map", "diagonal", "csr"] if rows == cols else ["map", "csr"]))
    if kind == "csr":
        shape, row, col, data = draw(triplets_of(rows, cols))
        for r, c, v in zip(row, col, data, strict=True):
            dense[r, c] += v
        return sp.csr_array(coo_from_triplets(*as_arrays(row, col, data), shape)), dense
    empty = st.just(0.0)
    value = np.array(draw(st.lists(factor_value_st | empty, min_size=rows, max_size=rows)))
    if kind == "diagonal":
        dense[np.arange(rows), np.arange(rows)] = value
        return RowMap((rows, cols), value), dense
    col = np.array(draw(st.lists(st.integers(0, cols - 1), min_size=rows, max_size=rows)))
    if draw(st.booleans()):
        col = np.sort(col)  # often order-keeping: the columns are relabelled in place
    dense[np.arange(rows), col] = value
    return RowMap((rows, cols), value, col.astype(np.int32)), dense


@st.composite
def triplets_of(draw, rows: int, cols: int):
    n = draw(st.integers(0, 2 * rows * cols))
    row = draw(st.lists(st.integers(0, rows - 1), min_size=n, max_size=n))
    col = draw(st.lists(st.integers(0, cols - 1), min_size=n, max_size=n))
    data = draw(st.lists(factor_value_st, min_size=n, max_size=n))
    return (rows, cols), row, col, data


@st.composite
def factor_pairs(draw):
    m, k, n = (draw(st.integers(1, 5)) for _ in range(3))
    return draw(factors(m, k)), draw(factors(k, n))


def arrays_of(factor) -> list[np.ndarray]:
    if isinstance(factor, RowMap):
        return [factor.value] + ([] if factor.col is None else [factor.col])
    return [factor.data, factor.indices, factor.indptr]


def assert_canonical_dense(matrix: sp.coo_array, dense: np.ndarray) -> None:
    row, col = np.nonzero(dense)  # row-major: the canonical order
    assert matrix.shape == dense.shape and matrix.has_canonical_format
    assert matrix.row.tolist() == row.tolist()
    assert matrix.col.tolist() == col.tolist()
    assert matrix.data.tolist() == dense[row, col].tolist()


@given(factor_pairs())
@settings(max_examples=300)
def test_matmul_of_any_two_factors_is_the_canonical_product(pair) -> None:
    (left, dense_left), (right, dense_right) = pair
    before = [a.copy() for a in arrays_of(left) + arrays_of(right)]
    product = matmul(left, right)
    assert isinstance(product, RowMap) == (isinstance(left, RowMap) and isinstance(right, RowMap))
    assert_canonical_dense(to_coo(product), dense_left @ dense_right)
    for old, new in zip(before, arrays_of(left) + arrays_of(right), strict=True):
        np.testing.assert_array_equal(old, new)  # operands are never written to


@given(triplets())
def test_factor_of_recognizes_one_entry_per_row_and_keeps_the_matrix(case) -> None:
    shape, row, col, data = case
    coo = coo_from_triplets(*as_arrays(row, col, data), shape)
    for matrix in (coo, sp.csr_array(coo)):
        factor = factor_of(matrix)
        assert_canonical_dense(to_coo(factor), coo.toarray())
        per_row = np.bincount(coo.row, minlength=shape[0])
        assert isinstance(factor, RowMap) == bool(np.all(per_row <= 1))
        diagonal = shape[0] == shape[1] and np.array_equal(coo.row, coo.col)
        assert isinstance(factor, RowMap) and factor.col is None or not diagonal


def test_an_entry_that_meets_an_empty_row_gives_no_entry() -> None:
    # A sparse product only multiplies stored entries: an infinite derivative next to an empty row
    # (a zero of relu', say) contributes nothing, where inf * 0 would have made a NaN.
    inf = np.inf
    csr = sp.csr_array(coo_from_triplets(*as_arrays([0, 0], [0, 1], [inf, 1.0]), (1, 2)))
    diagonal = RowMap((2, 2), np.array([0.0, 2.0]))
    merge = RowMap((2, 1), np.array([0.0, 2.0]), np.array([0, 0], dtype=np.int32))
    for right in (diagonal, merge):  # relabelled in place, since the empty row does not count
        product = to_coo(matmul(csr, right))
        assert product.data.tolist() == [2.0] and product.col.tolist() == [right.shape[1] - 1]
    blocked = RowMap((1, 2), np.array([inf]), np.array([0], dtype=np.int32))
    assert to_coo(matmul(blocked, diagonal)).nnz == 0
    empty_left = RowMap((1, 1), np.array([0.0]))
    assert to_coo(matmul(empty_left, sp.csr_array(np.array([[inf]])))).nnz == 0


def test_products_that_underflow_are_dropped() -> None:
    tiny = RowMap((2, 2), np.array([1e-200, 3.0]))
    csr = sp.csr_array(coo_from_triplets(*as_arrays([0, 1], [0, 1], [1e-200, 1e-200]), (2, 2)))
    for product in (matmul(csr, tiny), matmul(tiny, csr)):
        assert to_coo(product).data.tolist() == [3e-200]
    assert to_coo(matmul(tiny, tiny)).data.tolist() == [9.0]
