"""Sparse Jacobian construction: axis pairings grouped into runs, and the block writer."""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from ...cancel import checkpoint
from ...layout import place_values, vec
from ...sparse import index_dtype as sparse_index_dtype
from ...types import FloatArray, IndexArray, Order, Shape

# Target length of the contiguous inner loops that write Jacobian entries (see _build).
INNER_LOOP = 2048


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
