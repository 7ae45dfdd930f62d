"""Index order and Jacobian layout: the only module that turns tensors into vectors and back.

The seed notes define ``flat_{d1..dn}(i1..in) = sum_j i_j prod_{k<j} d_k``: the first index varies
fastest (order ``"F"``). Order ``"C"`` (last index fastest) is served for NumPy/PyTorch/JAX users.
``vec``, ``ten``, ``flat`` and ``unflat`` all take the order, so one request uses one order
throughout. The Jacobian layout ``"in_out"`` is the notes' (rows index the input, columns the
output); ``"out_in"`` is its transpose. Nothing outside this module reshapes a tensor to 1-D.
"""

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import scipy.sparse as sp
from numpy.typing import NDArray

from .errors import IndexOutOfRange, ParameterError, ShapeError
from .types import FloatArray, IndexArray, Layout, Order, Shape

ORDERS: tuple[Order, ...] = ("F", "C")
LAYOUTS: tuple[Layout, ...] = ("in_out", "out_in")
# Flat indices are int64; a tensor with more elements could not be addressed.
MAX_FLAT_SIZE = np.iinfo(np.int64).max


def _check_order(order: str) -> None:
    if order not in ORDERS:
        raise ParameterError(f"order must be 'F' or 'C', got {order!r}")


def check_dims(dims: Sequence[int], what: str = "shape") -> Shape:
    """Validate a shape: every dimension an int >= 1 and the size addressable by int64.

    Parameters
    ----------
    dims : sequence of int
        The dimensions ``(d_1, ..., d_n)``; ``n = 0`` is a scalar.
    what : str
        The name used in error messages.

    Returns
    -------
    tuple of int
        The dimensions as a tuple.

    Raises
    ------
    ShapeError
        If a dimension is below 1 or the product overflows int64.
    """
    shape = tuple(int(d) for d in dims)
    bad = [d for d in shape if d < 1]
    if bad:
        raise ShapeError(f"{what} {list(shape)} has dimensions below 1: {bad}")
    if math.prod(shape) > MAX_FLAT_SIZE:
        raise ShapeError(f"{what} {list(shape)} has more elements than int64 can index")
    return shape


def size_of(shape: Sequence[int]) -> int:
    """Return the number of elements of a tensor of ``shape`` (1 for a scalar), as a Python int."""
    return math.prod(shape)


def place_values(dims: Sequence[int], order: Order = "F") -> IndexArray:
    """Return the weight of each index position in the flat index.

    Parameters
    ----------
    dims : sequence of int, length n
        Tensor dimensions.
    order : {"F", "C"}
        ``"F"``: weight ``prod_{k<j} d_k`` (the notes). ``"C"``: ``prod_{k>j} d_k``.

    Returns
    -------
    ndarray of int64, shape (n,)
    """
    _check_order(order)
    shape = check_dims(dims, "dims")
    if order == "F":
        weights = [math.prod(shape[:j]) for j in range(len(shape))]
    else:
        weights = [math.prod(shape[j + 1 :]) for j in range(len(shape))]
    return np.asarray(weights, dtype=np.int64)


def flat(index: IndexArray, dims: Sequence[int], order: Order = "F") -> IndexArray:
    """Map multi-indices to flat indices: the notes' ``flat_{d1..dn}``, vectorized.

    Parameters
    ----------
    index : ndarray of int, shape (..., n)
        One multi-index per row; ``0 <= index[..., j] < dims[j]``.
    dims : sequence of int, length n
        Tensor dimensions ``(d_1, ..., d_n)``.
    order : {"F", "C"}
        ``"F"``: ``sum_j i_j prod_{k<j} d_k`` (first index fastest, the notes' formula).
        ``"C"``: last index fastest.

    Returns
    -------
    ndarray of int64, shape (...)
        The flat indices.

    Raises
    ------
    ShapeError
        If the index length differs from the rank of ``dims``.
    IndexOutOfRange
        If a component is negative or not below its dimension.

    Examples
    --------
    >>> int(flat(np.array([1, 0, 2]), (2, 3, 4)))
    13
    >>> int(flat(np.array([1, 0, 2]), (2, 3, 4), order="C"))
    14
    """
    weights = place_values(dims, order)
    index = np.asarray(index, dtype=np.int64)
    if index.ndim == 0 or index.shape[-1] != len(weights):
        raise ShapeError(
            f"an index into dims {list(dims)} needs {len(weights)} components, "
            f"got index array of shape {list(index.shape)}"
        )
    # (..., n) -> (...): which multi-indices have a component outside its dimension
    bad = ((index < 0) | (index >= np.asarray(dims, dtype=np.int64))).any(axis=-1)
    if np.any(bad):
        raise IndexOutOfRange(
            f"index {index[bad][0].tolist()} is out of range for dims {list(dims)}"
        )
    # (..., n) @ (n,) -> (...)
    result: IndexArray = index @ weights
    return result


def unflat(flat_index: IndexArray, dims: Sequence[int], order: Order = "F") -> IndexArray:
    """Map flat indices back to multi-indices: the inverse of :func:`flat`.

    Parameters
    ----------
    flat_index : ndarray of int, shape (...)
        Flat indices with ``0 <= flat_index < prod(dims)``.
    dims : sequence of int, length n
    order : {"F", "C"}

    Returns
    -------
    ndarray of int64, shape (..., n)

    Raises
    ------
    IndexOutOfRange
        If a flat index is negative or not below ``prod(dims)``.
    """
    weights = place_values(dims, order)
    flat_index = np.asarray(flat_index, dtype=np.int64)
    size = size_of(dims)
    out_of_range = (flat_index < 0) | (flat_index >= size)
    if np.any(out_of_range):
        value = int(flat_index[out_of_range][0])
        raise IndexOutOfRange(
            f"flat index {value} is out of range for dims {list(dims)} (size {size})"
        )
    dims_array = np.asarray(dims, dtype=np.int64)
    # (..., 1) // (n,) % (n,) -> (..., n)
    result: IndexArray = (flat_index[..., np.newaxis] // weights) % dims_array
    return result


def vec(x: FloatArray, order: Order = "F") -> FloatArray:
    """Flatten a tensor into a vector: the notes' ``vec_{l,m,n}``.

    Parameters
    ----------
    x : ndarray, shape (d_1, ..., d_n)
    order : {"F", "C"}

    Returns
    -------
    ndarray, shape (d_1 * ... * d_n,)
        ``v[flat(i)] = x[i]`` for every multi-index ``i``.
    """
    _check_order(order)
    return np.reshape(x, -1, order=order)


def ten(v: FloatArray, shape: Sequence[int], order: Order = "F") -> FloatArray:
    """Reshape a vector into a tensor: the notes' ``ten``, the inverse of :func:`vec`.

    Parameters
    ----------
    v : ndarray, shape (N,)
    shape : sequence of int
        Target shape with ``prod(shape) == N``.
    order : {"F", "C"}

    Returns
    -------
    ndarray, shape ``shape``

    Raises
    ------
    ShapeError
        If ``v`` is not 1-D or its length is not ``prod(shape)``.
    """
    _check_order(order)
    target = check_dims(shape)
    if v.ndim != 1:
        raise ShapeError(f"ten expects a vector, got an array of shape {list(v.shape)}")
    if v.shape[0] != size_of(target):
        raise ShapeError(
            f"vector of length {v.shape[0]} cannot become shape {list(target)} "
            f"(needs {size_of(target)} elements)"
        )
    return np.reshape(v, target, order=order)


def vec_batch(x: FloatArray, batch_ndim: int, order: Order = "F") -> FloatArray:
    """Flatten the trailing axes of a batch of tensors, keeping ``batch_ndim`` leading axes.

    Parameters
    ----------
    x : ndarray, shape (*batch, d_1, ..., d_n)
    batch_ndim : int
    order : {"F", "C"}
        Order over ``(d_1, ..., d_n)`` only.

    Returns
    -------
    ndarray, shape (*batch, d_1 * ... * d_n)
    """
    _check_order(order)
    if not 0 <= batch_ndim <= x.ndim:
        raise ShapeError(
            f"batch_ndim {batch_ndim} must lie in [0, {x.ndim}] for an array of shape "
            f"{list(x.shape)}"
        )
    batch = x.shape[:batch_ndim]
    tail = x.shape[batch_ndim:]
    if order == "F":
        # Reverse the tensor axes so a C reshape of them counts the first index fastest.
        axes = (*range(batch_ndim), *range(x.ndim - 1, batch_ndim - 1, -1))
        x = np.transpose(x, axes)
    return np.reshape(x, (*batch, size_of(tail)))


def ten_batch(v: FloatArray, shape: Sequence[int], order: Order = "F") -> FloatArray:
    """Inverse of :func:`vec_batch`: ``(*batch, N) -> (*batch, *shape)``."""
    _check_order(order)
    shape = check_dims(shape)
    if v.ndim < 1:
        raise ShapeError("ten_batch expects at least one axis of vectors, got a scalar")
    batch = v.shape[:-1]
    if v.shape[-1] != size_of(shape):
        raise ShapeError(f"vectors of length {v.shape[-1]} cannot become shape {list(shape)}")
    if order == "C":
        return np.reshape(v, (*batch, *shape))
    # F order is C order over the reversed tensor axes; reverse them back.
    reversed_tensor = np.reshape(v, (*batch, *shape[::-1]))
    nb, n = len(batch), len(shape)
    return np.transpose(reversed_tensor, (*range(nb), *range(nb + n - 1, nb - 1, -1)))


def reorder_flat(
    flat_index: IndexArray, dims: Sequence[int], source: Order, target: Order
) -> IndexArray:
    """Translate flat indices of a ``dims`` tensor from one order to the other.

    Parameters
    ----------
    flat_index : ndarray of int, shape (...)
    dims : sequence of int
    source, target : {"F", "C"}

    Returns
    -------
    ndarray of int64, shape (...)
    """
    return flat(unflat(flat_index, dims, source), dims, target)


def orient_coo(matrix: sp.coo_array, layout: Layout) -> sp.coo_array:
    """Return an ``in_out`` COO Jacobian in the requested layout (``out_in`` is the transpose)."""
    if layout not in LAYOUTS:
        raise ParameterError(f"layout must be 'in_out' or 'out_in', got {layout!r}")
    return matrix if layout == "in_out" else matrix.T


def orient_dense(matrix: FloatArray, layout: Layout) -> FloatArray:
    """Return an ``in_out`` dense Jacobian in the requested layout (``out_in`` is the transpose)."""
    if layout not in LAYOUTS:
        raise ParameterError(f"layout must be 'in_out' or 'out_in', got {layout!r}")
    return matrix if layout == "in_out" else np.ascontiguousarray(matrix.T)


def broadcast_entries(*arrays: NDArray[Any]) -> tuple[NDArray[Any], ...]:
    """Broadcast arrays against each other and list their elements as 1-D arrays.

    For building COO triplets from index grids: only the pairing of the k-th elements of the
    results matters (canonicalization sorts them), so the listing follows memory (C) order and has
    nothing to do with the math ``order``.

    Parameters
    ----------
    *arrays : ndarray
        Arrays with mutually broadcastable shapes.

    Returns
    -------
    tuple of ndarray, each of shape (N,)
        ``N`` is the size of the broadcast shape.
    """
    return tuple(np.reshape(a, -1) for a in np.broadcast_arrays(*arrays))


def flat_grid(dims: Sequence[int], order: Order = "F") -> IndexArray:
    """Return the flat index of every element of a ``dims`` tensor, laid out in that tensor's shape.

    Parameters
    ----------
    dims : sequence of int
    order : {"F", "C"}

    Returns
    -------
    ndarray of int64, shape ``dims``
        ``grid[i] == flat(i, dims, order)`` for every multi-index ``i``: it is ``ten`` of
        ``0, 1, ..., N - 1``, the index arrays of local Jacobians are cut out of it.
    """
    _check_order(order)
    shape = check_dims(dims, "dims")
    grid: IndexArray = np.reshape(np.arange(size_of(shape), dtype=np.int64), shape, order=order)
    return grid
