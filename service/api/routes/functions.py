"""Functions as operation lists: list the operations, evaluate, differentiate, compose."""

from typing import Annotated, Any, cast

from fastapi import APIRouter, Depends, Request

from ...codec import Tensor, TensorOut, decode_tensor, encode_tensor
from ...codec.sparse import CooJacobian, DenseJacobian, encode_jacobian
from ...config import Settings
from ...engine import functions
from ...engine.functions import Direction
from ...engine.graph import requests as programs
from ...engine.graph.nary import nary_classes
from ...engine.graph.program import Program
from ...engine.jacobian import Jacobian
from ...engine.op import op_classes
from ...engine.types import FloatArray
from ...pictures import PictureType, spy_picture
from ..budget import check_request
from ..chain_inputs import chain_inputs
from ..costs import (
    chain_of,
    chain_rule_cost,
    evaluate_cost,
    function_limits,
    jacobian_cost,
    product_cost,
)
from ..deps import ComputeDep, SettingsDep, body_openapi, json_body
from ..negotiation import answer, check_accept, offer
from ..pictures import accepted_picture, picture_response, pictures
from ..problems import DEADLINE_RESPONSES, PROBLEM_RESPONSES, NotAcceptable
from ..programs import build_program
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
    ProgramJacobianResponse,
    ProgramOperationInfo,
    ProgramVjpResponse,
    VjpRequest,
    VjpResponse,
)
from ..schemas.ops import REQUEST_WIDE
from ..schemas.second_order import HessianRequest, HvpRequest

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
offer(
    "jacobian",
    BINARY,
    npz(_the_jacobian, _one_jacobian, _ONE),
    _DENSE_NPY,
    *pictures(
        "the spy plot of the one Jacobian (a density raster for large matrices): the x form's, "
        "or a program's with one input in wrt"
    ),
)
offer("jvp", BINARY, npy("jvp", "the JVP"))
offer("vjp", BINARY, npy("vjp", "the VJP", _x_form))
offer("chain_rule", BINARY, npz("jacobian"), _DENSE_NPY)

EvaluateBody = Annotated[EvaluateRequest, Depends(json_body(EvaluateRequest))]
JacobianBody = Annotated[JacobianRequest, Depends(json_body(JacobianRequest))]
JvpBody = Annotated[JvpRequest, Depends(json_body(JvpRequest))]
VjpBody = Annotated[VjpRequest, Depends(json_body(VjpRequest))]
ChainRuleBody = Annotated[ChainRuleRequest, Depends(json_body(ChainRuleRequest))]


def _program(
    body: EvaluateRequest | JacobianRequest | JvpRequest | VjpRequest | HvpRequest | HessianRequest,
) -> tuple[Program, dict[str, FloatArray]]:
    assert body.inputs is not None
    inputs = {name: decode_tensor(tensor) for name, tensor in body.inputs.items()}
    shapes = {name: value.shape for name, value in inputs.items()}
    return build_program(body.function, shapes, body.order), inputs


def _evaluate(body: EvaluateRequest, settings: Settings) -> EvaluateResponse:
    check_request(evaluate_cost(body, settings), settings)
    if body.program:
        program, inputs = _program(body)
        value = programs.evaluate(program, inputs, function_limits(settings))
        return EvaluateResponse(value=encode_tensor(value, body.encoding))
    assert body.x is not None and isinstance(body.function, list)
    x = decode_tensor(body.x)
    value = functions.evaluate(chain_of(body.function, x, body.order), x, function_limits(settings))
    return EvaluateResponse(value=encode_tensor(value, body.encoding))


def _jacobian_result(body: JacobianRequest, settings: Settings) -> functions.JacobianResult:
    # The x form (an op list applied to x).
    assert body.x is not None and isinstance(body.function, list)
    x = decode_tensor(body.x)
    return functions.jacobian(
        chain_of(body.function, x, body.order),
        x,
        fmt=body.format,
        strategy=body.strategy,
        layout=body.layout,
        order=body.order,
        check=body.check,
        limits=function_limits(settings),
    )


def _jacobian(
    body: JacobianRequest, settings: Settings
) -> JacobianResponse | ProgramJacobianResponse:
    check_request(jacobian_cost(body, settings), settings)
    if body.program:
        program, inputs = _program(body)
        found = programs.jacobian(
            program, inputs, body.wrt, fmt=body.format, strategy=body.strategy,
            layout=body.layout, order=body.order, limits=function_limits(settings),
            check=body.check,
        )  # fmt: skip
        return ProgramJacobianResponse(
            value=encode_tensor(found.value, body.encoding),
            jacobians={n: encode_jacobian(j, body.encoding) for n, j in found.jacobians.items()},
            strategy=found.strategy,
            check=CheckReport.from_engine(found.check),
        )
    result = _jacobian_result(body, settings)
    return JacobianResponse(
        value=encode_tensor(result.value, body.encoding),
        jacobian=encode_jacobian(result.jacobian, body.encoding),
        strategy=result.strategy,
        check=CheckReport.from_engine(result.check),
    )


def _jacobian_picture(body: JacobianRequest, settings: Settings, media_type: PictureType) -> bytes:
    # A spy plot is drawn from the COO entries, whatever format the JSON answer would use.
    # A picture is sent, not a list: the Jacobian is costed as its raw bytes.
    coo = body.model_copy(update={"format": "coo", "encoding": "binary"})
    check_request(jacobian_cost(coo, settings), settings)
    if not body.program:
        return spy_picture("h", "x", _jacobian_result(coo, settings).jacobian, media_type)
    program, inputs = _program(coo)
    found = programs.jacobian(
        program, inputs, coo.wrt, fmt="coo", strategy=coo.strategy, layout=coo.layout,
        order=coo.order, limits=function_limits(settings),
    )  # fmt: skip
    ((name, jacobian),) = found.jacobians.items()  # the route admitted one input in wrt
    return spy_picture("h", name, jacobian, media_type)


def _product(
    body: JvpRequest | VjpRequest, vector: Tensor, direction: Direction, settings: Settings
) -> tuple[TensorOut, TensorOut, CheckReport | None]:
    assert body.x is not None and isinstance(body.function, list)
    x = decode_tensor(body.x)
    chain = chain_of(body.function, x, body.order)
    result = functions.product(
        chain,
        x,
        decode_tensor(vector),
        direction=direction,
        check=body.check,
        limits=function_limits(settings),
    )
    return (
        encode_tensor(result.value, body.encoding),
        encode_tensor(result.product, body.encoding),
        CheckReport.from_engine(result.check),
    )


def _jvp(body: JvpRequest, settings: Settings) -> JvpResponse:
    check_request(product_cost(body, settings), settings)
    if body.program:
        assert body.tangents is not None
        program, inputs = _program(body)
        tangents = {name: decode_tensor(t) for name, t in body.tangents.items()}
        wrt = body.wrt if body.wrt is not None else list(tangents)
        found = programs.product(
            program, inputs, tangents, wrt, direction="jvp", limits=function_limits(settings),
            check=body.check,
        )  # fmt: skip
        assert found.tangent is not None
        return JvpResponse(
            value=encode_tensor(found.value, body.encoding),
            jvp=encode_tensor(found.tangent, body.encoding),
            check=CheckReport.from_engine(found.check),
        )
    assert body.tangent is not None
    value, jvp, check = _product(body, body.tangent, "jvp", settings)
    return JvpResponse(value=value, jvp=jvp, check=check)


def _vjp(body: VjpRequest, settings: Settings) -> VjpResponse | ProgramVjpResponse:
    check_request(product_cost(body, settings), settings)
    if body.program:
        program, inputs = _program(body)
        found = programs.product(
            program, inputs, decode_tensor(body.cotangent), body.wrt, direction="vjp",
            limits=function_limits(settings), check=body.check,
        )  # fmt: skip
        assert found.cotangents is not None
        return ProgramVjpResponse(
            value=encode_tensor(found.value, body.encoding),
            cotangents={n: encode_tensor(g, body.encoding) for n, g in found.cotangents.items()},
            check=CheckReport.from_engine(found.check),
        )
    value, vjp, check = _product(body, body.cotangent, "vjp", settings)
    return VjpResponse(value=value, vjp=vjp, check=check)


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
                op=name,
                name=name,
                linear=cls.linear,
                note=cls.note,
                params={k: v for k, v in cls.params.items() if k not in REQUEST_WIDE},
                uses_request_order="order" in cls.params,
            )
            for name, cls in op_classes().items()
        ],
        program_operations=[
            ProgramOperationInfo(
                name=name,
                arity=None if cls.variadic else len(cls.arg_names),
                args=list(cls.arg_names),
                linear=cls.linear,
                note=cls.note,
                params=dict(cls.params),
            )
            for name, cls in nary_classes().items()
        ],
    )


@router.post(
    "/evaluate",
    openapi_extra=body_openapi(EvaluateRequest),
    responses=DEADLINE_RESPONSES,
    summary="Evaluate h(x)",
)
async def evaluate(
    request: Request, body: EvaluateBody, settings: SettingsDep, compute: ComputeDep
) -> EvaluateResponse:
    """Evaluate a function given as a list of operations."""
    return await answer(request, compute, _evaluate, body, settings)


@router.post(
    "/jacobian",
    openapi_extra=body_openapi(JacobianRequest),
    responses=DEADLINE_RESPONSES,
    summary="Jacobian of h at x",
)
async def jacobian(
    request: Request, body: JacobianBody, settings: SettingsDep, compute: ComputeDep
) -> JacobianResponse | ProgramJacobianResponse:
    """Return h(x) and its Jacobian, dense or canonical COO, in the requested layout/order."""
    picture = accepted_picture(request, "jacobian", body)
    if picture is None:
        return await answer(request, compute, _jacobian, body, settings)
    if not _one_jacobian(body):
        assert body.inputs is not None
        names = body.wrt or list(body.inputs)
        raise NotAcceptable(
            f"a picture shows one Jacobian, and this program has {len(names)} to answer "
            f"(wrt {names}): send wrt with one input, e.g. [{names[0]!r}]"
        )
    content = await compute(_jacobian_picture, body, settings, picture)
    # FastAPI sends a Response as it is, whatever the route's declared model.
    return cast(JacobianResponse, picture_response(content, picture))


@router.post(
    "/jvp",
    openapi_extra=body_openapi(JvpRequest),
    responses=DEADLINE_RESPONSES,
    summary="Jacobian-vector product",
)
async def jvp(
    request: Request, body: JvpBody, settings: SettingsDep, compute: ComputeDep
) -> JvpResponse:
    """Return h(x) and ten(J^T vec(tangent)) without forming J."""
    return await answer(request, compute, _jvp, body, settings)


@router.post(
    "/vjp",
    openapi_extra=body_openapi(VjpRequest),
    responses=DEADLINE_RESPONSES,
    summary="Vector-Jacobian product",
)
async def vjp(
    request: Request, body: VjpBody, settings: SettingsDep, compute: ComputeDep
) -> VjpResponse | ProgramVjpResponse:
    """Return h(x) and ten(J vec(cotangent)) without forming J."""
    return await answer(request, compute, _vjp, body, settings)


@router.post(
    "/chain-rule",
    openapi_extra=body_openapi(ChainRuleRequest),
    responses=DEADLINE_RESPONSES,
    summary="Compose Jacobians",
)
async def chain_rule(
    request: Request, body: ChainRuleBody, settings: SettingsDep, compute: ComputeDep
) -> ChainRuleResponse:
    """Multiply Jacobians in the notes' sense: J_h = J_g J_f for h = f ∘ g (in_out)."""
    return await answer(request, compute, _chain_rule, body, settings)
