"""``softmax`` and ``log_softmax`` along one axis, both computed with the maximum subtracted first.

Each slice along the axis (length ``K``) is an independent ``K x K`` block of the Jacobian:
``d y_k / d x_a = y_k (delta_ak - y_a)`` for softmax and ``delta_ak - s_a`` for log-softmax (``s``
the softmax). The blocks are built by moving the axis last and pairing every element of a slice
with every other. The second-order rules differentiate the VJP along a tangent; the same slices are
the blocks of the weighted Hessian.
"""

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import ClassVar

import numpy as np
import scipy.sparse as sp

from .. import layout
from ..errors import ParameterError
from ..op import Op, Sparsity, coo_from_grids, register
from ..types import FloatArray, IndexArray, Order, Shape
from ._util import int_tuple, normalize_axis


@dataclass(frozen=True, eq=False)
class _AlongAxis(Op):
    note: ClassVar[str] = "differentiable everywhere; stable (the maximum is subtracted first)"
    params: ClassVar[Mapping[str, str]] = MappingProxyType(
        {"axis": "the axis that sums to one (int, negative from the end; default -1)"}
    )

    axis: int = -1

    def __post_init__(self) -> None:
        axis = int_tuple(self.axis, f"{self.name}: axis")
        if len(axis) != 1:
            raise ParameterError(f"{self.name}: axis must be one integer, got {list(axis)}")
        object.__setattr__(self, "axis", axis[0])

    def _axis(self, in_shape: Shape) -> int:
        return normalize_axis(self.axis, in_shape, self.name)

    def out_shape(self, in_shape: Shape) -> Shape:
        """Return ``in_shape`` if ``axis`` exists in it."""
        self._axis(in_shape)
        return in_shape

    def sparsity(self, in_shape: Shape) -> Sparsity:
        """Bound the entries: a dense ``K x K`` block per slice along the axis."""
        k = in_shape[self._axis(in_shape)]
        return Sparsity(layout.size_of(in_shape) * k, k, k)

    def _shifted(self, x: FloatArray) -> FloatArray:
        # x - max along the axis: every exp() is <= 1, so nothing overflows.
        result: FloatArray = x - np.max(x, axis=self._axis(x.shape), keepdims=True)
        return result

    def _blocks(self, x: FloatArray, order: Order) -> tuple[IndexArray, IndexArray, int, int]:
        axis = self._axis(x.shape)
        # (..., K): the flat indices of each slice, the op's axis moved last
        grid = np.moveaxis(layout.flat_grid(x.shape, order), axis, -1)
        rows = grid[..., :, np.newaxis]  # (..., K_in, 1)
        cols = grid[..., np.newaxis, :]  # (..., 1, K_out)
        return rows, cols, axis, x.shape[axis]

    def curvature_blocks(self, in_shape: Shape, order: Order) -> IndexArray | None:
        """Return the slices along the axis: ``(size / K, K)``, each slice's flat indices."""
        axis = self._axis(in_shape)
        grid = np.moveaxis(layout.flat_grid(in_shape, order), axis, -1)  # (..., K)
        return np.reshape(grid, (-1, in_shape[axis]))


@register
@dataclass(frozen=True, eq=False)
class Softmax(_AlongAxis):
    """``y = exp(x) / sum(exp(x))`` along ``axis``; Jacobian blocks ``diag(y) - y y^T``."""

    name: ClassVar[str] = "softmax"

    def _forward(self, x: FloatArray) -> FloatArray:
        e = np.exp(self._shifted(x))
        result: FloatArray = e / np.sum(e, axis=self._axis(x.shape), keepdims=True)
        return result

    def _jvp(self, x: FloatArray, tangents: FloatArray) -> FloatArray:
        y = self._forward(x)  # (in)
        batch_axis = self._axis(x.shape) + 1
        # y * (t - <y, t>) per slice: (in) * (B, *in) -> (B, *in)
        result: FloatArray = y * (tangents - np.sum(y * tangents, axis=batch_axis, keepdims=True))
        return result

    def _vjp(self, x: FloatArray, cotangents: FloatArray) -> FloatArray:
        # Each block diag(y) - y y^T is symmetric, so the transpose is the same map as the JVP.
        return self._jvp(x, cotangents)

    def _second_order(
        self, x: FloatArray, cotangent: FloatArray, tangents: FloatArray
    ) -> FloatArray:
        # VJP(u) = y (u - <y, u>); along t, y moves by y' = y (t - <y, t>) (the JVP), so
        # d/dε VJP(u) = y' (u - <y, u>) - y <y', u>, per slice.
        y = self._forward(x)  # (in)
        axis = self._axis(x.shape)
        moved = self._jvp(x, tangents)  # (B, *in)
        centred = cotangent - np.sum(y * cotangent, axis=axis, keepdims=True)  # (in)
        result: FloatArray = moved * centred - y * np.sum(
            moved * cotangent, axis=axis + 1, keepdims=True
        )
        return result

    def _local_jacobian(self, x: FloatArray, order: Order) -> sp.coo_array:
        rows, cols, axis, k = self._blocks(x, order)
        y = np.moveaxis(self._forward(x), axis, -1)  # (..., K)
        # d y_k / d x_a = y_k (delta_ak - y_a): (..., 1, K_out) * ((K, K) - (..., K_in, 1))
        data = y[..., np.newaxis, :] * (np.eye(k) - y[..., :, np.newaxis])
        n = layout.size_of(x.shape)
        return coo_from_grids(rows, cols, data, (n, n))


@register
@dataclass(frozen=True, eq=False)
class LogSoftmax(_AlongAxis):
    """``y = x - logsumexp(x)`` along ``axis``; Jacobian blocks ``I - 1 s^T`` (``s`` = softmax)."""

    name: ClassVar[str] = "log_softmax"

    def _forward(self, x: FloatArray) -> FloatArray:
        z = self._shifted(x)
        result: FloatArray = z - np.log(np.sum(np.exp(z), axis=self._axis(x.shape), keepdims=True))
        return result

    def _jvp(self, x: FloatArray, tangents: FloatArray) -> FloatArray:
        s = np.exp(self._forward(x))  # softmax, (in)
        batch_axis = self._axis(x.shape) + 1
        # t - <s, t> per slice: (B, *in) - (B, *in with 1 at the axis)
        result: FloatArray = tangents - np.sum(s * tangents, axis=batch_axis, keepdims=True)
        return result

    def _vjp(self, x: FloatArray, cotangents: FloatArray) -> FloatArray:
        # Adjoint of t -> t - 1 <s, t>: u -> u - s <1, u>, i.e. subtract s times the slice's sum.
        s = np.exp(self._forward(x))
        batch_axis = self._axis(x.shape) + 1
        result: FloatArray = cotangents - s * np.sum(cotangents, axis=batch_axis, keepdims=True)
        return result

    def _second_order(
        self, x: FloatArray, cotangent: FloatArray, tangents: FloatArray
    ) -> FloatArray:
        # VJP(u) = u - s sum(u); along t the softmax s moves by s (t - <s, t>), and u is fixed.
        s = np.exp(self._forward(x))  # (in)
        axis = self._axis(x.shape)
        moved = s * (tangents - np.sum(s * tangents, axis=axis + 1, keepdims=True))  # (B, *in)
        result: FloatArray = -moved * np.sum(cotangent, axis=axis, keepdims=True)
        return result

    def _local_jacobian(self, x: FloatArray, order: Order) -> sp.coo_array:
        rows, cols, axis, k = self._blocks(x, order)
        s = np.exp(np.moveaxis(self._forward(x), axis, -1))  # (..., K)
        # d y_k / d x_a = delta_ak - s_a: (K, K) - (..., K_in, 1)
        data = np.eye(k) - s[..., :, np.newaxis]
        n = layout.size_of(x.shape)
        return coo_from_grids(rows, cols, data, (n, n))
