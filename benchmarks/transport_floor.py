"""How far a leaner request path could take binary ``/v1/vec``: the service against a bare app.

The bare app is an ASGI function that does only the numeric work of a binary ``/v1/vec`` round
trip, with the one thread-pool hop the service makes for a large body: read the JSON header
(``json.loads``), view the segment (``np.frombuffer``), the exact finiteness scan
(``np.isfinite(...).all()``), ``vec`` (``ravel(order="F")``), then the answer's header and a
view of the vector as the body. No middleware, validation model, limits, metrics, access log or
content negotiation: it is not a service, only the floor under one. Its answers are checked bit
for bit against the service's outside the timers.

Six calls alternate in every repetition, each after ``gc.collect()`` as in ``transport.py``:
the service's base64 and binary requests and the bare app's binary request, each as a direct ASGI
call (the answer's parts kept as sent) and through ``httpx.ASGITransport``. Printed: median wall
and process CPU milliseconds and minor page faults, and base64 / binary and base64 / bare in the
same run.

Run: ``.venv/bin/python benchmarks/transport_floor.py [--repeat 15] [--shape vector]`` (any cwd).
"""

from __future__ import annotations

# isort: off
import _service_kernels  # noqa: F401  (the service's BLAS kernels: before NumPy loads OpenBLAS)

# isort: on
import argparse
import asyncio
import gc
import json
import logging
import os
import resource
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio.to_thread
import httpx
import numpy as np
from starlette.types import Receive, Scope, Send

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import transport  # noqa: E402

from service.main import create_app  # noqa: E402


def bare_vec(body: bytes, header_length: int) -> tuple[bytes, np.ndarray]:
    """The numeric work of a binary /v1/vec request: its answer's header and vector."""
    tensor = json.loads(body[:header_length])["x"]
    count = tensor["binary_data_size"] // 8
    x = np.frombuffer(body, "<f8", count, header_length).reshape(tensor["shape"])
    if not np.isfinite(x).all():
        raise ValueError("non-finite input")
    vector = x.ravel(order="F")  # the order transport.py requests
    segment = {"encoding": "binary", "dtype": "float64", "shape": [vector.size]}
    answer = {
        "vector": {**segment, "binary_data_size": vector.nbytes},
        "in_shape": list(x.shape),
        "order": "F",
    }
    header = json.dumps(answer, separators=(",", ":")).encode()
    return header + b" " * (-len(header) % 8), vector


async def bare_app(scope: Scope, receive: Receive, send: Send) -> None:
    """ASGI: answer a one-part binary /v1/vec body through one thread-pool hop."""
    body = (await receive())["body"]
    length = int(dict(scope["headers"])[transport.HEADER_LENGTH.lower().encode()])
    header, vector = await anyio.to_thread.run_sync(bare_vec, body, length)
    size = str(len(header) + vector.nbytes).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", transport.OCTET.encode()), (b"content-length", size)],
        }
    )
    await send({"type": "http.response.body", "body": header, "more_body": True})
    await send({"type": "http.response.body", "body": vector.data.cast("B")})


async def run(repeat: int, vector: bool) -> None:
    """Alternate the six calls; print the medians and the same-run ratios."""
    shape = (10**6,) if vector else (1000, 1000)
    x = np.random.default_rng(transport.SEED).standard_normal(shape)
    app = create_app()
    logging.getLogger("httpx").setLevel(logging.WARNING)
    base64_body = transport.request_body(x, "base64")
    binary_body, headers = transport.binary_request(x)
    service = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://b")
    bare = httpx.AsyncClient(transport=httpx.ASGITransport(app=bare_app), base_url="http://b")
    path = transport.PATH

    async def direct(target: Any, body: bytes, extra: dict[str, str] | None = None) -> list[bytes]:
        status, parts = await transport.call_asgi(target, body, extra)
        assert status == 200, status
        return parts  # as sent: joining them is a client's work (transport.call_asgi)

    async def post(client: httpx.AsyncClient, body: bytes, extra: dict[str, str]) -> list[bytes]:
        return [(await client.post(path, content=body, headers=extra)).content]

    calls: dict[str, Callable[[], Awaitable[list[bytes]]]] = {
        "direct base64": lambda: direct(app, base64_body),
        "direct binary": lambda: direct(app, binary_body, headers),
        "direct bare": lambda: direct(bare_app, binary_body, headers),
        "httpx base64": lambda: post(service, base64_body, transport.HEADERS),
        "httpx binary": lambda: post(service, binary_body, headers),
        "httpx bare": lambda: post(bare, binary_body, headers),
    }
    # As in transport_phases.py: two list round trips leave the allocator as transport.py's list
    # rows do (freed blocks of this size are then reused, not mapped and faulted in anew).
    for _ in range(2):
        await direct(app, transport.request_body(x, "list"))
    answers = {name: b"".join(await call()) for name, call in calls.items()}  # warm-up
    for row in ("direct", "httpx"):
        if answers[f"{row} bare"] != answers[f"{row} binary"]:
            raise RuntimeError(f"{row}: the bare app's answer differs from the service's")
    wall: dict[str, list[float]] = {name: [] for name in calls}
    cpu: dict[str, list[float]] = {name: [] for name in calls}
    faults: dict[str, list[float]] = {name: [] for name in calls}
    load_before = os.getloadavg()[0]
    for _ in range(repeat):
        for name, call in calls.items():
            gc.collect()
            faulted = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            cpu_start, start = time.process_time(), time.perf_counter()
            await call()
            wall[name].append(time.perf_counter() - start)
            cpu[name].append(time.process_time() - cpu_start)
            faults[name].append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faulted)
    load_after = os.getloadavg()[0]
    await service.aclose()
    await bare.aclose()

    def ms(series: list[float]) -> float:
        return statistics.median(series) * 1e3

    print(f"## /v1/vec, 10^6 float64 as {list(shape)}: the service against a bare app\n")
    print("| call | wall ms | CPU ms | minor page faults |")
    print("|---|---:|---:|---:|")
    for name in calls:
        row = f"{ms(wall[name]):.2f} | {ms(cpu[name]):.2f} | {statistics.median(faults[name]):.0f}"
        print(f"| {name} | {row} |")
    print()
    for row in ("direct", "httpx"):
        base64_wall, base64_cpu = ms(wall[f"{row} base64"]), ms(cpu[f"{row} base64"])
        ratios = [
            f"base64 / {kind} {base64_wall / ms(wall[f'{row} {kind}']):.1f}x wall, "
            f"{base64_cpu / ms(cpu[f'{row} {kind}']):.1f}x CPU"
            for kind in ("binary", "bare")
        ]
        print(f"- {row}: {'; '.join(ratios)}")
    print(f"- median of {repeat} after one warm-up; 1-min load average {load_before:.2f} before,")
    print(f"  {load_after:.2f} after; the bare app's answers equal the service's byte for byte")


def main(argv: list[str] | None = None) -> int:
    """Parse the CLI and run."""
    parser = argparse.ArgumentParser(description="The service's /v1/vec against a bare app.")
    parser.add_argument("--repeat", type=int, default=15, help="timed repetitions (>= 5)")
    parser.add_argument("--shape", choices=("square", "vector"), default="square")
    args = parser.parse_args(argv)
    if args.repeat < 5:
        parser.error("--repeat must be >= 5")
    asyncio.run(run(args.repeat, args.shape == "vector"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
