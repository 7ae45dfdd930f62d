"""Linear and affine operations: a matrix, a scalar, a constant tensor added or multiplied.

Each is a :class:`~service.engine.op.LinearOp`: the JVP is the forward without its constant part,
and only the transpose (the VJP) is written by hand, under a comment deriving it from
``<A t, u> = <t, A^T u>``.
"""

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import ClassVar

import numpy as np
import scipy.sparse as sp

from .. import layout
from ..errors import ParameterError, ShapeError
from ..op import LinearOp, Sparsity, check_order, coo_from_grids, frozen_array, register
from ..sparse import Factor, RowMap, coo_from_triplets
from ..types import FloatArray, Order, Shape
from ._util import int_tuple


def _diagonal(x_shape: Shape, values: FloatArray | float, order: Order) -> sp.coo_array:
    # diag(vec(values)): entry (k, k) for every flat index k of the (shared) input/output shape.
    grid = layout.flat_grid(x_shape, order)
    n = layout.size_of(x_shape)
    return coo_from_grids(grid, grid, values, (n, n))


def _diagonal_factor(x_shape: Shape, values: FloatArray | float, order: Order) -> RowMap:
    # The same diagonal as a map (zeros are empty rows), without sorting triplets.
    n = layout.size_of(x_shape)
    return RowMap(
        (n, n), layout.vec(np.broadcast_to(np.asarray(values, dtype=np.float64), x_shape), order)
    )


@register
@dataclass(frozen=True, eq=False)
class Linear(LinearOp):
    """``y = ten(W vec(x) + b)``: a dense matrix applied to the flattened input.

    Parameters
    ----------
    weight : ndarray, shape (out_size, in_size)
        ``W``; the Jacobian is ``W^T`` (``in_size x out_size``) in the op's ``order``.
    bias : ndarray, shape (out_size,), optional
        ``b``; it does not enter the Jacobian.
    output_shape : tuple of int, optional
        Shape of ``y``, with ``prod(output_shape) == out_size``; default ``(out_size,)``.
    order : {"F", "C"}
        The index order of ``vec(x)`` and ``ten(...)``: ``W``'s columns follow the input in this
        order, its rows the output.
    """

    name: ClassVar[str] = "linear"
    params: ClassVar[Mapping[str, str]] = MappingProxyType(
        {
            "weight": "matrix W, shape (out_size, in_size); y = ten(W vec(x) + b)",
            "bias": "optional vector b, shape (out_size,)",
            "output_shape": "optional shape of y, product out_size (default [out_size])",
            "order": "index order of vec(x) and ten(): 'F' (default, the notes) or 'C'",
        }
    )

    weight: FloatArray
    bias: FloatArray | None = None
    output_shape: tuple[int, ...] | None = None
    order: Order = "F"

    def __post_init__(self) -> None:
        weight = frozen_array(self.weight, "linear: weight")
        if weight.ndim != 2:
            raise ParameterError(
                f"linear: weight must be a matrix (out_size, in_size), got shape "
                f"{list(weight.shape)}"
            )
        layout.check_dims(weight.shape, "linear: weight shape")
        object.__setattr__(self, "weight", weight)
        out_size = weight.shape[0]
        if self.bias is not None:
            bias = frozen_array(self.bias, "linear: bias")
            if bias.shape != (out_size,):
                raise ShapeError(
                    f"linear: bias must have shape [{out_size}] to match weight "
                    f"{list(weight.shape)}, got {list(bias.shape)}"
                )
            object.__setattr__(self, "bias", bias)
        if self.output_shape is None:
            object.__setattr__(self, "output_shape", (out_size,))
        else:
            shape = layout.check_dims(int_tuple(self.output_shape, "linear: output_shape"))
            if layout.size_of(shape) != out_size:
                raise ShapeError(
                    f"linear: output_shape {list(shape)} has {layout.size_of(shape)} elements, "
                    f"weight {list(weight.shape)} produces {out_size}"
                )
            object.__setattr__(self, "output_shape", shape)
        check_order(self.order)

    @property
    def _out(self) -> Shape:
        assert self.output_shape is not None  # set in __post_init__
        return self.output_shape

    def out_shape(self, in_shape: Shape) -> Shape:
        """Return ``output_shape`` if ``in_shape`` has ``in_size`` elements."""
        in_size = self.weight.shape[1]
        if layout.size_of(in_shape) != in_size:
            raise ShapeError(
                f"linear: input shape {list(in_shape)} has {layout.size_of(in_shape)} elements, "
                f"weight {list(self.weight.shape)} expects {in_size}"
            )
        return self._out

    def sparsity(self, in_shape: Shape) -> Sparsity:
        """Count ``W``'s non-zeros: per column (fan-out of an input) and per row (fan-in)."""
        nonzero = self.weight != 0
        return Sparsity(
            int(np.count_nonzero(nonzero)),
            int(nonzero.sum(axis=0).max()),
            int(nonzero.sum(axis=1).max()),
        )

    def apply(self, t: FloatArray) -> FloatArray:
        """Return ``ten(W vec(t))`` for each ``t`` of the batch: (B, *in) -> (B, *out)."""
        v = layout.vec_batch(t, 1, self.order)  # (B, in_size)
        y = v @ self.weight.T  # (B, in_size) @ (in_size, out_size) -> (B, out_size)
        return layout.ten_batch(y, self._out, self.order)

    def offset(self) -> FloatArray | None:
        """Return ``ten(b)``, or None without a bias."""
        return None if self.bias is None else layout.ten(self.bias, self._out, self.order)

    def _vjp(self, x: FloatArray, cotangents: FloatArray) -> FloatArray:
        # Adjoint: <W vec(t), vec(u)> = <vec(t), W^T vec(u)>, so the transpose of t -> ten(W vec(t))
        # is u -> ten(W^T vec(u)); vec/ten in the op's own order on both sides. In the notes'
        # orientation J = W^T and this is ten(J vec(u)).
        u = layout.vec_batch(cotangents, 1, self.order)  # (B, out_size)
        g = u @ self.weight  # (B, out_size) @ (out_size, in_size) -> (B, in_size)
        return layout.ten_batch(g, x.shape, self.order)

    def _local_jacobian(self, x: FloatArray, order: Order) -> sp.coo_array:
        # J[j, i] = W[i, j] with j, i flat in the op's order; translate both to the request's order.
        out_index, in_index = np.nonzero(self.weight)
        rows = layout.reorder_flat(in_index.astype(np.int64), x.shape, self.order, order)
        cols = layout.reorder_flat(out_index.astype(np.int64), self._out, self.order, order)
        shape = (self.weight.shape[1], self.weight.shape[0])
        return coo_from_triplets(rows, cols, self.weight[out_index, in_index], shape)


@register
@dataclass(frozen=True, eq=False)
class Scale(LinearOp):
    """``y = factor * x``; the Jacobian is ``factor * I``."""

    name: ClassVar[str] = "scale"
    params: ClassVar[Mapping[str, str]] = MappingProxyType({"factor": "the scalar (float)"})

    factor: float

    def __post_init__(self) -> None:
        object.__setattr__(self, "factor", float(self.factor))
        if not np.isfinite(self.factor):
            raise ParameterError(f"scale: factor must be finite, got {self.factor!r}")

    def out_shape(self, in_shape: Shape) -> Shape:
        """Return ``in_shape``."""
        return in_shape

    def sparsity(self, in_shape: Shape) -> Sparsity:
        """Return the bounds of a diagonal."""
        return Sparsity(layout.size_of(in_shape), 1, 1)

    def apply(self, t: FloatArray) -> FloatArray:
        """Return ``factor * t``: (B, *shape) -> (B, *shape)."""
        return self.factor * t

    def _vjp(self, x: FloatArray, cotangents: FloatArray) -> FloatArray:
        # factor * I is symmetric: its transpose is itself.
        return self.factor * cotangents

    def _local_jacobian(self, x: FloatArray, order: Order) -> sp.coo_array:
        return _diagonal(x.shape, self.factor, order)

    def _local_factor(self, x: FloatArray, order: Order) -> Factor:
        return _diagonal_factor(x.shape, self.factor, order)


@dataclass(frozen=True, eq=False)
class _WithConstant(LinearOp):
    """A diagonal operation with a constant tensor ``c`` broadcast to ``x``'s shape.

    Holds what ``add`` and ``multiply`` share: the constant (read-only), the shape rule that ``c``
    broadcasts to the input without changing its shape, and the bounds of a diagonal Jacobian.
    """

    params: ClassVar[Mapping[str, str]] = MappingProxyType(
        {"constant": "tensor c, NumPy-broadcastable to x's shape without changing it"}
    )

    constant: FloatArray

    def __post_init__(self) -> None:
        object.__setattr__(self, "constant", frozen_array(self.constant, f"{self.name}: constant"))

    def out_shape(self, in_shape: Shape) -> Shape:
        """Return ``in_shape`` if the constant broadcasts to it."""
        try:
            shape = np.broadcast_shapes(self.constant.shape, in_shape)
        except ValueError:
            shape = None
        if shape != in_shape:
            raise ShapeError(
                f"{self.name}: constant of shape {list(self.constant.shape)} does not broadcast "
                f"to the input shape {list(in_shape)} without changing it"
            )
        return in_shape

    def sparsity(self, in_shape: Shape) -> Sparsity:
        """Return the bounds of a diagonal."""
        return Sparsity(layout.size_of(in_shape), 1, 1)


@register
@dataclass(frozen=True, eq=False)
class Add(_WithConstant):
    """``y = x + c`` with a constant ``c`` broadcast to ``x``'s shape; the Jacobian is ``I``."""

    name: ClassVar[str] = "add"
    note: ClassVar[str] = "affine: differentiable everywhere, the Jacobian is the identity"

    def apply(self, t: FloatArray) -> FloatArray:
        """Return a copy of ``t``: the linear part of a translation is the identity."""
        return np.array(t, dtype=np.float64, copy=True)

    def offset(self) -> FloatArray:
        """Return the constant ``c``."""
        return self.constant

    def _vjp(self, x: FloatArray, cotangents: FloatArray) -> FloatArray:
        # The identity is its own transpose.
        return np.array(cotangents, dtype=np.float64, copy=True)

    def _local_jacobian(self, x: FloatArray, order: Order) -> sp.coo_array:
        return _diagonal(x.shape, 1.0, order)

    def _local_factor(self, x: FloatArray, order: Order) -> Factor:
        return _diagonal_factor(x.shape, 1.0, order)


@register
@dataclass(frozen=True, eq=False)
class Multiply(_WithConstant):
    """``y = x * c`` with a constant ``c`` broadcast to ``x``'s shape; ``J = diag(vec(c))``."""

    name: ClassVar[str] = "multiply"

    def apply(self, t: FloatArray) -> FloatArray:
        """Return ``t * c``: (B, *shape) * (shape, broadcast) -> (B, *shape)."""
        return t * self.constant

    def _vjp(self, x: FloatArray, cotangents: FloatArray) -> FloatArray:
        # A diagonal matrix is its own transpose.
        return cotangents * self.constant

    def _local_jacobian(self, x: FloatArray, order: Order) -> sp.coo_array:
        return _diagonal(x.shape, np.broadcast_to(self.constant, x.shape), order)

    def _local_factor(self, x: FloatArray, order: Order) -> Factor:
        return _diagonal_factor(x.shape, self.constant, order)
