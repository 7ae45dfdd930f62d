"""Functions as operation lists: list the operations, evaluate, differentiate, compose."""

from typing import Annotated, Any, cast

import numpy as np
from fastapi import APIRouter, Depends, Request

from ...codec import Encoding, Tensor, TensorOut, decode_tensor, encode_tensor
from ...codec.sparse import (
    CooJacobian,
    CooJacobianIn,
    DenseJacobian,
    DenseJacobianIn,
    encode_jacobian,
)
from ...config import Settings
from ...engine import estimates, functions
from ...engine.chain import Chain
from ...engine.functions import Direction
from ...engine.jacobian import Jacobian
from ...engine.layout import size_of
from ...engine.op import op_classes
from ...engine.types import FloatArray, Layout, Order
from ..budget import Payload, RequestCost, check_request, coo_payload, float_payload
from ..chain_inputs import chain_inputs
from ..deps import ComputeDep, SettingsDep, body_openapi, json_body
from ..negotiation import answer, check_accept, offer
from ..problems import PROBLEM_RESPONSES
from ..representations import BINARY, dense_jacobian, npy, npz
from ..schemas.functions import (
    ChainRuleRequest,
    ChainRuleResponse,
    CheckReport,
    EvaluateRequest,
    EvaluateResponse,
    JacobianRequest,
    JacobianResponse,
    JvpRequest,
    JvpResponse,
    OperationInfo,
    OperationsResponse,
    VjpRequest,
    VjpResponse,
)
from ..schemas.ops import REQUEST_WIDE, OpSpec

router = APIRouter(
    prefix="/v1",
    tags=["functions"],
    responses=PROBLEM_RESPONSES,
    dependencies=[Depends(check_accept)],
)


def _x_form(body: Any) -> bool:
    # A program (named inputs) answers per input; one-tensor downloads name the x form's fields.
    return getattr(body, "inputs", None) is None


def _one_jacobian(body: Any) -> bool:
    return _x_form(body) or len(body.wrt or body.inputs) == 1


def _the_jacobian(answer: Any) -> CooJacobian | DenseJacobian:
    jacobians = getattr(answer, "jacobians", None)  # a program's, one per input in wrt
    found = next(iter(jacobians.values())) if jacobians else answer.jacobian
    return cast(CooJacobian | DenseJacobian, found)


def _dense(body: JacobianRequest | ChainRuleRequest) -> bool:
    return body.format == "dense" and _x_form(body)


_DENSE_NPY = npy("jacobian", "the dense Jacobian (with format 'dense')", _dense, dense_jacobian)
_ONE = " Offered when the answer holds one Jacobian."
offer("evaluate", BINARY, npy("value", "h(x)"))
offer("jacobian", BINARY, npz(_the_jacobian, _one_jacobian, _ONE), _DENSE_NPY)
offer("jvp", BINARY, npy("jvp", "the JVP"))
offer("vjp", BINARY, npy("vjp", "the VJP", _x_form))
offer("chain_rule", BINARY, npz("jacobian"), _DENSE_NPY)

EvaluateBody = Annotated[EvaluateRequest, Depends(json_body(EvaluateRequest))]
JacobianBody = Annotated[JacobianRequest, Depends(json_body(JacobianRequest))]
JvpBody = Annotated[JvpRequest, Depends(json_body(JvpRequest))]
VjpBody = Annotated[VjpRequest, Depends(json_body(VjpRequest))]
ChainRuleBody = Annotated[ChainRuleRequest, Depends(json_body(ChainRuleRequest))]


def _chain(function: list[OpSpec], x: FloatArray, order: Order) -> Chain:
    return Chain([spec.to_engine(order) for spec in function], x.shape)


def _limits(settings: Settings) -> functions.FunctionLimits:
    return functions.FunctionLimits(
        max_tensor_elements=settings.max_tensor_elements,
        max_dense_elements=settings.max_dense_jacobian_elements,
        max_nnz=settings.max_coo_nnz,
    )


def evaluate_cost(body: EvaluateRequest, settings: Settings) -> RequestCost:
    """Estimate ``/v1/evaluate`` from shapes alone."""
    x = decode_tensor(body.x)
    chain = _chain(body.function, x, body.order)
    functions.check_intermediates(chain, settings.max_tensor_elements)
    payload = float_payload(size_of(chain.out_shape), body.encoding)
    facts = {"output_shape": list(chain.out_shape), "shapes": [list(s) for s in chain.shapes]}
    return RequestCost(estimates.evaluate_cost(chain), payload, facts)


def _evaluate(body: EvaluateRequest, settings: Settings) -> EvaluateResponse:
    check_request(evaluate_cost(body, settings), settings)
    x = decode_tensor(body.x)
    value = functions.evaluate(_chain(body.function, x, body.order), x, _limits(settings))
    return EvaluateResponse(value=encode_tensor(value, body.encoding))


def jacobian_payload(
    fmt: str, nnz_bound: int, in_size: int, out_size: int, encoding: Encoding
) -> Payload:
    """Return the payload of a Jacobian in ``fmt`` (``"coo"`` or ``"dense"``)."""
    if fmt == "coo":
        return coo_payload(nnz_bound, in_size, out_size, encoding)
    return float_payload(in_size * out_size, encoding)


def jacobian_cost(body: JacobianRequest, settings: Settings) -> RequestCost:
    """Estimate ``/v1/jacobian``; its facts name the format and strategy ``auto`` resolves to."""
    x = decode_tensor(body.x)
    chain = _chain(body.function, x, body.order)
    fmt, plan = functions.plan_jacobian(
        chain, fmt=body.format, strategy=body.strategy, limits=_limits(settings)
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


def _jacobian(body: JacobianRequest, settings: Settings) -> JacobianResponse:
    check_request(jacobian_cost(body, settings), settings)
    x = decode_tensor(body.x)
    result = functions.jacobian(
        _chain(body.function, x, body.order),
        x,
        fmt=body.format,
        strategy=body.strategy,
        layout=body.layout,
        order=body.order,
        check=body.check,
        limits=_limits(settings),
    )
    return JacobianResponse(
        value=encode_tensor(result.value, body.encoding),
        jacobian=encode_jacobian(result.jacobian, body.encoding),
        strategy=result.strategy,
        check=CheckReport.from_engine(result.check),
    )


def product_cost(body: JvpRequest | VjpRequest, settings: Settings) -> RequestCost:
    """Estimate ``/v1/jvp`` or ``/v1/vjp`` from shapes alone."""
    x = decode_tensor(body.x)
    chain = _chain(body.function, x, body.order)
    functions.check_intermediates(chain, settings.max_tensor_elements)
    n, m = size_of(chain.in_shape), size_of(chain.out_shape)
    product_size = m if isinstance(body, JvpRequest) else n
    payload = float_payload(m, body.encoding) + float_payload(product_size, body.encoding)
    facts = {"output_shape": list(chain.out_shape), "input_shape": list(chain.in_shape)}
    return RequestCost(estimates.product_cost(chain, body.check), payload, facts)


def _product(
    body: JvpRequest | VjpRequest, vector: Tensor, direction: Direction, settings: Settings
) -> tuple[TensorOut, TensorOut, CheckReport | None]:
    check_request(product_cost(body, settings), settings)
    x = decode_tensor(body.x)
    chain = _chain(body.function, x, body.order)
    result = functions.product(
        chain,
        x,
        decode_tensor(vector),
        direction=direction,
        check=body.check,
        limits=_limits(settings),
    )
    return (
        encode_tensor(result.value, body.encoding),
        encode_tensor(result.product, body.encoding),
        CheckReport.from_engine(result.check),
    )


def _jvp(body: JvpRequest, settings: Settings) -> JvpResponse:
    value, jvp, check = _product(body, body.tangent, "jvp", settings)
    return JvpResponse(value=value, jvp=jvp, check=check)


def _vjp(body: VjpRequest, settings: Settings) -> VjpResponse:
    value, vjp, check = _product(body, body.cotangent, "vjp", settings)
    return VjpResponse(value=value, vjp=vjp, check=check)


def _given(jacobian: CooJacobianIn | DenseJacobianIn, layout: Layout) -> estimates.GivenJacobian:
    # What the chain rule knows of a factor before decoding it, in in_out orientation; a matrix
    # may state its own layout (the request's by default).
    if isinstance(jacobian, CooJacobianIn):
        rows, cols = jacobian.shape
        row: Any = jacobian.row  # validated: the decoded array
        nnz, dense = int(np.size(row)), False
    else:
        data = decode_tensor(jacobian.data)
        rows, cols = (data.shape + (1, 1))[:2] if data.ndim < 2 else data.shape[:2]
        nnz, dense = data.size, True
    if (jacobian.layout or layout) == "out_in":
        rows, cols = cols, rows
    return estimates.GivenJacobian(rows, cols, nnz, dense)


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


def _chain_rule(body: ChainRuleRequest, settings: Settings) -> ChainRuleResponse:
    check_request(chain_rule_cost(body, settings), settings)
    stated_order = body.order if "order" in body.model_fields_set else None
    inputs = chain_inputs(body.jacobians, body.layout, stated_order)
    product = functions.multiply(
        inputs.matrices,
        layout=body.layout,
        fmt=body.format,
        max_nnz=settings.max_coo_nnz,
        max_dense_elements=settings.max_dense_jacobian_elements,
    )
    first, last = body.jacobians[0], body.jacobians[-1]
    rows, cols = product.shape
    in_size, out_size = (rows, cols) if body.layout == "in_out" else (cols, rows)
    in_shape = tuple(first.in_shape or [in_size])
    out_shape = tuple(last.out_shape or [out_size])
    # The labels are the client's; they must still describe the product's size.
    functions.check_labels(in_shape, out_shape, in_size, out_size)
    jacobian = Jacobian(product, in_shape, out_shape, body.layout, inputs.order)
    return ChainRuleResponse(jacobian=encode_jacobian(jacobian, body.encoding))


@router.get("/ops", summary="List the operations")
async def list_ops() -> OperationsResponse:
    """Every registered operation with its parameters and differentiability note."""
    return OperationsResponse(
        operations=[
            OperationInfo(
                name=name,
                linear=cls.linear,
                note=cls.note,
                params={k: v for k, v in cls.params.items() if k not in REQUEST_WIDE},
                uses_request_order="order" in cls.params,
            )
            for name, cls in op_classes().items()
        ]
    )


@router.post("/evaluate", openapi_extra=body_openapi(EvaluateRequest), summary="Evaluate h(x)")
async def evaluate(
    request: Request, body: EvaluateBody, settings: SettingsDep, compute: ComputeDep
) -> EvaluateResponse:
    """Evaluate a function given as a list of operations."""
    return await answer(request, compute, _evaluate, body, settings)


@router.post("/jacobian", openapi_extra=body_openapi(JacobianRequest), summary="Jacobian of h at x")
async def jacobian(
    request: Request, body: JacobianBody, settings: SettingsDep, compute: ComputeDep
) -> JacobianResponse:
    """Return h(x) and its Jacobian, dense or canonical COO, in the requested layout/order."""
    return await answer(request, compute, _jacobian, body, settings)


@router.post("/jvp", openapi_extra=body_openapi(JvpRequest), summary="Jacobian-vector product")
async def jvp(
    request: Request, body: JvpBody, settings: SettingsDep, compute: ComputeDep
) -> JvpResponse:
    """Return h(x) and ten(J^T vec(tangent)) without forming J."""
    return await answer(request, compute, _jvp, body, settings)


@router.post("/vjp", openapi_extra=body_openapi(VjpRequest), summary="Vector-Jacobian product")
async def vjp(
    request: Request, body: VjpBody, settings: SettingsDep, compute: ComputeDep
) -> VjpResponse:
    """Return h(x) and ten(J vec(cotangent)) without forming J."""
    return await answer(request, compute, _vjp, body, settings)


@router.post(
    "/chain-rule",
    response_model=ChainRuleResponse,
    openapi_extra=body_openapi(ChainRuleRequest),
    summary="Compose Jacobians",
)
async def chain_rule(
    request: Request, body: ChainRuleBody, settings: SettingsDep, compute: ComputeDep
) -> ChainRuleResponse:
    """Multiply Jacobians in the notes' sense: J_h = J_g J_f for h = f ∘ g (in_out)."""
    return await answer(request, compute, _chain_rule, body, settings)
