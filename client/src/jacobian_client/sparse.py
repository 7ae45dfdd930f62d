"""COO Jacobians as ``scipy.sparse.coo_array`` (imported only when SciPy is installed)."""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt
import scipy.sparse as sp

from .results import FloatArray, JacobianMeta, Labelled


class SparseJacobian(Labelled, sp.coo_array):
    """A ``scipy.sparse.coo_array`` that keeps the Jacobian's :class:`JacobianMeta` as ``meta``.

    Results of SciPy operations (``tocsr()``, products, ...) are plain SciPy arrays.
    """

    meta: JacobianMeta

    @classmethod
    def from_triplets(
        cls,
        row: npt.NDArray[np.int64],
        col: npt.NDArray[np.int64],
        data: FloatArray,
        shape: tuple[int, int],
        meta: JacobianMeta,
    ) -> SparseJacobian:
        """Build from canonical triplets (sorted by (row, col), no duplicates).

        Parameters
        ----------
        row, col : ndarray of int, shape (nnz,)
        data : ndarray of float64, shape (nnz,)
        shape : (rows, cols)
        meta : JacobianMeta
        """
        matrix = cls((data, (row, col)), shape=shape)
        # The service sends canonical COO (CONVENTIONS section 4); saying so spares SciPy a sort.
        matrix.has_canonical_format = True
        matrix.meta = meta
        return matrix

    def _dense(self) -> FloatArray:
        dense: Any = self.toarray()
        return np.asarray(dense, dtype=np.float64)
