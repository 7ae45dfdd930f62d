"""Second derivatives of a scalar function: exact Hessian-vector products and sparse Hessians.

Hessian-vector products (forward over reverse). For ``f = op_n ∘ ... ∘ op_1`` with scalar output,
the gradient is the reverse pass ``u_n = 1``, ``u_i = J_i u_{i+1}`` (VJPs at the stored
intermediates ``x_i``), and ``∇f = u_0``. Differentiating that pass along a tangent ``v`` (the JAX
``jvp(grad(f))``) needs the tangents of the intermediates, ``ẋ_0 = v``, ``ẋ_{i+1} = J_i^T ẋ_i``
(JVPs), and gives ``u̇_n = 0`` and

    u̇_i = J_i u̇_{i+1} + S_i(x_i, u_{i+1}) ẋ_i,        H v = u̇_0,

where ``S_i(x, u) t = d/dε ten(J_i(x + ε t) vec(u))`` is the operation's second-order rule
(:meth:`~service.engine.op.Op.second_order`): zero for linear operations, ``g''(x) u t`` for
elementwise ones. One HVP therefore costs one evaluation, one gradient pass, one JVP pass and one
VJP pass plus the second-order terms; a batch of tangents shares the evaluation and the gradient.

Hessians. Unrolling the recursion, ``H = sum_i P_i D_i P_i^T`` with ``P_i = J_1 ... J_{i-1}`` (the
Jacobian of ``x_i`` with respect to ``x``, notes' layout) and ``D_i`` the matrix of ``S_i``. Each
``D_i`` is block diagonal over groups that the operation names from shapes alone
(:meth:`~service.engine.op.Op.curvature_blocks`: one element per group for elementwise
functions, a slice for softmax), so it is read off ``K`` products with 0/1 tangents (``K`` the
group size), never from a dense matrix; ``P_i`` is the sparse chain-rule product. The result is
symmetrized, ``(H + H^T) / 2``, so it is exactly symmetric. Its non-zero bound, checked before any
arithmetic, follows from the operations' sparsity bounds.
"""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import scipy.sparse as sp

from . import layout
from .chain import Chain
from .curvature import weighted_hessian
from .descent import check_scalar, check_scalar_shape
from .errors import LimitExceeded, ShapeError
from .functions import FunctionLimits, check_intermediates
from .graph.hvp import Linearization, _finite
from .graph.program import Program
from .op import check_order
from .sparse import Factor, RowMap, canonicalize, matmul, to_dense
from .types import FloatArray, IndexArray, Order

__all__ = [
    "HessianFormat",
    "HessianResult",
    "HvpResult",
    "hessian",
    "hessian_format",
    "hessian_nnz_bound",
    "hvp",
    "program_hessian",
]

HessianFormat = Literal["coo", "dense", "auto"]
# A COO entry costs 24 bytes and a dense one 8: below a third of the entries COO is smaller.
_COO_DENSITY = 1 / 3


@dataclass(frozen=True, eq=False)
class HvpResult:
    """``f(x)``, ``∇f(x)`` and ``H v`` for each tangent ``v`` of a batch."""

    value: FloatArray
    gradient: FloatArray
    products: FloatArray


@dataclass(frozen=True, eq=False)
class HessianResult:
    """``f(x)`` and its Hessian: canonical COO or dense, ``in_size x in_size``, symmetric."""

    value: FloatArray
    matrix: sp.coo_array | FloatArray


def _adjoints(chain: Chain, values: tuple[FloatArray, ...]) -> list[FloatArray]:
    """Return the cotangent reaching each operation's output: item ``i`` for operation ``i``."""
    n = len(chain.ops)
    adjoints = [np.ones(chain.out_shape)]
    for index in range(n - 1, 0, -1):
        op = chain.ops[index]
        with chain.blame(index):
            adjoints.append(op.vjp(values[index], adjoints[-1][np.newaxis])[0])
    adjoints.reverse()
    return adjoints


def hvp(chain: Chain, x: FloatArray, tangents: FloatArray) -> HvpResult:
    """Return ``f(x)``, the gradient and ``H v`` for each ``v``, exactly (forward over reverse).

    Parameters
    ----------
    chain : Chain
        ``f``; its output must have exactly one element.
    x : ndarray, shape ``chain.in_shape``
    tangents : ndarray, shape (B, *in_shape)

    Returns
    -------
    HvpResult
        ``products`` has shape (B, *in_shape); ``gradient`` shape ``in_shape``.

    Raises
    ------
    ShapeError
        If ``f`` is not scalar or the shapes do not fit.
    ParameterError
        If an operation has no second-order rule.
    DomainError, NonFiniteError
        From an operation (named by its index), or a non-finite result.
    """
    check_scalar(chain, "a Hessian-vector product")
    values = chain.trace(x)
    tangents = np.asarray(tangents, dtype=np.float64)
    if tangents.ndim != len(chain.in_shape) + 1 or tangents.shape[1:] != chain.in_shape:
        raise ShapeError(
            f"vectors must have shape (B, {', '.join(map(str, chain.in_shape))}), "
            f"got {list(tangents.shape)}"
        )
    # The chain ran every shape rule once; each operation's domain is checked once here, then
    # its private rules run (as the descent objective's stages do).
    for index, op in enumerate(chain.ops):
        with chain.blame(index):
            op.check_domain(values[index], differentiating=True)
    # Tangents of the intermediates, only as far as the last operation with curvature needs.
    curved = [i for i, op in enumerate(chain.ops) if not op.linear]
    dots = [tangents]
    for index in range(curved[-1] if curved else 0):
        op = chain.ops[index]
        with chain.blame(index):
            dots.append(op._jvp(values[index], dots[-1]))
    # u (one cotangent) and u̇ (one per tangent; None while exactly zero) are pulled back
    # together, as one batch, through each operation.
    u: FloatArray = np.ones((1, *chain.out_shape))
    product: FloatArray | None = None
    for index in range(len(chain.ops) - 1, -1, -1):
        op = chain.ops[index]
        with chain.blame(index):
            term = None if op.linear else op._second_order(values[index], u[0], dots[index])
            if product is None:
                u = op._vjp(values[index], u)
            else:
                pulled = op._vjp(values[index], np.concatenate([u, product]))
                u, product = pulled[:1], pulled[1:]
        if term is not None:
            product = term if product is None else product + term
    products = np.zeros_like(tangents) if product is None else product
    return HvpResult(values[-1], _finite(u[0], "the gradient"), _finite(products, "the HVP"))


def hessian_nnz_bound(chain: Chain) -> int:
    """Bound the Hessian's non-zeros from shapes alone.

    Row ``r`` of ``P_i D_i P_i^T`` holds at most ``fan_out(P_i) · K_i · fan_in(P_i)`` entries:
    ``x_r`` reaches ``fan_out`` elements of ``x_i``, each is coupled to the ``K_i`` elements of its
    curvature group, each of which reads ``fan_in`` elements of ``x``.

    Parameters
    ----------
    chain : Chain

    Returns
    -------
    int
        At most ``in_size²``.
    """
    n = layout.size_of(chain.in_shape)
    per_row = 0
    for index, op in enumerate(chain.ops):
        blocks = op.curvature_blocks(chain.shapes[index], "C")
        if blocks is None:
            continue
        if index == 0:
            fan_out = fan_in = 1
        else:
            bound = chain._bound(0, index - 1)
            fan_out, fan_in = bound.fan_out, bound.fan_in
        per_row += min(n, fan_out * blocks.shape[1] * fan_in)
    return n * min(n, per_row)


def hessian_format(
    n: int, nnz_bound: int, fmt: HessianFormat, max_dense_elements: int
) -> Literal["coo", "dense"]:
    """Resolve ``"auto"`` for an ``n x n`` Hessian with at most ``nnz_bound`` non-zeros.

    ``"auto"``: COO when the non-zero bound is below a third of the entries or a dense matrix
    would exceed ``max_dense_elements``; dense otherwise.
    """
    if fmt != "auto":
        return fmt
    sparse_enough = nnz_bound < _COO_DENSITY * n * n
    return "coo" if sparse_enough or n * n > max_dense_elements else "dense"


def _curvature_matrix(
    chain: Chain,
    index: int,
    values: tuple[FloatArray, ...],
    adjoint: FloatArray,
    order: Order,
    blocks: IndexArray,
) -> sp.csr_array:
    """``D_i``: the weighted Hessian of operation ``index``, read off ``K`` products."""
    op = chain.ops[index]
    with chain.blame(index):
        matrix = weighted_hessian(op, values[index], adjoint, order, blocks)
    return matrix.to_csr() if isinstance(matrix, RowMap) else matrix


def _symmetrized(matrix: sp.csr_array) -> sp.coo_array:
    """Return ``(H + H^T) / 2`` as canonical COO: exactly symmetric, whatever the rounding.

    ``P D P^T`` has a symmetric pattern, so the canonical CSC of ``H`` lists its entries in the
    order that the canonical CSR of ``H^T`` would: the transpose's values, aligned entry for entry
    with ``H``'s, without a sparse addition. A pattern that is not symmetric (an entry that
    cancelled to zero on one side) takes the general sum.
    """
    matrix.sum_duplicates()  # canonical CSR: sorted, no duplicates
    by_column = matrix.tocsc()
    by_column.sum_duplicates()
    if np.array_equal(matrix.indptr, by_column.indptr) and np.array_equal(
        matrix.indices, by_column.indices
    ):
        data = (matrix.data + by_column.data) * 0.5
        matrix = sp.csr_array((data, matrix.indices, matrix.indptr), shape=matrix.shape)
    else:
        matrix = sp.csr_array((matrix + matrix.T) * 0.5)
    return canonicalize(matrix)


def hessian(
    chain: Chain,
    x: FloatArray,
    *,
    order: Order,
    fmt: HessianFormat,
    limits: FunctionLimits,
) -> HessianResult:
    """Return ``f(x)`` and the Hessian of ``f`` at ``x``, built from structural sparsity.

    Parameters
    ----------
    chain : Chain
        ``f``; its output must have exactly one element.
    x : ndarray, shape ``chain.in_shape``
    order : {"F", "C"}
        Order of the flat indices of rows and columns.
    fmt : {"coo", "dense", "auto"}
        ``"auto"``: COO when the non-zero bound is below a third of the entries or a dense matrix
        would exceed its limit; dense otherwise.
    limits : FunctionLimits

    Returns
    -------
    HessianResult
        ``in_size x in_size``; ``H[flat(i), flat(j)] = ∂²f / ∂x_i ∂x_j``.

    Raises
    ------
    ShapeError
        If ``f`` is not scalar.
    LimitExceeded
        Before any arithmetic, if an intermediate, the curvature workspace, the non-zero bound
        (COO) or ``in_size²`` (dense) is over its limit.
    ParameterError, DomainError, NonFiniteError
        As for :func:`hvp`.
    """
    check_order(order)
    check_scalar(chain, "a Hessian")
    check_intermediates(chain, limits.max_tensor_elements)
    n = layout.size_of(chain.in_shape)
    bound = hessian_nnz_bound(chain)
    fmt = hessian_format(n, bound, fmt, limits.max_dense_elements)
    if fmt == "dense" and n * n > limits.max_dense_elements:
        raise LimitExceeded(
            "dense Hessian elements",
            n * n,
            limits.max_dense_elements,
            hint="ask for format 'coo'",
            setting="max_dense_jacobian_elements",
        )
    if bound > limits.max_nnz:
        raise LimitExceeded(
            "Hessian non-zeros (upper bound)",
            bound,
            limits.max_nnz,
            hint="use /v1/hvp",
            setting="max_coo_nnz",
        )
    blocks = [op.curvature_blocks(chain.shapes[i], order) for i, op in enumerate(chain.ops)]
    for index, group in enumerate(blocks):
        if group is None:
            continue
        # K tangents of the operation's input, and G·K² entries of D_i.
        work = max(
            group.shape[1] * layout.size_of(chain.shapes[index]), group.size * group.shape[1]
        )
        if work > limits.max_tensor_elements:
            raise LimitExceeded(
                f"elements of operation {index} ({chain.ops[index].name})'s curvature blocks",
                work,
                limits.max_tensor_elements,
                setting="max_tensor_elements",
            )
    values = chain.trace(x)
    adjoints = _adjoints(chain, values)
    total: sp.csr_array | None = None
    reach: Factor = RowMap((n, n), np.ones(n))  # P_1 = I
    last = max((i for i, group in enumerate(blocks) if group is not None), default=-1)
    for index in range(last + 1):
        group = blocks[index]
        if group is not None:
            curvature = _curvature_matrix(chain, index, values, adjoints[index], order, group)
            p = reach.to_csr() if isinstance(reach, RowMap) else reach
            term = sp.csr_array(p @ curvature @ p.T)
            total = term if total is None else sp.csr_array(total + term)
        if index < last:
            op = chain.ops[index]
            with chain.blame(index):
                reach = matmul(reach, op.local_factor(values[index], order))
    symmetric = _symmetrized(sp.csr_array((n, n)) if total is None else total)
    _finite(symmetric.data, "the Hessian")
    matrix: sp.coo_array | FloatArray = to_dense(symmetric) if fmt == "dense" else symmetric
    return HessianResult(values[-1], matrix)


def program_hessian(
    program: Program,
    inputs: Mapping[str, FloatArray],
    wrt: Sequence[str] | None,
    *,
    order: Order,
    limits: FunctionLimits,
) -> HessianResult:
    """Return a program's value and its dense Hessian over the ``wrt`` inputs jointly.

    Rows and columns index the ``wrt`` inputs laid end to end in ``wrt`` order, each flattened in
    ``order``. Columns are Hessian-vector products of basis vectors at one linearization, in
    blocks that keep every batch of tangents under the tensor limit; the result is symmetrized.

    Raises
    ------
    LimitExceeded
        Before any arithmetic, if ``N²`` exceeds the dense limit (``N`` the joint size).
    """
    names = program.check_wrt(wrt)
    check_scalar_shape(program.out_shape, "a Hessian")
    shapes = [program.inputs[name] for name in names]
    sizes = [layout.size_of(shape) for shape in shapes]
    n = sum(sizes)
    if n * n > limits.max_dense_elements:
        raise LimitExceeded(
            "dense Hessian elements", n * n, limits.max_dense_elements, hint="use /v1/hvp",
            setting="max_dense_jacobian_elements",
        )  # fmt: skip
    largest = max(layout.size_of(shape) for shape in program.shapes.values())
    step = max(1, limits.max_tensor_elements // largest)
    offsets = np.cumsum([0, *sizes])
    dense = np.empty((n, n))
    point = Linearization(program, inputs, names)
    for start in range(0, n, step):
        stop = min(n, start + step)
        basis = np.zeros((stop - start, n))  # (b, N): e_start, ..., e_{stop-1}
        basis[np.arange(stop - start), np.arange(start, stop)] = 1.0
        vectors = {
            name: layout.ten_batch(basis[:, offsets[k] : offsets[k + 1]], shapes[k], order)
            for k, name in enumerate(names)
        }
        products = point.products(vectors, stop - start)
        blocks = [layout.vec_batch(products[name], 1, order) for name in names]
        dense[:, start:stop] = np.concatenate(blocks, axis=1).T
    symmetric = (dense + dense.T) * 0.5
    np.add(symmetric, 0.0, out=symmetric)  # -0.0 + 0.0 == +0.0: zeros written one way
    return HessianResult(point.value, symmetric)
