"""Second derivatives and optimizers: HVP and Hessian costs against a gradient, L-BFGS overhead.

Run: ``.venv/bin/python benchmarks/second_order.py [--repeat 5] [--clock cpu] [--only ROWS]``
(any cwd). ``--clock wall`` (the default) times with ``time.perf_counter``; ``--clock cpu`` with
``time.process_time``, the CPU time of the whole process (the SciPy worker thread included), which
a loaded machine inflates far less. ``--only`` runs some tables: ``hvp``, ``programs``,
``rosenbrock``, ``hessian``, ``program-hessian``, ``lbfgs`` (comma-separated).

OpenBLAS runs on one thread, the service's own choice (``service/blas.py``, made on import
before NumPy loads): on the shared 2-core machines its threads made SciPy's L-BFGS-B 20x slower
under load, for SciPy and the service alike. Every table
is measured in one run, interleaved (each repetition runs every row once), medians of
``--repeat`` repetitions after a warm-up; the machine is shared, so the same-run ratios are what
the numbers mean.

* **HVP / gradient**: one exact Hessian-vector product (forward over reverse, value and gradient
  included) against one gradient as gradient descent computes it (``Objective.evaluate`` and
  ``.gradient``, prepared), on ``mse(xcorr2d(x; k), y)`` with respect to the image ``x``
  (3, 32, 32), ``k`` (3, 3, 3), and on ``sum(softplus(x) * c)`` with n = 10⁴.
* **Hessian COO / gradient**: the structural COO Hessian of ``sum(square(xcorr2d(x, [1, -1])))``,
  x (1, 1000, 1000) (n = 10⁶, neighbour differences along rows: 2,998,000 entries), against one
  gradient.
* **Program Hessian COO / gradient**: the structural COO Hessian of the Rosenbrock expression at
  n = 10⁶ (``service.engine.graph.curvature``, tridiagonal, 2,999,998 entries) against one gradient
  of gradient descent over programs (``ProgramObjective``).
* **Programs, HVP / gradient**, on Rosenbrock n = 10⁴ (the expression of the README) and on the
  kernel-recovery loss ``mse(xcorr2d(x, k), y)`` over ``k`` (3, 3, 3), ``x`` (3, 32, 32) fixed.
  Two gradients: one-off, as ``/v1/vjp`` computes it (``graph.requests.product``, direction
  ``vjp``: checks, trace and pullback from scratch), and prepared, as each step of gradient
  descent over programs computes it (``ProgramObjective``, its preparation excluded). A one-off
  HVP (``program_hvp``: evaluation, gradient and product from scratch) is compared with both; the
  product at an already evaluated point (``Linearization.products``, what Newton-CG's and
  trust-ncg's conjugate-gradient iterations ask for) with the prepared gradient. Like with like:
  one-off ÷ one-off, and repeated ÷ repeated.
* **Rosenbrock L-BFGS**: n = 1000 from ``x0 = (-1.2, 1, -1.2, 1, ...)``, ``POST /v1/minimize``
  with the expression (``grad_tol`` 1e-5, 2-norm) against
  ``scipy.optimize.minimize(rosen, jac=rosen_der, method="L-BFGS-B")`` (defaults), interleaved,
  the median of at most 3 repetitions each (thousands of iterations per run).
* **L-BFGS**: ``mean((tanh(x) - y)²)``, n = 1000, ``grad_tol`` 1e-9 (2-norm) against
  ``scipy.optimize.minimize(method="L-BFGS-B", jac=True)`` with the same function written in
  NumPy (``ftol`` 0, ``gtol`` 1e-12 so that the iteration counts match); ``POST /v1/minimize`` in
  process (``httpx.ASGITransport``), and the per-iteration overhead
  ``(t_service - t_scipy) / iterations``.
"""

from __future__ import annotations

# isort: off
import _service_kernels  # noqa: F401  (the service's BLAS kernels: before NumPy loads OpenBLAS)

# isort: on
import argparse
import asyncio
import json
import logging
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import scipy.optimize

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from service.api.programs import build_program  # noqa: E402
from service.config import Settings  # noqa: E402
from service.engine import hessian  # noqa: E402
from service.engine.chain import Chain  # noqa: E402
from service.engine.descent import Objective  # noqa: E402
from service.engine.functions import FunctionLimits  # noqa: E402
from service.engine.graph import curvature, requests  # noqa: E402
from service.engine.graph import hvp as graph_hvp  # noqa: E402
from service.engine.graph.descent import ProgramObjective  # noqa: E402
from service.engine.op import get_op  # noqa: E402
from service.main import create_app  # noqa: E402

LIMITS = FunctionLimits(max_tensor_elements=10**8, max_dense_elements=10**8, max_nnz=10**8)


CLOCKS: dict[str, Callable[[], float]] = {"wall": time.perf_counter, "cpu": time.process_time}
clock = CLOCKS["wall"]
TABLES = ("hvp", "programs", "rosenbrock", "hessian", "program-hessian", "lbfgs")


def interleaved(rows: dict[str, Callable[[], object]], repeat: int) -> dict[str, float]:
    """Return the median seconds of each row, the rows run in turn ``repeat`` times."""
    for run in rows.values():
        run()  # warm-up
    times: dict[str, list[float]] = {name: [] for name in rows}
    for _ in range(repeat):
        for name, run in rows.items():
            start = clock()
            run()
            times[name].append(clock() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def _gradient(chain: Chain) -> Callable[[np.ndarray], np.ndarray]:
    objective = Objective(chain, max_prepared_nnz=LIMITS.max_nnz)
    return lambda x: objective.gradient(objective.evaluate(x))


def op_list_cases() -> dict[str, tuple[Chain, np.ndarray]]:
    rng = np.random.default_rng(0)
    kernel, target = rng.normal(size=(3, 3, 3)), rng.normal(size=(30, 30))
    return {
        "mse(xcorr2d(x; k), y), x (3, 32, 32), k3": (
            Chain([get_op("xcorr2d")(kernel=kernel), get_op("mse")(target=target)], (3, 32, 32)),
            rng.normal(size=(3, 32, 32)),
        ),
        "sum(softplus(x) * c), n = 10^4": (
            Chain(
                [get_op("softplus")(), get_op("multiply")(constant=rng.normal(size=10**4)),
                 get_op("sum")()],
                (10**4,),
            ),
            rng.normal(size=10**4),
        ),
    }  # fmt: skip


def hvp_rows(repeat: int) -> list[dict[str, Any]]:
    rows = []
    for label, (chain, x) in op_list_cases().items():
        gradient = _gradient(chain)
        v = np.random.default_rng(1).normal(size=(1, *x.shape))
        times = interleaved(
            {
                "gradient": lambda g=gradient, x=x: g(x),
                "hvp": lambda c=chain, x=x, v=v: hessian.hvp(c, x, v),
            },
            repeat,
        )
        rows.append({"case": label, **times, "ratio": times["hvp"] / times["gradient"]})
    return rows


ROSEN = "sum(100 * (x[1:] - x[:-1] ** 2) ** 2 + (1 - x[:-1]) ** 2)"


def program_rows(repeat: int) -> list[dict[str, Any]]:
    rng = np.random.default_rng(4)
    shapes = {"x": (3, 32, 32), "k": (3, 3, 3), "y": (30, 30)}
    cases = {
        "Rosenbrock, n = 10^4": (ROSEN, {"x": rng.uniform(-2, 2, 10**4)}, ["x"]),
        "mse(xcorr2d(x, k), y) over k, x (3, 32, 32)": (
            "mse(xcorr2d(x, k), y)",
            {name: rng.normal(size=shape) for name, shape in shapes.items()},
            ["k"],
        ),
    }
    rows = []
    for label, (expression, inputs, wrt) in cases.items():
        program = build_program(expression, {n: v.shape for n, v in inputs.items()}, "F")
        objective = ProgramObjective(program, inputs, wrt, max_prepared_nnz=LIMITS.max_nnz)
        x = objective.packing.pack(inputs)
        vectors = {name: rng.normal(size=(1, *inputs[name].shape)) for name in wrt}
        point = graph_hvp.Linearization(program, inputs, wrt)
        times = interleaved(
            {
                "gradient": lambda o=objective, x=x: o.gradient(o.evaluate(x)),
                "one_off": lambda p=program, i=inputs, w=wrt: requests.product(
                    p, i, np.ones(()), w, direction="vjp", limits=LIMITS
                ),
                "hvp": lambda p=program, i=inputs, v=vectors: graph_hvp.program_hvp(p, i, v),
                "at_point": lambda a=point, v=vectors: a.products(v, 1),
            },
            repeat,
        )
        rows.append({"case": label, **times, "ratio": times["hvp"] / times["gradient"],
                     "one_off_ratio": times["hvp"] / times["one_off"],
                     "point_ratio": times["at_point"] / times["gradient"]})  # fmt: skip
    return rows


def rosenbrock_lbfgs_row(repeat: int, n: int = 1000) -> dict[str, Any]:
    x0 = np.tile([-1.2, 1.0], n // 2)
    found: dict[str, Any] = {}

    def direct() -> None:
        result = scipy.optimize.minimize(
            scipy.optimize.rosen, x0, jac=scipy.optimize.rosen_der, method="L-BFGS-B"
        )
        found["direct"] = result

    body = {
        "inputs": {"x": {"data": x0.tolist()}}, "function": ROSEN, "method": "lbfgs",
        "max_steps": 100_000, "tolerances": {"grad_tol": 1e-5}, "record_every": 100_000,
    }  # fmt: skip
    app = create_app(Settings(max_descent_steps=100_000))
    loop = asyncio.new_event_loop()

    async def post() -> None:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:
            response = await client.post("/v1/minimize", json=body, timeout=3600)
            found["document"] = response.raise_for_status().json()

    times = interleaved(
        {"scipy": direct, "service": lambda: loop.run_until_complete(post())}, repeat
    )
    loop.close()
    result, document = found["direct"], found["document"]
    error = float(np.abs(np.array(document["final"]["x"]["data"]) - 1).max())
    return {
        "scipy": times["scipy"], "scipy_iterations": int(result.nit), "scipy_f": float(result.fun),
        "service": times["service"], "service_iterations": document["steps"],
        "service_f": document["f_final"], "status": document["status"], "max_error": error,
        "evaluations": document["evaluations"],
        "ratio": times["service"] / times["scipy"],
        "overhead": (times["service"] - times["scipy"]) / max(1, document["steps"]),
    }  # fmt: skip


def hessian_row(repeat: int) -> dict[str, Any]:
    shape = (1, 1000, 1000)
    chain = Chain(
        [get_op("xcorr2d")(kernel=np.array([[[1.0, -1.0]]])), get_op("square")(), get_op("sum")()],
        shape,
    )
    x = np.random.default_rng(2).normal(size=shape)
    gradient = _gradient(chain)
    found: dict[str, int] = {}

    def coo() -> None:
        matrix = hessian.hessian(chain, x, order="F", fmt="coo", limits=LIMITS).matrix
        found["nnz"] = int(matrix.nnz)

    times = interleaved({"gradient": lambda: gradient(x), "hessian": coo}, repeat)
    return {**times, **found, "ratio": times["hessian"] / times["gradient"]}


def program_hessian_row(repeat: int, n: int = 10**6) -> dict[str, Any]:
    x = np.random.default_rng(5).uniform(-2, 2, n)
    program = build_program(ROSEN, {"x": (n,)}, "F")
    objective = ProgramObjective(program, {"x": x}, ["x"], max_prepared_nnz=LIMITS.max_nnz)
    found: dict[str, int] = {}

    def coo() -> None:
        matrix = curvature.program_hessian(
            program, {"x": x}, None, order="F", fmt="coo", limits=LIMITS
        ).matrix
        found["nnz"] = int(matrix.nnz)  # type: ignore[union-attr]

    times = interleaved(
        {"gradient": lambda: objective.gradient(objective.evaluate(x)), "hessian": coo}, repeat
    )
    return {**times, **found, "ratio": times["hessian"] / times["gradient"]}


def lbfgs_row(repeat: int, n: int = 1000) -> dict[str, Any]:
    rng = np.random.default_rng(3)
    y = rng.uniform(-0.9, 0.9, n)
    x0 = rng.normal(size=n)

    def f_and_grad(x: np.ndarray) -> tuple[float, np.ndarray]:
        t = np.tanh(x)
        r = t - y
        return float(np.mean(r * r)), 2.0 * r * (1.0 - t * t) / n

    iterations: dict[str, int] = {}

    def direct() -> None:
        result = scipy.optimize.minimize(
            f_and_grad, x0, jac=True, method="L-BFGS-B",
            options={"ftol": 0.0, "gtol": 1e-12, "maxiter": 10_000},
        )  # fmt: skip
        iterations["scipy"] = int(result.nit)

    body = {
        "function": [{"op": "tanh"}, {"op": "mse", "target": {"data": y.tolist()}}],
        "x0": {"data": x0.tolist()}, "method": "lbfgs", "max_steps": 10_000,
        "tolerances": {"grad_tol": 1e-9}, "record_every": 10_000,
    }  # fmt: skip
    payload = json.dumps(body).encode()
    app = create_app(Settings(max_descent_steps=10_000))
    loop = asyncio.new_event_loop()

    async def post() -> None:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:
            response = await client.post(
                "/v1/minimize", content=payload, headers={"content-type": "application/json"}
            )
            iterations["service"] = int(response.raise_for_status().json()["steps"])

    times = interleaved({"scipy": direct, "service": lambda: loop.run_until_complete(post())},
                        repeat)  # fmt: skip
    loop.close()
    overhead = (times["service"] - times["scipy"]) / max(1, iterations["service"])
    return {**times, **{f"iterations_{k}": v for k, v in iterations.items()},
            "ratio": times["service"] / times["scipy"], "overhead": overhead}  # fmt: skip


def _hessian_table(title: str, label: str, row: dict[str, Any]) -> None:
    print(f"\n| {title}, n = 10^6 (nnz {row['nnz']}) | gradient (ms) | Hessian (ms) | ratio |")
    print("|---|---:|---:|---:|")
    print(f"| {label} | {row['gradient'] * 1e3:.1f} | {row['hessian'] * 1e3:.1f} | "
          f"{row['ratio']:.1f} |")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--clock", choices=sorted(CLOCKS), default="wall")
    parser.add_argument("--only", default=",".join(TABLES))
    args = parser.parse_args()
    global clock
    clock = CLOCKS[args.clock]
    tables = set(args.only.split(","))
    logging.disable(logging.CRITICAL)
    print(f"clock: {args.clock}; load average (1, 5, 15 min) at start: "
          + " ".join(f"{v:.2f}" for v in os.getloadavg()))  # fmt: skip
    if "hvp" in tables:
        print("| function | gradient (ms) | HVP (ms) | HVP / gradient |")
        print("|---|---:|---:|---:|")
        for row in hvp_rows(args.repeat):
            print(f"| {row['case']} | {row['gradient'] * 1e3:.3f} | {row['hvp'] * 1e3:.3f} | "
                  f"{row['ratio']:.2f} |")  # fmt: skip
    if "programs" in tables:
        print("\n| program | gradient, prepared (ms) | gradient, one-off (ms) | HVP, one-off (ms) "
              "| ÷ one-off gradient | ÷ prepared gradient | HVP at an evaluated point (ms) "
              "| ÷ prepared gradient |")  # fmt: skip
        print("|---|---:|---:|---:|---:|---:|---:|---:|")
        for row in program_rows(args.repeat):
            print(f"| {row['case']} | {row['gradient'] * 1e3:.3f} | {row['one_off'] * 1e3:.3f} | "
                  f"{row['hvp'] * 1e3:.3f} | {row['one_off_ratio']:.2f} | {row['ratio']:.2f} | "
                  f"{row['at_point'] * 1e3:.3f} | {row['point_ratio']:.2f} |")  # fmt: skip
    if "rosenbrock" in tables:
        rosen = rosenbrock_lbfgs_row(min(args.repeat, 3))
        print("\n| Rosenbrock n = 1000, L-BFGS-B | time (s) | iterations | f |")
        print("|---|---:|---:|---:|")
        print(f"| scipy.optimize.minimize(rosen, jac=rosen_der) | {rosen['scipy']:.2f} | "
              f"{rosen['scipy_iterations']} | {rosen['scipy_f']:.3g} |")  # fmt: skip
        print(f"| POST /v1/minimize, expression, in process | {rosen['service']:.2f} | "
              f"{rosen['service_iterations']} | {rosen['service_f']:.3g} |")  # fmt: skip
        print(f"\nservice / scipy {rosen['ratio']:.2f}; overhead {rosen['overhead'] * 1e3:.3f} ms "
              f"per iteration; {rosen['status']}, max |x - 1| = {rosen['max_error']:.2g}, "
              f"evaluations {rosen['evaluations']}")  # fmt: skip
    if "hessian" in tables:
        _hessian_table("Hessian COO", "sum(square(xcorr2d(x, [1, -1]))), x (1, 1000, 1000)",
                       hessian_row(args.repeat))  # fmt: skip
    if "program-hessian" in tables:
        _hessian_table("Program Hessian COO", "Rosenbrock expression",
                       program_hessian_row(args.repeat))  # fmt: skip
    if "lbfgs" in tables:
        row = lbfgs_row(args.repeat)
        print("\n| L-BFGS-B, mean((tanh(x) - y)²), n = 1000 | time (ms) | iterations |")
        print("|---|---:|---:|")
        print(f"| scipy.optimize.minimize, direct | {row['scipy'] * 1e3:.1f} | "
              f"{row['iterations_scipy']} |")  # fmt: skip
        print(f"| POST /v1/minimize, in process | {row['service'] * 1e3:.1f} | "
              f"{row['iterations_service']} |")  # fmt: skip
        print(f"\nservice / scipy {row['ratio']:.2f}; overhead {row['overhead'] * 1e3:.3f} ms per "
              "iteration")  # fmt: skip
    print("load average (1, 5, 15 min) at end: " + " ".join(f"{v:.2f}" for v in os.getloadavg()))


if __name__ == "__main__":
    main()
