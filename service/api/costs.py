"""The estimates of the function routes, from shapes alone (what each route checks first).

Each ``*_cost`` function returns a :class:`~service.api.budget.RequestCost` for one request body;
the route calls it (through :func:`~service.api.budget.check_request`) before any arithmetic, and
``POST /v1/estimate`` calls the same function without computing, so the two cannot disagree.
"""

from typing import Any, cast

import numpy as np

from ..codec import Encoding, decode_tensor
from ..codec.sparse import CooJacobianIn, DenseJacobianIn
from ..config import Settings
from ..engine import estimates, functions
from ..engine.chain import Chain
from ..engine.layout import size_of
from ..engine.types import FloatArray, Layout, Order
from .budget import Payload, RequestCost, coo_payload, float_payload
from .schemas.functions import (
    ChainRuleRequest,
    EvaluateRequest,
    JacobianRequest,
    JvpRequest,
    VjpRequest,
)
from .schemas.ops import OpSpec


def chain_of(function: list[OpSpec], x: FloatArray, order: Order) -> Chain:
    """Return the :class:`Chain` of an op list applied to ``x`` (the x form)."""
    return Chain([spec.to_engine(order) for spec in function], x.shape)


def function_limits(settings: Settings) -> functions.FunctionLimits:
    """Return the engine's bounds on one function request from the settings."""
    return functions.FunctionLimits(
        max_tensor_elements=settings.max_tensor_elements,
        max_dense_elements=settings.max_dense_jacobian_elements,
        max_nnz=settings.max_coo_nnz,
    )


def _x_chain(body: Any) -> Chain:
    # The x form: an op list applied to x.
    assert body.x is not None and isinstance(body.function, list)
    return chain_of(body.function, decode_tensor(body.x), body.order)


def evaluate_cost(body: EvaluateRequest, settings: Settings) -> RequestCost:
    """Estimate ``/v1/evaluate`` from shapes alone."""
    chain = _x_chain(body)
    functions.check_intermediates(chain, settings.max_tensor_elements)
    payload = float_payload(size_of(chain.out_shape), body.encoding)
    facts = {"output_shape": list(chain.out_shape), "shapes": [list(s) for s in chain.shapes]}
    return RequestCost(estimates.evaluate_cost(chain), payload, facts)


def jacobian_payload(
    fmt: str, nnz_bound: int, in_size: int, out_size: int, encoding: Encoding
) -> Payload:
    """Return the payload of a Jacobian in ``fmt`` (``"coo"`` or ``"dense"``)."""
    if fmt == "coo":
        return coo_payload(nnz_bound, in_size, out_size, encoding)
    return float_payload(in_size * out_size, encoding)


def jacobian_cost(body: JacobianRequest, settings: Settings) -> RequestCost:
    """Estimate ``/v1/jacobian``; its facts name the format and strategy ``auto`` resolves to."""
    chain = _x_chain(body)
    fmt, plan = functions.plan_jacobian(
        chain, fmt=body.format, strategy=body.strategy, limits=function_limits(settings)
    )
    n, m = size_of(chain.in_shape), size_of(chain.out_shape)
    payload = float_payload(m, body.encoding) + jacobian_payload(
        fmt, plan.nnz_bound, n, m, body.encoding
    )
    cost = estimates.jacobian_cost(chain, plan, fmt, body.check)
    rows, cols = (n, m) if body.layout == "in_out" else (m, n)
    facts = {
        "output_shape": list(chain.out_shape),
        "jacobian_shape": [rows, cols],
        "nnz_bound": plan.nnz_bound,
        "dense_bytes": 8 * n * m,
        "format": fmt,
        "strategy": plan.strategy,
        "strategy_costs": plan.costs,
    }
    return RequestCost(cost, payload, facts)


def product_cost(body: JvpRequest | VjpRequest, settings: Settings) -> RequestCost:
    """Estimate ``/v1/jvp`` or ``/v1/vjp`` from shapes alone."""
    chain = _x_chain(body)
    functions.check_intermediates(chain, settings.max_tensor_elements)
    n, m = size_of(chain.in_shape), size_of(chain.out_shape)
    product_size = m if isinstance(body, JvpRequest) else n
    payload = float_payload(m, body.encoding) + float_payload(product_size, body.encoding)
    facts = {"output_shape": list(chain.out_shape), "input_shape": list(chain.in_shape)}
    return RequestCost(estimates.product_cost(chain, body.check), payload, facts)


def _given(jacobian: CooJacobianIn | DenseJacobianIn, layout: Layout) -> estimates.GivenJacobian:
    # What the chain rule knows of a factor before decoding it, in in_out orientation; a matrix
    # may state its own layout (the request's by default).
    if isinstance(jacobian, CooJacobianIn):
        rows, cols = jacobian.shape
        # validated: the decoded arrays
        row, col = np.asarray(cast(Any, jacobian.row)), np.asarray(cast(Any, jacobian.col))
        if (jacobian.layout or layout) == "out_in":
            rows, cols, row, col = cols, rows, col, row
        if row.shape != col.shape:  # the decoder refuses it with a pointer
            return estimates.GivenJacobian(rows, cols, int(row.size), False)
        return estimates.GivenJacobian(rows, cols, int(row.size), False, row, col)
    data = decode_tensor(jacobian.data)
    rows, cols = (data.shape + (1, 1))[:2] if data.ndim < 2 else data.shape[:2]
    if (jacobian.layout or layout) == "out_in":
        rows, cols = cols, rows
    return estimates.GivenJacobian(rows, cols, data.size, True)


def chain_rule_cost(body: ChainRuleRequest, settings: Settings) -> RequestCost:
    """Estimate ``/v1/chain-rule`` before decoding a factor; the facts name the format."""
    # In in_out orientation the product is J_1 ... J_n whatever the layouts.
    factors = [_given(jacobian, body.layout) for jacobian in body.jacobians]
    fmt = body.format
    if fmt == "auto":
        coo = any(isinstance(j, CooJacobianIn) for j in body.jacobians)
        fmt = "coo" if coo else "dense"
    cost, nnz = estimates.multiply_cost(factors, fmt == "dense")
    rows, cols = factors[0].rows, factors[-1].cols
    payload = jacobian_payload(fmt, nnz, rows, cols, body.encoding)
    if body.layout == "out_in":
        rows, cols = cols, rows
    facts = {"jacobian_shape": [rows, cols], "nnz_bound": nnz, "dense_bytes": 8 * rows * cols,
             "format": fmt}  # fmt: skip
    return RequestCost(cost, payload, facts)
