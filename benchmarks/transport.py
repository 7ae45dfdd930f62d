"""Wire throughput of ``POST /v1/vec``: 10^6 float64 round trips in-process, list, base64, binary.

What is timed (all in one process and one event loop; no sockets, no uvicorn):

* **client round trip**: ndarray -> request body (stdlib ``json.dumps``; for base64 first
  ``base64.b64encode(arr.astype('<f8').tobytes())``) -> ``httpx.AsyncClient`` with
  ``httpx.ASGITransport(app=create_app())`` -> response body -> ndarray (stdlib ``json.loads``;
  for base64 then ``base64.b64decode`` + ``np.frombuffer``).
* **server round trip (httpx)**: the same POST with the body already encoded; the response is
  read as bytes but not decoded. This is the service's own cost plus httpx's in-process transport.
* **server round trip (ASGI direct)**: ``await app(scope, receive, send)`` with the pre-encoded
  body and no httpx, the response body parts kept as sent (not joined); the difference from the
  row above is httpx's share (its request stream and the join of the answer).
* **binary** rows (CONVENTIONS 3.1): the request is a JSON header plus ``x.tobytes()`` as an
  ``application/octet-stream`` body, the answer the same; the client decodes with
  ``np.frombuffer``. Only round trips are timed (there is no JSON data to parse or write), and the
  summary lines give base64 / binary in the same run.
* **baseline**, measured in the same run on the same payload: list: stdlib
  ``json.dumps(json.loads(request_body))``; base64: stdlib
  ``base64.b64encode(base64.b64decode(request_data))`` of the same bytes.
* **server breakdown** (extra rows): the route's steps run one at a time outside HTTP, in the
  main thread:
  ``VecRequest.model_validate_json`` (parse + strict validation + decode to ndarray), the route
  body ``_vec`` (``layout.vec`` + ``encode_tensor``), and FastAPI's response step (the route's
  ``response_field.validate`` + ``serialize_json``, which is what ``fastapi.routing`` calls).
  "Rest" is the httpx server round trip minus those three: ASGI/Starlette/FastAPI plumbing,
  the body-limit middleware, thread-pool hops and httpx.

Every repetition runs all measurements of an encoding back to back (interleaved). A change in
machine load therefore hits all rows alike, and the breakdown stays comparable with the round trip.
Repetition 0 is the untimed warm-up.

MB is defined per encoding as (request body bytes + response body bytes) / 1e6 of one
``/v1/vec`` round trip. Every row of that encoding (the baseline included) is divided by the same
MB, so "x baseline" = baseline ms / row ms (> 1: faster than the baseline).

Correctness: every client round trip (the warm-up included) is checked outside the timer. It must
return status 200, echo ``in_shape`` and ``order``, and return a vector that equals
``x.ravel(order="F")`` bit for bit. The input is 2-D by default (``--shape square``), so F and C
order differ and ``vec`` is a transposing copy that both encodings pay; ``--shape vector`` sends
the 10^6 values as one vector, whose ``vec`` is the identity, which leaves the transport alone.
The breakdown's serializer must also reproduce the HTTP response body byte for byte.

Garbage: by default every timed call starts with a full ``gc.collect()``, so that no collection
of earlier garbage lands in a timed call (its walk of the heap leaves the caches cold, which every
call then pays alike). ``--collect python`` leaves collections to Python's own thresholds, as a
server runs: what a request leaves in reference cycles then stays allocated until one comes.

Run: ``.venv/bin/python benchmarks/transport.py [--n 1000000] [--repeat 7] [--shape vector]
[--collect python]`` (any cwd).
"""

from __future__ import annotations

# isort: off
import _service_kernels  # noqa: F401  (the service's BLAS kernels: before NumPy loads OpenBLAS)

# isort: on
import argparse
import asyncio
import base64
import gc
import inspect
import json
import logging
import math
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import fastapi
import httpx
import numpy as np
import pydantic
import pydantic_core
from fastapi.routing import APIRoute

# The service is not installed as a package: import it from this checkout.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from service.api.deps import decode_limits  # noqa: E402
from service.api.routes.tensors import _vec  # noqa: E402
from service.api.routes.tensors import router as tensors_router  # noqa: E402
from service.api.schemas.tensors import VecRequest  # noqa: E402
from service.config import get_settings  # noqa: E402
from service.main import create_app  # noqa: E402

PATH = "/v1/vec"
ORDER = "F"
SEED = 20261126
HEADERS = {"content-type": "application/json"}
OCTET = "application/octet-stream"
HEADER_LENGTH = "Inference-Header-Content-Length"


@dataclass
class Row:
    """One line of the result table."""

    encoding: str
    label: str
    kind: str  # "round trip", "baseline", "breakdown", "reference"
    times: list[float] = field(default_factory=list)  # seconds

    @property
    def median_ms(self) -> float:
        return statistics.median(self.times) * 1e3


def near_square_shape(n: int) -> tuple[int, int]:
    """(rows, cols) with rows * cols == n and rows the largest divisor <= sqrt(n)."""
    rows = math.isqrt(n)
    while n % rows:
        rows -= 1
    return rows, n // rows


def request_body(x: np.ndarray, encoding: str) -> bytes:
    """Client side: the /v1/vec request body for ``x`` (stdlib json/base64 only)."""
    if encoding == "base64":
        data = base64.b64encode(x.astype("<f8").tobytes()).decode("ascii")
        tensor: dict[str, Any] = {
            "encoding": "base64",
            "dtype": "float64",
            "shape": list(x.shape),
            "data": data,
        }
    else:
        tensor = {"data": x.tolist()}
    return json.dumps({"x": tensor, "order": ORDER, "encoding": encoding}).encode()


def decode_response(content: bytes, encoding: str) -> tuple[dict[str, Any], np.ndarray]:
    """Client side: the parsed response and its vector as a float64 ndarray."""
    doc = json.loads(content)
    vector = doc["vector"]
    if encoding == "base64":
        raw = base64.b64decode(vector["data"])
        array = np.frombuffer(raw, dtype="<f8").reshape(vector["shape"])
    else:
        array = np.asarray(vector["data"], dtype=np.float64)
    return doc, array


def verify(
    status: int,
    content: bytes,
    encoding: str,
    x: np.ndarray,
    decoded: tuple[dict[str, Any], np.ndarray] | None = None,
) -> None:
    """Raise unless the response is 200 and its vector is x.ravel('F'), bit for bit.

    ``decoded`` is the client's own ``decode_response`` result when it has one; the check then
    tests exactly the array the timed round trip produced.
    """
    if status != 200:
        raise RuntimeError(f"{encoding}: HTTP {status}: {content[:500]!r}")
    doc, got = decoded if decoded is not None else decode_response(content, encoding)
    expected = x.ravel(order=ORDER)
    if doc["in_shape"] != list(x.shape) or doc["order"] != ORDER:
        raise RuntimeError(
            f"{encoding}: in_shape/order not echoed: {doc['in_shape']} {doc['order']}"
        )
    if doc["vector"]["encoding"] != encoding or got.shape != expected.shape:
        raise RuntimeError(
            f"{encoding}: wrong encoding/shape {doc['vector']['encoding']} {got.shape}"
        )
    mismatch = got.view(np.uint64) != expected.view(np.uint64)
    if mismatch.any():
        bad = int(np.flatnonzero(mismatch)[0])
        raise RuntimeError(f"{encoding}: element {bad} is {got[bad]!r}, expected {expected[bad]!r}")


async def call_asgi(
    app: Any, body: bytes, headers: dict[str, str] | None = None
) -> tuple[int, list[bytes]]:
    """POST ``body`` to ``app`` as a bare ASGI call; returns (status, response body parts).

    The parts are kept as the app sent them: joining them is the client's work (an 8 MB copy),
    which this row leaves out; ``b"".join`` them to read the body.
    """
    extra = [(k.lower().encode(), v.encode()) for k, v in (headers or HEADERS).items()]
    scope = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": PATH,
        "raw_path": PATH.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [
            (b"host", b"bench"),
            *extra,
            (b"content-length", str(len(body)).encode()),
        ],
        "client": ("127.0.0.1", 1),
        "server": ("bench", 80),
    }
    sent = False
    status = 0
    chunks: list[bytes] = []
    done = asyncio.Event()

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        await done.wait()  # like a server: report the disconnect once the response is sent
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]
        elif message["type"] == "http.response.body":
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                done.set()

    await app(scope, receive, send)
    return status, chunks


# ``--collect each`` (True, the default) or ``python``: see "Garbage" in the module docstring.
COLLECT_EACH = True


def collect() -> None:
    """Collect garbage before a timed call, unless ``--collect python``."""
    if COLLECT_EACH:
        gc.collect()


async def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    """Collect garbage (:data:`COLLECT_EACH`), then time one call of ``fn`` (awaited if need be)."""
    collect()
    start = time.perf_counter()
    out = fn()
    if inspect.isawaitable(out):
        out = await out
    return time.perf_counter() - start, out


async def bench_encoding(
    encoding: str, x: np.ndarray, app: Any, client: httpx.AsyncClient, repeat: int
) -> tuple[list[Row], int, int]:
    """All rows of one encoding, plus the request and response body sizes."""
    body = request_body(x, encoding)
    first = await client.post(PATH, content=body, headers=HEADERS)
    verify(first.status_code, first.content, encoding, x)

    # Baseline on the same payload.
    if encoding == "base64":
        b64_text = json.loads(body)["x"]["data"]

        def baseline() -> object:
            return base64.b64encode(base64.b64decode(b64_text))

        base_label = "baseline: stdlib `base64.b64decode` + `b64encode` of the same bytes"
    else:

        def baseline() -> object:
            return json.dumps(json.loads(body)).encode()

        base_label = "baseline: stdlib `json.loads` + `json.dumps` of the request body"

    async def client_round_trip() -> tuple[int, bytes, tuple[dict[str, Any], np.ndarray]]:
        response = await client.post(PATH, content=request_body(x, encoding), headers=HEADERS)
        decoded = decode_response(response.content, encoding)
        return response.status_code, response.content, decoded

    async def server_httpx() -> bytes:
        return (await client.post(PATH, content=body, headers=HEADERS)).content

    async def server_direct() -> list[bytes]:
        status, parts = await call_asgi(app, body)
        if status != 200:
            content = b"".join(parts)[:300]
            raise RuntimeError(f"{encoding}: direct ASGI call answered {status}: {content!r}")
        return parts

    # Server breakdown: the route's own steps, one at a time. FastAPI includes routers lazily, so
    # the route is taken from the router that declares it; the serializer check below proves it
    # is the same response path as the HTTP one.
    settings = get_settings()
    context = {"limits": decode_limits(settings), "settings": settings}
    route = next(r for r in tensors_router.routes if isinstance(r, APIRoute) and r.path == PATH)
    response_field = route.response_field
    if response_field is None:
        raise RuntimeError("the /v1/vec route has no response field")
    parsed = VecRequest.model_validate_json(body, context=context)
    result = _vec(parsed, settings)

    def respond() -> bytes:
        value, errors = response_field.validate(result, {}, loc=("response",))
        if errors:
            raise RuntimeError(f"response validation failed: {errors}")
        return response_field.serialize_json(value, by_alias=True)

    if respond() != first.content:
        raise RuntimeError(f"{encoding}: breakdown serializer output differs from the HTTP body")

    steps: list[tuple[Row, Callable[[], Any]]] = [
        (
            Row(encoding, "**client round trip**: encode + POST (httpx) + decode", "round trip"),
            client_round_trip,
        ),
        (
            Row(encoding, "server round trip: httpx ASGITransport, body pre-encoded", "round trip"),
            server_httpx,
        ),
        (Row(encoding, "server round trip: ASGI app called directly", "round trip"), server_direct),
        (Row(encoding, base_label, "baseline"), baseline),
        (
            Row(
                encoding,
                "breakdown: `VecRequest.model_validate_json` (parse+validate+decode)",
                "breakdown",
            ),
            lambda: VecRequest.model_validate_json(body, context=context),
        ),
        (
            Row(encoding, "breakdown: `_vec` (layout.vec + encode_tensor)", "breakdown"),
            lambda: _vec(parsed, settings),
        ),
        (
            Row(
                encoding,
                "breakdown: response validate + `serialize_json` (FastAPI fast path)",
                "breakdown",
            ),
            respond,
        ),
    ]
    if encoding == "list":
        listed = json.loads(body)["x"]["data"]
        steps += [
            (
                Row(
                    encoding,
                    "reference, not additive: `pydantic_core.from_json` (parse only)",
                    "reference",
                ),
                lambda: pydantic_core.from_json(body),
            ),
            (
                Row(
                    encoding,
                    "reference, not additive: `np.asarray(nested list, float64)`",
                    "reference",
                ),
                lambda: np.asarray(listed, dtype=np.float64),
            ),
        ]

    for rep in range(repeat + 1):  # rep 0: warm-up, checked but not recorded
        for row, fn in steps:
            seconds, out = await timed(fn)
            if fn is client_round_trip:
                status, content, decoded = out
                verify(status, content, encoding, x, decoded)  # outside the timer
            if rep:
                row.times.append(seconds)

    rows = [row for row, _ in steps]
    server = statistics.median(rows[1].times)
    breakdown = sum(statistics.median(r.times) for r in rows if r.kind == "breakdown")
    rest = Row(encoding, "breakdown: rest = httpx server round trip − the three above", "breakdown")
    rest.times = [server - breakdown]
    rows.insert(max(i for i, r in enumerate(rows) if r.kind == "breakdown") + 1, rest)
    return rows, len(body), len(first.content)


def binary_request(x: np.ndarray) -> tuple[bytes, dict[str, str]]:
    """Client side: the binary /v1/vec request (CONVENTIONS 3.1): JSON header, then x's bytes."""
    raw = np.ascontiguousarray(x, dtype="<f8").tobytes()
    tensor = {"encoding": "binary", "shape": list(x.shape), "binary_data_size": len(raw)}
    header = json.dumps({"x": tensor, "order": ORDER, "encoding": "binary"}).encode()
    # Spaces up to a multiple of 8 bytes: the segment starts aligned, so the server's array is a
    # view of the body (an unaligned segment is copied once).
    header += b" " * (-len(header) % 8)
    return header + raw, {"content-type": OCTET, HEADER_LENGTH: str(len(header))}


def decode_binary(content: bytes, header_length: int) -> tuple[dict[str, Any], np.ndarray]:
    """Client side: the header of a binary /v1/vec answer and its vector (one segment)."""
    doc = json.loads(content[:header_length])
    vector = np.frombuffer(content, dtype="<f8", offset=header_length)
    if vector.nbytes != doc["vector"]["binary_data_size"]:
        raise RuntimeError("binary: the segment does not fill the rest of the body")
    doc["vector"]["encoding"] = "binary"
    return doc, vector.reshape(doc["vector"]["shape"])


async def bench_binary(
    x: np.ndarray, app: Any, client: httpx.AsyncClient, repeat: int
) -> tuple[list[Row], int, int]:
    """The binary rows: round trips only (no JSON parse/serialize steps to break down)."""
    body, headers = binary_request(x)

    async def client_round_trip() -> tuple[int, bytes, tuple[dict[str, Any], np.ndarray]]:
        request, request_headers = binary_request(x)
        response = await client.post(PATH, content=request, headers=request_headers)
        length = int(response.headers.get(HEADER_LENGTH, 0))
        return response.status_code, response.content, decode_binary(response.content, length)

    async def server_httpx() -> bytes:
        return (await client.post(PATH, content=body, headers=headers)).content

    async def server_direct() -> list[bytes]:
        status, parts = await call_asgi(app, body, headers)
        if status != 200:
            content = b"".join(parts)[:300]
            raise RuntimeError(f"binary: direct ASGI call answered {status}: {content!r}")
        return parts

    def baseline() -> object:
        return np.frombuffer(body, dtype="<f8", offset=len(body) - x.nbytes).tobytes()

    steps: list[tuple[Row, Callable[[], Any]]] = [
        (Row("binary", "**client round trip**: encode + POST (httpx) + decode", "round trip"),
         client_round_trip),
        (Row("binary", "server round trip: httpx ASGITransport, body pre-encoded", "round trip"),
         server_httpx),
        (Row("binary", "server round trip: ASGI app called directly", "round trip"),
         server_direct),
        (Row("binary", "baseline: `np.frombuffer(body)` + `tobytes()` of the segment", "baseline"),
         baseline),
    ]  # fmt: skip
    for rep in range(repeat + 1):  # rep 0: warm-up, checked but not recorded
        for row, fn in steps:
            seconds, out = await timed(fn)
            if fn is client_round_trip:
                status, content, decoded = out
                verify(status, content, "binary", x, decoded)  # outside the timer
            if rep:
                row.times.append(seconds)
    first = await client.post(PATH, content=body, headers=headers)
    return [row for row, _ in steps], len(body), len(first.content)


def received(body: bytes) -> bytes:
    """A copy of ``body`` written just now, as a server's receive path leaves a request body.

    Over a socket, a large body arrives in parts that the server joins into one new buffer
    (``service.api.deps.read_body``), so the service always parses a body that was just written.
    A body encoded once and posted again and again was last touched a whole repetition earlier
    (tens of MB of other traffic), which only a zero-copy binary parse notices: it reads the
    body's bytes where they lie instead of first writing them elsewhere.
    """
    return bytes(bytearray(body))


async def interleaved_ratio(
    x: np.ndarray, app: Any, client: httpx.AsyncClient, repeat: int
) -> list[tuple[str, float, float, float, float]]:
    """Server round trips of base64 and binary alternating within each repetition.

    Each route is timed twice: with the one pre-encoded body posted every time (the rows above),
    and with a body just received (:func:`received`, copied outside the timer).

    Returns (measurement, base64 median ms, binary median ms, base64 median CPU ms, binary
    median CPU ms); CPU is the process's CPU time (all threads) during the call, which a loaded
    machine inflates less than wall time.
    """
    bin_body, bin_headers = binary_request(x)
    bodies = {"base64": request_body(x, "base64"), "binary": bin_body}
    headers = {"base64": HEADERS, "binary": bin_headers}

    async def via_httpx(encoding: str, body: bytes) -> int:
        return (await client.post(PATH, content=body, headers=headers[encoding])).status_code

    async def direct(encoding: str, body: bytes) -> int:
        return (await call_asgi(app, body, headers[encoding]))[0]

    routes = {
        "server round trip: httpx ASGITransport": via_httpx,
        "server round trip: ASGI app called directly": direct,
    }
    calls = [
        (f"{label}{', body just received' if fresh else ''}", route, fresh)
        for fresh in (False, True)
        for label, route in routes.items()
    ]
    wall: dict[tuple[str, str], list[float]] = {}
    cpu: dict[tuple[str, str], list[float]] = {}
    for rep in range(repeat + 1):
        for label, route, fresh in calls:
            for encoding, body in bodies.items():
                collect()
                sent = received(body) if fresh else body
                cpu_start, start = time.process_time(), time.perf_counter()
                status = await route(encoding, sent)
                if status != 200:
                    raise RuntimeError(f"{label}, {encoding}: status {status}")
                if rep:
                    wall.setdefault((label, encoding), []).append(time.perf_counter() - start)
                    cpu.setdefault((label, encoding), []).append(time.process_time() - cpu_start)

    def ms(series: list[float]) -> float:
        return statistics.median(series) * 1e3

    return [
        (
            label,
            ms(wall[(label, "base64")]),
            ms(wall[(label, "binary")]),
            ms(cpu[(label, "base64")]),
            ms(cpu[(label, "binary")]),
        )
        for label, _, _ in calls
    ]


def format_table(rows: list[Row], mb: dict[str, float]) -> str:
    """Markdown table of the rows."""
    lines = [
        "| encoding | measurement | median ms | min–max ms | MB/s | × baseline | % of server |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    base = {r.encoding: r.median_ms for r in rows if r.kind == "baseline"}
    server = {
        r.encoding: r.median_ms for r in rows if r.label.startswith("server round trip: httpx")
    }
    for row in rows:
        ms = row.median_ms
        spread = "—"
        if len(row.times) > 1:
            spread = f"{min(row.times) * 1e3:.1f}–{max(row.times) * 1e3:.1f}"
        mbs = ratio = share = "—"
        if row.kind in ("round trip", "baseline"):
            mbs = f"{mb[row.encoding] / (ms / 1e3):.1f}"
            ratio = f"{base[row.encoding] / ms:.2f}"
        else:
            share = f"{100 * ms / server[row.encoding]:.0f}%"
        cells = [row.encoding, row.label, f"{ms:.1f}", spread, mbs, ratio, share]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


async def run(n: int, repeat: int, vector: bool = False) -> None:
    """Benchmark both encodings and print the report (``vector``: x of shape (n,))."""
    shape = (n,) if vector else near_square_shape(n)
    x = np.random.default_rng(SEED).standard_normal(shape)
    if not vector and min(shape) > 1 and np.array_equal(x.ravel(order="F"), x.ravel(order="C")):
        raise RuntimeError("F and C order coincide; the correctness check would not discriminate")
    app = create_app()
    # create_app configures INFO logging; httpx would log every request to stderr while timed.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    load_before = os.getloadavg()
    started = time.perf_counter()
    rows: list[Row] = []
    sizes: dict[str, tuple[int, int]] = {}
    client = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://bench", timeout=None
    )
    async with client:
        for encoding in ("list", "base64"):
            encoded, req_bytes, resp_bytes = await bench_encoding(encoding, x, app, client, repeat)
            rows.extend(encoded)
            sizes[encoding] = (req_bytes, resp_bytes)
        encoded, req_bytes, resp_bytes = await bench_binary(x, app, client, repeat)
        rows.extend(encoded)
        sizes["binary"] = (req_bytes, resp_bytes)
        ratios = await interleaved_ratio(x, app, client, repeat)
    elapsed = time.perf_counter() - started
    load_after = os.getloadavg()
    mb = {enc: (req + resp) / 1e6 for enc, (req, resp) in sizes.items()}

    print(f"## /v1/vec transport: n={n:,} float64, shape={list(shape)}, order={ORDER}\n")
    print(format_table(rows, mb))
    print()
    for enc, (req, resp) in sizes.items():
        print(f"- {enc}: request {req:,} B + response {resp:,} B = {mb[enc]:.3f} MB per round trip")
    medians = {r.encoding: r.median_ms for r in rows if r.label.startswith("**client round")}
    print(
        f"- binary vs base64, client round trip: {medians['base64']:.1f} ms / "
        f"{medians['binary']:.1f} ms = **{medians['base64'] / medians['binary']:.1f}x**"
    )
    print("\nbase64 vs binary, the two alternating in every repetition (same run):\n")
    print("| measurement | base64 ms | binary ms | **wall ratio** | base64 CPU ms | binary CPU ms "
          "| CPU ratio |")  # fmt: skip
    print("|---|---:|---:|---:|---:|---:|---:|")
    for label, b64_ms, bin_ms, b64_cpu, bin_cpu in ratios:
        print(
            f"| {label} | {b64_ms:.1f} | {bin_ms:.1f} | **{b64_ms / bin_ms:.1f}x** | "
            f"{b64_cpu:.1f} | {bin_cpu:.1f} | {b64_cpu / bin_cpu:.1f}x |"
        )
    print()
    print(
        "- MB = (request body bytes + response body bytes) / 1e6 of one /v1/vec round trip of that"
        " encoding; MB/s = MB / median seconds; × baseline = baseline median / row median."
    )
    print(
        f"- median of {repeat} timed repetitions after 1 warm-up, all rows of an encoding"
        " interleaved in each repetition; in-process via"
        " httpx.AsyncClient(transport=httpx.ASGITransport(app=create_app())) unless the row says"
        " 'ASGI app called directly'; breakdown rows call the route's steps outside HTTP;"
        " % of server = row / httpx server round trip. The 'rest' row is a difference of"
        " medians: plumbing below the run-to-run noise can make it slightly negative."
    )
    print(
        f"- correctness: all {repeat + 1} client round trips per encoding returned 200 and a vector"
        " bit-identical to numpy x.ravel(order='F'); the breakdown serializer reproduced the HTTP"
        " response body byte for byte."
    )
    print(
        f"- machine: python {platform.python_version()}, numpy {np.__version__},"
        f" os.cpu_count()={os.cpu_count()}, usable cpus={len(os.sched_getaffinity(0))},"
        f" {platform.machine()} {platform.system()}; fastapi {fastapi.__version__},"
        f" pydantic {pydantic.__version__} (core {pydantic_core.__version__}),"
        f" httpx {httpx.__version__}; 1-min load average {load_before[0]:.2f} before,"
        f" {load_after[0]:.2f} after"
    )
    print(f"- data: numpy default_rng({SEED}).standard_normal; benchmark wall time {elapsed:.1f} s")
    if COLLECT_EACH:
        print("- garbage: a full collection before every timed call (--collect each)")
    else:
        print("- garbage: collected when Python's thresholds start a collection (--collect python)")


def main(argv: list[str] | None = None) -> int:
    """Parse the CLI and run."""
    parser = argparse.ArgumentParser(description="Wire throughput of POST /v1/vec, in-process.")
    parser.add_argument("--n", type=int, default=1_000_000, help="float64 elements (default 10^6)")
    parser.add_argument("--repeat", type=int, default=7, help="timed repetitions, >= 5 (default 7)")
    parser.add_argument(
        "--shape",
        choices=("square", "vector"),
        default="square",
        help="x as a near-square matrix (vec transposes) or as one vector (vec is the identity)",
    )
    parser.add_argument(
        "--collect",
        choices=("each", "python"),
        default="each",
        help="a full garbage collection before every timed call (each), or only the ones "
        "Python's thresholds start, as in a server (python)",
    )
    args = parser.parse_args(argv)
    if args.n < 1:
        parser.error("--n must be >= 1")
    if args.repeat < 5:
        parser.error("--repeat must be >= 5")
    global COLLECT_EACH
    COLLECT_EACH = args.collect == "each"
    asyncio.run(run(args.n, args.repeat, args.shape == "vector"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
