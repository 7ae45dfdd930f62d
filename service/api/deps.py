"""Dependencies shared by the routes: settings, the fast JSON body parser, computation slots.

Request bodies are parsed by ``Model.model_validate_json`` on the raw bytes: pydantic-core's JSON
parser is several times faster than FastAPI's ``json.loads`` path (``shared/notes/ecosystem.md``
section 1). A large body is parsed in the thread pool, so a 10^6-element list does not stall the
event loop; a small one is parsed inline (:data:`INLINE_BODY_BYTES`). Because FastAPI then no
longer sees a body parameter, each route's request schema is added to the OpenAPI document
through :func:`body_openapi` and :data:`REQUEST_MODELS`.

Every dependency here is a coroutine function: FastAPI runs a plain ``def`` dependency in the
thread pool, a hop of about 0.1 ms each, for what is an attribute lookup. The settings live on
``app.state`` (put there by ``create_app``), so no ``dependency_overrides`` are needed outside
tests: with any override present FastAPI inspects dependency signatures on every request.
"""

import math
import time
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, TypeVar

import anyio
import numpy as np
from fastapi import Depends, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ValidationError
from starlette.concurrency import run_in_threadpool

from ..codec import DecodeLimits
from ..codec.binary import HEADER_LENGTH, REQUEST_SEGMENTS, BinaryBodyError, read_binary_body
from ..config import Settings
from ..engine.errors import LimitExceeded
from .explain import explain
from .negotiation import body_kind
from .observability import Metrics, route_template
from .problems import Saturated


async def app_settings(request: Request) -> Settings:
    """Return the settings of the app serving ``request`` (``app.state.settings``)."""
    settings: Settings = request.app.state.settings
    return settings


SettingsDep = Annotated[Settings, Depends(app_settings)]
RequestModel = TypeVar("RequestModel", bound=BaseModel)
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


def json_body(model: type[RequestModel]) -> Callable[..., Awaitable[RequestModel]]:
    """Return a dependency that reads the body and validates it as ``model``.

    Validation errors become :class:`RequestValidationError` (422 problem). Limit violations found
    while validating are raised only for an otherwise valid body (413 problem), so an invalid
    request always gets its 422 with every pointer.
    """
    REQUEST_MODELS.append(model)

    async def parse(request: Request) -> RequestModel:
        # the settings straight from app.state: one dependency less to solve per request
        settings: Settings = request.app.state.settings
        kind = body_kind(request)  # 415 before the body is read
        raw = await request.body()
        limits = decode_limits(settings)
        header_length = request.headers.get(HEADER_LENGTH) if kind == "binary" else None
        small = len(raw) <= INLINE_BODY_BYTES
        setattr(request.state, SMALL_BODY, small)
        if small:
            parsed, segments = _validate(model, raw, kind, header_length, limits)
        else:
            parsed, segments = await run_in_threadpool(
                _validate, model, raw, kind, header_length, limits
            )
        # Set in the request's task, so that its later worker-thread calls see the segments.
        REQUEST_SEGMENTS.set(segments)
        return parsed

    parse.__name__ = f"parse_{model.__name__}"
    BODY_PARSERS.add(parse)
    return parse


def _validate(
    model: type[RequestModel],
    raw: bytes,
    kind: str,
    header_length: str | None,
    limits: DecodeLimits,
) -> tuple[RequestModel, list[np.ndarray[Any, Any]] | None]:
    """Validate a JSON or binary body as ``model`` (in the worker thread); return its segments."""
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
    try:
        parsed = model.model_validate_json(document, context=context)
    except ValidationError as error:
        errors = explain([dict(e) for e in error.errors(include_url=False)], model)
        raise RequestValidationError(errors, body=document) from None
    if deferred:
        raise deferred[0]
    return parsed, segments


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


class Computations:
    """Bound the engine computations running at once in this process, and time them.

    CPU-bound work runs in the thread pool; without a bound, a burst of heavy requests would
    queue there unseen and every client would time out. A request waits at most
    ``wait_seconds`` for a slot, then gets a 503 with ``Retry-After``.
    """

    def __init__(self, settings: Settings, metrics: Metrics) -> None:
        self.settings = settings
        self.slots = settings.max_concurrent_computations
        self.wait_seconds = settings.computation_wait_seconds
        self._semaphore = anyio.Semaphore(self.slots)
        self._metrics = metrics

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

    async def run(self, route: str, function: Callable[..., Result], *args: Any) -> Result:
        """Run ``function(*args)`` in the thread pool once a slot is free."""
        release = await self.acquire()
        start = time.perf_counter()
        try:
            return await run_in_threadpool(function, *args)
        finally:
            self._metrics.engine.labels(route).observe(time.perf_counter() - start)
            release()

    async def run_inline(self, route: str, function: Callable[..., Result], *args: Any) -> Result:
        """Run tiny ``function(*args)`` on the event loop once a slot is free, as :meth:`run`.

        The slot keeps the bound exact (a saturated process refuses these too); taking a free
        one does not suspend. Only for work bounded by a small body: it holds the loop.
        """
        release = await self.acquire()
        start = time.perf_counter()
        try:
            return function(*args)
        finally:
            self._metrics.engine.labels(route).observe(time.perf_counter() - start)
            release()


class Compute:
    """A route's handle on the process's computation slots (labelled with its template)."""

    def __init__(self, computations: Computations, request: Request) -> None:
        self._computations = computations
        self._route = route_template(request.scope)
        self._state = request.state

    @property
    def settings(self) -> Settings:
        """The app's settings (as :data:`SettingsDep`, without a dependency to solve)."""
        return self._computations.settings

    async def __call__(self, function: Callable[..., Result], *args: Any) -> Result:
        """Run one engine call for this route; see :meth:`Computations.run`."""
        return await self._computations.run(self._route, function, *args)

    async def light(self, function: Callable[..., Result], *args: Any) -> Result:
        """Run a call whose work is linear in the body: inline if the body was small.

        For the index and reshaping operators (``vec``, ``flat``, ...): a body under
        :data:`INLINE_BODY_BYTES` bounds their work to microseconds, less than the thread-pool
        hop. Anything else goes to :meth:`__call__`.
        """
        if getattr(self._state, SMALL_BODY, False):
            return await self._computations.run_inline(self._route, function, *args)
        return await self(function, *args)

    async def acquire(self) -> Callable[[], None]:
        """Hold a slot beyond one call (a stream); see :meth:`Computations.acquire`."""
        return await self._computations.acquire()


async def get_compute(request: Request) -> Compute:
    """Return the computation handle of the app serving ``request``."""
    computations: Computations = request.app.state.computations
    return Compute(computations, request)


ComputeDep = Annotated[Compute, Depends(get_compute)]
