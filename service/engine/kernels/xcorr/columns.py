"""Products, stride-1 positions and im2col columns shared by the forward and the transposes."""

from __future__ import annotations

import functools
from collections.abc import Iterator

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from ...cancel import checkpoint
from ...types import FloatArray, IndexArray
from .geometry import _Plan

# OpenBLAS runs a GEMM on the calling thread only while M*N*K stays below 2 * 65536 * 4 = 2**19
# (0.3.31's interface/gemm.c: two threads from 2 * SMP_THRESHOLD_MIN * GEMM_MULTITHREAD_THRESHOLD
# on; some shapes stayed on one thread up to 7e5 through its small-matrix path, but a (16, 16) @
# (16, 2048) block of exactly 2**19 used two), and it threads a matrix-vector product (a GEMM with
# M = 1) from about 3e4 elements on. On this 2-core machine a two-thread call waits for a
# scheduler tick whenever the other core is busy (another worker, another request): medians of
# the same call jumped from 0.04 ms to exactly 8.00 or 16.00 ms. So every product below goes
# through `_product`, in column blocks of fewer than 2**19 multiply-adds, which keeps it on the
# calling thread, in cache, and predictable under load. The service itself asks OpenBLAS for one
# thread (service/blas.py); the blocks keep these products on the calling thread for an operator
# who sets OPENBLAS_NUM_THREADS, and in cache for everyone.
GEMM_BLOCK = 2**19 - 1
# A matrix-vector product below this many multiply-adds stays on the calling thread (see
# GEMM_BLOCK) and skips _product's two-row GEMM, whose copies cost 10 of 13 us at (1,27)@(27,900).
MATVEC_ONE_THREAD = 25_000
# im2col columns up to this many elements are gathered at once (see _gathered).
GATHER_COLUMNS = 2**15
# Elements of the reused im2col buffer (2 MiB: stays in the L2/L3 caches).
COLUMN_BUFFER = 2**18


def _product(a: FloatArray, b: FloatArray, out: FloatArray) -> None:
    """``out = a @ b`` for ``a (M, c)`` and a stack ``b (..., c, P)``, on the calling thread.

    The columns are taken in blocks of at most ``GEMM_BLOCK`` multiply-adds. A single row is
    multiplied as two equal rows: a GEMM stays on one thread at this size, the matrix-vector
    product BLAS would otherwise use does not (see GEMM_BLOCK). Measured: as fast as that
    product when both cores are free; ``einsum``, the other one-thread route, took 5 ms instead
    of 0.15 ms for ``(1, 288) @ (288, 3844)``.
    """
    single = a.shape[0] == 1
    if single and a.shape[1] * b.shape[-1] < MATVEC_ONE_THREAD:
        # small enough for BLAS to keep the matrix-vector product on this thread
        np.matmul(a, b, out=out)
        return
    rows = np.concatenate([a, a]) if single else a
    block = max(1, GEMM_BLOCK // (rows.shape[0] * rows.shape[1]))
    for p0 in range(0, b.shape[-1], block):
        checkpoint()  # a block is at most GEMM_BLOCK multiply-adds: well under a millisecond
        p1 = min(b.shape[-1], p0 + block)
        if single:
            # (2, c) @ (..., c, p) -> (..., 2, p); both rows are equal
            np.copyto(out[..., p0:p1], np.matmul(rows, b[..., p0:p1])[..., :1, :])
        else:
            np.matmul(rows, b[..., p0:p1], out=out[..., p0:p1])


def _windows(x_p: FloatArray, plan: _Plan) -> FloatArray:
    """View the window each output reads: (N, C, hp, wp) -> (N, C, h_out, w_out, kh, kw)."""
    eh, ew = plan.d_h * (plan.kh - 1) + 1, plan.d_w * (plan.kw - 1) + 1
    return sliding_window_view(x_p, (eh, ew), axis=(2, 3))[
        :, :, :: plan.s_h, :: plan.s_w, :: plan.d_h, :: plan.d_w
    ]


def _gathered(plan: _Plan) -> bool:
    """Tell whether the columns are few enough to be gathered at once by a cached index.

    For a small image both shift methods pay a fixed ~0.04 ms of per-tap NumPy calls, and the
    6-D strided copy of :func:`_column_blocks` runs far below the bandwidth on short rows; one
    ``take`` fills the same columns (the same numbers in the same places: the GEMM and its
    result are those of the block copy). Measured, CPU ms, gathered im2col / gemm_shift / block
    im2col: (3,32,32) k3 (24,300 column entries) 0.032 / 0.050 / 0.041; (3,64,64) k3 (103,788)
    0.19 / 0.06 / 0.13: the gather loses from a few 10^4 entries on.
    """
    per_image = plan.C * plan.kh * plan.kw * plan.h_out * plan.w_out
    return plan.N * per_image <= GATHER_COLUMNS


@functools.lru_cache(maxsize=64)
def _gather_index(plan: _Plan) -> IndexArray:
    """Flat positions in one padded image of every column entry: (C*kh*kw, h_out*w_out).

    Row ``(c, h, w)``, column ``(i, j)`` holds ``x_p[c, s_h i + d_h h, s_w j + d_w w]``, the
    layout :func:`_column_blocks` copies with axes ``(0, 1, 4, 5, 2, 3)``. Read-only (cached).
    """
    _, C, hp, wp = plan.padded_shape
    c = np.arange(C)[:, None, None, None, None]
    h = np.arange(plan.kh)[None, :, None, None, None]
    w = np.arange(plan.kw)[None, None, :, None, None]
    i = np.arange(plan.h_out)[None, None, None, :, None]
    j = np.arange(plan.w_out)[None, None, None, None, :]
    # (C, kh, kw, h_out, w_out) -> (C*T, h_out*w_out)
    flat = c * (hp * wp) + (plan.s_h * i + plan.d_h * h) * wp + (plan.s_w * j + plan.d_w * w)
    index: IndexArray = np.reshape(flat, (C * plan.kh * plan.kw, plan.h_out * plan.w_out))
    index.flags.writeable = False
    return index


def _column_blocks(
    windows: FloatArray, plan: _Plan, axes: tuple[int, ...]
) -> Iterator[tuple[int, int, FloatArray]]:
    """Yield ``(i0, i1, cols)``: the windows of output rows ``i0:i1`` copied with ``axes`` order.

    One buffer of about COLUMN_BUFFER elements is reused for every block; a fresh multi-megabyte
    array per block cost more in page faults than the copy itself (3.8 ms against 0.1 ms).
    """
    per_row = plan.N * plan.C * plan.kh * plan.kw * plan.w_out
    rows = max(1, min(plan.h_out, COLUMN_BUFFER // per_row))
    buffer = np.empty(rows * per_row)
    for i0 in range(0, plan.h_out, rows):
        checkpoint()
        i1 = min(plan.h_out, i0 + rows)
        block = np.transpose(windows[:, :, i0:i1], axes)
        cols = np.reshape(buffer[: (i1 - i0) * per_row], block.shape)
        np.copyto(cols, block)
        yield i0, i1, cols


def _stride1_positions(plan: _Plan) -> tuple[int, int, int, list[int]]:
    """Return ``h1, w1, span, offsets``: the flat-position layout of the shift methods.

    ``x_p`` is flattened per image in C order over (H_padded, W_padded): stride-1 output
    position ``p = i * W_padded + j`` (``i < h1``, ``j < w1``) reads tap ``t = h * kw + w`` at
    ``p + offsets[t]``, ``offsets[t] = d_h h W_padded + d_w w``, a contiguous slice for every
    tap. ``span`` positions run from the first stride-1 output to the last; those with
    ``j >= w1`` are computed and dropped (the forward's ``_crop_stride1``) or
    read as zeros (the kernel VJP's cotangent pattern).
    """
    _, _, hp, wp = plan.padded_shape
    h1 = hp - plan.d_h * (plan.kh - 1)
    w1 = wp - plan.d_w * (plan.kw - 1)
    span = (h1 - 1) * wp + w1
    offsets = [plan.d_h * h * wp + plan.d_w * w for h in range(plan.kh) for w in range(plan.kw)]
    return h1, w1, span, offsets
