"""2-D pooling over the last two axes, no padding: ``avg_pool2d`` (linear) and ``max_pool2d``.

Window ``(i, j)`` covers rows ``s_H i .. s_H i + k_H - 1`` and columns ``s_W j .. s_W j + k_W - 1``
of the last two axes (the seed notes' cross-correlation geometry, with an all-ones kernel for the
average); leading axes (channels, batch) are pooled independently. Symbols follow the notes:
``k_h, k_w`` window, ``s_h, s_w`` stride, ``h_out, w_out`` output size.
"""

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import ClassVar

import numpy as np
import scipy.sparse as sp
from numpy.lib.stride_tricks import as_strided
from numpy.typing import NDArray

from .. import layout
from ..op import LinearOp, Op, Sparsity, coo_from_grids, register
from ..types import FloatArray, IndexArray, Order, Shape
from ._util import T, fan_of_windows, pair, pooled_shape, windows


def _window_slices(
    p: int, q: int, stride: tuple[int, int], out_hw: tuple[int, int]
) -> tuple[slice, slice]:
    # The input rows/columns that offset (p, q) of all windows reads: p, p + s_h, ... (h_out rows).
    (s_h, s_w), (h_out, w_out) = stride, out_hw
    return slice(p, p + s_h * (h_out - 1) + 1, s_h), slice(q, q + s_w * (w_out - 1) + 1, s_w)


# NumPy's pairwise summation adds fewer terms than this one after another, left to right.
_SEQUENTIAL_SUM = 8


def _tiled_mean(t: FloatArray, size: tuple[int, int]) -> FloatArray:
    """Mean of each ``k_h x k_w`` tile: (..., H, W) -> (..., H // k_h, W // k_w).

    ``np.mean`` over the window view adds each window row left to right, then the rows top to
    bottom, and divides by the count; this makes the same additions as ``k_h k_w - 1`` adds of
    strided slices, one per offset, instead of a reduction whose inner loop is ``k_w`` long
    (ten times faster on (8, 126, 126)).
    """
    k_h, k_w = size
    h_end, w_end = (t.shape[-2] // k_h) * k_h, (t.shape[-1] // k_w) * k_w
    total: FloatArray | None = None
    for p in range(k_h):
        row = t[..., p:h_end:k_h, 0:w_end:k_w]  # offset (p, 0) of every tile
        for q in range(1, k_w):
            row = row + t[..., p:h_end:k_h, q:w_end:k_w]
        total = row if total is None else total + row
    assert total is not None  # k_h >= 1
    result: FloatArray = total / (k_h * k_w)
    return result


@dataclass(frozen=True, eq=False)
class _Pool2d(Op):
    """The window geometry and shape rule both poolings share; subclasses give the arithmetic."""

    params: ClassVar[Mapping[str, str]] = MappingProxyType(
        {
            "size": "window (k_H, k_W), or one int for both",
            "stride": "(s_H, s_W), or one int for both; default: the window size",
        }
    )

    size: tuple[int, int]
    stride: tuple[int, int] | None = None

    def __post_init__(self) -> None:
        size = pair(self.size, f"{self.name}: size")
        object.__setattr__(self, "size", size)
        stride = size if self.stride is None else pair(self.stride, f"{self.name}: stride")
        object.__setattr__(self, "stride", stride)

    @property
    def _geometry(self) -> tuple[tuple[int, int], tuple[int, int]]:
        assert self.stride is not None  # set in __post_init__
        return self.size, self.stride

    def out_shape(self, in_shape: Shape) -> Shape:
        """Return ``(..., h_out, w_out)``."""
        return pooled_shape(in_shape, *self._geometry, self.name)


@register
@dataclass(frozen=True, eq=False)
class AvgPool2d(_Pool2d, LinearOp):
    """Average over each window of the last two axes: ``(..., H, W) -> (..., h_out, w_out)``.

    ``h_out = (H - k_H) // s_H + 1`` and likewise for ``w_out``; windows may overlap.

    Parameters
    ----------
    size : (int, int) or int
        Window ``(k_H, k_W)``.
    stride : (int, int) or int, optional
        ``(s_H, s_W)``; default the window size (non-overlapping windows).
    """

    name: ClassVar[str] = "avg_pool2d"

    def sparsity(self, in_shape: Shape) -> Sparsity:
        """Bound the entries: an output reads ``k_H k_W`` inputs, an input is in few windows."""
        size, stride = self._geometry
        out_shape = self.out_shape(in_shape)
        k = size[0] * size[1]
        return Sparsity(
            layout.size_of(out_shape) * k, fan_of_windows(size, stride, out_shape[-2:]), k
        )

    def apply(self, t: FloatArray) -> FloatArray:
        """Average the windows of each ``t``: (B, ..., H, W) -> (B, ..., h_out, w_out)."""
        size, stride = self._geometry
        # Disjoint windows by tiles, where NumPy's order of additions is known: with one window
        # per row its iterator reorders them, and from 8 columns on it sums pairwise.
        if stride == size and t.shape[-1] >= 2 * size[1] and size[1] < _SEQUENTIAL_SUM:
            return _tiled_mean(t, size)
        # (B, ..., h_out, w_out, k_h, k_w) -> (B, ..., h_out, w_out)
        result: FloatArray = np.mean(windows(t, size, stride), axis=(-2, -1))
        return result

    def _vjp(self, x: FloatArray, cotangents: FloatArray) -> FloatArray:
        # Adjoint: y_o = (1/k) sum_{i in window(o)} t_i, so <y, u> = sum_i t_i (1/k) sum_{o: i in
        # window(o)} u_o: each cotangent entry is spread evenly over its window, overlaps add up.
        (k_h, k_w), stride = self._geometry
        h_out, w_out = cotangents.shape[-2:]
        share = cotangents / (k_h * k_w)  # (B, ..., h_out, w_out)
        grad = np.zeros((len(cotangents), *x.shape))  # (B, ..., H, W)
        if stride == (k_h, k_w):
            # Disjoint windows tile the top-left (h_out k_h, w_out k_w) corner: one broadcast
            # add of each share onto its tile (0 + share, as below, keeps the sign of zero).
            *lead, s_row, s_col = grad.strides
            tiles = as_strided(
                grad,
                shape=(*grad.shape[:-2], h_out, k_h, w_out, k_w),
                strides=(*lead, k_h * s_row, s_row, k_w * s_col, s_col),
            )
            tiles += share[..., :, np.newaxis, :, np.newaxis]
            return grad
        # One strided slice per window offset: k_h * k_w vectorized adds, no loop over elements.
        for p in range(k_h):
            for q in range(k_w):
                rows, cols = _window_slices(p, q, stride, (h_out, w_out))
                grad[..., rows, cols] += share
        return grad

    def _local_jacobian(self, x: FloatArray, order: Order) -> sp.coo_array:
        (k_h, k_w), stride = self._geometry
        out_shape = self.out_shape(x.shape)
        # The windows of the input's flat-index grid list, for each output, the rows it reads.
        grid = layout.flat_grid(x.shape, order)
        rows = windows(grid, (k_h, k_w), stride)  # (..., h_out, w_out, k_h, k_w)
        # (..., h_out, w_out) -> (..., h_out, w_out, 1, 1): one column per output, for its window
        cols = layout.flat_grid(out_shape, order)[..., np.newaxis, np.newaxis]
        shape = (layout.size_of(x.shape), layout.size_of(out_shape))
        return coo_from_grids(rows, cols, 1.0 / (k_h * k_w), shape)


@register
@dataclass(frozen=True, eq=False)
class MaxPool2d(_Pool2d):
    """Maximum over each window of the last two axes: ``(..., H, W) -> (..., h_out, w_out)``.

    The derivative routes each output to the input that holds its window's maximum.

    Parameters
    ----------
    size : (int, int) or int
        Window ``(k_H, k_W)``.
    stride : (int, int) or int, optional
        ``(s_H, s_W)``; default the window size.
    """

    name: ClassVar[str] = "max_pool2d"
    note: ClassVar[str] = (
        "not differentiable where a window's maximum is tied: the derivative goes to the first "
        "maximum in window order (row-major over the window), as PyTorch; the second "
        "derivative is zero (exact almost everywhere)"
    )

    def sparsity(self, in_shape: Shape) -> Sparsity:
        """One entry per output; an input can be the maximum of every window covering it."""
        size, stride = self._geometry
        out_shape = self.out_shape(in_shape)
        m = layout.size_of(out_shape)
        return Sparsity(m, fan_of_windows(size, stride, out_shape[-2:]), 1)

    def workspace_elements(self, in_shape: Shape) -> int:
        """Every window's entries, copied by :meth:`_flat_windows` (per image of a batch)."""
        (k_h, k_w), _ = self._geometry
        return layout.size_of(self.out_shape(in_shape)) * k_h * k_w

    def forward_workspace_elements(self, in_shape: Shape) -> int:
        """None: the forward's maximum reduces over the window view without copying it."""
        return 0

    def _flat_windows(self, a: NDArray[T]) -> NDArray[T]:
        (k_h, k_w), stride = self._geometry
        view = windows(a, (k_h, k_w), stride)  # (..., h_out, w_out, k_h, k_w)
        # (..., h_out, w_out, k_h, k_w) -> (..., h_out, w_out, k_h * k_w), offsets row-major
        return np.reshape(view, (*view.shape[:-2], k_h * k_w))

    def _argmax(self, x: FloatArray) -> IndexArray:
        # (..., h_out, w_out): offset of the window maximum; argmax takes the first on ties.
        result: IndexArray = np.argmax(self._flat_windows(x), axis=-1)
        return result

    def _forward(self, x: FloatArray) -> FloatArray:
        size, stride = self._geometry
        result: FloatArray = np.max(windows(x, size, stride), axis=(-2, -1))
        return result

    def _jvp(self, x: FloatArray, tangents: FloatArray) -> FloatArray:
        # Each output follows the tangent at its window's maximum.
        index = self._argmax(x)[np.newaxis, ..., np.newaxis]  # (1, ..., h_out, w_out, 1)
        picked = np.take_along_axis(self._flat_windows(tangents), index, axis=-1)
        return picked[..., 0]  # (B, ..., h_out, w_out)

    def _vjp(self, x: FloatArray, cotangents: FloatArray) -> FloatArray:
        # Adjoint of "pick the maximum": each cotangent entry goes back to the input holding its
        # window's maximum; one input can be the maximum of several overlapping windows, so add.
        (k_h, k_w), stride = self._geometry
        argmax = self._argmax(x)  # (..., h_out, w_out)
        h_out, w_out = argmax.shape[-2:]
        grad = np.zeros((len(cotangents), *x.shape))  # (B, ..., H, W)
        for p in range(k_h):
            for q in range(k_w):
                rows, cols = _window_slices(p, q, stride, (h_out, w_out))
                grad[..., rows, cols] += np.where(argmax == p * k_w + q, cotangents, 0.0)
        return grad

    def _local_jacobian(self, x: FloatArray, order: Order) -> sp.coo_array:
        index = self._argmax(x)[..., np.newaxis]  # (..., h_out, w_out, 1)
        # The window maximum's flat index, picked from the windows of the input's index grid.
        rows = np.take_along_axis(self._flat_windows(layout.flat_grid(x.shape, order)), index, -1)
        out_shape = self.out_shape(x.shape)
        cols = layout.flat_grid(out_shape, order)[..., np.newaxis]  # (..., h_out, w_out, 1)
        shape = (layout.size_of(x.shape), layout.size_of(out_shape))
        return coo_from_grids(rows, cols, 1.0, shape)

    # Piecewise linear: where no window's maximum is tied the argmax is locally constant, so the
    # Jacobian is too and its derivative is zero, as for a linear operation; at ties (measure
    # zero) zero by choice.
    _second_order = LinearOp._second_order
    curvature_blocks = LinearOp.curvature_blocks
