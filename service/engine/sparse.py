"""Canonical sparse matrices on top of ``scipy.sparse``, and the product of chain-rule factors.

CONVENTIONS section 4: every COO matrix the engine returns is canonical, i.e. sorted by
``(row, col)``, free of duplicates, with exact zeros dropped. SciPy does the arithmetic; this module
fixes the canonical form, estimates sizes before anything is allocated, and multiplies the local
Jacobians of a chain (:func:`matmul`), each pair by the cheapest route that computes the same
entries as a sparse product.
"""

import math
from dataclasses import dataclass
from typing import Any, TypeAlias

import numpy as np
import scipy.sparse as sp
from numpy.typing import NDArray
from scipy.sparse._sparsetools import csr_matvec, expandptr

from .errors import LimitExceeded, ShapeError
from .types import FloatArray, IndexArray, Shape

__all__ = [
    "COO_ENTRY_BYTES",
    "CsrMatVec",
    "DENSE_ENTRY_BYTES",
    "Factor",
    "RowMap",
    "canonicalize",
    "check_dense",
    "check_nnz",
    "coo_from_triplets",
    "factor_of",
    "index_dtype",
    "is_canonical",
    "matmul",
    "to_coo",
    "to_dense",
]

# Bytes of one COO entry on the wire and in memory: int64 row + int64 col + float64 value.
COO_ENTRY_BYTES = 24
DENSE_ENTRY_BYTES = 8

_INT32_MAX = int(np.iinfo(np.int32).max)

# Row and column indices: int32 where the shape allows (see index_dtype), int64 otherwise.
Indices: TypeAlias = NDArray[np.signedinteger[Any]]


def canonicalize(matrix: sp.coo_array | sp.csr_array | sp.csc_array) -> sp.coo_array:
    """Return ``matrix`` as a canonical COO array.

    Parameters
    ----------
    matrix : scipy sparse array or matrix, shape (M, N)

    Returns
    -------
    scipy.sparse.coo_array, shape (M, N)
        Sorted by ``(row, col)``, duplicates summed, exact zeros dropped.

    Notes
    -----
    The conversion goes through CSR because SciPy's COO->CSR conversion sorts and sums duplicates
    in O(nnz) compiled code, cheaper than a lexsort of the triplets.
    """
    csr = sp.csr_array(matrix.tocsr())
    csr.sum_duplicates()
    csr.eliminate_zeros()
    coo: sp.coo_array = csr.tocoo()
    coo.has_canonical_format = True
    return coo


def coo_from_triplets(
    row: IndexArray, col: IndexArray, data: FloatArray, shape: tuple[int, int]
) -> sp.coo_array:
    """Build a canonical COO array from triplets (duplicates are summed).

    Parameters
    ----------
    row, col : ndarray of int, shape (nnz,)
        Row and column indices, ``0 <= row < shape[0]``, ``0 <= col < shape[1]``.
    data : ndarray of float64, shape (nnz,)
    shape : (int, int)

    Returns
    -------
    scipy.sparse.coo_array, shape ``shape``, canonical.

    Raises
    ------
    ShapeError
        If the arrays differ in length or an index lies outside ``shape``.
    """
    if not (row.shape == col.shape == data.shape) or row.ndim != 1:
        raise ShapeError(
            f"COO triplets need equal 1-D lengths, got row {list(row.shape)}, "
            f"col {list(col.shape)}, data {list(data.shape)}"
        )
    outside = row.size and (
        row.min() < 0 or row.max() >= shape[0] or col.min() < 0 or col.max() >= shape[1]
    )
    if outside:
        raise ShapeError(f"COO indices fall outside the matrix shape {list(shape)}")
    return canonicalize(sp.coo_array((data, (row, col)), shape=shape))


def check_nnz(estimate: int, limit: int, what: str = "COO non-zeros") -> None:
    """Raise :class:`LimitExceeded` if a COO result would hold more than ``limit`` entries."""
    if estimate > limit:
        raise LimitExceeded(what, estimate, limit, setting="max_coo_nnz")


def check_dense(rows: int, cols: int, limit: int) -> None:
    """Raise :class:`LimitExceeded` if a dense ``rows x cols`` matrix exceeds ``limit`` elements."""
    if rows * cols > limit:
        raise LimitExceeded(
            "dense Jacobian elements",
            rows * cols,
            limit,
            hint=f"a dense matrix would need {rows * cols * DENSE_ENTRY_BYTES} bytes; "
            "ask for format 'coo', or for a JVP/VJP",
            setting="max_dense_jacobian_elements",
        )


def to_dense(matrix: sp.coo_array) -> FloatArray:
    """Return the dense ``ndarray`` of a COO matrix (the caller checks the dense limit first)."""
    dense: FloatArray = matrix.toarray()
    return dense


def is_canonical(matrix: sp.coo_array) -> bool:
    """Tell whether ``matrix`` is sorted by (row, col), duplicate-free and without stored zeros."""
    row = np.asarray(matrix.row, dtype=np.int64)
    col = np.asarray(matrix.col, dtype=np.int64)
    key = row * matrix.shape[1] + col
    return bool(np.all(np.diff(key) > 0) and np.all(matrix.data != 0))


def index_dtype(shape: tuple[int, int], nnz: int) -> type[np.signedinteger[Any]]:
    """Return the index type of a sparse matrix: int32 where it can hold every index, else int64.

    Parameters
    ----------
    shape : (int, int)
    nnz : int
        The number of stored entries (a CSR ``indptr`` counts up to it).

    Returns
    -------
    type
        ``numpy.int32`` if the dimensions and ``nnz`` are at most ``2**31 - 1``, else
        ``numpy.int64``.
    """
    # int32 when every index and the entry count fit: SciPy multiplies two matrices in their
    # common index type, so one int64 operand makes it copy the other, however large, to int64.
    return np.int32 if max(*shape, nnz) <= _INT32_MAX else np.int64


# -- factors of the chain-rule product ------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class RowMap:
    """A matrix with at most one entry per row: ``M[i, col[i]] = value[i]``.

    Every input element reaches at most one output element in the Jacobians of elementwise
    functions and scalings (diagonals), reshapes and transposes (permutations), reductions and
    pooling with disjoint windows. A product with such a factor on the left, or on the right when
    it keeps the order of columns, only moves and scales entries (see :func:`matmul`).

    Attributes
    ----------
    shape : (int, int)
    value : ndarray of float64, shape (shape[0],)
        The entry of each row, 0 for a row without one: a canonical matrix stores no zeros, so a
        zero is never an entry and never multiplies anything.
    col : ndarray of int, shape (shape[0],), or None
        The column of each row's entry (any valid column for an empty row); None for a square
        diagonal, ``col[i] = i``.
    """

    shape: tuple[int, int]
    value: FloatArray
    col: Indices | None = None

    def columns(self) -> Indices:
        """Return ``col``, spelled out for a diagonal."""
        if self.col is None:
            return np.arange(self.shape[0], dtype=index_dtype(self.shape, self.shape[0]))
        return self.col

    def keeps_order(self) -> bool:
        """Tell whether the columns increase along the non-empty rows (a diagonal's do).

        Relabelling the columns of a sorted row by such a map leaves it sorted and free of
        duplicates.
        """
        return self.col is None or bool(np.all(np.diff(self.col[self.value != 0]) > 0))

    def to_csr(self) -> sp.csr_array:
        """Return the same matrix as canonical CSR (empty rows hold nothing)."""
        present = np.flatnonzero(self.value)
        dtype = index_dtype(self.shape, present.size)
        indptr = np.zeros(self.shape[0] + 1, dtype=dtype)
        np.cumsum(self.value != 0, out=indptr[1:])
        return _canonical_csr(self.value[present], self.columns()[present], indptr, self.shape)


Factor: TypeAlias = RowMap | sp.csr_array


def factor_of(matrix: sp.coo_array | sp.csr_array) -> Factor:
    """Return a canonical matrix in the form :func:`matmul` multiplies cheapest.

    Parameters
    ----------
    matrix : scipy.sparse.coo_array or csr_array, shape (M, N)
        Canonical: sorted by (row, col), no duplicates, no stored zeros.

    Returns
    -------
    RowMap or scipy.sparse.csr_array
        A :class:`RowMap` (with ``col`` None for a square diagonal) if no row holds two entries,
        canonical CSR with the smallest index type otherwise. The arrays of ``matrix`` may be
        shared, not copied: no factor is ever written to.
    """
    if isinstance(matrix, sp.coo_array):
        row = matrix.row
        # Sorted rows hold one entry each exactly when they strictly increase.
        if np.all(row[1:] > row[:-1]):
            return _row_map(matrix.shape, row, matrix.col, matrix.data)
        return _csr_of(matrix)
    lengths = np.diff(matrix.indptr)
    if lengths.max(initial=0) <= 1:
        return _row_map(matrix.shape, np.flatnonzero(lengths), matrix.indices, matrix.data)
    return _csr_of(matrix)


def _row_map(shape: tuple[int, int], row: Indices, col: Indices, data: FloatArray) -> RowMap:
    # The entries (row[t], col[t], data[t]) of a matrix with at most one entry per row.
    value = np.zeros(shape[0])
    value[row] = data
    if shape[0] == shape[1] and np.array_equal(row, col):
        return RowMap(shape, value)
    columns = np.zeros(shape[0], dtype=index_dtype(shape, shape[0]))
    columns[row] = col
    return RowMap(shape, value, columns)


def to_coo(factor: Factor) -> sp.coo_array:
    """Return a factor as a canonical COO array (indices int32 when the shape allows).

    Parameters
    ----------
    factor : RowMap or canonical scipy.sparse.csr_array

    Returns
    -------
    scipy.sparse.coo_array, canonical.
    """
    if isinstance(factor, RowMap):
        present = np.flatnonzero(factor.value)
        row = present.astype(index_dtype(factor.shape, present.size))
        col = row if factor.col is None else factor.col[row]
        coo = sp.coo_array((factor.value[present], (row, col)), shape=factor.shape)
    else:
        # CSR rows are sorted and unique: only the row indices need to be expanded (SciPy's
        # compiled pass that tocoo uses; np.repeat took 1.5x as long). The arrays are set on an
        # empty COO: SciPy's constructor (and tocoo) would check every index against the shape,
        # four O(nnz) reductions that cost more than the expansion (0.4 of 1.0 ms for the 1.3M
        # entries of a (3,224,224) k3 cross-correlation Jacobian).
        nnz = factor.nnz
        col = factor.indices[:nnz]
        row = np.empty(nnz, dtype=col.dtype)
        expandptr(factor.shape[0], factor.indptr.astype(col.dtype, copy=False), row)
        coo = sp.coo_array(factor.shape, dtype=factor.dtype)
        coo.coords = (row, col)
        coo.data = factor.data[:nnz]
    coo.has_canonical_format = True
    return coo


def matmul(left: Factor, right: Factor) -> Factor:
    """Return the product ``left @ right`` of two chain-rule factors.

    Parameters
    ----------
    left : RowMap or canonical scipy.sparse.csr_array, shape (M, K)
    right : RowMap or canonical scipy.sparse.csr_array, shape (K, N)

    Returns
    -------
    RowMap or scipy.sparse.csr_array, shape (M, N)
        A :class:`RowMap` if both factors are; canonical CSR otherwise (exact zeros dropped).
        The operands are not modified; the result may share their index arrays.

    Notes
    -----
    ``(AB)[i, j] = sum_k A[i, k] B[k, j]``. If ``A`` is a :class:`RowMap`, or ``B`` is one that
    keeps the order of columns, every such sum has at most one term: the product scales and moves
    entries that are already in canonical order, and only zeros (underflow, or an entry that met
    an empty row) have to be dropped.

    - RowMap times RowMap: compose the two maps (a RowMap again);
    - RowMap times CSR: gather and scale whole rows, ``value[i] * B[col[i], :]``;
    - CSR times a RowMap that keeps the order of columns (:meth:`RowMap.keeps_order`, e.g. a
      diagonal): relabel and scale the columns of ``A``, whose structure is kept;
    - otherwise (a CSR right factor, or a map that merges or reorders columns, e.g. pooling):
      SciPy's sparse product (SMMP), then each row is sorted.

    Relabelling the columns for a map that merges them would leave duplicates to be summed after
    a sort within each row: measured more than twice as slow as SMMP, whose rows come out
    duplicate-free, on the 6.2M-entry cross-correlation matrix of ``benchmarks/jacobian.py``.

    Each entry is computed as SciPy's sparse product computes it: a single term is the same
    product, and a sum runs over ``A``'s sorted columns in order.
    """
    assert left.shape[1] == right.shape[0], "matmul: the chain checked every link's shape"
    if isinstance(left, RowMap):
        if isinstance(right, RowMap):
            return _compose(left, right)
        return _gather_rows(left, right)
    if isinstance(right, RowMap):
        if right.keeps_order():
            return _relabel_columns(left, right)
        right = right.to_csr()
    return _sparse_product(left, right)


def _csr_of(matrix: sp.coo_array | sp.csr_array) -> sp.csr_array:
    # A canonical COO is already in CSR order: counting the entries of each row gives indptr, and
    # col and data become the CSR arrays as they are (SciPy's conversion scatters every entry).
    dtype = index_dtype(matrix.shape, matrix.nnz)
    indptr: Indices
    indices: Indices
    if isinstance(matrix, sp.csr_array):
        indptr, indices = matrix.indptr, matrix.indices
    else:
        indptr = np.zeros(matrix.shape[0] + 1, dtype=dtype)
        np.cumsum(np.bincount(matrix.row, minlength=matrix.shape[0]), out=indptr[1:])
        indices = matrix.col
    csr = sp.csr_array(
        (matrix.data, indices.astype(dtype, copy=False), indptr.astype(dtype, copy=False)),
        shape=matrix.shape,
    )
    csr.has_canonical_format = True
    return csr


def _canonical_csr(
    data: FloatArray, indices: Indices, indptr: Indices, shape: tuple[int, int]
) -> sp.csr_array:
    # Rows sorted and duplicate-free except where data holds exact zeros, which are dropped.
    # data is always the caller's fresh array; indices and indptr may be an operand's, so SciPy's
    # in-place compaction gets copies of them.
    if np.all(data):
        csr = sp.csr_array((data, indices, indptr), shape=shape)
        csr.has_canonical_format = True
        return csr
    csr = sp.csr_array((data, indices.copy(), indptr.copy()), shape=shape)
    csr.has_canonical_format = True
    csr.eliminate_zeros()
    return csr


def _times(values: FloatArray, factors: FloatArray) -> FloatArray:
    # values * factors, but 0 wherever either is 0: a zero is an empty row of a RowMap, which
    # multiplies nothing, so an infinite derivative meeting it gives no entry rather than a NaN.
    with np.errstate(invalid="ignore"):  # inf * 0: overwritten below
        product = values * factors
    product[(values == 0) | (factors == 0)] = 0.0
    return product


def _compose(left: RowMap, right: RowMap) -> RowMap:
    # Row i of left reaches column col_l[i], which right sends on to col_r[col_l[i]].
    if left.col is None:
        return RowMap(left.shape[:1] + right.shape[1:], _times(left.value, right.value), right.col)
    col = left.col if right.col is None else right.col[left.col]
    return RowMap((left.shape[0], right.shape[1]), _times(left.value, right.value[left.col]), col)


def _gather_rows(left: RowMap, right: sp.csr_array) -> sp.csr_array:
    # Row i of the product is value[i] * right[col[i], :]: whole sorted rows of right, copied
    # and scaled; an empty row of left stays empty.
    shape = (left.shape[0], right.shape[1])
    source = left.columns()
    lengths = np.where(left.value != 0, np.diff(right.indptr)[source], 0)
    dtype = index_dtype(shape, int(lengths.sum()))
    indptr = np.zeros(shape[0] + 1, dtype=dtype)
    np.cumsum(lengths, out=indptr[1:])
    data = np.repeat(left.value, lengths)  # (nnz,): the factor of each entry, then the product
    if left.col is None and np.all(left.value):
        # A diagonal without empty rows keeps every entry in place.
        data *= right.data
        return _canonical_csr(data, right.indices, indptr, shape)
    # The position in right of each entry: its source row's start plus its rank in the row.
    shift = right.indptr[source] - indptr[:-1]  # (M,)
    position = np.repeat(shift, lengths) + np.arange(indptr[-1], dtype=dtype)
    data *= right.data[position]
    return _canonical_csr(data, right.indices[position].astype(dtype, copy=False), indptr, shape)


def _relabel_columns(left: sp.csr_array, right: RowMap) -> sp.csr_array:
    # Entry (i, k) of left becomes (i, col[k]) times value[k]; col increases along the rows that
    # hold entries, so every row stays sorted and duplicate-free.
    data = right.value[left.indices]  # (nnz,): the factor of each entry, then the product
    if np.all(right.value):
        data *= left.data
    else:
        data = _times(left.data, data)
    indices = left.indices if right.col is None else right.col[left.indices]
    return _canonical_csr(data, indices, left.indptr, (left.shape[0], right.shape[1]))


def _sparse_product(left: sp.csr_array, right: sp.csr_array) -> sp.csr_array:
    # SciPy's SMMP product: each row's entries come out duplicate-free but unsorted, and terms that
    # cancel leave stored zeros.
    product: sp.csr_array = left @ right
    product.sort_indices()
    return _canonical_csr(product.data, product.indices, product.indptr, product.shape)


class CsrMatVec:
    """``ten_C(A vec_C(v))`` for one CSR matrix, by SciPy's compiled kernel without ``A @ v``.

    ``A @ v`` checks and converts its operand and picks the kernel on every call, about 6 µs,
    a sixth of a small descent step. This calls the same kernel on the same index arrays into a
    zeroed result, exactly as ``A @ v`` does, so every bit agrees. The kernel reads ``v`` and
    writes the result in C order whatever their shapes, so ``vec_C`` and ``ten_C`` cost nothing.

    Parameters
    ----------
    matrix : scipy.sparse.csr_array, float64, shape (M, N)
    in_shape, out_shape : tuple of int
        Tensor shapes of ``N`` and ``M`` elements.
    """

    __slots__ = ("_data", "_indices", "_indptr", "_out_shape", "_shape")

    def __init__(self, matrix: sp.csr_array, in_shape: Shape, out_shape: Shape) -> None:
        if matrix.shape != (math.prod(out_shape), math.prod(in_shape)):
            raise ShapeError(
                f"a {matrix.shape} matrix cannot map shape {list(in_shape)} to {list(out_shape)}"
            )
        self._shape = matrix.shape
        self._out_shape = out_shape
        self._indptr, self._indices, self._data = matrix.indptr, matrix.indices, matrix.data

    def __call__(self, v: FloatArray) -> FloatArray:
        """Return ``ten_C(A vec_C(v))``, shape ``out_shape``, for ``v`` of ``N`` float64s."""
        rows, cols = self._shape
        if v.size != cols:  # the kernel trusts the sizes it is given
            raise ShapeError(f"expected {cols} elements, got an array of shape {list(v.shape)}")
        result = np.zeros(self._out_shape)
        csr_matvec(rows, cols, self._indptr, self._indices, self._data, v, result)
        return result
