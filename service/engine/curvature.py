"""The weighted Hessian of one operation, read off its second-order rule by structural sparsity.

For an operation ``f`` and a cotangent ``u`` of its output, ``D = sum_o u_o ∇²f_o(x)`` is the
matrix of the second-order rule (:meth:`~service.engine.op.Op.second_order`). When ``D`` is block
diagonal over groups named from shapes alone (:meth:`~service.engine.op.Op.curvature_blocks`:
one element per group for elementwise functions, a slice for softmax), it is read off ``K``
products with 0/1 tangents (``K`` the group size), never from a dense matrix. Both the op-list
Hessian (:mod:`service.engine.hessian`) and a program's one-input nodes
(:mod:`service.engine.graph.curvature`) assemble their Hessians from these blocks.
"""

import numpy as np
import scipy.sparse as sp

from . import layout
from .op import Op, coo_from_grids
from .sparse import Factor, RowMap
from .types import FloatArray, IndexArray, Order

__all__ = ["weighted_hessian"]


def weighted_hessian(
    op: Op, x: FloatArray, cotangent: FloatArray, order: Order, blocks: IndexArray
) -> Factor:
    """Return ``D = sum_o u_o ∇²f_o(x)``, ``in_size x in_size``, from ``K`` products.

    Parameters
    ----------
    op : Op
    x : ndarray, shape ``in_shape``
    cotangent : ndarray, shape ``out_shape``
        ``u``.
    order : {"F", "C"}
        Order of the flat indices of rows and columns.
    blocks : ndarray of int, shape (G, K)
        ``op.curvature_blocks(in_shape, order)``.

    Returns
    -------
    RowMap or scipy.sparse.csr_array, shape (in_size, in_size)
        A diagonal map for groups of one element, canonical CSR otherwise; entries only within
        groups.
    """
    shape = x.shape
    size = layout.size_of(shape)
    k = blocks.shape[1]
    if k == 1:
        # One element per group: the rule along the ones is the diagonal, as a map (no sort).
        diagonal = op.second_order(x, cotangent, np.ones((1, *shape)))[0]
        return RowMap((size, size), layout.vec(diagonal, order))
    # Tangent c is 1 at the c-th member of every group: block diagonality keeps groups apart.
    basis = np.zeros((k, size))
    basis[np.arange(k)[np.newaxis, :], blocks] = 1.0  # (K, size), via (1, K) x (G, K) indices
    images = op.second_order(x, cotangent, layout.ten_batch(basis, shape, order))  # (K, *shape)
    columns = layout.vec_batch(images, 1, order)  # (K, size): column c of each block, per row
    # D[blocks[g, a], blocks[g, c]] = columns[c, blocks[g, a]]
    data = np.moveaxis(columns[:, blocks], 0, -1)  # (K, G, K) -> (G, K_row, K_col)
    rows, cols = blocks[:, :, np.newaxis], blocks[:, np.newaxis, :]  # (G, K, 1), (G, 1, K)
    return sp.csr_array(coo_from_grids(rows, cols, data, (size, size)))
