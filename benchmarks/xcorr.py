"""Benchmark the cross-correlation engine against per-channel SciPy and a plain NumPy copy.

Run: ``.venv/bin/python benchmarks/xcorr.py [--repeat N] [--methods]``. Prints Markdown tables:

1. forward, float64: median ms of ``cross_correlate`` (method ``auto``) next to per-channel
   ``scipy.signal.correlate`` (summed over channels, strided by slicing) and, when importable,
   ``torch.nn.functional.conv2d`` in float64; ``--methods`` adds one column per forward method;
2. the canonical COO Jacobian w.r.t. ``x`` (order F): ns per non-zero and GB/s of triplet bytes
   (24 B per non-zero: int64 row, int64 col, float64 value) next to ``numpy`` copies of the same
   triplet bytes, timed interleaved in the same run.

Timings on a shared 2-core machine are noisy; medians of interleaved repeats are reported.
"""

# isort: off
import _service_kernels  # noqa: F401  (the service's BLAS kernels: before NumPy loads OpenBLAS)

# isort: on
import argparse
import statistics
import time
from collections.abc import Callable

import numpy as np
import scipy.signal

from service.engine import xcorr

try:  # optional third-party baseline; never installed by this project
    import torch
except ImportError:  # pragma: no cover - depends on the environment
    torch = None

FORWARD_CASES = [
    # (label, x shape, kernel shape, stride)
    ("(3,32,32) k3", (3, 32, 32), (3, 3, 3), 1),
    ("(3,224,224) k3 s1", (3, 224, 224), (3, 3, 3), 1),
    ("(3,224,224) k3 s2", (3, 224, 224), (3, 3, 3), 2),
    ("(16,128,128) k5", (16, 128, 128), (16, 5, 5), 1),
    ("K=16 (16,128,128) k3", (16, 128, 128), (16, 16, 3, 3), 1),
    ("N=32 (3,64,64) K=8 k3", (32, 3, 64, 64), (8, 3, 3, 3), 1),
]
COO_CASES = [
    ("(3,224,224) k3", (3, 224, 224), (3, 3, 3)),
    ("(16,128,128) k5", (16, 128, 128), (16, 5, 5)),
]
TRIPLET_BYTES = 24


def median_ms(fn: Callable[[], object], repeat: int, budget_s: float = 2.0) -> float:
    """Median wall time of ``fn`` in ms over ``repeat`` calls (fewer if one call is slow)."""
    fn()
    start = time.perf_counter()
    fn()
    once = time.perf_counter() - start
    count = max(3, min(repeat, int(budget_s / max(once, 1e-9))))
    samples = []
    for _ in range(count):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return 1e3 * statistics.median(samples)


def interleaved_ms(fns: dict[str, Callable[[], object]], repeat: int) -> dict[str, float]:
    """Median ms of several functions, called in turn so they share the machine's state."""
    for fn in fns.values():
        fn()
    samples: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeat):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            samples[name].append(time.perf_counter() - start)
    return {name: 1e3 * statistics.median(values) for name, values in samples.items()}


def scipy_per_channel(x: np.ndarray, k: np.ndarray, stride: int) -> np.ndarray:
    """Per-channel ``scipy.signal.correlate`` summed over channels, strided by slicing."""
    x4 = x if x.ndim == 4 else x[np.newaxis]
    k4 = k if k.ndim == 4 else k[np.newaxis]
    images = []
    for image in x4:
        maps = []
        for kernel in k4:
            total = scipy.signal.correlate(image[0], kernel[0], mode="valid")
            for c in range(1, image.shape[0]):
                total = total + scipy.signal.correlate(image[c], kernel[c], mode="valid")
            maps.append(total[::stride, ::stride])
        images.append(maps)
    return np.asarray(images)


def forward_table(repeat: int, all_methods: bool) -> str:
    rng = np.random.default_rng(0)
    methods = [m for m in xcorr.FORWARD_METHODS if m not in ("auto", "jacobian")]
    header = ["case", "auto picks", "ours ms", "scipy per-channel ms", "speedup"]
    if torch is not None:
        header.append("torch f64 ms")
    if all_methods:
        header += [f"{m} ms" for m in methods]
    rows = []
    for label, x_shape, k_shape, stride in FORWARD_CASES:
        x = rng.standard_normal(x_shape)
        k = rng.standard_normal(k_shape)
        geometry = xcorr.XCorrGeometry(stride=(stride, stride))
        ours = xcorr.cross_correlate(x, k, geometry)
        reference = scipy_per_channel(x, k, stride)
        np.testing.assert_allclose(
            np.reshape(ours, reference.shape), reference, rtol=1e-10, atol=1e-10
        )
        ours_ms = median_ms(lambda x=x, k=k, g=geometry: xcorr.cross_correlate(x, k, g), repeat)
        scipy_ms = median_ms(lambda x=x, k=k, s=stride: scipy_per_channel(x, k, s), repeat)
        row = [
            label,
            xcorr.choose_method(x_shape, k_shape, geometry),
            f"{ours_ms:.3f}",
            f"{scipy_ms:.3f}",
            f"{scipy_ms / ours_ms:.1f}x",
        ]
        if torch is not None:
            tx = torch.from_numpy(x if x.ndim == 4 else x[np.newaxis])
            tk = torch.from_numpy(k if k.ndim == 4 else k[np.newaxis])
            torch_ms = median_ms(
                lambda tx=tx, tk=tk, s=stride: torch.nn.functional.conv2d(tx, tk, stride=s),
                repeat,
            )
            row.append(f"{torch_ms:.3f}")
        if all_methods:
            for method in methods:
                method_ms = median_ms(
                    lambda x=x, k=k, g=geometry, m=method: xcorr.cross_correlate(x, k, g, m),
                    repeat,
                )
                row.append(f"{method_ms:.3f}")
        rows.append(row)
    return markdown(header, rows)


def coo_table(repeat: int) -> str:
    rng = np.random.default_rng(1)
    header = [
        "case",
        "layout",
        "nnz",
        "build ms",
        "ns/nnz",
        "build GB/s",
        "numpy copy GB/s",
        "ratio",
    ]
    rows = []
    for label, x_shape, k_shape in COO_CASES:
        # no zero taps, so the structural count is the matrix's nnz
        k = rng.uniform(0.5, 1.5, k_shape)
        nnz = xcorr.nnz_x(x_shape, k_shape)
        row_ix = np.arange(nnz, dtype=np.int64)
        col_ix = np.arange(nnz, dtype=np.int64)
        values = np.ones(nnz)
        for layout in ("in_out", "out_in"):
            times = interleaved_ms(
                {
                    "build": lambda k=k, s=x_shape, lay=layout: xcorr.jacobian_x(k, s, layout=lay),
                    "copy": lambda r=row_ix, c=col_ix, v=values: (r.copy(), c.copy(), v.copy()),
                },
                repeat,
            )
            matrix = xcorr.jacobian_x(k, x_shape, layout=layout)
            if matrix.nnz != nnz or not matrix.has_canonical_format:
                raise RuntimeError(f"unexpected COO for {label}: nnz {matrix.nnz} != {nnz}")
            gigabytes = TRIPLET_BYTES * nnz / 1e9
            build_gbs = gigabytes / (times["build"] / 1e3)
            copy_gbs = gigabytes / (times["copy"] / 1e3)
            rows.append(
                [
                    label,
                    layout,
                    f"{nnz:,}",
                    f"{times['build']:.2f}",
                    f"{1e6 * times['build'] / nnz:.2f}",
                    f"{build_gbs:.2f}",
                    f"{copy_gbs:.2f}",
                    f"{build_gbs / copy_gbs:.2f}",
                ]
            )
    return markdown(header, rows)


def markdown(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=25, help="timed calls per measurement")
    parser.add_argument("--methods", action="store_true", help="time every forward method")
    args = parser.parse_args()
    print("### Forward, float64 (median ms)\n")
    if torch is None:
        print("torch is not installed: no torch column.\n")
    print(forward_table(args.repeat, args.methods))
    print("\n### COO Jacobian d(x*k)/dx, order F (24 B per non-zero)\n")
    print(coo_table(args.repeat))


if __name__ == "__main__":
    main()
