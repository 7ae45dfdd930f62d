"""Self-describing Jacobians: the matrix in its requested layout and format, with its shapes.

Every producer (cross-correlation, chains of operations) computes a canonical COO matrix in the
request's layout and index order; :func:`present` turns it into the format the client asked for,
checking the dense limit before densifying.
"""

from dataclasses import dataclass
from typing import Literal

import scipy.sparse as sp

from .sparse import check_dense, to_dense
from .types import FloatArray, Layout, Order, Shape

Format = Literal["coo", "dense"]


@dataclass(frozen=True, eq=False)
class Jacobian:
    """A Jacobian ready to be written out.

    Attributes
    ----------
    matrix : scipy.sparse.coo_array or ndarray
        Canonical COO, or a dense float64 array; shape ``(in_size, out_size)`` for ``in_out``,
        ``(out_size, in_size)`` for ``out_in``.
    in_shape, out_shape : tuple of int
        Shapes of the function's input and output.
    layout : {"in_out", "out_in"}
    order : {"F", "C"}
        Index order of the flattened rows and columns.
    """

    matrix: sp.coo_array | FloatArray
    in_shape: Shape
    out_shape: Shape
    layout: Layout
    order: Order

    @property
    def format(self) -> Format:
        """``"coo"`` or ``"dense"``."""
        return "coo" if isinstance(self.matrix, sp.coo_array) else "dense"

    @property
    def nnz(self) -> int:
        """Stored entries of a COO matrix, non-zero entries of a dense one."""
        if isinstance(self.matrix, sp.coo_array):
            return int(self.matrix.nnz)
        return int((self.matrix != 0).sum())


def present(
    coo: sp.coo_array,
    in_shape: Shape,
    out_shape: Shape,
    *,
    layout: Layout,
    order: Order,
    fmt: Format,
    max_dense_elements: int,
) -> Jacobian:
    """Wrap a canonical COO Jacobian, densifying it if asked.

    Parameters
    ----------
    coo : scipy.sparse.coo_array
        Canonical, already in ``layout``: shape (in_size, out_size) for ``"in_out"``,
        (out_size, in_size) for ``"out_in"``; rows and columns in index order ``order``.
    in_shape, out_shape : tuple of int
    layout : {"in_out", "out_in"}
    order : {"F", "C"}
    fmt : {"coo", "dense"}
    max_dense_elements : int
        Bound on ``in_size * out_size`` for ``fmt="dense"``.

    Returns
    -------
    Jacobian

    Raises
    ------
    LimitExceeded
        If a dense matrix would exceed ``max_dense_elements`` (checked before allocating).
    """
    matrix: sp.coo_array | FloatArray = coo
    if fmt == "dense":
        rows, cols = coo.shape
        check_dense(rows, cols, max_dense_elements)
        matrix = to_dense(coo)
    return Jacobian(matrix, tuple(in_shape), tuple(out_shape), layout, order)


def relaid(
    matrix: sp.coo_array | FloatArray, given: Layout, wanted: Layout
) -> sp.coo_array | FloatArray:
    """Return a Jacobian matrix written in layout ``given`` as it reads in layout ``wanted``.

    The two layouts are transposes of each other (CONVENTIONS section 2), so this is the matrix
    itself or its transpose (a view; COO entries are no longer sorted, which products accept).

    Parameters
    ----------
    matrix : scipy.sparse.coo_array or ndarray, shape (M, N)
    given, wanted : {"in_out", "out_in"}

    Returns
    -------
    scipy.sparse.coo_array or ndarray, shape (M, N) or (N, M)
    """
    if given == wanted:
        return matrix
    return matrix.T
