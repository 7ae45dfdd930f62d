"""Gradient descent on f(x) = ||xcorr2d(x, k) - y||², x (3, 32, 32), k (3, 3, 3): ms per step.

Run: ``.venv/bin/python benchmarks/descent.py [--steps 1000] [--repeat 7] [--profile]`` (any cwd).

Rows, all measured in the same run, interleaved (every repetition runs every row once, so a change
in machine load hits all rows alike); medians of ``--repeat`` repetitions after one warm-up:

* **engine**: ``collect(descend(chain, x0, params, limits))`` for ``f = [xcorr2d(k), add(-y),
  squared_norm]``: the limit checks, the preparation (the correlation's CSR matrix, built once),
  ``f`` and the gradient at ``x0``, then ``--steps`` steps with ``record_every = steps`` (two
  records). The engine's ``prepare`` row times building the :class:`Objective` alone.
* **engine, unprepared**: the same run with preparation switched off (``max_nnz = 0``): every step
  calls the correlation's own forward and VJP.
* **HTTP JSON** / **HTTP NDJSON**: ``POST /v1/gradient-descent`` in process, through
  ``httpx.AsyncClient(transport=httpx.ASGITransport(app))``: no sockets, no uvicorn. Includes
  encoding the request (stdlib ``json.dumps``), validation, the run, and reading the response
  (``response.json()``, or the NDJSON lines).
* **hand-written NumPy, adjoint correlation**: the loop ``r = x*k - y; g = 2 (x*k)^T r; x -= γ g``
  with the forward as one ``tensordot`` over ``sliding_window_view`` windows and the gradient as
  the adjoint correlation (the residual zero-padded by ``(H'-1, W'-1)`` and correlated with the
  flipped kernel, also one ``tensordot``): the baseline of the 1.5x target.
* **hand-written NumPy, shift-and-add**: the same loop with one slice-and-add per kernel tap in
  both directions (the "NumPy loops with a hand-written gradient" of the performance notes).
* **hand-written NumPy, sparse operator**: the same loop with the correlation as a precomputed
  CSR matrix and its transpose (two mat-vecs per step): the floor the engine's preparation aims
  at; the gap to it is the engine's per-operation overhead.
* **torch autograd f64**: only when torch is importable (it is not a dependency; that row is
  untested where torch is absent). No jax row: jax is not installed either.

Correctness, checked outside the timers: every loop's final ``x`` equals the hand-written
adjoint loop's to 1e-10 relative (``||x - x_ref|| / ||x_ref||``); the benchmark stops otherwise.
``γ = 1 / L`` with ``L = 2 σ_max(A)²`` (power iteration on the hand-written pair), so the run
converges and the comparison is of a stable iteration.
"""

from __future__ import annotations

# isort: off
import _service_kernels  # noqa: F401  (the service's BLAS kernels: before NumPy loads OpenBLAS)

# isort: on
import argparse
import asyncio
import cProfile
import json
import logging
import pstats
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import scipy.sparse as sp
from numpy.lib.stride_tricks import sliding_window_view

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from service.api.routes import descent as descent_route  # noqa: E402
from service.config import Settings  # noqa: E402
from service.engine import layout, xcorr  # noqa: E402
from service.engine.chain import Chain  # noqa: E402
from service.engine.descent import (  # noqa: E402
    DescentLimits,
    DescentParams,
    Objective,
    collect,
    descend,
)
from service.engine.op import get_op  # noqa: E402
from service.main import create_app  # noqa: E402

try:  # optional third-party baselines; never installed by this project
    import torch
except ImportError:  # pragma: no cover - depends on the environment
    torch = None

X_SHAPE, K_SHAPE = (3, 32, 32), (3, 3, 3)
LIMITS = DescentLimits(
    max_steps=10**6, max_trajectory_elements=10**8, max_tensor_elements=10**8, max_nnz=10**8
)


class Problem:
    """The data, the hand-written correlation pair, and the step size."""

    def __init__(self, seed: int = 0) -> None:
        rng = np.random.default_rng(seed)
        self.x0 = rng.standard_normal(X_SHAPE)
        self.k = rng.standard_normal(K_SHAPE)
        c, kh, kw = K_SHAPE
        self.out_shape = (X_SHAPE[1] - kh + 1, X_SHAPE[2] - kw + 1)
        self.y = rng.standard_normal(self.out_shape)
        self.k_flipped = np.ascontiguousarray(self.k[:, ::-1, ::-1])
        self.gamma = 1.0 / self.lipschitz()

    def forward(self, x: np.ndarray) -> np.ndarray:
        # windows (C, h_out, w_out, kh, kw) . k (C, kh, kw) -> (h_out, w_out)
        windows = sliding_window_view(x, K_SHAPE[1:], axis=(1, 2))
        return np.tensordot(windows, self.k, axes=([0, 3, 4], [0, 1, 2]))

    def adjoint(self, r: np.ndarray) -> np.ndarray:
        # The transpose of the correlation: g[c, p, q] = sum_{h,w} r[p - h, q - w] k[c, h, w],
        # i.e. the residual padded by (kh - 1, kw - 1) correlated with the flipped kernel:
        # k_flipped (C, kh, kw) . windows (H, W, kh, kw) -> (C, H, W)
        padded = np.pad(r, ((K_SHAPE[1] - 1,) * 2, (K_SHAPE[2] - 1,) * 2))
        return np.tensordot(
            self.k_flipped, sliding_window_view(padded, K_SHAPE[1:]), axes=([1, 2], [2, 3])
        )

    def forward_shift(self, x: np.ndarray) -> np.ndarray:
        h_out, w_out = self.out_shape
        out = np.zeros(self.out_shape)
        for c in range(K_SHAPE[0]):
            for h in range(K_SHAPE[1]):
                for w in range(K_SHAPE[2]):
                    out += self.k[c, h, w] * x[c, h : h + h_out, w : w + w_out]
        return out

    def adjoint_shift(self, r: np.ndarray) -> np.ndarray:
        h_out, w_out = self.out_shape
        g = np.zeros(X_SHAPE)
        for c in range(K_SHAPE[0]):
            for h in range(K_SHAPE[1]):
                for w in range(K_SHAPE[2]):
                    g[c, h : h + h_out, w : w + w_out] += self.k[c, h, w] * r
        return g

    def lipschitz(self) -> float:
        # L = 2 sigma_max(A)^2 for f = ||A x - y||^2, by power iteration on A^T A
        v = np.ones(X_SHAPE)
        for _ in range(200):
            v = self.adjoint(self.forward(v))
            v /= np.linalg.norm(v)
        return 2.0 * float(np.linalg.norm(self.forward(v))) ** 2


def handwritten(problem: Problem, steps: int, shift: bool = False) -> np.ndarray:
    forward = problem.forward_shift if shift else problem.forward
    adjoint = problem.adjoint_shift if shift else problem.adjoint
    x, y, gamma = problem.x0.copy(), problem.y, problem.gamma
    for _ in range(steps):
        r = forward(x) - y
        x = x - gamma * (2.0 * adjoint(r))
    return x


def handwritten_sparse(problem: Problem, steps: int) -> np.ndarray:
    # Preparation included, as in the engine: the matrix in C order and its transpose, as CSR.
    jacobian = xcorr.jacobian_x(problem.k, X_SHAPE, order="C", layout="in_out")
    pull, push = sp.csr_array(jacobian), sp.csr_array(jacobian.T)
    x = layout.vec(problem.x0, "C").copy()
    y, gamma = layout.vec(problem.y, "C"), problem.gamma
    for _ in range(steps):
        r = push @ x - y
        x = x - gamma * (2.0 * (pull @ r))
    return layout.ten(x, X_SHAPE, "C")


def engine_chain(problem: Problem) -> Chain:
    ops = [
        get_op("xcorr2d")(kernel=problem.k),
        get_op("add")(constant=-problem.y),
        get_op("squared_norm")(),
    ]
    return Chain(ops, X_SHAPE)


def engine(problem: Problem, steps: int, prepared: bool = True) -> np.ndarray:
    limits = LIMITS if prepared else DescentLimits(**{**LIMITS.__dict__, "max_nnz": 0})
    params = DescentParams(learning_rate=problem.gamma, max_steps=steps, record_every=steps)
    result = collect(descend(engine_chain(problem), problem.x0, params, limits))
    if result.summary.status != "max_steps":
        raise RuntimeError(f"engine run ended with {result.summary.status}")
    return result.summary.x_final


def request_body(problem: Problem, steps: int) -> dict[str, Any]:
    return {
        "function": [
            {"op": "xcorr2d", "kernel": {"data": problem.k.tolist()}},
            {"op": "add", "constant": {"data": (-problem.y).tolist()}},
            {"op": "squared_norm"},
        ],
        "x0": {"data": problem.x0.tolist()},
        "learning_rate": problem.gamma,
        "max_steps": steps,
        "record_every": steps,
    }


class Http:
    """One in-process client for the whole benchmark."""

    def __init__(self, problem: Problem, steps: int) -> None:
        app = create_app(Settings(max_descent_steps=max(steps, 1)))
        if not any(getattr(r, "path", None) == "/v1/gradient-descent" for r in app.routes):
            app.include_router(descent_route.router)  # until the main router registers it
        self.loop = asyncio.new_event_loop()
        self.client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://bench"
        )
        self.body = request_body(problem, steps)

    def json(self) -> np.ndarray:
        async def call() -> np.ndarray:
            response = await self.client.post(
                "/v1/gradient-descent", content=json.dumps(self.body).encode(),
                headers={"content-type": "application/json"},
            )  # fmt: skip
            response.raise_for_status()
            return np.array(response.json()["x_final"]["data"])

        return self.loop.run_until_complete(call())

    def ndjson(self) -> np.ndarray:
        async def call() -> np.ndarray:
            response = await self.client.post(
                "/v1/gradient-descent", content=json.dumps(self.body).encode(),
                headers={"content-type": "application/json", "accept": "application/x-ndjson"},
            )  # fmt: skip
            response.raise_for_status()
            summary = json.loads(response.text.splitlines()[-1])
            return np.array(summary["x_final"]["data"])

        return self.loop.run_until_complete(call())

    def close(self) -> None:
        self.loop.run_until_complete(self.client.aclose())
        self.loop.close()


def torch_loop(problem: Problem, steps: int) -> np.ndarray:  # pragma: no cover - optional
    x = torch.tensor(problem.x0[np.newaxis], requires_grad=True)
    k, y = torch.tensor(problem.k[np.newaxis]), torch.tensor(problem.y)
    for _ in range(steps):
        loss = ((torch.nn.functional.conv2d(x, k)[0, 0] - y) ** 2).sum()
        (g,) = torch.autograd.grad(loss, x)
        with torch.no_grad():
            x = (x - problem.gamma * g).requires_grad_(True)
    return x.detach().numpy()[0]


def relative_error(x: np.ndarray, reference: np.ndarray) -> float:
    return float(np.linalg.norm(x - reference) / np.linalg.norm(reference))


def timed(rows: dict[str, Callable[[], np.ndarray]], repeat: int) -> dict[str, list[float]]:
    samples: dict[str, list[float]] = {name: [] for name in rows}
    for repetition in range(repeat + 1):
        for name, fn in rows.items():
            start = time.perf_counter()
            fn()
            elapsed = time.perf_counter() - start
            if repetition:  # repetition 0 warms up
                samples[name].append(elapsed)
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--profile", action="store_true", help="cProfile the engine loop")
    args = parser.parse_args()
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one INFO line per request otherwise
    steps = args.steps
    problem = Problem()
    http = Http(problem, steps)
    rows: dict[str, Callable[[], np.ndarray]] = {
        "engine": lambda: engine(problem, steps),
        "engine, unprepared": lambda: engine(problem, steps, prepared=False),
        "HTTP JSON (in-process httpx ASGITransport)": http.json,
        "HTTP NDJSON (in-process httpx ASGITransport)": http.ndjson,
        "hand-written NumPy, adjoint correlation": lambda: handwritten(problem, steps),
        "hand-written NumPy, shift-and-add": lambda: handwritten(problem, steps, shift=True),
        "hand-written NumPy, sparse operator": lambda: handwritten_sparse(problem, steps),
    }
    if torch is not None:  # pragma: no cover - optional
        torch.set_num_threads(2)
        rows["torch autograd f64"] = lambda: torch_loop(problem, steps)

    reference = handwritten(problem, steps)
    errors = {name: relative_error(fn(), reference) for name, fn in rows.items()}
    for name, error in errors.items():
        if not error <= 1e-10:
            raise SystemExit(f"{name}: final x differs from the hand-written loop by {error:.3g}")

    chain = engine_chain(problem)
    prepare = [0.0]
    for _ in range(args.repeat):
        start = time.perf_counter()
        Objective(chain)
        prepare.append(time.perf_counter() - start)

    samples = timed(rows, args.repeat)
    medians = {name: 1e3 * statistics.median(values) for name, values in samples.items()}
    baseline = medians["hand-written NumPy, adjoint correlation"]
    print(f"### Gradient descent, {steps} steps, f(x) = ||xcorr2d(x, k) - y||^2, x {X_SHAPE}, "
          f"k {K_SHAPE}, float64\n")  # fmt: skip
    print(f"median of {args.repeat} interleaved repetitions; γ = 1/L = {problem.gamma:.4g}\n")
    print("| loop | ms per step | total ms | vs hand-written adjoint | final x rel. error |")
    print("|---|---|---|---|---|")
    for name, total in medians.items():
        print(
            f"| {name} | {total / steps:.4f} | {total:.1f} | {total / baseline:.2f}x "
            f"| {errors[name]:.1e} |"
        )
    print(
        f"| engine preparation alone (Objective) | | {1e3 * statistics.median(prepare):.2f} | | |"
    )
    if torch is None:
        print("\ntorch is not installed: no torch row.")
    ratio = medians["engine"] / baseline
    verdict = "met" if ratio <= 1.5 else "MISSED"
    print(
        f"\nTarget (engine within 1.5x of the hand-written NumPy loop): {verdict} ({ratio:.2f}x)."
    )
    http.close()

    if args.profile:
        profiler = cProfile.Profile()
        profiler.enable()
        engine(problem, steps)
        profiler.disable()
        pstats.Stats(profiler).sort_stats("tottime").print_stats(15)


if __name__ == "__main__":
    main()
