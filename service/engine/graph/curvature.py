"""A program's Hessian over several inputs jointly, as COO built from structural sparsity.

Let ``N`` be the joint size of the differentiated inputs (laid end to end in ``wrt`` order, each
flattened in ``order``) and ``P_v`` (``N x size(v)``, layout ``in_out``) the Jacobian of a value
``v`` with respect to them: ``P_w`` embeds input ``w`` and, for a node ``v = f(a_1, ..., a_k)``,
``P_v = sum_j P_{a_j} J_{f,j}`` (the sum over paths of :mod:`service.engine.graph.strategies`).
With ``u_v`` the cotangent reaching ``v`` in the gradient's reverse pass, the Hessian is

    H = sum_nodes sum_{i, j} P_{a_i} D_ij P_{a_j}^T,

``D_ij`` the matrix of the node's second-order rule (:meth:`NaryOp.curvature`), the block
``(i, j)`` of the Hessian of ``<u_v, f(a)>``. Every ``D_ij`` is sparse from shapes alone
(diagonal for elementwise functions, broadcast pairs for two-argument ones, groups for softmax, a
dense block only for the cross terms of a contraction), so ``H`` is a sum of sparse products:
diagonal for an elementwise loss, banded for Rosenbrock, never a dense matrix. Each pair
``i < j`` adds its term and the term's transpose (``D_ji = D_ij^T``) and the sum is symmetrized,
so the result is exactly symmetric. The non-zero bound, from the operations' fans, is checked
before any arithmetic.
"""

from collections.abc import Container, Iterator, Mapping, Sequence

import numpy as np
import scipy.sparse as sp

from .. import layout
from ..cancel import checkpoint
from ..descent import check_scalar_shape
from ..errors import LimitExceeded
from ..functions import FunctionLimits
from ..hessian import HessianFormat, HessianResult, _symmetrized, hessian_format
from ..hessian import program_hessian as dense_program_hessian
from ..sparse import Factor, RowMap, coo_from_triplets, factor_of, index_dtype, matmul, to_coo
from ..types import FloatArray, IndexArray, Order
from .hvp import Linearization, _finite
from .program import Node, Program, blame
from .strategies import _add

__all__ = ["HessianPlan", "hessian_plan", "program_hessian"]


class HessianPlan:
    """Bounds of a program's joint Hessian over ``names``, from shapes alone.

    Attributes
    ----------
    names : tuple of str
        The differentiated inputs.
    size : int
        ``N``, their joint size.
    nnz_bound : int
        Bound on the Hessian's entries.
    peak_nnz : int
        Bound on the entries held at once: the largest ``P_v`` while the Jacobians are built, or
        three copies of those that the curvature terms read (``P_v^T``, stacked into ``Q^T``,
        and ``Q``).
    block_elements : int
        The largest curvature workspace (a dense ``D_ij`` or ``K`` tangents of a group).
    """

    def __init__(self, program: Program, names: Sequence[str]) -> None:
        self.names = tuple(names)
        active = frozenset(self.names)
        sizes = {name: layout.size_of(shape) for name, shape in program.shapes.items()}
        self.size = n = sum(sizes[name] for name in self.names)
        # fan_out: elements of v one input element reaches; fan_in: inputs one element reads.
        fans = dict.fromkeys(self.names, (1, 1))
        per_row = peak = block = 0
        bounds = {name: sizes[name] for name in self.names}  # entries of each P_v
        read: set[str] = set()
        for node in program.nodes:
            if not program.depends(node.id) & active:
                continue
            shapes = [program.shapes[a] for a in node.args]
            fan_out = fan_in = 0
            for j, arg in enumerate(node.args):
                if arg in fans:
                    s = program.sparsity[(node.id, j)]
                    fan_out += fans[arg][0] * s.fan_out
                    fan_in += fans[arg][1] * s.fan_in
            fans[node.id] = (min(fan_out, sizes[node.id]), min(fan_in, n))
            bounds[node.id] = min(n * fans[node.id][0], sizes[node.id] * fans[node.id][1])
            peak = max(peak, bounds[node.id])
            for i, j in _pairs(node, fans):
                fan = node.op.curvature_fan(shapes, i, j)
                if fan is None:
                    continue
                a, b = node.args[i], node.args[j]
                read |= {a, b}
                per_row += fans[a][0] * fan * fans[b][1]
                block = max(block, sizes[a] * fan, sizes[b] * fan)
        self.nnz_bound = n * min(n, per_row)
        self.peak_nnz = max(peak, 3 * sum(bounds[v] for v in read))
        self.block_elements = block

    def check(self, limits: FunctionLimits) -> None:
        """Raise :class:`LimitExceeded` if a bound is over its limit (before any arithmetic)."""
        if self.nnz_bound > limits.max_nnz:
            raise LimitExceeded(
                "Hessian non-zeros (upper bound)", self.nnz_bound, limits.max_nnz,
                hint="use /v1/hvp", setting="max_coo_nnz",
            )  # fmt: skip
        if self.peak_nnz > limits.max_nnz:
            raise LimitExceeded(
                "non-zeros of an intermediate Jacobian of the Hessian (upper bound)",
                self.peak_nnz, limits.max_nnz, hint="use /v1/hvp", setting="max_coo_nnz",
            )  # fmt: skip
        if self.block_elements > limits.max_tensor_elements:
            raise LimitExceeded(
                "elements of an operation's curvature block", self.block_elements,
                limits.max_tensor_elements, hint="use /v1/hvp", setting="max_tensor_elements",
            )  # fmt: skip


def hessian_plan(program: Program, wrt: Sequence[str] | None) -> HessianPlan:
    """Return the bounds of the joint Hessian over ``wrt`` (default: every input).

    Raises
    ------
    GraphError
        If ``wrt`` names something that is not an input.
    ShapeError
        If the output is not scalar.
    """
    names = program.check_wrt(wrt)
    check_scalar_shape(program.out_shape, "a Hessian")
    return HessianPlan(program, names)


def _pairs(node: Node, reached: Container[str]) -> Iterator[tuple[int, int]]:
    """Yield every ordered pair of arguments that the differentiated inputs both reach."""
    for i, a in enumerate(node.args):
        for j, b in enumerate(node.args):
            if a in reached and b in reached:
                yield i, j


Blocks = dict[tuple[int, int], Factor]


def _curved(point: Linearization, order: Order) -> dict[str, Blocks]:
    """Return each node's non-zero curvature blocks ``D_ij`` (``i <= j``) at the point."""
    program, values = point.program, point.values
    reached = {name for name in program.shapes if program.depends(name) & set(point.names)}
    curved: dict[str, Blocks] = {}
    for node in program.nodes:
        u = point.adjoints.get(node.id)
        if u is None or node.id not in reached:
            continue
        args = [values[a] for a in node.args]
        shapes = [a.shape for a in args]
        with blame(node):
            blocks = {
                (i, j): node.op._curvature(args, i, j, u[0], order)
                for i, j in _pairs(node, reached)
                if i <= j and node.op.curvature_fan(shapes, i, j) is not None
            }
        if blocks:
            curved[node.id] = blocks
    return curved


def _slots(program: Program, curved: Mapping[str, Blocks]) -> dict[str, int]:
    """Return the offset of each value that a curvature block reads, in ``Q``'s columns."""
    offsets: dict[str, int] = {}
    total = 0
    for node in program.nodes:
        for pair in curved.get(node.id, {}):
            for arg in (node.args[k] for k in pair):
                if arg not in offsets:
                    offsets[arg] = total
                    total += layout.size_of(program.shapes[arg])
    return offsets


def _reads(program: Program, slots: Container[str], active: frozenset[str]) -> dict[str, set[str]]:
    """Return, per node whose ``P_v`` is needed, the arguments whose ``P`` it reads.

    ``P_v`` is needed for the values in ``slots`` and, recursively, their arguments that depend
    on a differentiated input.
    """
    reads: dict[str, set[str]] = {}
    for node in reversed(program.nodes):
        if node.id in slots or any(node.id in needs for needs in reads.values()):
            reads[node.id] = {arg for arg in node.args if program.depends(arg) & active}
    return reads


def _curvature_matrix(
    program: Program, curved: Mapping[str, Blocks], slots: Mapping[str, int]
) -> Factor:
    """``M``: every block ``D_ij`` at (slot of argument i, slot of argument j), and ``D_ij^T``."""
    size = sum(layout.size_of(program.shapes[v]) for v in slots)
    blocks = [
        (
            node.args[i],
            node.args[j],
            i == j,
            block if isinstance(block, RowMap) else factor_of(block),
        )
        for node in program.nodes
        for (i, j), block in curved.get(node.id, {}).items()
    ]
    if all(same and isinstance(f, RowMap) and f.col is None for _, _, same, f in blocks):
        # Every block diagonal (elementwise curvature): M is the sum of the diagonals.
        diagonal = np.zeros(size)
        for a, _, _, f in blocks:
            assert isinstance(f, RowMap)
            diagonal[slots[a] : slots[a] + f.shape[0]] += f.value
        return RowMap((size, size), diagonal)
    rows: list[IndexArray] = [np.zeros(0, np.int64)]
    cols: list[IndexArray] = [np.zeros(0, np.int64)]
    data: list[FloatArray] = [np.zeros(0)]
    for a, b, same, f in blocks:
        coo = to_coo(f)
        r, c = coo.row.astype(np.int64) + slots[a], coo.col.astype(np.int64) + slots[b]
        rows += [r] if same else [r, c]
        cols += [c] if same else [c, r]
        data += [coo.data] if same else [coo.data, coo.data]
    triplets = (np.concatenate(rows), np.concatenate(cols), np.concatenate(data))
    return factor_of(coo_from_triplets(*triplets, (size, size)))


def _embedding(n: int, offset: int, size: int) -> RowMap:
    """``P_w``: row ``offset + k`` of the joint index holds 1 in column ``k``."""
    if offset == 0 and size == n:
        return RowMap((n, n), np.ones(n))
    value = np.zeros(n)
    value[offset : offset + size] = 1.0
    col = np.zeros(n, dtype=np.int64)
    col[offset : offset + size] = np.arange(size)
    return RowMap((n, size), value, col)


def _is_identity(factor: Factor) -> bool:
    # a square diagonal of ones: composing with it changes no entry (RowMap's empty rows aside)
    if not isinstance(factor, RowMap) or factor.col is not None:
        return False
    return factor.shape[0] == factor.shape[1] and bool(np.all(factor.value == 1.0))


def _transpose(factor: Factor) -> sp.csr_array:
    if isinstance(factor, RowMap) and factor.keeps_order():
        # Columns increase along the rows: row c of the transpose holds the one row that maps to
        # c, and the rows come out in order (a slice, a diagonal).
        present = np.flatnonzero(factor.value)
        dtype = index_dtype(factor.shape, present.size)
        if present.size == factor.shape[1]:
            # increasing columns, as many as there are: each is hit once (a slice onto its range)
            indptr = np.arange(present.size + 1, dtype=dtype)
        else:
            indptr = np.zeros(factor.shape[1] + 1, dtype=dtype)
            counts = np.bincount(factor.columns()[present], minlength=factor.shape[1])
            np.cumsum(counts, out=indptr[1:])
        transposed = sp.csr_array(
            (factor.value[present], present.astype(dtype), indptr), shape=factor.shape[::-1]
        )
        transposed.has_canonical_format = True
        return transposed
    csr = factor.to_csr() if isinstance(factor, RowMap) else factor
    transposed = sp.csr_array(csr.T.tocsr())
    transposed.has_canonical_format = True  # CSC -> CSR sorts each row
    return transposed


def structural_hessian(
    program: Program, inputs: Mapping[str, FloatArray], plan: HessianPlan, *, order: Order
) -> HessianResult:
    """Return the program's value and its joint Hessian as canonical COO (module docstring).

    Parameters
    ----------
    program : Program
    inputs : mapping of str to ndarray
    plan : HessianPlan
        Of ``program`` over the differentiated inputs, checked against the limits.
    order : {"F", "C"}

    Returns
    -------
    HessianResult
        ``N x N`` canonical COO, exactly symmetric.
    """
    names, n = plan.names, plan.size
    active = frozenset(names)
    point = Linearization(program, inputs, names)
    values = point.values
    curved = _curved(point, order)
    slots = _slots(program, curved)
    reads = _reads(program, slots, active)
    uses = dict.fromkeys(program.shapes, 0)  # the later reads of each P_v
    for needs in reads.values():
        for name in needs:
            uses[name] += 1
    reached: dict[str, Factor] = {}
    transposed: dict[str, sp.csr_array] = {}  # P_v^T of the values in slots
    offset = 0
    for name in names:
        size = layout.size_of(program.inputs[name])
        reached[name] = _embedding(n, offset, size)
        offset += size
        if name in slots:
            transposed[name] = _transpose(reached[name])
    # P_w of the only input is the identity: P_w J = J, without composing with it; likewise a
    # local Jacobian that is the identity
    identity = names[0] if len(names) == 1 else None
    for node in program.nodes:
        checkpoint()
        if node.id not in reads:
            continue
        args = [values[a] for a in node.args]
        factor: Factor | None = None
        for j, arg in enumerate(node.args):
            if arg in reads[node.id]:
                with blame(node):
                    local = node.op._local_factor(args, j, order)
                if arg == identity:
                    image = local
                elif _is_identity(local):  # P J = P (add, subtract's first argument)
                    image = reached[arg]
                else:
                    image = matmul(reached[arg], local)
                factor = _add(factor, image)
        for arg in reads[node.id]:
            uses[arg] -= 1
            if uses[arg] == 0:
                del reached[arg]  # no later node reads P_arg
        assert factor is not None, "a value whose P is needed depends on an input"
        reached[node.id] = factor
        if node.id in slots:
            transposed[node.id] = _transpose(factor)
    total: sp.csr_array | None = None
    if slots:
        # H = Q M Q^T with Q = [P_v for v in slots] (N x S): one sparse product for all terms.
        q_transposed = sp.csr_array(sp.vstack([transposed[v] for v in slots], format="csr"))
        product = matmul(
            matmul(_transpose(q_transposed), _curvature_matrix(program, curved, slots)),
            q_transposed,
        )
        total = product.to_csr() if isinstance(product, RowMap) else product
    symmetric = _symmetrized(sp.csr_array((n, n)) if total is None else total)
    _finite(symmetric.data, "the Hessian")
    return HessianResult(values[program.output], symmetric)


def program_hessian(
    program: Program,
    inputs: Mapping[str, FloatArray],
    wrt: Sequence[str] | None,
    *,
    order: Order,
    fmt: HessianFormat,
    limits: FunctionLimits,
) -> HessianResult:
    """Return a program's value and its joint Hessian over ``wrt``, COO or dense.

    ``"coo"`` builds it from structural sparsity (:func:`structural_hessian`); ``"dense"`` from
    Hessian-vector products of the basis (:func:`service.engine.hessian.program_hessian`);
    ``"auto"`` takes COO when the non-zero bound is below a third of the ``N²`` entries or a dense
    matrix would exceed its limit, dense otherwise (as for op lists).

    Raises
    ------
    GraphError, ShapeError
        As for :func:`hessian_plan`.
    LimitExceeded
        Before any arithmetic, if a bound of the chosen format is over its limit.
    ParameterError, DomainError, NonFiniteError
        From an operation, naming the node.
    """
    plan = hessian_plan(program, wrt)
    n = plan.size
    if hessian_format(n, plan.nnz_bound, fmt, limits.max_dense_elements) == "dense":
        return dense_program_hessian(program, inputs, plan.names, order=order, limits=limits)
    plan.check(limits)
    return structural_hessian(program, inputs, plan, order=order)
