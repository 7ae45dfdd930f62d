"""Operations: request ids, JSON logs, Prometheus metrics.

Every request gets an id (the client's ``X-Request-ID`` when it is a short token, else a new one).
The id is echoed in the ``X-Request-ID`` response header and in problem bodies, and every log line
written while the request runs carries it. One JSON access-log line per request replaces uvicorn's.
Metrics are kept in a registry owned by the app, so several apps in one process (the tests) do not
collide. With several workers (``SERVICE_WORKERS > 1``) prometheus_client's multiprocess mode
makes every scrape cover all of them (:meth:`Metrics.exposition`).
"""

import itertools
import json
import logging
import os
import re
import time
import uuid
from contextvars import ContextVar
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .dispatch import api_routes

# The environment variable prometheus_client reads (at import) for its multiprocess mode.
MULTIPROCESS_DIR = "PROMETHEUS_MULTIPROC_DIR"

REQUEST_ID_HEADER = "x-request-id"
_CLIENT_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
request_id_var: ContextVar[str | None] = ContextVar("request_id", default=None)
access_logger = logging.getLogger("service.access")
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


class Metrics:
    """The service's Prometheus metrics, in a registry of their own."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "http_requests_total", "HTTP requests by route template, method and status.",
            ["route", "method", "status"], registry=self.registry,
        )  # fmt: skip
        self.latency = Histogram(
            "http_request_duration_seconds", "HTTP request latency by route template.",
            ["route", "method"], buckets=LATENCY_BUCKETS, registry=self.registry,
        )  # fmt: skip
        self.engine = Histogram(
            "engine_seconds", "Time spent in engine computations, by route template.",
            ["route"], buckets=LATENCY_BUCKETS, registry=self.registry,
        )  # fmt: skip
        self.refused = Counter(
            "requests_refused_total", "Requests refused by a limit, by the setting that refused.",
            ["limit"], registry=self.registry,
        )  # fmt: skip
        # With several workers each process writes its own value; "livesum" adds the live ones.
        self.in_flight = Gauge(
            "computations_in_flight", "Engine computations running now.", registry=self.registry,
            multiprocess_mode="livesum",
        )  # fmt: skip
        self.body_bytes = Gauge(
            "request_body_bytes_in_flight",
            "Request body bytes received and held by requests not yet answered.",
            registry=self.registry,
            multiprocess_mode="livesum",
        )

    def exposition(self) -> bytes:
        """Return the text exposition: this process's metrics, or every worker's.

        With ``SERVICE_WORKERS > 1``, ``python -m service`` sets ``PROMETHEUS_MULTIPROC_DIR``
        before the workers start; each then writes its values there, and whichever worker answers
        ``/metrics`` adds them all up (prometheus_client's multiprocess mode).
        """
        if os.environ.get(MULTIPROCESS_DIR):
            registry = CollectorRegistry()
            MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
            return generate_latest(registry)
        return generate_latest(self.registry)


def route_template(scope: Scope) -> str:
    """Return the matched route's path template (bounded label cardinality), or "unmatched".

    A request refused before routing (a missing API key, a ``Content-Length`` over the body
    limit) is counted under the route its path names, so that each route's refusals show in its
    own series; only a path that names no route is "unmatched".
    """
    route = scope.get("route")
    path = getattr(route, "path", None)
    if isinstance(path, str):
        return path
    return _fixed_paths(scope.get("app")).get(scope.get("path", ""), "unmatched")


def _fixed_paths(app: Any) -> dict[str, str]:
    """Return the app's route paths without parameters (a path is its own template), cached."""
    state, routes = getattr(app, "state", None), getattr(app, "routes", None)
    if state is None or routes is None:  # not a Starlette app: nothing to name
        return {}
    paths: dict[str, str] | None = getattr(state, "fixed_route_paths", None)
    if paths is None:
        # Made at the first request refused before routing, when every route has been added.
        paths = {path: path for path, _ in api_routes(routes) if "{" not in path}
        state.fixed_route_paths = paths
    return paths


class RequestContextMiddleware:
    """Assign the request id, time the request, count it, and write the access log line.

    With ``log_every = N`` only one successful (status < 400) request in N writes its line;
    every refused or failed one does. Metrics count every request either way.
    """

    def __init__(self, app: ASGIApp, metrics: Metrics, log_every: int = 1) -> None:
        self.app = app
        self.metrics = metrics
        self.log_every = log_every
        self._unlogged = 0  # successful requests since the last logged one (one loop: no lock)
        # Labelled metric children by (route, method, status): `labels()` takes a lock and
        # validates its arguments on every call. Bounded: route templates times statuses.
        self._labelled: dict[tuple[str, str, int], tuple[Counter, Histogram]] = {}
        # Ids: 16 random hex digits per process, then a 16-digit count (32 in all, as a uuid4's
        # hex). Unique without reading the OS's random source on every request.
        self._id_prefix = uuid.uuid4().hex[:16]
        self._ids = itertools.count()

    def _new_id(self) -> str:
        return f"{self._id_prefix}{next(self._ids):016x}"

    def _children(self, route: str, method: str, status: int) -> tuple[Counter, Histogram]:
        key = (route, method, status)
        children = self._labelled.get(key)
        if children is None:
            children = (
                self.metrics.requests.labels(route, method, str(status)),
                self.metrics.latency.labels(route, method),
            )
            self._labelled[key] = children
        return children

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Run the request with its id bound; record status and latency however it ends."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        offered = (
            dict(scope.get("headers", [])).get(REQUEST_ID_HEADER.encode(), b"").decode("latin-1")
        )
        request_id = offered if _CLIENT_ID.fullmatch(offered) else self._new_id()
        scope.setdefault("state", {})["request_id"] = request_id
        token = request_id_var.set(request_id)
        status = 500  # what the client gets if the app raises before answering
        start = time.perf_counter()

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = list(message.get("headers", []))
                # Problem responses already carry it (a 500 is rendered outside this middleware).
                if all(name.lower() != REQUEST_ID_HEADER.encode() for name, _ in headers):
                    headers.append((REQUEST_ID_HEADER.encode(), request_id.encode()))
                    message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            elapsed = time.perf_counter() - start
            route, method = route_template(scope), scope.get("method", "")
            counter, histogram = self._children(route, method, status)
            counter.inc()
            histogram.observe(elapsed)
            self._unlogged += 1
            if status >= 400 or self._unlogged >= self.log_every:
                self._unlogged = 0
                write_access_line(method, scope.get("path", ""), route, status, elapsed, request_id)
            request_id_var.reset(token)


# Strings written into the access line as they are: a JSON string of these needs no escaping.
_PLAIN = re.compile(r"[A-Za-z0-9/._~:@!$&'()*+,;=%-]*")
_stamps: dict[int, str] = {}


def _stamp(second: int) -> str:
    """Return the log time of ``second`` (local time, whole seconds), rendered once per second."""
    stamp = _stamps.get(second)
    if stamp is None:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(second))
        _stamps.clear()
        _stamps[second] = stamp
    return stamp


def _json_string(text: str) -> str:
    return f'"{text}"' if _PLAIN.fullmatch(text) else json.dumps(text)


# JSON strings of methods and route templates, which come from small sets (bounded anyway).
_written: dict[str, str] = {}


def _known_string(text: str) -> str:
    written = _written.get(text)
    if written is None:
        written = _json_string(text)
        if len(_written) < 1024:
            _written[text] = written
    return written


def _direct_handler() -> logging.StreamHandler | None:  # type: ignore[type-arg]
    """Return the service's handler when an access line would reach it and nothing else.

    That is the configuration :func:`configure_logging` makes; anything else (a host
    application's handlers, pytest's capture, filters, another level) gets a real log record.
    """
    handlers = logging.root.handlers
    if (
        len(handlers) == 1
        and type(handlers[0]) is _JsonHandler
        and not handlers[0].filters
        and handlers[0].level <= logging.INFO
        and not access_logger.handlers
        and not access_logger.filters
        and not logging.root.filters
        and access_logger.propagate
        and access_logger.isEnabledFor(logging.INFO)
    ):
        return handlers[0]
    return None


def write_access_line(
    method: str, path: str, route: str, status: int, elapsed: float, request_id: str
) -> None:
    """Log one request: the line :class:`JsonFormatter` would write for its record.

    On every request the logging module's record, filters and formatter cost more than the rest
    of a small request's bookkeeping; with the service's own logging configuration the line is
    written preformatted, in one call, to the handler's stream. Otherwise (see
    :func:`_direct_handler`) it goes through the logging module as a record with the same fields.
    """
    duration_ms = round(elapsed * 1000, 3)
    handler = _direct_handler()
    if handler is None:
        access_logger.info(
            "request",
            extra={"method": method, "path": path, "route": route, "status": status,
                   "duration_ms": duration_ms},
        )  # fmt: skip
        return
    line = (
        f'{{"time": "{_stamp(int(time.time()))}", "level": "info", "logger": "service.access", '
        f'"message": "request", "request_id": {_json_string(request_id)}, '
        f'"method": {_known_string(method)}, "path": {_json_string(path)}, '
        f'"route": {_known_string(route)}, "status": {status}, "duration_ms": {duration_ms!r}}}\n'
    )
    with handler.lock:  # type: ignore[union-attr]
        handler.stream.write(line)
        handler.stream.flush()


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, request id, extras, traceback."""

    _STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "color_message"}

    def format(self, record: logging.LogRecord) -> str:
        """Render ``record`` as JSON."""
        entry: dict[str, Any] = {
            # whole seconds: rendered once per second, not once per line
            "time": _stamp(int(record.created)),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
            "request_id": request_id_var.get(),
        }
        entry.update({k: v for k, v in vars(record).items() if k not in self._STANDARD})
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


class _JsonHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """The service's own stderr handler, told apart from handlers that others installed."""


def configure_logging(level: str) -> None:
    """Send every logger, uvicorn's included, through one JSON handler on stderr.

    Idempotent: building the app again replaces only the handler installed here, and handlers
    installed by others (a host application, pytest's capture) stay.
    """
    handler = _JsonHandler()
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers = [h for h in root.handlers if not isinstance(h, _JsonHandler)] + [handler]
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error"):
        logging.getLogger(name).handlers = []
        logging.getLogger(name).propagate = True
    # The access middleware logs every request with its id; uvicorn's own line would repeat it.
    logging.getLogger("uvicorn.access").disabled = True
