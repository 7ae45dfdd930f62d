"""Canonical COO matrices on top of ``scipy.sparse``.

CONVENTIONS section 4: every COO matrix the engine returns is canonical, i.e. sorted by
``(row, col)``, free of duplicates, with exact zeros dropped. SciPy does the arithmetic; this module
only fixes the canonical form and estimates sizes before anything is allocated.
"""

import numpy as np
import scipy.sparse as sp

from .errors import LimitExceeded, ShapeError
from .types import FloatArray, IndexArray

# Bytes of one COO entry on the wire and in memory: int64 row + int64 col + float64 value.
COO_ENTRY_BYTES = 24
DENSE_ENTRY_BYTES = 8


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
        raise LimitExceeded(what, estimate, limit)


def check_dense(rows: int, cols: int, limit: int) -> None:
    """Raise :class:`LimitExceeded` if a dense ``rows x cols`` matrix exceeds ``limit`` elements."""
    if rows * cols > limit:
        raise LimitExceeded(
            "dense Jacobian elements",
            rows * cols,
            limit,
            hint=f"a dense matrix would need {rows * cols * DENSE_ENTRY_BYTES} bytes; "
            "ask for format 'coo', or for a JVP/VJP",
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
