"""Direct dispatch answers exactly what FastAPI's own routing and dependency solving answer.

Every request below is sent to two apps built alike: one answers its fixed-path routes directly
(the default), the other has a dependency override, which sends every request FastAPI's own way.
Status, media type, the headers that are not per-request, and the body must be the same.
"""

import json
from typing import Annotated, Any

import fastapi.routing
import httpx
import numpy as np
import pytest
from fastapi import Depends, FastAPI, Request

from service.api.dispatch import DirectRoutes, install, planned
from service.api.routes import tensors
from service.config import Settings
from service.main import create_app
from tests.binary_wire import HEADER, decode, encode

pytestmark = pytest.mark.anyio

FLAT = {"index": [1, 0, 2], "dims": [2, 3, 4]}
X = np.arange(12.0).reshape(3, 4)
BINARY_BODY, BINARY_HEADERS = encode({"x": X, "encoding": "binary"})
# (method, path, JSON body or raw bytes, headers)
REQUESTS: list[tuple[str, str, Any, dict[str, str]]] = [
    ("POST", "/v1/flat", FLAT, {}),
    ("POST", "/v1/flat", {"index": [5, 0, 0], "dims": [2, 3, 4]}, {}),  # 422 from the engine
    ("POST", "/v1/flat", {"index": "x"}, {}),  # 422 from validation
    ("POST", "/v1/flat", FLAT, {"accept": "image/png"}),  # 406
    ("POST", "/v1/flat", b"<a/>", {"content-type": "text/xml"}),  # 415
    ("POST", "/v1/flat", {"index": [[0, 0]] * 9, "dims": [2, 2]}, {}),  # 413 max_index_count
    ("GET", "/v1/flat", None, {}),  # 405 (FastAPI's way: not planned)
    ("POST", "/v1/flat/", FLAT, {}),  # not a planned path
    ("POST", "/v1/vec", {"x": {"data": X.tolist()}, "order": "C"}, {}),
    ("POST", "/v1/vec", BINARY_BODY, BINARY_HEADERS),
    ("POST", "/v1/vec", {"x": {"data": X.tolist()}}, {"accept": "application/x-npy"}),
    ("GET", "/healthz", None, {}),
    ("GET", "/v1/ops", None, {}),
    ("POST", "/v1/jacobian", {"x": {"data": [1.0, 2.0]}, "function": [{"op": "tanh"}]}, {}),
]
# Headers that differ between two answers of the same request.
PER_REQUEST = {"date", "x-request-id"}


def _app(settings: Settings, *, direct: bool) -> FastAPI:
    app = create_app(settings)
    if not direct:
        # Any override sends every request FastAPI's own way (DirectRoutes steps aside).
        app.dependency_overrides[_unused_dependency] = _unused_dependency
    return app


def _unused_dependency() -> None:  # pragma: no cover - never called
    return None


async def _send(app: FastAPI, method: str, path: str, body: Any, headers: dict[str, str]):
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        if body is None:
            return await client.request(method, path, headers=headers)
        if isinstance(body, bytes):
            return await client.request(method, path, content=body, headers=headers)
        return await client.request(method, path, json=body, headers=headers)


def test_fixed_paths_with_request_only_dependencies_are_planned() -> None:
    routes = planned(create_app(Settings()))
    for route in ("POST /v1/flat", "POST /v1/vec", "POST /v1/cross-correlation", "GET /healthz"):
        assert route in routes
    # path parameters take FastAPI's way
    assert not any("{" in route for route in routes)


@pytest.mark.parametrize(("method", "path", "body", "headers"), REQUESTS)
async def test_direct_answers_equal_fastapi_answers(
    method: str, path: str, body: Any, headers: dict[str, str]
) -> None:
    settings = Settings(max_index_count=8)
    headers = {**headers, "x-request-id": "same-id"}
    direct = await _send(_app(settings, direct=True), method, path, body, headers)
    routed = await _send(_app(settings, direct=False), method, path, body, headers)
    assert direct.status_code == routed.status_code
    assert {k: v for k, v in direct.headers.items() if k not in PER_REQUEST} == {
        k: v for k, v in routed.headers.items() if k not in PER_REQUEST
    }
    assert direct.content == routed.content


async def test_a_planned_route_is_answered_without_fastapi_dependency_solving(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def refuse(**kwargs: Any) -> Any:
        raise AssertionError("FastAPI solved the dependencies of a planned route")

    monkeypatch.setattr(fastapi.routing, "solve_dependencies", refuse)
    response = await _send(create_app(Settings()), "POST", "/v1/flat", FLAT, {})
    # F order: 1 + 0 * 2 + 2 * (2 * 3) = 13
    assert response.status_code == 200 and response.json()["flat"] == 13


@pytest.mark.parametrize("direct", [True, False])
async def test_an_unexpected_error_is_the_same_500_problem(
    monkeypatch: pytest.MonkeyPatch, direct: bool
) -> None:
    def broken(*args: Any) -> Any:
        raise RuntimeError("secret detail")

    monkeypatch.setattr(tensors, "_flat", broken)
    response = await _send(_app(Settings(), direct=direct), "POST", "/v1/flat", FLAT, {})
    assert response.status_code == 500
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["type"] == "/problems/internal-error" and "secret" not in json.dumps(problem)


@pytest.mark.parametrize("direct", [True, False])
async def test_api_keys_and_metrics_apply_to_planned_routes(direct: bool) -> None:
    app = _app(Settings(api_keys=["k1"]), direct=direct)
    refused = await _send(app, "POST", "/v1/flat", FLAT, {})
    assert refused.status_code == 401
    assert refused.headers["content-type"] == "application/problem+json"
    answered = await _send(app, "POST", "/v1/flat", FLAT, {"authorization": "Bearer k1"})
    assert answered.status_code == 200
    metrics = await _send(app, "GET", "/metrics", None, {"x-api-key": "k1"})
    text = metrics.text
    assert 'http_requests_total{method="POST",route="/v1/flat",status="200"} 1.0' in text
    # the key is checked before routing; the refusal still counts under the path's route
    assert 'http_requests_total{method="POST",route="/v1/flat",status="401"} 1.0' in text
    assert 'route="unmatched"' not in text


async def test_a_binary_answer_through_the_direct_route_reads_back() -> None:
    response = await _send(create_app(Settings()), "POST", "/v1/vec", BINARY_BODY, BINARY_HEADERS)
    answer = decode(response.content, int(response.headers[HEADER]))
    assert np.array_equal(answer["vector"], X.ravel(order="F"))


def test_routes_with_fastapis_own_body_limit_take_fastapis_way() -> None:
    app = create_app(Settings())

    @app.post("/limited", max_body_size=16)
    async def limited(request: Request) -> dict[str, str]:
        return {"ok": "yes"}

    @app.post("/unlimited")
    async def unlimited(request: Request) -> dict[str, str]:
        return {"ok": "yes"}

    routes = DirectRoutes(app.router, app).plans
    assert ("POST", "/unlimited") in routes and ("POST", "/limited") not in routes


def _order_app() -> tuple[FastAPI, list[str]]:
    """An app whose route records the order of its dependencies' calls (shared and uncached)."""
    calls: list[str] = []

    async def shared(request: Request) -> int:
        calls.append("shared")
        return len(calls)

    async def fresh(request: Request) -> int:
        calls.append("fresh")
        return len(calls)

    async def outer(
        request: Request,
        first: Annotated[int, Depends(shared)],
        again: Annotated[int, Depends(fresh, use_cache=False)],
    ) -> tuple[int, int]:
        calls.append("outer")
        return first, again

    app = FastAPI(dependencies=[Depends(shared)])

    @app.post("/order")
    async def order(
        request: Request,
        pair: Annotated[tuple[int, int], Depends(outer)],
        cached: Annotated[int, Depends(shared)],
        once: Annotated[int, Depends(fresh)],
        twice: Annotated[int, Depends(fresh, use_cache=False)],
    ) -> dict[str, Any]:
        return {"pair": list(pair), "cached": cached, "once": once, "twice": twice}

    return app, calls


@pytest.mark.parametrize("direct", [True, False])
async def test_a_plan_calls_dependencies_in_fastapis_order_and_caches_as_fastapi_does(
    direct: bool,
) -> None:
    app, calls = _order_app()
    if direct:
        install(app)
        assert planned(app) == ["POST /order"]
    else:
        app.dependency_overrides[_unused_dependency] = _unused_dependency
    response = await _send(app, "POST", "/order", None, {})
    # The app-level dependency first; `shared` once for the whole request; `fresh` cached for the
    # uses that allow it (its first value, from inside `outer`), called again for each that do not.
    assert calls == ["shared", "fresh", "outer", "fresh"]
    assert response.json() == {"pair": [1, 2], "cached": 1, "once": 2, "twice": 4}
