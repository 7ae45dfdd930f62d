"""Faults and bad input against ONE live uvicorn over real sockets (issue 6, item 6).

One ``python -m service`` (1 worker, ``SERVICE_MAX_BODY_BYTES`` = 2 MiB so that over-limit bodies
are cheap to send; the other settings at their defaults: 4 computation slots, 2 s wait) takes,
in this order: truncated JSON, a body cut short by a disconnecting client, truncated base64, a
declared Content-Length of 1 GiB, a chunked body that never ends, 200 concurrent over-limit
requests, a dense Jacobian of 100 GB, a diverging descent, saturated computation slots and
clients that disconnect mid-stream. Every fault must get its exact status and problem ``type``
(or a clean stop), and ``/healthz`` must answer 200 after each (autouse fixture).

Raw sockets (``socket`` + ``http.client.HTTPResponse`` to parse the answer) do what no HTTP
client does on purpose: stop halfway, lie about the length, stream forever, hang up. Every loop
is bounded in bytes and in time.

The last test runs its own load (three rounds of the memory-heavy faults, so it means the same
when run alone) and compares the server's VmRSS after the warm-up with VmRSS after the rounds
(growth < 50 MB, the third round < 5 MB: memory levels off), printing both with VmHWM. Waits
for the server to hold a partial body, or to have let it go, watch the
``request_body_bytes_in_flight`` gauge instead of sleeping. The 2 MiB limit matters for the
memory bound: a body that streams in is held in memory up to the limit, so at the default
64 MiB one endless body raises VmHWM by about 66 MB, and N of them at once by N x 64 MiB
(measured, reported on issue 6).

The dense refusal's latency (p50 of 10, from the client) is printed, not asserted. Run with
``-s`` to see the numbers.
"""

from __future__ import annotations

import asyncio
import base64
import http.client
import json
import re
import select
import socket
import statistics
import struct
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import numpy as np
import pytest

from .live import LiveServer, serve

pytestmark = pytest.mark.slow

MIB = 1024 * 1024
MAX_BODY = 2 * MIB
SLOTS = 4  # SERVICE_MAX_CONCURRENT_COMPUTATIONS default
WAIT_S = 2.0  # SERVICE_COMPUTATION_WAIT_SECONDS default
SETTINGS = {
    "SERVICE_WORKERS": "1",
    "SERVICE_MAX_BODY_BYTES": str(MAX_BODY),
    "SERVICE_MAX_CONCURRENT_COMPUTATIONS": str(SLOTS),
    "SERVICE_COMPUTATION_WAIT_SECONDS": str(WAIT_S),
    # Bounds a stream the test failed to close.
    "SERVICE_DESCENT_DEADLINE_SECONDS": "30",
}
SOCKET_TIMEOUT_S = 15.0
RSS_GROWTH_LIMIT_BYTES = 50_000_000
PROBLEM = "application/problem+json"


@dataclass
class FaultServer:
    """The live server, its memory after the warm-up, and the faults it has taken."""

    live: LiveServer
    client: httpx.Client
    warm_memory_kib: dict[str, int]
    faults: list[str] = field(default_factory=list)


@pytest.fixture(scope="module")
def server() -> Iterator[FaultServer]:
    with serve(SETTINGS) as live, httpx.Client(base_url=live.base_url, timeout=30.0) as client:
        _warm_up(client)
        yield FaultServer(live, client, live.memory_kib())


@pytest.fixture(autouse=True)
def still_healthy(server: FaultServer, request: pytest.FixtureRequest) -> Iterator[None]:
    """After every fault: the process lives and ``/healthz`` answers 200."""
    yield
    assert server.live.process.poll() is None, server.live.log_tail()
    response = server.client.get("/healthz")
    assert response.status_code == 200, response.text
    assert response.json() == {"status": "ok"}
    server.faults.append(request.node.name)


# --- helpers -------------------------------------------------------------------------------


def b64_tensor(array: np.ndarray[Any, Any]) -> dict[str, Any]:
    data = base64.b64encode(np.ascontiguousarray(array, dtype="<f8").tobytes()).decode()
    return {"encoding": "base64", "shape": list(array.shape), "data": data}


def connect(live: LiveServer) -> socket.socket:
    sock = socket.create_connection((live.host, live.port), timeout=SOCKET_TIMEOUT_S)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def head(path: str, *lines: str) -> bytes:
    """A POST request head with a JSON content type and the given extra header lines."""
    fields = [f"POST {path} HTTP/1.1", "Host: 127.0.0.1", "Content-Type: application/json"]
    return ("\r\n".join([*fields, *lines]) + "\r\n\r\n").encode()


@dataclass
class RawResponse:
    status: int
    headers: dict[str, str]
    body: bytes

    def problem(self) -> dict[str, Any]:
        assert self.headers.get("content-type") == PROBLEM, self.headers
        document: dict[str, Any] = json.loads(self.body)
        assert document["status"] == self.status
        return document


def read_response(sock: socket.socket) -> RawResponse:
    """Parse one HTTP/1.1 response from ``sock`` (bounded by the socket timeout)."""
    response = http.client.HTTPResponse(sock)
    response.begin()
    body = response.read()
    headers = {name.lower(): value for name, value in response.getheaders()}
    return RawResponse(response.status, headers, body)


def metric(client: httpx.Client, name: str, **labels: str) -> float:
    """Sum of the samples of ``name`` whose labels include ``labels`` (0 when there are none)."""
    total = 0.0
    for line in client.get("/metrics").text.splitlines():
        match = re.fullmatch(r"(\w+)(?:\{(.*)\})? (\S+)", line)
        if not match or match[1] != name:
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', match[2] or ""))
        if all(found.get(key) == value for key, value in labels.items()):
            total += float(match[3])
    return total


def assert_problem(response: httpx.Response, status: int, kind: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM
    problem: dict[str, Any] = response.json()
    assert problem["type"] == kind, problem
    assert problem["status"] == status
    assert problem["request_id"] == response.headers["x-request-id"]
    return problem


def _warm_up(client: httpx.Client) -> None:
    """One request of every kind the faults use, so lazy imports and caches are in the baseline."""
    x = np.arange(2 * 6 * 6, dtype=float).reshape(2, 6, 6) / 72
    kernel = np.ones((2, 3, 3)) / 18
    requests: list[tuple[str, dict[str, Any], int]] = [
        ("/v1/vec", {"x": b64_tensor(x), "encoding": "base64"}, 200),
        ("/v1/vec", {"x": {"data": [[1, True]]}}, 422),
        ("/v1/cross-correlation", {"x": b64_tensor(x), "kernel": b64_tensor(kernel),
                                   "jacobian": "coo", "encoding": "base64"}, 200),
        ("/v1/jacobian", {"x": b64_tensor(x), "format": "dense",
                          "function": [{"op": "xcorr2d", "kernel": b64_tensor(kernel)},
                                       {"op": "tanh"}]}, 200),
        ("/v1/gradient-descent", _descent(max_steps=10), 200),
        ("/v1/evaluate", {"x": {"data": [1.0]}, "function": [{"op": "square"}]}, 200),
    ]  # fmt: skip
    for path, body, status in requests:
        response = client.post(path, json=body)
        assert response.status_code == status, (path, response.text)
    with client.stream("POST", "/v1/gradient-descent", json=_descent(max_steps=10),
                       headers={"Accept": "application/x-ndjson"}) as stream:  # fmt: skip
        assert stream.status_code == 200
        assert len(list(stream.iter_lines())) == 12


def _descent(max_steps: int, size: int = 2, learning_rate: float = 0.5) -> dict[str, Any]:
    """½‖x − 1‖² from x0 = 3: a well-behaved run of ``max_steps`` steps, every step recorded."""
    return {
        "function": [
            {"op": "add", "constant": {"data": [-1.0] * size}},
            {"op": "squared_norm"},
            {"op": "scale", "factor": 0.5},
        ],
        "x0": {"data": [3.0] * size},
        "learning_rate": learning_rate,
        "max_steps": max_steps,
        "record_every": 1,
    }


# --- truncated and cut-off bodies ----------------------------------------------------------

VEC_BODY = json.dumps({"x": {"data": [[1.5, 2.5, 3.5], [4.5, 5.5, 6.5]]}}).encode()


@pytest.mark.parametrize("keep", [1, 12, 25, len(VEC_BODY) - 1])
def test_truncated_json_is_a_422_at_the_root(server: FaultServer, keep: int) -> None:
    response = server.client.post(
        "/v1/vec", content=VEC_BODY[:keep], headers={"Content-Type": "application/json"}
    )
    problem = assert_problem(response, 422, "/problems/request-validation")
    assert [error["pointer"] for error in problem["errors"]] == [""]
    assert "Invalid JSON" in problem["errors"][0]["detail"]


@pytest.mark.parametrize("how", ["half-close", "reset"])
def test_body_cut_short_by_a_disconnecting_client_stops_cleanly(
    server: FaultServer, how: str
) -> None:
    """Content-Length promises more than is sent, then the client goes: no answer, no crash."""
    with connect(server.live) as sock:
        sock.sendall(head("/v1/vec", f"Content-Length: {len(VEC_BODY)}") + VEC_BODY[:20])
        _wait_body_bytes(server, 20)  # the server holds them and waits inside request.body()
        if how == "reset":
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        else:
            sock.shutdown(socket.SHUT_WR)
            # Nothing to answer to: the server closes without writing a status line.
            assert sock.recv(65536) == b""


def test_a_client_leaving_during_the_upload_is_not_a_server_error(server: FaultServer) -> None:
    errors_before = metric(server.client, "http_requests_total", status="500")
    log_before = len(server.live.log_path.read_bytes())
    with connect(server.live) as sock:
        sock.sendall(head("/v1/vec", f"Content-Length: {len(VEC_BODY)}") + VEC_BODY[:20])
        _wait_body_bytes(server, 20)
        sock.shutdown(socket.SHUT_WR)
        assert sock.recv(65536) == b""
    _wait_body_bytes(server, 0)  # the request has ended: whatever it logs is in the log now
    new_log = server.live.log_path.read_bytes()[log_before:].decode(errors="replace")
    assert metric(server.client, "http_requests_total", status="500") == errors_before
    assert "Traceback" not in new_log and "ClientDisconnect" not in new_log, new_log[-2000:]


@pytest.mark.parametrize("cut", [1, 3, 4, 100])
def test_truncated_base64_is_a_422_pointing_at_the_data(server: FaultServer, cut: int) -> None:
    tensor = b64_tensor(np.linspace(0.0, 1.0, 64).reshape(4, 4, 4))
    tensor["data"] = tensor["data"][:-cut]
    response = server.client.post("/v1/vec", json={"x": tensor})
    problem = assert_problem(response, 422, "/problems/request-validation")
    assert [error["pointer"] for error in problem["errors"]] == ["/x/data"], problem


def test_truncated_base64_inside_an_operation_points_there(server: FaultServer) -> None:
    kernel = b64_tensor(np.ones((1, 2, 2)))
    kernel["data"] = kernel["data"][:-5]
    body = {
        "x": {"data": [[[0.1, 0.2, 0.3], [0.4, 0.5, 0.6]]]},
        "function": [{"op": "xcorr2d", "kernel": kernel}, {"op": "tanh"}],
    }
    problem = assert_problem(
        server.client.post("/v1/jacobian", json=body), 422, "/problems/request-validation"
    )
    assert [error["pointer"] for error in problem["errors"]] == ["/function/0/kernel/data"]


# --- bodies over the limit -----------------------------------------------------------------


def test_declared_one_gibibyte_is_refused_before_any_body_byte(server: FaultServer) -> None:
    declared = 1 << 30
    with connect(server.live) as sock:
        start = time.perf_counter()
        sock.sendall(head("/v1/vec", f"Content-Length: {declared}"))  # and not one body byte
        answer = read_response(sock)
        elapsed_ms = (time.perf_counter() - start) * 1e3
    problem = answer.problem()
    assert answer.status == 413
    assert problem["type"] == "/problems/limit-exceeded"
    assert (problem["estimate"], problem["limit"]) == (declared, MAX_BODY)
    assert problem["quantity"] == "request body bytes"
    print(f"\n1 GiB Content-Length: 413 after {elapsed_ms:.1f} ms with 0 body bytes sent")


def _endless_chunked_body(server: FaultServer) -> tuple[int, RawResponse]:
    """Stream 64 KiB chunks until the server answers (at most 64 MiB or 20 s)."""
    payload = b"1.0, " * (64 * 1024 // 5)
    frame = f"{len(payload):x}\r\n".encode() + payload + b"\r\n"
    sent, deadline = 0, time.monotonic() + 20.0
    with connect(server.live) as sock:
        opening = b'{"x": {"data": ['
        first = f"{len(opening):x}\r\n".encode() + opening + b"\r\n"
        sock.sendall(head("/v1/vec", "Transfer-Encoding: chunked") + first)
        answered = False
        while sent < 64 * MIB and time.monotonic() < deadline:
            readable, writable, _ = select.select([sock], [sock], [], 1.0)
            if readable:
                answered = True
                break
            if writable:
                sock.sendall(frame)
                sent += len(payload)
        assert answered, f"no answer after {sent} bytes"
        return sent, read_response(sock)


def test_a_chunked_body_that_never_ends_is_cut_off_at_the_limit(server: FaultServer) -> None:
    sent, answer = _endless_chunked_body(server)
    problem = answer.problem()
    assert answer.status == 413
    assert problem["type"] == "/problems/limit-exceeded"
    assert problem["limit"] == MAX_BODY
    # The count includes what uvicorn had buffered since the app's last receive (it pauses
    # reading above 64 KiB, but one socket read can bring a few hundred KiB): seen up to +210 KiB.
    assert MAX_BODY < problem["estimate"] <= MAX_BODY + MIB
    # What had gone into socket buffers when the answer came; the server read only the limit.
    assert sent < MAX_BODY + 16 * MIB
    print(f"\nendless chunked body: 413 after {sent / MIB:.1f} MiB sent, server counted "
          f"{problem['estimate']} bytes")  # fmt: skip


def _over_limit_burst(
    server: FaultServer, count: int, body: bytes
) -> list[httpx.Response | BaseException]:
    """Send ``count`` copies of an over-limit ``body`` at once; return answers or errors."""

    async def burst() -> list[httpx.Response | BaseException]:
        limits = httpx.Limits(max_connections=count, max_keepalive_connections=count)
        async with httpx.AsyncClient(
            base_url=server.live.base_url, limits=limits, timeout=60.0
        ) as client:
            start = asyncio.Event()

            async def one() -> httpx.Response:
                await start.wait()
                return await client.post(
                    "/v1/vec", content=body, headers={"Content-Type": "application/json"}
                )

            tasks = [asyncio.ensure_future(one()) for _ in range(count)]
            await asyncio.sleep(0)
            start.set()
            return await asyncio.gather(*tasks, return_exceptions=True)

    return asyncio.run(asyncio.wait_for(burst(), timeout=120))


OVER_LIMIT_BODY = b'{"x": {"data": [' + b"0.5," * ((MAX_BODY + 1024) // 4) + b"0.5]}}"


def test_200_concurrent_over_limit_bodies_each_get_413(server: FaultServer) -> None:
    """The body limit refuses on Content-Length, before a computation slot: 413, never 503."""
    count = 200
    body = OVER_LIMIT_BODY
    refused_before = metric(server.client, "requests_refused_total", limit="max_body_bytes")
    began = time.perf_counter()
    results = _over_limit_burst(server, count, body)
    elapsed = time.perf_counter() - began
    errors = [repr(result) for result in results if isinstance(result, BaseException)]
    assert errors == [], errors[:5]
    responses = [result for result in results if isinstance(result, httpx.Response)]
    assert sorted({response.status_code for response in responses}) == [413]
    for response in responses:
        problem = assert_problem(response, 413, "/problems/limit-exceeded")
        assert (problem["estimate"], problem["limit"]) == (len(body), MAX_BODY)
    refused = metric(server.client, "requests_refused_total", limit="max_body_bytes")
    assert refused - refused_before == count
    print(f"\n{count} concurrent {len(body) / MIB:.2f} MiB bodies: {count} x 413 in "
          f"{elapsed:.2f} s, no connection errors")  # fmt: skip


def test_a_100_gb_dense_jacobian_is_refused_from_the_shapes(server: FaultServer) -> None:
    side = 335
    body = {
        "x": b64_tensor(np.zeros((1, side, side))),
        "function": [{"op": "xcorr2d", "kernel": {"data": [[[1.0]]]}}, {"op": "tanh"}],
        "format": "dense",
    }
    content = json.dumps(body).encode()
    assert len(content) < MAX_BODY
    times_ms = []
    for _ in range(10):
        start = time.perf_counter()
        response = server.client.post(
            "/v1/jacobian", content=content, headers={"Content-Type": "application/json"}
        )
        times_ms.append((time.perf_counter() - start) * 1e3)
        problem = assert_problem(response, 413, "/problems/limit-exceeded")
        assert problem["quantity"] == "dense Jacobian elements"
        assert problem["estimate"] == (side * side) ** 2  # 12 594 450 625 x 8 B = 100.8 GB
        assert problem["limit"] == 25_000_000
        assert "coo" in problem["hint"]
    print(f"\ndense Jacobian of {(side * side) ** 2 * 8 / 1e9:.1f} GB ({len(content) / 1e6:.2f} MB"
          f" request): 413 in p50 {statistics.median(times_ms):.1f} ms (min {min(times_ms):.1f},"
          f" max {max(times_ms):.1f}) over 10, client-measured")  # fmt: skip


# --- descent: divergence, saturation, disconnects ------------------------------------------

DIVERGING = {
    "function": [{"op": "squared_norm"}, {"op": "scale", "factor": 0.5}],
    "x0": {"data": [3.0, -1.0]},
    "learning_rate": 3.0,  # x_(t+1) = x_t - 3 x_t = -2 x_t: f grows 4x per step
    "max_steps": 1000,
}


def test_a_diverging_descent_is_a_200_with_status_diverged(server: FaultServer) -> None:
    response = server.client.post("/v1/gradient-descent", json=DIVERGING)
    assert response.status_code == 200, response.text
    result = response.json()
    assert result["status"] == "diverged"
    assert result["steps"] < 1000
    assert np.isfinite(result["f_final"])
    assert "blow-up threshold" in result["reason"]


def test_a_diverging_stream_ends_with_a_diverged_summary(server: FaultServer) -> None:
    with server.client.stream(
        "POST", "/v1/gradient-descent", json=DIVERGING, headers={"Accept": "application/x-ndjson"}
    ) as stream:
        assert stream.status_code == 200
        lines = [json.loads(line) for line in stream.iter_lines() if line]
    assert lines[-1]["status"] == "diverged"
    assert [line["step"] for line in lines[:-1]] == list(range(lines[-1]["steps"] + 1))


def _open_stream(server: FaultServer) -> socket.socket:
    """Start a long NDJSON descent (up to 10^5 steps) and read until its first line arrived."""
    body = json.dumps(_descent(max_steps=100_000, size=256, learning_rate=1e-9)).encode()
    sock = connect(server.live)
    request = head("/v1/gradient-descent", "Accept: application/x-ndjson",
                   f"Content-Length: {len(body)}")  # fmt: skip
    sock.sendall(request + body)
    received = b""
    while b'{"step":0' not in received and len(received) < MIB:
        chunk = sock.recv(65536)
        assert chunk, "the server closed the stream before its first line"
        received += chunk
    assert received.startswith(b"HTTP/1.1 200 "), received[:300]
    assert b"application/x-ndjson" in received.split(b"\r\n\r\n", 1)[0]
    return sock


def _wait_body_bytes(server: FaultServer, expected: float, timeout: float = 10.0) -> None:
    """Wait until the server holds exactly ``expected`` request-body bytes (bounded)."""
    deadline = time.monotonic() + timeout
    while (held := metric(server.client, "request_body_bytes_in_flight")) != expected:
        assert time.monotonic() < deadline, f"body bytes in flight stayed {held}, not {expected}"
        time.sleep(0.01)


def _wait_in_flight(server: FaultServer, expected: float, timeout: float = 5.0) -> float:
    start = time.monotonic()
    while metric(server.client, "computations_in_flight") != expected:
        assert time.monotonic() - start < timeout, f"in flight never reached {expected}"
        time.sleep(0.01)
    return time.monotonic() - start


def test_saturated_slots_answer_503_and_disconnected_streams_free_them(
    server: FaultServer,
) -> None:
    streams = [_open_stream(server) for _ in range(SLOTS)]
    try:
        _wait_in_flight(server, SLOTS)
        start = time.perf_counter()
        response = server.client.post(
            "/v1/evaluate", json={"x": {"data": [1.0]}, "function": [{"op": "square"}]}
        )
        waited = time.perf_counter() - start
        problem = assert_problem(response, 503, "/problems/saturated")
        assert response.headers["retry-after"] == "2"
        assert waited >= WAIT_S * 0.9
        # Half the clients hang up politely, half with a TCP reset, while the server is blocked
        # writing lines nobody reads.
        for index, sock in enumerate(streams):
            if index % 2:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            sock.close()
        released = _wait_in_flight(server, 0.0)
    finally:
        for sock in streams:
            sock.close()
    response = server.client.post("/v1/gradient-descent", json=_descent(max_steps=5))
    assert response.status_code == 200
    assert response.json()["status"] == "max_steps"
    print(f"\n{SLOTS} streams held every slot: 5th request 503 after {waited:.2f} s "
          f"({problem['detail']}); after the clients left the slots were free in "
          f"{released * 1e3:.0f} ms")  # fmt: skip


def test_a_client_that_disconnects_mid_stream_stops_the_run(server: FaultServer) -> None:
    sock = _open_stream(server)
    try:
        for _ in range(20):  # read some more lines, then vanish without a word
            assert sock.recv(65536)
        _wait_in_flight(server, 1.0)
    finally:
        sock.close()
    released = _wait_in_flight(server, 0.0)
    print(f"\nmid-stream disconnect: slot released {released * 1e3:.0f} ms after close")


# --- last: memory --------------------------------------------------------------------------


def test_resident_memory_levels_off_under_its_own_load(server: FaultServer) -> None:
    """Three rounds of the memory-heavy faults, run here (the test does not rely on the others).

    Each round: an endless chunked body (held up to the 2 MiB limit), 50 concurrent over-limit
    bodies, truncated JSON and a COO Jacobian. Resident memory after the third round must be
    within 50 MB of the warm server's, and the third round must add less than a tenth of that:
    memory levels off instead of growing with the number of faults.
    """
    jacobian = {"x": b64_tensor(np.linspace(0.0, 1.0, 3 * 64 * 64).reshape(3, 64, 64)),
                "kernel": b64_tensor(np.ones((3, 3, 3))), "jacobian": "coo",
                "encoding": "base64"}  # fmt: skip
    rounds = []
    for _ in range(3):
        _, answer = _endless_chunked_body(server)
        assert answer.status == 413
        results = _over_limit_burst(server, 50, OVER_LIMIT_BODY)
        assert all(isinstance(r, httpx.Response) and r.status_code == 413 for r in results)
        truncated = server.client.post("/v1/vec", content=VEC_BODY[:12],
                                       headers={"Content-Type": "application/json"})  # fmt: skip
        assert truncated.status_code == 422
        assert server.client.post("/v1/cross-correlation", json=jacobian).status_code == 200
        rounds.append(server.live.memory_kib())
    before = server.warm_memory_kib
    growth = (rounds[-1]["VmRSS"] - before["VmRSS"]) * 1024
    last_round = (rounds[-1]["VmRSS"] - rounds[-2]["VmRSS"]) * 1024
    print(f"\nserver pid {server.live.pid} after {len(server.faults)} fault tests and 3 rounds: "
          f"VmRSS {before['VmRSS'] / 1024:.1f} -> "
          f"{' -> '.join(format(r['VmRSS'] / 1024, '.1f') for r in rounds)} MiB "
          f"(growth {growth / 1e6:+.1f} MB, last round {last_round / 1e6:+.1f} MB), "
          f"VmHWM {rounds[-1]['VmHWM'] / 1024:.1f} MiB")  # fmt: skip
    assert growth < RSS_GROWTH_LIMIT_BYTES
    assert last_round < RSS_GROWTH_LIMIT_BYTES / 10
