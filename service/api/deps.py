"""Dependencies shared by the routes: settings, the fast JSON body parser, computation slots.

Request bodies are parsed by ``Model.model_validate_json`` on the raw bytes: pydantic-core's JSON
parser is several times faster than FastAPI's ``json.loads`` path (``shared/notes/ecosystem.md``
section 1). A large body is parsed in the thread pool, so a 10^6-element list does not stall the
event loop; a small one is parsed inline (:data:`INLINE_BODY_BYTES`). Before parsing, the raw
bytes are counted (:mod:`.budget`) so that a body whose objects would not fit is refused without
building them; validation errors are rendered in a worker thread, never on the loop. Because
FastAPI then no longer sees a body parameter, each route's request schema is added to the OpenAPI
document through :func:`body_openapi` and :data:`REQUEST_MODELS`.

Computations run in the thread pool under a :class:`~service.engine.cancel.CancelToken` with the
computation deadline; a task watches for the client's disconnect and sets the token, so the
engine stops at its next checkpoint and the slot is free again. A request whose task is cancelled
sets the token too, and frees its slot only once the thread has returned (:func:`run_to_end`).

Every dependency here is a coroutine function: FastAPI runs a plain ``def`` dependency in the
thread pool, a hop of about 0.1 ms each, for what is an attribute lookup. The settings live on
``app.state`` (put there by ``create_app``), so no ``dependency_overrides`` are needed outside
tests: with any override present FastAPI inspects dependency signatures on every request.
"""

import asyncio
import contextlib
import functools
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated, Any, TypeVar

import anyio
import numpy as np
from fastapi import Depends, Request
from fastapi.exceptions import RequestValidationError
from prometheus_client import Histogram
from pydantic import BaseModel, ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.types import Receive

from ..codec import DecodeLimits
from ..codec.binary import HEADER_LENGTH, REQUEST_SEGMENTS, BinaryBodyError, read_binary_body
from ..config import Settings
from ..engine.cancel import CancelToken
from ..engine.errors import LimitExceeded
from .budget import BodyCounts, check_body, count_separators
from .encoding import content_coding, gunzip
from .explain import explain
from .memory import RELEASE_AFTER_BYTES, release_memory
from .negotiation import DeferredBody, body_kind
from .observability import Metrics, route_template
from .problems import MAX_MAPPED_ERRORS, RenderedValidationError, Saturated, validation_errors


async def app_settings(request: Request) -> Settings:
    """Return the settings of the app serving ``request`` (``app.state.settings``)."""
    settings: Settings = request.app.state.settings
    return settings


SettingsDep = Annotated[Settings, Depends(app_settings)]
RequestModel = TypeVar("RequestModel", bound=BaseModel)
Result = TypeVar("Result")
# Every model parsed by json_body; main.py puts their schemas into components.schemas.
REQUEST_MODELS: list[type[BaseModel]] = []
# Every dependency made by json_body (the OpenAPI document declares the statuses they answer).
BODY_PARSERS: set[Callable[..., Any]] = set()
# Bodies up to this size are parsed on the event loop. Measured (model_validate_json of a vec
# request, list data, loaded 2-core machine): 2.6 kB in 15 us, 21 kB in 75 us, 83 kB in 320 us,
# about 3.6 ns per byte; one thread-pool hop costs about 95 us. Below 16 KiB the inline parse
# is cheaper than the hop it saves and holds the loop for less than one hop would.
INLINE_BODY_BYTES = 16 * 1024
# request.state key: the body was small enough to be parsed inline (see Compute.light).
SMALL_BODY = "small_body"


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


class InvalidDocument(Exception):
    """A body that failed validation, its errors not yet rendered (see :meth:`render`).

    Rendering maps every error to a JSON pointer, which can take milliseconds per hundred errors:
    a body parsed on the event loop has its errors rendered in a worker thread.
    """

    def __init__(self, model: type[BaseModel], error: ValidationError, document: bytes) -> None:
        # Not str(error): it quotes every input, a 500,000-entry list too (90 ms holding the GIL).
        super().__init__(f"{error.error_count()} validation errors in a {model.__name__} body")
        self.model = model
        self.error = error
        self.document = document

    def render(self) -> RenderedValidationError:
        """Return the 422 exception, with at most ``MAX_MAPPED_ERRORS`` errors mapped."""
        found = self.error.errors(include_url=False)
        explained = explain([dict(e) for e in found[:MAX_MAPPED_ERRORS]], self.model)
        rendered = validation_errors(explained, self.document)
        count = len(rendered) if len(found) <= MAX_MAPPED_ERRORS else len(found)
        return RenderedValidationError(rendered, count)


def validate_body(
    model: type[RequestModel],
    raw: bytes,
    settings: Settings,
    items: BodyItems | None = None,
    kind: str = "json",
    header_length: str | None = None,
    coding: str = "identity",
) -> tuple[RequestModel, list[np.ndarray[Any, Any]] | None]:
    """Count, parse and validate a JSON or binary body as ``model``.

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
    InvalidDocument
        If validation failed (:meth:`InvalidDocument.render` makes the 422).
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
            raise LimitExceeded(items.quantity, items.count(counts), limit, setting=items.setting)
    try:
        parsed = model.model_validate_json(document, context=context)
    except ValidationError as error:
        raise InvalidDocument(model, error, document) from None
    if deferred:
        raise deferred[0]
    return parsed, segments


def _validate(
    model: type[RequestModel], *args: Any
) -> tuple[RequestModel, list[np.ndarray[Any, Any]] | None]:
    # In a worker thread: the errors are rendered right here.
    try:
        return validate_body(model, *args)
    except InvalidDocument as invalid:
        raise invalid.render() from None


def _must_trim(raw: bytes, coding: str) -> bool:
    # Parsing a large body builds and frees many objects, and a compressed one was decompressed
    # (up to the body limit): the heap is trimmed once it is done.
    return len(raw) >= RELEASE_AFTER_BYTES or coding != "identity"


def _validate_deferred(
    model: type[RequestModel],
    raw: bytes,
    settings: Settings,
    items: BodyItems | None,
    kind: str,
    header_length: str | None,
    coding: str,
) -> RequestModel:
    """Validate a deferred body in the worker thread that then computes with it."""
    try:
        parsed, segments = _validate(model, raw, settings, items, kind, header_length, coding)
    finally:
        if _must_trim(raw, coding):
            release_memory()
    # The segments are seen by the rest of this worker-thread call, which is all a route with a
    # deferred body runs.
    REQUEST_SEGMENTS.set(segments)
    return parsed


async def read_body(request: Request) -> bytes:
    """Return the request's whole body; one that arrived in a single part is not copied.

    Starlette's ``Request.body()`` always joins the parts it read (the body and an empty end
    marker at least): a copy of every body, 0.6 ms for 8 MB. A binary body's segments become
    views of the bytes returned here.
    """
    parts = [part async for part in request.stream() if part]
    return parts[0] if len(parts) == 1 else b"".join(parts)


def _body_parser(
    model: type[RequestModel], items: BodyItems | None, deferred: bool
) -> Callable[..., Awaitable[Any]]:
    REQUEST_MODELS.append(model)

    async def parse(request: Request) -> RequestModel | DeferredBody[RequestModel]:
        # the settings straight from app.state: one dependency less to solve per request
        settings: Settings = request.app.state.settings
        kind = body_kind(request)  # 415 before the body is read
        coding = content_coding(request)
        raw = await read_body(request)
        header_length = request.headers.get(HEADER_LENGTH) if kind == "binary" else None
        # A gzip body may expand to anything: it is never decompressed on the loop.
        small = len(raw) <= INLINE_BODY_BYTES and coding == "identity"
        setattr(request.state, SMALL_BODY, small)
        args = (raw, settings, items, kind, header_length, coding)
        if small:
            try:
                parsed, segments = validate_body(model, *args)
            except InvalidDocument as invalid:
                raise await run_in_threadpool(invalid.render) from None
        elif deferred:
            return DeferredBody(functools.partial(_validate_deferred, model, *args))
        else:
            try:
                parsed, segments = await run_in_threadpool(
                    _validate, model, raw, settings, items, kind, header_length, coding
                )
            finally:
                if _must_trim(raw, coding):
                    await run_in_threadpool(release_memory)
        # Set in the request's task, so that its later worker-thread calls see the segments.
        REQUEST_SEGMENTS.set(segments)
        return parsed

    parse.__name__ = f"parse_{model.__name__}"
    BODY_PARSERS.add(parse)
    return parse


def json_body(
    model: type[RequestModel], items: BodyItems | None = None
) -> Callable[..., Awaitable[RequestModel]]:
    """Return a dependency that reads the body and validates it as ``model``.

    Validation errors become :class:`RenderedValidationError` (422 problem), rendered in a worker
    thread. Limit violations found while validating are raised only for an otherwise valid body
    (413 problem), so an invalid request always gets its 422 with every pointer.
    """
    return _body_parser(model, items, deferred=False)


def deferred_body(
    model: type[RequestModel], items: BodyItems | None = None
) -> Callable[..., Awaitable[RequestModel | DeferredBody[RequestModel]]]:
    """Return a dependency like :func:`json_body` that leaves a large body to :func:`answer`.

    A body small enough to parse on the loop is validated at once; a larger one comes back as a
    :class:`~service.api.negotiation.DeferredBody`, validated in the worker-thread call that
    computes and renders its answer (:func:`~service.api.negotiation.answer`): one hop to the
    thread pool instead of two. For routes that pass the body to ``answer`` and do nothing else
    with it; validation then runs inside the computation slot.
    """
    return _body_parser(model, items, deferred=True)


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


# Turns a computation's result into the response, in the worker thread (negotiation.answer).
Render = Callable[[Any], Any]
# A computation that ran this long trims the heap after it (cheaper to test than its memory).
RELEASE_AFTER_SECONDS = 0.05


class Computations:
    """Bound the engine computations running at once in this process, and time them.

    CPU-bound work runs in the thread pool; without a bound, a burst of heavy requests would
    queue there unseen and every client would time out. A request waits at most
    ``wait_seconds`` for a slot, then gets a 503 with ``Retry-After``. Every computation runs
    under a token with ``SERVICE_COMPUTATION_DEADLINE_SECONDS``.
    """

    def __init__(self, settings: Settings, metrics: Metrics) -> None:
        self.settings = settings
        self.slots = settings.max_concurrent_computations
        self.wait_seconds = settings.computation_wait_seconds
        self.deadline_seconds = settings.computation_deadline_seconds
        self._semaphore = anyio.Semaphore(self.slots)
        self._metrics = metrics
        # engine_seconds children by route template: `labels()` takes a lock and validates its
        # arguments on every call. Bounded by the route templates.
        self._engine_seconds: dict[str, Histogram] = {}

    def _observe(self, route: str, seconds: float) -> None:
        """Add one computation's time to the route's ``engine_seconds``."""
        child = self._engine_seconds.get(route)
        if child is None:
            child = self._engine_seconds[route] = self._metrics.engine.labels(route)
        child.observe(seconds)

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
        function: Callable[..., Any],
        *args: Any,
        receive: Receive | None = None,
        deadline_seconds: float | None = None,
        render: Render | None = None,
    ) -> Any:
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
        render : callable, optional
            Turns the result into the response, in the same worker-thread call.

        Raises
        ------
        asyncio.CancelledError
            If the request's task is cancelled: the token is set, and the slot is freed once the
            worker thread has returned (:func:`run_to_end`).
        """
        release = await self.acquire()
        deadline = self.deadline_seconds if deadline_seconds is None else deadline_seconds
        token = CancelToken(deadline)
        start = time.perf_counter()
        work = _worker(function, token, render)
        try:
            if receive is None:
                # Nothing to watch: no watcher task, whose set-up and end are not free.
                return await run_to_end(token, work, *args)
            # A plain asyncio task, not an anyio task group: the group's task-done callback keeps
            # the watcher's CancelledError in a local of a frame that the error's traceback
            # holds, a reference cycle (about 50 objects per computation, the frames of the
            # server's receive among them) that only a collection frees.
            watcher = asyncio.ensure_future(_cancel_on_disconnect(receive, token))
            try:
                return await run_to_end(token, work, *args)
            finally:
                watcher.cancel()
                # Ended before this request goes on, as a task group's end waits for its tasks:
                # nothing else may be reading receive() then.
                await _ended(watcher)
        finally:
            self._observe(route, time.perf_counter() - start)
            release()

    async def run_inline(
        self, route: str, function: Callable[..., Any], *args: Any, render: Render | None = None
    ) -> Any:
        """Run tiny ``function(*args)`` on the event loop once a slot is free, as :meth:`run`.

        The slot keeps the bound exact (a saturated process refuses these too); taking a free
        one does not suspend. Only for work bounded by a small body: it holds the loop, so it
        runs without a token (it has no time to be cancelled).
        """
        release = await self.acquire()
        start = time.perf_counter()
        try:
            result = function(*args)
            return result if render is None else render(result)
        finally:
            self._observe(route, time.perf_counter() - start)
            release()


async def run_to_end(token: CancelToken, function: Callable[..., Result], *args: Any) -> Result:
    """Run ``function(*args)`` in the thread pool; if cancelled, wait for it to return first.

    For a call made while a computation slot is held. A thread cannot be stopped from outside,
    and a server that cancels the request's task (Hypercorn when the client leaves, a timeout
    around the app, a cancelled task group) ends ``run_in_threadpool``'s wait at once while the
    thread runs on: the slot freed next would let more computations run than there are slots.
    Here the cancellation sets ``token`` instead, so the computation stops at its next
    checkpoint, and is raised again once the thread has returned.

    Raises
    ------
    asyncio.CancelledError
        If the caller was cancelled, once the thread has returned (never swallowed).
    """
    thread = asyncio.ensure_future(run_in_threadpool(function, *args))
    try:
        return await asyncio.shield(thread)
    except asyncio.CancelledError:
        token.cancel()
        # anyio's shield stops a cancelled scope from cancelling the wait again at every turn of
        # the loop; a native cancellation cannot be shielded, so a second one is absorbed here
        # (the first is raised).
        with anyio.CancelScope(shield=True):
            while not thread.done():
                with contextlib.suppress(asyncio.CancelledError):
                    await asyncio.wait((thread,))
        error = None if thread.cancelled() else thread.exception()
        # What it ended with gives way to the cancellation: marked as seen above, or asyncio would
        # log it as never retrieved. Its traceback holds the frame of anyio's wait, which holds
        # the future that holds the error: a cycle that kept the request's body and arrays
        # alive until the next collection.
        if error is not None:
            error.__traceback__ = None
        raise
    finally:
        # The task holds the worker's exception, whose traceback holds this frame: a reference
        # cycle that only a collection would free.
        del thread


def _worker(function: Callable[..., Any], token: CancelToken, render: Render | None) -> Any:
    """Return what one worker-thread call runs: ``function`` under ``token``, then ``render``.

    It keeps ``function``'s name (metrics and tests see which computation a hop ran). A call
    that ran long usually held much memory: the heap is trimmed before the thread returns
    (:mod:`.memory`), in the same hop; not after a cancelled one, whose slot is freed first
    (``malloc_trim`` took up to 70 ms there; the next long computation trims).
    """

    @functools.wraps(function)
    def work(*args: Any) -> Any:
        start = time.perf_counter()
        try:
            result = token.run(function, *args)
            return result if render is None else render(result)
        finally:
            if time.perf_counter() - start > RELEASE_AFTER_SECONDS and not token.cancelled:
                release_memory()

    return work


async def _ended(task: asyncio.Task[Any]) -> None:
    """Wait until ``task`` is done, as ``asyncio.wait((task,))`` does, with one callback.

    ``asyncio.wait`` makes sets, a counter and a callback per task and returns the sets: about
    7 us per computation more, for one task whose result is not wanted.
    """
    if task.done():
        return
    finished = asyncio.get_running_loop().create_future()

    def wake(_: asyncio.Task[Any]) -> None:
        if not finished.done():  # this request's task may have been cancelled meanwhile
            finished.set_result(None)

    task.add_done_callback(wake)
    try:
        await finished
    finally:
        task.remove_done_callback(wake)


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


class Compute:
    """A route's handle on the process's computation slots (labelled with its template)."""

    def __init__(self, computations: Computations, request: Request) -> None:
        self._computations = computations
        self._route = route_template(request.scope)
        self._state = request.state
        self._receive = request.receive

    @property
    def settings(self) -> Settings:
        """The app's settings (as :data:`SettingsDep`, without a dependency to solve)."""
        return self._computations.settings

    async def __call__(
        self,
        function: Callable[..., Any],
        *args: Any,
        deadline_seconds: float | None = None,
        render: Render | None = None,
    ) -> Any:
        """Run one engine call for this route, then ``render``; see :meth:`Computations.run`.

        The computation stops if the client disconnects or its deadline passes (the
        computation deadline unless ``deadline_seconds`` is given; ``math.inf``: none).
        """
        return await self._computations.run(
            self._route, function, *args, receive=self._receive,
            deadline_seconds=deadline_seconds, render=render,
        )  # fmt: skip

    async def light(
        self,
        function: Callable[..., Any],
        *args: Any,
        deadline_seconds: float | None = None,
        render: Render | None = None,
    ) -> Any:
        """Run a call whose work is linear in the body: inline if the body was small.

        For the index and reshaping operators (``vec``, ``flat``, ...): a body under
        :data:`INLINE_BODY_BYTES` bounds their work to microseconds, less than the thread-pool
        hop. Anything else runs as :meth:`__call__` runs it, but without watching for the
        client's disconnect: these operators have no checkpoint where a token could stop them,
        and their work is bounded by a body the client has already sent (about 2 ms per 8 MB),
        so the watcher task would only cost its set-up and exit (0.2-0.3 ms of a 10^6-element
        ``vec`` on a loaded machine).
        """
        if getattr(self._state, SMALL_BODY, False):
            return await self._computations.run_inline(self._route, function, *args, render=render)
        return await self._computations.run(
            self._route, function, *args, deadline_seconds=deadline_seconds, render=render
        )

    async def acquire(self) -> Callable[[], None]:
        """Hold a slot beyond one call (a stream); see :meth:`Computations.acquire`."""
        return await self._computations.acquire()


async def get_compute(request: Request) -> Compute:
    """Return the computation handle of the app serving ``request``."""
    computations: Computations = request.app.state.computations
    return Compute(computations, request)


ComputeDep = Annotated[Compute, Depends(get_compute)]
