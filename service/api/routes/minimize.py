"""POST /v1/minimize: gd, Adam, L-BFGS-B, Newton-CG and trust-ncg, as JSON, NDJSON or a picture.

The run model is gradient descent's (:mod:`.descent`): one engine generator
(:func:`service.engine.minimize.minimize`) collected into one JSON document or streamed line by
line, every refusal made before the first byte.
"""

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from ...codec import Encoding, TensorOut, decode_tensor, encode_tensor
from ...config import Settings
from ...engine.chain import Chain
from ...engine.descent import DescentRecord, DescentSummary, collect
from ...engine.minimize import minimize as run_minimize
from ...engine.minimize import minimize_program
from ...engine.minimize_params import Method, MinimizeRecord, MinimizeSummary
from ...engine.types import FloatArray
from ...pictures import PictureType, descent_picture
from ..budget import check_request
from ..costs import minimize_cost
from ..deps import ComputeDep, SettingsDep, body_openapi, json_body
from ..negotiation import NDJSON, Representation, check_accept, offer
from ..pictures import pictures
from ..problems import PROBLEM_RESPONSES
from ..programs import build_program
from ..representations import BINARY, npy
from ..schemas.descent import ndjson_schema
from ..schemas.minimize import (
    Evaluations,
    MinimizePoint,
    MinimizeRequest,
    MinimizeResponse,
    MinimizeSummaryLine,
    ProgramMinimizePoint,
    ProgramMinimizeResponse,
    ProgramMinimizeSummaryLine,
)
from .descent import (
    Events,
    Unpack,
    descent_limits,
    point_encoding,
    respond_run,
    summary_line,
)

router = APIRouter(
    prefix="/v1",
    tags=["minimize"],
    responses=PROBLEM_RESPONSES,
    dependencies=[Depends(check_accept)],
)


def _ndjson_schema() -> dict[str, Any]:
    # Gradient descent's line schema with this route's models, and the program lines appended.
    schema = ndjson_schema(MinimizePoint, MinimizeSummaryLine)
    program = ProgramMinimizeSummaryLine.model_json_schema(
        ref_template="#/components/schemas/{model}"
    )
    program.pop("$defs", None)
    schema["oneOf"] += [{"$ref": "#/components/schemas/ProgramMinimizePoint"}, program]
    schema["description"] += (
        " For a program (inputs): ProgramMinimizePoint and ProgramMinimizeSummaryLine."
    )
    return schema


STREAM = Representation(
    NDJSON,
    "one JSON line per recorded iteration as it is computed, then the summary line (as for "
    "/v1/gradient-descent, binary x_final included).",
    None,
    schema=_ndjson_schema(),
)
offer(
    "minimize",
    BINARY,
    STREAM,
    npy("x_final", "the final iterate x_final (x0 form only)", lambda body: body.inputs is None),
    *pictures("f and ||grad f|| per recorded step (log scale when positive), status in the title"),
)
MinimizeBody = Annotated[MinimizeRequest, Depends(json_body(MinimizeRequest))]


def _start(body: MinimizeRequest, settings: Settings) -> tuple[Events, Unpack]:
    check_request(minimize_cost(body, settings), settings)
    limits = descent_limits(settings)
    if body.inputs is not None:
        inputs = {name: decode_tensor(tensor) for name, tensor in body.inputs.items()}
        program = build_program(body.function, {n: v.shape for n, v in inputs.items()}, body.order)
        names = program.check_wrt(body.variables, "variables")
        params = body.params({name: program.inputs[name] for name in names})
        return minimize_program(program, inputs, names, params, limits)
    assert body.x0 is not None and isinstance(body.function, list)
    x0 = decode_tensor(body.x0)
    chain = Chain([spec.to_engine(body.order) for spec in body.function], x0.shape)
    return run_minimize(chain, x0, body.params({"x": x0.shape}), limits), None


def _tensors(values: dict[str, FloatArray], encoding: Encoding) -> dict[str, TensorOut]:
    return {name: encode_tensor(value, encoding) for name, value in values.items()}


def _point(
    record: DescentRecord, encoding: Encoding, unpack: Unpack
) -> MinimizePoint | ProgramMinimizePoint:
    assert isinstance(record, MinimizeRecord)  # the minimize generators yield only these
    common = {
        "step": record.step,
        "f": record.f,
        "grad_norm": record.grad_norm,
        "learning_rate": record.learning_rate,
        "evaluations": Evaluations(**vars(record.evaluations)),
    }
    if unpack is not None:
        variables = None if record.x is None else _tensors(unpack(record.x), encoding)
        return ProgramMinimizePoint(**common, variables=variables)
    x = None if record.x is None else encode_tensor(record.x, encoding)
    return MinimizePoint(**common, x=x)


def _summary(
    summary: DescentSummary, method: Method, encoding: Encoding, unpack: Unpack
) -> MinimizeSummaryLine | ProgramMinimizeSummaryLine:
    assert isinstance(summary, MinimizeSummary)
    common = {
        "status": summary.status,
        "reason": summary.reason,
        "steps": summary.steps,
        "final_step": summary.final_step,
        "f_final": summary.f_final,
        "grad_norm_final": summary.grad_norm_final,
        "method": method,
        "evaluations": Evaluations(**vars(summary.evaluations)),
    }
    if unpack is not None:
        return ProgramMinimizeSummaryLine(
            **common, final=_tensors(unpack(summary.x_final), encoding)
        )
    return MinimizeSummaryLine(**common, x_final=encode_tensor(summary.x_final, encoding))


def _line(event: DescentRecord | DescentSummary, body: MinimizeRequest, unpack: Unpack) -> bytes:
    if isinstance(event, DescentSummary):
        return summary_line(_summary(event, body.method, body.encoding, unpack))
    point = _point(event, point_encoding(body.encoding), unpack)
    return point.model_dump_json().encode() + b"\n"


def _minimize(
    body: MinimizeRequest, settings: Settings
) -> MinimizeResponse | ProgramMinimizeResponse:
    events, unpack = _start(body, settings)
    result = collect(events)
    summary = _summary(result.summary, body.method, body.encoding, unpack)
    trajectory = [_point(record, body.encoding, unpack) for record in result.trajectory]
    if unpack is not None:
        return ProgramMinimizeResponse(**dict(summary), trajectory=trajectory)
    return MinimizeResponse(**dict(summary), trajectory=trajectory)


def _minimize_picture(body: MinimizeRequest, settings: Settings, media_type: PictureType) -> bytes:
    events, _ = _start(body, settings)  # a program's run is drawn the same way
    result = collect(events)
    return descent_picture(
        result.trajectory, result.summary, media_type, title=f"minimize ({body.method})"
    )


@router.post(
    "/minimize",
    response_model=MinimizeResponse | ProgramMinimizeResponse,
    openapi_extra=body_openapi(MinimizeRequest),
    summary="Minimize a scalar function by gd, adam, lbfgs, newton-cg or trust-ncg",
)
async def minimize(
    request: Request, body: MinimizeBody, settings: SettingsDep, compute: ComputeDep
) -> MinimizeResponse | ProgramMinimizeResponse | Response:
    """Minimize f from x0 by the chosen method until a stopping rule fires."""
    return await respond_run(
        request, "minimize", body, settings, compute,
        collected=_minimize, picture=_minimize_picture, start=_start, line=_line,
    )  # fmt: skip
