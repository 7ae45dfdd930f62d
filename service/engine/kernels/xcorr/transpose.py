"""Cross-correlation VJPs: the transposes with respect to the image and to the kernel.

The op is bilinear, so its JVP is the forward itself (``cross_correlate(dx, k) +
cross_correlate(x, dk)``); only the transposes are written by hand.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.lib.stride_tricks import as_strided

from ...errors import ShapeError
from ...layout import ten_batch, vec_batch
from ...types import FloatArray
from .columns import (
    COLUMN_BUFFER,
    GEMM_BLOCK,
    _column_blocks,
    _product,
    _stride1_positions,
    _windows,
)
from .geometry import DEFAULT_GEOMETRY, XCorrGeometry, _as4, _as_float, _pad, _Plan, _plan


def _cotangent4(cotangent: FloatArray, plan: _Plan) -> FloatArray:
    u = _as_float(cotangent)
    if u.shape != plan.out_shape:
        raise ShapeError(
            f"xcorr: the cotangent has shape {list(u.shape)} but the output of x "
            f"{list(plan.x_shape)} with kernel {list(plan.k_shape)} has {list(plan.out_shape)}"
        )
    return np.reshape(u, plan.y4_shape)


def _tap_window(plan: _Plan, h: int, w: int) -> tuple[slice, slice]:
    """Slices of ``x_p`` read by tap (h, w) for all outputs: rows ``s_h i + d_h h``, i < h_out."""
    top, left = plan.d_h * h, plan.d_w * w
    return (
        slice(top, top + plan.s_h * (plan.h_out - 1) + 1, plan.s_h),
        slice(left, left + plan.s_w * (plan.w_out - 1) + 1, plan.s_w),
    )


# Adjoint of the forward with respect to x (cf. JAX's _conv_general_dilated_transpose_lhs).
# Forward: y = A x, y[n,kk,i,j] = sum_{c,h,w} x_p[n,c,s_h i + d_h h, s_w j + d_w w] k[kk,c,h,w],
# with x_p = P x the zero padding. For a cotangent u,
#   <A x, u> = sum_{n,c,h,w,i,j} x_p[n,c,s_h i + d_h h, s_w j + d_w w] G_hw[n,c,i,j]
#            = <x_p, g>,  G_hw[n,c,i,j] = sum_kk k[kk,c,h,w] u[n,kk,i,j],
# where g adds each tap's plane G_hw at rows s_h i + d_h h and columns s_w j + d_w w. So
# A^T u = P^T g: per tap one GEMM contracts kk, and the plane G_hw is added into the
# stride-(s_h, s_w) slice at offset (d_h h, d_w w)
# (JAX's "lhs dilation by the stride" done directly), and P^T crops the padding. In the notes'
# in_out layout this is ten(J vec(u)).
def vjp_x(
    k: FloatArray,
    cotangent: FloatArray,
    x_shape: Sequence[int],
    geometry: XCorrGeometry = DEFAULT_GEOMETRY,
) -> FloatArray:
    """Pull a cotangent of the output back to ``x``: ``ten(J_x vec(u))``.

    Parameters
    ----------
    k : ndarray, shape (C, kh, kw) or (K, C, kh, kw)
    cotangent : ndarray, shape ``output_shape(x_shape, k.shape, geometry)``
        ``u``, a cotangent of the output.
    x_shape : sequence of int
        ``(C, H, W)`` or ``(N, C, H, W)``.
    geometry : XCorrGeometry

    Returns
    -------
    ndarray of float64, shape ``x_shape``
        ``g[n, c, r, q] = sum_{kk, i, j, h, w : s_h i + d_h h - pad_top = r, ...} k[kk, c, h, w]
        u[n, kk, i, j]``: the transpose of the forward in ``x``, in the notes' ``in_out`` layout
        ``ten(J vec(u))``.

    Raises
    ------
    ShapeError
        As in :func:`output_shape`, or when the cotangent does not have the output's shape.
    """
    k = _as_float(k)
    plan = _plan(x_shape, k.shape, geometry)
    u4 = _cotangent4(cotangent, plan)
    k4 = _as4(k)
    if plan.K == 1 and plan.s_h == plan.s_w == 1:
        grad_p = _image_by_shifts(k4, u4, plan)
    else:
        grad_p = _image_by_taps(k4, u4, plan)
    top, left = plan.pad_top, plan.pad_left
    grad = grad_p[:, :, top : top + plan.H, left : left + plan.W]
    return np.reshape(np.ascontiguousarray(grad), plan.x_shape)


def _image_by_taps(k4: FloatArray, u4: FloatArray, plan: _Plan) -> FloatArray:
    """Any stride and kernel count: one GEMM per tap, added into its window -> x_p's shape."""
    N, C = plan.N, plan.C
    # (K, C, kh, kw) -> (kh, kw, C, K): one contiguous (C, K) matrix per tap
    k_taps = np.ascontiguousarray(np.transpose(k4, (2, 3, 1, 0)))
    # (N, K, h_out, w_out) -> (N, K, h_out*w_out)
    uf = vec_batch(u4, 2, "C")
    plane = np.empty((N, C, plan.h_out * plan.w_out))
    grad_p = np.zeros(plan.padded_shape)
    for h in range(plan.kh):
        for w in range(plan.kw):
            # (C, K) @ (N, K, h_out*w_out) -> (N, C, h_out*w_out)
            _product(k_taps[h, w], uf, plane)
            rows, cols = _tap_window(plan, h, w)
            grad_p[:, :, rows, cols] += ten_batch(plane, (plan.h_out, plan.w_out), "C")
    return grad_p


# One kernel at stride 1: the tap planes are products k[c, h, w] u[n, i, j], one rounding each
# (a GEMM over a single kernel rounds the same product), added tap after tap from zero as in
# _image_by_taps, so every sum has the same terms in the same order: the same bits. With the
# cotangent on the row pattern of the shift methods (zeros where no output is, which add
# nothing to sums that start at +0 and so can never be -0), a tap's window is the contiguous
# flat slice at offsets[t]: one multiply and one add per tap on contiguous memory instead of a
# GEMM and a strided 2-D add. Measured, thread CPU time, k3 one kernel, same run (load 3-4):
# x (2,3,32,32) (an HVP's two cotangents) 0.145 -> 0.071 ms; (3,224,224) 3.6 -> 1.9 ms.
def _image_by_shifts(k4: FloatArray, u4: FloatArray, plan: _Plan) -> FloatArray:
    """Stride 1, one kernel: tap by tap on flat padded rows -> x_p's shape (N, C, hp, wp)."""
    N, C, hp, wp = plan.padded_shape
    h_out, w_out, span, offsets = _stride1_positions(plan)
    # (N, 1, h_out, w_out) -> (N, h_out, wp): the row pattern -> (N, 1, span)
    rows = np.zeros((N, h_out, wp))
    rows[:, :, :w_out] = u4[:, 0]
    pattern = np.reshape(rows, (N, 1, h_out * wp))[:, :, :span]
    # (1, C, kh, kw) -> (T, C, 1): a column of channel weights per tap
    k_taps = np.reshape(np.transpose(k4[0], (1, 2, 0)), (plan.kh * plan.kw, C, 1))
    grad = np.zeros((N, C, hp * wp))
    plane = np.empty((N, C, span))
    for t, offset in enumerate(offsets):
        # (C, 1) * (N, 1, span) -> (N, C, span)
        np.multiply(k_taps[t], pattern, out=plane)
        grad[:, :, offset : offset + span] += plane
    # (N, C, hp*wp) -> (N, C, hp, wp)
    return ten_batch(grad, (hp, wp), "C")


# Adjoint of the forward with respect to k (cf. JAX's _conv_general_dilated_transpose_rhs).
# The forward is linear in k: y[n,kk,i,j] = sum_{c,h,w} X[n,c,h,w,i,j] k[kk,c,h,w] with
# X[n,c,h,w,i,j] = x_p[n,c,s_h i + d_h h, s_w j + d_w w] (the im2col windows). Hence
#   <y, u> = sum_{kk,c,h,w} k[kk,c,h,w] sum_{n,i,j} u[n,kk,i,j] X[n,c,h,w,i,j],
# so the pullback contracts u with the windows over (n, i, j).
#
# At stride 1 the windows are never copied (the forward's shift trick, transposed): with x_p's
# rows laid end to end, output (i, j) of tap t reads flat pixel p + offsets[t], p = i W_p + j
# (:func:`_stride1_positions`). Written once on that row pattern (u[n, kk, i, j] at p, zeros at
# the W_p - w_out positions of a row that no output has), the cotangent meets every tap in one
# product with a contiguous slice of the image:
#   g[kk, c, t] = sum_n sum_p x_p[n, c, p + offsets[t]] pattern[n, p, kk].
# Measured, x (3,224,224) k (3,3,3), median ms with the forward in the same run: forward 0.29,
# this 0.24 (nine (3, 49506) matrix-vector products, about the L2 bandwidth), the im2col
# blocks below 0.62 (their copy of the windows is nine times the image).
# At any other stride the outputs skip pixels and the windows are copied, a block of output rows
# at a time: per image a (K, rows*w_out) @ (rows*w_out, C*kh*kw) product.
def vjp_kernel(
    x: FloatArray,
    cotangent: FloatArray,
    k_shape: Sequence[int],
    geometry: XCorrGeometry = DEFAULT_GEOMETRY,
) -> FloatArray:
    """Pull a cotangent of the output back to the kernel: ``ten(J_k vec(u))``.

    Parameters
    ----------
    x : ndarray, shape (C, H, W) or (N, C, H, W)
    cotangent : ndarray, shape ``output_shape(x.shape, k_shape, geometry)``
    k_shape : sequence of int
        ``(C, kh, kw)`` or ``(K, C, kh, kw)``. A batch of ``B`` cotangents of one kernel is
        pulled back at once as ``K = B`` kernels (the caller moves the batch axis there).
    geometry : XCorrGeometry

    Returns
    -------
    ndarray of float64, shape ``k_shape``
        ``g[kk, c, h, w] = sum_{n, i, j} u[n, kk, i, j] x_p[n, c, s_h i + d_h h, s_w j + d_w w]``:
        the transpose of the forward in ``k``, ``ten(J_k vec(u))`` in the ``in_out`` layout.

    Raises
    ------
    ShapeError
        As in :func:`output_shape`, or when the cotangent does not have the output's shape.
    """
    x = _as_float(x)
    plan = _plan(x.shape, k_shape, geometry)
    u4 = _cotangent4(cotangent, plan)
    x_p = _pad(_as4(x), plan)
    if plan.s_h == plan.s_w == 1:
        grad = _kernel_by_shifts(x_p, u4, plan)
    else:
        grad = _kernel_by_columns(x_p, u4, plan)
    # (K, C, kh, kw) -> k_shape
    return np.reshape(grad, plan.k_shape)


def _kernel_by_shifts(x_p: FloatArray, u4: FloatArray, plan: _Plan) -> FloatArray:
    """Stride 1: one product per tap and block of positions (see above) -> (K, C, kh, kw)."""
    N, C, _, wp = x_p.shape
    K, T = plan.K, plan.kh * plan.kw
    h_out, w_out, span, _ = _stride1_positions(plan)
    # (N, K, h_out, w_out) -> (N, h_out, wp, K): the row pattern -> (N, span, K)
    rows = np.empty((N, h_out, wp, K))
    rows[:, :, w_out:] = 0.0
    rows[:, :, :w_out] = np.transpose(u4, (0, 2, 3, 1))
    pattern = np.reshape(rows, (N, h_out * wp, K))[:, :span]
    # (N, C, hp, wp) -> (N, C, hp*wp)
    xf = vec_batch(x_p, 2, "C")
    # one kernel: matrix-vector products (a GEMM with one column is slower)
    single = K == 1
    # Blocks of positions small enough for BLAS to stay on the calling thread (see GEMM_BLOCK).
    # A (C, n) matrix-vector product stayed there up to 2^18 entries: OpenBLAS's worker thread
    # used no CPU time over 20 000 products of (3, 87000), (64, 4096) or (256, 1024), and some
    # for (16, 100000). Fewer, longer products: 0.24 ms here against 0.31 ms in blocks of 25 000.
    block = max(1, COLUMN_BUFFER // C if single else GEMM_BLOCK // (C * K))
    grad = np.zeros((plan.kh, plan.kw, C) if single else (plan.kh, plan.kw, C, K))
    part = np.empty(grad.shape)  # every tap's product of one block, added at once
    for n in range(N):
        image = xf[n]
        for p0 in range(0, span, block):
            p1 = min(span, p0 + block)
            right = pattern[n, p0:p1, 0] if single else pattern[n, p0:p1]
            # (kh, kw, C, p1-p0) @ (p1-p0[, K]) -> (kh, kw, C[, K]): NumPy runs the same BLAS
            # product per tap as a call per tap would (the same bits), without a Python call each
            np.matmul(_tap_views(image, plan, p0, p1), right, out=part)
            grad += part
    # (kh, kw, C[, K]) -> (T, C, K) -> (K, C, T) -> (K, C, kh, kw)
    moved = np.transpose(np.reshape(grad, (T, C, K)), (2, 1, 0))
    return np.reshape(moved, plan.k4_shape)


def _tap_views(image: FloatArray, plan: _Plan, p0: int, p1: int) -> FloatArray:
    """(C, hp*wp) -> (kh, kw, C, p1-p0): ``[h, w]`` is the flat slice tap (h, w) reads, a view.

    Tap ``t = h kw + w`` starts at ``offsets[t] = d_h h W_padded + d_w w``
    (:func:`_stride1_positions`): two strides, one per kernel axis, over the same memory.
    """
    wp = plan.padded_shape[3]
    step_c, step_p = image.strides
    taps = as_strided(
        image[:, p0:],
        shape=(plan.kh, plan.kw, plan.C, p1 - p0),
        strides=(plan.d_h * wp * step_p, plan.d_w * step_p, step_c, step_p),
        writeable=False,
    )
    return taps


def _kernel_by_columns(x_p: FloatArray, u4: FloatArray, plan: _Plan) -> FloatArray:
    """Any stride: the windows copied a block of output rows at a time -> (K, C*kh*kw)."""
    N, C, K, T = plan.N, plan.C, plan.K, plan.kh * plan.kw
    w_out = plan.w_out
    windows = _windows(x_p, plan)
    # (N, K, h_out, w_out) -> (N, K, h_out*w_out)
    uf = vec_batch(u4, 2, "C")
    grad = np.zeros((K, C * T))
    part = np.empty((K, C * T))
    for i0, i1, cols in _column_blocks(windows, plan, (0, 2, 3, 1, 4, 5)):
        for n in range(N):
            # (K, rows*w_out) @ (rows*w_out, C*T) -> (K, C*T)
            _product(
                uf[n, :, i0 * w_out : i1 * w_out],
                np.reshape(cols[n], ((i1 - i0) * w_out, C * T)),
                part,
            )
            grad += part
    return grad
