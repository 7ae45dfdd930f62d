"""Index order (CONVENTIONS section 1): flat/unflat/vec/ten against the notes' literal definitions.

The oracles below are the formulas written out as loops over multi-indices enumerated with
``itertools.product``; nothing here asks NumPy how it lays an array out.
"""

import itertools
import re

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from service.engine import layout
from service.engine.errors import IndexOutOfRange, ParameterError, ShapeError

ORDERS = ("F", "C")

# Rank 0..4, each dimension 1..4: at most 256 multi-indices per example.
dims_st = st.lists(st.integers(1, 4), min_size=0, max_size=4).map(tuple)
order_st = st.sampled_from(ORDERS)


def all_indices(dims: tuple[int, ...]) -> list[tuple[int, ...]]:
    return list(itertools.product(*(range(d) for d in dims)))


def size(dims: tuple[int, ...]) -> int:
    total = 1
    for d in dims:
        total *= d
    return total


def flat_oracle(index: tuple[int, ...], dims: tuple[int, ...], order: str) -> int:
    """The notes: sum_j i_j prod_{k<j} d_k (F); C uses prod_{k>j} d_k."""
    n = len(dims)
    total = 0
    for j in range(n):
        weight = 1
        ks = range(j) if order == "F" else range(j + 1, n)
        for k in ks:
            weight *= dims[k]
        total += index[j] * weight
    return total


def index_array(indices: list[tuple[int, ...]], rank: int) -> np.ndarray:
    return np.array(indices, dtype=np.int64).reshape(len(indices), rank)


# -- flat / unflat -------------------------------------------------------------------------------


@given(dims=dims_st, order=order_st)
def test_flat_matches_the_literal_formula(dims: tuple[int, ...], order: str) -> None:
    for index in all_indices(dims):
        got = layout.flat(np.array(index, dtype=np.int64), dims, order)
        assert got.shape == ()
        assert int(got) == flat_oracle(index, dims, order), (index, dims, order)


@given(dims=dims_st, order=order_st)
def test_flat_vectorized_over_a_batch_matches_the_formula(
    dims: tuple[int, ...], order: str
) -> None:
    indices = all_indices(dims)
    got = layout.flat(index_array(indices, len(dims)), dims, order)
    assert got.dtype == np.int64
    assert got.tolist() == [flat_oracle(i, dims, order) for i in indices]


@given(dims=dims_st, order=order_st)
def test_flat_is_a_bijection_onto_range_of_the_size(dims: tuple[int, ...], order: str) -> None:
    flats = layout.flat(index_array(all_indices(dims), len(dims)), dims, order).tolist()
    assert sorted(flats) == list(range(size(dims)))


@given(dims=dims_st, order=order_st)
def test_unflat_inverts_flat_and_flat_inverts_unflat(dims: tuple[int, ...], order: str) -> None:
    indices = all_indices(dims)
    as_array = index_array(indices, len(dims))
    back = layout.unflat(layout.flat(as_array, dims, order), dims, order)
    assert back.dtype == np.int64
    assert back.shape == (len(indices), len(dims))
    assert [tuple(row) for row in back.tolist()] == indices

    ks = np.arange(size(dims), dtype=np.int64)
    assert layout.flat(layout.unflat(ks, dims, order), dims, order).tolist() == ks.tolist()
    # unflat agrees with the formula element by element, too.
    for k in range(size(dims)):
        index = tuple(layout.unflat(np.int64(k), dims, order).tolist())
        assert flat_oracle(index, dims, order) == k


@given(dims=dims_st, source=order_st, target=order_st)
def test_reorder_flat_translates_between_orders(
    dims: tuple[int, ...], source: str, target: str
) -> None:
    indices = all_indices(dims)
    from_source = np.array([flat_oracle(i, dims, source) for i in indices], dtype=np.int64)
    expected = [flat_oracle(i, dims, target) for i in indices]
    assert layout.reorder_flat(from_source, dims, source, target).tolist() == expected


@pytest.mark.parametrize(("order", "expected"), [("F", 13), ("C", 14)], ids=["F", "C"])
def test_conventions_worked_example(order: str, expected: int) -> None:
    # CONVENTIONS section 1: dims (2, 3, 4), index (1, 0, 2): F 1 + 0*2 + 2*6, C 1*12 + 0*4 + 2.
    assert int(layout.flat(np.array([1, 0, 2]), (2, 3, 4), order)) == expected
    assert layout.unflat(np.int64(expected), (2, 3, 4), order).tolist() == [1, 0, 2]


def test_rank_zero_has_the_single_flat_index_zero() -> None:
    assert int(layout.flat(np.zeros(0, dtype=np.int64), ())) == 0
    assert layout.unflat(np.int64(0), ()).tolist() == []


# -- vec / ten -----------------------------------------------------------------------------------


def random_tensor(dims: tuple[int, ...], seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(dims)


@given(dims=dims_st, order=order_st, seed=st.integers(0, 2**32 - 1))
def test_vec_is_the_literal_definition(dims: tuple[int, ...], order: str, seed: int) -> None:
    x = random_tensor(dims, seed)
    v = layout.vec(x, order)
    assert v.shape == (size(dims),)
    expected = np.full(size(dims), np.nan)
    for index in all_indices(dims):
        expected[flat_oracle(index, dims, order)] = x[index]
    np.testing.assert_array_equal(v, expected)


@given(dims=dims_st, order=order_st, seed=st.integers(0, 2**32 - 1))
def test_ten_inverts_vec_and_vec_inverts_ten(dims: tuple[int, ...], order: str, seed: int) -> None:
    x = random_tensor(dims, seed)
    back = layout.ten(layout.vec(x, order), dims, order)
    assert back.shape == dims
    np.testing.assert_array_equal(back, x)

    v = np.random.default_rng(seed).standard_normal(size(dims))
    t = layout.ten(v, dims, order)
    assert t.shape == dims
    np.testing.assert_array_equal(layout.vec(t, order), v)
    # ten by its definition: t[i] = v[flat(i)].
    for index in all_indices(dims):
        assert t[index] == v[flat_oracle(index, dims, order)]


@given(
    batch=st.lists(st.integers(1, 3), min_size=0, max_size=2).map(tuple),
    dims=dims_st,
    order=order_st,
    seed=st.integers(0, 2**32 - 1),
)
def test_batched_vec_and_ten_agree_with_the_unbatched_ones(
    batch: tuple[int, ...], dims: tuple[int, ...], order: str, seed: int
) -> None:
    x = random_tensor(batch + dims, seed)
    vs = layout.vec_batch(x, len(batch), order)
    assert vs.shape == (*batch, size(dims))
    for b in all_indices(batch):
        np.testing.assert_array_equal(vs[b], layout.vec(x[b], order))

    v = np.random.default_rng(seed + 1).standard_normal((*batch, size(dims)))
    ts = layout.ten_batch(v, dims, order)
    assert ts.shape == (*batch, *dims)
    for b in all_indices(batch):
        np.testing.assert_array_equal(ts[b], layout.ten(v[b], dims, order))
    np.testing.assert_array_equal(layout.ten_batch(vs, dims, order), x)


# -- errors --------------------------------------------------------------------------------------


@pytest.mark.parametrize("order", ORDERS)
@pytest.mark.parametrize(
    "index", [[1, 3, 2], [2, 0, 0], [0, 0, 4], [-1, 0, 0]], ids=lambda i: str(i)
)
def test_out_of_range_index_is_named(index: list[int], order: str) -> None:
    with pytest.raises(IndexOutOfRange) as excinfo:
        layout.flat(np.array(index), (2, 3, 4), order)
    assert str(index) in str(excinfo.value)


def test_out_of_range_index_in_a_batch_names_the_offending_one() -> None:
    batch = np.array([[0, 0, 0], [1, 2, 3], [1, 3, 0]])
    with pytest.raises(IndexOutOfRange) as excinfo:
        layout.flat(batch, (2, 3, 4))
    assert "[1, 3, 0]" in str(excinfo.value)


@pytest.mark.parametrize("order", ORDERS)
@pytest.mark.parametrize("k", [24, -1, 10**12])
def test_out_of_range_flat_index_is_named(k: int, order: str) -> None:
    with pytest.raises(IndexOutOfRange) as excinfo:
        layout.unflat(np.int64(k), (2, 3, 4), order)
    assert re.search(rf"(?<![\d-]){k}(?!\d)", str(excinfo.value))


@pytest.mark.parametrize("source", ORDERS)
@pytest.mark.parametrize("target", ORDERS)
@pytest.mark.parametrize("k", [24, -1])
def test_reorder_flat_refuses_out_of_range_indices_like_unflat(
    k: int, source: str, target: str
) -> None:
    # reorder_flat must be consistent with unflat/flat: an index outside the tensor is refused
    # whether or not the two orders coincide.
    with pytest.raises(IndexOutOfRange):
        layout.reorder_flat(np.array([0, k]), (2, 3, 4), source, target)


@pytest.mark.parametrize(
    "index",
    [np.array([1, 0]), np.array([1, 0, 2, 0]), np.array(1), np.array([[1, 0], [0, 0]])],
    ids=["too-few", "too-many", "scalar", "batch-too-few"],
)
def test_wrong_component_count_is_a_shape_error(index: np.ndarray) -> None:
    with pytest.raises(ShapeError) as excinfo:
        layout.flat(index, (2, 3, 4))
    assert excinfo.type is ShapeError  # not an IndexOutOfRange: the index has the wrong length


@pytest.mark.parametrize("order", ORDERS)
def test_ten_with_wrong_length_names_both_numbers(order: str) -> None:
    with pytest.raises(ShapeError) as excinfo:
        layout.ten(np.arange(5.0), (2, 3), order)
    message = str(excinfo.value)
    assert re.search(r"\b5\b", message) and re.search(r"\b6\b", message), message


def test_ten_refuses_a_non_vector() -> None:
    with pytest.raises(ShapeError):
        layout.ten(np.zeros((2, 3)), (6,))


def test_ten_batch_with_wrong_length_is_a_shape_error() -> None:
    with pytest.raises(ShapeError):
        layout.ten_batch(np.zeros((2, 5)), (2, 3))


ZERO_DIM_CALLS = {
    "flat": lambda: layout.flat(np.array([0, 0]), (2, 0)),
    "unflat": lambda: layout.unflat(np.int64(0), (2, 0)),
    "place_values": lambda: layout.place_values((0,)),
    "check_dims": lambda: layout.check_dims((3, 0, 1)),
    "ten": lambda: layout.ten(np.zeros(0), (0,)),
    "ten-negative": lambda: layout.ten(np.zeros(2), (-1, -2)),
    "reorder_flat": lambda: layout.reorder_flat(np.array([0]), (2, 0), "F", "C"),
    # ten_batch must refuse the same shapes as ten does per batch element.
    "ten_batch": lambda: layout.ten_batch(np.zeros((2, 0)), (0,)),
    "reorder_flat-same-order": lambda: layout.reorder_flat(np.array([0]), (2, 0), "F", "F"),
}


@pytest.mark.parametrize("call", list(ZERO_DIM_CALLS.values()), ids=list(ZERO_DIM_CALLS))
def test_dims_with_zero_are_a_shape_error(call) -> None:
    with pytest.raises(ShapeError):
        call()


BAD_ORDER_CALLS = {
    "flat": lambda o: layout.flat(np.array([0]), (2,), o),
    "unflat": lambda o: layout.unflat(np.int64(0), (2,), o),
    "place_values": lambda o: layout.place_values((2,), o),
    "vec": lambda o: layout.vec(np.zeros(2), o),
    "ten": lambda o: layout.ten(np.zeros(2), (2,), o),
    "vec_batch": lambda o: layout.vec_batch(np.zeros((2, 2)), 1, o),
    "ten_batch": lambda o: layout.ten_batch(np.zeros((2, 2)), (2,), o),
    "reorder_flat-source": lambda o: layout.reorder_flat(np.array([0]), (2,), o, "F"),
    "reorder_flat-target": lambda o: layout.reorder_flat(np.array([0]), (2,), "F", o),
    "reorder_flat-both": lambda o: layout.reorder_flat(np.array([0]), (2,), o, o),
}


@pytest.mark.parametrize("bad", ["X", "c", "f", ""])
@pytest.mark.parametrize("call", list(BAD_ORDER_CALLS.values()), ids=list(BAD_ORDER_CALLS))
def test_bad_order_is_a_parameter_error(call, bad: str) -> None:
    with pytest.raises(ParameterError) as excinfo:
        call(bad)
    assert repr(bad) in str(excinfo.value)


@pytest.mark.parametrize(
    "call",
    [
        lambda: layout.vec_batch(np.zeros((2, 3)), 3),
        lambda: layout.vec_batch(np.zeros((2, 3)), -1),
        lambda: layout.ten_batch(np.float64(1.0), ()),
    ],
    ids=["vec_batch-batch_ndim-above-rank", "vec_batch-negative-batch_ndim", "ten_batch-scalar"],
)
def test_batch_helpers_raise_shape_error_not_numpy_errors(call) -> None:
    # STYLE 3.11 (shape rule): invalid shapes raise the domain error, never NumPy's
    # IndexError/ValueError.
    with pytest.raises(ShapeError):
        call()
