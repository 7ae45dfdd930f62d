"""Programs: the kernel gradient against the forward correlation, and kernel recovery by descent.

Run: ``.venv/bin/python benchmarks/programs.py [--repeat 9] [--steps 1000] [--clock cpu]``
(any cwd).

Both comparisons are measured in the same run, interleaved (every repetition times every row
once), medians of ``--repeat`` repetitions after one warm-up. ``--clock wall`` (the default) times
with ``time.perf_counter``; ``--clock cpu`` with ``time.process_time``, the CPU time of the whole
process (BLAS threads included), which a loaded machine inflates far less than wall time:

1. **Kernel gradient** of ``sum(square(xcorr2d(x, k) - y))`` with respect to ``k`` for x
   (3, 224, 224), k (3, 3, 3), through the request entry point
   (:func:`service.engine.graph.requests.product`, direction ``vjp``, ``wrt = ["k"]``: the
   forward pass, the pullback to ``k`` only, limits checked first) against the forward
   cross-correlation alone (:func:`service.engine.xcorr.cross_correlate`). Target <= 2x.
2. **Kernel recovery**: ``--steps`` steps of ``mse(xcorr2d(x, k), y)`` over ``k`` from ``k = 0``,
   x (3, 32, 32), γ = 0.05, through :func:`service.engine.graph.descent.descend_program` (the
   checks, the preparation, every step, the records), against a hand-written NumPy loop of the
   same updates: windows of ``x`` once (``sliding_window_view``), then per step the prediction
   ``P k`` and the gradient ``(2 / N) P^T (P k - y)`` as two ``tensordot`` calls. Target <= 1.5x.

Correctness, outside the timers: the engine's gradient equals the hand-written one to 1e-12
relative, and both descents end at the same kernel to 1e-10 relative.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from service.engine.descent import DescentLimits, DescentParams, collect  # noqa: E402
from service.engine.functions import FunctionLimits  # noqa: E402
from service.engine.graph import requests  # noqa: E402
from service.engine.graph.descent import descend_program  # noqa: E402
from service.engine.graph.expression import compile_expression  # noqa: E402
from service.engine.graph.nary import build_op  # noqa: E402
from service.engine.graph.program import Node, Program  # noqa: E402
from service.engine.xcorr import cross_correlate  # noqa: E402

LIMITS = FunctionLimits(max_tensor_elements=10**8, max_dense_elements=10**8, max_nnz=10**8)


def _program(source: str, shapes: dict[str, tuple[int, ...]]) -> Program:
    # The API's builder without pydantic: these expressions only use parameterless operations.
    graph, _ = compile_expression(source, frozenset(shapes))
    nodes = [
        Node(n["id"], build_op(n["op"], len(n["args"]), {}, lambda cls, p: cls(**p)),
             tuple(n["args"]))
        for n in graph["nodes"]
    ]  # fmt: skip
    return Program(shapes, nodes, graph["output"])


def _windows(x: np.ndarray, taps: tuple[int, int]) -> np.ndarray:
    # (C, H, W) -> (h_out, w_out, C, kh, kw): every window a kernel meets.
    view = sliding_window_view(x, taps, axis=(1, 2))  # (C, h_out, w_out, kh, kw)
    return np.ascontiguousarray(np.transpose(view, (1, 2, 0, 3, 4)))


CLOCKS: dict[str, Callable[[], float]] = {"wall": time.perf_counter, "cpu": time.process_time}
clock = CLOCKS["wall"]


def _median(rows: dict[str, Callable[[], object]], repeat: int) -> dict[str, float]:
    for run in rows.values():
        run()  # warm-up
    times: dict[str, list[float]] = {name: [] for name in rows}
    for _ in range(repeat):
        for name, run in rows.items():
            start = clock()
            run()
            times[name].append(clock() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def kernel_gradient(repeat: int) -> None:
    rng = np.random.default_rng(9)
    x, k = rng.standard_normal((3, 224, 224)), rng.standard_normal((3, 3, 3))
    y = rng.standard_normal((222, 222))
    program = _program("sum(square(xcorr2d(x, k) - y))", {"x": x.shape, "k": k.shape, "y": y.shape})
    inputs = {"x": x, "k": k, "y": y}

    def gradient() -> np.ndarray:
        found = requests.product(program, inputs, np.ones(()), ["k"], direction="vjp",
                                 limits=LIMITS)  # fmt: skip
        assert found.cotangents is not None
        return found.cotangents["k"]

    windows = _windows(x, (3, 3))
    expected = 2 * np.tensordot(cross_correlate(x, k) - y, windows, axes=([0, 1], [0, 1]))
    error = np.linalg.norm(gradient() - expected) / np.linalg.norm(expected)
    assert error < 1e-12, error
    times = _median({"forward": lambda: cross_correlate(x, k), "gradient": gradient}, repeat)
    print("kernel gradient, x (3,224,224), k (3,3,3): median ms")
    print(f"| forward xcorr2d | {times['forward'] * 1e3:.2f} | 1.00x |")
    print(f"| gradient wrt k (forward + pullback) | {times['gradient'] * 1e3:.2f} | "
          f"{times['gradient'] / times['forward']:.2f}x |")  # fmt: skip


def kernel_recovery(repeat: int, steps: int) -> None:
    rng = np.random.default_rng(3)
    x, k_true = rng.standard_normal((3, 32, 32)), rng.standard_normal((3, 3, 3))
    y = cross_correlate(x, k_true)
    rate = 0.05
    shapes = {"x": x.shape, "k": k_true.shape, "y": y.shape}
    program = _program("mse(xcorr2d(x, k), y)", shapes)
    inputs = {"x": x, "k": np.zeros_like(k_true), "y": y}
    params = DescentParams(learning_rate=rate, max_steps=steps, record_every=steps)
    limits = DescentLimits(max_steps=10**6, max_trajectory_elements=10**6,
                           max_tensor_elements=10**8, max_nnz=10**8)  # fmt: skip

    def engine() -> np.ndarray:
        events, unpack = descend_program(program, inputs, ["k"], params, limits)
        return unpack(collect(events).summary.x_final)["k"]

    def by_hand() -> np.ndarray:
        windows = _windows(x, (3, 3))  # (h, w, C, 3, 3)
        scale = 2.0 / y.size
        k = np.zeros_like(k_true)
        for _ in range(steps):
            residual = np.tensordot(windows, k, axes=3) - y
            k = k - rate * scale * np.tensordot(residual, windows, axes=([0, 1], [0, 1]))
        return k

    a, b = engine(), by_hand()
    assert np.linalg.norm(a - b) / np.linalg.norm(b) < 1e-10
    relative = np.linalg.norm(a - k_true) / np.linalg.norm(k_true)
    times = _median({"engine": engine, "by hand": by_hand}, repeat)
    print(f"kernel recovery, {steps} steps, x (3,32,32), k (3,3,3): median ms "
          f"(relative error of k: {relative:.1e})")  # fmt: skip
    print(f"| hand-written NumPy | {times['by hand'] * 1e3:.1f} | 1.00x |")
    print(f"| engine (descend_program) | {times['engine'] * 1e3:.1f} | "
          f"{times['engine'] / times['by hand']:.2f}x |")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=9)
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--clock", choices=sorted(CLOCKS), default="wall")
    args = parser.parse_args()
    global clock
    clock = CLOCKS[args.clock]
    print(f"clock: {args.clock}")
    print("load average (1, 5, 15 min) at start: " + " ".join(f"{v:.2f}" for v in os.getloadavg()))
    kernel_gradient(args.repeat)
    kernel_recovery(args.repeat, args.steps)
    print("load average (1, 5, 15 min) at end: " + " ".join(f"{v:.2f}" for v in os.getloadavg()))


if __name__ == "__main__":
    main()
