"""Jacobians of a program with respect to each input of ``wrt``, by three strategies.

``"chain"`` (the sum over paths, CONVENTIONS 5.1)
    For each input ``w``, in topological order: ``J_{w->w} = I`` and, for a node
    ``v = f(a_1, ..., a_k)``, ``J_{w->v} = sum_j J_{w->a_j} · J_{f,j}`` (layout ``in_out``) over the
    arguments that ``w`` reaches. Every product is a sparse product of chain-rule factors
    (:func:`~service.engine.sparse.matmul`); on a path graph this is the notes' ``J_g · J_f``.
``"forward"``
    For each input ``w``, push its basis through batched JVPs (the other inputs' tangents zero):
    the tangent of ``e_i`` is row ``i`` of ``J_w``.
``"reverse"``
    Pull the output basis back through batched VJPs: each cotangent ``e_j`` gives column ``j``
    of every ``J_w`` at once.

``"auto"`` takes the cheapest by a cost estimated from shapes alone (:func:`plan`), with the same
cost units and tie-breaks as :meth:`service.engine.chain.Chain.plan`. Limits are checked there,
before anything is allocated.
"""

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from .. import layout as index_layout
from ..cancel import checkpoint
from ..errors import LimitExceeded, NonFiniteError, ParameterError
from ..jacobian import Format, Jacobian
from ..sparse import Factor, RowMap, canonicalize, coo_from_triplets, matmul, to_coo, to_dense
from ..strategy import BLOCK_ELEMENTS, SPARSE_COST, ComputedBy, Strategy, choose_strategy
from ..types import FloatArray, IndexArray, Layout, Order
from .program import Program, blame

__all__ = ["ProgramPlan", "jacobians", "plan"]

_NNZ_HINT = "use /v1/jvp or /v1/vjp"


@dataclass(frozen=True)
class _Bound:
    nnz: int
    fan_out: int


@dataclass(frozen=True)
class ProgramPlan:
    """How the Jacobians would be computed, decided from shapes alone.

    Attributes
    ----------
    strategy : {"chain", "reverse", "forward"}
    costs : dict of str to int
        Estimated cost of each strategy, in dense element operations.
    nnz_bounds : dict of str to int
        Upper bound on the non-zeros of each ``J_w``.
    chain_peak_nnz : int
        Upper bound on the largest matrix the ``"chain"`` strategy holds.
    dense_elements : int
        ``sum_w size(w) * out_size``.
    """

    strategy: ComputedBy
    costs: dict[str, int]
    nnz_bounds: dict[str, int]
    chain_peak_nnz: int
    dense_elements: int


def _paths(program: Program, w: str) -> tuple[dict[str, _Bound], int, int, int]:
    """Bounds of every ``J_{w->v}``, the multiply-adds of the sum over paths, local nnz, peak."""
    size = {name: index_layout.size_of(shape) for name, shape in program.shapes.items()}
    bounds = {w: _Bound(size[w], 1)}
    flops = local = 0
    peak = size[w]
    for node in program.nodes:
        if w not in program.depends(node.id):
            continue
        nnz = fan_out = 0
        for j, arg in enumerate(node.args):
            if arg not in bounds:
                continue
            s = program.sparsity[(node.id, j)]
            reach = min(size[node.id], s.fan_out)
            local += s.nnz
            peak = max(peak, s.nnz)
            flops += min(bounds[arg].nnz * reach, s.nnz * bounds[arg].fan_out)
            nnz += bounds[arg].nnz * reach
            fan_out += bounds[arg].fan_out * reach
        rows = size[w]
        bound = _Bound(min(nnz, rows * size[node.id]), min(fan_out, size[node.id]))
        bounds[node.id] = bound
        peak = max(peak, bound.nnz)
    return bounds, flops, local, peak


def _per_pass(program: Program, active: frozenset[str]) -> int:
    total = 0
    for node in program.nodes:
        if not program.depends(node.id) & active:
            continue
        out = index_layout.size_of(program.shapes[node.id])
        for j, arg in enumerate(node.args):
            if program.depends(arg) & active:
                total += program.sparsity[(node.id, j)].nnz + index_layout.size_of(
                    program.shapes[arg]
                ) + out  # fmt: skip
    return total


def plan(
    program: Program,
    wrt: Sequence[str],
    *,
    strategy: Strategy = "auto",
    fmt: Format = "coo",
    max_dense_elements: int,
    max_nnz: int,
) -> ProgramPlan:
    """Decide how to compute the Jacobians and check the limits, before allocating anything.

    Costs (dense element operations; ``P(S)`` is the cost of pushing one vector through the
    nodes that inputs ``S`` reach, ``nnz + in + out`` per argument):

    - ``forward``: ``sum_w size(w) P({w}) + sum_w size(w) m``;
    - ``reverse``: ``m P(wrt) + sum_w size(w) m``;
    - ``chain``: ``8 (local nnz + multiply-adds of the sums over paths + nnz bounds)``, plus the
      dense elements when the result is dense.

    Raises
    ------
    ParameterError
        For an unknown strategy or format.
    LimitExceeded
        If a result, or every admissible strategy, would exceed a limit.
    """
    if strategy not in ("auto", "chain", "reverse", "forward"):
        raise ParameterError(f"strategy must be one of auto, chain, reverse, forward, got "
                             f"{strategy!r}")  # fmt: skip
    if fmt not in ("coo", "dense"):
        raise ParameterError(f"format must be 'coo' or 'dense', got {fmt!r}")
    m = index_layout.size_of(program.out_shape)
    sizes = {w: index_layout.size_of(program.inputs[w]) for w in wrt}
    dense = sum(n * m for n in sizes.values())
    nnz_bounds: dict[str, int] = {}
    flops = local = peak = 0
    for w in wrt:
        bounds, f, lo, pk = _paths(program, w)
        nnz_bounds[w] = bounds[program.output].nnz if program.output in bounds else 0
        flops, local, peak = flops + f, local + lo, max(peak, pk)
    if fmt == "dense" and dense > max_dense_elements:
        raise LimitExceeded("dense Jacobian elements", dense, max_dense_elements,
                            hint="ask for format 'coo', or use /v1/jvp or /v1/vjp",
                            setting="max_dense_jacobian_elements")  # fmt: skip
    total_nnz = sum(nnz_bounds.values())
    if fmt == "coo" and total_nnz > max_nnz:
        raise LimitExceeded("Jacobian non-zeros (upper bound)", total_nnz, max_nnz, _NNZ_HINT,
                            setting="max_coo_nnz")  # fmt: skip
    costs = {
        "chain": SPARSE_COST * (local + flops + total_nnz) + (dense if fmt == "dense" else 0),
        "reverse": m * _per_pass(program, frozenset(wrt)) + dense,
        "forward": sum(n * _per_pass(program, frozenset({w})) for w, n in sizes.items()) + dense,
    }
    chosen = choose_strategy(strategy, costs, peak, max_nnz, dense, max_dense_elements)
    return ProgramPlan(chosen, costs, nnz_bounds, peak, dense)


# -- the three strategies --------------------------------------------------------------------------


def _add(left: Factor | None, right: Factor) -> Factor:
    if left is None:
        return right
    # SciPy adds canonical CSR operands row by row into canonical CSR, dropping exact zeros.
    total = sp.csr_array(_csr(left) + _csr(right))
    total.has_canonical_format = True
    return total


def _csr(factor: Factor) -> sp.csr_array:
    return factor.to_csr() if isinstance(factor, RowMap) else factor


def _sum_over_paths(
    program: Program, values: Mapping[str, FloatArray], w: str, order: Order
) -> sp.coo_array:
    """``J_{w->output}`` accumulated over the nodes in topological order."""
    n = index_layout.size_of(program.inputs[w])
    reached: dict[str, Factor] = {w: RowMap((n, n), np.ones(n))}
    remaining = dict.fromkeys(program.shapes, 0)
    for node in program.nodes:
        for arg in node.args:
            remaining[arg] += 1
    for node in program.nodes:
        checkpoint()
        total: Factor | None = None
        if w in program.depends(node.id):
            args = [values[a] for a in node.args]
            for j, arg in enumerate(node.args):
                if arg in reached:
                    with blame(node):
                        factor = node.op.local_factor(args, j, order)
                    total = _add(total, matmul(reached[arg], factor))
        for arg in node.args:
            remaining[arg] -= 1
            if remaining[arg] == 0 and arg != program.output:
                reached.pop(arg, None)  # no later node needs J_{w->arg}
        if total is not None:
            reached[node.id] = total
    m = index_layout.size_of(program.out_shape)
    if program.output not in reached:
        return sp.coo_array((n, m))
    return to_coo(reached[program.output])


def _images(
    program: Program, values: Mapping[str, FloatArray], order: Order, w: str | None,
    wrt: Sequence[str],
) -> Iterator[tuple[int, dict[str, FloatArray]]]:  # fmt: skip
    """Yield ``(start, {name: block})``: rows of ``J_w`` (forward) or columns of each ``J_w``."""
    source = program.inputs[w] if w is not None else program.out_shape
    size = index_layout.size_of(source)
    widest = max(index_layout.size_of(s) for s in program.shapes.values())
    step = max(1, BLOCK_ELEMENTS // widest)
    for start in range(0, size, step):
        checkpoint()
        count = min(size, start + step) - start
        basis = np.zeros((count, size))
        basis[np.arange(count), np.arange(start, start + count)] = 1.0
        batch = index_layout.ten_batch(basis, source, order)
        if w is not None:
            image = program.jvp(values, {w: batch})
            yield start, {w: index_layout.vec_batch(image, 1, order)}
        else:
            pulled = program.vjp(values, batch, wrt)
            yield start, {v: index_layout.vec_batch(g, 1, order) for v, g in pulled.items()}


def _by_basis(
    program: Program, values: Mapping[str, FloatArray], wrt: Sequence[str], order: Order,
    direction: ComputedBy, dense: bool,
) -> dict[str, sp.coo_array | FloatArray]:  # fmt: skip
    m = index_layout.size_of(program.out_shape)
    sizes = {w: index_layout.size_of(program.inputs[w]) for w in wrt}
    passes = [(w, [w]) for w in wrt] if direction == "forward" else [(None, list(wrt))]
    result: dict[str, sp.coo_array | FloatArray] = {}
    for w, names in passes:
        matrices = {v: np.empty((sizes[v], m)) for v in names} if dense else {}
        triplets: dict[str, list[tuple[IndexArray, IndexArray, FloatArray]]] = {
            v: [] for v in names
        }
        for start, blocks in _images(program, values, order, w, wrt):
            for v, block in blocks.items():
                if direction == "forward":
                    if dense:
                        matrices[v][start : start + len(block)] = block
                    b, k = np.nonzero(block)
                    triplets[v].append((b + start, k, block[b, k]))
                else:
                    if dense:
                        matrices[v][:, start : start + len(block)] = block.T
                    b, k = np.nonzero(block)
                    triplets[v].append((k, b + start, block[b, k]))
        for v in names:
            if dense:
                np.add(matrices[v], 0.0, out=matrices[v])  # -0.0 -> +0.0, as the chain does
                result[v] = matrices[v]
            else:
                rows, cols, data = zip(*triplets[v], strict=True) if triplets[v] else ((), (), ())
                result[v] = coo_from_triplets(
                    np.concatenate([np.zeros(0, np.int64), *rows]).astype(np.int64),
                    np.concatenate([np.zeros(0, np.int64), *cols]).astype(np.int64),
                    np.concatenate([np.zeros(0), *data]),
                    (sizes[v], m),
                )
    return result


def jacobians(
    program: Program,
    values: Mapping[str, FloatArray],
    wrt: Sequence[str],
    chosen: ProgramPlan,
    *,
    order: Order,
    fmt: Format,
    layout: Layout,
) -> dict[str, Jacobian]:
    """Return ``{w: J_w}`` at the traced ``values`` by the planned strategy.

    Returns
    -------
    dict of str to Jacobian
        ``J_w`` has ``in_shape`` the shape of ``w`` and ``out_shape`` the program's output shape.

    Raises
    ------
    NonFiniteError
        If a Jacobian has a non-finite entry.
    """
    if chosen.strategy == "chain":
        raw: dict[str, sp.coo_array | FloatArray] = {
            w: _sum_over_paths(program, values, w, order) for w in wrt
        }
    else:
        raw = _by_basis(program, values, wrt, order, chosen.strategy, fmt == "dense")
    result = {}
    for w, matrix in raw.items():
        data = matrix.data if isinstance(matrix, sp.coo_array) else matrix
        if not np.all(np.isfinite(data)):
            raise NonFiniteError(f"the Jacobian with respect to {w!r} has non-finite entries")
        oriented: sp.coo_array | FloatArray
        if fmt == "dense":
            dense = to_dense(matrix) if isinstance(matrix, sp.coo_array) else matrix
            oriented = index_layout.orient_dense(dense, layout)
        elif layout == "in_out":
            oriented = matrix
        else:
            assert isinstance(matrix, sp.coo_array)
            oriented = canonicalize(index_layout.orient_coo(matrix, layout))
        result[w] = Jacobian(oriented, program.inputs[w], program.out_shape, layout, order)
    return result
