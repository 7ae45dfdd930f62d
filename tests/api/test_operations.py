"""Operations: request ids, JSON logs, metrics, API keys, the computation bound, deadlines."""

import json
import logging
import re
from collections.abc import AsyncIterator
from typing import Any

import anyio
import httpx
import pytest
from fastapi import FastAPI

from service.api.observability import JsonFormatter, request_id_var
from service.config import Settings
from service.main import create_app

pytestmark = pytest.mark.anyio
PROBLEM_JSON = "application/problem+json"
FLAT = {"index": [1, 0, 2], "dims": [2, 3, 4]}


def client_for(app: FastAPI, **headers: str) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    return httpx.AsyncClient(transport=transport, base_url="http://testserver", headers=headers)


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with client_for(create_app(Settings(max_tensor_elements=100))) as c:
        yield c


# -- request ids and logs ------------------------------------------------------------------------


async def test_a_client_request_id_is_echoed(client: httpx.AsyncClient) -> None:
    response = await client.post("/v1/flat", json=FLAT, headers={"X-Request-ID": "abc-123"})
    assert response.headers["x-request-id"] == "abc-123"


async def test_an_unusable_request_id_is_replaced(client: httpx.AsyncClient) -> None:
    response = await client.post("/v1/flat", json=FLAT, headers={"X-Request-ID": "bad id\t!"})
    assigned = response.headers["x-request-id"]
    assert assigned != "bad id\t!" and len(assigned) == 32
    problem = await client.post("/v1/flat", json={"index": [9, 9, 9], "dims": [2, 3, 4]})
    assert problem.json()["request_id"] == problem.headers["x-request-id"]
    assert problem.headers["x-request-id"] != assigned


async def test_access_log_is_json_with_the_request_id(
    client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="service.access")
    await client.post("/v1/flat", json=FLAT, headers={"X-Request-ID": "log-me"})
    records = [r for r in caplog.records if r.name == "service.access"]
    assert len(records) == 1
    token = request_id_var.set("log-me")  # the formatter reads the id of the running request
    try:
        line = json.loads(JsonFormatter().format(records[0]))
    finally:
        request_id_var.reset(token)
    assert line["request_id"] == "log-me" and line["logger"] == "service.access"
    assert (line["method"], line["route"], line["status"]) == ("POST", "/v1/flat", 200)
    assert line["duration_ms"] >= 0


def test_json_formatter_keeps_tracebacks() -> None:
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        record = logging.makeLogRecord(
            {"name": "x", "levelno": 40, "levelname": "ERROR", "msg": "failed", "exc_info": True}
        )
        import sys

        record.exc_info = sys.exc_info()
    line = json.loads(JsonFormatter().format(record))
    assert line["message"] == "failed" and "RuntimeError: boom" in line["exception"]


# -- metrics -------------------------------------------------------------------------------------


SAMPLE = re.compile(r"^(?P<name>[a-z_]+)(?:\{(?P<labels>[^}]*)\})? (?P<value>\S+)$")


def sample(text: str, name: str, **labels: str) -> float:
    """The value of one sample in Prometheus text format (0 when it is absent)."""
    for line in text.splitlines():
        match = SAMPLE.match(line)
        if not match or match["name"] != name:
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', match["labels"] or ""))
        if found == labels:
            return float(match["value"])
    return 0.0


async def test_metrics_count_requests_latency_engine_time_and_refusals(
    client: httpx.AsyncClient,
) -> None:
    await client.post("/v1/flat", json=FLAT)
    await client.post("/v1/flat", json=FLAT)
    await client.post("/v1/vec", json={"x": {"data": [[1.0] * 20] * 20}})  # 400 > 100 elements
    await client.post("/v1/vec", content=b"{}", headers={"content-length": str(10**9)})
    text = (await client.get("/metrics")).text
    assert sample(text, "http_requests_total", route="/v1/flat", method="POST", status="200") == 2
    assert sample(text, "http_request_duration_seconds_count", route="/v1/flat",
                  method="POST") == 2  # fmt: skip
    assert sample(text, "engine_seconds_count", route="/v1/flat") == 2
    assert sample(text, "requests_refused_total", limit="max_tensor_elements") == 1
    assert sample(text, "requests_refused_total", limit="max_body_bytes") == 1
    assert sample(text, "computations_in_flight") == 0


async def test_each_app_times_its_own_computations_by_route() -> None:
    # The engine-time children are kept per app: two apps in one process never share a count.
    first, second = create_app(Settings()), create_app(Settings())
    evaluate = {"x": {"data": [1.0, 2.0]}, "function": [{"op": "square"}, {"op": "sum"}]}
    async with client_for(first) as one, client_for(second) as two:
        await one.post("/v1/flat", json=FLAT)  # a small body: computed inline
        await one.post("/v1/flat", json=FLAT)
        await one.post("/v1/evaluate", json=evaluate)  # computed in the thread pool
        await two.post("/v1/flat", json=FLAT)
        counts = [
            [
                sample(text, "engine_seconds_count", route=route)
                for route in ("/v1/flat", "/v1/evaluate")
            ]
            for text in [(await one.get("/metrics")).text, (await two.get("/metrics")).text]
        ]
    assert counts == [[2, 1], [1, 0]]


# -- API keys ------------------------------------------------------------------------------------


@pytest.fixture
async def locked() -> AsyncIterator[FastAPI]:
    yield create_app(Settings(api_keys="k1,second-key", public_metrics=False))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer wrong"},
        {"X-API-Key": "k1x"},
        {"Authorization": "Basic k1"},
        # prefixes of real keys, and empty keys, must not pass
        {"X-API-Key": "k"},
        {"Authorization": "Bearer second"},
        {"Authorization": "Bearer "},
        {"X-API-Key": ""},
    ],
)
async def test_requests_without_a_valid_key_get_401(locked: FastAPI, headers: dict) -> None:
    async with client_for(locked, **headers) as c:
        response = await c.post("/v1/flat", json=FLAT)
    assert response.status_code == 401
    assert response.headers["content-type"] == PROBLEM_JSON
    assert response.headers["www-authenticate"].startswith("Bearer")
    body = response.json()
    assert (body["type"], body["status"], body["instance"]) == ("/problems/unauthorized", 401,
                                                                "/v1/flat")  # fmt: skip
    assert body["request_id"] == response.headers["x-request-id"]


@pytest.mark.parametrize(
    "headers",
    [
        {"Authorization": "Bearer k1"},
        {"X-API-Key": "second-key"},
        # the auth scheme is case-insensitive (RFC 9110 section 11.1)
        {"Authorization": "bearer k1"},
        {"Authorization": "BEARER second-key"},
    ],
)
async def test_either_header_with_a_valid_key_passes(locked: FastAPI, headers: dict) -> None:
    async with client_for(locked, **headers) as c:
        response = await c.post("/v1/flat", json=FLAT)
    assert response.status_code == 200 and response.json()["flat"] == 13


async def test_requests_refused_before_routing_count_under_their_route() -> None:
    app = create_app(Settings(api_keys="k1", max_body_bytes=1000))  # type: ignore[arg-type]
    async with client_for(app) as c:
        assert (await c.post("/v1/flat", json=FLAT)).status_code == 401
    async with client_for(app, **{"X-API-Key": "k1"}) as c:
        oversized = b" " * 2000  # refused by its Content-Length, before routing
        headers = {"content-type": "application/json"}
        assert (await c.post("/v1/flat", content=oversized, headers=headers)).status_code == 413
        assert (await c.post("/no/such/route", json=FLAT)).status_code == 404
        text = (await c.get("/metrics")).text
    total = "http_requests_total"
    assert sample(text, total, route="/v1/flat", method="POST", status="401") == 1
    assert sample(text, total, route="/v1/flat", method="POST", status="413") == 1
    assert sample(text, total, route="unmatched", method="POST", status="404") == 1
    assert sample(text, total, route="unmatched", method="POST", status="401") == 0


async def test_health_stays_public_and_metrics_follow_the_setting(locked: FastAPI) -> None:
    async with client_for(locked) as c:
        assert (await c.get("/healthz")).status_code == 200
        assert (await c.get("/readyz")).status_code == 200
        assert (await c.get("/metrics")).status_code == 401
    async with client_for(locked, **{"X-API-Key": "k1"}) as c:
        assert (await c.get("/metrics")).status_code == 200


# -- bounded computations ------------------------------------------------------------------------


async def test_a_saturated_service_answers_503_with_retry_after() -> None:
    app = create_app(Settings(max_concurrent_computations=1, computation_wait_seconds=0.05))
    release = await app.state.computations.acquire()  # a long computation holds the only slot
    try:
        async with client_for(app) as c:
            response = await c.post("/v1/flat", json=FLAT)
        assert response.status_code == 503
        assert response.headers["retry-after"] == "1"
        assert response.headers["content-type"] == PROBLEM_JSON
        assert response.json()["type"] == "/problems/saturated"
    finally:
        release()
    async with client_for(app) as c:
        assert (await c.post("/v1/flat", json=FLAT)).status_code == 200
        text = (await c.get("/metrics")).text
    assert sample(text, "requests_refused_total", limit="max_concurrent_computations") == 1


async def test_requests_wait_for_a_slot_within_the_wait_time() -> None:
    app = create_app(Settings(max_concurrent_computations=1, computation_wait_seconds=5))
    release = await app.state.computations.acquire()

    async def finish_soon() -> None:  # the holder finishes while the request waits
        await anyio.sleep(0.2)
        release()

    async with client_for(app) as c, anyio.create_task_group() as tasks:
        tasks.start_soon(finish_soon)
        with anyio.fail_after(5):
            response = await c.post("/v1/flat", json=FLAT)
    assert response.status_code == 200


# -- deadline ------------------------------------------------------------------------------------


async def test_a_descent_over_its_deadline_ends_with_a_clear_status() -> None:
    app = create_app(Settings(descent_deadline_seconds=0.05, max_descent_steps=10**7))
    body: dict[str, Any] = {
        "function": [{"op": "squared_norm"}, {"op": "scale", "factor": 0.5}],
        "x0": {"data": [1.0, 2.0]},
        "learning_rate": 1e-9,
        "max_steps": 10**7,
        "record_every": 10**6,
    }
    async with client_for(app) as c:
        response = await c.post("/v1/gradient-descent", json=body)
    assert response.status_code == 200
    result = response.json()
    assert result["status"] == "deadline"
    assert "wall-clock budget of 0.05 s" in result["reason"]
    assert 0 < result["steps"] < 10**7


@pytest.mark.parametrize("path", ["/healthz", "/readyz"])
async def test_probes_answer_head_without_a_body(client: httpx.AsyncClient, path: str) -> None:
    response = await client.head(path)
    assert response.status_code == 200 and response.content == b""
