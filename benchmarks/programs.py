"""Programs: the kernel gradient against the forward correlation, and kernel recovery by descent.

Run: ``.venv/bin/python benchmarks/programs.py [--repeat 9] [--steps 1000] [--clock cpu]
[--anchors]`` (any cwd).

Both comparisons are measured in the same run, interleaved (every repetition times every row
once, on its second call in a row), medians of ``--repeat`` repetitions after one warm-up.
``--clock wall`` (the default) times with ``time.perf_counter``; ``--clock cpu`` with
``time.process_time``, the CPU time of the whole process (BLAS threads included), which a loaded
machine inflates far less than wall time:

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

``--anchors`` adds JAX and PyTorch (the ``bench`` extra; the run stops if either is missing) to
the kernel-gradient comparison, on one thread and float64, in the same interleaved rounds: their
forward ``conv`` and their gradient of the same loss with respect to ``k`` (``jax.jit(jax.grad)``,
compiled before timing; PyTorch's autograd). It shows what the ratio target asks of a framework
whose forward is compiled, and how the engine's gradient compares in absolute time.

Correctness, outside the timers: the engine's gradient equals the hand-written one to 1e-12
relative, and both descents end at the same kernel to 1e-10 relative.
"""

from __future__ import annotations

# isort: off
import _service_kernels  # noqa: F401  (the service's BLAS kernels: before NumPy loads OpenBLAS)

# isort: on
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
            # Each row is timed on its second call in a row: every row finds its inputs in cache,
            # whichever row (a large PyTorch one, say) ran before it.
            run()
            start = clock()
            run()
            times[name].append(clock() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def _anchor_rows(
    x: np.ndarray, k: np.ndarray, y: np.ndarray, expected: np.ndarray
) -> dict[str, Callable[[], object]]:
    """JAX's and PyTorch's forward and gradient of the same loss, checked against ``expected``."""
    os.environ.setdefault(
        "XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
    )
    try:
        import jax
        import jax.numpy as jnp
        import torch
    except ImportError as missing:
        raise SystemExit(
            f"--anchors needs jax and torch ({missing}): `.venv/bin/pip install -e '.[bench]'`"
        ) from None
    jax.config.update("jax_enable_x64", True)
    torch.set_num_threads(1)

    def conv(image: jax.Array, kernel: jax.Array) -> jax.Array:
        # (C, H, W), (C, kh, kw) -> (h_out, w_out): one output channel, as xcorr2d(x, k)
        return jax.lax.conv_general_dilated(
            image[None], kernel[None], (1, 1), "VALID", precision=jax.lax.Precision.HIGHEST
        )[0, 0]

    def loss(kernel: jax.Array, image: jax.Array, target: jax.Array) -> jax.Array:
        return jnp.sum(jnp.square(conv(image, kernel) - target))

    forward = jax.jit(conv)
    grad = jax.jit(jax.grad(loss))
    xj, kj, yj = jnp.asarray(x), jnp.asarray(k), jnp.asarray(y)
    xt, kt, yt = torch.from_numpy(x), torch.from_numpy(k), torch.from_numpy(y)

    def torch_forward() -> object:
        with torch.no_grad():
            return torch.nn.functional.conv2d(xt[None], kt[None])

    def torch_gradient() -> np.ndarray:
        kernel = kt.clone().requires_grad_(True)
        residual = torch.nn.functional.conv2d(xt[None], kernel[None])[0, 0] - yt
        torch.sum(torch.square(residual)).backward()
        assert kernel.grad is not None
        return kernel.grad.numpy()

    for name, found in (("jax", np.asarray(grad(kj, xj, yj))), ("torch", torch_gradient())):
        error = np.linalg.norm(found - expected) / np.linalg.norm(expected)
        assert error < 1e-12, (name, error)
    return {
        "jax forward": lambda: forward(xj, kj).block_until_ready(),
        "jax gradient": lambda: grad(kj, xj, yj).block_until_ready(),
        "torch forward": torch_forward,
        "torch gradient": torch_gradient,
    }


def kernel_gradient(repeat: int, anchors: bool) -> None:
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
    rows = {"forward": lambda: cross_correlate(x, k), "gradient": gradient}
    if anchors:
        rows.update(_anchor_rows(x, k, y, expected))
    times = _median(rows, repeat)
    print("kernel gradient, x (3,224,224), k (3,3,3): median ms")
    print(f"| forward xcorr2d | {times['forward'] * 1e3:.2f} | 1.00x |")
    print(f"| gradient wrt k (forward + pullback) | {times['gradient'] * 1e3:.2f} | "
          f"{times['gradient'] / times['forward']:.2f}x |")  # fmt: skip
    if anchors:
        print("the same loss in JAX and PyTorch (one thread, float64): median ms, gradient / its "
              "own forward, gradient / the engine's gradient")  # fmt: skip
        for lib in ("jax", "torch"):
            fwd, grad = times[f"{lib} forward"], times[f"{lib} gradient"]
            print(f"| {lib} | forward {fwd * 1e3:.2f} | gradient {grad * 1e3:.2f} | "
                  f"{grad / fwd:.2f}x | {grad / times['gradient']:.2f}x |")  # fmt: skip


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
    parser.add_argument("--anchors", action="store_true", help="add JAX and PyTorch (bench extra)")
    args = parser.parse_args()
    global clock
    clock = CLOCKS[args.clock]
    print(f"clock: {args.clock}")
    print("load average (1, 5, 15 min) at start: " + " ".join(f"{v:.2f}" for v in os.getloadavg()))
    kernel_gradient(args.repeat, args.anchors)
    kernel_recovery(args.repeat, args.steps)
    print("load average (1, 5, 15 min) at end: " + " ".join(f"{v:.2f}" for v in os.getloadavg()))


if __name__ == "__main__":
    main()
