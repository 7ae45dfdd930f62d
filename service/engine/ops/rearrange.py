"""Operations that move elements without changing them: ``reshape`` and ``transpose``.

Their Jacobians are permutation matrices, built by cutting flat-index grids: the column of output
element ``o`` holds a single 1 in the row of the input element that lands at ``o``.
"""

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import ClassVar

import numpy as np
import scipy.sparse as sp

from .. import layout
from ..errors import ParameterError, ShapeError
from ..op import LinearOp, Sparsity, check_order, coo_from_grids, register
from ..types import FloatArray, Order, Shape
from ._util import int_tuple


@register
@dataclass(frozen=True, eq=False)
class Reshape(LinearOp):
    """``y = ten_out(vec_in(x))``, both in the op's ``order``.

    The Jacobian is the identity when asked for in that same order, and a permutation otherwise.

    Parameters
    ----------
    shape : tuple of int
        Output shape; one entry may be ``-1`` (inferred from the size, as in NumPy).
    order : {"F", "C"}
        The order in which elements are read and written: ``"F"`` (the notes) or ``"C"`` (NumPy's
        default ``reshape``).
    """

    name: ClassVar[str] = "reshape"
    params: ClassVar[Mapping[str, str]] = MappingProxyType(
        {
            "shape": "output shape; one entry may be -1 (inferred)",
            "order": "index order of vec and ten: 'F' (default, the notes) or 'C' (NumPy)",
        }
    )

    shape: tuple[int, ...]
    order: Order = "F"

    def __post_init__(self) -> None:
        shape = int_tuple(self.shape, "reshape: shape")
        if shape.count(-1) > 1 or any(d < 1 and d != -1 for d in shape):
            raise ParameterError(
                f"reshape: shape {list(shape)} needs dimensions >= 1 and at most one -1"
            )
        object.__setattr__(self, "shape", shape)
        check_order(self.order)

    def out_shape(self, in_shape: Shape) -> Shape:
        """Return ``shape`` (with ``-1`` inferred) if it has as many elements as ``in_shape``."""
        size = layout.size_of(in_shape)
        known = layout.size_of([d for d in self.shape if d != -1])
        if -1 in self.shape:
            if size % known:
                raise ShapeError(
                    f"reshape: cannot infer the -1 in {list(self.shape)} for input shape "
                    f"{list(in_shape)} ({size} elements)"
                )
            return tuple(size // known if d == -1 else d for d in self.shape)
        if known != size:
            raise ShapeError(
                f"reshape: input shape {list(in_shape)} ({size} elements) cannot become "
                f"{list(self.shape)} ({known} elements)"
            )
        return self.shape

    def sparsity(self, in_shape: Shape) -> Sparsity:
        """Return the bounds of a permutation."""
        return Sparsity(layout.size_of(in_shape), 1, 1)

    def apply(self, t: FloatArray) -> FloatArray:
        """Return ``ten_out(vec_in(t))`` for each ``t``: (B, *in) -> (B, *out)."""
        out_shape = self.out_shape(t.shape[1:])
        return layout.ten_batch(layout.vec_batch(t, 1, self.order), out_shape, self.order)

    def _vjp(self, x: FloatArray, cotangents: FloatArray) -> FloatArray:
        # A permutation's transpose is its inverse: read the cotangent in the op's order and write
        # it back in the input's shape.
        return layout.ten_batch(layout.vec_batch(cotangents, 1, self.order), x.shape, self.order)

    def _local_jacobian(self, x: FloatArray, order: Order) -> sp.coo_array:
        # Element k (flat in the op's order) of the input becomes element k of the output; its row
        # and column are k translated into the requested order on each side.
        out_shape = self.out_shape(x.shape)
        size = layout.size_of(x.shape)
        k = np.arange(size, dtype=np.int64)
        rows = layout.reorder_flat(k, x.shape, self.order, order)
        cols = layout.reorder_flat(k, out_shape, self.order, order)
        return coo_from_grids(rows, cols, 1.0, (size, size))


@register
@dataclass(frozen=True, eq=False)
class Transpose(LinearOp):
    """Permute the axes: ``y[i_{axes[0]}, ..., i_{axes[n-1]}] = x[i_0, ..., i_{n-1}]`` (NumPy).

    Parameters
    ----------
    axes : tuple of int, optional
        A permutation of the input axes (negative values count from the end); default: reversed.
    """

    name: ClassVar[str] = "transpose"
    params: ClassVar[Mapping[str, str]] = MappingProxyType(
        {"axes": "optional permutation of the input axes, as numpy.transpose (default reversed)"}
    )

    axes: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        if self.axes is not None:
            object.__setattr__(self, "axes", int_tuple(self.axes, "transpose: axes"))

    def _permutation(self, in_shape: Shape) -> tuple[int, ...]:
        ndim = len(in_shape)
        if self.axes is None:
            return tuple(range(ndim - 1, -1, -1))
        if len(self.axes) != ndim:
            raise ShapeError(
                f"transpose: axes {list(self.axes)} do not match input shape {list(in_shape)} "
                f"(rank {ndim})"
            )
        if any(not -ndim <= a < ndim for a in self.axes):
            raise ShapeError(
                f"transpose: axes {list(self.axes)} are out of range for input shape "
                f"{list(in_shape)}"
            )
        permutation = tuple(a % ndim for a in self.axes)
        if sorted(permutation) != list(range(ndim)):
            raise ParameterError(f"transpose: axes {list(self.axes)} are not a permutation")
        return permutation

    def out_shape(self, in_shape: Shape) -> Shape:
        """Return ``in_shape`` permuted by ``axes``."""
        return tuple(in_shape[a] for a in self._permutation(in_shape))

    def sparsity(self, in_shape: Shape) -> Sparsity:
        """Return the bounds of a permutation."""
        return Sparsity(layout.size_of(in_shape), 1, 1)

    def apply(self, t: FloatArray) -> FloatArray:
        """Permute the tensor axes of each ``t``; the batch axis stays first."""
        permutation = self._permutation(t.shape[1:])
        # (B, *in) -> (B, *out); contiguous so the result never aliases the caller's array
        return np.ascontiguousarray(np.transpose(t, (0, *(a + 1 for a in permutation))))

    def _vjp(self, x: FloatArray, cotangents: FloatArray) -> FloatArray:
        # A permutation's transpose is the inverse permutation of the axes.
        inverse = np.argsort(self._permutation(x.shape))
        # (B, *out) -> (B, *in)
        return np.ascontiguousarray(np.transpose(cotangents, (0, *(int(a) + 1 for a in inverse))))

    def _local_jacobian(self, x: FloatArray, order: Order) -> sp.coo_array:
        permutation = self._permutation(x.shape)
        size = layout.size_of(x.shape)
        # Transposing the input's flat-index grid gives, at each output position, the flat index
        # of the input element that lands there: that is the row of the column's single 1.
        rows = np.transpose(layout.flat_grid(x.shape, order), permutation)  # (out_shape)
        cols = layout.flat_grid(self.out_shape(x.shape), order)  # (out_shape)
        return coo_from_grids(rows, cols, 1.0, (size, size))
