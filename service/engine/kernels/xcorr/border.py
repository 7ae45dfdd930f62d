"""The border rows of a paired Jacobian: every row outside the long-run blocks, in one pass.

The strided blocks of :mod:`.builder` pay about 35 us of NumPy calls each, whatever their size;
a 3x3 kernel has 5 runs per axis, so 24 of its 25 blocks are borders of a few hundred entries.
Here all of those rows are written at once: each row's partners come from the per-row tables
of its axis patterns, and each entry is scattered to its canonical position. The positions, the
column indices and where each value is read are pure functions of the geometry, so for a border
of at most ``BORDER_CACHE`` entries they are computed once and cached; only the values are
gathered again on every call.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator

import numpy as np

from ...cancel import checkpoint
from ...sparse import index_dtype as sparse_index_dtype
from ...types import FloatArray, IndexArray, Order, Shape
from .runs import _AxisPattern, _indptr, _matrix_dims, _Pairing, _Values, _Weights, _weights

# Slots (entries and the padding of short partner lists) per chunk: the temporaries of one chunk
# stay at a few MiB, inside the cost model's fixed BUFFERS.
BORDER_CHUNK = 2**16
# Borders of at most this many entries keep their positions, columns and value indices cached
# (20 bytes an entry, at most 16 geometries: about 21 MB at worst).
BORDER_CACHE = 2**16

# One chunk: canonical positions (intp), column indices (the matrix's index type) and the flat
# index in ``values.other`` of each entry's value, all of one shape.
_Chunk = tuple[IndexArray, IndexArray, IndexArray]


def _long_rows(pattern: _AxisPattern, long_run: int) -> np.ndarray:
    """Tell for each row of the axis whether it belongs to a run of at least ``long_run`` rows."""
    long = np.zeros(pattern.counts.size, dtype=bool)
    for run in pattern.runs:
        if run.count >= long_run:
            long[run.a0 : run.a0 + run.count * run.step : run.step] = True
    return long


def _border_rows(pairing: _Pairing, long_run: int) -> tuple[IndexArray, IndexArray]:
    """Return the spatial rows ``(a_h, a_w)`` outside the long-run blocks that have entries."""
    p_h, p_w = pairing.pattern_h, pairing.pattern_w
    has_h, has_w = p_h.counts > 0, p_w.counts > 0
    is_long_h, is_long_w = _long_rows(p_h, long_run), _long_rows(p_w, long_run)
    short_h = np.flatnonzero(has_h & ~is_long_h)
    short_w = np.flatnonzero(has_w & ~is_long_w)
    all_w, long_h = np.flatnonzero(has_w), np.flatnonzero(is_long_h)
    # (short h rows x every w row) + (long h rows x short w rows)
    a_h = np.concatenate([np.repeat(short_h, all_w.size), np.repeat(long_h, short_w.size)])
    a_w = np.concatenate([np.tile(all_w, short_h.size), np.tile(short_w, long_h.size)])
    return a_h, a_w


def _chunks(
    pairing: _Pairing,
    weights: _Weights,
    indptr: IndexArray,
    axes: tuple[str, str],
    other_shape: Shape,
    long_run: int,
) -> Iterator[_Chunk]:
    """Yield the border entries chunk by chunk (see the module docstring).

    A row ``(s, u, a_h, a_w)`` holds ``V * counts_h[a_h] * counts_w[a_w]`` entries from
    ``indptr`` on: slot ``(v, l_h, l_w)`` pairs it with partners ``partners_h[a_h, l_h]`` and
    ``partners_w[a_w, l_w]``, and its rank in the row is the mixed-radix number of
    ``(v, l_h, l_w)`` by the column axes' significance (columns grow with every partner). Its
    value is ``other[a, c, aux_h[a_h, l_h], aux_w[a_w, l_w]]`` with ``(a, c)`` named by ``axes``.
    """
    p_h, p_w = pairing.pattern_h, pairing.pattern_w
    a_h, a_w = _border_rows(pairing, long_run)
    S, U, V = weights.S, weights.U, weights.V
    col_dtype = indptr.dtype
    lane_h = np.arange(p_h.partners.shape[1])[np.newaxis, :, np.newaxis]
    lane_w = np.arange(p_w.partners.shape[1])[np.newaxis, np.newaxis, :]
    chunk = max(1, BORDER_CHUNK // (S * U * V * lane_h.size * lane_w.size))
    # (S, 1) + (1, U) -> (S, U): the non-spatial part of the row index
    row_su = (np.arange(S) * weights.row["S"])[:, np.newaxis] + (np.arange(U) * weights.row["U"])
    v = np.arange(V)[:, np.newaxis]
    # (S, 1, 1, 1) + (1, 1, V, 1) -> (S, 1, V, 1): the non-spatial part of the column index
    col_sv = (np.arange(S) * weights.col["S"])[:, np.newaxis, np.newaxis, np.newaxis] + (
        v * weights.col["V"]
    )
    _, C, P, Q = other_shape
    index = {"U": np.arange(U)[:, np.newaxis, np.newaxis], "V": v}
    # (U, 1, 1) and (V, 1) -> (U, V, 1): where the (a, c) plane of each entry starts in `other`
    plane = (index[axes[0]] * C + index[axes[1]]) * (P * Q)
    for b0 in range(0, a_h.size, chunk):
        checkpoint()
        h, w = a_h[b0 : b0 + chunk], a_w[b0 : b0 + chunk]
        count_h, count_w = p_h.counts[h], p_w.counts[w]
        # (B, Lh, Lw): the slots that hold pairs; b indexes the chunk's spatial rows
        b, l_h, l_w = np.nonzero(
            (lane_h < count_h[:, np.newaxis, np.newaxis])
            & (lane_w < count_w[:, np.newaxis, np.newaxis])
        )
        h, w = h[b], w[b]
        rank: IndexArray | int = 0
        unit: IndexArray | int = 1
        unit_v: IndexArray | int = 1
        for axis in reversed(weights.col_levels):
            if axis == "V":
                unit_v, unit = unit, unit * V
            elif axis == "h":
                rank, unit = rank + l_h * unit, unit * count_h[b]
            else:
                rank, unit = rank + l_w * unit, unit * count_w[b]
        # (S, U, E) row starts -> (S, U, V, E) positions
        start = indptr[row_su[:, :, np.newaxis] + (h * weights.row["h"] + w * weights.row["w"])]
        position = start[:, :, np.newaxis, :].astype(np.intp) + (rank + v * unit_v)
        spatial = p_h.partners[h, l_h] * weights.col["h"] + p_w.partners[w, l_w] * weights.col["w"]
        col = np.broadcast_to((col_sv + spatial).astype(col_dtype), position.shape)
        value = np.broadcast_to(plane + (p_h.aux[h, l_h] * Q + p_w.aux[w, l_w]), position.shape)
        yield position, col, value


def _border_size(pairing: _Pairing, weights: _Weights, long_run: int) -> int:
    """Entries of the border rows: all pairs but those of two long runs."""
    p_h, p_w = pairing.pattern_h, pairing.pattern_w
    long_h = int(p_h.counts[_long_rows(p_h, long_run)].sum())
    long_w = int(p_w.counts[_long_rows(p_w, long_run)].sum())
    return weights.S * weights.U * weights.V * (p_h.total * p_w.total - long_h * long_w)


@functools.lru_cache(maxsize=16)
def _cached(
    pairing: _Pairing, order: Order, axes: tuple[str, str], other_shape: Shape, long_run: int
) -> tuple[_Chunk, ...] | None:
    """Return the chunks of a border of at most ``BORDER_CACHE`` entries (read-only), or None."""
    weights = _weights(pairing, order)
    if _border_size(pairing, weights, long_run) > BORDER_CACHE:
        return None
    dtype = sparse_index_dtype(*_matrix_dims(pairing, weights))
    indptr = _indptr(pairing, weights, order, dtype)
    chunks = []
    for position, col, value in _chunks(pairing, weights, indptr, axes, other_shape, long_run):
        kept = (np.array(position), np.array(col), np.array(value))
        for array in kept:
            array.flags.writeable = False
        chunks.append(kept)
    return tuple(chunks)


def write_border(
    pairing: _Pairing,
    order: Order,
    weights: _Weights,
    values: _Values,
    indptr: IndexArray,
    col_out: IndexArray,
    data_out: FloatArray,
    long_run: int,
) -> None:
    """Write the column index and value of every entry of the border rows into the CSR arrays.

    ``indptr`` must be the matrix's row pointers (:func:`.runs._indptr`) and ``col_out`` of the
    matrix's index type; ``long_run`` is the run length from which the builder writes blocks.
    """
    other = values.other
    cached = _cached(pairing, order, values.axes, other.shape, long_run)
    chunks = (
        cached
        if cached is not None
        else _chunks(pairing, weights, indptr, values.axes, other.shape, long_run)
    )
    for position, col, value in chunks:
        checkpoint()
        col_out[position] = col
        data_out[position] = np.take(other, value)
