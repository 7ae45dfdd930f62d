"""Where a ``/v1/vec`` server round trip of 10^6 float64 spends its time, phase by phase.

The request is the one of ``benchmarks/transport.py``'s alternating table (ASGI app called
directly, body pre-encoded, ``gc.collect()`` before every call), base64 and binary alternating.
The service's own functions are wrapped, outside any change to what they do, to read the calling
thread's CPU clock (``time.thread_time``) around each phase:

* **parse**: body validation in the worker thread (``deps._validate``: framing, JSON, decoding,
  strict checks), of which **finiteness** is the exact scan of every value
  (``codec.tensors._check_finite``);
* **vec**: ``layout.vec`` (order F: a transposing copy of the 1000 x 1000 array);
* **encode**: ``encode_tensor`` of the answer; **write**: the renderer that turns it into the
  response (``json_response`` for base64, the binary body's for binary);
* **rest**: the process's CPU time for the call minus the phases, split into

  - **worker-side plumbing**: the worker thread's call minus the phases in it (the cancel token,
    content negotiation, the answer's model and response object);
  - **slot and thread-pool hop, loop side**: the event loop thread's CPU in
    ``Computations.run`` (the computation slot, handing the call to the worker thread and
    waking up when it is done, the engine-time metric);
  - **body read**: ``read_body`` with the body-limit middleware's guarded receive;
  - **access line**: ``write_access_line``;
  - **request path on the loop**: the rest of ``RequestContextMiddleware`` (the service's
    middleware, routing, dependencies, sending the response, the request metrics);
  - **outside the service's middleware**: FastAPI's and Starlette's outer layers, the benchmark's
    ASGI driver and the event loop's own work.

Medians over the repetitions; minor page faults (``ru_minflt``) per call. Two list round trips run
first so that the allocator is in the state ``transport.py``'s list rows leave it in.

Run: ``.venv/bin/python benchmarks/transport_phases.py [--n 1000000] [--repeat 15]`` (any cwd).
"""

from __future__ import annotations

# isort: off
import _service_kernels  # noqa: F401  (the service's BLAS kernels: before NumPy loads OpenBLAS)

# isort: on
import argparse
import asyncio
import gc
import os
import resource
import statistics
import sys
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import transport  # noqa: E402

from service.api import deps, negotiation, observability  # noqa: E402
from service.api.routes import tensors as tensor_routes  # noqa: E402
from service.codec import tensors as tensor_codec  # noqa: E402
from service.engine import layout  # noqa: E402
from service.main import create_app  # noqa: E402

PHASES = ("parse", "finiteness", "vec", "encode", "write")
# The parts of "rest" (see the module docstring).
REST = (
    "worker-side plumbing",
    "slot and thread-pool hop, loop side",
    "body read",
    "access line",
    "request path on the loop",
    "outside the service's middleware",
)
# Thread CPU seconds per phase of the call being measured (worker and loop threads alike).
spent: dict[str, float] = defaultdict(float)


def timed(phase: str, function: Callable[..., Any]) -> Callable[..., Any]:
    """Return ``function`` adding the calling thread's CPU time to ``spent[phase]``."""

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        start = time.thread_time()
        try:
            return function(*args, **kwargs)
        finally:
            spent[phase] += time.thread_time() - start

    wrapper.__name__ = getattr(function, "__name__", phase)  # hops keep their names
    return wrapper


def timed_async(phase: str, function: Callable[..., Awaitable[Any]]) -> Callable[..., Any]:
    """Return coroutine function ``function`` adding the loop thread's CPU time to ``spent``.

    The clock runs while the coroutine waits too: with one request at a time, what the loop
    thread does meanwhile (waking up for the worker thread's result) is this request's work.
    """

    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        start = time.thread_time()
        try:
            return await function(*args, **kwargs)
        finally:
            spent[phase] += time.thread_time() - start

    return wrapper


def timed_worker(
    worker: Callable[..., Callable[..., Any]],
) -> Callable[..., Callable[..., Any]]:
    """Wrap ``deps._worker`` so that the worker thread's whole call is timed (``"worker"``)."""

    def wrapped(*args: Any) -> Callable[..., Any]:
        return timed("worker", worker(*args))

    return wrapped


# (module, attribute, phase): each looked up in its module at call time by the service.
WRAPPED = (
    (deps, "_validate", "parse"),
    (tensor_codec, "_check_finite", "finiteness"),
    (layout, "vec", "vec"),
    (tensor_routes, "encode_tensor", "encode"),
    (negotiation, "json_response", "write"),
)


def instrument() -> None:
    """Wrap the service's phase functions and the binary body's renderer."""
    for module, name, phase in WRAPPED:
        setattr(module, name, timed(phase, getattr(module, name)))
    deps._worker = timed_worker(deps._worker)
    deps.read_body = timed_async("body read", deps.read_body)
    observability.write_access_line = timed("access line", observability.write_access_line)
    for cls, name, phase in (
        (deps.Computations, "run", "hop"),
        (observability.RequestContextMiddleware, "__call__", "middleware"),
    ):
        setattr(cls, name, timed_async(phase, getattr(cls, name)))
    binary = {
        id(r): (r, r.render)
        for offers in negotiation.OFFERS.values()
        for r in offers
        if r.media_type == negotiation.OCTET_STREAM
    }
    for representation, render in binary.values():  # one object serves many operations
        # a frozen dataclass: the registered renderer itself is wrapped, once
        if render is not None:
            object.__setattr__(representation, "render", timed("write", render))


async def run(n: int, repeat: int) -> None:
    """Alternate base64 and binary direct ASGI calls; print the phase medians."""
    instrument()
    x = np.random.default_rng(transport.SEED).standard_normal(transport.near_square_shape(n))
    app = create_app()
    for _ in range(2):
        status, _ = await transport.call_asgi(app, transport.request_body(x, "list"))
        assert status == 200, status
    base64_body = transport.request_body(x, "base64")
    binary_body, binary_headers = transport.binary_request(x)
    calls: dict[str, Callable[[], Awaitable[tuple[int, list[bytes]]]]] = {
        "base64": lambda: transport.call_asgi(app, base64_body),
        "binary": lambda: transport.call_asgi(app, binary_body, binary_headers),
    }
    rows: dict[str, dict[str, list[float]]] = {name: defaultdict(list) for name in calls}
    load_before = os.getloadavg()[0]
    for rep in range(repeat + 1):  # rep 0: warm-up
        for name, call in calls.items():
            gc.collect()
            spent.clear()
            faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            cpu, wall = time.process_time(), time.perf_counter()
            status, parts = await call()
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults
            if status != 200:
                raise RuntimeError(f"{name}: {status} {b''.join(parts)[:300]!r}")
            if rep:
                row = rows[name]
                row["wall"].append(wall)
                row["CPU (all threads)"].append(cpu)
                for phase in PHASES:
                    row[phase].append(spent[phase])
                # finiteness is part of parse
                phases = sum(spent[p] for p in PHASES if p != "finiteness")
                row["rest"].append(cpu - phases)
                # parse, vec, encode and write run in the worker thread's call
                row["worker-side plumbing"].append(spent["worker"] - phases)
                row["slot and thread-pool hop, loop side"].append(spent["hop"])
                row["body read"].append(spent["body read"])
                row["access line"].append(spent["access line"])
                loop = spent["middleware"] - spent["hop"] - spent["body read"]
                row["request path on the loop"].append(loop - spent["access line"])
                row["outside the service's middleware"].append(
                    cpu - spent["worker"] - spent["middleware"]
                )
                row["minflt"].append(faults / 1e3)  # printed as a count
    load_after = os.getloadavg()[0]
    print(f"## /v1/vec phases: n={n:,} float64, direct ASGI calls, {repeat} repetitions\n")
    print("| phase | base64 ms | binary ms |")
    print("|---|---:|---:|")
    for key in ("wall", "CPU (all threads)", "parse", "finiteness", "vec", "encode", "write",
                "rest", *REST, "minflt"):  # fmt: skip
        cells = [statistics.median(rows[name][key]) * 1e3 for name in calls]
        unit = [f"{c:.0f}" for c in cells] if key == "minflt" else [f"{c:.2f}" for c in cells]
        label = "minor page faults per call" if key == "minflt" else key
        label = "of which finiteness" if key == "finiteness" else label
        label = f"rest: {key}" if key in REST else label
        print(f"| {label} | {unit[0]} | {unit[1]} |")
    print("\nThe parts of rest are medians of their own: they need not add up to its median.")
    print(f"\n- 1-min load average {load_before:.2f} before, {load_after:.2f} after")


def main(argv: list[str] | None = None) -> int:
    """Parse the CLI and run."""
    parser = argparse.ArgumentParser(description="Per-phase CPU of a /v1/vec round trip.")
    parser.add_argument("--n", type=int, default=1_000_000, help="float64 elements")
    parser.add_argument("--repeat", type=int, default=15, help="timed repetitions (>= 5)")
    args = parser.parse_args(argv)
    if args.n < 1 or args.repeat < 5:
        parser.error("--n must be >= 1 and --repeat >= 5")
    asyncio.run(run(args.n, args.repeat))
    return 0


if __name__ == "__main__":
    sys.exit(main())
