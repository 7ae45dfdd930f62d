"""Direct dispatch: a fixed path's route found by one dict lookup, its dependencies by a plan.

FastAPI finds a route by asking each included router in turn (twice per level: once to match,
once to hand over the request), and solves a route's dependencies by a generic walk that builds a
cache key, checks overrides, scopes and generators for every dependency on every request. For a
small request that is about a third of the server's CPU time (``/v1/flat``: routing ≈ 16 %,
dependency solving ≈ 22 % under cProfile). Most routes of this service have a fixed path and
depend only on coroutine functions of the request: the body parser, the content negotiation, the
computation handle. For those routes :class:`DirectRoutes`

* finds the route by ``(method, path)`` in a dict, and sets the scope keys routing sets
  (``route``, ``endpoint``, ``path_params``);
* calls the dependencies in FastAPI's order (depth first, a route's router-level dependencies
  first), each once per request as FastAPI's per-request cache does, then the endpoint;
* sends a returned :class:`~starlette.responses.Response` as it is, and serializes anything else
  with FastAPI's own :func:`fastapi.routing.serialize_response` and the route's response options;
* lets the app's exception handlers answer whatever is raised, as FastAPI's handler wrapper does.

Every other request takes FastAPI's own way: other paths and methods (404, 405, redirects, path
parameters), routes whose dependencies need anything but the request (headers, query, security
scopes, generators, plain functions), and every request while ``app.dependency_overrides`` is
non-empty (the tests' overrides) or FastAPI's telemetry is on. The OpenAPI document is FastAPI's,
from the same routes.
"""

import inspect
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any, cast

from fastapi import FastAPI
from fastapi.datastructures import DefaultPlaceholder
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute, serialize_response
from starlette._exception_handler import wrap_app_handling_exceptions
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

# A plan's value list starts with the request; each step's value is appended after it.
REQUEST = 0


@dataclass(frozen=True)
class _Step:
    """One dependency (or the endpoint) of a plan: its call and where its arguments come from.

    ``arguments`` pairs each keyword with the index of its value in the request's value list
    (:data:`REQUEST` for the request itself).
    """

    call: Callable[..., Awaitable[Any]]
    arguments: tuple[tuple[str, int], ...]


def _flatten(dependant: Dependant, steps: list[_Step], first: dict[Any, int]) -> int:
    """Append the steps that evaluate ``dependant``; return the index of its value.

    FastAPI's order, fixed once here instead of walked on every request: depth first, each
    dependency's own dependencies before it, and a dependency whose call was already evaluated
    for this request reused (FastAPI's per-request cache, ``use_cache``).
    """
    arguments: list[tuple[str, int]] = []
    for sub in dependant.dependencies:
        if sub.use_cache and sub.call in first:
            index = first[sub.call]
        else:
            index = _flatten(sub, steps, first)
            first.setdefault(sub.call, index)
        if sub.name is not None:
            arguments.append((sub.name, index))
    if dependant.request_param_name is not None:
        arguments.append((dependant.request_param_name, REQUEST))
    steps.append(_Step(cast(Callable[..., Awaitable[Any]], dependant.call), tuple(arguments)))
    return len(steps)  # the value list holds the request first


def api_routes(routes: list[Any]) -> Iterator[tuple[str, Any]]:
    """Yield (path, route or FastAPI's effective route of an included router) of API routes."""
    for route in routes:
        if isinstance(route, APIRoute):
            yield route.path_format, route
        elif hasattr(route, "effective_candidates"):
            for candidate in route.effective_candidates():
                if isinstance(getattr(candidate, "original_route", None), APIRoute):
                    yield candidate.path_format, candidate
                else:
                    yield from api_routes([candidate])


def _request_only(dependant: Dependant) -> bool:
    """Whether ``dependant`` and its dependencies are coroutine functions of the request alone."""
    if (
        dependant.path_params
        or dependant.query_params
        or dependant.header_params
        or dependant.cookie_params
        or dependant.body_params
        or dependant.websocket_param_name
        or dependant.http_connection_param_name
        or dependant.response_param_name
        or dependant.background_tasks_param_name
        or dependant.security_scopes_param_name
        or dependant.own_oauth_scopes
        or dependant.concurrency is not None
        or not inspect.iscoroutinefunction(dependant.call)
    ):
        return False
    return all(_request_only(sub) for sub in dependant.dependencies)


class _Plan:
    """How to answer one route: its dependencies' calls, the endpoint, the response options."""

    def __init__(self, route: Any) -> None:
        self.route = route.original_route if hasattr(route, "original_route") else route
        self.endpoint = route.endpoint
        self.steps: list[_Step] = []
        _flatten(route.dependant, self.steps, {})
        self.response_field = route.response_field
        self.status_code = route.status_code
        self.response_class = route.response_class
        self.options = {
            "include": route.response_model_include,
            "exclude": route.response_model_exclude,
            "by_alias": route.response_model_by_alias,
            "exclude_unset": route.response_model_exclude_unset,
            "exclude_defaults": route.response_model_exclude_defaults,
            "exclude_none": route.response_model_exclude_none,
        }

    async def respond(self, request: Request) -> Response:
        """Run the dependencies and the endpoint; return the response to send."""
        values: list[Any] = [request]
        for step in self.steps:
            values.append(await step.call(**{name: values[i] for name, i in step.arguments}))
        result = values[-1]  # the endpoint's, the last step
        if isinstance(result, Response):
            return result
        dump_json = self.response_field is not None and isinstance(
            self.response_class, DefaultPlaceholder
        )
        content = await serialize_response(
            field=self.response_field,
            response_content=result,
            is_coroutine=True,
            dump_json=dump_json,
            **self.options,
        )
        status = {} if self.status_code is None else {"status_code": self.status_code}
        if dump_json:
            return Response(content, media_type="application/json", **status)
        response_class = self.response_class
        if isinstance(response_class, DefaultPlaceholder):
            response_class = response_class.value
        response: Response = response_class(content, **status)
        return response


class DirectRoutes:
    """ASGI: answer the fixed-path routes with request-only dependencies directly.

    Installed as the router's ``middleware_stack`` (inside the exception middleware, so that the
    app's problem handlers apply); anything it does not answer goes to ``app``, FastAPI's router.

    Parameters
    ----------
    app : ASGI app
        FastAPI's router application.
    fastapi_app : FastAPI
        The application, for its ``dependency_overrides`` and routes.
    """

    def __init__(self, app: ASGIApp, fastapi_app: FastAPI) -> None:
        self.app = app
        self.fastapi_app = fastapi_app
        self.plans: dict[tuple[str, str], _Plan] = {}
        for path, route in api_routes(fastapi_app.routes):
            # FastAPI's own body limit (none is set here: BodyLimitMiddleware bounds bodies)
            # wraps the route's handler, which direct dispatch would bypass.
            limited = getattr(route, "max_body_size", None) is not None
            if "{" in path or limited or not _request_only(route.dependant):
                continue
            for method in route.methods or ():
                # The first route of a (method, path) wins, as in FastAPI's matching.
                self.plans.setdefault((method, path), _Plan(route))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Answer a planned route; pass anything else to FastAPI's router."""
        plan = None
        if scope["type"] == "http" and not self.fastapi_app.dependency_overrides:
            plan = self.plans.get((scope["method"], scope["path"]))
        if plan is None or "fastapi.telemetry" in scope or scope.get("root_path"):
            await self.app(scope, receive, send)
            return
        scope.setdefault("router", self.fastapi_app.router)
        scope["route"] = plan.route
        scope["endpoint"] = plan.endpoint
        scope["path_params"] = {}
        request = Request(scope, receive, send)

        async def app(scope: Scope, receive: Receive, send: Send) -> None:
            response = await plan.respond(request)
            await response(scope, receive, send)

        await wrap_app_handling_exceptions(app, request)(scope, receive, send)


def install(app: FastAPI) -> None:
    """Put :class:`DirectRoutes` in front of the app's router (call once its routes are added)."""
    app.router.middleware_stack = DirectRoutes(app.router.middleware_stack, app)


def planned(app: FastAPI) -> list[str]:
    """Return ``"METHOD /path"`` of every route answered directly (for tests and docs)."""
    stack = app.router.middleware_stack
    if not isinstance(stack, DirectRoutes):
        return []
    return sorted(f"{method} {path}" for method, path in stack.plans)
