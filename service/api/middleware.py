"""Pure-ASGI guard on request bodies: size, total memory in flight, and read pauses.

Starlette's own limit answers ``text/plain`` when Content-Length is too large, bypassing the
exception handlers, so the service has its own. Per request, a declared length over the limit is
refused before the app runs and without reading the body, and a streamed body is counted chunk by
chunk and fails with :class:`BodyTooLarge` as soon as it passes the limit. Per process, the bytes
held by all bodies being received are bounded (:class:`Saturated`, 503): without that, many
concurrent uploads each under the limit would still take memory without bound. A client that
stops sending for longer than the read timeout gets a 408 instead of holding its connection open,
and so does one whose body arrives, after a grace window, at less than the minimum average rate
(a byte every 29 s never trips a 30 s pause timeout).
"""

import time

import anyio
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .observability import Metrics
from .problems import (
    BodyTooLarge,
    BodyTooSlow,
    RequestTimeout,
    Saturated,
    body_too_large_problem,
    problem_response,
)


class BodyLimitMiddleware:
    """Bound each request body, the bodies in flight together, and pauses while reading.

    Parameters
    ----------
    app : ASGI app
    max_body_bytes : int
        Largest body of one request (413).
    max_inflight_body_bytes : int
        Largest total of body bytes held by the requests of this process (503).
    read_timeout_seconds : float
        Longest wait for the next part of a body (408).
    metrics : Metrics
    min_rate : float
        Slowest average body rate in bytes per second once ``rate_window`` has passed (408);
        0 turns the check off.
    rate_window : float
        Seconds from the first read before the rate applies.
    """

    def __init__(
        self,
        app: ASGIApp,
        max_body_bytes: int,
        max_inflight_body_bytes: int,
        read_timeout_seconds: float,
        metrics: Metrics,
        min_rate: float = 0.0,
        rate_window: float = 10.0,
    ) -> None:
        self.app = app
        self.min_rate = min_rate
        self.rate_window = rate_window
        self.max_body_bytes = max_body_bytes
        self.max_inflight_body_bytes = max_inflight_body_bytes
        self.read_timeout_seconds = read_timeout_seconds
        self.metrics = metrics
        self.inflight = 0  # one event loop per process: no lock needed between awaits

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Check the declared length, then count the streamed bytes."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.max_body_bytes
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = 0
                if declared > limit:
                    self.metrics.refused.labels("max_body_bytes").inc()
                    problem = body_too_large_problem(declared, limit, scope.get("path"))
                    request_id = scope.get("state", {}).get("request_id")
                    problem = problem.model_copy(update={"request_id": request_id})
                    await problem_response(problem)(scope, receive, send)
                    return
        received = 0
        body_complete = False
        started: float | None = None

        async def guarded_receive() -> Message:
            nonlocal received, body_complete, started
            if body_complete:
                # After the body, receive() only waits for a disconnect (a streaming response
                # listens for one): no timeout applies there.
                return await receive()
            now = time.monotonic()
            started = now if started is None else started
            wait = self.read_timeout_seconds
            if self.min_rate > 0:
                # The next bytes are due when the average rate would drop below the minimum.
                due = started + max(self.rate_window, (received + 1) / self.min_rate)
                wait = min(wait, max(0.0, due - now))
            with anyio.move_on_after(wait) as waiting:
                message = await receive()
            if waiting.cancelled_caught:
                if wait < self.read_timeout_seconds:
                    raise BodyTooSlow(received, time.monotonic() - started, self.min_rate)
                raise RequestTimeout(self.read_timeout_seconds)
            if message["type"] == "http.request":
                body_complete = not message.get("more_body", False)
                size = len(message.get("body", b""))
                if received + size > limit:
                    raise BodyTooLarge(received + size, limit)
                if self.inflight + size > self.max_inflight_body_bytes:
                    raise Saturated(
                        "max_inflight_body_bytes",
                        f"request bodies in flight would exceed "
                        f"{self.max_inflight_body_bytes} bytes",
                        retry_after=1,
                    )
                received += size
                self.inflight += size
                self.metrics.body_bytes.set(self.inflight)
            return message

        try:
            await self.app(scope, guarded_receive, send)
        finally:
            # The body is held until its request is answered; then its bytes are free again.
            self.inflight -= received
            self.metrics.body_bytes.set(self.inflight)
