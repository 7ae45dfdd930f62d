"""The chain rule's product of local factors, and its dense shortcut for a stencil then elementwise.

:meth:`Chain.jacobian <service.engine.chain.Chain.jacobian>` with strategy ``"chain"`` multiplies
the local Jacobians ``J_1 J_2 ... J_n`` as a matrix-chain program decided (:func:`multiply`).
When the result is asked for densely and the chain is one operation that can write its own dense
Jacobian (:class:`DenseWriter`: ``xcorr2d``) followed only by elementwise operations, the product
is ``J_1 diag(d)`` with ``d`` the product of the elementwise diagonals: :func:`stencil_dense`
lets the first operation write ``J_1 diag(d)`` straight into the dense matrix instead of building
it as CSR, scaling its columns and scattering the result (README, "Side by side with PyTorch and
JAX", has the measured gain). The entries are the same products, so the matrix is the same bits.
"""

from collections.abc import Callable, Sequence
from typing import Protocol, runtime_checkable

from .cancel import checkpoint
from .op import ElementwiseOp, Op
from .sparse import Factor, RowMap, matmul
from .types import FloatArray, Layout, Order

__all__ = ["DenseWriter", "multiply", "stencil_dense"]


@runtime_checkable
class DenseWriter(Protocol):
    """An operation that writes its local Jacobian, columns scaled, as a dense matrix."""

    def scaled_dense_jacobian(
        self, x: FloatArray, order: Order, layout: Layout, scale: FloatArray | None
    ) -> FloatArray:
        """Return ``J diag(scale)`` at ``x`` densely, shape (in_size, out_size) for ``in_out``.

        Bit for bit the dense form of the sparse product ``local_factor(x) @ diag(scale)``
        (:func:`~service.engine.sparse.matmul`); ``scale`` None means no scaling. Raises
        ``NonFiniteError("the Jacobian has non-finite entries (overflow)")`` for a non-finite
        entry.
        """


def multiply(
    local: Callable[[int], Factor], split: dict[tuple[int, int], int], i: int, j: int
) -> Factor:
    """Return ``J_i ... J_j`` (0-based, inclusive), associated at the ``split`` points.

    Parameters
    ----------
    local : callable
        ``local(t)`` is the local factor ``J_t``, shape (size of input t, size of output t).
    split : dict of (int, int) to int
        The matrix-chain program's split of each range: ``(J_i..J_k)(J_{k+1}..J_j)``.
    i, j : int

    Returns
    -------
    Factor, shape (size of input i, size of output j)
    """
    if i == j:
        return local(i)
    k = split[(i, j)]
    left, right = multiply(local, split, i, k), multiply(local, split, k + 1, j)
    checkpoint()
    return matmul(left, right)


def stencil_dense(
    ops: Sequence[Op], split: dict[tuple[int, int], int], local: Callable[[int], Factor]
) -> tuple[DenseWriter, FloatArray | None] | None:
    """Tell whether the first operation can write the chain's dense Jacobian, and how scaled.

    Parameters
    ----------
    ops : sequence of Op
        The chain, ``n`` operations.
    split : dict of (int, int) to int
        The chain's association (:func:`multiply`).
    local : callable
        ``local(t)``: the local factor of operation ``t``, errors naming it.

    Returns
    -------
    (DenseWriter, ndarray of shape (out_size,) or None), or None
        None unless ``ops[0]`` is a :class:`DenseWriter`, every other operation is elementwise
        and the association multiplies ``J_1`` last (``J_1 (J_2 ... J_n)``, whose right factor
        is then a diagonal, unless an operation wrote its own rule). Otherwise ``ops[0]`` and
        that diagonal (None for ``n = 1``): its ``scaled_dense_jacobian(x, order, layout,
        scale)`` is the matrix :func:`multiply` gives, densely.
    """
    first, n = ops[0], len(ops)
    if not isinstance(first, DenseWriter):
        return None
    if not all(isinstance(op, ElementwiseOp) for op in ops[1:]) or split.get((0, n - 1), 0) != 0:
        return None
    if n == 1:
        return first, None
    diagonal = multiply(local, split, 1, n - 1)
    if not (isinstance(diagonal, RowMap) and diagonal.col is None):
        return None  # an operation that wrote its own, non-diagonal rule: the sparse product
    return first, diagonal.value
