"""Optional API keys (``SERVICE_API_KEYS``): ``Authorization: Bearer <key>`` or ``X-API-Key``.

Keys are compared in constant time (``hmac.compare_digest`` against every configured key, without
stopping at the first match), so the answer time does not reveal how much of a key was right.
Health, metrics and the docs can stay public (settings ``public_health``, ``public_metrics``,
``public_docs``).
"""

import hmac

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..config import Settings
from .problems import Problem, problem_response

HEALTH_PATHS = ("/healthz", "/readyz")
METRICS_PATHS = ("/metrics",)
DOCS_PREFIXES = (
    "/docs",
    "/redoc",
    "/openapi.json",
    "/static-offline-docs",
    "/problems",
    "/playground",
)


def public_paths(settings: Settings) -> tuple[str, ...]:
    """Return the path prefixes that need no key under ``settings``."""
    paths: tuple[str, ...] = ()
    if settings.public_health:
        paths += HEALTH_PATHS
    if settings.public_metrics:
        paths += METRICS_PATHS
    if settings.public_docs:
        paths += DOCS_PREFIXES
    return paths


def presented_key(headers: dict[bytes, bytes]) -> bytes | None:
    """Return the key a request presents, from ``Authorization: Bearer`` or ``X-API-Key``."""
    authorization = headers.get(b"authorization", b"")
    scheme, _, token = authorization.partition(b" ")
    if scheme.lower() == b"bearer" and token.strip():
        return token.strip()
    return headers.get(b"x-api-key") or None


class ApiKeyMiddleware:
    """Answer 401 problem+json unless the request presents one of the configured keys."""

    def __init__(self, app: ASGIApp, keys: list[bytes], public: tuple[str, ...]) -> None:
        self.app = app
        self.keys = keys
        self.public = public

    def _authorized(self, key: bytes | None) -> bool:
        matched = False
        for candidate in self.keys:
            # Every key is compared, whatever matched before: constant time in the key.
            matched |= hmac.compare_digest(key or b"", candidate)
        return matched and key is not None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Pass public paths and authorized requests through; refuse the rest."""
        path = scope.get("path", "")
        if scope["type"] != "http" or path.startswith(self.public):
            await self.app(scope, receive, send)
            return
        if self._authorized(presented_key(dict(scope.get("headers", [])))):
            await self.app(scope, receive, send)
            return
        request_id = scope.get("state", {}).get("request_id")
        problem = Problem(
            type="/problems/unauthorized",
            title="Unauthorized",
            status=401,
            detail="a valid API key is required: send 'Authorization: Bearer <key>' or "
            "'X-API-Key: <key>'",
            instance=path,
            request_id=request_id,
        )
        response = problem_response(problem, headers={"WWW-Authenticate": 'Bearer realm="api"'})
        await response(scope, receive, send)


# The docs pages load only the service's own assets; the bundled ReDoc would otherwise fetch a
# logo from a CDN. Inline scripts/styles are how Swagger UI and ReDoc boot.
DOCS_CSP = (
    "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; "
    "script-src 'self' 'unsafe-inline'; worker-src 'self' blob:; connect-src 'self'"
)
# The playground needs no inline code at all, and talks to this origin only.
PLAYGROUND_CSP = (
    "default-src 'self'; img-src 'self' data: blob:; style-src 'self'; script-src 'self'; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
PAGE_POLICIES = {"/docs": DOCS_CSP, "/redoc": DOCS_CSP, "/playground": PLAYGROUND_CSP}


class PageContentSecurityPolicy:
    """Send each page of :data:`PAGE_POLICIES` with its policy (pure ASGI: streams untouched)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Add the header to the docs pages' responses."""
        policy = PAGE_POLICIES.get(scope.get("path", "")) if scope["type"] == "http" else None
        if policy is None:
            await self.app(scope, receive, send)
            return

        async def send_with_policy(message: Message) -> None:
            if message["type"] == "http.response.start":
                header = (b"content-security-policy", policy.encode())
                message = {**message, "headers": [*message.get("headers", []), header]}
            await send(message)

        await self.app(scope, receive, send_with_policy)
