"""The cost of program requests (named inputs, n-ary operations), from shapes alone.

The same three numbers as :mod:`service.engine.cost` (work, peak transient bytes), priced per
node: a one-input node is its operation's rule (:func:`~service.engine.cost.op_cost`), an
``xcorr2d(image, kernel)`` node the cross-correlation's over its padded image, and any other
n-ary node multiply-adds from its local Jacobians' non-zero bounds plus its declared workspace
(an einsum's every label combination, a broadcast's output). A program that is a path of
one-input operations runs as an op list (:func:`~service.engine.graph.requests.as_chain`) and is
priced as one (:mod:`service.engine.estimates`). Each function mirrors the engine entry point it
names; ``tests/engine/test_program_cost.py`` checks that each bounds the measured peak.
"""

from collections.abc import Iterable, Sequence

from .. import layout
from ..cost import (
    BUFFERS,
    COO_ENTRY,
    FLOAT,
    INDEX,
    SPARSE_COPIES,
    Cost,
    Direction,
    dense_cost,
    op_cost,
    rule_cost,
    sparse_build_cost,
    spgemm_cost,
    xcorr_forward_cost,
)
from ..descent.params import PREPARED_NNZ
from ..functions import FD_DIRECTIONS
from ..jacobian import Format
from ..kernels.xcorr.columns import GATHER_COLUMNS
from ..strategy import BLOCK_ELEMENTS
from .curvature import HessianPlan
from .nary import NaryOp, Unary
from .ops.linalg import XCorr2D, _Contraction
from .program import Node, Program
from .strategies import ProgramPlan

__all__ = [
    "dense_hessian_cost",
    "fd_check_cost",
    "structural_hessian_cost",
    "hvp_cost",
    "jacobian_cost",
    "node_cost",
    "product_cost",
    "run_step_cost",
    "trace_cost",
]


def node_cost(
    op: NaryOp, shapes: Sequence[tuple[int, ...]], batch: int = 1, direction: Direction = "both"
) -> Cost:
    """Return the cost of one node's forward (or one derivative rule) on a batch.

    Parameters
    ----------
    op : NaryOp
    shapes : sequence of tuple of int
        The shapes of the node's arguments.
    batch : int
        Tangents or cotangents pushed through at once.
    direction : {"jvp", "vjp", "both"}
        The rule's direction (``"jvp"`` for the forward).
    """
    if isinstance(op, Unary):
        return op_cost(op.op, shapes[0], batch, direction=direction)
    if isinstance(op, XCorr2D):
        return xcorr_forward_cost(shapes[0], shapes[1], op.geometry, batch, direction)
    n = sum(layout.size_of(shape) for shape in shapes)
    m = layout.size_of(op.out_shape(shapes))
    if isinstance(op, _Contraction):
        # One multiply-add per combination of all labels; NumPy's einsum contracts pairwise
        # through BLAS, with temporaries of the operands' and the output's sizes only.
        return rule_cost(n, m, 0, op.workspace_elements(shapes), 0, batch)
    multiply_adds = sum(op.sparsity(shapes, i).nnz for i in range(len(shapes)))
    return rule_cost(n, m, op.workspace_elements(shapes), multiply_adds, 0, batch)


def _args(program: Program, node: Node) -> list[tuple[int, ...]]:
    return [program.shapes[arg] for arg in node.args]


def values_bytes(program: Program, batch: int = 1) -> int:
    """Return the bytes of every named value (``Program.trace`` keeps them all)."""
    return batch * FLOAT * sum(layout.size_of(shape) for shape in program.shapes.values())


def trace_cost(program: Program) -> Cost:
    """Return the cost of :meth:`Program.trace`: every node in order, every value held."""
    total = Cost()
    for node in program.nodes:
        total = total.then(node_cost(node.op, _args(program, node), direction="jvp"))
    return total.holding(values_bytes(program))


def _active(program: Program, names: Iterable[str]) -> list[Node]:
    wanted = frozenset(names)
    return [node for node in program.nodes if program.depends(node.id) & wanted]


def pass_cost(
    program: Program, names: Iterable[str], batch: int, direction: Direction = "both"
) -> Cost:
    """Return the cost of one batched JVP or VJP through the nodes that ``names`` reach.

    A rule costs at most twice its forward (as :func:`~service.engine.cost.pass_cost`); the
    tangents or cotangents of every value are held at once (cotangents accumulate).
    ``direction``: the pass's, or ``"both"`` when it is not known.
    """
    total = Cost()
    for node in _active(program, names):
        rule = node_cost(node.op, _args(program, node), batch, direction)
        arrays = rule.peak_bytes - BUFFERS
        total = total.then(Cost(2 * rule.flops, 2 * rule.bytes_touched, 2 * arrays + BUFFERS))
    return total.holding(values_bytes(program, batch))


def product_cost(program: Program, names: Sequence[str]) -> Cost:
    """Return the cost of :func:`~service.engine.graph.requests.product` (a JVP or the VJPs)."""
    return trace_cost(program).then(pass_cost(program, names, 1).holding(values_bytes(program)))


def _sum_over_paths_cost(program: Program, plan: ProgramPlan, names: Sequence[str]) -> Cost:
    # Every local factor is built, and each node's accumulated J_{w->v} is a sparse product of at
    # most the plan's peak entries.
    sizes = {name: layout.size_of(shape) for name, shape in program.shapes.items()}
    total = Cost()
    local = 0
    peak = plan.chain_peak_nnz
    for w in names:
        for node in _active(program, [w]):
            for j, arg in enumerate(node.args):
                nnz = program.sparsity[(node.id, j)].nnz
                local = max(local, nnz)
                build = sparse_build_cost(nnz, sizes[arg], sizes[node.id])
                product = spgemm_cost(sizes[w], sizes[arg], sizes[node.id], peak, nnz, peak)
                rule = node_cost(node.op, _args(program, node))
                total = total.then(build.then(product).then(rule))
    # the factors of one node and the J_{w->v} still needed are held while it is processed
    return total.holding(SPARSE_COPIES * COO_ENTRY * (peak * len(names) + local))


def jacobian_cost(program: Program, plan: ProgramPlan, names: Sequence[str], fmt: Format) -> Cost:
    """Return the cost of the Jacobians of a graph program by the planned strategy.

    ``forward``: each input's basis in blocks of at most ``BLOCK_ELEMENTS`` images of the widest
    value, pushed through the nodes it reaches; ``reverse``: the output's basis pulled back once
    for every input; ``chain``: the sums over paths. The result is held in COO pieces or dense.
    """
    m = layout.size_of(program.out_shape)
    sizes = {w: layout.size_of(program.inputs[w]) for w in names}
    widest = max(layout.size_of(shape) for shape in program.shapes.values())
    block = max(1, BLOCK_ELEMENTS // widest)
    total_nnz = sum(plan.nnz_bounds.values())
    if fmt == "dense":
        results = Cost(0, FLOAT * plan.dense_elements, FLOAT * plan.dense_elements)
        held = FLOAT * plan.dense_elements
    else:
        results = sparse_build_cost(total_nnz, max(sizes.values()), m)
        held = SPARSE_COPIES * COO_ENTRY * total_nnz
    if plan.strategy == "chain":
        build = _sum_over_paths_cost(program, plan, names)
    else:
        passes = [(sizes[w], [w]) for w in names] if plan.strategy == "forward" else [(m, names)]
        build = Cost()
        for count, active in passes:
            batch = min(count, block)
            blocks = -(-count // batch)
            width = sum(sizes.values()) + m
            basis = FLOAT * batch * width * 2  # the basis, its images, their non-zero triplets
            direction: Direction = "jvp" if plan.strategy == "forward" else "vjp"
            one = pass_cost(program, active, batch, direction)
            one = one.holding(basis + 3 * FLOAT * batch * width)
            build = build.then(one.times(blocks))
    cost = trace_cost(program).then(build.holding(held)).then(results)
    if fmt == "dense":
        cost = cost.then(dense_cost(max(sizes.values()), m))  # oriented: a second copy
    return cost


def run_step_cost(program: Program, variables: Sequence[str], max_prepared_nnz: int) -> Cost:
    """Return the cost of one step of a run over ``variables`` (value and gradient).

    The run prepares each linear node of one varying argument as a matrix, CSR or (at half its
    entries or more) dense, and holds it with its transpose (:mod:`.prepared`); every such node
    with at most ``min(max_prepared_nnz, PREPARED_NNZ)`` entries is charged, whether it mixes
    or not (an upper bound of the preparation's rule).
    """
    active = frozenset(variables)
    budget = min(max_prepared_nnz, PREPARED_NNZ)
    build, held = Cost(), 0
    for node in _active(program, variables):
        varying = [j for j, arg in enumerate(node.args) if program.depends(arg) & active]
        linear = node.op.op.linear if isinstance(node.op, Unary) else node.op.linear
        if len(varying) != 1 or not linear:
            continue
        j = varying[0]
        n = layout.size_of(program.shapes[node.args[j]])
        m = layout.size_of(program.shapes[node.id])
        nnz = min(program.sparsity[(node.id, j)].nnz, n * m)
        if nnz > budget:
            continue
        build = build.then(sparse_build_cost(nnz, n, m))
        held += min(2 * (FLOAT + INDEX) * nnz + INDEX * (n + m + 2), 2 * FLOAT * n * m)
    return build.then(product_cost(program, variables)).holding(held)


def hvp_cost(program: Program, names: Sequence[str], batch: int = 1) -> Cost:
    """Return the cost of a batch of exact Hessian-vector products (forward over reverse).

    The trace, the tangents pushed forward, the cotangents pulled back with their second-order
    terms: three passes, with the trace's values and the tangents' held; and per ``xcorr2d``
    node the kernel's Jacobian a linearization may keep as columns (``GATHER_COLUMNS`` at most).
    """
    passes = pass_cost(program, names, batch).times(3)
    columns = sum(
        FLOAT * min(GATHER_COLUMNS, layout.size_of(program.shapes[node.id][-2:]) *
                    layout.size_of(program.shapes[node.args[1]][-3:]))
        for node in program.nodes
        if isinstance(node.op, XCorr2D)
    )  # fmt: skip
    held = values_bytes(program, 1 + batch) + columns
    return trace_cost(program).then(passes.holding(held))


def dense_hessian_cost(program: Program, names: Sequence[str], max_tensor_elements: int) -> Cost:
    """Return the cost of the dense joint Hessian: ``n`` HVPs in batches, an ``n x n`` result.

    The batch is the engine's (``max_tensor_elements`` divided by the largest value).
    """
    n = sum(layout.size_of(program.inputs[name]) for name in names)
    largest = max(layout.size_of(shape) for shape in program.shapes.values())
    step = min(n, max(1, max_tensor_elements // largest))
    batches = -(-n // step)
    columns = hvp_cost(program, names, step).times(batches)
    result = dense_cost(n, n, 1)
    return columns.holding(result.peak_bytes + 2 * FLOAT * step * n).then(result)


def structural_hessian_cost(program: Program, plan: HessianPlan) -> Cost:
    """Return the cost of :func:`~service.engine.graph.curvature.structural_hessian` (COO).

    The trace and the adjoints; per node the differentiated inputs reach, its second-order
    blocks (batched rules over at most ``plan.block_elements``) and ``P_v``, a product of local
    factors with at most ``plan.peak_nnz`` entries; then ``Q M Q^T`` and its symmetrization, with
    at most ``plan.nnz_bound`` entries.
    """
    names = plan.names
    sizes = {name: layout.size_of(shape) for name, shape in program.shapes.items()}
    n, peak, bound = plan.size, plan.peak_nnz, plan.nnz_bound
    nodes = Cost()
    for node in _active(program, names):
        shapes = _args(program, node)
        local = sum(program.sparsity[(node.id, j)].nnz for j in range(len(node.args)))
        inner = sum(sizes[a] for a in node.args)
        product = spgemm_cost(n, inner, sizes[node.id], peak, local, peak)
        second = node_cost(node.op, shapes).times(2)
        nodes = nodes.then(second.then(sparse_build_cost(local, n, sizes[node.id])).then(product))
    blocks = FLOAT * 2 * plan.block_elements
    factors = SPARSE_COPIES * COO_ENTRY * peak * max(1, len(_active(program, names)))
    result = (
        spgemm_cost(n, n, n, bound, bound, bound)
        .times(2)
        .then(sparse_build_cost(bound, n, n).times(2))
    )
    build = pass_cost(program, names, 1, "vjp").then(nodes).then(result)
    return trace_cost(program).then(build.holding(blocks + factors))


def fd_check_cost(program: Program, names: Sequence[str]) -> Cost:
    """Return the cost of the finite-difference check of a program (``check: true``).

    As for op lists (:func:`~service.engine.estimates.fd_check_cost`): a batch of directions
    traced twice (both sides), pushed and pulled once, the quotients and the compared products
    held; plus the ``"chain"`` strategy's dense Jacobian it may compare (at most ``n x m``).
    """
    largest = max(layout.size_of(shape) for shape in program.shapes.values())
    directions = min(FD_DIRECTIONS, largest)
    probe = Cost()
    for node in program.nodes:
        probe = probe.then(node_cost(node.op, _args(program, node), directions, "jvp"))
    probe = probe.holding(values_bytes(program, directions))
    derivative = pass_cost(program, names, directions)
    n = sum(layout.size_of(program.inputs[name]) for name in names)
    compared = dense_cost(n, layout.size_of(program.out_shape), 1)
    # the kernels' fixed buffers (BUFFERS) are in probe's peak once, not in each of these
    held = 12 * (probe.peak_bytes - BUFFERS)
    return probe.times(2).then(derivative).then(compared).holding(held)
