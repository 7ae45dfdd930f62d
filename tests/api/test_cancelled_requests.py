"""A request task cancelled from outside keeps its computation slot until its thread has returned.

uvicorn tells the app that a client left through ``receive()``; other servers (Hypercorn), a
timeout middleware, ``asyncio.wait_for`` around the app or a cancelled task group cancel the
request's task instead. A worker thread cannot be stopped from outside: a slot freed the moment
the task is cancelled would let more computations run than there are slots. Each test holds a
computation in its worker thread on an event, cancels the request's task, and checks that the
slot is still held (a second request is refused), that the computation's token was set, and that
everything is freed once the thread has returned, with the cancellation raised to the caller.
The ASGI app is called directly, as a server calls it.
"""

import asyncio
import gc
import json
import logging
import threading
from collections.abc import Callable
from typing import Any

import anyio
import numpy as np
import pytest

from service.api import deps
from service.api.routes import descent, functions, tensors
from service.config import Settings
from service.engine.cancel import CancelToken, checkpoint
from service.engine.errors import Cancelled
from service.main import create_app

pytestmark = pytest.mark.anyio
# Generous: only a broken test or a regression waits this long.
WAIT_SECONDS = 30.0
SMALL_EVALUATE = {"x": {"data": [1.0, 2.0]}, "function": [{"op": "square"}, {"op": "sum"}]}
# Over deps.INLINE_BODY_BYTES: validated in the worker-thread call that computes it, no watcher.
LARGE_VEC = {"x": {"data": np.arange(3000.0).tolist()}, "order": "F"}
ONE_SLOT = Settings(max_concurrent_computations=1, computation_wait_seconds=0)
DESCENT = {"function": [{"op": "square"}, {"op": "sum"}], "x0": {"data": [1.0, 2.0]},
           "learning_rate": 0.1, "max_steps": 1000}  # fmt: skip


def scope(path: str, raw: bytes, accept: str = "application/json") -> dict[str, Any]:
    # ASGI spec 2.4: a streaming response is sent from the request's own task, as a server that
    # cancels that task on disconnect runs it.
    return {
        "type": "http", "asgi": {"version": "3.0", "spec_version": "2.4"}, "http_version": "1.1",
        "method": "POST", "scheme": "http", "path": path, "raw_path": path.encode(),
        "query_string": b"", "root_path": "",
        "headers": [(b"content-type", b"application/json"), (b"accept", accept.encode()),
                    (b"content-length", str(len(raw)).encode())],
        "client": ("127.0.0.1", 1), "server": ("testserver", 80),
    }  # fmt: skip


async def call(app: Any, path: str, body: dict[str, Any], accept: str = "application/json") -> int:
    """Call ``app`` for one request whose client never leaves; return the status it answered."""
    raw = json.dumps(body).encode()
    assert path != "/v1/vec" or len(raw) > deps.INLINE_BODY_BYTES
    messages = [{"type": "http.request", "body": raw, "more_body": False}]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        if messages:
            return messages.pop()
        await asyncio.Event().wait()  # no disconnect message: the task is cancelled instead
        raise AssertionError("unreachable")

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(scope(path, raw, accept), receive, send)
    return int(sent[0]["status"])


class Blocked:
    """Replaces a function run in a worker thread: it waits for :meth:`proceed`, then goes on.

    Once let go it passes a checkpoint (raising :class:`Cancelled` when its token was set), then
    runs the function it replaced.
    """

    def __init__(self, function: Callable[..., Any]) -> None:
        self._function = function
        self._loop = asyncio.get_running_loop()
        self.entered = asyncio.Event()
        self._go = threading.Event()
        self.returned = asyncio.Event()
        self.stopped_by_token = False

    def proceed(self) -> None:
        self._go.set()

    def __call__(self, *args: Any) -> Any:
        try:
            self._loop.call_soon_threadsafe(self.entered.set)
            assert self._go.wait(WAIT_SECONDS), "the test never let the computation go on"
            try:
                checkpoint()
            except Cancelled:
                self.stopped_by_token = True
                raise
            return self._function(*args)
        finally:
            self._loop.call_soon_threadsafe(self.returned.set)


@pytest.fixture
def token_set(monkeypatch: pytest.MonkeyPatch) -> asyncio.Event:
    """An event set when a computation's token is set (by whatever sets it)."""
    event = asyncio.Event()
    cancel = CancelToken.cancel

    def recorded_cancel(token: CancelToken) -> None:
        cancel(token)
        event.set()

    monkeypatch.setattr(CancelToken, "cancel", recorded_cancel)
    return event


@pytest.mark.parametrize(
    ("module", "name", "path", "body", "accept"),
    [
        (functions, "_evaluate", "/v1/evaluate", SMALL_EVALUATE, "application/json"),
        (tensors, "_vec", "/v1/vec", LARGE_VEC, "application/json"),
        (descent, "_start", "/v1/gradient-descent", DESCENT, "application/x-ndjson"),
        (descent, "_pump", "/v1/gradient-descent", DESCENT, "application/x-ndjson"),
    ],
    ids=["computation watched for disconnects", "deferred body, no watcher",
         "stream start", "stream slice"],
)  # fmt: skip
async def test_a_cancelled_request_holds_its_slot_until_its_thread_returns(
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    collector_off: None,
    token_set: asyncio.Event,
    module: Any,
    name: str,
    path: str,
    body: dict[str, Any],
    accept: str,
) -> None:
    app = create_app(ONE_SLOT)
    computations = app.state.computations
    # The first requests build lasting caches: whatever they leave for the collector goes first.
    assert await call(app, path, body, accept) == 200
    assert await call(app, "/v1/evaluate", SMALL_EVALUATE) == 200
    gc.collect()
    blocked = Blocked(getattr(module, name))
    monkeypatch.setattr(module, name, blocked)

    def in_flight() -> float | None:
        return app.state.metrics.registry.get_sample_value("computations_in_flight")

    caplog.set_level(logging.WARNING)
    tasks_before = asyncio.all_tasks()
    request = asyncio.create_task(call(app, path, body, accept))
    try:
        await asyncio.wait_for(blocked.entered.wait(), WAIT_SECONDS)
        assert computations.busy == 1
        request.cancel()
        # What the request does first with its cancellation: set the token, or end at once.
        noticed = asyncio.ensure_future(token_set.wait())
        await asyncio.wait((request, noticed), timeout=WAIT_SECONDS, return_when="FIRST_COMPLETED")
        noticed.cancel()
        assert not request.done(), f"ended with its thread running, {computations.busy} slots held"
        assert token_set.is_set() and not blocked.returned.is_set()
        # (a) The slot is still held: a second request is refused, not run beside the first.
        assert computations.busy == 1 and in_flight() == 1
        assert await call(app, "/v1/evaluate", SMALL_EVALUATE) == 503
        # (b) Once let go, the computation stops at its next checkpoint: its token is set.
        blocked.proceed()
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(request, WAIT_SECONDS)
        assert blocked.returned.is_set() and blocked.stopped_by_token
    finally:
        blocked.proceed()  # a failed check must not leave the thread waiting
    # (c) Everything is freed, nothing is left running or logged, and the slot serves again.
    assert computations.busy == 0 and in_flight() == 0
    assert asyncio.all_tasks() == tasks_before
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []
    # Nor kept for the collector: the computation's Cancelled, in a reference cycle through
    # anyio's frames, kept the request's parsed body and arrays alive until the next collection.
    del request
    await asyncio.sleep(0.05)  # the worker thread and the event loop drop their last references
    assert gc.collect() == 0
    monkeypatch.undo()
    assert await call(app, "/v1/evaluate", SMALL_EVALUATE) == 200


async def test_a_cancelled_scope_sets_the_token_and_waits_for_the_thread(
    monkeypatch: pytest.MonkeyPatch, token_set: asyncio.Event
) -> None:
    # anyio's own cancellation (a cancelled task group or timeout around the app) was already
    # held off until the thread returned, but the computation then ran on to its end.
    app = create_app(ONE_SLOT)
    blocked = Blocked(functions._evaluate)
    monkeypatch.setattr(functions, "_evaluate", blocked)
    scope = anyio.CancelScope()

    async def request_in_scope() -> bool:
        with scope:
            await call(app, "/v1/evaluate", SMALL_EVALUATE)
        return scope.cancelled_caught

    request = asyncio.create_task(request_in_scope())
    try:
        await asyncio.wait_for(blocked.entered.wait(), WAIT_SECONDS)
        scope.cancel()
        await asyncio.wait_for(token_set.wait(), WAIT_SECONDS)
        assert not request.done() and not blocked.returned.is_set()
        assert await call(app, "/v1/evaluate", SMALL_EVALUATE) == 503
        blocked.proceed()
        assert await asyncio.wait_for(request, WAIT_SECONDS)  # the scope caught its cancellation
        assert blocked.stopped_by_token
    finally:
        blocked.proceed()
    assert app.state.computations.busy == 0
