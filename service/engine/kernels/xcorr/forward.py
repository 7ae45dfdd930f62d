"""Cross-correlation forward: three measured methods and the notes' ``ten(J^T vec(x))``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np

from ...cancel import checkpoint
from ...errors import ParameterError
from ...layout import ten, ten_batch, vec, vec_batch
from ...types import FloatArray, Order
from .columns import (
    COLUMN_BUFFER,
    _column_blocks,
    _gather_index,
    _gathered,
    _product,
    _stride1_positions,
    _windows,
)
from .geometry import (
    DEFAULT_GEOMETRY,
    XCorrGeometry,
    _as4,
    _as_float,
    _pad,
    _Plan,
    _plan,
    _plan_of_arrays,
)
from .jacobian import jacobian_x

Method = Literal["auto", "gemm_shift", "phase_shift", "tap_gemm", "im2col", "jacobian"]

FORWARD_METHODS: tuple[Method, ...] = (
    "auto",
    "gemm_shift",
    "phase_shift",
    "tap_gemm",
    "im2col",
    "jacobian",
)


# --------------------------------------------------------------------------------------------
# Forward
# --------------------------------------------------------------------------------------------
#
# Method selection, measured on this machine (2 cores, float64, every GEMM on one thread).
# Medians in ms from `benchmarks/xcorr.py --methods` (other work on the machine, load ~1;
# per-channel scipy.signal.correlate for scale):
#
#   case                       gemm_shift  tap_gemm  im2col   scipy   auto
#   (3,32,32) k3                    0.031     0.069   0.046    0.29   im2col (gathered, below)
#   (3,224,224) k3 s1               0.23      0.46    0.51     2.3    gemm_shift
#   (3,224,224) k3 s2               0.22      0.47    0.22     2.3    phase_shift
#   (16,128,128) k5                 0.48      1.5     2.0      4.9    gemm_shift
#   K=16 (16,128,128) k3            4.0       2.3     2.1     78      im2col
#   N=32 (3,64,64) K=8 k3          15.6       4.8     2.7    106      im2col
#
# and on a grid of K in {1..32} x C in {1..32} (k 3 and 5, H 32..128, N 1 and 8), where the
# method these rules pick was the fastest or within 20% of it:
#
# * C == 1 -> im2col: the shift methods' GEMMs would have inner dimension 1 (1.5-35x slower).
# * K == 1 or 4 K <= C -> gemm_shift: contracting the C channels once leaves K*kh*kw planes for
#   the shifted adds, the least memory traffic when kernels are few next to channels (up to
#   2.5x faster than the others; a tie with tap_gemm at 4 K = C).
#   Strided, the same contraction per stride phase (phase_shift) when the kernel has at least
#   two taps per phase (kh kw >= 2 s_h s_w). Process CPU ms, im2col / phase_shift, load 7-8:
#   (3,224,224) k3 s2 0.67 / 0.48; k5 s3 1.09 / 0.84; k7 s2 2.25 / 1.10; k3 s(1,2) 1.02 /
#   0.56; (16,128,128) k5 s2 1.79 / 0.71; K=4 (16,128,128) k3 s2 1.21 / 1.00; N=8 (3,64,64)
#   k3 s2 0.62 / 0.68 (a tie); below two taps a phase it loses: k3 s3 0.58 / 0.71, k2 s2
#   0.65 / 0.64. (Before, im2col: it copies only the windows that are outputs, while
#   gemm_shift computes every stride-1 position and keeps one in s_h * s_w.)
# * K >= C or C < 4, or strided -> im2col: its single GEMM has inner dimension C*kh*kw, while
#   tap_gemm's per-tap GEMMs have inner dimension C and are memory-bound when C is below K or
#   tiny (1.1-3x faster than tap_gemm).
# * otherwise (C/4 < K < C, C >= 4) -> tap_gemm: no column copy; one (K, C) GEMM per tap on a
#   cache-resident block of positions (up to 1.5x faster than the others).


def choose_method(
    x_shape: Sequence[int], k_shape: Sequence[int], geometry: XCorrGeometry = DEFAULT_GEOMETRY
) -> Method:
    """Return the forward method ``"auto"`` resolves to for these shapes (see the table above).

    Parameters
    ----------
    x_shape, k_shape : sequence of int
        As in :func:`output_shape`.
    geometry : XCorrGeometry

    Returns
    -------
    {"gemm_shift", "tap_gemm", "im2col"}

    Raises
    ------
    ShapeError
        As in :func:`output_shape`.
    """
    return _choose(_plan(x_shape, k_shape, geometry))


def _choose(plan: _Plan) -> Method:
    """:func:`choose_method` for a plan already made."""
    if plan.C == 1 or _gathered(plan):
        return "im2col"
    phases = plan.s_h * plan.s_w
    if plan.K == 1 or 4 * plan.K <= plan.C:
        if phases == 1:
            return "gemm_shift"
        if plan.kh * plan.kw >= 2 * phases:
            return "phase_shift"
        return "im2col"
    if phases > 1 or plan.K >= plan.C or plan.C < 4:
        return "im2col"
    return "tap_gemm"


def scratch_elements(
    x_shape: Sequence[int], k_shape: Sequence[int], geometry: XCorrGeometry = DEFAULT_GEOMETRY
) -> int:
    """Return the elements of the arrays the ``"auto"`` forward holds besides ``x_p`` and ``y``.

    The shift methods compute every stride-1 position (``N K h1 W_padded`` elements) before
    cropping; ``gemm_shift`` also holds ``K kh kw`` planes of a block plus the largest tap
    offset, which a tall dilated kernel makes larger than the column buffer. ``phase_shift``
    holds the image split into its stride phases (twice when padded), its output on the phase
    grid and the planes of a block. im2col's buffer is the cost model's fixed allowance (one
    output row at least, charged there).

    Parameters
    ----------
    x_shape, k_shape : sequence of int
        As in :func:`output_shape`.
    geometry : XCorrGeometry

    Returns
    -------
    int
    """
    plan = _plan(x_shape, k_shape, geometry)
    method = _choose(plan)
    if method == "im2col":
        return 0
    if method == "phase_shift":
        return _phase_scratch(plan)
    h1, _, span, offsets = _stride1_positions(plan)
    N, K, wp = plan.N, plan.K, plan.padded_shape[-1]
    if method == "gemm_shift":
        block, halo = _shift_block(plan, span, offsets[-1]), offsets[-1]
        return N * K * h1 * wp + N * K * plan.kh * plan.kw * (block + halo)
    return N * K * h1 * wp + N * K * min(_tap_block(plan), span)


def _phase_scratch(plan: _Plan) -> int:
    """Return the elements :func:`_phase_shift` holds besides ``y``.

    The zero-filled grid and its phases, the output on the phase grid's row pattern, and the
    planes of one block (with the largest halo of any phase).
    """
    N, C, K, hp, wp = plan.N, plan.C, plan.K, *plan.padded_shape[2:]
    Hs, Ws = -(-hp // plan.s_h), -(-wp // plan.s_w)
    span = (plan.h_out - 1) * Ws + plan.w_out
    halo = (plan.d_h * (plan.kh - 1) // plan.s_h) * Ws + plan.d_w * (plan.kw - 1) // plan.s_w
    block = _shift_block(plan, span, halo)
    images = 2 * N * C * Hs * plan.s_h * Ws * plan.s_w
    return images + N * K * plan.h_out * Ws + N * K * plan.kh * plan.kw * (block + halo)


def _shift_block(plan: _Plan, span: int, halo: int) -> int:
    # at least 4 halos per block, so recomputed halo planes cost at most a quarter more
    return min(span, max(4 * halo, COLUMN_BUFFER // (plan.N * plan.K * plan.kh * plan.kw), 64))


def _tap_block(plan: _Plan) -> int:
    # blocks of about COLUMN_BUFFER elements of all images' inputs or outputs, but at least 4096
    # positions: with 64 the per-call overhead made (3,224,224) k3 2.5x slower
    return max(4096, COLUMN_BUFFER // (plan.N * max(plan.K, plan.C)))


def _gemm_shift(x_p: FloatArray, k4: FloatArray, plan: _Plan) -> FloatArray:
    """Contract the channels first, then add the ``kh * kw`` shifted planes of the product.

    Positions as in :func:`_stride1_positions`; the planes are made and added by
    :func:`_shift_add`.
    """
    N, C, _, wp = x_p.shape
    K, T = plan.K, plan.kh * plan.kw
    h1, w1, span, offsets = _stride1_positions(plan)
    # (N, C, hp, wp) -> (N, C, hp*wp)
    xf = vec_batch(x_p, 2, "C")
    # (K, C, kh, kw) -> (K*T, C): row kk*T + t holds k[kk, :, h, w] for tap t = h*kw + w
    k_taps = np.reshape(np.transpose(k4, (0, 2, 3, 1)), (K * T, C))
    out = np.empty((N, K, h1 * wp))
    _shift_add(xf, k_taps, offsets, span, out, plan, accumulate=False)
    return _crop_stride1(out, plan, h1, w1, wp)


def _shift_add(
    xf: FloatArray,
    k_taps: FloatArray,
    offsets: list[int],
    span: int,
    out: FloatArray,
    plan: _Plan,
    accumulate: bool,
) -> None:
    """Set (or add to) ``out[:, :, :span]`` the sum over taps of the shifted planes ``k_taps @ xf``.

    ``xf (N, C, P)`` holds flat images, ``k_taps (K*T, C)`` one row per kernel and tap
    (``kk*T + t``), and tap ``t`` reads position ``p + offsets[t]`` (ascending offsets). The
    positions go in blocks, each with the planes of its block plus the largest offset, so the
    planes stay cache-sized instead of ``K * T`` times the image.
    """
    N, K = out.shape[0], out.shape[1]
    T = len(offsets)
    halo = offsets[-1]
    block = _shift_block(plan, span, halo)
    planes = np.empty((N, K * T, block + halo))
    # (N, K*T, block + halo) -> (N, K, T, block + halo)
    planes4 = np.reshape(planes, (N, K, T, block + halo))
    for p0 in range(0, span, block):
        checkpoint()
        p1 = min(span, p0 + block)
        width = p1 - p0 + halo
        # (K*T, C) @ (N, C, width) -> (N, K*T, width)
        _product(k_taps, xf[:, :, p0 : p0 + width], planes[:, :, :width])
        acc = out[:, :, p0:p1]
        for t, offset in enumerate(offsets):
            if t == 0 and not accumulate:
                np.copyto(acc, planes4[:, :, t, offset : offset + p1 - p0])
            else:
                acc += planes4[:, :, t, offset : offset + p1 - p0]


def _phase_shift(x4: FloatArray, k4: FloatArray, plan: _Plan) -> FloatArray:
    """Strided: split the padded image into its ``s_h * s_w`` phases, then shift-add per phase.

    Tap ``(h, w)`` reads ``x_p[s_h i + d_h h, s_w j + d_w w]``, which is pixel
    ``(i + d_h h // s_h, j + d_w w // s_w)`` of phase ``(d_h h % s_h, d_w w % s_w)``
    (``phase[a, b][r, q] = x_p[s_h r + a, s_w q + b]``). So each phase is a stride-1 problem
    with its own taps, solved like :func:`_gemm_shift` on flat positions ``i * Ws + j`` of the
    phase grid, and all phases add into one output. Only the image is copied once (into its
    phases); im2col copied ``kh * kw`` values per output and computed them with a matrix-vector
    product (2x slower for (3,224,224) k3 stride 2).
    """
    N, C, K = plan.N, plan.C, plan.K
    s_h, s_w = plan.s_h, plan.s_w
    h_out, w_out = plan.h_out, plan.w_out
    phases, Hs, Ws = _phase_split(x4, plan)
    span = (h_out - 1) * Ws + w_out
    out = np.empty((N, K, h_out * Ws))
    accumulate = False
    for a in range(s_h):
        for b in range(s_w):
            taps = [
                (h, w)
                for h in range(plan.kh)
                for w in range(plan.kw)
                if (plan.d_h * h) % s_h == a and (plan.d_w * w) % s_w == b
            ]
            if not taps:
                continue
            offsets = [(plan.d_h * h // s_h) * Ws + plan.d_w * w // s_w for h, w in taps]
            # (K, C) per tap -> (K, T_ab, C) -> (K*T_ab, C): row kk*T_ab + t
            k_taps = np.stack([k4[:, :, h, w] for h, w in taps], axis=1)
            k_taps = np.reshape(k_taps, (K * len(taps), C))
            _shift_add(phases[a, b], k_taps, offsets, span, out, plan, accumulate)
            accumulate = True
    # (N, K, h_out*Ws) -> (N, K, h_out, Ws) -> (N, K, h_out, w_out)
    return np.ascontiguousarray(ten_batch(out, (h_out, Ws), "C")[:, :, :, :w_out])


def _phase_split(x4: FloatArray, plan: _Plan) -> tuple[FloatArray, int, int]:
    """Return the phases of ``x_p``, shape (s_h, s_w, N, C, Hs*Ws), and ``Hs, Ws``.

    ``phases[a, b, n, c, r * Ws + q] = x_p[n, c, s_h r + a, s_w q + b]``, zero past the padded
    image (``Hs = ceil(H_padded / s_h)``; those zeros are read only by dropped positions).
    """
    N, C, hp, wp = plan.padded_shape
    s_h, s_w = plan.s_h, plan.s_w
    Hs, Ws = -(-hp // s_h), -(-wp // s_w)
    if plan.padded or hp != Hs * s_h or wp != Ws * s_w:
        grid = np.zeros((N, C, Hs * s_h, Ws * s_w))
        top, left = plan.pad_top, plan.pad_left
        grid[:, :, top : top + plan.H, left : left + plan.W] = x4
    else:
        grid = x4
    # (N, C, Hs, s_h, Ws, s_w) -> (s_h, s_w, N, C, Hs, Ws), one copy
    split = np.reshape(grid, (N, C, Hs, s_h, Ws, s_w))
    phases = np.ascontiguousarray(np.transpose(split, (3, 5, 0, 1, 2, 4)))
    return np.reshape(phases, (s_h, s_w, N, C, Hs * Ws)), Hs, Ws


def _tap_gemm(x_p: FloatArray, k4: FloatArray, plan: _Plan) -> FloatArray:
    """Accumulate one ``(K, C) @ (C, block)`` GEMM per tap on the shifted input, block by block.

    Positions as in :func:`_stride1_positions`; a block of positions stays in cache for all
    ``kh * kw`` taps.
    """
    N, C, _, wp = x_p.shape
    K, T = plan.K, plan.kh * plan.kw
    h1, w1, span, offsets = _stride1_positions(plan)
    # (N, C, hp, wp) -> (N, C, hp*wp)
    xf = vec_batch(x_p, 2, "C")
    # (K, C, kh, kw) -> (kh, kw, K, C) -> (T, K, C): one contiguous (K, C) matrix per tap t
    k_taps = np.reshape(np.ascontiguousarray(np.transpose(k4, (2, 3, 0, 1))), (T, K, C))
    out = np.empty((N, K, h1 * wp))
    block = _tap_block(plan)
    tmp = np.empty((N, K, min(block, span)))
    for p0 in range(0, span, block):
        checkpoint()
        p1 = min(span, p0 + block)
        acc = out[:, :, p0:p1]
        part = tmp[:, :, : p1 - p0]
        for t, offset in enumerate(offsets):
            # (K, C) @ (N, C, p1-p0) -> (N, K, p1-p0)
            src = xf[:, :, offset + p0 : offset + p1]
            if t == 0:
                _product(k_taps[t], src, acc)
            else:
                _product(k_taps[t], src, part)
                acc += part
    return _crop_stride1(out, plan, h1, w1, wp)


def _crop_stride1(out: FloatArray, plan: _Plan, h1: int, w1: int, wp: int) -> FloatArray:
    """Keep the strided outputs among stride-1 flat positions (N, K, h1*wp) -> y4."""
    # (N, K, h1*wp) -> (N, K, h1, wp)
    grid = ten_batch(out, (h1, wp), "C")
    return np.ascontiguousarray(grid[:, :, :: plan.s_h, : w1 : plan.s_w])


def _gathered_im2col(x: FloatArray, k: FloatArray, plan: _Plan) -> FloatArray:
    """im2col for small images: every column at once by a cached index, then one GEMM.

    Returns the output in ``plan.out_shape``. The columns and the GEMM are those of
    :func:`_im2col` (same numbers in the same places, same bits); this path only spares the
    small image the calls it does not need (a (3,32,32) k3 forward is about 25 us of work).
    """
    N, K, C, T = plan.N, plan.K, plan.C, plan.kh * plan.kw
    index = _gather_index(plan)
    x_p = _pad(_as4(x), plan)
    if N == 1:
        # x_p's C-order flat elements [index] -> (1, C*T, h_out*w_out): a flat take (twice as
        # fast as one along an axis; take flattens in C order, here a view)
        columns = x_p.take(index)[np.newaxis]
    else:
        # (N, C*hp*wp)[:, index] -> (N, C*T, h_out*w_out)
        columns = x_p.reshape(N, x_p.size // N).take(index, axis=1)
    out = np.empty(plan.out_shape)
    # (K, C*T) @ (N, C*T, h_out*w_out) -> (N, K, h_out*w_out), a view of the output
    _product(k.reshape(K, C * T), columns, out.reshape(N, K, plan.h_out * plan.w_out))
    return out


def _im2col(x_p: FloatArray, k4: FloatArray, plan: _Plan) -> FloatArray:
    """Copy the windows of a block of output rows into columns, then one GEMM per block."""
    N, C = plan.N, plan.C
    K, T = plan.K, plan.kh * plan.kw
    # (K, C, kh, kw) -> (K, C*T)
    k_rows = np.reshape(k4, (K, C * T))
    w_out = plan.w_out
    out = np.empty((N, K, plan.h_out * w_out))
    windows = _windows(x_p, plan)
    for i0, i1, cols in _column_blocks(windows, plan, (0, 1, 4, 5, 2, 3)):
        # (K, C*T) @ (N, C*T, rows*w_out) -> (N, K, rows*w_out)
        columns = np.reshape(cols, (N, C * T, (i1 - i0) * w_out))
        _product(k_rows, columns, out[:, :, i0 * w_out : i1 * w_out])
    # (N, K, h_out*w_out) -> (N, K, h_out, w_out)
    return ten_batch(out, (plan.h_out, w_out), "C")


_KERNELS = {"gemm_shift": _gemm_shift, "tap_gemm": _tap_gemm, "im2col": _im2col}


def cross_correlate(
    x: FloatArray,
    k: FloatArray,
    geometry: XCorrGeometry = DEFAULT_GEOMETRY,
    method: Method = "auto",
) -> FloatArray:
    """Cross-correlate images with kernels: the notes' ``x * k``, generalized.

    Parameters
    ----------
    x : ndarray, shape (C, H, W) or (N, C, H, W)
    k : ndarray, shape (C, kh, kw) or (K, C, kh, kw)
    geometry : XCorrGeometry
        Stride, padding and dilation.
    method : {"auto", "gemm_shift", "tap_gemm", "im2col", "jacobian"}
        ``"auto"`` picks the fastest method measured for the shapes (:func:`choose_method`).
        ``"jacobian"`` is the notes' identity ``ten(J^T vec(x))`` (:func:`forward_via_jacobian`).

    Returns
    -------
    ndarray of float64, shape ``output_shape(x.shape, k.shape, geometry)``
        ``y[n, kk, i, j] = sum_{c,h,w} x_p[n, c, s_h i + d_h h, s_w j + d_w w] k[kk, c, h, w]``
        with the absent ``n``/``kk`` axes dropped.

    Raises
    ------
    ShapeError
        As in :func:`output_shape`.
    ParameterError
        For an unknown method.

    Notes
    -----
    Seed notes, *Example*: ``(x * k)[i, j] = sum_c sum_h sum_w x[c, s_H i + h, s_W j + w]
    k[c, h, w]``. The op is bilinear, so its JVP is ``cross_correlate(dx, k) +
    cross_correlate(x, dk)``.

    Examples
    --------
    >>> x = np.arange(6.0).reshape(1, 2, 3)
    >>> cross_correlate(x, np.array([[[1.0, 2.0]]]))
    array([[ 2.,  5.],
           [11., 14.]])
    """
    if method not in FORWARD_METHODS:
        raise ParameterError(
            f"xcorr: method must be one of {list(FORWARD_METHODS)}, got {method!r}"
        )
    x = _as_float(x)
    k = _as_float(k)
    if method == "jacobian":
        return forward_via_jacobian(x, k, geometry)
    plan = _plan_of_arrays(x, k, geometry)
    chosen = _choose(plan) if method == "auto" else method
    if chosen == "im2col" and _gathered(plan):
        return _gathered_im2col(x, k, plan)
    if chosen == "phase_shift":
        y4 = _phase_shift(_as4(x), _as4(k), plan)
    else:
        y4 = _KERNELS[chosen](_pad(_as4(x), plan), _as4(k), plan)
    return np.reshape(y4, plan.out_shape)


def forward_via_jacobian(
    x: FloatArray, k: FloatArray, geometry: XCorrGeometry = DEFAULT_GEOMETRY, order: Order = "F"
) -> FloatArray:
    """Compute ``x * k`` as ``ten(J^T vec(x))`` with the sparse Jacobian (method ``"jacobian"``).

    Parameters
    ----------
    x : ndarray, shape (C, H, W) or (N, C, H, W)
    k : ndarray, shape (C, kh, kw) or (K, C, kh, kw)
    geometry : XCorrGeometry
    order : {"F", "C"}
        The index order of ``vec``, ``ten`` and the Jacobian; the result does not depend on it.

    Returns
    -------
    ndarray of float64, shape ``output_shape(x.shape, k.shape, geometry)``

    Raises
    ------
    ShapeError
        As in :func:`output_shape`.
    ParameterError
        For an unknown order.

    Notes
    -----
    Seed notes, *Example*: since cross-correlation is linear in ``x``,
    ``x * k = ten(J^T vec(x))`` with ``J = d(x * k)/dx`` in the ``in_out`` layout.
    """
    x = _as_float(x)
    k = _as_float(k)
    plan = _plan(x.shape, k.shape, geometry)
    jacobian = jacobian_x(k, x.shape, geometry, order=order, layout="out_in")
    # out_in is J^T: (pqr, lmn) @ (lmn, 1) -> (pqr, 1); a 1-D operand would give SciPy's
    # scalar for a single-row matrix
    product = jacobian @ vec(x, order)[:, np.newaxis]
    return ten(np.asarray(product)[:, 0], plan.out_shape, order)
