"""Regressions for defects found in review: each test reproduces one and pins the right answer.

Every case is a request a user could send: it must get a precise 4xx problem (or the result),
never a 500, and never make the server allocate past the configured limits.
"""

import asyncio
import base64
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import numpy as np
import pytest

from service.config import Settings
from service.engine.chain import Chain
from service.engine.descent import DescentLimits, DescentParams, collect, descend
from service.engine.op import get_op
from service.main import create_app

pytestmark = pytest.mark.anyio
PROBLEM_JSON = "application/problem+json"
SMALL = Settings(max_tensor_elements=1000, max_coo_nnz=1000, max_dense_jacobian_elements=1000)


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=create_app(SMALL), raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
        yield c


def problem(response: httpx.Response, status: int, kind: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM_JSON
    body: dict[str, Any] = response.json()
    assert body["type"] == kind
    return body


async def test_chain_rule_coo_shape_is_bounded_before_allocation(client) -> None:
    # shape [2**62, 1] with no entries used to allocate a row-pointer array of 2**62 + 1 (500).
    for rows in (200_000_000, 2**62):
        response = await client.post(
            "/v1/chain-rule",
            json={
                "jacobians": [
                    {"format": "coo", "shape": [rows, 1], "row": [], "col": [], "data": []},
                    {"format": "coo", "shape": [1, 1], "row": [0], "col": [0], "data": [1.0]},
                ]
            },
        )
        body = problem(response, 413, "/problems/limit-exceeded")
        assert (body["estimate"], body["limit"]) == (rows, 1000)


@pytest.mark.parametrize(
    ("field", "text"),
    [("row", "!!!!!!!!!!!!"), ("row", "AAAAAAAAAAAA"), ("data", "AAAAAAAAAAA=\n")],
)
async def test_bad_base64_in_a_coo_jacobian_is_a_422_at_its_field(client, field, text) -> None:
    good = base64.b64encode(np.array([0], dtype="<i8").tobytes()).decode()
    value = base64.b64encode(np.array([1.0], dtype="<f8").tobytes()).decode()
    coo = {"format": "coo", "shape": [1, 1], "row": good, "col": good, "data": value}
    coo[field] = text
    response = await client.post("/v1/chain-rule", json={"jacobians": [coo]})
    body = problem(response, 422, "/problems/request-validation")
    assert [error["pointer"] for error in body["errors"]] == [f"/jacobians/0/{field}"]


async def test_huge_padding_is_refused_before_the_padded_image_exists(client) -> None:
    # 1x1 image, 2x2 kernel, "full" padding with dilation = stride = 1e6: a 2x2 output, but a
    # padded image of (1 + 2e6)^2 elements (29 TiB) used to be allocated first (500).
    body = {
        "x": {"data": [[[1.0]]]},
        "kernel": {"data": [[[1.0, 2.0], [3.0, 4.0]]]},
        "padding": "full",
        "dilation": [10**6, 10**6],
        "stride": [10**6, 10**6],
    }
    got = problem(
        await client.post("/v1/cross-correlation", json=body), 413, "/problems/limit-exceeded"
    )
    assert got["estimate"] == (1 + 2 * 10**6) ** 2 and got["quantity"] == (
        "elements of the padded image"
    )
    function = [
        {
            "op": "xcorr2d",
            "kernel": body["kernel"],
            "padding": "full",
            "dilation": [10**6, 10**6],
            "stride": [10**6, 10**6],
        }
    ]
    got = problem(
        await client.post("/v1/evaluate", json={"x": body["x"], "function": function}),
        413,
        "/problems/limit-exceeded",
    )
    assert "operation 0 (xcorr2d)" in got["quantity"]


async def test_the_finite_difference_check_stays_within_the_tensor_limit(client) -> None:
    # 600 elements: 32 directions would hold 19,200 > 1000; the check uses 1 direction instead.
    x = {"data": np.linspace(0.1, 1.0, 600).tolist()}
    body = await client.post(
        "/v1/jvp", json={"x": x, "function": [{"op": "tanh"}], "tangent": x, "check": True}
    )
    assert body.status_code == 200, body.text
    check = body.json()["check"]
    assert check["passed"] is True and check["directions"] == 1


async def test_deep_nesting_is_a_422_not_a_500(client) -> None:
    raw = '{"x": {"data": ' + "[" * 1000 + "1" + "]" * 1000 + "}}"
    response = await client.post(
        "/v1/vec", content=raw, headers={"content-type": "application/json"}
    )
    problem(response, 422, "/problems/request-validation")


async def test_zero_wait_takes_a_free_slot() -> None:
    app = create_app(Settings(computation_wait_seconds=0, max_concurrent_computations=1))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
        response = await c.post("/v1/flat", json={"index": [1, 0, 2], "dims": [2, 3, 4]})
        assert response.json()["flat"] == 13
        release = await app.state.computations.acquire()
        try:
            busy = await c.post(
                "/v1/flat",
                json={"index": [1, 0, 2], "dims": [2, 3, 4]},
                headers={"X-Request-ID": "z"},
            )
        finally:
            release()
    problem(busy, 503, "/problems/saturated")


async def test_a_long_stream_is_not_cut_by_the_body_read_timeout() -> None:
    # The read timeout used to apply to the disconnect listener too, ending streams after it.
    # The client here holds the stream open past the timeout by not taking the first line until
    # three timeouts have passed (back-pressure), so the run outlasts the timeout on any machine.
    timeout = 0.1
    app = create_app(Settings(body_read_timeout_seconds=timeout))
    payload = json.dumps(
        {
            "function": [{"op": "squared_norm"}],
            "x0": {"data": [1.0, 2.0]},
            "learning_rate": 1e-3,
            "max_steps": 30,
            "record_every": 10,
        }
    ).encode()
    sent, messages = False, []
    loop = asyncio.get_running_loop()
    past_the_timeout = asyncio.Event()

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": payload, "more_body": False}
        await asyncio.Event().wait()  # a client that stays connected and sends nothing more
        raise AssertionError("unreachable")

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.body" and not past_the_timeout.is_set():
            loop.call_later(3 * timeout, past_the_timeout.set)
            await asyncio.wait_for(past_the_timeout.wait(), timeout=10)
        messages.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/v1/gradient-descent",
        "raw_path": b"/v1/gradient-descent",
        "root_path": "",
        "query_string": b"",
        "server": ("t", 80),
        "client": ("c", 1),
        "headers": [(b"content-type", b"application/json"), (b"accept", b"application/x-ndjson")],
    }
    start = time.perf_counter()
    await asyncio.wait_for(app(scope, receive, send), timeout=60)
    assert time.perf_counter() - start > 3 * timeout  # held open past the timeout, by design
    lines = b"".join(m.get("body", b"") for m in messages if m["type"] == "http.response.body")
    parsed = [json.loads(line) for line in lines.splitlines()]
    assert messages[0]["status"] == 200
    assert [line["step"] for line in parsed[:-1]] == [0, 10, 20, 30]
    assert parsed[-1]["status"] == "max_steps"


def test_a_huge_but_finite_gradient_has_a_finite_norm() -> None:
    # f(x) = sum(1e160 x): the gradient 1e160 squared overflows; its norm is exactly 1e160.
    chain = Chain([get_op("scale")(factor=1e160), get_op("sum")()], (1,))
    limits = DescentLimits(
        max_steps=10, max_trajectory_elements=100, max_tensor_elements=100, max_nnz=100
    )
    result = collect(
        descend(chain, np.array([1.0]), DescentParams(learning_rate=1e-170, max_steps=2), limits)
    )
    assert result.trajectory[0].grad_norm == 1e160
    assert result.summary.status == "max_steps"
