"""Binary ``/v1/vec`` requests one after another, the garbage collector left to its thresholds.

This is how a server runs: no ``gc.collect()`` between requests (``transport.py`` collects before
every timed call). An answer kept alive by a reference cycle then stays allocated until a
collection comes, and the next answers' arrays come from fresh pages. Measured per request (the
ASGI app called directly, 10^6 float64 as a 1000 x 1000 tensor, one warm-up request and one
collection first): median wall and process CPU time, minor page faults, and how far the resident
set grew above what it was before the loop. Correctness, outside the timer: the warm-up answer's
vector is ``x.ravel(order="F")`` bit for bit, and every timed answer is a 200.

``--root DIR`` imports the service (and ``benchmarks/transport.py``, which has been there since
session 4) from another checkout (``git worktree add DIR COMMIT``, or ``git archive COMMIT | tar
-x -C DIR``), so that two versions can run one after the other.

Run: ``.venv/bin/python benchmarks/transport_loop.py [--requests 60] [--root DIR]`` (any cwd).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import resource
import statistics
import sys
import time
from pathlib import Path

import numpy as np


def resident_mb() -> float:
    """The process's resident set in MB (``/proc/self/statm``)."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1e6


async def run(requests: int, root: Path) -> None:
    """Send the requests in a loop; print the medians, page faults and resident-set growth."""
    # That checkout's transport.py puts its own checkout first on sys.path, then imports the
    # service from there.
    sys.path.insert(0, str(root / "benchmarks"))
    import transport

    from service.main import create_app

    assert Path(transport.__file__).resolve().parents[1] == root
    x = np.random.default_rng(transport.SEED).standard_normal((1000, 1000))
    app = create_app()
    body, headers = transport.binary_request(x)
    status, parts = await transport.call_asgi(app, body, headers)
    assert status == 200, status
    # Correctness, outside the timer: the vector is the segment that ends the answer.
    content = b"".join(parts)
    decoded = transport.decode_binary(content, len(content) - x.nbytes)
    transport.verify(status, content, "binary", x, decoded)
    del parts, content, decoded  # freed before the loop, so that its requests can reuse them
    gc.collect()
    before = peak = resident_mb()
    wall, cpu = [], []
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    load_before = os.getloadavg()[0]
    for _ in range(requests):
        cpu_start, start = time.process_time(), time.perf_counter()
        status, parts = await transport.call_asgi(app, body, headers)
        wall.append(time.perf_counter() - start)
        cpu.append(time.process_time() - cpu_start)
        assert status == 200, status
        del parts
        peak = max(peak, resident_mb())
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults
    print(
        f"{root}: {requests} requests, median {statistics.median(wall) * 1e3:.2f} ms wall, "
        f"{statistics.median(cpu) * 1e3:.2f} ms CPU; {faults / requests:.0f} minor page faults "
        f"per request; resident set {before:.0f} MB before, at most {peak:.0f} MB "
        f"(+{peak - before:.0f}); 1-min load average {load_before:.2f} before, "
        f"{os.getloadavg()[0]:.2f} after"
    )


def main(argv: list[str] | None = None) -> int:
    """Parse the CLI and run."""
    parser = argparse.ArgumentParser(description="Binary /v1/vec requests in a loop, no forced GC.")
    parser.add_argument("--requests", type=int, default=60, help="requests timed (>= 5)")
    parser.add_argument(
        "--root",
        type=Path,
        default=Path(__file__).resolve().parents[1],
        help="the checkout whose service is imported (default: this one)",
    )
    args = parser.parse_args(argv)
    if args.requests < 5:
        parser.error("--requests must be >= 5")
    asyncio.run(run(args.requests, args.root.resolve()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
