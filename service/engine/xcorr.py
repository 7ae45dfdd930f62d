"""Cross-correlation: shape rule, forward, sparse Jacobians, VJPs and structural sizes.

This module owns the seed notes' example (``seed-notes.md``, *Chain rule -> Example*): the
cross-correlation of a ``C x H x W`` image ``x`` with a ``C x H' x W'`` kernel ``k`` and its
Jacobian with respect to ``x``. Inside the math kernels the notes' symbols are used: ``x``, ``k``,
``C, H, W``, ``kh, kw`` for ``H', W'``, ``s_h, s_w`` for the strides and ``h_out, w_out`` for the
output size. The notes' definition is generalized in four ways that all reduce to it at the
defaults (stride 1, ``"valid"`` padding, dilation 1, one image, one kernel):

* zero padding ``x_p`` of ``x`` by ``pad_top, pad_bottom, pad_left, pad_right``;
* dilation ``d_h, d_w`` of the kernel taps;
* ``K`` kernels, stacked as ``k`` of shape ``(K, C, kh, kw)``;
* ``N`` images, stacked as ``x`` of shape ``(N, C, H, W)``.

With all four, for ``0 <= i < h_out`` and ``0 <= j < w_out``::

    y[n, kk, i, j] = sum_{c, h, w} x_p[n, c, s_h i + d_h h, s_w j + d_w w] k[kk, c, h, w]
    h_out = floor((H + pad_top + pad_bottom - d_h (kh - 1) - 1) / s_h) + 1

Internally every tensor is handled in its 4-D form ``x4 (N, C, H, W)``, ``k4 (K, C, kh, kw)``,
``y4 (N, K, h_out, w_out)`` with ``N = 1`` or ``K = 1`` when the axis is absent; a size-1 axis
changes no flat index in either order, so the 4-D Jacobian is the requested one.

Public surface: :class:`XCorrGeometry`, :func:`output_shape`, :func:`padding_pairs`,
:func:`choose_method`, :func:`cross_correlate`, :func:`forward_via_jacobian`, :func:`jacobian_x`
(and :func:`jacobian_x_csr`, the same matrix as CSR), :func:`jacobian_kernel`, :func:`nnz_x`,
:func:`nnz_kernel`, :func:`vjp_x`, :func:`vjp_kernel`.
The op is bilinear, so its JVP is the forward itself:
``jvp = cross_correlate(dx, k) + cross_correlate(x, dk)``.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import scipy.sparse as sp
from numpy.lib.stride_tricks import sliding_window_view

from .cancel import checkpoint
from .errors import ParameterError, ShapeError
from .layout import LAYOUTS, ORDERS, place_values, ten, ten_batch, vec, vec_batch
from .sparse import index_dtype as sparse_index_dtype
from .sparse import to_coo
from .types import FloatArray, IndexArray, Layout, Order, Shape

PaddingName = Literal["valid", "same", "full"]
PaddingPairs = tuple[tuple[int, int], tuple[int, int]]
Padding = PaddingName | PaddingPairs
Method = Literal["auto", "gemm_shift", "tap_gemm", "im2col", "jacobian"]

PADDING_NAMES: tuple[PaddingName, ...] = ("valid", "same", "full")
FORWARD_METHODS: tuple[Method, ...] = ("auto", "gemm_shift", "tap_gemm", "im2col", "jacobian")

# OpenBLAS runs a GEMM on the calling thread only while M*N*K stays below about 7e5 (measured
# here: 720 000 stayed on one thread, 830 000 used two), and it threads a matrix-vector product
# (a GEMM with M = 1) from about 3e4 elements on. On this 2-core machine a two-thread call waits
# for a scheduler tick whenever the other core is busy (another worker, another request): medians
# of the same call jumped from 0.04 ms to exactly 8.00 or 16.00 ms. So every product below goes
# through `_product`, in column blocks of at most GEMM_BLOCK multiply-adds, which keeps it on the
# calling thread, in cache, and predictable under load.
GEMM_BLOCK = 2**19
# A matrix-vector product below this many multiply-adds stays on the calling thread (see
# GEMM_BLOCK) and skips _product's two-row GEMM, whose copies cost 10 of 13 us at (1,27)@(27,900).
MATVEC_ONE_THREAD = 25_000
# im2col columns up to this many elements are gathered at once (see _gathered).
GATHER_COLUMNS = 2**15
# Elements of the reused im2col buffer (2 MiB: stays in the L2/L3 caches).
COLUMN_BUFFER = 2**18
# Target length of the contiguous inner loops that write Jacobian entries (see _build).
INNER_LOOP = 2048
# An in_out Jacobian with fewer entries than this is built as out_in and transposed. Its direct
# build writes one block per pair of row runs (25 for a 3x3 kernel without padding) at about
# 35 us of NumPy calls each, a fixed ~1 ms, while out_in is one block and SciPy's transpose
# costs a few ns per entry, until its scattered writes leave the caches. Measured, CPU ms,
# direct / out_in + transpose: (3,16,16) k3, 5,292 entries: 1.14 / 0.17; (3,32,32): 1.23 /
# 0.32; N=2 (3,40,40): 77,976: 1.28 / 0.33; (3,64,64): 103,788: 1.87 / 3.20; (3,224,224):
# 1,330,668: 2.10 / 8.92.
TRANSPOSE_BELOW = 65_536


# --------------------------------------------------------------------------------------------
# Geometry and the shape rule
# --------------------------------------------------------------------------------------------


def _int_pair(value: object, name: str, minimum: int) -> tuple[int, int]:
    """Return ``value`` as a pair of ints ``>= minimum`` or raise :class:`ParameterError`."""
    if not isinstance(value, Sequence) or isinstance(value, str) or len(value) != 2:
        raise ParameterError(f"xcorr: {name} must be a pair of integers, got {value!r}")
    items = tuple(value)
    if not all(isinstance(v, int | np.integer) and not isinstance(v, bool) for v in items):
        raise ParameterError(f"xcorr: {name} must be a pair of integers, got {value!r}")
    pair = (int(items[0]), int(items[1]))
    if min(pair) < minimum:
        raise ParameterError(f"xcorr: {name} must be >= {minimum}, got {list(pair)}")
    return pair


@dataclass(frozen=True)
class XCorrGeometry:
    """Stride, padding and dilation of a 2-D cross-correlation (cf. JAX ``ConvDimensionNumbers``).

    Parameters
    ----------
    stride : (int, int)
        ``(s_h, s_w) >= 1``.
    padding : {"valid", "same", "full"} or ((int, int), (int, int))
        ``"valid"``: none (the notes). ``"same"``: TF/JAX SAME, ``h_out = ceil(H / s_h)`` with
        total padding ``max((h_out - 1) s_h + (kh - 1) d_h + 1 - H, 0)``, the smaller half on top
        (left). ``"full"``: ``(kh - 1) d_h`` on each side (``(kw - 1) d_w`` left and right), so
        every partial overlap is an output. Explicit: ``((top, bottom), (left, right)) >= 0``.
    dilation : (int, int)
        ``(d_h, d_w) >= 1``: tap ``(h, w)`` reads ``x_p[., s_h i + d_h h, s_w j + d_w w]``.

    Raises
    ------
    ParameterError
        For a stride or dilation below 1, a negative padding, an unknown padding name, or a
        value that is not a pair of integers. The message prints the offending value.
    """

    stride: tuple[int, int] = (1, 1)
    padding: Padding = "valid"
    dilation: tuple[int, int] = (1, 1)

    def __post_init__(self) -> None:
        object.__setattr__(self, "stride", _int_pair(self.stride, "stride", 1))
        object.__setattr__(self, "dilation", _int_pair(self.dilation, "dilation", 1))
        padding: object = self.padding
        if isinstance(padding, str):
            if padding not in PADDING_NAMES:
                raise ParameterError(
                    f"xcorr: padding must be one of {list(PADDING_NAMES)} or "
                    f"((top, bottom), (left, right)), got {padding!r}"
                )
            return
        if not isinstance(padding, Sequence) or len(padding) != 2:
            raise ParameterError(
                f"xcorr: padding must be ((top, bottom), (left, right)), got {padding!r}"
            )
        pairs = (
            _int_pair(padding[0], "padding (top, bottom)", 0),
            _int_pair(padding[1], "padding (left, right)", 0),
        )
        object.__setattr__(self, "padding", pairs)


DEFAULT_GEOMETRY = XCorrGeometry()


@dataclass(frozen=True)
class _Plan:
    """Every size of one cross-correlation, checked and derived before any arithmetic."""

    x_shape: Shape
    k_shape: Shape
    out_shape: Shape
    N: int
    K: int
    C: int
    H: int
    W: int
    kh: int
    kw: int
    s_h: int
    s_w: int
    d_h: int
    d_w: int
    pad_top: int
    pad_bottom: int
    pad_left: int
    pad_right: int
    h_out: int
    w_out: int

    @property
    def x4_shape(self) -> Shape:
        return (self.N, self.C, self.H, self.W)

    @property
    def k4_shape(self) -> Shape:
        return (self.K, self.C, self.kh, self.kw)

    @property
    def y4_shape(self) -> Shape:
        return (self.N, self.K, self.h_out, self.w_out)

    @property
    def padded_shape(self) -> Shape:
        """``x_p``'s shape: (N, C, H_padded, W_padded)."""
        return (
            self.N,
            self.C,
            self.H + self.pad_top + self.pad_bottom,
            self.W + self.pad_left + self.pad_right,
        )

    @property
    def padded(self) -> bool:
        return any((self.pad_top, self.pad_bottom, self.pad_left, self.pad_right))


def _axis_padding(name: PaddingName, size: int, taps: int, s: int, d: int) -> tuple[int, int]:
    """Return the padding of one spatial axis for a named padding (``size`` H, ``taps`` kh)."""
    if name == "valid":
        return (0, 0)
    if name == "full":
        return ((taps - 1) * d, (taps - 1) * d)
    out = -(-size // s)  # ceil(size / s)
    total = max((out - 1) * s + (taps - 1) * d + 1 - size, 0)
    return (total // 2, total - total // 2)


def _plan(x_shape: Sequence[int], k_shape: Sequence[int], geometry: XCorrGeometry) -> _Plan:
    """Check ranks, channels and sizes and derive the output size: the shape rule."""
    return _cached_plan(tuple(int(v) for v in x_shape), tuple(int(v) for v in k_shape), geometry)


# The plan is a pure function of the shapes and the geometry; a small convolution spent a fifth
# of its time deriving it (0.01 of 0.05 ms for (3,32,32) k3).
@functools.lru_cache(maxsize=512)
def _cached_plan(xs: Shape, ks: Shape, geometry: XCorrGeometry) -> _Plan:
    if len(xs) not in (3, 4) or len(ks) not in (3, 4):
        raise ShapeError(
            f"xcorr: x must be (C, H, W) or (N, C, H, W) and the kernel (C, H', W') or "
            f"(K, C, H', W'); got x {list(xs)} and kernel {list(ks)}"
        )
    if min(xs) < 1 or min(ks) < 1:
        raise ShapeError(
            f"xcorr: every dimension must be >= 1; got x {list(xs)} and kernel {list(ks)}"
        )
    N, (C, H, W) = (xs[0], xs[1:]) if len(xs) == 4 else (1, xs)
    K, (ck, kh, kw) = (ks[0], ks[1:]) if len(ks) == 4 else (1, ks)
    if ck != C:
        raise ShapeError(
            f"xcorr: x {list(xs)} has C={C} channels but the kernel {list(ks)} has {ck}"
        )
    s_h, s_w = geometry.stride
    d_h, d_w = geometry.dilation
    if isinstance(geometry.padding, str):
        (pt, pb) = _axis_padding(geometry.padding, H, kh, s_h, d_h)
        (pl, pr) = _axis_padding(geometry.padding, W, kw, s_w, d_w)
    else:
        (pt, pb), (pl, pr) = geometry.padding
    hp, wp = H + pt + pb, W + pl + pr
    eh, ew = d_h * (kh - 1) + 1, d_w * (kw - 1) + 1
    if eh > hp or ew > wp:
        raise ShapeError(
            f"xcorr: the dilated kernel spans {eh}x{ew} (kernel {list(ks)}, dilation "
            f"{[d_h, d_w]}) but the padded image is {hp}x{wp} (x {list(xs)}, padding "
            f"{[[pt, pb], [pl, pr]]})"
        )
    h_out = (hp - eh) // s_h + 1
    w_out = (wp - ew) // s_w + 1
    out_shape = (*xs[:-3], *ks[:-3], h_out, w_out)
    return _Plan(
        xs,
        ks,
        out_shape,
        N,
        K,
        C,
        H,
        W,
        kh,
        kw,
        s_h,
        s_w,
        d_h,
        d_w,
        pt,
        pb,
        pl,
        pr,
        h_out,
        w_out,
    )


def output_shape(
    x_shape: Sequence[int], k_shape: Sequence[int], geometry: XCorrGeometry = DEFAULT_GEOMETRY
) -> Shape:
    """Return the shape of ``cross_correlate(x, k, geometry)`` without computing anything.

    Parameters
    ----------
    x_shape : sequence of int
        ``(C, H, W)`` or ``(N, C, H, W)``.
    k_shape : sequence of int
        ``(C, kh, kw)`` or ``(K, C, kh, kw)``.
    geometry : XCorrGeometry

    Returns
    -------
    tuple of int
        ``(h_out, w_out)``, ``(K, h_out, w_out)``, ``(N, h_out, w_out)`` or
        ``(N, K, h_out, w_out)``, with
        ``h_out = floor((H_padded - d_h (kh - 1) - 1) / s_h) + 1`` (and ``w_out`` alike).

    Raises
    ------
    ShapeError
        For a wrong rank, a dimension below 1, a channel mismatch, or a dilated kernel larger
        than the padded image. The message prints both shapes.

    Notes
    -----
    At the defaults this is the notes' ``floor((H - H') / s_H + 1) x floor((W - W') / s_W + 1)``.

    Examples
    --------
    >>> output_shape((3, 224, 224), (3, 3, 3))
    (222, 222)
    >>> output_shape((2, 3, 7, 7), (8, 3, 3, 3), XCorrGeometry(stride=(2, 2), padding="same"))
    (2, 8, 4, 4)
    """
    return _plan(x_shape, k_shape, geometry).out_shape


def workspace_elements(
    x_shape: Sequence[int], k_shape: Sequence[int], geometry: XCorrGeometry = DEFAULT_GEOMETRY
) -> int:
    """Return the elements of the largest temporary array: the zero-padded image(s).

    Padding is materialized (``x_p``; its adjoint ``grad_p`` in the VJPs), so a large padding or
    dilation with a large stride needs far more memory than the input or the output. Callers
    bound it before computing.

    Parameters
    ----------
    x_shape, k_shape : sequence of int
        As in :func:`output_shape`.
    geometry : XCorrGeometry

    Returns
    -------
    int
        ``N * C * H_padded * W_padded``, as a Python int (no overflow).
    """
    return math.prod(_plan(x_shape, k_shape, geometry).padded_shape)


def padding_pairs(
    x_shape: Sequence[int], k_shape: Sequence[int], geometry: XCorrGeometry = DEFAULT_GEOMETRY
) -> PaddingPairs:
    """Return the explicit ``((top, bottom), (left, right))`` padding a geometry resolves to.

    Parameters
    ----------
    x_shape, k_shape : sequence of int
        As in :func:`output_shape`.
    geometry : XCorrGeometry

    Returns
    -------
    ((int, int), (int, int))

    Raises
    ------
    ShapeError
        As in :func:`output_shape`.
    """
    plan = _plan(x_shape, k_shape, geometry)
    return ((plan.pad_top, plan.pad_bottom), (plan.pad_left, plan.pad_right))


def _as_float(a: object) -> FloatArray:
    return np.asarray(a, dtype=np.float64)


def _as4(a: FloatArray) -> FloatArray:
    """View ``x`` as ``(N, C, H, W)`` or ``k`` as ``(K, C, kh, kw)`` (a size-1 axis added)."""
    return a if a.ndim == 4 else a[np.newaxis]


def _pad(x4: FloatArray, plan: _Plan) -> FloatArray:
    """Return ``x_p``: ``x4`` zero-padded, C-contiguous, shape (N, C, H_padded, W_padded)."""
    if not plan.padded:
        return np.ascontiguousarray(x4)
    x_p = np.zeros(plan.padded_shape)
    x_p[:, :, plan.pad_top : plan.pad_top + plan.H, plan.pad_left : plan.pad_left + plan.W] = x4
    return x_p


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


# --------------------------------------------------------------------------------------------
# Forward
# --------------------------------------------------------------------------------------------
#
# Method selection, measured on this machine (2 cores, float64, every GEMM on one thread).
# Medians in ms from `benchmarks/xcorr.py --methods` (other work on the machine, load ~1;
# per-channel scipy.signal.correlate for scale):
#
#   case                       gemm_shift  tap_gemm  im2col   scipy   auto
#   (3,32,32) k3                    0.031     0.069   0.046    0.29   gemm_shift
#   (3,224,224) k3 s1               0.23      0.46    0.51     2.3    gemm_shift
#   (3,224,224) k3 s2               0.22      0.47    0.22     2.3    im2col
#   (16,128,128) k5                 0.48      1.5     2.0      4.9    gemm_shift
#   K=16 (16,128,128) k3            4.0       2.3     2.1     78      im2col
#   N=32 (3,64,64) K=8 k3          15.6       4.8     2.7    106      im2col
#
# and on a grid of K in {1..32} x C in {1..32} (k 3 and 5, H 32..128, N 1 and 8), where the
# method these rules pick was the fastest or within 20% of it:
#
# * stride > 1 -> im2col: it copies only the windows that are outputs, while both shift methods
#   compute every stride-1 position and keep one in s_h * s_w (up to 3x slower at stride 2;
#   a tie for one kernel on 3 channels).
# * C == 1 -> im2col: the shift methods' GEMMs would have inner dimension 1 (1.5-35x slower).
# * K == 1 or 4 K <= C -> gemm_shift: contracting the C channels once leaves K*kh*kw planes for
#   the shifted adds, the least memory traffic when kernels are few next to channels (up to
#   2.5x faster than the others; a tie with tap_gemm at 4 K = C).
# * K >= C or C < 4 -> im2col: its single GEMM has inner dimension C*kh*kw, while tap_gemm's
#   per-tap GEMMs have inner dimension C and are memory-bound when C is below K or tiny
#   (1.1-3x faster than tap_gemm).
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
    if plan.s_h > 1 or plan.s_w > 1 or plan.C == 1 or _gathered(plan):
        return "im2col"
    if plan.K == 1 or 4 * plan.K <= plan.C:
        return "gemm_shift"
    if plan.K >= plan.C or plan.C < 4:
        return "im2col"
    return "tap_gemm"


def _stride1_positions(plan: _Plan) -> tuple[int, int, int, list[int]]:
    """Return ``h1, w1, span, offsets``: the flat-position layout of both shift methods.

    ``x_p`` is flattened per image in C order over (H_padded, W_padded): stride-1 output
    position ``p = i * W_padded + j`` (``i < h1``, ``j < w1``) reads tap ``t = h * kw + w`` at
    ``p + offsets[t]``, ``offsets[t] = d_h h W_padded + d_w w``, a contiguous slice for every
    tap. ``span`` positions run from the first stride-1 output to the last; those with
    ``j >= w1`` are computed and dropped by :func:`_crop_stride1`.
    """
    _, _, hp, wp = plan.padded_shape
    h1 = hp - plan.d_h * (plan.kh - 1)
    w1 = wp - plan.d_w * (plan.kw - 1)
    span = (h1 - 1) * wp + w1
    offsets = [plan.d_h * h * wp + plan.d_w * w for h in range(plan.kh) for w in range(plan.kw)]
    return h1, w1, span, offsets


def _gemm_shift(x_p: FloatArray, k4: FloatArray, plan: _Plan) -> FloatArray:
    """Contract the channels first, then add the ``kh * kw`` shifted planes of the product.

    Positions as in :func:`_stride1_positions`. They go in blocks, each with the planes of its
    block plus the largest tap offset, so the planes stay cache-sized instead of
    ``K * kh * kw`` times the image.
    """
    N, C, _, wp = x_p.shape
    K, T = plan.K, plan.kh * plan.kw
    h1, w1, span, offsets = _stride1_positions(plan)
    halo = offsets[-1]
    # at least 4 halos per block, so recomputed halo planes cost at most a quarter more
    block = min(span, max(4 * halo, COLUMN_BUFFER // (N * K * T), 64))
    # (N, C, hp, wp) -> (N, C, hp*wp)
    xf = vec_batch(x_p, 2, "C")
    # (K, C, kh, kw) -> (K*T, C): row kk*T + t holds k[kk, :, h, w] for tap t = h*kw + w
    k_taps = np.reshape(np.transpose(k4, (0, 2, 3, 1)), (K * T, C))
    planes = np.empty((N, K * T, block + halo))
    # (N, K*T, block + halo) -> (N, K, T, block + halo)
    planes4 = np.reshape(planes, (N, K, T, block + halo))
    out = np.empty((N, K, h1 * wp))
    for p0 in range(0, span, block):
        p1 = min(span, p0 + block)
        width = p1 - p0 + halo
        # (K*T, C) @ (N, C, width) -> (N, K*T, width)
        _product(k_taps, xf[:, :, p0 : p0 + width], planes[:, :, :width])
        acc = out[:, :, p0:p1]
        for t, offset in enumerate(offsets):
            if t == 0:
                np.copyto(acc, planes4[:, :, t, offset : offset + p1 - p0])
            else:
                acc += planes4[:, :, t, offset : offset + p1 - p0]
    return _crop_stride1(out, plan, h1, w1, wp)


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
    # blocks of about COLUMN_BUFFER elements of all images' inputs or outputs, but at least 4096
    # positions: with 64 the per-call overhead made (3,224,224) k3 2.5x slower
    block = max(4096, COLUMN_BUFFER // (N * max(K, C)))
    tmp = np.empty((N, K, min(block, span)))
    for p0 in range(0, span, block):
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


def _im2col(x_p: FloatArray, k4: FloatArray, plan: _Plan) -> FloatArray:
    """Copy the windows of a block of output rows into columns, then one GEMM per block."""
    N, C = plan.N, plan.C
    K, T = plan.K, plan.kh * plan.kw
    # (K, C, kh, kw) -> (K, C*T)
    k_rows = np.reshape(k4, (K, C * T))
    w_out = plan.w_out
    out = np.empty((N, K, plan.h_out * w_out))
    if _gathered(plan):
        # (N, C*hp*wp)[:, index] -> (N, C*T, h_out*w_out): every column at once (one image: a
        # flat take, twice as fast as one along an axis)
        index = _gather_index(plan)
        if N == 1:
            columns = np.take(vec(x_p, "C"), index)[np.newaxis]
        else:
            columns = np.take(np.reshape(x_p, (N, -1)), index, axis=1)
        _product(k_rows, columns, out)
        return ten_batch(out, (plan.h_out, w_out), "C")
    windows = _windows(x_p, plan)
    for i0, i1, cols in _column_blocks(windows, plan, (0, 1, 4, 5, 2, 3)):
        # (K, C*T) @ (N, C*T, rows*w_out) -> (N, K, rows*w_out)
        columns = np.reshape(cols, (N, C * T, (i1 - i0) * w_out))
        _product(k_rows, columns, out[:, :, i0 * w_out : i1 * w_out])
    # (N, K, h_out*w_out) -> (N, K, h_out, w_out)
    return ten_batch(out, (plan.h_out, w_out), "C")


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
    plan = _plan(x.shape, k.shape, geometry)
    chosen = _choose(plan) if method == "auto" else method
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


# --------------------------------------------------------------------------------------------
# Sparse Jacobians
# --------------------------------------------------------------------------------------------
#
# Both Jacobians pair each spatial axis of their row tensor with one of their column tensor
# through r = s i + d h - pad (r: image row, i: output row, h: tap row):
#
#   matrix             rows              cols              pairs (row side -> partner)  value
#   J_x  in_out        x  (N, C, H, W)   y (N, K, ho, wo)  r -> i (tap h)           k[kk, c, h, w]
#   J_x  out_in        y  (N, K, ho, wo) x (N, C, H, W)    i -> r (tap h)           k[kk, c, h, w]
#   J_k  in_out        k  (K, C, kh, kw) y (N, K, ho, wo)  h -> i (image row r)     x[n, c, r, q]
#   J_k  out_in        y  (N, K, ho, wo) k (K, C, kh, kw)  i -> h (image row r)     x[n, c, r, q]
#
# One non-spatial axis is shared by row and column (n for J_x, kk for J_k), one belongs to the
# rows only and one to the columns only. For one spatial axis the (row, partner) pairs are a
# short list (at most h_out * kh); rows with the same pattern of partners, shifted by a constant,
# form a "run" (all interior rows of one stride residue, or a single border row). For one run of
# each spatial axis, every entry's position in the canonical (row, col) order, its column index
# and its value are affine in (or gathered along) the run counters, so the whole block is written
# through strided views with broadcast index arithmetic; the row indices follow from the pair
# counts as a CSR indptr that SciPy expands. Entries come out sorted and are never sorted.


@dataclass(slots=True)
class _Run:
    """Rows ``a0 + q * step`` (``q < count``) of one spatial axis sharing one partner pattern.

    Row ``a0 + q * step`` pairs with the partners ``partner + q * partner_step`` (ascending) and
    the auxiliary coordinates ``aux + q * aux_step``; ``before + q * before_step`` pairs of the
    axis belong to smaller rows. Mutable only while :func:`_axis_pattern` grows it.
    """

    a0: int
    step: int
    count: int
    partner: list[int]
    partner_step: int
    aux: list[int]
    aux_step: int
    before: int
    before_step: int


@dataclass(frozen=True)
class _AxisPattern:
    """The (row, partner, aux) pairs of one spatial axis: pairs per row, total, and runs."""

    counts: IndexArray
    total: int
    runs: tuple[_Run, ...]


@functools.lru_cache(maxsize=256)
def _axis_pattern(
    roles: tuple[str, str], size: int, taps: int, out: int, s: int, d: int, pad: int, step: int
) -> _AxisPattern:
    """Group the valid triples ``r = s i + d h - pad`` of one spatial axis into runs.

    ``roles`` names the row and the partner coordinate among ``"r"`` (``0 <= r < size``),
    ``"i"`` (``0 <= i < out``) and ``"h"`` (``0 <= h < taps``); the third is the auxiliary one.
    Rows ``a`` and ``a + step`` share a run when their partners and auxiliaries are shifted by
    the run's constants and the pairs below them grow by a constant.

    A pure function of integers, cached: its Python loop over the ``size`` rows cost 0.45 ms for
    a 224-row axis, a fifth of building that image's whole Jacobian, and a service sees the same
    geometries again and again. Callers must not modify the result (``counts`` is read-only).
    """
    i = np.arange(out)[:, np.newaxis]
    h = np.arange(taps)[np.newaxis, :]
    # (out, 1), (1, taps) -> (out, taps)
    r = s * i + d * h - pad
    valid = (r >= 0) & (r < size)
    coords = {
        "r": r[valid],
        "i": np.broadcast_to(i, r.shape)[valid],
        "h": np.broadcast_to(h, r.shape)[valid],
    }
    row_role, partner_role = roles
    aux_role = ({"r", "i", "h"} - set(roles)).pop()
    by_row = np.lexsort((coords[partner_role], coords[row_role]))
    partner = coords[partner_role][by_row].tolist()
    aux = coords[aux_role][by_row].tolist()
    counts = np.bincount(coords[row_role], minlength={"r": size, "i": out, "h": taps}[row_role])

    runs: list[_Run] = []
    waiting: dict[int, _Run] = {}  # next row a run expects -> that run
    start = 0
    for a, count in enumerate(counts.tolist()):
        if count == 0:
            continue
        stop = start + count
        partners, auxes = partner[start:stop], aux[start:stop]
        run = waiting.pop(a, None)
        if run is not None and _continues(run, partners, auxes, start):
            if run.count == 1:
                run.partner_step = partners[0] - run.partner[0]
                run.aux_step = auxes[0] - run.aux[0]
                run.before_step = start - run.before
            run.count += 1
        else:
            if run is not None:
                runs.append(run)
            run = _Run(a, step, 1, partners, 0, auxes, 0, start, 0)
        waiting[a + step] = run
        start = stop
    runs.extend(waiting.values())
    counts.flags.writeable = False
    return _AxisPattern(counts, start, tuple(runs))


def _continues(run: _Run, partners: list[int], auxes: list[int], before: int) -> bool:
    """Tell whether a row with these pairs, ``before`` pairs above it, is the next run member."""
    if len(partners) != len(run.partner):
        return False
    q = run.count
    if q == 1:
        dp, da = partners[0] - run.partner[0], auxes[0] - run.aux[0]
    else:
        dp, da = run.partner_step, run.aux_step
        if before != run.before + q * run.before_step:
            return False
    return partners == [p + q * dp for p in run.partner] and auxes == [v + q * da for v in run.aux]


def _aux_index(run: _Run) -> IndexArray:
    """Auxiliary coordinates of a run, shape (count, len), or (1, len) when they do not move."""
    q = np.arange(run.count if run.aux_step else 1)[:, np.newaxis]
    # (Q, 1) + (1, len) -> (Q, len)
    index: IndexArray = np.asarray(run.aux)[np.newaxis, :] + q * run.aux_step
    return index


# The seven axes of one block of entries: "S" the shared axis, "U" the row-only axis, "Qh"/"Qw"
# the run counters of the row's spatial coordinates, "V" the column-only axis, "Ih"/"Jw" the rank
# in the partner list of the row's h / w coordinate. A value source returns the values of a block
# aligned to the block's axis order (size 1 along the axes they do not depend on).
_ValueSource = Callable[[_Run, _Run, Sequence[str]], FloatArray]


@dataclass(frozen=True)
class _Pairing:
    """One row of the table above: the row and column tensors and their spatial pairing."""

    row_shape: Shape  # (non-spatial, non-spatial, spatial h, spatial w)
    col_shape: Shape
    row_shared: int  # position (0 or 1) of the shared axis among the row's non-spatial axes
    col_shared: int
    pattern_h: _AxisPattern
    pattern_w: _AxisPattern


def _significance(weights: dict[str, int], order: Order) -> list[str]:
    """Axis names from the most to the least significant in a flat index of ``order``.

    Equal weights only occur next to a size-1 axis, whose place does not matter; ties follow
    the order's own axis ranking so the result is deterministic.
    """
    names = list(weights)
    rank = {name: (place if order == "C" else -place) for place, name in enumerate(names)}
    return sorted(names, key=lambda name: (-weights[name], rank[name]))


def _align(values: np.ndarray, axes: Sequence[str], block: Sequence[str]) -> np.ndarray:
    """Transpose and expand ``values`` (axes named ``axes``) to broadcast against ``block``."""
    ordered = sorted(range(len(axes)), key=lambda a: block.index(axes[a]))
    moved = np.transpose(values, ordered)
    sizes = dict(zip([axes[a] for a in ordered], moved.shape, strict=True))
    return np.reshape(moved, tuple(sizes.get(name, 1) for name in block))


def _along(vector: np.ndarray, axis: int, ndim: int) -> np.ndarray:
    """Reshape a 1-D ``vector`` to lie along ``axis`` of ``ndim`` axes (size 1 elsewhere)."""
    shape = [1] * ndim
    shape[axis] = vector.shape[0]
    return np.reshape(vector, shape)


def _run_terms(run: _Run, weight: int, dtype: type) -> tuple[np.ndarray, np.ndarray]:
    """Column-index terms of a run: ``q * partner_step * weight`` and ``partner * weight``."""
    return (
        np.arange(run.count, dtype=dtype) * (run.partner_step * weight),
        np.asarray(run.partner, dtype=dtype) * weight,
    )


def _strided(
    target: np.ndarray, base: int, shape: Sequence[int], strides: Sequence[int]
) -> np.ndarray:
    """Return a writable view of ``target[base:]``; ``shape`` and ``strides`` count elements.

    The caller has checked that the view stays inside ``target`` (cf. ``as_strided``, whose
    per-call overhead was a tenth of a block's time for small blocks).
    """
    step = target.itemsize
    view: np.ndarray = np.ndarray(
        tuple(shape),
        target.dtype,
        buffer=target,
        offset=base * step,
        strides=tuple(step * t for t in strides),
    )
    return view


def _build(pairing: _Pairing, order: Order, values: _ValueSource, zeros: bool) -> sp.csr_array:
    """Write all entries of a paired Jacobian in canonical (row, col) order, block by block.

    The column indices and values are written into CSR arrays whose ``indptr`` follows from the
    pair counts (:func:`to_coo` then expands the row indices in O(nnz) compiled code). ``zeros``
    says whether the values may contain exact zeros, which are then dropped.
    """
    row_shape, col_shape = pairing.row_shape, pairing.col_shape
    p_h, p_w = pairing.pattern_h, pairing.pattern_w
    S, U = row_shape[pairing.row_shared], row_shape[1 - pairing.row_shared]
    V = col_shape[1 - pairing.col_shared]
    nnz = S * U * V * p_h.total * p_w.total
    shape = (math.prod(row_shape), math.prod(col_shape))
    index_dtype = sparse_index_dtype(shape, nnz)
    col_out = np.empty(nnz, dtype=index_dtype)
    data_out = np.empty(nnz)

    # Flat-index weight of each named axis: the notes' flat (order F) or its C analogue.
    rw = [int(v) for v in place_values(row_shape, order)]
    cw = [int(v) for v in place_values(col_shape, order)]
    shared_r, shared_c = pairing.row_shared, pairing.col_shared
    row_weight = {"S": rw[shared_r], "U": rw[1 - shared_r], "h": rw[2], "w": rw[3]}
    col_weight = {"V": cw[1 - shared_c], "h": cw[2], "w": cw[3]}
    row_levels = _significance(row_weight, order)
    col_levels = _significance(col_weight, order)
    row_names = {"S": "S", "U": "U", "h": "Qh", "w": "Qw"}
    col_names = {"V": "V", "h": "Ih", "w": "Jw"}
    block = [row_names[a] for a in row_levels] + [col_names[a] for a in col_levels]
    regular = {"S": S, "U": U}
    totals = {"h": p_h.total, "w": p_w.total}

    # Column-index terms that do not depend on the block (every term is one component of a
    # valid index, so it fits the index dtype); a size-1 axis contributes nothing.
    fixed_terms = {
        name: np.arange(size, dtype=index_dtype) * weight
        for name, size, weight in (("S", S, cw[shared_c]), ("V", V, col_weight["V"]))
        if size > 1
    }
    for run_h in p_h.runs:
        checkpoint()
        qh_term, ih_term = _run_terms(run_h, col_weight["h"], index_dtype)
        for run_w in p_w.runs:
            qw_term, jw_term = _run_terms(run_w, col_weight["w"], index_dtype)
            runs = {"h": run_h, "w": run_w}
            lengths = {"h": len(run_h.partner), "w": len(run_w.partner)}
            # Position = (entries in all smaller rows) + (rank inside the row). Walking the row
            # axes from the most significant, one unit of an axis skips `rest` entries: the
            # column-only axis, times every less significant row axis in full (a spatial one by
            # its total pair count), times the partner count of the more significant spatial
            # axes (fixed by then). A spatial axis at run counter q skips
            # before + q * before_step of its pairs.
            base = 0
            strides: dict[str, int] = {}
            for level, axis in enumerate(row_levels):
                rest = V
                for other in row_levels[level + 1 :]:
                    rest *= totals[other] if other in runs else regular[other]
                for other in row_levels[:level]:
                    rest *= lengths[other] if other in runs else 1
                if axis in runs:
                    base += runs[axis].before * rest
                    strides[row_names[axis]] = runs[axis].before_step * rest
                else:
                    strides[axis] = rest
            unit = 1
            for axis in reversed(col_levels):
                strides[col_names[axis]] = unit
                unit *= lengths[axis] if axis in runs else V
            sizes = {
                "S": S,
                "U": U,
                "Qh": run_h.count,
                "Qw": run_w.count,
                "V": V,
                "Ih": lengths["h"],
                "Jw": lengths["w"],
            }
            block_shape = [sizes[name] for name in block]
            block_strides = [strides[name] for name in block]
            last = base + sum((n - 1) * t for n, t in zip(block_shape, block_strides, strict=True))
            assert 0 <= base and last < nnz, "xcorr: a Jacobian block overruns its arrays"
            # A suffix of block axes that is contiguous in the arrays and about INNER_LOOP long
            # becomes one inner loop over a precomputed template; the prefix axes index where
            # each copy of it starts. (Broadcast writes straight into the 7-D view ran at a
            # third of the copy bandwidth: their inner loops were only kh * kw long.)
            split, extent = len(block), 1
            while (
                split
                and extent < INNER_LOOP
                and (block_shape[split - 1] == 1 or block_strides[split - 1] == extent)
            ):
                split -= 1
                extent *= block_shape[split]
            prefix, suffix = block[:split], block[split:]
            prefix_shape, suffix_shape = block_shape[:split], block_shape[split:]
            prefix_strides = block_strides[:split]

            # col index = sum of one term per axis; b = partner[I] + q * partner_step
            terms = {**fixed_terms, "Qh": qh_term, "Qw": qw_term, "Ih": ih_term, "Jw": jw_term}
            start: np.ndarray = np.zeros(prefix_shape, dtype=index_dtype)
            template: np.ndarray = np.zeros(suffix_shape, dtype=index_dtype)
            for name, term in terms.items():
                if name in prefix:
                    start = start + _along(term, block.index(name), split)
                else:
                    template = template + _along(term, block.index(name) - split, len(suffix))
            # (prefix..., 1) + (extent,) -> (prefix..., extent)
            np.add(
                start[..., np.newaxis],
                vec(template, "C"),
                out=_strided(col_out, base, [*prefix_shape, extent], [*prefix_strides, 1]),
            )

            block_values = values(run_h, run_w, block)
            if all(n == 1 for n in block_values.shape[:split]):
                # values vary along the suffix only: write one template per prefix index
                pattern = np.broadcast_to(block_values[(0,) * split], suffix_shape)
                np.copyto(
                    _strided(data_out, base, [*prefix_shape, extent], [*prefix_strides, 1]),
                    vec(pattern, "C"),
                )
            else:
                np.copyto(_strided(data_out, base, block_shape, block_strides), block_values)

    # pairs of the row tensor's element (a0, a1, a_h, a_w): V * counts_h[a_h] * counts_w[a_w]
    # (in the index dtype throughout: a casting cumsum ran 3x slower)
    counts_h, counts_w = p_h.counts.astype(index_dtype), p_w.counts.astype(index_dtype)
    per_row = V * counts_h[:, np.newaxis] * counts_w[np.newaxis, :]
    per_row4 = np.broadcast_to(per_row, row_shape)
    indptr = np.zeros(shape[0] + 1, dtype=index_dtype)
    np.cumsum(vec(per_row4, order), out=indptr[1:])
    matrix = sp.csr_array((data_out, col_out, indptr), shape=shape)
    # Sorted and duplicate-free by construction; saying so spares SciPy an O(nnz) check.
    matrix.has_canonical_format = True
    if zeros:
        matrix.eliminate_zeros()
    return matrix


def _check_order_layout(order: str, layout: str) -> None:
    if order not in ORDERS:
        raise ParameterError(f"xcorr: order must be 'F' or 'C', got {order!r}")
    if layout not in LAYOUTS:
        raise ParameterError(f"xcorr: layout must be 'in_out' or 'out_in', got {layout!r}")


def _pairing(plan: _Plan, wrt: Literal["x", "k"], layout: Layout) -> _Pairing:
    """Return the row of the table above for the Jacobian w.r.t. ``wrt`` in ``layout``."""
    image, kernel, output = plan.x4_shape, plan.k4_shape, plan.y4_shape
    if wrt == "x":
        # rows/cols: x (N, C, H, W) and y (N, K, ho, wo), n shared; r <-> i, aux h
        in_shape, in_shared, in_role, out_shared, step = image, 0, "r", 0, plan.s_h
    else:
        # rows/cols: k (K, C, kh, kw) and y (N, K, ho, wo), kk shared; h <-> i, aux r
        in_shape, in_shared, in_role, out_shared, step = kernel, 0, "h", 1, 1
    if layout == "in_out":
        roles = (in_role, "i")
        shapes, shared = (in_shape, output), (in_shared, out_shared)
    else:
        roles, step = ("i", in_role), 1
        shapes, shared = (output, in_shape), (out_shared, in_shared)
    step_w = plan.s_w if (wrt == "x" and layout == "in_out") else 1
    pattern_h = _axis_pattern(
        roles, plan.H, plan.kh, plan.h_out, plan.s_h, plan.d_h, plan.pad_top, step
    )
    pattern_w = _axis_pattern(
        roles, plan.W, plan.kw, plan.w_out, plan.s_w, plan.d_w, plan.pad_left, step_w
    )
    return _Pairing(shapes[0], shapes[1], shared[0], shared[1], pattern_h, pattern_w)


def _paired_jacobian(
    plan: _Plan, wrt: Literal["x", "k"], other4: FloatArray, order: Order, layout: Layout
) -> sp.csr_array:
    """Build the Jacobian w.r.t. ``wrt`` (a row of the table above) from the other operand.

    The op is bilinear, so every entry of one Jacobian is an entry of the other operand
    ``other4``: ``k4 (K, C, kh, kw)`` at tap ``(h, w)`` for ``J_x``, ``x4 (N, C, H, W)`` at
    pixel ``(r, q)`` for ``J_k``. Either way its axis 0 (``kk`` or ``n``) is the non-shared
    axis of the output, its axis 1 is ``c``, and axes 2 and 3 are the auxiliary coordinates
    of the runs.
    """
    if layout == "in_out" and _structural_nnz(plan) < TRANSPOSE_BELOW:
        return _transposed(_paired_jacobian(plan, wrt, other4, order, "out_in"))
    # in_out: axis 0 belongs to the columns only and c to the rows only; out_in swaps them
    first_axis, c_axis = ("V", "U") if layout == "in_out" else ("U", "V")

    def values(run_h: _Run, run_w: _Run, block: Sequence[str]) -> FloatArray:
        # (A, C, P, Q) -> (A, C, Qh, Ih, Q) -> (A, C, Qh, Ih, Qw, Jw): the entry of each pair
        picked = np.take(np.take(other4, _aux_index(run_h), axis=2), _aux_index(run_w), axis=4)
        return _align(picked, [first_axis, c_axis, "Qh", "Ih", "Qw", "Jw"], block)

    return _build(_pairing(plan, wrt, layout), order, values, zeros=not np.all(other4))


def _transposed(matrix: sp.csr_array) -> sp.csr_array:
    """Return the canonical CSR of ``matrix.T`` (SciPy's compiled CSR -> CSC pass).

    The pass visits rows in order, so every column's entries come out sorted; the values are the
    same numbers, moved. Indices keep the type the direct build would give them.
    """
    result = matrix.T.tocsr()
    dtype = sparse_index_dtype(result.shape, result.nnz)
    result.indices = result.indices.astype(dtype, copy=False)
    result.indptr = result.indptr.astype(dtype, copy=False)
    result.has_canonical_format = True
    return result


def jacobian_x(
    k: FloatArray,
    x_shape: Sequence[int],
    geometry: XCorrGeometry = DEFAULT_GEOMETRY,
    order: Order = "F",
    layout: Layout = "in_out",
) -> sp.coo_array:
    """Return the Jacobian of ``x * k`` with respect to ``x`` as a canonical COO array.

    Parameters
    ----------
    k : ndarray, shape (C, kh, kw) or (K, C, kh, kw)
    x_shape : sequence of int
        ``(C, H, W)`` or ``(N, C, H, W)``; the Jacobian does not depend on the values of ``x``.
    geometry : XCorrGeometry
    order : {"F", "C"}
        Index order of every row and column index (``"F"``: the notes' ``flat``).
    layout : {"in_out", "out_in"}
        ``"in_out"`` (the notes): rows index ``x``, columns the output. ``"out_in"``: the
        transpose, in its own canonical order (cheaper: no transposition is performed).

    Returns
    -------
    scipy.sparse.coo_array, shape (size(x), size(y)), or (size(y), size(x)) for ``out_in``
        Entry ``[flat_x(n, c, s_h i + d_h h - pad_top, s_w j + d_w w - pad_left),
        flat_y(n, kk, i, j)] = k[kk, c, h, w]`` (``in_out``); taps that land in the padding have
        no entry. Canonical: sorted by (row, col), no duplicates, exact zeros of ``k`` dropped.
        Indices are int32 when the shape allows, int64 otherwise.

    Raises
    ------
    ShapeError
        As in :func:`output_shape`.
    ParameterError
        For an unknown order or layout.

    Notes
    -----
    Seed notes, *Example*: rows ``flat_{C,H,W}(c, s_H i + h, s_W j + w)`` of column
    ``flat(i, j)`` hold ``k[c, h, w]``; all other rows are zero. With ``N`` images the matrix is
    block diagonal over ``n`` (interleaved by the index order). The entries are generated
    already sorted; nothing is sorted. The number of entries before zeros are dropped is
    :func:`nnz_x`.

    Examples
    --------
    >>> jacobian_x(np.array([[[1.0, 2.0]]]), (1, 2, 3)).toarray()
    array([[1., 0., 0., 0.],
           [0., 1., 0., 0.],
           [2., 0., 1., 0.],
           [0., 2., 0., 1.],
           [0., 0., 2., 0.],
           [0., 0., 0., 2.]])
    """
    return to_coo(jacobian_x_csr(k, x_shape, geometry, order, layout))


def jacobian_x_csr(
    k: FloatArray,
    x_shape: Sequence[int],
    geometry: XCorrGeometry = DEFAULT_GEOMETRY,
    order: Order = "F",
    layout: Layout = "in_out",
) -> sp.csr_array:
    """Return :func:`jacobian_x` as the canonical CSR array it is built as.

    Same parameters, matrix and errors as :func:`jacobian_x`. A sparse product takes CSR, so the
    chain rule starts from this one and skips expanding ``nnz`` row indices.
    """
    _check_order_layout(order, layout)
    k = _as_float(k)
    plan = _plan(x_shape, k.shape, geometry)
    return _paired_jacobian(plan, "x", _as4(k), order, layout)


def jacobian_kernel(
    x: FloatArray,
    k_shape: Sequence[int],
    geometry: XCorrGeometry = DEFAULT_GEOMETRY,
    order: Order = "F",
    layout: Layout = "in_out",
) -> sp.coo_array:
    """Return the Jacobian of ``x * k`` with respect to ``k`` as a canonical COO array.

    Parameters
    ----------
    x : ndarray, shape (C, H, W) or (N, C, H, W)
    k_shape : sequence of int
        ``(C, kh, kw)`` or ``(K, C, kh, kw)``; the Jacobian does not depend on the values of
        ``k``.
    geometry : XCorrGeometry
    order : {"F", "C"}
    layout : {"in_out", "out_in"}
        ``"in_out"``: rows index ``k``, columns the output; ``"out_in"``: the transpose.

    Returns
    -------
    scipy.sparse.coo_array, shape (size(k), size(y)), or (size(y), size(k)) for ``out_in``
        Entry ``[flat_k(kk, c, h, w), flat_y(n, kk, i, j)] =
        x[n, c, s_h i + d_h h - pad_top, s_w j + d_w w - pad_left]`` (``in_out``) where that
        pixel is inside ``x``. Canonical; exact zeros of ``x`` dropped.

    Raises
    ------
    ShapeError
        As in :func:`output_shape`.
    ParameterError
        For an unknown order or layout.

    Notes
    -----
    The op is bilinear, so this is the notes' Jacobian with the roles of ``x`` and ``k``
    exchanged. The number of entries before zeros are dropped is :func:`nnz_kernel`.
    """
    _check_order_layout(order, layout)
    x = _as_float(x)
    plan = _plan(x.shape, k_shape, geometry)
    return to_coo(_paired_jacobian(plan, "k", _as4(x), order, layout))


def _pair_count(size: int, taps: int, out: int, s: int, d: int, pad: int) -> int:
    """Count the pairs (i, h) with ``0 <= s i + d h - pad < size``, in O(taps) integer steps."""
    total = 0
    for h in range(taps):
        first = max(0, -((d * h - pad) // s))  # ceil((pad - d h) / s)
        last = min(out - 1, (size - 1 + pad - d * h) // s)
        total += max(0, last - first + 1)
    return total


def _structural_nnz(plan: _Plan) -> int:
    """Entries of either Jacobian before exact zeros are dropped (see :func:`nnz_x`)."""
    return (
        plan.N
        * plan.K
        * plan.C
        * _pair_count(plan.H, plan.kh, plan.h_out, plan.s_h, plan.d_h, plan.pad_top)
        * _pair_count(plan.W, plan.kw, plan.w_out, plan.s_w, plan.d_w, plan.pad_left)
    )


def nnz_x(
    x_shape: Sequence[int], k_shape: Sequence[int], geometry: XCorrGeometry = DEFAULT_GEOMETRY
) -> int:
    """Return the structural number of entries of :func:`jacobian_x`, allocating nothing.

    Parameters
    ----------
    x_shape, k_shape : sequence of int
        As in :func:`output_shape`.
    geometry : XCorrGeometry

    Returns
    -------
    int
        ``N * K * C * P_h * P_w`` where ``P_h`` counts the (output row, tap row) pairs whose
        image row lies inside ``x`` (``P_h = h_out * kh`` without padding), and ``P_w`` alike.
        Exact zeros of ``k`` are dropped from the matrix afterwards, so this is an upper bound
        of its ``nnz`` and equal to it for a kernel without zeros.

    Raises
    ------
    ShapeError
        As in :func:`output_shape`.

    Examples
    --------
    >>> nnz_x((3, 224, 224), (3, 3, 3))
    1330668
    """
    return _structural_nnz(_plan(x_shape, k_shape, geometry))


def nnz_kernel(
    x_shape: Sequence[int], k_shape: Sequence[int], geometry: XCorrGeometry = DEFAULT_GEOMETRY
) -> int:
    """Return the structural number of entries of :func:`jacobian_kernel`, allocating nothing.

    Parameters
    ----------
    x_shape, k_shape : sequence of int
        As in :func:`output_shape`.
    geometry : XCorrGeometry

    Returns
    -------
    int
        Every (tap, output) pair whose pixel lies inside ``x`` holds one entry, so this equals
        :func:`nnz_x`; exact zeros of ``x`` are dropped afterwards.

    Raises
    ------
    ShapeError
        As in :func:`output_shape`.
    """
    return nnz_x(x_shape, k_shape, geometry)


# --------------------------------------------------------------------------------------------
# VJPs (the transposes; the JVP is the bilinear forward itself)
# --------------------------------------------------------------------------------------------


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
    top, left = plan.pad_top, plan.pad_left
    grad = grad_p[:, :, top : top + plan.H, left : left + plan.W]
    return np.reshape(np.ascontiguousarray(grad), plan.x_shape)


# Adjoint of the forward with respect to k (cf. JAX's _conv_general_dilated_transpose_rhs).
# The forward is linear in k: y[n,kk,i,j] = sum_{c,h,w} X[n,c,h,w,i,j] k[kk,c,h,w] with
# X[n,c,h,w,i,j] = x_p[n,c,s_h i + d_h h, s_w j + d_w w] (the im2col windows). Hence
#   <y, u> = sum_{kk,c,h,w} k[kk,c,h,w] sum_{n,i,j} u[n,kk,i,j] X[n,c,h,w,i,j],
# so the pullback contracts u with the windows over (n, i, j): per image a
# (K, h_out*w_out) @ (h_out*w_out, C*kh*kw) product, accumulated over images and row blocks.
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
        ``(C, kh, kw)`` or ``(K, C, kh, kw)``.
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
    x4 = _as4(x)
    N, C, K, T = plan.N, plan.C, plan.K, plan.kh * plan.kw
    w_out = plan.w_out
    windows = _windows(_pad(x4, plan), plan)
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
    # (K, C*kh*kw) -> k_shape
    return np.reshape(grad, plan.k_shape)
