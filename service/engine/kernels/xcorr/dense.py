"""The Jacobian w.r.t. the image as a dense matrix, written tap by tap through strided views.

A small Jacobian asked for densely (``(3,16,16) k3``: 768 × 196, 5,292 entries) spent most of its
time building the sparse matrix and then scattering it into the dense one. Here the dense matrix
is written directly: for one tap ``(h, w)`` the entries ``J[flat_x(n, c, s_h i + d_h h - pad_top,
s_w j + d_w w - pad_left), flat_y(n, kk, i, j)] = k[kk, c, h, w]`` over the window positions
``(i, j)`` whose pixel lies inside the image sit at offsets of the flat matrix that are affine in
``(n, kk, c, i, j)``, so they are one strided view, written by one ufunc call. Distinct taps reach
distinct pixels of one window, so no two entries share a position.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np

from ...errors import NonFiniteError
from ...layout import place_values
from ...types import FloatArray, Layout, Order
from .builder import _strided
from .geometry import DEFAULT_GEOMETRY, XCorrGeometry, _as4, _as_float, _Plan, _plan
from .jacobian import _check_order_layout


def _inside(size: int, out: int, stride: int, dilation: int, pad: int, tap: int) -> range:
    """Window positions ``i`` whose pixel ``stride * i + dilation * tap - pad`` lies in the image.

    The image axis has ``size`` pixels and the output ``out`` positions; ``pad`` is the padding
    before the first pixel.
    """
    offset = dilation * tap - pad
    first = max(0, -(offset // stride)) if offset < 0 else 0
    stop = min(out, (size - 1 - offset) // stride + 1) if size - 1 - offset >= 0 else 0
    return range(first, max(first, stop))


def jacobian_x_dense(
    k: FloatArray,
    x_shape: Sequence[int],
    geometry: XCorrGeometry = DEFAULT_GEOMETRY,
    order: Order = "F",
    layout: Layout = "in_out",
    scale: FloatArray | None = None,
) -> FloatArray:
    """Return :func:`.jacobian_x` as a dense matrix, each column optionally scaled.

    Parameters
    ----------
    k : ndarray, shape (C, kh, kw) or (K, C, kh, kw)
    x_shape : sequence of int
        ``(C, H, W)`` or ``(N, C, H, W)``.
    geometry : XCorrGeometry
    order : {"F", "C"}
        Index order of the rows and columns.
    layout : {"in_out", "out_in"}
    scale : ndarray, shape (size(y),), optional
        A factor per output element, in flat order ``order``: the matrix returned is
        ``J diag(scale)`` (``in_out``), the sparse product of the Jacobian with a diagonal.

    Returns
    -------
    ndarray of float64, C-contiguous, shape (size(x), size(y)), or (size(y), size(x)) for
    ``out_in``
        Entry ``k[kk, c, h, w] * scale[flat_y(n, kk, i, j)]`` where :func:`.jacobian_x` has one;
        ``+0.0`` elsewhere, and wherever ``k`` or ``scale`` is zero (a sparse product stores no
        such entry, whatever the other factor is). Every product is the one the sparse route
        computes, so the matrix is bit for bit ``to_dense(J @ diag(scale))``.

    Raises
    ------
    ShapeError
        As in :func:`.output_shape`.
    ParameterError
        For an unknown order or layout.
    NonFiniteError
        If an entry is not finite: ``"the Jacobian has non-finite entries (overflow)"``, as the
        chain rule reports it (checked on the entries, not on the whole matrix).
    """
    _check_order_layout(order, layout)
    k = _as_float(k)
    plan = _plan(x_shape, k.shape, geometry)
    k4 = _as4(k)
    rows, cols = math.prod(plan.x4_shape), math.prod(plan.y4_shape)
    dense = np.zeros((rows, cols) if layout == "in_out" else (cols, rows))
    factor = np.ones(plan.y4_shape) if scale is None else np.reshape(scale, plan.y4_shape, order)
    zeros = not (np.all(k4) and np.all(factor))
    for block in _blocks(plan, order, layout):
        taps = k4[block.taps]  # (1, K, C, [kh, kw,] 1, 1)
        window = factor[block.window]  # (N, K, 1, [1, 1,] rows, cols)
        np.copyto(
            _strided(dense, block.base, block.shape, block.strides), _entries(taps, window, zeros)
        )
    return dense


class _Block(NamedTuple):
    """Where one group of taps writes: a strided view of the dense matrix, and its factors."""

    base: int  # offset of the first entry in the flat matrix
    shape: tuple[int, ...]  # (N, K, C, [kh, kw,] rows, cols)
    strides: tuple[int, ...]  # in elements
    taps: tuple[Any, ...]  # index of k4 (K, C, kh, kw) -> (1, K, C, [kh, kw,] 1, 1)
    window: tuple[Any, ...]  # index of the (N, K, h_out, w_out) factor, aligned to the view


@functools.lru_cache(maxsize=64)
def _blocks(plan: _Plan, order: Order, layout: Layout) -> tuple[_Block, ...]:
    """Return the views of a geometry's dense Jacobian: one per tap, or one for all taps.

    The entry of pixel ``(n, c, r, q)`` and output ``(n, kk, i, j)`` sits at
    ``flat_x * row_step + flat_y * col_step`` of the flat matrix, which is affine in
    ``(n, kk, c, i, j)`` for a fixed tap ``(h, w)`` (``r = s_h i + d_h h - pad_top``) over the
    window positions whose pixel is inside the image, a range of ``i`` and one of ``j``. When no
    tap reaches the padding, the taps are two more axes of one view.
    """
    rows, cols = math.prod(plan.x4_shape), math.prod(plan.y4_shape)
    row_step, col_step = (cols, 1) if layout == "in_out" else (1, rows)
    wx = [int(v) * row_step for v in place_values(plan.x4_shape, order)]  # n, c, r, q
    wy = [int(v) * col_step for v in place_values(plan.y4_shape, order)]  # n, kk, i, j
    # strides of (n, kk, c) and of one step of i and of j
    steps = (wx[0] + wy[0], wy[1], wx[1])
    step_i, step_j = plan.s_h * wx[2] + wy[2], plan.s_w * wx[3] + wy[3]
    sizes = (plan.N, plan.K, plan.C)
    rows_h = [
        _inside(plan.H, plan.h_out, plan.s_h, plan.d_h, plan.pad_top, h) for h in range(plan.kh)
    ]
    cols_w = [
        _inside(plan.W, plan.w_out, plan.s_w, plan.d_w, plan.pad_left, w) for w in range(plan.kw)
    ]
    everywhere = all(len(r) == plan.h_out for r in rows_h) and all(
        len(r) == plan.w_out for r in cols_w
    )
    new, all_ = np.newaxis, slice(None)
    if everywhere:
        # No padding is reached (pad_top = pad_left = 0): view (n, kk, c, h, w, i, j).
        return (
            _Block(
                0,
                (*sizes, plan.kh, plan.kw, plan.h_out, plan.w_out),
                (*steps, plan.d_h * wx[2], plan.d_w * wx[3], step_i, step_j),
                (new, all_, all_, all_, all_, new, new),
                (all_, all_, new, new, new),
            ),
        )
    blocks = []
    for h, rows_i in enumerate(rows_h):
        for w, cols_j in enumerate(cols_w):
            if not rows_i or not cols_j:
                continue
            r0 = plan.s_h * rows_i.start + plan.d_h * h - plan.pad_top
            q0 = plan.s_w * cols_j.start + plan.d_w * w - plan.pad_left
            base = r0 * wx[2] + q0 * wx[3] + rows_i.start * wy[2] + cols_j.start * wy[3]
            blocks.append(
                _Block(
                    base,
                    (*sizes, len(rows_i), len(cols_j)),
                    (*steps, step_i, step_j),
                    (new, all_, all_, h, w, new, new),
                    (
                        all_,
                        all_,
                        new,
                        slice(rows_i.start, rows_i.stop),
                        slice(cols_j.start, cols_j.stop),
                    ),
                )
            )
    return tuple(blocks)


def _entries(taps: FloatArray, window: FloatArray, zeros: bool) -> FloatArray:
    """Return ``taps * window`` (broadcast, C-contiguous) as the sparse product stores it.

    A negative product that underflowed is ``-0.0``, which becomes ``+0.0`` (the sparse route
    drops it), and ``zeros`` says a factor may be zero: such a product stores nothing in the
    sparse route whatever the other factor is (even inf or NaN), so it is ``+0.0`` here.

    Raises
    ------
    NonFiniteError
        If a product is not finite (overflow, or an inf or NaN factor meeting a non-zero).
    """
    # inf * 0 is overwritten below; an overflow is reported below
    with np.errstate(invalid="ignore", over="ignore"):
        values: FloatArray = np.multiply(taps, window)
    np.add(values, 0.0, out=values)
    if zeros:
        np.copyto(values, 0.0, where=(taps == 0) | (window == 0))
    if not np.isfinite(values).all():
        raise NonFiniteError("the Jacobian has non-finite entries (overflow)")
    return values
