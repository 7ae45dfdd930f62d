"""The cost of each kind of request, from shapes alone: what :mod:`cost` prices per operation.

One function per engine entry point (:mod:`functions`, :mod:`correlation`, :mod:`descent`); each
mirrors what its entry point allocates, in the same order, so that the estimate is an upper bound
of the measured peak (``tests/engine/test_cost.py``). None of them allocates an array.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from . import layout, xcorr
from .chain import Chain
from .cost import (
    BUFFERS,
    COO_ENTRY,
    FLOAT,
    INDEX,
    SPARSE_COPIES,
    XCORR_ENTRY_BYTES,
    Cost,
    Direction,
    dense_cost,
    op_cost,
    pass_cost,
    sparse_build_cost,
    spgemm_cost,
    trace_cost,
    values_bytes,
    xcorr_forward_cost,
    xcorr_jacobian_cost,
)
from .descent.objective import prepared_operations
from .functions import FD_DIRECTIONS
from .jacobian import Format
from .strategy import BLOCK_ELEMENTS, JacobianPlan
from .types import FloatArray, IndexArray


def evaluate_cost(chain: Chain) -> Cost:
    """Return the cost of :func:`functions.evaluate`: the trace of the chain."""
    return trace_cost(chain.ops, chain.shapes)


def fd_check_cost(chain: Chain) -> Cost:
    """Return the cost of the bounded finite-difference check (both sides, and the products)."""
    directions = min(FD_DIRECTIONS, max(layout.size_of(s) for s in chain.shapes))
    probe = trace_cost(chain.ops, chain.shapes, batch=directions)
    derivative = pass_cost(chain.ops, chain.shapes, batch=directions)
    # Both sides' quotients, the perturbations, the compared products and the rules' batched
    # temporaries (max_pool2d: 65 MB for 32 directions of a 6000-element input) together.
    # The kernels' fixed buffers (BUFFERS) are in probe's peak once, not in each of these.
    held = 12 * (probe.peak_bytes - BUFFERS)
    return probe.times(2).then(derivative).holding(held)


def product_cost(chain: Chain, check: bool) -> Cost:
    """Return the cost of :func:`functions.product` (a JVP or a VJP, and the check)."""
    trace = trace_cost(chain.ops, chain.shapes)
    held = values_bytes(chain.shapes)
    cost = trace.then(pass_cost(chain.ops, chain.shapes, batch=1).holding(held))
    cost = cost.then(trace)  # the value h(x), evaluated again for the response
    return cost.then(fd_check_cost(chain)) if check else cost


def jacobian_cost(chain: Chain, plan: JacobianPlan, fmt: Format, check: bool) -> Cost:
    """Return the cost of :func:`functions.jacobian` with the strategy ``plan`` chose.

    ``chain``: the local factors are built (their sparsity bounds) and multiplied in the planned
    association; the largest partial product is ``plan.chain_peak_nnz``. ``forward``/``reverse``:
    blocks of basis vectors of at most ``BLOCK_ELEMENTS`` images, each pushed through every
    operation, written into the dense result or into COO pieces.
    """
    n, m = layout.size_of(chain.in_shape), layout.size_of(chain.out_shape)
    trace = trace_cost(chain.ops, chain.shapes)
    held = values_bytes(chain.shapes)
    if plan.strategy == "chain":
        local = Cost()
        local_nnz = 0
        for op, shape in zip(chain.ops, chain.shapes, strict=False):
            rows, cols = layout.size_of(shape), layout.size_of(op.out_shape(shape))
            nnz = min(op.sparsity(shape).nnz, rows * cols)
            local_nnz += nnz
            local = local.then(sparse_build_cost(nnz, rows, cols).then(op_cost(op, shape)))
        peak = plan.chain_peak_nnz
        products = spgemm_cost(n, max(n, m), m, peak, local_nnz, peak).times(len(chain.ops))
        result = sparse_build_cost(plan.nnz_bound, n, m)
        build = local.then(products).then(result).holding(SPARSE_COPIES * COO_ENTRY * local_nnz)
    else:
        count = n if plan.strategy == "forward" else m
        widest = max(layout.size_of(shape) for shape in chain.shapes)
        batch = min(count, max(1, BLOCK_ELEMENTS // widest))
        blocks = -(-count // batch)
        basis = FLOAT * batch * (n + m) * 2
        direction: Direction = "jvp" if plan.strategy == "forward" else "vjp"
        one = pass_cost(chain.ops, chain.shapes, batch, direction).holding(basis)
        pieces = dense_cost(n, m, 1) if fmt == "dense" else sparse_build_cost(plan.nnz_bound, n, m)
        # The passes run beside what the pieces hold, not beside the COO build's fixed buffers
        # (BUFFERS), which are in the passes' peak once already.
        kept = pieces.peak_bytes - (0 if fmt == "dense" else BUFFERS)
        build = one.times(blocks).holding(kept).then(pieces)
    cost = trace.then(build.holding(held))
    if fmt == "dense":
        cost = cost.then(dense_cost(n, m))  # orient / densify: a second copy
    cost = cost.then(trace)  # h(x) for the response
    return cost.then(fd_check_cost(chain)) if check else cost


def correlation_cost(
    x_shape: Sequence[int],
    k_shape: Sequence[int],
    geometry: xcorr.XCorrGeometry,
    *,
    jacobian: Literal["none", "coo", "dense"],
    wrt: Sequence[Literal["x", "kernel"]],
    method: Literal["direct", "jacobian"],
) -> Cost:
    """Return the cost of :func:`correlation.correlate`.

    The forward runs over the padded image (``"direct"``) or through the sparse Jacobian with
    respect to ``x`` (``"jacobian"``, whose builder allocates the per-axis index grids).
    """
    xs, ks = tuple(x_shape), tuple(k_shape)
    out = xcorr.output_shape(xs, ks, geometry)
    n_out = layout.size_of(out)
    nnz = xcorr.nnz_x(xs, ks, geometry) if (jacobian != "none" or method == "jacobian") else 0
    held = FLOAT * (layout.size_of(xs) + layout.size_of(ks) + n_out)
    if method == "jacobian":
        forward = xcorr_jacobian_cost(xs, ks, geometry, nnz)
    else:
        forward = xcorr_forward_cost(xs, ks, geometry)
    cost = forward
    wanted = [] if jacobian == "none" else list(wrt)
    results = 0  # the Jacobians already built, held while the next one is
    for what in wanted:
        in_size = layout.size_of(xs if what == "x" else ks)
        built = xcorr_jacobian_cost(xs, ks, geometry, nnz)
        if jacobian == "dense":
            built = built.then(dense_cost(in_size, n_out))
        cost = cost.then(built.holding(results))
        results += FLOAT * in_size * n_out if jacobian == "dense" else XCORR_ENTRY_BYTES * nnz
    return cost.holding(held)


@dataclass(frozen=True)
class GivenJacobian:
    """What the chain rule knows of one given Jacobian before multiplying (in_out orientation).

    ``row`` and ``col`` are the COO pattern when it is known (the validated request holds it);
    None for a dense matrix (every entry) or an unknown pattern.
    """

    rows: int
    cols: int
    nnz: int
    dense: bool
    row: IndexArray | None = None
    col: IndexArray | None = None


# Per column of the running product: an upper bound on its non-zeros, as sorted column indices
# and counts (sparse, so that a 16e6-column factor with one entry costs nothing to bound).
_Counts = tuple[IndexArray, FloatArray]


def _first_counts(factor: GivenJacobian) -> _Counts | None:
    if factor.col is None or factor.row is None:
        return None
    columns, counts = np.unique(factor.col, return_counts=True)
    return columns, counts.astype(np.float64)


def _next_counts(counts: _Counts, factor: GivenJacobian, rows: int) -> tuple[_Counts, int]:
    """Push column counts through ``factor``'s pattern; return them and the products formed.

    Entry ``(k, j)`` of the factor meets every non-zero of column ``k`` of the running product:
    ``sum_k counts[k] * nnz(row k of factor)`` multiply-adds, and column ``j`` of the new product
    has at most ``min(rows, sum over its entries (k, j) of counts[k])`` non-zeros.
    """
    assert factor.row is not None and factor.col is not None
    columns, values = counts
    if columns.size == 0:  # an empty product stays empty
        return (columns, values), 0
    at = np.searchsorted(columns, factor.row)
    inside = at < columns.size
    hit = np.zeros(factor.row.shape, dtype=bool)
    hit[inside] = columns[at[inside]] == factor.row[inside]
    weights = np.where(hit, values[np.minimum(at, columns.size - 1)], 0.0)
    products = int(weights.sum())
    new_columns, inverse = np.unique(factor.col, return_inverse=True)
    new_values = np.minimum(np.bincount(inverse, weights=weights), float(rows))
    return (new_columns, new_values), products


def multiply_cost(factors: Sequence[GivenJacobian], dense_result: bool) -> tuple[Cost, int]:
    """Return the cost of decoding the factors and :func:`functions.multiply`, and an nnz bound.

    ``factors`` are in multiplication order (``J_1 ... J_n`` in_out). Where every pattern is known
    each product's non-zeros are bounded column by column from the patterns (:func:`_next_counts`,
    O(nnz) work, no array of the matrices' sizes); otherwise by
    ``min(rows * cols, nnz(left) * min(cols, nnz(right)), rows * nnz(right))``.
    """
    decode = Cost()
    held = 0
    for factor in factors:
        entries = FLOAT * factor.rows * factor.cols if factor.dense else COO_ENTRY * factor.nnz
        decode = decode.then(sparse_build_cost(factor.nnz, factor.rows, factor.cols))
        held += entries
    rows = factors[0].rows
    product_nnz = factors[0].nnz
    counts = _first_counts(factors[0])
    products = Cost()
    for factor in factors[1:]:
        # every entry of the left meets one row of the right (at most all its entries), every
        # entry of the right one column of the left
        out_nnz = min(
            rows * factor.cols,
            product_nnz * min(factor.cols, factor.nnz),
            rows * factor.nnz,
        )
        if counts is not None and factor.row is not None:
            counts, formed = _next_counts(counts, factor, rows)
            out_nnz = min(out_nnz, int(counts[1].sum()), formed)
        else:
            counts = None
        step = spgemm_cost(rows, factor.rows, factor.cols, product_nnz, factor.nnz, out_nnz)
        products = products.then(step.then(sparse_build_cost(factor.nnz, factor.rows, factor.cols)))
        product_nnz = out_nnz
    result = sparse_build_cost(product_nnz, rows, factors[-1].cols)
    if dense_result:
        result = result.then(dense_cost(rows, factors[-1].cols))
    return decode.then(products.then(result).holding(held)), product_nnz


def hvp_cost(chain: Chain, batch: int = 1) -> Cost:
    """Return the cost of :func:`hessian.hvp`: the trace, then forward over reverse per vector.

    Tangents go forward with the trace, cotangents and their derivatives come back with each
    rule's second-order term: three batched passes, the trace and the tangents held.
    """
    trace = trace_cost(chain.ops, chain.shapes)
    passes = pass_cost(chain.ops, chain.shapes, batch).times(3)
    held = values_bytes(chain.shapes, 1 + batch)
    return trace.then(passes.holding(held))


def hessian_cost(chain: Chain, nnz_bound: int, fmt: Format) -> Cost:
    """Return the cost of the structural Hessian of :func:`hessian.hessian`.

    Per operation with curvature: its ``K`` second-order products (a batch of ``K`` tangents), the
    ``G K²`` entries of its weighted Hessian ``D_i``, and ``P_i D_i P_i^T`` with ``P_i`` the
    product of the local factors so far; every term has at most ``nnz_bound`` entries. The sum is
    symmetrized (two more copies) and densified for ``"dense"``.
    """
    n = layout.size_of(chain.in_shape)
    trace = trace_cost(chain.ops, chain.shapes)
    adjoints = pass_cost(chain.ops, chain.shapes, 1, "vjp")
    terms = Cost()
    for index, op in enumerate(chain.ops):
        shape = chain.shapes[index]
        blocks = op.curvature_blocks(shape, "C")
        if blocks is None:
            continue
        k = blocks.shape[1]
        second = op_cost(op, shape, k).times(2)
        reach = chain._bound(0, index - 1).nnz if index > 0 else n
        curvature = sparse_build_cost(blocks.size * k, layout.size_of(shape), layout.size_of(shape))
        product = spgemm_cost(n, layout.size_of(shape), n, reach, blocks.size * k, nnz_bound)
        terms = terms.then(second.then(curvature).then(product.times(2))).holding(
            SPARSE_COPIES * COO_ENTRY * (reach + nnz_bound)
        )
    result = sparse_build_cost(nnz_bound, n, n)
    held = values_bytes(chain.shapes)
    cost = trace.then(adjoints.then(terms).then(result.times(2)).holding(held))
    return cost.then(dense_cost(n, n)) if fmt == "dense" else cost


def descent_step_cost(chain: Chain, max_prepared_nnz: int) -> Cost:
    """Return the cost of one gradient-descent step (value and gradient, line search aside).

    The run prepares its mixing linear operations as sparse matrices first
    (:func:`~service.engine.descent.objective.prepared_operations`): each is built once from its
    local Jacobian and held, with its transpose, for the whole run (CSR, at most int64 indices).
    Descent is bounded in time by its own deadline (status ``"deadline"``), not by the number
    of steps it may take; this bounds what each step holds and does.
    """
    build, held = Cost(), 0
    for index in prepared_operations(chain, max_prepared_nnz):
        op, shape = chain.ops[index], chain.shapes[index]
        rows, cols = layout.size_of(shape), layout.size_of(chain.shapes[index + 1])
        nnz = min(op.sparsity(shape).nnz, rows * cols)
        build = build.then(sparse_build_cost(nnz, rows, cols).then(op_cost(op, shape)))
        held += 2 * (FLOAT + INDEX) * nnz + INDEX * (rows + cols + 2)
    return build.then(product_cost(chain, check=False)).holding(held)


def minimize_step_cost(step: Cost, product: Cost, size: int, method: str, memory: int) -> Cost:
    """Return the cost of one iteration of a minimization, from one descent step's and HVP's.

    ``gd`` and ``adam``: a value and gradient. ``lbfgs``: the same with L-BFGS-B's workspace held,
    ``2 m n + 5 n + 11 m^2 + 8 m`` doubles (SciPy's ``setulb``, ``m = memory``). ``newton-cg`` and
    ``trust-ncg``: one Hessian-vector product of their inner iterations on top, with CG's four
    vectors. An L-BFGS iteration may evaluate several points (its line search) and a Newton one
    many products: like the iterations, they are bounded by the run's deadline.
    """
    if method == "lbfgs":
        workspace = 2 * memory * size + 5 * size + 11 * memory * memory + 8 * memory
        return step.holding(FLOAT * workspace)
    if method in ("newton-cg", "trust-ncg"):
        return step.then(product).holding(4 * FLOAT * size)
    return step
