"""Per-request overhead: no thread-pool hops for small work, no overrides, a sampled access log."""

import io
import json
import logging
import re
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from service.api import deps, observability
from service.config import Settings
from service.main import create_app

pytestmark = pytest.mark.anyio
FLAT = {"index": [1, 0, 2], "dims": [2, 3, 4]}


def client_for(app: FastAPI) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t")


@pytest.fixture
def hops(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Record the name of every function that deps sends to the thread pool."""
    calls: list[str] = []
    original = deps.run_in_threadpool

    async def counting(function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        calls.append(getattr(function, "__name__", repr(function)))
        return await original(function, *args, **kwargs)

    monkeypatch.setattr(deps, "run_in_threadpool", counting)
    return calls


def test_the_app_needs_no_dependency_overrides() -> None:
    app = create_app(Settings(max_index_count=7))
    assert app.dependency_overrides == {}
    assert app.state.settings.max_index_count == 7


async def test_a_small_flat_request_makes_no_thread_pool_hop(hops: list[str]) -> None:
    async with client_for(create_app(Settings())) as client:
        response = await client.post("/v1/flat", json=FLAT)
    # F order: 1 + 0 * 2 + 2 * (2 * 3) = 13
    assert response.status_code == 200 and response.json()["flat"] == 13
    assert hops == []


async def test_the_settings_of_the_app_apply_without_overrides(hops: list[str]) -> None:
    async with client_for(create_app(Settings(max_index_count=2))) as client:
        response = await client.post("/v1/flat", json={"index": [[0, 0], [1, 1], [0, 1]],
                                                       "dims": [2, 2]})  # fmt: skip
    assert response.status_code == 413
    assert "indices in one request" in response.json()["detail"]


async def test_a_body_over_the_inline_threshold_is_parsed_and_computed_in_one_pool_call(
    hops: list[str],
) -> None:
    n = deps.INLINE_BODY_BYTES // 4  # each element is at least "0.0," long
    body = json.dumps({"x": {"data": [0.5] * n}}).encode()
    assert len(body) > deps.INLINE_BODY_BYTES
    async with client_for(create_app(Settings())) as client:
        response = await client.post(
            "/v1/vec", content=body, headers={"content-type": "application/json"}
        )
    assert response.status_code == 200 and response.json()["vector"]["data"] == [0.5] * n
    # The operators defer validation into the computation's worker-thread call (one hop).
    assert hops == ["_vec"]


async def test_one_successful_request_in_n_is_logged_and_every_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="service.access")
    async with client_for(create_app(Settings(access_log_every=3))) as client:
        for _ in range(7):
            assert (await client.post("/v1/flat", json=FLAT)).status_code == 200
        bad = await client.post("/v1/flat", json={"index": [5, 0, 0], "dims": [2, 3, 4]})
        assert bad.status_code == 422
    lines = [r for r in caplog.records if r.name == "service.access"]
    # requests 3 and 6 of the seven successes, and the refused one
    assert [getattr(r, "status", None) for r in lines] == [200, 200, 422]


# -- the access line written without the logging module ------------------------------------------


@pytest.fixture
def service_handler(monkeypatch: pytest.MonkeyPatch) -> Iterator[io.StringIO]:
    """Let the root logger keep only a service JSON handler writing to a buffer (call phase).

    pytest adds its capture handlers to the root logger around each test phase, so the handlers
    are replaced when the test body first logs: :func:`only_service_handler` does it.
    """
    buffer = io.StringIO()
    level = logging.root.level
    logging.root.setLevel(logging.INFO)
    yield buffer
    logging.root.setLevel(level)


def only_service_handler(monkeypatch: pytest.MonkeyPatch, buffer: io.StringIO) -> None:
    handler = observability._JsonHandler(buffer)
    handler.setFormatter(observability.JsonFormatter())
    monkeypatch.setattr(logging.root, "handlers", [handler])


ODD_PATH = '/v1/"odd" path\\é\n'


def test_the_direct_access_line_is_the_line_the_formatter_writes(
    service_handler: io.StringIO, monkeypatch: pytest.MonkeyPatch
) -> None:
    only_service_handler(monkeypatch, service_handler)
    assert observability._direct_handler() is logging.root.handlers[0]
    observability.write_access_line("POST", ODD_PATH, "/v1/flat", 200, 0.0123456, "id-1")
    direct = service_handler.getvalue()
    assert direct.count("\n") == 1
    # Another handler present: the same fields go through the logging module and its formatter.
    monkeypatch.setattr(logging.root, "handlers", [*logging.root.handlers, logging.NullHandler()])
    assert observability._direct_handler() is None
    service_handler.seek(0)
    service_handler.truncate()
    token = observability.request_id_var.set("id-1")  # the formatter reads the running request's
    try:
        observability.write_access_line("POST", ODD_PATH, "/v1/flat", 200, 0.0123456, "id-1")
    finally:
        observability.request_id_var.reset(token)
    formatted = json.loads(service_handler.getvalue())
    line = json.loads(direct)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d{4}", line.pop("time"))
    formatted.pop("time")
    assert line == formatted
    assert line["path"] == ODD_PATH and line["duration_ms"] == 12.346


async def test_requests_write_one_direct_line_each(
    service_handler: io.StringIO, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = create_app(Settings())
    only_service_handler(monkeypatch, service_handler)
    async with client_for(app) as client:
        for request_id in ("first", "second"):
            response = await client.post(
                "/v1/flat", json=FLAT, headers={"X-Request-ID": request_id}
            )
            assert response.status_code == 200
    lines = [json.loads(text) for text in service_handler.getvalue().splitlines()]
    access = [line for line in lines if line["logger"] == "service.access"]
    assert [(line["request_id"], line["route"], line["status"]) for line in access] == [
        ("first", "/v1/flat", 200),
        ("second", "/v1/flat", 200),
    ]
