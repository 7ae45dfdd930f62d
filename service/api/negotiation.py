"""Content negotiation: body types read (415) and representations sent (406).

Request bodies are ``application/json`` (also any ``+json`` type, or no ``Content-Type`` at all)
or ``application/octet-stream``, the binary body of CONVENTIONS section 3.1; anything else is a 415
problem. ``Inference-Header-Content-Length`` belongs to binary bodies only.

Every operation answers ``application/json`` by default. Further representations are registered
per operation (its id: the route function's name) with :func:`offer`; each has a renderer that
runs in the worker thread on the answer computed with ``encoding: "binary"`` (its tensors hold
their arrays, :mod:`service.codec.binary`). The ``Accept`` header picks among them by quality,
then by the order of the header's ranges, then by the order offered (JSON first, or the binary
body when the request's ``encoding`` is ``"binary"``: JSON cannot carry it). An ``Accept`` that
nothing satisfies is a 406 problem. Errors are ``application/problem+json`` whatever ``Accept``
says. The OpenAPI document lists every registered representation (:func:`document`).
"""

import functools
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar, cast

from fastapi import Request
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from ..codec.binary import HEADER_LENGTH
from .problems import NotAcceptable, Saturated, UnsupportedMediaType
from .rendering import json_response

JSON = "application/json"
OCTET_STREAM = "application/octet-stream"
NPZ = "application/x-npz"
NPY = "application/x-npy"
NDJSON = "application/x-ndjson"

Renderer = Callable[[BaseModel], Response]
Answer = TypeVar("Answer", bound=BaseModel)
Model = TypeVar("Model", bound=BaseModel)


@dataclass(frozen=True)
class Representation:
    """One way an operation can answer besides JSON.

    Parameters
    ----------
    media_type : str
    description : str
        What the body holds; goes into the OpenAPI document.
    render : callable or None
        Turns the answer (computed with ``encoding: "binary"``) into the response, in the worker
        thread. None: the route produces this representation itself (a stream).
    applies : callable
        Whether a given validated request can have this representation (406 otherwise).
    schema : dict
        The OpenAPI schema of the body.
    """

    media_type: str
    description: str
    render: Renderer | None
    applies: Callable[[Any], bool] = field(default=lambda body: True)
    schema: dict[str, Any] = field(default_factory=lambda: {"type": "string", "format": "binary"})


OFFERS: dict[str, list[Representation]] = {}


def offer(operation: str, *representations: Representation) -> None:
    """Register representations of ``operation``'s answer besides JSON (in preference order)."""
    offers = OFFERS.setdefault(operation, [])
    for representation in representations:
        offers[:] = [r for r in offers if r.media_type != representation.media_type]
        offers.append(representation)


def body_kind(request: Request) -> str:
    """Return ``"json"`` or ``"binary"`` for the request's ``Content-Type``.

    Raises
    ------
    UnsupportedMediaType
        For any other type (415).
    """
    content_type = request.headers.get("content-type", "")
    media, _, params = content_type.partition(";")
    media = media.strip().lower()
    if media == OCTET_STREAM:
        return "binary"
    if media in ("", JSON) or (media.startswith("application/") and media.endswith("+json")):
        if HEADER_LENGTH.lower() in request.headers:
            raise UnsupportedMediaType(
                f"{HEADER_LENGTH} goes with a {OCTET_STREAM} body, not {media or JSON}"
            )
        if params:
            _check_charset(params)
        return "json"
    raise UnsupportedMediaType(
        f"Content-Type {content_type!r} is not read here: send {JSON}, or {OCTET_STREAM} with an "
        f"{HEADER_LENGTH} header (a JSON header followed by raw tensor bytes)"
    )


def _check_charset(params: str) -> None:
    """Refuse a JSON body declared in any charset but UTF-8 (415).

    JSON between systems is UTF-8 (RFC 8259, section 8.1) and is read as such: a body declared
    as UTF-16 would otherwise fail as "Invalid JSON", which sends a client looking in the wrong
    place. ``charset=utf-8`` (which ``application/json`` does not define, but clients send) is
    accepted, and so is ``charset=us-ascii``: its text is UTF-8 text, and it was always read.
    """
    for param in params.split(";"):
        name, _, value = param.partition("=")
        charset = value.strip().strip('"').lower()
        if name.strip().lower() == "charset" and charset not in ("utf-8", "utf8", "us-ascii"):
            raise UnsupportedMediaType(
                f"a JSON body is read as UTF-8 (RFC 8259), not charset={charset}: send it as UTF-8"
            )


def _ranges(accept: str) -> list[tuple[str, float]]:
    """Parse ``Accept`` into (media range, quality) in header order; malformed parts are skipped."""
    ranges = []
    for part in accept.split(","):
        media, *params = (piece.strip() for piece in part.split(";"))
        if "/" not in media:
            continue
        quality = 1.0
        for param in params:
            name, _, value = param.partition("=")
            if name.strip().lower() == "q":
                try:
                    quality = min(max(float(value), 0.0), 1.0)
                except ValueError:
                    quality = 0.0
        ranges.append((media.lower(), quality))
    return ranges


def _match(media_type: str, ranges: list[tuple[str, float]]) -> tuple[float, int]:
    """Quality and position of the most specific range matching ``media_type`` (0 if none)."""
    kind = media_type.split("/")[0]
    best: tuple[int, float, int] = (-1, 0.0, len(ranges))
    for position, (media, quality) in enumerate(ranges):
        specificity = 2 if media == media_type else 1 if media == f"{kind}/*" else 0
        if specificity == 0 and media != "*/*":
            continue
        if specificity > best[0]:
            best = (specificity, quality, position)
    return best[1], best[2]


def choose(accept: str | None, offered: list[str]) -> str:
    """Return the media type of ``offered`` that ``accept`` prefers (the first one if no header).

    Raises
    ------
    NotAcceptable
        If ``accept`` gives every offered type quality 0 (406).
    """
    if not accept or not accept.strip():
        return offered[0]
    # Clients send the same few Accept headers again and again (httpx and curl: */*), and every
    # request is negotiated twice (check_accept, then negotiate): short ones are remembered.
    preferred = _preferred if len(accept) <= REMEMBERED_ACCEPT_LENGTH else _preferred.__wrapped__
    chosen = preferred(accept, tuple(offered))
    if chosen is None:
        raise NotAcceptable(
            f"Accept {accept!r} matches none of the representations of this answer: "
            f"{', '.join(offered)} (errors are always application/problem+json)"
        )
    return chosen


# Accept headers up to this length have their choices remembered (at most 256 of them).
REMEMBERED_ACCEPT_LENGTH = 256


@functools.lru_cache(maxsize=256)
def _preferred(accept: str, offered: tuple[str, ...]) -> str | None:
    """Return the media type of ``offered`` that ``accept`` prefers; None if it accepts none."""
    ranges = _ranges(accept)
    scored = []
    for index, media_type in enumerate(offered):
        quality, position = _match(media_type, ranges)
        if quality > 0:
            scored.append((-quality, position, index, media_type))
    return min(scored)[3] if scored else None


def negotiate(
    request: Request, operation: str, encoding: str | None, body: Any = None
) -> Representation | None:
    """Pick the representation of ``operation``'s answer to ``request`` (None: JSON).

    Parameters
    ----------
    request : Request
    operation : str
        The operation id (route function name) the representations are registered under.
    encoding : str or None
        The request's response ``encoding``; ``"binary"`` rules JSON out.
    body : request model, optional
        Passed to each representation's ``applies``.

    Raises
    ------
    NotAcceptable
        If no representation satisfies ``Accept`` (406).
    """
    offers = [r for r in OFFERS.get(operation, []) if r.applies(body)]
    if encoding == "binary":
        offers.sort(key=lambda r: r.media_type != OCTET_STREAM)
        offered = [r.media_type for r in offers]
    else:
        offered = [JSON, *(r.media_type for r in offers)]
    chosen = choose(request.headers.get("accept"), offered)
    return next((r for r in offers if r.media_type == chosen), None)


@dataclass(frozen=True)
class DeferredBody(Generic[Model]):
    """A large request body that was read but not yet validated (see :func:`answer`).

    ``validate`` returns the request model or raises what body validation raises (422, 413);
    it runs in the worker-thread call that then computes and renders the answer, so that such a
    request crosses to the thread pool once instead of twice (each crossing is a thread switch
    and an event-loop wake-up; README, "Binary bodies", has the measured cost).
    """

    validate: Callable[[], Model]


def _prepare(request: Request, operation: str, body: Any) -> tuple[Any, Callable[[Any], Any]]:
    """Return the body to compute with and the renderer of its answer (406 if none fits)."""
    representation = negotiate(request, operation, getattr(body, "encoding", None), body)
    if representation is None or representation.render is None:
        # FastAPI would write a returned model on the event loop: it is written here instead.
        return body, json_response
    return body.model_copy(update={"encoding": "binary"}), representation.render


async def answer(
    request: Request,
    compute: Callable[..., Awaitable[Any]],
    function: Callable[..., Answer],
    body: Any,
    *args: Any,
    deadline_seconds: float | None = None,
) -> Answer:
    """Compute ``function(body, *args)`` and answer it in the representation ``Accept`` picks.

    ``deadline_seconds`` replaces the computation deadline (``math.inf``: none, for a run that
    ends itself at its own deadline).

    A JSON answer is written in the worker-thread call that computes it
    (:func:`~service.api.rendering.json_response`, base64 spliced in as bytes): the event loop
    never serializes a response whose size grows with the request. Any other representation is
    computed with ``encoding: "binary"`` and rendered in the same worker-thread call. A
    :class:`DeferredBody` is validated in that call too, before the representation is chosen;
    if no slot frees up in time it is validated anyway, so that its 422, 413 or 406 comes before
    the 503.

    Raises
    ------
    NotAcceptable
        Before computing, if no representation satisfies ``Accept`` (406).
    Saturated
        If no computation slot freed up in time, for a valid request (503).
    """
    operation = getattr(request.scope.get("route"), "name", "")
    if isinstance(body, DeferredBody):

        @functools.wraps(function)  # the hop keeps the computation's name (metrics, tests)
        def respond(deferred: DeferredBody[Any]) -> Any:
            parsed, render = _prepare(request, operation, deferred.validate())
            return render(function(parsed, *args))

        try:
            rendered = await compute(respond, body, deadline_seconds=deadline_seconds)
        except Saturated:
            # A body validated before it waits for a slot (a small one, every other route) gets
            # its 422, 413 or 406 whatever the load: so does this one. Only a request that would
            # be served is refused for want of a slot.
            _prepare(request, operation, await run_in_threadpool(body.validate))
            raise
    else:
        parsed, render = _prepare(request, operation, body)
        rendered = await compute(
            function, parsed, *args, deadline_seconds=deadline_seconds, render=render
        )
    # FastAPI sends a Response as it is, whatever the route's declared model.
    return cast(Answer, rendered)


async def check_accept(request: Request) -> None:
    """Dependency: refuse (406) an ``Accept`` that no representation of the route satisfies.

    A coroutine function, so FastAPI calls it on the event loop: a plain ``def`` dependency
    costs a thread-pool hop per request.

    Runs before the body is read; representations that only some requests have are counted, so
    :func:`negotiate` may still refuse once the body is known.
    """
    route = request.scope.get("route")
    operation = getattr(route, "name", "")
    offered = [JSON, *(r.media_type for r in OFFERS.get(operation, []))]
    choose(request.headers.get("accept"), offered)


def document(schema: dict[str, Any]) -> None:
    """Add the registered representations and binary request bodies to an OpenAPI document.

    Every operation with a JSON request body also reads it as ``application/octet-stream`` with
    the ``Inference-Header-Content-Length`` header; every registered representation becomes a
    media type of the operation's 200 response.
    """
    for path_item in schema.get("paths", {}).values():
        for operation in path_item.values():
            if not isinstance(operation, dict) or "operationId" not in operation:
                continue
            request_body = operation.get("requestBody", {}).get("content", {})
            if JSON in request_body:
                request_body[OCTET_STREAM] = {"schema": {"type": "string", "format": "binary"}}
                operation["requestBody"]["description"] = BINARY_REQUEST_DESCRIPTION
                operation.setdefault("parameters", []).append(HEADER_LENGTH_PARAMETER)
            ok = operation.get("responses", {}).get("200")
            offers = OFFERS.get(operation["operationId"], [])
            if ok is None or not offers:
                continue
            content = ok.setdefault("content", {})
            lines = [ok.get("description", "")]
            for representation in offers:
                content[representation.media_type] = {"schema": representation.schema}
                lines.append(f"* `{representation.media_type}`: {representation.description}")
            ok["description"] = "\n".join(lines)
            if any(r.media_type == OCTET_STREAM for r in offers):
                ok["headers"] = {HEADER_LENGTH: HEADER_LENGTH_RESPONSE}


BINARY_REQUEST_DESCRIPTION = (
    "`application/json`: the request as JSON. `application/octet-stream` (CONVENTIONS 3.1, the "
    "Open Inference Protocol's binary tensor extension): the first N bytes, N given by the "
    f"`{HEADER_LENGTH}` header, are the same JSON request in UTF-8; any tensor in it may be "
    '`{"encoding": "binary", "shape": [...], "dtype": "float64" | "float32", '
    '"binary_data_size": n}` (COO `row`/`col`: dtype `int64`), whose n bytes (little-endian, '
    "C order, `ndarray.tobytes()`) follow the header, one segment after another in the order the "
    "tensors appear in the JSON text. Sizes must match shapes and the body exactly (422 with a "
    "pointer to the tensor otherwise)."
)
HEADER_LENGTH_PARAMETER: dict[str, Any] = {
    "name": HEADER_LENGTH,
    "in": "header",
    "required": False,
    "description": "Bytes of the JSON header of an `application/octet-stream` body; only with "
    "that body type.",
    "schema": {"type": "integer", "minimum": 0},
}
HEADER_LENGTH_RESPONSE: dict[str, Any] = {
    "description": "With `application/octet-stream`: bytes of the JSON header that starts the "
    "body; each binary tensor in it (`binary_data_size`, no `data`) is the next segment.",
    "schema": {"type": "integer", "minimum": 0},
}
