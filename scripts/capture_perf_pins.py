"""Capture the answers that issue 12's faster paths must keep bit-identical (tests/fixtures).

Run on a commit whose answers are the reference (first run on main at 640fe78, before the
descent fast path, the JVP/VJP rules from stored outputs and the disjoint pools):

    .venv/bin/python scripts/capture_perf_pins.py > tests/fixtures/perf_pins.json

The requests cover what those changes touch: gradient-descent runs over prepared stencils with
every update rule and every stopping rule (divergence, overflow, domain exit, line search,
tolerances), a program descent, minimize's first-order methods, and JVPs, VJPs, values and
by-basis Jacobians of chains with tanh, sigmoid, exp and average pools (disjoint, untiled,
overlapping). ``tests/api/test_perf_pinned.py`` replays them and compares every float's shortest
repr, so one changed bit, or the sign of a zero, fails it.
"""

# isort: off
import service  # noqa: F401  (the service's BLAS kernels, as tests/fixtures pins: before NumPy)

# isort: on
import json
import sys
from typing import Any

import numpy as np
from fastapi.testclient import TestClient

from service.config import Settings
from service.main import create_app


def _data(array: np.ndarray) -> dict[str, Any]:
    return {"data": array.tolist()}


def _descent_requests(rng: np.random.Generator) -> list[tuple[str, dict[str, Any]]]:
    x0 = rng.standard_normal((2, 8, 8))
    kernel = rng.standard_normal((2, 3, 3))
    target = rng.standard_normal((6, 6))
    stencil = [
        {"op": "xcorr2d", "kernel": _data(kernel)},
        {"op": "add", "constant": _data(-target)},
        {"op": "squared_norm"},
    ]
    smooth = [
        {"op": "xcorr2d", "kernel": _data(rng.standard_normal((2, 2, 3, 3)))},
        {"op": "tanh"},
        {"op": "avg_pool2d", "size": 3, "stride": 1},
        {"op": "sigmoid"},
        {"op": "avg_pool2d", "size": 2},
        {"op": "exp"},
        {"op": "mean"},
    ]
    base = {"x0": _data(x0), "record_x": True}
    runs: list[dict[str, Any]] = [
        {**base, "function": stencil, "learning_rate": 1e-3, "max_steps": 60, "record_every": 7},
        {
            **base,
            "function": stencil,
            "learning_rate": 1e-3,
            "max_steps": 40,
            "momentum": 0.9,
            "record_every": 10,
        },
        {
            **base,
            "function": stencil,
            "learning_rate": 1e-3,
            "max_steps": 40,
            "momentum": 0.8,
            "nesterov": True,
            "record_every": 8,
        },
        {
            **base,
            "function": stencil,
            "learning_rate": 1.0,
            "max_steps": 30,
            "line_search": "backtracking",
            "record_every": 6,
        },
        {**base, "function": stencil, "learning_rate": 0.5, "max_steps": 100, "record_every": 2},
        {
            **base,
            "function": stencil,
            "learning_rate": 0.5,
            "max_steps": 2000,
            "tolerances": {"divergence_factor": 1e308},
            "record_every": 50,
        },
        {
            **base,
            "function": stencil,
            "learning_rate": 5e-3,
            "max_steps": 5000,
            "tolerances": {"grad_tol": 1e-3},
            "record_every": 100,
            "record_x": False,
        },
        {
            **base,
            "function": stencil,
            "learning_rate": 5e-3,
            "max_steps": 5000,
            "tolerances": {"f_tol": 1e-9},
            "record_every": 100,
            "record_x": False,
        },
        {
            **base,
            "function": stencil,
            "learning_rate": 5e-3,
            "max_steps": 5000,
            "tolerances": {"x_tol": 1e-8},
            "record_every": 100,
            "record_x": False,
        },
        {**base, "function": smooth, "learning_rate": 0.3, "max_steps": 25, "record_every": 8},
        {
            **base,
            "function": smooth,
            "learning_rate": 0.3,
            "max_steps": 25,
            "momentum": 0.5,
            "nesterov": True,
            "order": "C",
            "record_every": 12,
        },
        {
            "x0": _data(rng.uniform(0.5, 1.5, (4, 5))),
            "function": [{"op": "log"}, {"op": "sum"}],
            "learning_rate": 0.2,
            "max_steps": 50,
        },
        {
            "x0": _data(rng.uniform(0.5, 1.5, (4, 5))),
            "function": [{"op": "exp"}, {"op": "scale", "factor": -1.0}, {"op": "sum"}],
            "learning_rate": 3.0,
            "max_steps": 50,
            "tolerances": {"divergence_factor": 1e300},
        },
        {
            # x_1 overflows: "x has non-finite entries"
            "x0": _data(np.array([0.5, -0.25])),
            "function": [{"op": "scale", "factor": 1e300}, {"op": "sum"}],
            "learning_rate": 1e10,
            "max_steps": 5,
            "tolerances": {"divergence_factor": 1e308},
        },
        {
            # an intermediate overflows while f stays finite (tanh saturates): still diverged
            "x0": _data(np.array([1e-151, 2e-151])),
            "function": [
                {"op": "scale", "factor": 1e150},
                {"op": "square"},
                {"op": "tanh"},
                {"op": "scale", "factor": -1.0},
                {"op": "sum"},
            ],
            "learning_rate": 1.0,
            "max_steps": 5,
        },
    ]
    image = rng.standard_normal((3, 9, 9))
    program = {
        "inputs": {
            "x": _data(image),
            "k": _data(np.zeros((3, 3, 3))),
            "y": _data(rng.standard_normal((7, 7))),
        },
        "function": "mse(xcorr2d(x, k), y) + 0.1 * sum(tanh(k))",
        "variables": ["k"],
        "learning_rate": 0.05,
        "max_steps": 40,
        "record_every": 8,
        "record_x": True,
    }
    requests = [("/v1/gradient-descent", run) for run in runs]
    requests.append(("/v1/gradient-descent", program))
    for method, extra in (("gd", {"learning_rate": 1e-3}), ("adam", {"learning_rate": 0.05})):
        requests.append(
            (
                "/v1/minimize",
                {
                    "x0": _data(x0),
                    "function": stencil,
                    "method": method,
                    "max_steps": 30,
                    "record_every": 5,
                    **extra,
                },
            )
        )
    return requests


def _product_requests(rng: np.random.Generator) -> list[tuple[str, dict[str, Any]]]:
    chains: list[tuple[list[dict[str, Any]], tuple[int, ...]]] = [
        (
            [
                {"op": "xcorr2d", "kernel": _data(rng.standard_normal((4, 3, 3, 3)))},
                {"op": "tanh"},
                {"op": "avg_pool2d", "size": 2},
                {"op": "sum"},
            ],
            (3, 12, 13),
        ),
        (
            [
                {"op": "sigmoid"},
                {"op": "avg_pool2d", "size": [2, 3]},
                {"op": "exp"},
                {"op": "avg_pool2d", "size": [3, 1]},
                {"op": "tanh"},
            ],
            (2, 10, 11),
        ),
        ([{"op": "avg_pool2d", "size": 2, "stride": 1}, {"op": "tanh"}, {"op": "exp"}], (2, 5, 6)),
        ([{"op": "exp"}, {"op": "avg_pool2d", "size": [1, 9]}, {"op": "sigmoid"}], (2, 3, 19)),
        ([{"op": "tanh"}, {"op": "avg_pool2d", "size": 4, "stride": [4, 2]}], (1, 9, 10)),
    ]
    requests: list[tuple[str, dict[str, Any]]] = []
    for function, shape in chains:
        x = rng.standard_normal(shape)
        # Zeros of both signs in x and the tangent: an answer must keep the sign of every zero.
        x.flat[:3] = [0.0, -0.0, 0.0]
        tangent = rng.standard_normal(shape)
        tangent.flat[:4] = [-0.0, -0.0, -0.0, -0.0]
        base = {"x": _data(x), "function": function}
        requests.append(("/v1/evaluate", base))
        requests.append(("/v1/jvp", {**base, "tangent": _data(tangent)}))
        requests.append(("/v1/jvp", {**base, "tangent": _data(tangent), "check": True}))
        for strategy in ("reverse", "forward"):
            for order in ("F", "C"):
                requests.append(
                    (
                        "/v1/jacobian",
                        {**base, "strategy": strategy, "format": "dense", "order": order},
                    )
                )
    return requests


def main() -> None:
    client = TestClient(create_app(Settings()))
    rng = np.random.default_rng(1212)
    cases = []
    for path, body in _descent_requests(rng) + _product_requests(rng):
        response = client.post(path, json=body)
        assert response.status_code == 200, (path, response.text)
        cases.append({"path": path, "request": body, "response": response.text})
    # One VJP (twice: with and without the check) per chain, a cotangent of the value's shape.
    for case in [c for c in cases if c["path"] == "/v1/evaluate"]:
        value = np.asarray(json.loads(case["response"])["value"]["data"], dtype=float)
        cotangent = rng.standard_normal(value.shape)
        cotangent.flat[:1] = [-0.0]
        for check in (False, True):
            body = {**case["request"], "cotangent": _data(cotangent), "check": check}
            response = client.post("/v1/vjp", json=body)
            assert response.status_code == 200, response.text
            cases.append({"path": "/v1/vjp", "request": body, "response": response.text})
    json.dump(cases, sys.stdout)


if __name__ == "__main__":
    main()
