"""Limits (CONVENTIONS section 7): 413 problems before the work, and before reading the body.

The body-limit tests drive the ASGI app by hand so they can count how often the app pulls from
``receive``: a declared Content-Length over the limit must be refused without one read, and an
endless stream must be cut off just past the limit.
"""

import json
import math
import time
from collections.abc import AsyncIterator

import anyio
import httpx
import pytest

from service.config import Settings
from service.main import create_app

pytestmark = pytest.mark.anyio

PROBLEM_JSON = "application/problem+json"
REQUEST_ID = "test-limits-1"
LIMIT = 1000
CHUNK = 64


def scope(path: str, headers: list[tuple[bytes, bytes]]) -> dict:
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [
            (b"host", b"testserver"),
            (b"content-type", b"application/json"),
            (b"x-request-id", REQUEST_ID.encode()),
            *headers,
        ],
        "client": ("127.0.0.1", 12345),
        "server": ("testserver", 80),
    }


class Driver:
    """Runs one request through the app and records what it sent and how often it read."""

    def __init__(self, chunks) -> None:
        self.chunks = chunks
        self.reads = 0
        self.sent: list[dict] = []

    async def receive(self) -> dict:
        self.reads += 1
        return next(self.chunks)

    async def send(self, message: dict) -> None:
        self.sent.append(message)

    async def run(self, app, path: str, headers: list[tuple[bytes, bytes]]) -> None:
        with anyio.fail_after(10):
            await app(scope(path, headers), self.receive, self.send)

    @property
    def status(self) -> int:
        return self.sent[0]["status"]

    @property
    def headers(self) -> dict[str, str]:
        return {k.decode().lower(): v.decode() for k, v in self.sent[0]["headers"]}

    def json(self) -> dict:
        body = b"".join(m.get("body", b"") for m in self.sent if m["type"] == "http.response.body")
        return json.loads(body)


def endless_chunks():
    while True:
        yield {"type": "http.request", "body": b" " * CHUNK, "more_body": True}


def body_problem(received: int, path: str = "/v1/vec") -> dict:
    return {
        "type": "/problems/limit-exceeded",
        "title": "Limit exceeded",
        "status": 413,
        "detail": f"request body of at least {received} bytes exceeds the limit of {LIMIT} bytes",
        "instance": path,
        "quantity": "request body bytes",
        "estimate": received,
        "limit": LIMIT,
        "setting": "max_body_bytes",
        "request_id": REQUEST_ID,
    }


@pytest.fixture
def app():
    return create_app(Settings(max_body_bytes=LIMIT, max_tensor_elements=50, max_index_count=4))


async def test_declared_length_one_byte_over_the_limit_is_refused_without_reading(app) -> None:
    driver = Driver(endless_chunks())
    await driver.run(app, "/v1/vec", [(b"content-length", str(LIMIT + 1).encode())])
    assert driver.reads == 0 and driver.status == 413
    assert driver.json() == body_problem(LIMIT + 1)


async def test_declared_length_over_the_limit_is_refused_without_reading(app) -> None:
    driver = Driver(endless_chunks())
    await driver.run(app, "/v1/vec", [(b"content-length", b"1000000000")])
    assert driver.reads == 0
    assert driver.status == 413
    assert driver.headers["content-type"] == PROBLEM_JSON
    assert driver.json() == body_problem(1_000_000_000)


async def test_streamed_body_over_the_limit_is_cut_off_just_past_it(app) -> None:
    driver = Driver(endless_chunks())
    await driver.run(app, "/v1/vec", [(b"transfer-encoding", b"chunked")])
    # The first chunk that takes the total over LIMIT is the last one read.
    expected_reads = math.ceil((LIMIT + 1) / CHUNK)
    assert driver.reads == expected_reads
    assert driver.status == 413
    assert driver.headers["content-type"] == PROBLEM_JSON
    assert driver.json() == body_problem(expected_reads * CHUNK)


async def test_body_longer_than_its_declared_length_is_cut_off(app) -> None:
    driver = Driver(endless_chunks())
    await driver.run(app, "/v1/flat", [(b"content-length", b"10")])
    assert driver.reads == math.ceil((LIMIT + 1) / CHUNK)
    assert driver.status == 413
    assert driver.json() == body_problem(driver.reads * CHUNK, "/v1/flat")


async def test_body_of_exactly_the_limit_is_accepted(app) -> None:
    payload = b'{"x": {"data": [1, 2]}}'
    payload += b" " * (LIMIT - len(payload))  # trailing JSON whitespace
    assert len(payload) == LIMIT
    pieces = [payload[i : i + CHUNK] for i in range(0, LIMIT, CHUNK)]
    messages = iter(
        [
            {"type": "http.request", "body": p, "more_body": i < len(pieces) - 1}
            for i, p in enumerate(pieces)
        ]
    )
    driver = Driver(messages)
    await driver.run(app, "/v1/vec", [(b"content-length", str(LIMIT).encode())])
    assert driver.status == 200
    assert driver.json()["vector"]["data"] == [1.0, 2.0]


# -- work limits through the routes --------------------------------------------------------------


@pytest.fixture
async def client(app) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(
        transport=transport, base_url="http://testserver", headers={"X-Request-ID": REQUEST_ID}
    ) as c:
        yield c


def tensor_problem(path: str, estimate: int) -> dict:
    return {
        "type": "/problems/limit-exceeded",
        "title": "Limit exceeded",
        "status": 413,
        "detail": f"elements of one tensor: estimated {estimate} exceeds the limit 50",
        "instance": path,
        "quantity": "elements of one tensor",
        "estimate": estimate,
        "limit": 50,
        "setting": "max_tensor_elements",
    }


def assert_problem(response: httpx.Response, expected: dict) -> None:
    assert response.status_code == expected["status"]
    assert response.headers["content-type"] == PROBLEM_JSON
    assert response.headers["x-request-id"] == REQUEST_ID
    assert response.json() == expected | {"request_id": REQUEST_ID}


async def test_tensor_over_max_elements_is_413(client) -> None:
    response = await client.post("/v1/vec", json={"x": {"data": [[1.0] * 17] * 3}})
    assert_problem(response, tensor_problem("/v1/vec", 51))


async def test_base64_tensor_over_max_elements_is_413_before_decoding(client) -> None:
    # The declared shape alone is over the limit; the (tiny) data is never decoded.
    body = {"x": {"encoding": "base64", "shape": [1000, 1000], "data": "AAAAAAAA8D8="}}
    response = await client.post("/v1/vec", json=body)
    assert_problem(response, tensor_problem("/v1/vec", 1_000_000))


async def test_ten_vector_over_max_elements_is_413(client) -> None:
    response = await client.post("/v1/ten", json={"vector": {"data": [0.0] * 60}, "shape": [60]})
    assert_problem(response, tensor_problem("/v1/ten", 60))


async def test_tensor_at_max_elements_is_accepted(client) -> None:
    response = await client.post("/v1/vec", json={"x": {"data": [[1.0] * 10] * 5}})
    assert response.status_code == 200


def index_problem(path: str, estimate: int) -> dict:
    return {
        "type": "/problems/limit-exceeded",
        "title": "Limit exceeded",
        "status": 413,
        "detail": f"indices in one request: estimated {estimate} exceeds the limit 4",
        "instance": path,
        "quantity": "indices in one request",
        "estimate": estimate,
        "limit": 4,
        "setting": "max_index_count",
    }


async def test_flat_index_count_over_the_limit_is_413(client) -> None:
    response = await client.post("/v1/flat", json={"index": [[0, 0]] * 5, "dims": [2, 3]})
    assert_problem(response, index_problem("/v1/flat", 5))


async def test_unflat_index_count_over_the_limit_is_413(client) -> None:
    response = await client.post("/v1/unflat", json={"flat": [0, 1, 2, 3, 4, 5], "dims": [2, 3]})
    assert_problem(response, index_problem("/v1/unflat", 6))


async def test_index_count_at_the_limit_is_accepted(client) -> None:
    response = await client.post("/v1/flat", json={"index": [[0, 0]] * 4, "dims": [2, 3]})
    assert response.status_code == 200
    assert response.json()["flat"] == [0, 0, 0, 0]


async def test_invalid_request_over_a_limit_gets_its_422_not_413(client) -> None:
    # Over the element limit AND carrying a schema error elsewhere: the client learns what is
    # wrong with the request first; the limit applies to requests that are otherwise valid.
    response = await client.post("/v1/vec", json={"x": {"data": [[1.0] * 17] * 3}, "order": "Z"})
    assert_problem(
        response,
        {
            "type": "/problems/request-validation",
            "title": "Request validation failed",
            "status": 422,
            "detail": "1 validation error in the request",
            "instance": "/v1/vec",
            "errors": [{"detail": "Input should be 'F' or 'C' (got \"Z\")", "pointer": "/order"}],
        },
    )


# -- bodies in flight and stalled uploads --------------------------------------------------------


class Stalling(Driver):
    """Sends one chunk, then never another (a client that stopped mid-upload)."""

    async def receive(self) -> dict:
        self.reads += 1
        if self.reads == 1:
            return {"type": "http.request", "body": b"{", "more_body": True}
        await anyio.sleep(3600)
        raise AssertionError("the guard should have stopped waiting")


async def test_a_stalled_upload_gets_408_after_the_read_timeout() -> None:
    app = create_app(Settings(body_read_timeout_seconds=0.05))
    driver = Stalling(iter(()))
    await driver.run(app, "/v1/vec", [])
    assert driver.status == 408 and driver.headers["content-type"] == PROBLEM_JSON
    problem = driver.json()
    assert (problem["type"], problem["title"], problem["status"]) == (
        "/problems/body-stalled",
        "Request Timeout",
        408,
    )
    assert "0.05 s" in problem["detail"]


async def test_bodies_in_flight_share_one_budget() -> None:
    # Two uploads of 600 bytes each are under the per-request limit (1000) but not under the
    # shared budget of 1000: the second is refused with 503 while the first is still held.
    app = create_app(Settings(max_body_bytes=LIMIT, max_inflight_body_bytes=1000))
    first_started = anyio.Event()
    release_first = anyio.Event()

    class Holding(Driver):
        async def receive(self) -> dict:
            self.reads += 1
            if self.reads == 1:
                return {"type": "http.request", "body": b" " * 600, "more_body": True}
            first_started.set()
            await release_first.wait()
            return {"type": "http.request", "body": b"", "more_body": False}

    first = Holding(iter(()))
    second = Driver(iter([{"type": "http.request", "body": b" " * 600, "more_body": False}]))
    async with anyio.create_task_group() as tasks:
        tasks.start_soon(first.run, app, "/v1/vec", [])
        await first_started.wait()
        await second.run(app, "/v1/vec", [])
        release_first.set()
    assert second.status == 503 and second.headers["retry-after"] == "1"
    assert second.json()["type"] == "/problems/saturated"
    assert first.status == 422  # its 600 spaces are not JSON: it was read, then validated
    # Once both are answered the budget is whole again: a 600-byte body goes through.
    third = Driver(iter([{"type": "http.request", "body": b" " * 600, "more_body": False}]))
    await third.run(app, "/v1/vec", [])
    assert third.status == 422


async def test_a_body_slower_than_the_minimum_rate_is_cut_off_with_408() -> None:
    # One byte per pause, each pause well inside the read timeout: only the rate catches it.
    slow_app = create_app(
        Settings(body_read_timeout_seconds=5.0, min_body_rate_bytes_per_second=100.0,
                 body_rate_window_seconds=0.2)
    )  # fmt: skip

    class Trickle(Driver):
        async def receive(self) -> dict:
            self.reads += 1
            await anyio.sleep(0.05)  # the client's pace: 20 bytes/s
            return {"type": "http.request", "body": b" ", "more_body": True}

    driver = Trickle(iter(()))
    start = time.perf_counter()
    await driver.run(slow_app, "/v1/vec", [(b"content-length", b"1000")])
    elapsed = time.perf_counter() - start
    assert driver.status == 408
    problem = driver.json()
    assert problem["type"] == "/problems/body-stalled"
    assert "below the minimum of 100 bytes/s" in problem["detail"]
    assert elapsed < 2.0  # 0.2 s window, then a few bytes' allowance; never the 5 s pause
