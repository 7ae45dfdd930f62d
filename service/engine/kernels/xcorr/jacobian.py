"""Cross-correlation Jacobians with respect to the image and the kernel, and their sizes."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Literal

import numpy as np
import scipy.sparse as sp

from ...errors import ParameterError
from ...layout import LAYOUTS, ORDERS
from ...sparse import to_coo
from ...types import FloatArray, Layout, Order
from .builder import _build
from .geometry import DEFAULT_GEOMETRY, XCorrGeometry, _as4, _as_float, _Plan, _plan
from .runs import _axis_pattern, _Pairing, _Values


def _check_order_layout(order: str, layout: str) -> None:
    if order not in ORDERS:
        raise ParameterError(f"xcorr: order must be 'F' or 'C', got {order!r}")
    if layout not in LAYOUTS:
        raise ParameterError(f"xcorr: layout must be 'in_out' or 'out_in', got {layout!r}")


def _pairing(plan: _Plan, wrt: Literal["x", "k"], layout: Layout) -> _Pairing:
    """Return the row of the table in ``runs.py`` for the Jacobian w.r.t. ``wrt`` in ``layout``."""
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
    """Build the Jacobian w.r.t. ``wrt`` (a row of the table in ``runs.py``) from the other operand.

    The op is bilinear, so every entry of one Jacobian is an entry of the other operand
    ``other4``: ``k4 (K, C, kh, kw)`` at tap ``(h, w)`` for ``J_x``, ``x4 (N, C, H, W)`` at
    pixel ``(r, q)`` for ``J_k``. Either way its axis 0 (``kk`` or ``n``) is the non-shared
    axis of the output, its axis 1 is ``c``, and axes 2 and 3 are the auxiliary coordinates
    of the runs.
    """
    # in_out: axis 0 belongs to the columns only and c to the rows only; out_in swaps them
    axes = ("V", "U") if layout == "in_out" else ("U", "V")
    values = _Values(np.ascontiguousarray(other4), axes)
    return _build(_pairing(plan, wrt, layout), order, values, zeros=not np.all(other4))


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


# Taps counted at once by _pair_count: NumPy over blocks, so that a 60000-tap kernel (an attack
# on the estimate itself) takes a millisecond and no Python loop holds the GIL for long.
PAIR_BLOCK = 1 << 16


def _pair_count(size: int, taps: int, out: int, s: int, d: int, pad: int) -> int:
    """Count the pairs (i, h) with ``0 <= s i + d h - pad < size``, in blocks of taps."""
    total = 0
    for start in range(0, taps, PAIR_BLOCK):
        shift = d * np.arange(start, min(taps, start + PAIR_BLOCK), dtype=np.int64) - pad
        first = np.maximum(0, -(shift // s))  # ceil((pad - d h) / s)
        last = np.minimum(out - 1, (size - 1 - shift) // s)
        total += int(np.maximum(0, last - first + 1).sum())
    return total


@functools.lru_cache(maxsize=256)
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
