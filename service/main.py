"""The application factory: settings, routers, problem handlers, body limit, offline docs."""

import copy
import gc
from typing import Any

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from fastapi_offline import FastAPIOffline
from prometheus_client import CONTENT_TYPE_LATEST
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.responses import Response

from . import __version__
from .api.deps import REQUEST_MODELS, Computations
from .api.dispatch import install as install_direct_routes
from .api.middleware import BodyLimitMiddleware
from .api.negotiation import document as document_representations
from .api.observability import Metrics, RequestContextMiddleware, configure_logging
from .api.openapi_document import add_examples, declare_statuses, share_enums
from .api.problems import (
    PROBLEM_TYPES,
    InvalidBody,
    NotAcceptable,
    Problem,
    UnsupportedMediaType,
    handle_exception,
)
from .api.router import ROUTERS
from .api.security import ApiKeyMiddleware, PageContentSecurityPolicy, public_paths
from .blas import check_kernels, check_threads, loaded_kernels
from .codec.errors import CodecError
from .config import Settings, get_settings
from .engine.errors import EngineError

DESCRIPTION = """
Tensor calculus over HTTP, computed in float64 by a vectorized NumPy/SciPy engine.

* **Index order** (`order`): `"F"` (default, the notes' `flat`, first index fastest) or `"C"`.
* **Jacobian layout** (`layout`): `"in_out"` (default, the notes' lmn x pqr matrix whose columns are
  the gradients of the output components) or `"out_in"` (JAX/PyTorch).
* **Tensors**: `{"data": nested lists}` or `{"encoding": "base64", "shape": [...], "data": "..."}`
  (little-endian C-order bytes); responses use the request's `encoding`. Large tensors travel as
  `application/octet-stream` bodies (a JSON header, then raw bytes; `"encoding": "binary"`), and
  Jacobians download as `.npz` (`Accept: application/x-npz`).
* **Errors**: RFC 9457 `application/problem+json`. Problem types: {types}.
* **Pictures**: `Accept: image/png` (or `image/svg+xml`) on `/v1/cross-correlation`, `/v1/jacobian`
  and `/v1/gradient-descent` draws the result (spy plot, heatmaps, descent curves).
* **Playground**: [/playground](/playground) runs cross-correlations, Jacobians and live descent
  in the browser through this API.
"""


TAGS = [
    {"name": "health", "description": "Liveness (`/healthz`) and readiness (`/readyz`) probes."},
    {"name": "operators", "description": "The notes' `vec`, `ten`, `flat` and its inverse, in "
     "index order F or C."},
    {"name": "cross-correlation", "description": "2-D multi-channel cross-correlation (the notes' "
     "worked example) and its Jacobians with respect to the image and the kernel."},
    {"name": "functions", "description": "Functions as lists of registered operations "
     "(`GET /v1/ops`): evaluate, Jacobian (strategies, formats, finite-difference check), JVP, "
     "VJP, and the chain rule on given Jacobians."},
    {"name": "gradient-descent", "description": "The notes' update x - γ ten(∂f/∂x) with momentum, "
     "line search and stopping rules; JSON or a streamed NDJSON trajectory."},
    {"name": "second-order", "description": "Exact Hessian-vector products (forward over reverse) "
     "and Hessians of scalar functions, sparse from their structure or dense."},
    {"name": "minimize", "description": "Minimize a scalar function with gd, adam, lbfgs, "
     "newton-cg or trust-ncg, with stopping rules; JSON or a streamed trajectory."},
    {"name": "operations", "description": "What a request would cost before it is sent "
     "(`POST /v1/estimate`: work, peak memory, response bytes, what `auto` picks, whether it "
     "would be refused) and the limits in force (`GET /v1/metadata`)."},
]  # fmt: skip


def _operation_id(route: APIRoute) -> str:
    # Stable operation ids are the route function names (unique across the app).
    return route.name


def _install_openapi(app: FastAPI) -> None:
    """Add the hand-parsed request bodies and the Problem schema to the generated document."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = FastAPI.openapi(app)
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        models: list[type[BaseModel]] = [*REQUEST_MODELS, Problem]
        for model in models:
            model_schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
            components.update(model_schema.pop("$defs", {}))
            components[model.__name__] = model_schema
        schema["components"]["schemas"] = dict(sorted(components.items()))
        document_representations(schema)
        # The representations' schemas are module-level dicts shared by every app: copy before
        # rewriting enums in place.
        schema = copy.deepcopy(schema)
        share_enums(schema)
        declare_statuses(schema, app)
        add_examples(schema)
        # Keys are optional (SERVICE_API_KEYS); the empty requirement says so to generators.
        schema["components"]["securitySchemes"] = {
            "bearerAuth": {"type": "http", "scheme": "bearer"},
            "apiKeyAuth": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
        }
        schema["security"] = [{}, {"bearerAuth": []}, {"apiKeyAuth": []}]
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the ASGI application.

    Parameters
    ----------
    settings : Settings, optional
        Limits and server options; read from ``SERVICE_*`` environment variables when omitted.
        Tests pass small limits here.

    Returns
    -------
    FastAPI
    """
    settings = settings or get_settings()
    configure_logging(settings.log_level)
    app = FastAPIOffline(
        title="jacobian-service",
        version=__version__,
        description=DESCRIPTION.replace("{types}", ", ".join(f"`{t}`" for t in PROBLEM_TYPES)),
        generate_unique_id_function=_operation_id,
        openapi_tags=TAGS,
        # Relative: Try-it-out and generated clients address the server that serves the document.
        servers=[{"url": "/", "description": "The server that serves this document"}],
    )
    # Routes read these through an async dependency (deps.app_settings): no override, no hop.
    app.state.settings = settings
    loaded_kernels()  # read once here rather than on the event loop by GET /v1/metadata
    for router in ROUTERS:
        app.include_router(router)
    # Starlette sends exceptions whose only handler is Exception's to its outermost layer, which
    # always answers 500 and re-raises; every expected class is therefore registered by name.
    handled = (
        RequestValidationError,
        StarletteHTTPException,
        EngineError,
        CodecError,
        UnsupportedMediaType,
        NotAcceptable,
        InvalidBody,
        ClientDisconnect,
        Exception,
    )
    for exc_class in handled:
        app.add_exception_handler(exc_class, handle_exception)
    metrics = Metrics()
    app.state.metrics = metrics
    app.state.computations = Computations(settings, metrics)

    @app.get("/metrics", include_in_schema=False)
    async def metrics_endpoint() -> Response:
        return Response(metrics.exposition(), media_type=CONTENT_TYPE_LATEST)

    # Starlette runs the last added middleware first: request id and metrics wrap everything,
    # then the key check, then the body limit.
    app.add_middleware(
        BodyLimitMiddleware,
        max_body_bytes=settings.max_body_bytes,
        max_inflight_body_bytes=settings.max_inflight_body_bytes,
        read_timeout_seconds=settings.body_read_timeout_seconds,
        metrics=metrics,
        min_rate=settings.min_body_rate_bytes_per_second,
        rate_window=settings.body_rate_window_seconds,
    )
    if settings.api_keys:
        keys = [key.get_secret_value().encode() for key in settings.api_keys]
        app.add_middleware(ApiKeyMiddleware, keys=keys, public=public_paths(settings))
    app.add_middleware(PageContentSecurityPolicy)
    app.add_middleware(
        RequestContextMiddleware, metrics=metrics, log_every=settings.access_log_every
    )
    _install_openapi(app)
    install_direct_routes(app)
    return app


def serve_app() -> FastAPI:
    """Build the application as a server process runs it (``python -m service``).

    :func:`create_app`, then every object alive at that point (modules, the app, its schemas:
    about 150,000) is moved out of the garbage collector's sight (``gc.freeze``): a full
    collection scanned them all, about 100 ms holding the GIL, once soon after each worker
    started, and no request, ``/healthz`` included, was answered meanwhile. They live as long as
    the process. Not done by :func:`create_app`, which tests call many times in one process.
    """
    app = create_app()
    check_kernels()  # a warning in the log if NumPy's BLAS runs other kernels than asked for
    check_threads()  # or more threads
    gc.collect()  # what is garbage already is freed, not kept for good
    gc.freeze()
    return app
