"""Canonical COO (CONVENTIONS section 4) against a dict-accumulation oracle, and the size guards.

Values are small integers and halves so every sum is exact whatever order SciPy adds in; the
oracle can then be compared with ``==``.
"""

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given
from hypothesis import strategies as st

from service.engine.errors import LimitExceeded, ShapeError
from service.engine.sparse import (
    canonicalize,
    check_dense,
    check_nnz,
    coo_from_triplets,
    is_canonical,
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
