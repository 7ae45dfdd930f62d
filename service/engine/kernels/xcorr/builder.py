"""The writer of a paired Jacobian: long-run blocks through strided views, then the borders."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import scipy.sparse as sp

from ...cancel import checkpoint
from ...layout import vec
from ...sparse import index_dtype as sparse_index_dtype
from ...types import Order
from .border import write_border
from .runs import _indptr, _matrix_dims, _Pairing, _Run, _Values, _weights

# Target length of the contiguous inner loops that write Jacobian entries (see _build).
INNER_LOOP = 2048
# Runs of at least this many rows are written block by block through strided views; the rows of
# shorter runs (the borders) all go through one gather-and-scatter pass (.border).
LONG_RUN = 4


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


def _build(pairing: _Pairing, order: Order, values: _Values, zeros: bool) -> sp.csr_array:
    """Write all entries of a paired Jacobian in canonical (row, col) order.

    The column indices and values are written into CSR arrays whose ``indptr`` follows from the
    pair counts: the blocks of two long runs through strided views, the border rows by
    :func:`.border.write_border`. ``zeros`` says whether the values may contain exact zeros,
    which are then dropped.
    """
    p_h, p_w = pairing.pattern_h, pairing.pattern_w
    weights = _weights(pairing, order)
    S, U, V = weights.S, weights.U, weights.V
    shape, nnz = _matrix_dims(pairing, weights)
    index_dtype = sparse_index_dtype(shape, nnz)
    col_out = np.empty(nnz, dtype=index_dtype)
    data_out = np.empty(nnz)

    col_weight, row_levels, col_levels = weights.col, weights.row_levels, weights.col_levels
    row_names = {"S": "S", "U": "U", "h": "Qh", "w": "Qw"}
    col_names = {"V": "V", "h": "Ih", "w": "Jw"}
    block = [row_names[a] for a in row_levels] + [col_names[a] for a in col_levels]
    regular = {"S": S, "U": U}
    totals = {"h": p_h.total, "w": p_w.total}

    # Column-index terms that do not depend on the block (every term is one component of a
    # valid index, so it fits the index dtype); a size-1 axis contributes nothing.
    fixed_terms = {
        name: np.arange(size, dtype=index_dtype) * weight
        for name, size, weight in (("S", S, col_weight["S"]), ("V", V, col_weight["V"]))
        if size > 1
    }
    long_h = [run for run in p_h.runs if run.count >= LONG_RUN]
    long_w = [run for run in p_w.runs if run.count >= LONG_RUN]
    for run_h in long_h:
        checkpoint()
        qh_term, ih_term = _run_terms(run_h, col_weight["h"], index_dtype)
        for run_w in long_w:
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

            block_values = values.block(run_h, run_w, block)
            if all(n == 1 for n in block_values.shape[:split]):
                # values vary along the suffix only: write one template per prefix index
                pattern = np.broadcast_to(block_values[(0,) * split], suffix_shape)
                np.copyto(
                    _strided(data_out, base, [*prefix_shape, extent], [*prefix_strides, 1]),
                    vec(pattern, "C"),
                )
            else:
                np.copyto(_strided(data_out, base, block_shape, block_strides), block_values)

    indptr = _indptr(pairing, weights, order, index_dtype)
    write_border(pairing, order, weights, values, indptr, col_out, data_out, LONG_RUN)
    matrix = sp.csr_array((data_out, col_out, indptr), shape=shape)
    # Sorted and duplicate-free by construction; saying so spares SciPy an O(nnz) check.
    matrix.has_canonical_format = True
    if zeros:
        matrix.eliminate_zeros()
    return matrix
