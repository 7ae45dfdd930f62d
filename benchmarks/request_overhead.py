"""The fixed CPU cost of a request: small requests, whose numeric work is a few microseconds.

Three requests, each a direct ASGI call (``transport.call_asgi``, no HTTP client) whose answer's
parts are kept as sent:

* **vec 4, list**: ``/v1/vec`` of a 2 x 2 tensor as nested lists (parsed and computed inline on
  the event loop, no thread-pool hop);
* **vec 4, binary**: the same tensor as an ``application/octet-stream`` body, answered as one;
* **evaluate 3**: ``/v1/evaluate`` of ``sum(x ** 2)`` for three values (computed in the thread
  pool, with the disconnect watcher).

Beside them, in the same process, a **bare ASGI app** that answers the list request's exact bytes
without reading anything: the floor of the driver and the event loop. Printed: median process CPU
microseconds per request over batches, and each request's ratio to the floor.

``--against DIR`` runs the same measurement on another checkout too (``git worktree add DIR
COMMIT``, or ``git archive COMMIT | tar -x -C DIR``), in subprocesses that alternate with this
checkout's, and prints both columns and their ratio; the answers of the two must be the same
bytes. Correctness, outside the timers: every answer is checked against its pinned body.

Run: ``.venv/bin/python benchmarks/request_overhead.py [--requests 500] [--batches 15]
[--rounds 3] [--against DIR]`` (any cwd).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

# (name, path, body, headers); the binary body's header is padded to 8 bytes, as clients do, and
# every request says Accept: */*, as httpx, requests and curl do.
_X4 = [[1.0, 2.0], [3.0, 4.0]]
_BINARY_HEADER = (
    b'{"x": {"encoding": "binary", "shape": [2, 2], "dtype": "float64", '
    b'"binary_data_size": 32}, "encoding": "binary"}'
)
_BINARY_HEADER += b" " * (-len(_BINARY_HEADER) % 8)
_X4_BYTES = b"".join(v.to_bytes(8, "little") for v in (0x3FF0 << 48, 0x4000 << 48, 0x4008 << 48,
                                                        0x4010 << 48))  # fmt: skip
REQUESTS: list[tuple[str, str, bytes, dict[str, str]]] = [
    ("vec 4, list", "/v1/vec", json.dumps({"x": {"data": _X4}}).encode(),
     {"content-type": "application/json", "accept": "*/*"}),
    ("vec 4, binary", "/v1/vec", _BINARY_HEADER + _X4_BYTES,
     {"content-type": "application/octet-stream",
      "inference-header-content-length": str(len(_BINARY_HEADER)), "accept": "*/*"}),
    ("evaluate 3", "/v1/evaluate",
     json.dumps({"x": {"data": [1.0, 2.0, 3.0]}, "function": [{"op": "square"}, {"op": "sum"}]})
     .encode(), {"content-type": "application/json", "accept": "*/*"}),
]  # fmt: skip
# The answers' bodies (the vector of F order is 1, 3, 2, 4; the binary answer's segment follows).
PINNED = {
    "vec 4, list": b'{"vector":{"encoding":"list","dtype":"float64","shape":[4],"data":[1.0,3.0,'
    b'2.0,4.0]},"in_shape":[2,2],"order":"F"}',
    "evaluate 3": b'{"value":{"encoding":"list","dtype":"float64","shape":[],"data":14.0}}',
}
FLOOR = "bare ASGI app"


async def bare_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Answer the list request's pinned body without reading the request: the floor."""
    body = PINNED["vec 4, list"]
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})


def _check(name: str, status: int, body: bytes) -> None:
    if status != 200:
        raise RuntimeError(f"{name}: {status} {body[:300]!r}")
    if name == "vec 4, binary":
        length = len(body) - 32
        header = json.loads(body[:length])
        if header["vector"]["binary_data_size"] != 32 or body[length:] != b"".join(
            _X4_BYTES[i * 8 : i * 8 + 8] for i in (0, 2, 1, 3)
        ):
            raise RuntimeError(f"{name}: wrong answer {body!r}")
    elif name in PINNED and body != PINNED[name]:
        raise RuntimeError(f"{name}: {body!r} is not the pinned answer")


async def measure(root: Path, requests: int, batches: int, quiet: bool = False) -> dict[str, Any]:
    """Median CPU microseconds per request of every kind, and the answers (checked).

    ``quiet``: the access lines go nowhere (in the benchmark's own process: a terminal or pipe
    would time its own writes).
    """
    sys.path.insert(0, str(root / "benchmarks"))
    sys.path.insert(0, str(root))
    import transport

    from service.main import create_app

    app = create_app()
    for handler in logging.getLogger().handlers if quiet else []:
        if isinstance(handler, logging.StreamHandler):
            handler.setStream(open(os.devnull, "w"))  # open as long as the process
    calls = [(name, app, path, body, headers) for name, path, body, headers in REQUESTS]
    calls.append((FLOOR, bare_app, "/", b"", {}))
    medians: dict[str, float] = {}
    answers: dict[str, str] = {}
    for name, target, path, body, headers in calls:
        transport.PATH = path
        for _ in range(100):  # warm-up: caches, children of labelled metrics, thread pool
            status, parts = await transport.call_asgi(target, body, headers)
        answer = b"".join(parts)
        _check(name, status, answer)
        answers[name] = answer.hex()
        per_request = []
        for _ in range(batches):
            start = time.process_time()
            for _ in range(requests):
                await transport.call_asgi(target, body, headers)
            per_request.append((time.process_time() - start) / requests * 1e6)
        medians[name] = statistics.median(per_request)
    return {"medians": medians, "answers": answers}


def _child(root: Path, requests: int, batches: int) -> dict[str, Any]:
    command = [sys.executable, __file__, "--root", str(root), "--requests", str(requests),
               "--batches", str(batches), "--json"]  # fmt: skip
    done = subprocess.run(command, check=True, capture_output=True, text=True)
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def main(argv: list[str] | None = None) -> int:
    """Parse the CLI and run."""
    here = Path(__file__).resolve().parents[1]
    parser = argparse.ArgumentParser(description="CPU per small request, direct ASGI calls.")
    parser.add_argument("--requests", type=int, default=500, help="requests per batch")
    parser.add_argument("--batches", type=int, default=15, help="batches per kind (>= 3)")
    parser.add_argument("--rounds", type=int, default=3, help="alternations with --against")
    parser.add_argument("--root", type=Path, default=here, help="the checkout to import")
    parser.add_argument("--against", type=Path, help="another checkout, measured alternately")
    parser.add_argument("--json", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.requests < 1 or args.batches < 3 or args.rounds < 1:
        parser.error("--requests must be >= 1, --batches >= 3 and --rounds >= 1")
    if args.json:
        measured = measure(args.root.resolve(), args.requests, args.batches, quiet=True)
        print(json.dumps(asyncio.run(measured)))
        return 0
    roots = [args.root.resolve()] + ([args.against.resolve()] if args.against else [])
    load_before = os.getloadavg()[0]
    runs: dict[Path, list[dict[str, Any]]] = {root: [] for root in roots}
    for _ in range(args.rounds if args.against else 1):
        for root in reversed(roots):  # the other checkout first in every round
            runs[root].append(_child(root, args.requests, args.batches))
    if args.against and runs[roots[0]][0]["answers"] != runs[roots[1]][0]["answers"]:
        raise RuntimeError("the two checkouts answered different bytes")
    names = [name for name, *_ in REQUESTS] + [FLOOR]
    cells = {
        root: {name: statistics.median(r["medians"][name] for r in results) for name in names}
        for root, results in runs.items()
    }
    print(f"## CPU per request (us, median of {args.batches} batches of {args.requests}"
          f"{f', then of {args.rounds} alternating runs' if args.against else ''})\n")  # fmt: skip
    header = " | ".join(f"{root.name} us | {root.name} / floor" for root in reversed(roots))
    print(f"| request | {header} |" + (" this / other |" if args.against else ""))
    print("|---|" + "---:|" * (2 * len(roots) + (1 if args.against else 0)))
    for name in names:
        row = " | ".join(
            f"{cells[root][name]:.1f} | {cells[root][name] / cells[root][FLOOR]:.1f}x"
            for root in reversed(roots)
        )
        ratio = f" {cells[roots[0]][name] / cells[roots[1]][name]:.2f} |" if args.against else ""
        print(f"| {name} | {row} |{ratio}")
    print(f"\n- 1-min load average {load_before:.2f} before, {os.getloadavg()[0]:.2f} after")
    return 0


if __name__ == "__main__":
    sys.exit(main())
