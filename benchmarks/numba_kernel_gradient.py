"""Prototype, not a dependency: what compiled loops would do to issue 9's kernel-gradient ratio.

Run (numba is in no extra of this project; use a scratch environment)::

    python -m venv /tmp/nb && /tmp/nb/bin/pip install numba numpy scipy
    /tmp/nb/bin/python benchmarks/numba_kernel_gradient.py [--repeat 201]

Issue 9 asks the gradient of ``sum(square(xcorr2d(x, k) - y))`` with respect to ``k``, x
(3, 224, 224), k (3, 3, 3), to cost at most 2x the forward cross-correlation. With NumPy the
gradient is the forward, a kernel VJP of the same multiply-add count (nine matrix-vector products
over shifted views of the image, each reading the whole image), and elementwise passes, so it
costs about 2x the forward even written by hand (README, "Programs"). A compiled loop could read
each image row once for all nine taps. This script measures, in one interleaved run, thread CPU
time, medians, each row timed on its second call in a row:

- the engine's NumPy forward (:func:`service.engine.xcorr.cross_correlate`, the baseline);
- the engine's NumPy forward, then one compiled loop computing the residual, the loss and the
  kernel VJP (per output row: the residual, then for every channel and tap a multiply-add into
  per-column partial sums, which vectorize without reordering a sum; the columns summed at the end);
- the same with a compiled forward as well (a multiply-add per tap, row by row), and that
  compiled forward alone.

Both compiled gradients are checked against a naive ``einsum`` over the image's windows to
1e-12 relative, and the compiled forward against the engine's to 1e-12, outside the timers.
"""

from __future__ import annotations

# isort: off
import _service_kernels  # noqa: F401  (the service's BLAS kernels: before NumPy loads OpenBLAS)

# isort: on
import argparse
import gc
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from service.engine.xcorr import cross_correlate  # noqa: E402

try:
    import numba
except ImportError:
    raise SystemExit(
        "this prototype needs numba, which the project does not depend on: see the docstring"
    ) from None


@numba.njit
def _forward(x: np.ndarray, k: np.ndarray, out: np.ndarray) -> None:
    # out[i, j] = sum_{c, a, b} k[c, a, b] x[c, i + a, j + b], row by row
    channels, taps_h, taps_w = k.shape
    rows, cols = out.shape
    out[:] = 0.0
    for i in range(rows):
        for c in range(channels):
            for a in range(taps_h):
                line = x[c, i + a]
                for b in range(taps_w):
                    weight = k[c, a, b]
                    for j in range(cols):
                        out[i, j] += weight * line[j + b]


@numba.njit
def _loss_and_kernel_vjp(
    x: np.ndarray, out: np.ndarray, y: np.ndarray, grad: np.ndarray, partial: np.ndarray
) -> float:
    # r = out - y; returns sum r^2 and sets grad[c, a, b] = 2 sum_{i, j} r[i, j] x[c, i + a, j + b]
    channels, taps_h, taps_w = grad.shape
    rows, cols = out.shape
    partial[:] = 0.0  # (C, kh, kw, cols): sums over i, per column j
    residual = np.empty(cols)
    loss = 0.0
    for i in range(rows):
        for j in range(cols):
            residual[j] = out[i, j] - y[i, j]
            loss += residual[j] * residual[j]
        for c in range(channels):
            for a in range(taps_h):
                line = x[c, i + a]
                for b in range(taps_w):
                    lane = partial[c, a, b]
                    for j in range(cols):
                        lane[j] += residual[j] * line[j + b]
    for c in range(channels):
        for a in range(taps_h):
            for b in range(taps_w):
                grad[c, a, b] = 2.0 * partial[c, a, b].sum()
    return loss


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=201)
    args = parser.parse_args()
    rng = np.random.default_rng(9)
    x, k = rng.standard_normal((3, 224, 224)), rng.standard_normal((3, 3, 3))
    y = rng.standard_normal((222, 222))
    out, grad = np.empty((222, 222)), np.empty((3, 3, 3))
    partial = np.empty((3, 3, 3, 222))
    windows = sliding_window_view(x, (3, 3), axis=(1, 2))  # (C, h_out, w_out, kh, kw)
    expected = 2 * np.einsum("ij,cijab->cab", cross_correlate(x, k) - y, windows)

    def numpy_then_compiled() -> float:
        return _loss_and_kernel_vjp(x, cross_correlate(x, k), y, grad, partial)

    def all_compiled() -> float:
        _forward(x, k, out)
        return _loss_and_kernel_vjp(x, out, y, grad, partial)

    for gradient in (numpy_then_compiled, all_compiled):
        gradient()
        error = np.linalg.norm(grad - expected) / np.linalg.norm(expected)
        assert error < 1e-12, error
    _forward(x, k, out)
    assert np.allclose(out, cross_correlate(x, k), rtol=1e-12, atol=1e-12)
    rows: dict[str, Callable[[], object]] = {
        "engine forward (NumPy)": lambda: cross_correlate(x, k),
        "engine forward + compiled loss and kernel VJP": numpy_then_compiled,
        "compiled forward": lambda: _forward(x, k, out),
        "compiled forward + compiled loss and kernel VJP": all_compiled,
    }
    times: dict[str, list[float]] = {name: [] for name in rows}
    gc.disable()  # a collection of this process must not land in a timed call
    for _ in range(args.repeat):
        for name, run in rows.items():
            run()
            start = time.thread_time()
            run()
            times[name].append(time.thread_time() - start)
    gc.enable()
    medians = {name: statistics.median(values) for name, values in times.items()}
    base = medians["engine forward (NumPy)"]
    print("load average: " + " ".join(f"{v:.2f}" for v in os.getloadavg()))
    print("| row | median ms (thread CPU) | x engine forward |")
    for name, value in medians.items():
        print(f"| {name} | {value * 1e3:.3f} | {value / base:.2f}x |")
    compiled = medians["compiled forward + compiled loss and kernel VJP"]
    print(f"compiled gradient / compiled forward: {compiled / medians['compiled forward']:.2f}x")


if __name__ == "__main__":
    main()
