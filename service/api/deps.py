"""Dependencies shared by the routes: settings, the JSON body parser, the computation slots.

Request bodies are parsed by ``Model.model_validate_json`` on the raw bytes, in the thread pool:
pydantic-core's JSON parser is several times faster than FastAPI's ``json.loads`` path
(``shared/notes/ecosystem.md`` section 1), and a 10^6-element list must not stall the event loop.
Before that, the raw bytes are counted (:mod:`.budget`) so that a body whose objects would not fit
is refused without building them; validation errors are rendered in the same thread call.
Because FastAPI then no longer sees a body parameter, each route's request schema is added to the
OpenAPI document through :func:`body_openapi` and :data:`REQUEST_MODELS`.

Computations run in the thread pool under a :class:`~service.engine.cancel.CancelToken` with the
computation deadline; a task watches for the client's disconnect and sets the token, so the
engine stops at its next checkpoint and the slot is free again. The response is serialized in
the same thread call: the event loop only moves bytes.
"""

import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated, Any, TypeVar

import anyio
import numpy as np
from fastapi import Depends, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response
from starlette.types import Receive

from ..codec import DecodeLimits
from ..codec.binary import HEADER_LENGTH, REQUEST_SEGMENTS, BinaryBodyError, read_binary_body
from ..config import Settings, get_settings
from ..engine.cancel import CancelToken
from ..engine.errors import LimitExceeded
from .budget import BodyCounts, check_body, count_separators
from .encoding import content_coding, gunzip
from .memory import RELEASE_AFTER_BYTES, release_memory
from .negotiation import body_kind
from .observability import Metrics, route_template
from .problems import MAX_MAPPED_ERRORS, RenderedValidationError, Saturated, validation_errors

SettingsDep = Annotated[Settings, Depends(get_settings)]
RequestModel = TypeVar("RequestModel", bound=BaseModel)
# Every model parsed by json_body; main.py puts their schemas into components.schemas.
REQUEST_MODELS: list[type[BaseModel]] = []


def decode_limits(settings: Settings) -> DecodeLimits:
    """Return the tensor bounds that the codec applies while a body is validated."""
    return DecodeLimits(max_elements=settings.max_tensor_elements, max_rank=settings.max_rank)


@dataclass(frozen=True)
class BodyItems:
    """A bound on the items of a body, checked on its raw bytes before parsing.

    Attributes
    ----------
    count : callable
        A lower bound on the items, from the separator counts.
    quantity : str
        What is counted (the problem's ``quantity``).
    setting : str
        The setting that bounds it.
    """

    count: Callable[[BodyCounts], int]
    quantity: str
    setting: str


def validate_body(
    model: type[RequestModel],
    raw: bytes,
    settings: Settings,
    items: BodyItems | None = None,
    kind: str = "json",
    header_length: str | None = None,
    coding: str = "identity",
) -> tuple[RequestModel, list[np.ndarray[Any, Any]] | None]:
    """Count, parse and validate a JSON or binary body as ``model`` (in a worker thread).

    Returns the model and the binary body's segments (None for JSON): tensors validated later
    (program graph nodes) find them through ``REQUEST_SEGMENTS``, set in the request's task.

    Parameters
    ----------
    model : type of BaseModel
    raw : bytes
    settings : Settings
    items : BodyItems, optional
        A bound on the items the body holds (index lists: ``max_index_count``).
    kind : {"json", "binary"}
        How the body is sent (:func:`~service.api.negotiation.body_kind`).
    header_length : str, optional
        The ``Inference-Header-Content-Length`` header of a binary body.
    coding : {"identity", "gzip"}
        The body's ``Content-Encoding``; gzip is decompressed first, within the body limit.

    Raises
    ------
    LimitExceeded
        From the raw counts before parsing; from the codec's limits after an otherwise valid
        parse (so an invalid request always gets its 422 with every pointer).
    RenderedValidationError
        With the problem's errors already rendered.
    """
    if coding == "gzip":
        raw = gunzip(raw, settings.max_body_bytes)
    limits = decode_limits(settings)
    deferred: list[LimitExceeded] = []
    context: dict[str, Any] = {"limits": limits, "deferred_limits": deferred}
    document = raw
    segments = None
    if kind == "binary":
        try:
            document, segments = read_binary_body(
                raw, header_length, limits.max_elements, limits.max_rank
            )
        except BinaryBodyError as error:
            detail = {"loc": error.loc, "msg": error.message, "type": "binary_body"}
            raise RequestValidationError([detail], body=error.header) from None
        context["binary_segments"] = segments
    # Only the JSON text is counted: the segments of a binary body are raw numbers.
    counts = count_separators(document)
    check_body(counts, settings)
    if items is not None:
        limit = getattr(settings, items.setting)
        if items.count(counts) > limit:
            raise LimitExceeded(
                items.quantity, items.count(counts), limit, setting=items.setting
            )
    try:
        parsed = model.model_validate_json(document, context=context)
    except ValidationError as error:
        found = error.errors(include_url=False)
        rendered = validation_errors([dict(e) for e in found[:MAX_MAPPED_ERRORS]], document)
        count = len(rendered) if len(found) <= MAX_MAPPED_ERRORS else len(found)
        raise RenderedValidationError(rendered, count) from None
    if deferred:
        raise deferred[0]
    return parsed, segments


def json_body(
    model: type[RequestModel], items: BodyItems | None = None
) -> Callable[..., Awaitable[RequestModel]]:
    """Return a dependency that reads the body and validates it as ``model``.

    Everything but receiving the bytes runs in the thread pool (:func:`validate_body`).
    """
    REQUEST_MODELS.append(model)

    async def parse(request: Request, settings: SettingsDep) -> RequestModel:
        kind = body_kind(request)  # 415 before the body is read
        coding = content_coding(request)
        raw = await request.body()
        header_length = request.headers.get(HEADER_LENGTH) if kind == "binary" else None
        try:
            parsed, segments = await run_in_threadpool(
                validate_body, model, raw, settings, items, kind, header_length, coding
            )
        finally:
            if len(raw) >= RELEASE_AFTER_BYTES:
                # Parsing a large body builds and frees many objects: trim once it is done.
                await run_in_threadpool(release_memory)
        # Set in the request's task, so that its later worker-thread calls see the segments.
        REQUEST_SEGMENTS.set(segments)
        return parsed

    parse.__name__ = f"parse_{model.__name__}"
    return parse


def body_openapi(model: type[BaseModel]) -> dict[str, Any]:
    """Return the ``openapi_extra`` that documents ``model`` as the JSON request body."""
    return {
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": {"$ref": f"#/components/schemas/{model.__name__}"}}
            },
        }
    }


Result = TypeVar("Result")
# A computation that ran this long trims the heap after it (cheaper to test than its memory).
RELEASE_AFTER_SECONDS = 0.05


class Computations:
    """Bound the engine computations running at once in this process, and time them.

    CPU-bound work runs in the thread pool; without a bound, a burst of heavy requests would
    queue there unseen and every client would time out. A request waits at most
    ``wait_seconds`` for a slot, then gets a 503 with ``Retry-After``.
    """

    def __init__(
        self,
        slots: int,
        wait_seconds: float,
        metrics: Metrics,
        deadline_seconds: float | None = None,
    ) -> None:
        self.slots = slots
        self.wait_seconds = wait_seconds
        self.deadline_seconds = deadline_seconds
        self._semaphore = anyio.Semaphore(slots)
        self._metrics = metrics

    @property
    def busy(self) -> int:
        """Slots held right now."""
        return self.slots - int(self._semaphore.value)

    async def acquire(self) -> Callable[[], None]:
        """Take a slot, waiting at most ``wait_seconds``; return the function that frees it.

        Raises
        ------
        Saturated
            If no slot freed up in time (503 with ``Retry-After``).
        """
        try:
            self._semaphore.acquire_nowait()
            waited = False
        except anyio.WouldBlock:
            # No free slot now: wait for one, at most wait_seconds (0 means not at all).
            with anyio.move_on_after(self.wait_seconds) as waiting:
                await self._semaphore.acquire()
            waited = waiting.cancelled_caught
        if waited:
            retry_after = max(1, math.ceil(self.wait_seconds))
            detail = f"all {self.slots} computation slots stayed busy for {self.wait_seconds:g} s"
            raise Saturated("max_concurrent_computations", detail, retry_after)
        self._metrics.in_flight.inc()
        released = False

        def release() -> None:
            nonlocal released
            if not released:
                released = True
                self._metrics.in_flight.dec()
                self._semaphore.release()

        return release

    async def run(
        self,
        route: str,
        function: Callable[..., Result],
        *args: Any,
        receive: Receive | None = None,
        deadline_seconds: float | None = None,
    ) -> Result:
        """Run ``function(*args)`` in the thread pool once a slot is free, under a token.

        Parameters
        ----------
        route : str
            The metrics label.
        function, *args
            The computation.
        receive : ASGI receive, optional
            Watched for ``http.disconnect`` (once the body has been read): the token is set and
            the computation stops at its next checkpoint.
        deadline_seconds : float, optional
            The token's deadline; ``self.deadline_seconds`` when omitted.
        """
        release = await self.acquire()
        deadline = self.deadline_seconds if deadline_seconds is None else deadline_seconds
        token = CancelToken(deadline)
        start = time.perf_counter()
        try:
            failure: Exception | None = None
            async with anyio.create_task_group() as group:
                if receive is not None:
                    group.start_soon(_cancel_on_disconnect, receive, token)
                try:
                    result = await run_in_threadpool(token.run, function, *args)
                except Exception as error:
                    # Raised outside the group: a task group would wrap it in an ExceptionGroup.
                    failure = error
                finally:
                    group.cancel_scope.cancel()
            if failure is not None:
                raise failure
            return result
        finally:
            elapsed = time.perf_counter() - start
            self._metrics.engine.labels(route).observe(elapsed)
            release()
            if elapsed > RELEASE_AFTER_SECONDS:
                # A long computation usually held much memory: give it back (see .memory).
                await run_in_threadpool(release_memory)


async def _cancel_on_disconnect(receive: Receive, token: CancelToken) -> None:
    # After the body, receive() returns only when the client has gone away.
    while True:
        try:
            message = await receive()
        except Exception:
            # A server (or test driver) with nothing more to say: there is no disconnect to see,
            # and the computation must not fail for it.
            return
        if message["type"] == "http.disconnect":
            token.cancel()
            return


def json_response(model: BaseModel) -> Response:
    """Serialize a response model to JSON bytes (in the calling worker thread)."""
    return Response(model.model_dump_json(), media_type="application/json")


def _serialized(function: Callable[..., BaseModel | Response], *args: Any) -> Response:
    # A representation other than JSON comes back rendered (negotiation.answer).
    result = function(*args)
    return result if isinstance(result, Response) else json_response(result)


class Compute:
    """A route's handle on the process's computation slots (labelled with its template)."""

    def __init__(self, computations: Computations, route: str, receive: Receive) -> None:
        self._computations = computations
        self._route = route
        self._receive = receive

    async def __call__(
        self,
        function: Callable[..., BaseModel | Response],
        *args: Any,
        deadline_seconds: float | None = None,
    ) -> Response:
        """Run one engine call for this route and serialize its result, both in a thread.

        The computation stops if the client disconnects or its deadline passes (the
        computation deadline unless ``deadline_seconds`` is given; ``math.inf``: none); see
        :meth:`Computations.run`.
        """
        return await self._computations.run(
            self._route,
            _serialized,
            function,
            *args,
            receive=self._receive,
            deadline_seconds=deadline_seconds,
        )

    async def acquire(self) -> Callable[[], None]:
        """Hold a slot beyond one call (a stream); see :meth:`Computations.acquire`."""
        return await self._computations.acquire()


def get_compute(request: Request) -> Compute:
    """Return the computation handle of the app serving ``request``."""
    computations: Computations = request.app.state.computations
    return Compute(computations, route_template(request.scope), request.receive)


ComputeDep = Annotated[Compute, Depends(get_compute)]
