"""POST /v1/minimize: gd, Adam, L-BFGS-B, Newton-CG and trust-ncg, as JSON or NDJSON.

The run model is gradient descent's (:mod:`.descent`): one engine generator
(:func:`service.engine.minimize.minimize`) collected into one JSON document or streamed line by
line, every refusal made before the first byte.
"""

import math
from collections.abc import Generator
from functools import partial
from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import StreamingResponse

from ...codec import Encoding, decode_tensor, encode_tensor
from ...config import Settings
from ...engine.chain import Chain
from ...engine.descent import DescentRecord, DescentSummary, collect
from ...engine.minimize import Method, MinimizeEvent, MinimizeRecord, MinimizeSummary
from ...engine.minimize import minimize as run_minimize
from ..deps import ComputeDep, SettingsDep, body_openapi, json_body
from ..negotiation import NDJSON, Representation, answer, check_accept, negotiate, offer
from ..problems import PROBLEM_RESPONSES
from ..representations import BINARY, npy
from ..schemas.descent import ndjson_schema
from ..schemas.minimize import (
    Evaluations,
    MinimizePoint,
    MinimizeRequest,
    MinimizeResponse,
    MinimizeSummaryLine,
)
from .descent import descent_limits, point_encoding, stream, summary_line

router = APIRouter(
    prefix="/v1",
    tags=["minimize"],
    responses=PROBLEM_RESPONSES,
    dependencies=[Depends(check_accept)],
)
STREAM = Representation(
    NDJSON,
    "one JSON line per recorded iteration as it is computed, then the summary line (as for "
    "/v1/gradient-descent, binary x_final included).",
    None,
    schema=ndjson_schema(MinimizePoint, MinimizeSummaryLine),
)
offer("minimize", BINARY, STREAM, npy("x_final", "the final iterate x_final"))

MinimizeBody = Annotated[MinimizeRequest, Depends(json_body(MinimizeRequest))]


def _start(body: MinimizeRequest, settings: Settings) -> Generator[MinimizeEvent, None, None]:
    x0 = decode_tensor(body.x0)
    chain = Chain([spec.to_engine(body.order) for spec in body.function], x0.shape)
    return run_minimize(chain, x0, body.params(x0.shape), descent_limits(settings))


def _point(record: DescentRecord, encoding: Encoding) -> MinimizePoint:
    assert isinstance(record, MinimizeRecord)  # minimize() yields only these
    return MinimizePoint(
        step=record.step,
        f=record.f,
        grad_norm=record.grad_norm,
        learning_rate=record.learning_rate,
        x=None if record.x is None else encode_tensor(record.x, encoding),
        evaluations=Evaluations(**vars(record.evaluations)),
    )


def _summary(summary: DescentSummary, method: Method, encoding: Encoding) -> MinimizeSummaryLine:
    assert isinstance(summary, MinimizeSummary)
    return MinimizeSummaryLine(
        status=summary.status,
        reason=summary.reason,
        steps=summary.steps,
        final_step=summary.final_step,
        f_final=summary.f_final,
        grad_norm_final=summary.grad_norm_final,
        x_final=encode_tensor(summary.x_final, encoding),
        method=method,
        evaluations=Evaluations(**vars(summary.evaluations)),
    )


def _line(event: DescentRecord | DescentSummary, body: MinimizeRequest) -> bytes:
    if isinstance(event, DescentSummary):
        return summary_line(_summary(event, body.method, body.encoding))
    point = _point(event, point_encoding(body.encoding))
    return point.model_dump_json().encode() + b"\n"


def _minimize(body: MinimizeRequest, settings: Settings) -> MinimizeResponse:
    result = collect(_start(body, settings))
    summary = _summary(result.summary, body.method, body.encoding)
    return MinimizeResponse(
        **dict(summary),
        trajectory=[_point(record, body.encoding) for record in result.trajectory],
    )


@router.post(
    "/minimize",
    response_model=MinimizeResponse,
    openapi_extra=body_openapi(MinimizeRequest),
    summary="Minimize a scalar function by gd, adam, lbfgs, newton-cg or trust-ncg",
)
async def minimize(
    request: Request, body: MinimizeBody, settings: SettingsDep, compute: ComputeDep
) -> MinimizeResponse | StreamingResponse:
    """Minimize f from x0 by the chosen method until a stopping rule fires."""
    if negotiate(request, "minimize", body.encoding, body) is not STREAM:
        # The run ends itself at its deadline (status "deadline"): the token only carries the
        # client's disconnect (see gradient_descent).
        return await answer(
            request, compute, _minimize, body, settings, deadline_seconds=math.inf
        )
    return await stream(
        request, compute, partial(_start, body, settings), partial(_line, body=body)
    )
