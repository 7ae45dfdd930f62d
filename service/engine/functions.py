"""Entry points for requests on functions: one call per request, limits checked first.

The API builds a :class:`~service.engine.chain.Chain` from the request and calls exactly one of
these. Each checks every intermediate tensor's size from the chain's shapes before evaluating, so
a function that would blow up memory is refused at the cost of a few integer products.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import scipy.sparse as sp

from .cancel import checkpoint
from .chain import Chain
from .errors import LimitExceeded, ShapeError
from .fdcheck import Differentiable, FDCheck, fd_check
from .jacobian import Format, Jacobian
from .layout import size_of
from .sparse import canonicalize, check_dense, check_nnz, to_dense
from .strategy import ComputedBy, JacobianPlan, Strategy
from .types import FloatArray, Layout, Order

FormatRequest = Literal["coo", "dense", "auto"]
Direction = Literal["jvp", "vjp"]
# Directions of the finite-difference check; fewer for large tensors (see bounded_fd_check).
FD_DIRECTIONS = 32
# A COO entry costs 24 bytes and a dense one 8: below a third of the entries COO is smaller.
_COO_DENSITY = 1 / 3


@dataclass(frozen=True)
class FunctionLimits:
    """Bounds from the service settings (the engine never reads settings)."""

    max_tensor_elements: int
    max_dense_elements: int
    max_nnz: int


@dataclass(frozen=True, eq=False)
class JacobianResult:
    """``f(x)``, its Jacobian, the strategy that built it and the optional check."""

    value: FloatArray
    jacobian: Jacobian
    strategy: ComputedBy
    check: FDCheck | None


@dataclass(frozen=True, eq=False)
class ProductResult:
    """``f(x)``, a JVP or VJP, and the optional check."""

    value: FloatArray
    product: FloatArray
    check: FDCheck | None


def check_intermediates(chain: Chain, max_elements: int) -> None:
    """Raise :class:`LimitExceeded` if any tensor along the chain exceeds ``max_elements``.

    The tensors are the input, every operation's output and every operation's largest temporary
    (e.g. a cross-correlation's padded image), all known from the shapes.
    """
    for index, shape in enumerate(chain.shapes):
        size = size_of(shape)
        if size > max_elements:
            where = "the input" if index == 0 else f"the output of operation {index - 1}"
            raise LimitExceeded(
                f"elements of {where}", size, max_elements, setting="max_tensor_elements"
            )
    for index, (op, shape) in enumerate(zip(chain.ops, chain.shapes, strict=False)):
        workspace = op.workspace_elements(shape)
        if workspace > max_elements:
            raise LimitExceeded(
                f"elements of operation {index} ({op.name})'s working array", workspace,
                max_elements, setting="max_tensor_elements",
            )  # fmt: skip


def bounded_fd_check(
    function: Chain | Differentiable, x: FloatArray, largest: int, limits: FunctionLimits
) -> FDCheck:
    """Run the finite-difference check with as many directions as the tensor limit allows.

    The check pushes a batch of directions through every operation at once, so the batch times
    ``largest``, the largest value along the function, must stay under the limit.
    """
    directions = min(FD_DIRECTIONS, limits.max_tensor_elements // largest)
    if directions < 1:
        raise LimitExceeded(
            "finite-difference check elements", largest, limits.max_tensor_elements,
            setting="max_tensor_elements",
        )  # fmt: skip
    return fd_check(function, x, max_directions=directions, max_elements=limits.max_tensor_elements)


def _chain_fd_check(chain: Chain, x: FloatArray, limits: FunctionLimits) -> FDCheck:
    return bounded_fd_check(chain, x, max(size_of(shape) for shape in chain.shapes), limits)


def evaluate(chain: Chain, x: FloatArray, limits: FunctionLimits) -> FloatArray:
    """Return ``h(x)``.

    Parameters
    ----------
    chain : Chain
    x : ndarray, shape ``chain.in_shape``
    limits : FunctionLimits

    Returns
    -------
    ndarray, shape ``chain.out_shape``
    """
    check_intermediates(chain, limits.max_tensor_elements)
    return chain.forward(x)


def _resolve_format(chain: Chain, requested: FormatRequest, limits: FunctionLimits) -> Format:
    if requested != "auto":
        return requested
    dense = size_of(chain.in_shape) * size_of(chain.out_shape)
    sparse_enough = chain.nnz_bound() < _COO_DENSITY * dense
    return "coo" if sparse_enough or dense > limits.max_dense_elements else "dense"


def plan_jacobian(
    chain: Chain, *, fmt: FormatRequest, strategy: Strategy, limits: FunctionLimits
) -> tuple[Format, JacobianPlan]:
    """Resolve the format and plan the strategy of a Jacobian, from shapes alone.

    Parameters
    ----------
    chain : Chain
    fmt : {"coo", "dense", "auto"}
    strategy : {"auto", "chain", "reverse", "forward"}
    limits : FunctionLimits

    Returns
    -------
    format : {"coo", "dense"}
    plan : JacobianPlan

    Raises
    ------
    LimitExceeded
        If a tensor, the dense matrix or the non-zero bound is over a limit.
    """
    check_intermediates(chain, limits.max_tensor_elements)
    resolved = _resolve_format(chain, fmt, limits)
    plan = chain.plan(
        strategy=strategy,
        fmt=resolved,
        max_dense_elements=limits.max_dense_elements,
        max_nnz=limits.max_nnz,
    )
    return resolved, plan


def jacobian(
    chain: Chain,
    x: FloatArray,
    *,
    fmt: FormatRequest,
    strategy: Strategy,
    layout: Layout,
    order: Order,
    check: bool,
    limits: FunctionLimits,
) -> JacobianResult:
    """Return ``h(x)`` and the Jacobian of ``h`` at ``x``.

    Parameters
    ----------
    chain : Chain
    x : ndarray, shape ``chain.in_shape``
    fmt : {"coo", "dense", "auto"}
        ``"auto"``: COO when the non-zero bound is below a third of the entries (COO is then the
        smaller payload) or when a dense matrix would exceed its limit; dense otherwise.
    strategy : {"auto", "chain", "reverse", "forward"}
    layout : {"in_out", "out_in"}
    order : {"F", "C"}
    check : bool
        Also compare with central differences (:func:`~service.engine.fdcheck.fd_check`).
    limits : FunctionLimits

    Returns
    -------
    JacobianResult

    Raises
    ------
    LimitExceeded
        Before computing, if a tensor, the dense matrix or the non-zero bound is over a limit.
    """
    resolved, plan = plan_jacobian(chain, fmt=fmt, strategy=strategy, limits=limits)
    result = chain.jacobian(
        x,
        order=order,
        strategy=plan.strategy,
        fmt=resolved,
        layout=layout,
        max_dense_elements=limits.max_dense_elements,
        max_nnz=limits.max_nnz,
    )
    report = _chain_fd_check(chain, x, limits) if check else None
    return JacobianResult(chain.forward(x), result, plan.strategy, report)


def product(
    chain: Chain,
    x: FloatArray,
    vector: FloatArray,
    *,
    direction: Direction,
    check: bool,
    limits: FunctionLimits,
) -> ProductResult:
    """Return ``h(x)`` and a JVP or VJP at ``x``, without forming ``J``.

    Parameters
    ----------
    chain : Chain
    x : ndarray, shape ``chain.in_shape``
    vector : ndarray
        The tangent ``v`` (shape ``chain.in_shape``) for ``"jvp"``, the cotangent ``u`` (shape
        ``chain.out_shape``) for ``"vjp"``.
    direction : {"jvp", "vjp"}
        ``"jvp"``: ``ten(J^T vec(v))`` (shape ``chain.out_shape``); ``"vjp"``: ``ten(J vec(u))``
        (shape ``chain.in_shape``), in the notes' layout.
    check : bool
    limits : FunctionLimits

    Returns
    -------
    ProductResult

    Raises
    ------
    ShapeError
        If ``vector`` does not have the shape its direction needs.
    """
    check_intermediates(chain, limits.max_tensor_elements)
    if direction == "jvp":
        expected, name, side = chain.in_shape, "tangent", "the input x"
    else:
        expected, name, side = chain.out_shape, "cotangent", "the output h(x)"
    if vector.shape != expected:
        raise ShapeError(f"{name} has shape {list(vector.shape)}, {side} has {list(expected)}")
    # (1, *shape): the rules are batched over a leading axis
    batch = vector[np.newaxis]
    if direction == "vjp":
        value, pulled = chain.vjp_with_value(x, batch)
        report = _chain_fd_check(chain, x, limits) if check else None
        return ProductResult(value, pulled[0], report)
    before_last, pushed = chain.jvp_to_last(x, batch)
    report = _chain_fd_check(chain, x, limits) if check else None
    # The value's last operation runs after the check, where evaluating h(x) used to run, so a
    # failure in it is reported in the same order as before.
    return ProductResult(chain.last(before_last), pushed[0], report)


def multiply(
    matrices: Sequence[sp.coo_array | FloatArray],
    *,
    layout: Layout,
    fmt: FormatRequest,
    max_nnz: int,
    max_dense_elements: int,
) -> sp.coo_array | FloatArray:
    """Compose Jacobians by the chain rule: ``J_h = J_1 J_2 ... J_n`` in the notes' layout.

    Parameters
    ----------
    matrices : sequence of scipy.sparse.coo_array or ndarray
        ``[J_1, ..., J_n]`` of the functions applied first to last. In layout ``"in_out"``
        ``J_i`` has shape (size of its input, size of its output); in ``"out_in"`` the
        transpose, and the product is ``J_n ... J_1``.
    layout : {"in_out", "out_in"}
    fmt : {"coo", "dense", "auto"}
        ``"auto"``: COO if any factor is COO, dense otherwise.
    max_nnz, max_dense_elements : int

    Returns
    -------
    scipy.sparse.coo_array (canonical) or ndarray

    Raises
    ------
    ShapeError
        If consecutive Jacobians do not chain; the message names both positions and sizes.
    LimitExceeded
        If the result, or an intermediate product's non-zero bound, is over a limit; each bound
        is computed before the product it bounds.
    """
    for index in range(len(matrices) - 1):
        first, second = matrices[index], matrices[index + 1]
        outer, inner = (first, second) if layout == "in_out" else (second, first)
        if outer.shape[1] != inner.shape[0]:
            side = "columns" if layout == "in_out" else "rows"
            other = "rows" if layout == "in_out" else "columns"
            count_first = first.shape[1] if layout == "in_out" else first.shape[0]
            count_second = second.shape[0] if layout == "in_out" else second.shape[1]
            raise ShapeError(
                f"jacobians[{index}] has {count_first} {side} but jacobians[{index + 1}] has "
                f"{count_second} {other}: the output of function {index} must be the input of "
                f"function {index + 1}"
            )
    factors = list(matrices) if layout == "in_out" else list(reversed(matrices))
    resolved = fmt
    if fmt == "auto":
        resolved = "coo" if any(isinstance(m, sp.coo_array) for m in matrices) else "dense"
    rows, cols = factors[0].shape[0], factors[-1].shape[1]
    if resolved == "dense":
        check_dense(rows, cols, max_dense_elements)
    product = sp.csr_array(factors[0])
    for factor in factors[1:]:
        checkpoint()  # between the products of a long chain
        right = sp.csr_array(factor)
        # nnz(AB) <= sum_k nnz(A[:, k]) * nnz(B[k, :]): an exact bound from the two patterns.
        bound = int(
            np.dot(
                np.bincount(product.indices, minlength=product.shape[1]).astype(np.int64),
                np.diff(right.indptr).astype(np.int64),
            )
        )
        check_nnz(bound, max_nnz, "non-zeros of a chain-rule product (upper bound)")
        product = product @ right
    coo = canonicalize(product)
    return to_dense(coo) if resolved == "dense" else coo


def check_labels(
    in_shape: tuple[int, ...], out_shape: tuple[int, ...], in_size: int, out_size: int
) -> None:
    """Raise :class:`ShapeError` if shape labels do not match a product's input/output sizes."""
    if size_of(in_shape) != in_size or size_of(out_shape) != out_size:
        raise ShapeError(
            f"in_shape {list(in_shape)} and out_shape {list(out_shape)} do not describe a "
            f"product with input size {in_size} and output size {out_size}"
        )
