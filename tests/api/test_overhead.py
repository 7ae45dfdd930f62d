"""Per-request overhead: no thread-pool hops for small work, no overrides, a sampled access log."""

import json
import logging
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from service.api import deps
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


async def test_a_body_over_the_inline_threshold_is_parsed_and_computed_in_the_pool(
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
    assert hops == ["_validate", "_vec"]


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
