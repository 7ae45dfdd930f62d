"""RFC 9457 problem details: one table from exception class to problem, one handler, one schema.

Errors are raised in the engine and codec and rendered here, at the edge. The table is explicit
(not derived from class names) so renaming a class cannot change a public ``type``.
"""

import json
import logging
import re
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from ..codec.errors import CodecError
from ..codec.tensors import BINARY_TENSOR_ERROR
from ..engine import errors as engine_errors

logger = logging.getLogger("service.problems")
PROBLEM_MEDIA_TYPE = "application/problem+json"


class ProblemError(BaseModel):
    """One validation failure: what is wrong and where (a JSON Pointer into the request body)."""

    detail: str
    pointer: str = Field(
        description="JSON Pointer (RFC 6901) into the request body; '' is the root."
    )


class Problem(BaseModel):
    """An RFC 9457 problem; ``errors`` lists validation failures, the rest describes limits."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "type": "/problems/request-validation",
                    "title": "Request validation failed",
                    "status": 422,
                    "detail": "1 validation error in the request body",
                    "errors": [
                        {"detail": "Input should be a valid number", "pointer": "/x/data/0/1"}
                    ],
                }
            ]
        }
    )

    type: str = Field("about:blank", description="Stable relative URI of the problem kind.")
    title: str
    status: int
    detail: str
    instance: str | None = None
    errors: list[ProblemError] | None = None
    quantity: str | None = Field(None, description="What was estimated (limit problems).")
    estimate: int | None = Field(None, description="The estimated amount (limit problems).")
    limit: int | None = Field(None, description="The configured bound (limit problems).")
    hint: str | None = Field(None, description="What to do instead (limit problems).")
    setting: str | None = Field(
        None,
        description="The setting that bounds the quantity (limit problems), e.g. 'max_work' "
        "for SERVICE_MAX_WORK.",
    )
    error_count: int | None = Field(
        None,
        description="Present when `errors` (at most 50) is not the whole list: how many "
        "failures the validator reported (each member of a union counts).",
    )
    request_id: str | None = Field(
        None, description="The request's id, also in the X-Request-ID response header."
    )


@dataclass(frozen=True)
class ProblemKind:
    """Status, ``type`` and ``title`` of one problem kind."""

    status: int
    type: str
    title: str
    default_detail: str = ""  # for exceptions that carry no message of their own


class UnsupportedMediaType(Exception):
    """A request body of a type the service does not read: 415."""


class InvalidBody(Exception):
    """A request body that cannot be read at all, such as broken gzip: 400."""


class NotAcceptable(Exception):
    """An ``Accept`` header that no representation of the answer satisfies: 406."""


# Looked up along the exception's MRO, so a subclass without an entry uses its parent's.
PROBLEM_TABLE: dict[type[BaseException], ProblemKind] = {
    RequestValidationError: ProblemKind(
        422, "/problems/request-validation", "Request validation failed"
    ),
    engine_errors.IndexOutOfRange: ProblemKind(
        422, "/problems/index-out-of-range", "Index out of range"
    ),
    engine_errors.ShapeError: ProblemKind(422, "/problems/shape-mismatch", "Shape mismatch"),
    engine_errors.ParameterError: ProblemKind(
        422, "/problems/invalid-parameter", "Invalid parameter"
    ),
    engine_errors.UnknownOperation: ProblemKind(
        422, "/problems/unknown-operation", "Unknown operation"
    ),
    engine_errors.NonFiniteError: ProblemKind(422, "/problems/non-finite", "Non-finite value"),
    engine_errors.DomainError: ProblemKind(
        422, "/problems/domain-error", "Input outside the domain"
    ),
    engine_errors.LimitExceeded: ProblemKind(413, "/problems/limit-exceeded", "Limit exceeded"),
    InvalidBody: ProblemKind(400, "/problems/invalid-body", "Unreadable request body"),
    # A computation stopped at a checkpoint: its deadline passed, or its client left.
    engine_errors.DeadlineExceeded: ProblemKind(
        504, "/problems/deadline-exceeded", "Computation deadline exceeded"
    ),
    engine_errors.Cancelled: ProblemKind(
        400,
        "/problems/cancelled",
        "Computation cancelled",
        "the client disconnected; its computation was stopped",
    ),
    engine_errors.EngineError: ProblemKind(422, "/problems/engine-error", "Computation refused"),
    CodecError: ProblemKind(422, "/problems/invalid-tensor", "Invalid tensor"),
    UnsupportedMediaType: ProblemKind(
        415, "/problems/unsupported-media-type", "Unsupported media type"
    ),
    NotAcceptable: ProblemKind(406, "/problems/not-acceptable", "Not acceptable"),
    # The client left before its body arrived: nobody reads the answer, but it is no server error.
    ClientDisconnect: ProblemKind(
        400,
        "/problems/incomplete-body",
        "Incomplete request body",
        "the client disconnected before the whole request body arrived",
    ),
    Exception: ProblemKind(500, "/problems/internal-error", "Internal server error"),
}
INTERNAL_ERROR = PROBLEM_TABLE[Exception]  # the only kind whose detail is never shown
# A 408 of the service's own (:class:`BodyStalled`); Starlette's other statuses stay about:blank.
BODY_STALLED = "/problems/body-stalled"
# Problems raised outside the table: body limit (limit-exceeded), saturation, missing keys and
# stalled bodies.
PROBLEM_TYPES = sorted(
    {kind.type for kind in PROBLEM_TABLE.values()}
    | {"/problems/saturated", "/problems/unauthorized", BODY_STALLED}
)


class BodyTooLarge(StarletteHTTPException):
    """A request body over ``SERVICE_MAX_BODY_BYTES``, raised while it streams in."""

    def __init__(self, received: int, limit: int) -> None:
        super().__init__(413, f"request body of at least {received} bytes exceeds {limit} bytes")
        self.received = received
        self.limit = limit


class Saturated(StarletteHTTPException):
    """A per-process capacity is used up: 503 with ``Retry-After``.

    Parameters
    ----------
    setting : str
        The setting whose capacity is used up (the refusal metric's label).
    detail : str
    retry_after : int
        Seconds the client should wait.
    """

    def __init__(self, setting: str, detail: str, retry_after: int) -> None:
        super().__init__(503, detail)
        self.setting = setting
        self.retry_after = retry_after


class BodyStalled(StarletteHTTPException):
    """A body that stopped arriving, or arrives too slowly to be worth the wait: 408."""


class RequestTimeout(BodyStalled):
    """The client stopped sending its body for longer than the read timeout: 408."""

    def __init__(self, seconds: float) -> None:
        super().__init__(408, f"no part of the request body arrived for {seconds:g} s")


class BodyTooSlow(BodyStalled):
    """A body arriving below ``SERVICE_MIN_BODY_RATE_BYTES_PER_SECOND`` after the window: 408."""

    def __init__(self, received: int, seconds: float, minimum: float) -> None:
        super().__init__(
            408,
            f"the request body arrived at {received / max(seconds, 1e-9):.0f} bytes/s "
            f"({received} bytes in {seconds:.1f} s), below the minimum of {minimum:g} bytes/s",
        )


def problem_kind(exc: BaseException) -> ProblemKind:
    """Return the table entry for the nearest class in ``exc``'s MRO."""
    for cls in type(exc).__mro__:
        if cls in PROBLEM_TABLE:
            return PROBLEM_TABLE[cls]
    return PROBLEM_TABLE[Exception]


def problem_response(problem: Problem, headers: dict[str, str] | None = None) -> JSONResponse:
    """Render a problem with the ``application/problem+json`` media type."""
    return JSONResponse(
        problem.model_dump(exclude_none=True),
        status_code=problem.status,
        media_type=PROBLEM_MEDIA_TYPE,
        headers=headers,
    )


def body_too_large_problem(received: int, limit: int, instance: str | None) -> Problem:
    """Return the problem for a body over the configured size."""
    return Problem(
        type="/problems/limit-exceeded",
        title="Limit exceeded",
        status=413,
        detail=f"request body of at least {received} bytes exceeds the limit of {limit} bytes",
        instance=instance,
        quantity="request body bytes",
        estimate=received,
        limit=limit,
        setting="max_body_bytes",
    )


def _escape(segment: str | int) -> str:
    return str(segment).replace("~", "~0").replace("/", "~1")


Segment = tuple[str | int, bool]  # (loc part, whether it is a union tag rather than a place)


def _segments(loc: tuple[Any, ...], document: Any, missing: bool) -> list[Segment]:
    """Mark each part of a pydantic ``loc`` as a place in the request or a union tag.

    pydantic puts union member tags (``'union[float,list[...]]'``, ``'list[int]'``,
    discriminator values) into ``loc``; they name no place in the document. Walking the request
    tells them apart: a part the document lacks is a tag, except the last part of a ``missing``
    error, which names where the absent field belongs.
    """
    parts = list(loc)
    # FastAPI's own body errors start with "body"; a request's own field of that name (the body of
    # /v1/estimate) is in the document, or is the one part of a missing error about a document.
    field = isinstance(document, dict) and ("body" in document or (missing and len(parts) == 1))
    if parts[:1] == ["body"] and not field:
        parts = parts[1:]
    segments: list[Segment] = []
    node = document
    for position, part in enumerate(parts):
        is_tag = False
        if isinstance(node, dict) and isinstance(part, str):
            if part in node:
                node = node[part]
            elif missing and position == len(parts) - 1:
                node = None
            else:
                is_tag = True
        elif isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
            node = node[part]
        elif isinstance(part, str) and document is not None:
            is_tag = True
        else:
            node = None
        segments.append((part, is_tag))
    return segments


Located = tuple[list[Segment], tuple[int, str]]  # segments, (position in pydantic's list, detail)


def _select_branches(errors: list[Located]) -> list[Located]:
    """Keep, at every union, only the errors of the member the request meant.

    A failed union reports every member's errors. The member whose errors reach deepest into the
    request is the one the client wrote (``[[0, true]]`` is a list of indices with a bad entry,
    not a bad single index); on a tie the first-declared member wins, as pydantic tries it first.
    """
    plain = [error for error in errors if not any(tag for _, tag in error[0])]
    unions: dict[tuple[str | int, ...], dict[str | int, list[Located]]] = {}
    for segments, detail in errors:
        tags = [i for i, (_, tag) in enumerate(segments) if tag]
        if not tags:
            continue
        first = tags[0]
        prefix = tuple(part for part, _ in segments[:first])
        member = segments[first][0]
        rest = segments[:first] + segments[first + 1 :]
        unions.setdefault(prefix, {}).setdefault(member, []).append((rest, detail))

    def depth(branch: list[Located]) -> int:
        return max(sum(1 for _, tag in segments if not tag) for segments, _ in branch)

    chosen: list[Located] = []
    for members in unions.values():
        best = max(members.values(), key=depth)  # max keeps the first of equal depths
        chosen.extend(_select_branches(best))
    return plain + chosen


# pydantic prefixes the message of a ValueError raised in a validator; clients need only ours.
_PYDANTIC_PREFIX = re.compile(r"^(Value error|Assertion failed), ")
# Errors whose input is not worth echoing: absent, unparsable, or already named in the message.
_NOT_ECHOED = frozenset(
    {"missing", "json_invalid", "unknown_tag", "missing_tag", "ragged", "extra_forbidden",
     BINARY_TENSOR_ERROR}
)  # fmt: skip
# A problem lists at most this many validation failures (and says how many there were): 32,000
# bad strings must not become a 2.6 MB error body.
MAX_REPORTED_ERRORS = 50
# Only the validator's first errors are mapped to pointers (a union reports one error per member,
# so this still yields at least MAX_REPORTED_ERRORS places): mapping 10,000 took 2 s.
MAX_MAPPED_ERRORS = 20 * MAX_REPORTED_ERRORS
# Bodies up to this size are parsed again to tell union tags from places in pointers; a larger
# body is not (its Python objects would take ~30x its size), and every part of a location is then
# taken for a place.
MAX_POINTER_DOCUMENT_BYTES = 1 << 20


class RenderedValidationError(RequestValidationError):
    """A body validation failure whose problem errors were rendered off the event loop.

    Parameters
    ----------
    rendered : list of ProblemError
        The failures, one per pointer (see :func:`validation_errors`), from the validator's
        first ``MAX_MAPPED_ERRORS`` errors.
    count : int
        How many failures there were: the pointers when every error was mapped, the
        validator's errors (one per union member) otherwise.
    """

    def __init__(self, rendered: list[ProblemError], count: int) -> None:
        super().__init__([])
        self.rendered = rendered
        self.count = count


def validation_errors(errors: list[dict[str, Any]], body: Any) -> list[ProblemError]:
    """Map pydantic errors to ``{detail, pointer}``: one per place, from the meant union member."""
    document: Any = None
    if isinstance(body, bytes | bytearray) and len(body) <= MAX_POINTER_DOCUMENT_BYTES:
        try:
            document = json.loads(body)
        except (ValueError, RecursionError):  # nesting deeper than Python's parser goes
            document = None
    elif body is not None:
        document = body
    located: list[Located] = []
    for error in errors:
        missing = error.get("type") == "missing"
        context = error.get("ctx") or {}
        # A validator may name a place inside its field (the first ragged row): ctx["at"].
        loc = (*error.get("loc", ()), *context.get("at", ()))
        segments = _segments(loc, document, missing)
        detail = _PYDANTIC_PREFIX.sub("", str(error.get("msg", "invalid")))
        value = error.get("input")
        if (
            "input" in error
            and error.get("type") not in _NOT_ECHOED
            and (value is None or isinstance(value, bool | int | float | str))
        ):
            shown = json.dumps(value)
            detail += f" (got {shown if len(shown) <= 80 else shown[:77] + '...'})"
        located.append((segments, (len(located), detail)))
    result: dict[str, str] = {}
    # pydantic reports errors in request order; selection regrouped them, so restore it.
    for segments, (_, detail) in sorted(_select_branches(located), key=lambda e: e[1][0]):
        pointer = "".join(f"/{_escape(part)}" for part, tag in segments if not tag)
        result.setdefault(pointer, detail)
    return [ProblemError(detail=detail, pointer=pointer) for pointer, detail in result.items()]


def refused_limit(exc: BaseException) -> str | None:
    """Name the setting that refused a request, for the refusal metric (None: not a refusal).

    The label set is fixed (one per setting), whatever the wording of the error.
    """
    if isinstance(exc, BodyTooLarge):
        return "max_body_bytes"
    if isinstance(exc, Saturated):
        return exc.setting
    if isinstance(exc, RequestTimeout):
        return "body_read_timeout_seconds"
    if isinstance(exc, BodyTooSlow):
        return "min_body_rate_bytes_per_second"
    if isinstance(exc, engine_errors.LimitExceeded):
        return exc.setting
    return None


def _problem_for(request: Request, exc: Exception) -> tuple[Problem, dict[str, str] | None]:
    instance = request.url.path
    if isinstance(exc, RequestValidationError):
        kind = problem_kind(exc)
        if isinstance(exc, RenderedValidationError):
            errors, count = exc.rendered, exc.count
        else:  # FastAPI's own (path, query): a few entries, rendered here
            errors = validation_errors(list(exc.errors()), exc.body)
            count = len(errors)
        detail = f"{count} validation error{'s' if count != 1 else ''} in the request"
        capped = count > len(errors[:MAX_REPORTED_ERRORS])
        if capped:
            detail += f" (the first {MAX_REPORTED_ERRORS} are listed)"
        problem = Problem(
            type=kind.type, title=kind.title, status=kind.status, detail=detail,
            instance=instance, errors=errors[:MAX_REPORTED_ERRORS],
            error_count=count if capped else None,
        )  # fmt: skip
        return problem, None
    if isinstance(exc, BodyTooLarge):
        return body_too_large_problem(exc.received, exc.limit, instance), None
    if isinstance(exc, Saturated):
        detail = f"{exc.detail}; retry after {exc.retry_after} s"
        problem = Problem(
            type="/problems/saturated", title="Service Unavailable", status=503, detail=detail,
            instance=instance,
        )  # fmt: skip
        return problem, {"Retry-After": str(exc.retry_after)}
    if isinstance(exc, StarletteHTTPException):
        phrase = HTTPStatus(exc.status_code).phrase
        detail = (
            exc.detail
            if isinstance(exc.detail, str) and exc.detail != phrase
            else f"{request.method} {instance}: {phrase.lower()}"
        )
        # The service's own 408s have a page; Starlette's 404 and 405 mean what their status says.
        problem = Problem(
            type=BODY_STALLED if isinstance(exc, BodyStalled) else "about:blank",
            title=phrase,
            status=exc.status_code,
            detail=detail,
            instance=instance,
        )
        return problem, dict(exc.headers) if exc.headers else None
    kind = problem_kind(exc)
    if kind is INTERNAL_ERROR:
        logger.error("unhandled error on %s %s", request.method, instance, exc_info=exc)
        detail = "the server failed to handle this request; the error has been logged"
        problem = Problem(
            type=kind.type, title=kind.title, status=kind.status, detail=detail, instance=instance
        )
        return problem, None
    return expected_problem(exc, instance), None


# An engine message may quote what the client sent (a parameter, a shape): the detail is cut to
# this many characters, so that an echo stays small whatever was sent.
MAX_DETAIL_CHARS = 1000


def expected_problem(exc: BaseException, instance: str | None) -> Problem:
    """Render an expected (not internal) error as its problem; limits carry their fields."""
    kind = problem_kind(exc)
    detail = str(exc) or kind.default_detail
    if len(detail) > MAX_DETAIL_CHARS:
        detail = f"{detail[: MAX_DETAIL_CHARS - 40]}... ({len(detail)} characters in all)"
    problem = Problem(
        type=kind.type, title=kind.title, status=kind.status, detail=detail, instance=instance
    )
    pointer = getattr(exc, "pointer", None)
    if isinstance(pointer, str):
        # Program errors know where in the request they are (a node, a wrt name, an expression).
        problem = problem.model_copy(
            update={"errors": [ProblemError(detail=detail, pointer=pointer)]}
        )
    if isinstance(exc, engine_errors.LimitExceeded):
        problem = problem.model_copy(
            update={
                "quantity": exc.quantity,
                "estimate": exc.estimate,
                "limit": exc.limit,
                "hint": exc.hint or None,
                "setting": exc.setting,
            }
        )
    return problem


async def handle_exception(request: Request, exc: Exception) -> JSONResponse:
    """Render any exception as a problem carrying the request id; count limit refusals.

    Unexpected exceptions are logged with their traceback; the client gets a generic detail.
    """
    problem, headers = _problem_for(request, exc)
    request_id = getattr(request.state, "request_id", None)
    if request_id:
        problem = problem.model_copy(update={"request_id": request_id})
        # A 500 is rendered outside the request-id middleware, so the header is set here too.
        headers = {**(headers or {}), "X-Request-ID": request_id}
    limit = refused_limit(exc)
    metrics = getattr(request.app.state, "metrics", None)
    if limit and metrics is not None:
        metrics.refused.labels(limit).inc()
    return problem_response(problem, headers=headers)


def _problem_content(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {PROBLEM_MEDIA_TYPE: {"schema": {"$ref": "#/components/schemas/Problem"}}},
    }


STATUS_DESCRIPTIONS: dict[int, str] = {
    400: "The client left before its whole body arrived (`/problems/incomplete-body`).",
    401: "Missing or wrong API key, when keys are configured (`/problems/unauthorized`).",
    404: "No such resource.",
    406: "No representation satisfies `Accept` (`/problems/not-acceptable`); errors are always "
    "`application/problem+json`.",
    408: "The body stopped arriving for longer than the read timeout, or arrived below the "
    "minimum rate (`/problems/body-stalled`).",
    413: "Payload or estimated work over a configured limit (`/problems/limit-exceeded`).",
    415: "A body that is neither `application/json` nor `application/octet-stream`, or JSON "
    "declared in a charset other than UTF-8 (`/problems/unsupported-media-type`).",
    422: "Invalid input, shape or parameter; `errors` points into the body.",
    500: "Unexpected error; generic detail, traceback only in the server log.",
    503: "Every computation slot is busy, or too many body bytes are in flight; retry after "
    "`Retry-After` seconds (`/problems/saturated`).",
    504: "The computation passed `SERVICE_COMPUTATION_DEADLINE_SECONDS` and was stopped "
    "(`/problems/deadline-exceeded`).",
}
# The responses a router declares; the document is then narrowed to each operation's statuses
# (service/api/openapi_document.py).
PROBLEM_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: _problem_content(STATUS_DESCRIPTIONS[status])
    for status in (401, 406, 413, 415, 422, 500, 503)
}
# Declared by the routers and routes whose computation runs under the computation deadline; a run
# (descent, minimize) ends itself with status "deadline" instead, and the estimate computes nothing.
DEADLINE_RESPONSES: dict[int | str, dict[str, Any]] = {
    504: _problem_content(STATUS_DESCRIPTIONS[504])
}
