"""Pure-ASGI request-body limit that answers with problem+json.

Starlette's own limit answers ``text/plain`` when Content-Length is too large, bypassing the
exception handlers, so the service has its own: a declared length over the limit is refused before
the app runs and without reading the body; a streamed body is counted chunk by chunk and the read
fails with :class:`BodyTooLarge` as soon as it passes the limit.
"""

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .observability import Metrics
from .problems import BodyTooLarge, body_too_large_problem, problem_response


class BodyLimitMiddleware:
    """Refuse request bodies longer than ``max_body_bytes`` with a 413 problem."""

    def __init__(self, app: ASGIApp, max_body_bytes: int, metrics: Metrics) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.metrics = metrics

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

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge(received, limit)
            return message

        await self.app(scope, counting_receive, send)
