"""The engine side by side with PyTorch and JAX: every row of issue 12 as a same-run ratio.

Run: ``.venv/bin/pip install -e '.[bench]'`` (torch 2.13.0 CPU from the machine's wheel, jax),
then ``.venv/bin/python benchmarks/compare.py [--repeat 15] [--only forward,coo,...]``.

torch and jax are required: a missing anchor stops the run with an error instead of dropping its
column. CI never installs them and never runs this script.

Every row is timed interleaved: in each repetition every variant of the row runs once, in turn
(each repetition starting one variant later),
so a change in the machine's load hits all of them alike; the figure is the median wall time
(``--clock cpu`` times process CPU instead, see ``CLOCK``). The HTTP rows count requests per wall
second, and the servers' CPU time per request. The ratio is
ours ÷ best anchor (below 1: the engine is faster). All arithmetic is float64; torch and jax
run on ``--anchor-threads`` threads (default 1, as the engine's BLAS calls). Before each
section the 1-minute load average is printed; on a loaded machine compare ratios, not times.

Sections (``--only``; ``--rows REGEX`` keeps only the forward cases and COO layouts whose label
matches, e.g. ``--only forward --rows '32,32|stride'``):

* ``forward``: ``cross_correlate`` against ``torch.nn.functional.conv2d`` and a jitted
  ``jax.lax.conv_general_dilated`` (precision HIGHEST).
* ``coo``: the canonical COO Jacobian of (3,224,224) k3 (order F) against a NumPy copy of its 24
  bytes per non-zero (int64 row, int64 col, float64 value) into fresh arrays.
* ``dense``: the dense Jacobian of xcorr2d(3,16,16) k3 -> tanh (``Chain.jacobian``) against
  ``jax.jit(jax.jacrev(f))`` (compile excluded) and ``torch.func.jacrev``.
* ``products``: JVP and VJP of xcorr2d(8 kernels) -> tanh -> avg_pool2d 2 -> sum on (3,128,128),
  the chain's own ``jvp``/``vjp`` and the request entry point ``functions.product`` (value +
  product), against ``jax.jit`` of ``jax.jvp``/``jax.vjp`` and ``torch.func.jvp``/``vjp``.
* ``descent``: 1000 steps of ``||xcorr2d(x, k) - y||²`` on (3,32,32) k3, the engine's
  ``descend`` against a hand-written NumPy loop over the same CSR matrix and its transpose, a
  jitted ``lax.scan`` (compile excluded) and the same with its compilation included.
* ``http``: ``POST /v1/flat`` requests per second against a trivial FastAPI echo app, both under
  ``uvicorn --workers 1 --no-access-log`` on 127.0.0.1, loaded by ``wrk`` (Debian package) with
  the same connections and duration, alternating apps round by round.
* ``e2e``: ``POST /v1/cross-correlation`` (3,224,224) k3 with ``jacobian: "coo"``, base64, over
  real HTTP (uvicorn; the client decodes the JSON and the base64 values) against the engine
  call alone (``correlation.correlate``) and, with ``--baseline PATH`` (a checkout of the
  previous release, e.g. ``git worktree add /tmp/prev <commit>``), the same request served by it.

Correctness is checked outside the timers before a row is printed: anchors agree with the engine
to 1e-10 relative, the descent loops end at the same ``x``, the COO entries match.
"""

from __future__ import annotations

# isort: off
import _service_kernels  # noqa: F401  (the service's BLAS kernels: before NumPy loads OpenBLAS)

# isort: on
import argparse
import contextlib
import gc
import json
import os
import platform
import random
import re
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.transport_flat import flat_vs_echo, uvicorn_server  # noqa: E402
from service.engine import functions, layout, xcorr  # noqa: E402
from service.engine.chain import Chain  # noqa: E402
from service.engine.correlation import CorrelationLimits, correlate  # noqa: E402
from service.engine.descent import DescentLimits, DescentParams, collect, descend  # noqa: E402
from service.engine.op import get_op  # noqa: E402

# Anchor threads, set before jax starts its runtime: 1 by default, like the engine, whose BLAS
# calls stay on one thread; on this shared 2-core machine the anchors' two-thread kernels wait
# for the busy core (torch (3,32,32) 0.1 -> 5.8 ms under load). `--anchor-threads 2` measures
# them with both cores, as on a quiet machine.
ANCHOR_THREADS = 1
for _index, _arg in enumerate(sys.argv):
    if _arg == "--anchor-threads" and _index + 1 < len(sys.argv):
        ANCHOR_THREADS = int(sys.argv[_index + 1])
os.environ.setdefault(
    "XLA_FLAGS",
    f"--xla_cpu_multi_thread_eigen={'true' if ANCHOR_THREADS > 1 else 'false'} "
    f"intra_op_parallelism_threads={ANCHOR_THREADS}",
)

try:
    import jax
    import jax.numpy as jnp
    import torch
    import torch.func
except ImportError as missing:  # pragma: no cover - depends on the environment
    raise SystemExit(
        f"benchmarks/compare.py needs torch and jax as anchors ({missing}); install them with "
        "`.venv/bin/pip install -e '.[bench]'` (torch==2.13.0 is the local CPU wheel)"
    ) from None

jax.config.update("jax_enable_x64", True)
torch.set_num_threads(ANCHOR_THREADS)
HIGHEST = jax.lax.Precision.HIGHEST
FLAT_BODY = b'{"index": [1, 2, 3], "dims": [2, 3, 4], "order": "F"}'


# ------------------------------------------------------------------------------------------------
# timing and reporting
# ------------------------------------------------------------------------------------------------


# The clock of every timing, set by --clock: "wall" (default), or "cpu", the process's CPU time
# over all its threads. CPU time is nearly independent of the other engineers' load, but it also
# counts torch's and XLA's idle pool threads spinning while the engine runs (the engine's
# (3,32,32) forward read 0.26 ms instead of 0.03 next to them): use it only for rough checks.
CLOCK = {"cpu": time.process_time, "wall": time.perf_counter}
clock = CLOCK["wall"]
# A checkout of the previous release (--baseline): the e2e section serves the same request from it.
BASELINE: Path | None = None
# --rows: only the forward cases and COO layouts whose label matches this regular expression.
ROWS = re.compile("")
# Seed of the order of the variants in each round of interleaved().
SEED = 12


def interleaved(fns: dict[str, Callable[[], object]], repeat: int) -> dict[str, float]:
    """Median ms of each function over ``repeat`` rounds; each round calls all in turn."""
    for fn in fns.values():
        fn()
    samples: dict[str, list[float]] = {name: [] for name in fns}
    names = list(fns)
    order = random.Random(SEED)
    for _ in range(repeat):
        gc.collect()
        # A fresh order every round: whatever runs first after the collection, or right after
        # torch's and XLA's calls (whose pool threads spin on after returning), is not always
        # the same variant. (A rotation kept the neighbours fixed: the engine's descent always
        # ran right after jax's compile, 6 ms of its 48 ms wall time.)
        order.shuffle(names)
        for name in names:
            start = clock()
            fns[name]()
            samples[name].append(clock() - start)
    return {name: 1e3 * statistics.median(values) for name, values in samples.items()}


def load_average() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} {five:.2f} {fifteen:.2f}"


@dataclass
class Row:
    """One line of the table: our figure, the best anchor's, and the target on their ratio."""

    work: str
    ours: float
    anchors: dict[str, float]
    target: float | None
    unit: str = "ms"
    higher_is_better: bool = False

    def ratio(self) -> float:
        """Ours ÷ best anchor (a rate: higher is better, and the target is a minimum)."""
        if self.higher_is_better:
            return self.ours / max(self.anchors.values())
        return self.ours / min(self.anchors.values())

    def line(self) -> str:
        pick = max if self.higher_is_better else min
        name = pick(self.anchors, key=lambda key: self.anchors[key])
        ratio = self.ratio()
        if self.target is None:
            verdict, target = "", "-"
        elif self.higher_is_better:
            verdict = "met" if ratio >= self.target else "**missed**"
            target = f"≥ {self.target:g}"
        else:
            verdict = "met" if ratio <= self.target else "**missed**"
            target = f"≤ {self.target:g}"
        anchors = ", ".join(f"{key} {value:.4g}" for key, value in self.anchors.items())
        return (
            f"| {self.work} | {self.ours:.4g} {self.unit} | {name}: {anchors} | {ratio:.2f} "
            f"| {target} {verdict} |"
        )


def table(title: str, rows: list[Row]) -> None:
    print(f"\n### {title} (load average {load_average()})\n")
    print("| work | ours | anchors | ours ÷ best | target |")
    print("|---|---:|---|---:|---|")
    for row in rows:
        print(row.line())
    sys.stdout.flush()


def close(a: np.ndarray, b: np.ndarray, what: str, rtol: float = 1e-10) -> None:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    scale = max(float(np.max(np.abs(b))), 1e-300)
    error = float(np.max(np.abs(a - b))) / scale if a.size else 0.0
    if a.shape != b.shape or not error <= rtol:
        raise SystemExit(f"{what}: results differ ({a.shape} vs {b.shape}, rel. error {error:.3g})")


def ready(value: Any) -> Any:
    """Wait for a jax result (dispatch is asynchronous)."""
    return jax.block_until_ready(value)


# ------------------------------------------------------------------------------------------------
# forward
# ------------------------------------------------------------------------------------------------

FORWARD_CASES = [
    # (label, x shape, kernel shape, stride, target)
    ("xcorr (3,32,32) k3", (3, 32, 32), (3, 3, 3), 1, 1.2),
    ("xcorr (3,224,224) k3", (3, 224, 224), (3, 3, 3), 1, None),
    ("xcorr (3,224,224) k3 stride 2", (3, 224, 224), (3, 3, 3), 2, 1.2),
    ("xcorr (16,128,128) k5", (16, 128, 128), (16, 5, 5), 1, None),
    ("xcorr K=16 on (16,128,128) k3", (16, 128, 128), (16, 16, 3, 3), 1, None),
    ("xcorr N=32 (3,64,64) K=8 k3", (32, 3, 64, 64), (8, 3, 3, 3), 1, None),
]


def jax_conv(stride: int) -> Callable[[Any, Any], Any]:
    def conv(x4: Any, k4: Any) -> Any:
        return jax.lax.conv_general_dilated(x4, k4, (stride, stride), "VALID", precision=HIGHEST)

    return jax.jit(conv)


def forward_rows(repeat: int) -> list[Row]:
    rng = np.random.default_rng(0)
    rows = []
    for label, x_shape, k_shape, stride, target in FORWARD_CASES:
        if not ROWS.search(label):
            continue
        x, k = rng.standard_normal(x_shape), rng.standard_normal(k_shape)
        x4 = x if x.ndim == 4 else x[np.newaxis]
        k4 = k if k.ndim == 4 else k[np.newaxis]
        geometry = xcorr.XCorrGeometry(stride=(stride, stride))
        tx, tk = torch.from_numpy(x4), torch.from_numpy(k4)
        jx, jk = jnp.asarray(x4), jnp.asarray(k4)
        conv = jax_conv(stride)
        ours = xcorr.cross_correlate(x, k, geometry)
        close(
            np.reshape(ours, (x4.shape[0], k4.shape[0], *ours.shape[-2:])),
            torch.nn.functional.conv2d(tx, tk, stride=stride).numpy(),
            label,
        )
        close(
            np.reshape(ours, (x4.shape[0], k4.shape[0], *ours.shape[-2:])),
            np.asarray(conv(jx, jk)),
            label,
        )
        times = interleaved(
            {
                "ours": lambda x=x, k=k, g=geometry: xcorr.cross_correlate(x, k, g),
                "torch": lambda s=stride, tx=tx, tk=tk: torch.nn.functional.conv2d(
                    tx, tk, stride=s
                ),
                "jax": lambda c=conv, jx=jx, jk=jk: ready(c(jx, jk)),
            },
            repeat,
        )
        rows.append(Row(label, times.pop("ours"), times, target))
    return rows


# ------------------------------------------------------------------------------------------------
# COO builder
# ------------------------------------------------------------------------------------------------


def coo_rows(repeat: int) -> list[Row]:
    rng = np.random.default_rng(1)
    x_shape, k_shape = (3, 224, 224), (3, 3, 3)
    k = rng.uniform(0.5, 1.5, k_shape)  # no zero taps: nnz is the structural count
    nnz = xcorr.nnz_x(x_shape, k_shape)
    row_ix, col_ix, values = np.arange(nnz), np.arange(nnz), np.ones(nnz)
    reference = xcorr.jacobian_x(k, x_shape, layout="out_in")
    rows = []
    for lay in ("in_out", "out_in"):
        if not ROWS.search(f"COO (3,224,224) k3 {lay}"):
            continue
        built = xcorr.jacobian_x(k, x_shape, layout=lay)
        expected = reference if lay == "out_in" else reference.T
        difference = sp.csr_array(built) - sp.csr_array(expected)
        if built.nnz != nnz or difference.count_nonzero():
            raise SystemExit(f"COO {lay}: wrong matrix")
        times = interleaved(
            {
                "ours": lambda lay=lay: xcorr.jacobian_x(k, x_shape, layout=lay),
                "copy": lambda: (row_ix.copy(), col_ix.copy(), values.copy()),
            },
            repeat,
        )
        target = 1.5 if lay == "in_out" else None
        rows.append(
            Row(
                f"COO (3,224,224) k3 {lay}, vs a copy of its bytes",
                times["ours"],
                {"NumPy copy": times["copy"]},
                target,
            )
        )
    return rows


# ------------------------------------------------------------------------------------------------
# dense Jacobian and JVP/VJP
# ------------------------------------------------------------------------------------------------


def dense_rows(repeat: int) -> list[Row]:
    rng = np.random.default_rng(2)
    x, k = rng.standard_normal((3, 16, 16)), rng.standard_normal((3, 3, 3))
    chain = Chain([get_op("xcorr2d")(kernel=k), get_op("tanh")()], x.shape)
    jk = jnp.asarray(k[np.newaxis])
    tk = torch.from_numpy(k[np.newaxis])

    def f_jax(v: Any) -> Any:
        y = jax.lax.conv_general_dilated(v[None], jk, (1, 1), "VALID", precision=HIGHEST)
        return jnp.tanh(y[0, 0])

    def f_torch(v: Any) -> Any:
        return torch.tanh(torch.nn.functional.conv2d(v[None], tk)[0, 0])

    jacrev = jax.jit(jax.jacrev(f_jax))
    jx, tx = jnp.asarray(x), torch.from_numpy(x)
    big = {"max_dense_elements": 10**8, "max_nnz": 10**8}
    ours = chain.jacobian(x, fmt="dense", layout="out_in", order="C", **big).matrix
    ours = np.reshape(ours, (14, 14, 3, 16, 16))
    close(ours, np.asarray(jacrev(jx)), "dense Jacobian (jax)")
    close(ours, torch.func.jacrev(f_torch)(tx).numpy(), "dense Jacobian (torch)")
    times = interleaved(
        {
            "ours": lambda: chain.jacobian(x, fmt="dense", **big),
            "jax jit(jacrev)": lambda: ready(jacrev(jx)),
            "torch.func.jacrev": lambda: torch.func.jacrev(f_torch)(tx),
        },
        repeat,
    )
    return [Row("dense J of xcorr2d(3,16,16) k3 -> tanh (768x196)", times.pop("ours"), times, 1.5)]


def product_rows(repeat: int) -> list[Row]:
    rng = np.random.default_rng(3)
    x, k = rng.standard_normal((3, 128, 128)), rng.standard_normal((8, 3, 3, 3))
    ops = [
        get_op("xcorr2d")(kernel=k),
        get_op("tanh")(),
        get_op("avg_pool2d")(size=2),
        get_op("sum")(),
    ]
    chain = Chain(ops, x.shape)
    v, u = rng.standard_normal(x.shape), np.asarray(rng.standard_normal())
    limits = functions.FunctionLimits(10**8, 10**8, 10**8)
    jk, tk = jnp.asarray(k), torch.from_numpy(k)

    def f_jax(z: Any) -> Any:
        y = jnp.tanh(jax.lax.conv_general_dilated(z[None], jk, (1, 1), "VALID", precision=HIGHEST))
        pooled = jax.lax.reduce_window(y, 0.0, jax.lax.add, (1, 1, 2, 2), (1, 1, 2, 2), "VALID")
        return jnp.sum(pooled / 4.0)

    def f_torch(z: Any) -> Any:
        y = torch.tanh(torch.nn.functional.conv2d(z[None], tk))
        return torch.nn.functional.avg_pool2d(y, 2).sum()

    jvp_jax = jax.jit(lambda z, t: jax.jvp(f_jax, (z,), (t,)))
    vjp_jax = jax.jit(lambda z, c: jax.vjp(f_jax, z)[1](c)[0])
    jx, jv, ju = jnp.asarray(x), jnp.asarray(v), jnp.asarray(u)
    tx, tv, tu = torch.from_numpy(x), torch.from_numpy(v), torch.from_numpy(u)

    def vjp_torch() -> Any:
        return torch.func.vjp(f_torch, tx)[1](tu)[0]

    jvp_ours = chain.jvp(x, v[np.newaxis])[0]
    vjp_ours = chain.vjp(x, u[np.newaxis])[0]
    close(jvp_ours, np.asarray(jvp_jax(jx, jv)[1]), "JVP (jax)")
    close(jvp_ours, torch.func.jvp(f_torch, (tx,), (tv,))[1].numpy(), "JVP (torch)")
    close(vjp_ours, np.asarray(vjp_jax(jx, ju)), "VJP (jax)")
    close(vjp_ours, vjp_torch().numpy(), "VJP (torch)")
    times = interleaved(
        {
            "jvp ours": lambda: chain.jvp(x, v[np.newaxis]),
            "jvp entry": lambda: functions.product(
                chain, x, v, direction="jvp", check=False, limits=limits
            ),
            "jvp jax jit": lambda: ready(jvp_jax(jx, jv)),
            "jvp torch.func": lambda: torch.func.jvp(f_torch, (tx,), (tv,)),
            "vjp ours": lambda: chain.vjp(x, u[np.newaxis]),
            "vjp entry": lambda: functions.product(
                chain, x, u, direction="vjp", check=False, limits=limits
            ),
            "vjp jax jit": lambda: ready(vjp_jax(jx, ju)),
            "vjp torch.func": vjp_torch,
        },
        repeat,
    )
    label = "xcorr2d(8 kernels) -> tanh -> avg_pool2d -> sum, (3,128,128)"
    rows = []
    for kind in ("jvp", "vjp"):
        anchors = {"jax jit": times[f"{kind} jax jit"], "torch.func": times[f"{kind} torch.func"]}
        rows.append(Row(f"{kind.upper()} {label}", times[f"{kind} ours"], anchors, 1.3))
        rows.append(
            Row(
                f"{kind.upper()} entry point ÷ engine",
                times[f"{kind} entry"],
                {"engine": times[f"{kind} ours"]},
                1.1,
            )
        )
    return rows


# ------------------------------------------------------------------------------------------------
# descent
# ------------------------------------------------------------------------------------------------


def descent_rows(repeat: int, steps: int = 1000) -> list[Row]:
    rng = np.random.default_rng(4)
    x0, k = rng.standard_normal((3, 32, 32)), rng.standard_normal((3, 3, 3))
    y = rng.standard_normal((30, 30))
    matrix = xcorr.jacobian_x(k, x0.shape, order="C")
    # gamma = 1 / L, L = 2 sigma_max^2: a stable iteration
    sigma = sp.linalg.svds(sp.csr_array(matrix), k=1, return_singular_vectors=False)[0]
    gamma = 1.0 / (2.0 * sigma**2)
    chain = Chain(
        [get_op("xcorr2d")(kernel=k), get_op("add")(constant=-y), get_op("squared_norm")()],
        x0.shape,
    )
    limits = DescentLimits(
        max_steps=10**6, max_trajectory_elements=10**8, max_tensor_elements=10**8, max_nnz=10**8
    )
    params = DescentParams(learning_rate=gamma, max_steps=steps, record_every=steps)

    def engine() -> np.ndarray:
        result = collect(descend(chain, x0, params, limits))
        assert result.summary.status == "max_steps", result.summary.status
        return np.asarray(result.summary.x_final)

    def numpy_loop() -> np.ndarray:
        # the same preparation as the engine: the CSR matrix in C order and its transpose
        jacobian = xcorr.jacobian_x(k, x0.shape, order="C")
        pull, push = sp.csr_array(jacobian), sp.csr_array(jacobian.T)
        x, target = layout.vec(x0, "C").copy(), layout.vec(y, "C")
        for _ in range(steps):
            r = push @ x - target
            x = x - gamma * (2.0 * (pull @ r))
        return layout.ten(x, x0.shape, "C")

    jk, jy = jnp.asarray(k[np.newaxis]), jnp.asarray(y)

    def loss(z: Any) -> Any:
        out = jax.lax.conv_general_dilated(z[None], jk, (1, 1), "VALID", precision=HIGHEST)
        return jnp.sum((out[0, 0] - jy) ** 2)

    def scan_run(z: Any) -> Any:
        def step(carry: Any, _: Any) -> tuple[Any, None]:
            return carry - gamma * jax.grad(loss)(carry), None

        return jax.lax.scan(step, z, None, length=steps)[0]

    compiled = jax.jit(scan_run)
    jx0 = jnp.asarray(x0)

    def jax_with_compile() -> Any:
        # a new function object each call: jit traces and compiles it again
        return ready(jax.jit(lambda z: scan_run(z))(jx0))

    reference = numpy_loop()
    close(engine(), reference, "descent (engine)", 1e-9)
    close(np.asarray(compiled(jx0)), reference, "descent (jax)", 1e-9)
    times = interleaved(
        {
            "ours": engine,
            "NumPy CSR loop": numpy_loop,
            "jax scan": lambda: ready(compiled(jx0)),
            "jax scan + compile": jax_with_compile,
        },
        repeat,
    )
    label = f"gradient descent, {steps} steps, (3,32,32) k3"
    return [
        Row(
            f"{label}, vs NumPy CSR loop",
            times["ours"],
            {"NumPy CSR loop": times["NumPy CSR loop"]},
            1.2,
        ),
        Row(f"{label}, vs jitted lax.scan", times["ours"], {"jax": times["jax scan"]}, 2.5),
        Row(
            f"{label}, vs jax with compile",
            times["ours"],
            {"jax + compile": times["jax scan + compile"]},
            1.0,
        ),
    ]


# ------------------------------------------------------------------------------------------------
# HTTP
# ------------------------------------------------------------------------------------------------


def http_rows(rounds: int, seconds: int = 3, connections: int = 8) -> list[Row]:
    rates, cpu = flat_vs_echo(rounds, seconds, connections)
    return [
        Row(
            f"/v1/flat req/s vs FastAPI echo (wrk -c{connections}, {rounds}x{seconds}s)",
            statistics.median(rates["flat"]),
            {"echo": statistics.median(rates["echo"])},
            0.5,
            unit="req/s",
            higher_is_better=True,
        ),
        Row(
            "/v1/flat server CPU µs per request vs FastAPI echo",
            statistics.median(cpu["flat"]),
            {"echo": statistics.median(cpu["echo"])},
            None,
            unit="µs",
        ),
    ]


def e2e_rows(repeat: int) -> list[Row]:
    import httpx
    import pybase64

    rng = np.random.default_rng(5)
    x, k = rng.standard_normal((3, 224, 224)), rng.standard_normal((3, 3, 3))

    def b64(a: np.ndarray) -> dict[str, Any]:
        return {
            "encoding": "base64",
            "dtype": "float64",
            "shape": list(a.shape),
            "data": pybase64.b64encode(a.astype("<f8").tobytes()).decode(),
        }

    body = json.dumps(
        {"x": b64(x), "kernel": b64(k), "jacobian": "coo", "encoding": "base64"}
    ).encode()
    limits = CorrelationLimits(
        max_output_elements=16_000_000, max_nnz=50_000_000, max_dense_elements=25_000_000
    )

    def engine() -> Any:
        return correlate(
            x,
            k,
            xcorr.DEFAULT_GEOMETRY,
            jacobian="coo",
            wrt=["x"],
            order="F",
            layout="in_out",
            method="direct",
            limits=limits,
        )

    env = {**os.environ, "SERVICE_LOG_LEVEL": "warning"}
    trees = {"e2e": ROOT, **({"e2e previous": BASELINE} if BASELINE else {})}
    with contextlib.ExitStack() as stack:
        clients = {
            name: stack.enter_context(
                httpx.Client(
                    base_url=stack.enter_context(
                        uvicorn_server("service.main:create_app", tree, env)
                    ).base,
                    timeout=120,
                )
            )
            for name, tree in trees.items()
        }

        def request(client: httpx.Client) -> np.ndarray:
            response = client.post(
                "/v1/cross-correlation", content=body, headers={"Content-Type": "application/json"}
            )
            response.raise_for_status()
            coo = response.json()["jacobian_x"]
            return np.frombuffer(pybase64.b64decode(coo["data"]), "<f8")

        reference = engine().jacobian_x.matrix.data
        calls: dict[str, Callable[[], object]] = {"engine": engine}
        for name, client in clients.items():
            close(request(client), reference, f"{name} COO values")
            calls[name] = lambda client=client: request(client)
        times = interleaved(calls, repeat)
    label = "/v1/cross-correlation (3,224,224) k3 COO base64, end to end"
    rows = [Row(f"{label} ÷ engine alone", times["e2e"], {"engine": times["engine"]}, None)]
    if BASELINE:
        rows.append(Row(f"{label} ÷ the same request to {BASELINE.name}", times["e2e"],
                        {"previous": times["e2e previous"]}, 0.5))  # fmt: skip
    return rows


SECTIONS: dict[str, Callable[[int], list[Row]]] = {
    "forward": forward_rows,
    "coo": coo_rows,
    "dense": dense_rows,
    "products": product_rows,
    "descent": descent_rows,
    "http": lambda repeat: http_rows(max(3, repeat // 3)),
    "e2e": e2e_rows,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=15, help="interleaved rounds per row")
    parser.add_argument("--only", default=",".join(SECTIONS), help="comma-separated sections")
    parser.add_argument("--anchor-threads", type=int, default=1, help="torch and jax threads")
    parser.add_argument("--clock", choices=sorted(CLOCK), default="wall", help="what is timed")
    parser.add_argument(
        "--baseline", type=Path, help="checkout of the previous release: e2e serves it too"
    )
    parser.add_argument(
        "--rows", default="", help="regular expression: only the forward/COO rows it matches"
    )
    args = parser.parse_args()
    global clock, BASELINE, ROWS
    clock = CLOCK[args.clock]
    ROWS = re.compile(args.rows)
    BASELINE = args.baseline.resolve() if args.baseline else None
    chosen = [name.strip() for name in args.only.split(",") if name.strip()]
    unknown = set(chosen) - set(SECTIONS)
    if unknown:
        raise SystemExit(f"unknown sections {sorted(unknown)}; choose from {list(SECTIONS)}")
    print(
        f"python {platform.python_version()}, numpy {np.__version__}, torch {torch.__version__} "
        f"({torch.get_num_threads()} threads), jax {jax.__version__}, {os.cpu_count()} cores, "
        f"load average {load_average()}, {args.clock} time (--clock)"
    )
    for name in chosen:
        table(name, SECTIONS[name](args.repeat))


if __name__ == "__main__":
    main()
