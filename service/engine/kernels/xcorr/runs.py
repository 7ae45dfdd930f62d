"""Sparse Jacobian construction: axis pairings grouped into runs, and the block writer."""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ...layout import place_values, vec
from ...types import FloatArray, IndexArray, Order, Shape

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
# form a "run" (all interior rows of one stride residue, or a single border row). For one long
# run of each spatial axis, every entry's position in the canonical (row, col) order, its column
# index and its value are affine in (or gathered along) the run counters, so the whole block is
# written through strided views with broadcast index arithmetic. The rows of short runs (the
# borders: 24 of the 25 blocks of a 3x3 kernel, about 35 us of NumPy calls each) are written in
# one pass that gathers their partners from per-row tables and scatters the entries to their
# canonical positions. The row indices follow from the pair counts as a CSR indptr. Entries come
# out sorted and are never sorted.


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


@dataclass(frozen=True, eq=False)
class _AxisPattern:
    """The (row, partner, aux) pairs of one spatial axis: pairs per row, total, and runs.

    ``partners[a, l]`` and ``aux[a, l]`` are row ``a``'s ``l``-th pair (``l < counts[a]``; zero
    beyond), shape (rows, longest list). All read-only. Compared and hashed by identity: equal
    geometries share one cached pattern, so a pairing can key the caches of the builders.
    """

    counts: IndexArray
    total: int
    runs: tuple[_Run, ...]
    partners: IndexArray
    aux: IndexArray


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

    # row a's pairs, padded to the longest list: (rows, longest)
    rows = coords[row_role][by_row]
    rank = np.arange(start) - (np.cumsum(counts) - counts)[rows]
    width = max(1, int(counts.max(initial=0)))
    partners = np.zeros((counts.size, width), dtype=np.int64)
    aux_table = np.zeros((counts.size, width), dtype=np.int64)
    partners[rows, rank] = coords[partner_role][by_row]
    aux_table[rows, rank] = coords[aux_role][by_row]
    for array in (counts, partners, aux_table):
        array.flags.writeable = False
    return _AxisPattern(counts, start, tuple(runs), partners, aux_table)


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
# in the partner list of the row's h / w coordinate.


@dataclass(frozen=True)
class _Pairing:
    """One row of the table above: the row and column tensors and their spatial pairing."""

    row_shape: Shape  # (non-spatial, non-spatial, spatial h, spatial w)
    col_shape: Shape
    row_shared: int  # position (0 or 1) of the shared axis among the row's non-spatial axes
    col_shared: int
    pattern_h: _AxisPattern
    pattern_w: _AxisPattern


@dataclass(frozen=True)
class _Values:
    """Where the entries come from: ``other (A, C, P, Q)``, entry ``other[a, c, aux_h, aux_w]``.

    The op is bilinear, so every entry of one Jacobian is an entry of the other operand.
    ``axes`` names its axes 0 and 1 among the block axes ``"U"`` (row-only) and ``"V"``
    (column-only); axes 2 and 3 are the auxiliary coordinates of the runs.
    """

    other: FloatArray
    axes: tuple[str, str]

    def block(self, run_h: _Run, run_w: _Run, block: Sequence[str]) -> FloatArray:
        """Values of one block, aligned to the block's axis order (size 1 where they are fixed)."""
        # (A, C, P, Q) -> (A, C, Qh, Ih, Q) -> (A, C, Qh, Ih, Qw, Jw): the entry of each pair
        picked = np.take(np.take(self.other, _aux_index(run_h), axis=2), _aux_index(run_w), axis=4)
        return _align(picked, [*self.axes, "Qh", "Ih", "Qw", "Jw"], block)


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


@dataclass(frozen=True)
class _Weights:
    """Sizes of the non-spatial block axes, flat-index weights, and the axes' significance.

    ``S`` is the shared axis, ``U`` the row-only and ``V`` the column-only one; ``h``/``w`` the
    spatial axes of the row (``row``) or column (``col``) tensor. ``row_levels`` and
    ``col_levels`` list them from the most significant in a flat index of the order.
    """

    S: int
    U: int
    V: int
    row: dict[str, int]  # "S", "U", "h", "w"
    col: dict[str, int]  # "S", "V", "h", "w"
    row_levels: list[str]
    col_levels: list[str]


def _weights(pairing: _Pairing, order: Order) -> _Weights:
    """Return the sizes and flat-index weights of a pairing in ``order`` (the notes' flat: F)."""
    row_shape, col_shape = pairing.row_shape, pairing.col_shape
    shared_r, shared_c = pairing.row_shared, pairing.col_shared
    rw = [int(v) for v in place_values(row_shape, order)]
    cw = [int(v) for v in place_values(col_shape, order)]
    row = {"S": rw[shared_r], "U": rw[1 - shared_r], "h": rw[2], "w": rw[3]}
    col = {"V": cw[1 - shared_c], "h": cw[2], "w": cw[3]}
    return _Weights(
        row_shape[shared_r],
        row_shape[1 - shared_r],
        col_shape[1 - shared_c],
        row,
        {"S": cw[shared_c], **col},
        _significance(row, order),
        _significance(col, order),
    )


def _matrix_dims(pairing: _Pairing, weights: _Weights) -> tuple[tuple[int, int], int]:
    """``(rows, cols)`` and ``nnz`` of the matrix (what decides its index type)."""
    p_h, p_w = pairing.pattern_h, pairing.pattern_w
    nnz = weights.S * weights.U * weights.V * p_h.total * p_w.total
    return (math.prod(pairing.row_shape), math.prod(pairing.col_shape)), nnz


# Row pointers of matrices with at most this many rows are cached per geometry (read-only, at
# most 8 of at most 2 MiB); a call copies them: 0.04 ms instead of 0.4 ms for the 150,528 rows of
# a (3,224,224) image, a sixth of its in_out COO.
INDPTR_CACHE_ROWS = 2**19


def _indptr(pairing: _Pairing, weights: _Weights, order: Order, dtype: type) -> IndexArray:
    """Return the CSR row pointers of a pairing's matrix, rows in flat order of ``order``.

    The row tensor's element ``(a0, a1, a_h, a_w)`` holds ``V * counts_h[a_h] * counts_w[a_w]``
    entries. A fresh, writable array (SciPy's in-place methods may change it).
    """
    if math.prod(pairing.row_shape) > INDPTR_CACHE_ROWS:
        return _pointers(pairing, weights.V, order, dtype)
    cached: IndexArray = _cached_pointers(pairing, weights.V, order, dtype).copy()
    return cached


@functools.lru_cache(maxsize=8)
def _cached_pointers(pairing: _Pairing, V: int, order: Order, dtype: type) -> IndexArray:
    indptr = _pointers(pairing, V, order, dtype)
    indptr.flags.writeable = False
    return indptr


def _pointers(pairing: _Pairing, V: int, order: Order, dtype: type) -> IndexArray:
    # in the index dtype throughout: a casting cumsum ran 3x slower
    counts_h: IndexArray = pairing.pattern_h.counts.astype(dtype)
    counts_w: IndexArray = pairing.pattern_w.counts.astype(dtype)
    per_row = V * counts_h[:, np.newaxis] * counts_w[np.newaxis, :]
    indptr: IndexArray = np.zeros(math.prod(pairing.row_shape) + 1, dtype=dtype)
    np.cumsum(vec(np.broadcast_to(per_row, pairing.row_shape), order), out=indptr[1:])
    return indptr
