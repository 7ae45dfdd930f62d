"""POST /v1/gradient-descent: the notes' update rule run to a stopping rule, as JSON or NDJSON.

Both representations come from one engine generator (:func:`service.engine.descent.descend`):
the JSON response collects its records, the NDJSON stream writes each as a line while the run
goes on. Everything that can refuse a request (validation, shapes, limits, ``f`` at ``x0``) is
done before the first byte is sent, so refusals are ordinary problem responses either way.
"""

import logging
import math
import time
from collections.abc import AsyncIterator, Callable, Generator
from typing import Annotated, Generic, TypeVar

import pydantic_core
from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from ...codec import Encoding, TensorOut, decode_tensor, encode_tensor
from ...codec.binary import split_segments
from ...config import Settings
from ...engine.cancel import CancelToken
from ...engine.chain import Chain
from ...engine.descent import (
    DescentEvent,
    DescentLimits,
    DescentRecord,
    DescentSummary,
    collect,
    descend,
)
from ...engine.graph.descent import descend_program
from ...engine.types import FloatArray
from ...pictures import PictureType, descent_picture
from ..budget import check_request
from ..costs import descent_cost
from ..deps import Compute, ComputeDep, SettingsDep, body_openapi, json_body, run_to_end
from ..negotiation import (
    NDJSON,
    Answer,
    Representation,
    answer,
    check_accept,
    negotiate,
    offer,
)
from ..pictures import accepted_picture, picture_response, pictures
from ..problems import INTERNAL_ERROR, PROBLEM_RESPONSES, Problem, problem_kind
from ..programs import build_program
from ..representations import BINARY, npy
from ..schemas.descent import (
    DescentSummaryLine,
    GradientDescentRequest,
    GradientDescentResponse,
    ProgramDescentResponse,
    ProgramDescentSummaryLine,
    ProgramTrajectoryPoint,
    RunRequest,
    TrajectoryPoint,
    ndjson_schema,
)

logger = logging.getLogger("service.descent")
router = APIRouter(
    prefix="/v1",
    tags=["gradient-descent"],
    responses=PROBLEM_RESPONSES,
    dependencies=[Depends(check_accept)],
)
STREAM = Representation(
    NDJSON,
    "one JSON line per recorded step as it is computed, then the summary line. With "
    "`encoding: \"binary\"` the steps' x are base64 and the summary line's x_final is a binary "
    "tensor whose bytes follow that line's newline.",
    None,
    schema=ndjson_schema(programs=True),
)
offer(
    "gradient_descent",
    BINARY,
    STREAM,
    npy("x_final", "the final iterate x_final (x0 form)", lambda body: body.x0 is not None),
    *pictures("f and ||grad f|| per recorded step (log scale when positive), status in the title"),
)
# A streaming worker returns to the event loop at least this often, with the lines it has: the
# latency of a line and of noticing a disconnected client, traded against one thread hop per slice.
STREAM_SLICE_SECONDS = 0.02

GradientDescentBody = Annotated[GradientDescentRequest, Depends(json_body(GradientDescentRequest))]
Events = Generator[DescentEvent, None, None]
# The bytes of the NDJSON line of a record or of the summary.
Line = Callable[[DescentRecord | DescentSummary], bytes]


def descent_limits(settings: Settings) -> DescentLimits:
    """Return the engine's bounds on a run (descent and minimization) from the settings.

    The run's own deadline (a result with status ``"deadline"``) is never later than every
    computation's.
    """
    return DescentLimits(
        max_steps=settings.max_descent_steps,
        max_trajectory_elements=settings.max_trajectory_elements,
        max_tensor_elements=settings.max_tensor_elements,
        max_nnz=settings.max_coo_nnz,
        deadline_seconds=min(
            settings.descent_deadline_seconds, settings.computation_deadline_seconds
        ),
    )


Unpack = Callable[[FloatArray], dict[str, FloatArray]] | None


def _start(body: GradientDescentRequest, settings: Settings) -> tuple[Events, Unpack]:
    """Return the run's events, and for a program how to unpack ``x`` into its variables."""
    check_request(descent_cost(body, settings), settings)
    limits = descent_limits(settings)
    if body.inputs is not None:
        inputs = {name: decode_tensor(tensor) for name, tensor in body.inputs.items()}
        shapes = {name: value.shape for name, value in inputs.items()}
        program = build_program(body.function, shapes, body.order)
        return descend_program(program, inputs, body.variables, body.params(), limits)
    assert body.x0 is not None and isinstance(body.function, list)
    x0 = decode_tensor(body.x0)
    chain = Chain([spec.to_engine(body.order) for spec in body.function], x0.shape)
    return descend(chain, x0, body.params(), limits), None


def _tensors(values: dict[str, FloatArray], encoding: Encoding) -> dict[str, TensorOut]:
    return {name: encode_tensor(value, encoding) for name, value in values.items()}


def _point(
    record: DescentRecord, encoding: Encoding, unpack: Unpack
) -> TrajectoryPoint | ProgramTrajectoryPoint:
    if unpack is not None:
        return ProgramTrajectoryPoint(
            step=record.step,
            f=record.f,
            grad_norm=record.grad_norm,
            learning_rate=record.learning_rate,
            variables=None if record.x is None else _tensors(unpack(record.x), encoding),
        )
    return TrajectoryPoint(
        step=record.step,
        f=record.f,
        grad_norm=record.grad_norm,
        learning_rate=record.learning_rate,
        x=None if record.x is None else encode_tensor(record.x, encoding),
    )


def _summary_fields(
    summary: DescentSummary, encoding: Encoding, unpack: Unpack
) -> DescentSummaryLine | ProgramDescentSummaryLine:
    common = {
        "status": summary.status,
        "reason": summary.reason,
        "steps": summary.steps,
        "final_step": summary.final_step,
        "f_final": summary.f_final,
        "grad_norm_final": summary.grad_norm_final,
    }
    if unpack is not None:
        return ProgramDescentSummaryLine(
            **common, final=_tensors(unpack(summary.x_final), encoding)
        )
    return DescentSummaryLine(**common, x_final=encode_tensor(summary.x_final, encoding))


def _gradient_descent(
    body: GradientDescentRequest, settings: Settings
) -> GradientDescentResponse | ProgramDescentResponse:
    events, unpack = _start(body, settings)
    result = collect(events)
    summary = _summary_fields(result.summary, body.encoding, unpack)
    trajectory = [_point(record, body.encoding, unpack) for record in result.trajectory]
    if unpack is not None:
        return ProgramDescentResponse(**dict(summary), trajectory=trajectory)
    return GradientDescentResponse(**dict(summary), trajectory=trajectory)


Body = TypeVar("Body", bound=RunRequest)


class Run(Generic[Body]):
    """A streamed run, gradient descent's or minimize's.

    :meth:`start` learns how to unpack a program's ``x``; :meth:`line` uses it.

    Parameters
    ----------
    body, settings
        The request and the app's settings.
    start : callable
        ``(body, settings) -> (events, unpack)``: the route's checks and its engine generator.
    line : callable
        ``(event, body, unpack) -> bytes``: one NDJSON line.
    """

    def __init__(
        self,
        body: Body,
        settings: Settings,
        start: Callable[[Body, Settings], tuple[Events, Unpack]],
        line: Callable[[DescentRecord | DescentSummary, Body, Unpack], bytes],
    ) -> None:
        self._body = body
        self._settings = settings
        self._start = start
        self._line = line
        self._unpack: Unpack = None

    def start(self) -> Events:
        """Check the request and start the engine's run; remember how to unpack ``x``."""
        events, self._unpack = self._start(self._body, self._settings)
        return events

    def line(self, event: DescentRecord | DescentSummary) -> bytes:
        """Return one NDJSON line for ``event``."""
        return self._line(event, self._body, self._unpack)


def _line(
    event: DescentRecord | DescentSummary, body: GradientDescentRequest, unpack: Unpack
) -> bytes:
    if isinstance(event, DescentSummary):
        return summary_line(_summary_fields(event, body.encoding, unpack))
    point = _point(event, point_encoding(body.encoding), unpack)
    return point.model_dump_json().encode() + b"\n"


def _descent_picture(
    body: GradientDescentRequest, settings: Settings, media_type: PictureType
) -> bytes:
    events, _ = _start(body, settings)  # a program's run is drawn the same way
    result = collect(events)
    return descent_picture(result.trajectory, result.summary, media_type)


def _problem_line(error: Exception, instance: str, request_id: str | None) -> bytes:
    # The status line is long gone: a failure after the first byte is reported in-band.
    kind = problem_kind(error)
    if kind is INTERNAL_ERROR:
        logger.error("unhandled error while streaming %s", instance, exc_info=error)
        detail = "the server failed while streaming; the error has been logged"
    else:
        detail = str(error)
    problem = Problem(
        type=kind.type,
        title=kind.title,
        status=kind.status,
        detail=detail,
        instance=instance,
        request_id=request_id,
    )
    return problem.model_dump_json(exclude_none=True).encode() + b"\n"


def summary_line(summary: DescentSummaryLine | ProgramDescentSummaryLine) -> bytes:
    """Write the last line of a stream; binary final tensors' bytes follow its newline."""
    header, segments = split_segments(summary.model_dump(mode="python"))
    line = pydantic_core.to_json(header) + b"\n"
    return b"".join([line, *(chunk for segment in segments for chunk in segment.chunks())])


def point_encoding(encoding: Encoding) -> Encoding:
    """Return the encoding of the points of a stream: a binary run's x are base64 lines."""
    return "base64" if encoding == "binary" else encoding


def _pump(events: Events, line: Line, instance: str, request_id: str | None) -> tuple[bytes, bool]:
    """Run the engine for one slice; return the NDJSON lines made and whether the stream ends."""
    deadline = time.perf_counter() + STREAM_SLICE_SECONDS
    lines: list[bytes] = []
    try:
        for event in events:
            if event is not None:
                lines.append(line(event))
            if isinstance(event, DescentSummary):
                return b"".join(lines), True
            if time.perf_counter() >= deadline:
                return b"".join(lines), False
    except Exception as error:
        lines.append(_problem_line(error, instance, request_id))
    return b"".join(lines), True


async def _ndjson(
    request: Request, events: Events, line: Line, token: CancelToken
) -> AsyncIterator[bytes]:
    """Stream the run; a client that disconnects stops it at the end of the current slice.

    A stream whose task is cancelled (a server's way to say the client left) stops sooner: the
    current slice ends at its next checkpoint (:func:`~service.api.deps.run_to_end`).
    """
    where = (request.url.path, getattr(request.state, "request_id", None))
    try:
        while not await request.is_disconnected():
            chunk, done = await run_to_end(token, token.run, _pump, events, line, *where)
            if chunk:
                yield chunk
            if done:
                return
    finally:
        # The worker thread has returned (run_to_end waits for it even when cancelled), so the
        # generator is idle and closing it ends the computation.
        events.close()


class _SlotStreamingResponse(StreamingResponse):
    """A stream that holds a computation slot until it ends, however it ends.

    Starlette skips a response's background task when the client disconnects, so the slot is
    released in ``finally`` around the whole response instead.
    """

    def __init__(self, content: AsyncIterator[bytes], release: Callable[[], None]) -> None:
        super().__init__(content, media_type=NDJSON)
        self._release = release

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._release()


@router.post(
    "/gradient-descent",
    response_model=GradientDescentResponse | ProgramDescentResponse,
    openapi_extra=body_openapi(GradientDescentRequest),
    summary="Gradient descent on a scalar function, as JSON, an NDJSON stream or a picture",
)
async def gradient_descent(
    request: Request, body: GradientDescentBody, settings: SettingsDep, compute: ComputeDep
) -> GradientDescentResponse | ProgramDescentResponse | Response:
    """Minimize f from x0 by x_(t+1) = x_t - γ ten(df/dx(x_t)) until a stopping rule fires."""
    return await respond_run(
        request, "gradient_descent", body, settings, compute,
        collected=_gradient_descent, picture=_descent_picture, start=_start, line=_line,
    )  # fmt: skip


async def respond_run(
    request: Request,
    route: str,
    body: Body,
    settings: Settings,
    compute: Compute,
    *,
    collected: Callable[[Body, Settings], Answer],
    picture: Callable[[Body, Settings, PictureType], bytes],
    start: Callable[[Body, Settings], tuple[Events, Unpack]],
    line: Callable[[DescentRecord | DescentSummary, Body, Unpack], bytes],
) -> Answer | Response:
    """Answer a run request (descent or minimize) as a picture, one JSON document or NDJSON.

    A run ends itself at its deadline (status ``"deadline"``), so no computation deadline is
    set on top: the cancellation token only carries the client's disconnect.
    """
    media_type = accepted_picture(request, route, body)
    if media_type is not None:
        content = await compute(picture, body, settings, media_type, deadline_seconds=math.inf)
        return picture_response(content, media_type)
    chosen = negotiate(request, route, body.encoding, body)
    if chosen is None or chosen.media_type != NDJSON:
        return await answer(request, compute, collected, body, settings, deadline_seconds=math.inf)
    run = Run(body, settings, start, line)
    return await stream(request, compute, run.start, run.line)


async def stream(
    request: Request, compute: Compute, start: Callable[[], Events], line: Line
) -> StreamingResponse:
    """Start a run and stream its events as NDJSON, one ``line(event)`` each (shared by routes).

    A streamed run holds one computation slot from its checks to its last line (a cancelled one
    until its worker thread has returned), under a token without a deadline. ``start`` does
    the checks, the preparation and the evaluation at ``x0`` in a worker thread before the first
    byte, so a refusal is still a problem response.
    """
    release = await compute.acquire()
    # No deadline: a run ends itself at its own. The token stops it if the request is cancelled.
    token = CancelToken(None)
    try:
        events = await run_to_end(token, token.run, start)
    except BaseException:
        release()
        raise
    return _SlotStreamingResponse(_ndjson(request, events, line, token), release)
