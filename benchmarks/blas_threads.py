"""OpenBLAS's thread count: the bits, wall time and CPU time of the service's BLAS-using requests.

Run: ``.venv/bin/python benchmarks/blas_threads.py [--rounds 3] [--repeat 3] [--only TEXT]`` (any
cwd; ``--only``: the requests whose name contains TEXT). Results: README, "BLAS threads".

OpenBLAS reads its settings once, when NumPy loads it, so every configuration runs in its own
process (this script with ``--child``), started with its environment:

* **cores**: ``OPENBLAS_NUM_THREADS`` = the host's cores, what OpenBLAS uses when nothing is set;
* **cores, timeout 2^n**: the same with ``OPENBLAS_THREAD_TIMEOUT=n`` (an idle worker thread
  busy-waits 2^n TSC cycles before it sleeps; OpenBLAS's default is 2^28, clamped to 4..30);
* **1**: ``OPENBLAS_NUM_THREADS=1``: no worker threads.

The configurations alternate within each of ``--rounds`` rounds (a change in machine load hits all
alike). A child posts every request ``--repeat`` times in process
(``fastapi.testclient.TestClient``) after one warm-up and reports medians of: the request's wall
time; the process's CPU time (``time.process_time``, every thread) over the request and a quiet
0.3 s after it (the idle workers' spin); and of that, the OpenBLAS worker threads' CPU time
(``/proc/self/task/<tid>/schedstat``; the workers are the threads that loading NumPy and SciPy
started). Then ``--concurrent`` copies of each request at once from as many threads, as a server
with ``SERVICE_MAX_CONCURRENT_COMPUTATIONS`` slots runs them: the wall time until all are answered
and the process's CPU time. Every child also prints a hash of each response body, so the table
shows which answers differ with the thread count. A 4-thread child
(``threadpoolctl.threadpool_limits(4)``, which may exceed the cores: the bits of a 4-core host) adds
hashes only.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import logging
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
TRAIL_SECONDS = 0.3


def _tensor(a: Any) -> dict[str, Any]:
    import numpy as np

    a = np.ascontiguousarray(a, dtype=np.float64)
    data = base64.b64encode(a.tobytes()).decode()
    return {"encoding": "base64", "shape": list(a.shape), "dtype": "float64", "data": data}


def requests() -> dict[str, tuple[str, dict[str, Any]]]:
    """Return the BLAS-using requests, within the default limits: name -> (path, body)."""
    import numpy as np

    rng = np.random.default_rng(7)
    v6, w6 = rng.uniform(-1, 1, 10**6), rng.uniform(-1, 1, 10**6)
    v5 = rng.uniform(-1, 1, 10**5)
    v4 = rng.uniform(-1, 1, 20_000)
    a = rng.standard_normal((1000, 1000)) / 30
    x = rng.standard_normal(1000)
    a2, x2 = rng.standard_normal((2000, 2000)) / 60, rng.standard_normal(2000)
    image, kernel = rng.standard_normal((32, 96, 96)), rng.standard_normal((32, 5, 5))
    t = _tensor
    ax = {"A": t(a), "x": t(x)}
    return {
        "evaluate mse(x, y), 10^6": (
            "/v1/evaluate",
            {"function": "mse(x, y)", "inputs": {"x": t(v6), "y": t(w6)}},
        ),
        "gradient-descent 20 steps, 10^6": (
            "/v1/gradient-descent",
            {
                "function": [{"op": "square"}, {"op": "sum"}],
                "x0": t(v6),
                "learning_rate": 0.1,
                "max_steps": 20,
                "record_every": 1,
            },
        ),
        "gradient-descent 20 steps, 2*10^4": (
            "/v1/gradient-descent",
            {
                "function": "sum(square(x - 1))",
                "inputs": {"x": t(v4)},
                "learning_rate": 0.1,
                "max_steps": 20,
                "record_every": 1,
            },
        ),
        "minimize lbfgs 20 steps, 10^5": (
            "/v1/minimize",
            {"function": [{"op": "cos"}, {"op": "sum"}], "x0": t(v5), "method": "lbfgs"}
            | {"max_steps": 20},
        ),
        "minimize newton-cg 5 steps, 10^5": (
            "/v1/minimize",
            {"function": [{"op": "cos"}, {"op": "sum"}], "x0": t(v5), "method": "newton-cg"}
            | {"max_steps": 5},
        ),
        "minimize trust-ncg 5 steps, 10^5": (
            "/v1/minimize",
            {"function": [{"op": "cos"}, {"op": "sum"}], "x0": t(v5), "method": "trust-ncg"}
            | {"max_steps": 5},
        ),
        "minimize adam 20 steps, 10^6": (
            "/v1/minimize",
            {"function": [{"op": "square"}, {"op": "sum"}], "x0": t(v6), "method": "adam"}
            | {"learning_rate": 0.01, "max_steps": 20},
        ),
        "minimize lbfgs, sum(square(A @ x - 1)), A 1000x1000": (
            "/v1/minimize",
            {"function": "sum(square(A @ x - 1))", "inputs": ax, "variables": ["x"]}
            | {"method": "lbfgs", "max_steps": 20},
        ),
        "jacobian sum(square(A @ x)) wrt A, x, A 1000x1000": (
            "/v1/jacobian",
            {"function": "sum(square(A @ x))", "inputs": ax, "format": "dense"},
        ),
        "jacobian tanh(A @ x) wrt x, A 1000x1000": (
            "/v1/jacobian",
            {"function": "tanh(A @ x)", "inputs": ax, "wrt": ["x"], "format": "dense"},
        ),
        "vjp sum(tanh(a @ b)), 250x250 each": (
            "/v1/vjp",
            {
                "function": "sum(tanh(a @ b))",
                "inputs": {"a": t(a[:250, :250]), "b": t(a[250:500, 250:500])},
                "cotangent": {"data": 1.0},
            },
        ),
        "jacobian linear 2000x2000, tanh (base64)": (
            "/v1/jacobian",
            {
                "function": [{"op": "linear", "weight": t(a2)}, {"op": "tanh"}],
                "x": t(x2),
                "format": "dense",
                "encoding": "base64",
            },
        ),
        "hessian linear 1000x1000, tanh, sum": (
            "/v1/hessian",
            {
                "function": [{"op": "linear", "weight": t(a)}, {"op": "tanh"}, {"op": "sum"}],
                "x": t(x),
                "format": "dense",
            },
        ),
        "cross-correlation 32x96x96, kernel 32x5x5": (
            "/v1/cross-correlation",
            {"x": t(image), "kernel": t(kernel)},
        ),
    }


def _thread_ids() -> set[int]:
    return {int(tid) for tid in os.listdir("/proc/self/task")}


def _thread_cpu(tids: set[int]) -> float:
    total = 0
    for tid in tids:
        try:
            with open(f"/proc/self/task/{tid}/schedstat") as f:
                total += int(f.read().split()[0])  # ns on the CPU
        except OSError:
            pass  # a thread that ended
    return total / 1e9


def child(repeat: int, concurrent: int, threads: int | None, only: str) -> None:
    before = _thread_ids()
    sys.path.insert(0, str(ROOT))  # the service, installed or not
    # isort: off
    import service  # noqa: F401  (the service's BLAS choices, before NumPy loads OpenBLAS)
    import numpy  # noqa: F401
    import scipy.linalg  # noqa: F401

    # isort: on

    workers = _thread_ids() - before  # OpenBLAS starts its threads when it loads
    from fastapi.testclient import TestClient
    from threadpoolctl import threadpool_info, threadpool_limits  # type: ignore[import-untyped]

    from service.config import Settings
    from service.main import create_app

    logging.disable(logging.INFO)
    if threads is not None:
        threadpool_limits(threads)
    client = TestClient(create_app(Settings()))
    report: dict[str, Any] = {
        "threads": [i["num_threads"] for i in threadpool_info()],
        "workers": len(workers),
        "requests": {},
    }
    for name, (path, body) in requests().items():
        if only not in name:
            continue
        response = client.post(path, json=body)  # warm-up
        assert response.status_code == 200, response.text[:300]
        row: dict[str, Any] = {"hash": hashlib.sha256(response.content).hexdigest()[:12]}
        if threads is None:
            samples = []
            for _ in range(repeat):
                time.sleep(TRAIL_SECONDS)
                cpu0, busy0, wall0 = time.process_time(), _thread_cpu(workers), time.perf_counter()
                client.post(path, json=body)
                wall = time.perf_counter() - wall0
                cpu1, busy1 = time.process_time(), _thread_cpu(workers)
                time.sleep(TRAIL_SECONDS)
                samples.append((wall, cpu1 - cpu0, busy1 - busy0, time.process_time() - cpu1))
            keys = ("wall", "cpu", "workers_cpu", "trail_cpu")
            row |= {k: statistics.median(s[i] for s in samples) for i, k in enumerate(keys)}
            row |= _concurrently(client, path, body, concurrent)
        report["requests"][name] = row
    print(json.dumps(report))


def _concurrently(client: Any, path: str, body: dict[str, Any], n: int) -> dict[str, float]:
    barrier = threading.Barrier(n + 1)

    def post() -> None:
        barrier.wait()
        client.post(path, json=body)

    pool = [threading.Thread(target=post) for _ in range(n)]
    for thread in pool:
        thread.start()
    cpu0, wall0 = time.process_time(), time.perf_counter()
    barrier.wait()
    for thread in pool:
        thread.join()
    return {"n_wall": time.perf_counter() - wall0, "n_cpu": time.process_time() - cpu0}


def _run(env_extra: dict[str, str], args: argparse.Namespace, threads: int | None) -> Any:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENBLAS_", "OMP_", "GOTO"))}
    env |= env_extra
    command = [sys.executable, __file__, "--child", "--repeat", str(args.repeat)]
    command += ["--concurrent", str(args.concurrent), "--only", args.only]
    if threads is not None:
        command += ["--threads", str(threads)]
    done = subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--concurrent", type=int, default=4)
    parser.add_argument("--timeout", type=int, default=20, help="OPENBLAS_THREAD_TIMEOUT row")
    parser.add_argument("--only", default="", help="requests whose name contains this")
    parser.add_argument("--child", action="store_true")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.child:
        child(args.repeat, args.concurrent, args.threads, args.only)
        return
    cores = str(len(os.sched_getaffinity(0)))
    configs = {
        "cores": {"OPENBLAS_NUM_THREADS": cores},
        f"cores, timeout 2^{args.timeout}": {
            "OPENBLAS_NUM_THREADS": cores,
            "OPENBLAS_THREAD_TIMEOUT": str(args.timeout),
        },
        "1": {"OPENBLAS_NUM_THREADS": "1"},
    }
    runs: dict[str, list[Any]] = {name: [] for name in configs}
    loads = [os.getloadavg()[0]]
    for _ in range(args.rounds):
        for name, extra in configs.items():
            runs[name].append(_run(extra, args, None))
            loads.append(os.getloadavg()[0])
    four = _run({"OPENBLAS_NUM_THREADS": cores}, args, 4)
    print(f"cores {cores}; 1-minute load average {min(loads):.2f} to {max(loads):.2f}")
    print("threads reported:", {n: r[0]["threads"] for n, r in runs.items()}, four["threads"])
    fields = ("wall", "cpu", "workers_cpu", "trail_cpu", "n_wall", "n_cpu")
    header = "ms (median of rounds): wall, CPU, of which workers, CPU in 0.3 s after"
    print(f"{header}; {args.concurrent} at once: wall, CPU")
    for request in runs["1"][0]["requests"]:
        hashes = {n: r[0]["requests"][request]["hash"] for n, r in runs.items()}
        hashes["4 threads"] = four["requests"][request]["hash"]
        same = "same bits" if len(set(hashes.values())) == 1 else f"bits differ: {hashes}"
        print(f"{request}  [{same}]")
        for name, results in runs.items():
            med = {
                f: statistics.median(r["requests"][request][f] for r in results) * 1e3
                for f in fields
            }
            cells = " ".join(f"{med[f]:8.1f}" for f in fields)
            print(f"  {name:22s} {cells}")


if __name__ == "__main__":
    main()
