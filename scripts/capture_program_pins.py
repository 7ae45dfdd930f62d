"""Capture the program-run answers that the prepared program evaluator must keep bit-identical.

Run on a commit whose answers are the reference (first run on main at 7aa9681, before the
prepared plan of :class:`service.engine.graph.descent.ProgramObjective`):

    .venv/bin/python scripts/capture_program_pins.py > tests/fixtures/program_pins.json

The requests cover what that plan touches: gradient descent and every minimize method over
programs (one and several variables, prepared stencils dense and sparse, slices, broadcasting,
reductions, ``where``/``maximum``), the stopping rules, a variable the output ignores, and the
failures whose messages name a node: an overflow hidden by a saturating operation, an overflow
reaching ``f``, a domain exit during the run and at the start (a problem answer), and the
program Hessians (COO and dense). ``tests/api/test_program_pinned.py`` replays them and compares
every float's shortest repr and the status code.
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

ROSEN = "sum(100 * (x[1:] - x[:-1] ** 2) ** 2 + (1 - x[:-1]) ** 2)"


def _data(array: np.ndarray) -> dict[str, Any]:
    return {"data": array.tolist()}


def _requests(rng: np.random.Generator) -> list[tuple[str, dict[str, Any]]]:
    rosen = {"inputs": {"x": _data(np.tile([-1.2, 1.0], 10))}, "function": ROSEN}
    x, k = rng.standard_normal((2, 8, 8)), rng.standard_normal((2, 3, 3))
    y = rng.standard_normal((6, 6))
    kernel = {"inputs": {"x": _data(x), "k": _data(np.zeros((2, 3, 3))), "y": _data(y)},
              "function": "mse(xcorr2d(x, k), y)", "variables": ["k"]}  # fmt: skip
    image = {"inputs": {"x": _data(np.zeros((2, 8, 8))), "k": _data(k), "y": _data(y)},
             "function": "mse(xcorr2d(x, k), y) + 0.01 * sum(x ** 2)",
             "variables": ["x"]}  # fmt: skip
    a, b = rng.standard_normal((4, 3)), rng.standard_normal((3, 5))
    c = rng.standard_normal((4, 5))
    two = {"inputs": {"a": _data(a), "b": _data(b), "c": _data(c)},
           "function": "sum(square(a @ b - c)) + 0.1 * sum(a * a)",
           "variables": ["a", "b"]}  # fmt: skip
    mixed_x = rng.uniform(0.5, 1.5, (3, 4))
    mixed = {
        "inputs": {"x": _data(mixed_x), "w": _data(rng.standard_normal(4)),
                   "z": _data(rng.standard_normal((3, 4)))},
        "function": "mean(softplus(x * w) + maximum(x, z) ** 2) - sum(tanh(x[:, 1:] - x[:, :-1])) "
                    "+ sum(where(x, 0.5 * z, mask=[[1, 0, 0, 1]])) + sum(exp(-x) / (1 + x))",
        "variables": ["x", "z"],
    }  # fmt: skip
    ignored = {"inputs": {"x": _data(rng.standard_normal(5)), "z": _data(rng.standard_normal(3))},
               "function": "sum(log(1 + x ** 2))", "variables": ["x", "z"]}  # fmt: skip
    runs: list[tuple[str, dict[str, Any]]] = [
        ("/v1/gradient-descent", {**kernel, "learning_rate": 0.05, "max_steps": 60,
                                  "record_every": 7, "record_x": True}),
        ("/v1/gradient-descent", {**kernel, "learning_rate": 0.05, "max_steps": 40,
                                  "momentum": 0.9, "nesterov": True, "record_every": 10}),
        ("/v1/gradient-descent", {**image, "learning_rate": 0.5, "max_steps": 50,
                                  "momentum": 0.5, "record_every": 5, "record_x": True}),
        ("/v1/gradient-descent", {**rosen, "learning_rate": 1.0, "max_steps": 40,
                                  "line_search": "backtracking", "record_every": 3}),
        ("/v1/gradient-descent", {**two, "learning_rate": 0.02, "max_steps": 2000,
                                  "tolerances": {"f_tol": 2e-4}, "record_every": 100}),
        ("/v1/gradient-descent", {**two, "learning_rate": 0.02, "max_steps": 2000,
                                  "tolerances": {"x_tol": 1e-3}, "record_every": 100}),
        ("/v1/gradient-descent", {**mixed, "learning_rate": 0.1, "max_steps": 30,
                                  "record_every": 4, "record_x": True}),
        ("/v1/gradient-descent", {**ignored, "learning_rate": 0.1, "max_steps": 20,
                                  "tolerances": {"grad_tol": 1e-3}, "record_x": True}),
        ("/v1/gradient-descent", {**rosen, "learning_rate": 0.1, "max_steps": 20,
                                  "tolerances": {"divergence_factor": 1e300}}),
        # an intermediate overflows while f stays finite (tanh saturates)
        ("/v1/gradient-descent", {"inputs": {"x": _data(np.array([1e-151, 2e-151])),
                                             "c": _data(np.array([1.0, 2.0]))},
                                  "function": "sum(tanh(square(x * 1e150) * 1e300)) + sum(x * c)",
                                  "variables": ["x"], "learning_rate": 1e155, "max_steps": 5}),
        # the overflow reaches f through propagating operations only
        ("/v1/gradient-descent", {"inputs": {"x": _data(np.array([1.0, 2.0])),
                                             "c": _data(np.array([3.0, 1.0]))},
                                  "function": "sum(exp(x * c) * -1e300) + sum(c)",
                                  "variables": ["x"], "learning_rate": 1e-300, "max_steps": 5,
                                  "tolerances": {"divergence_factor": 1e308}}),
        # a domain exit during the run, and at the start (a problem answer)
        ("/v1/gradient-descent", {"inputs": {"x": _data(np.array([2.0, 3.0])),
                                             "c": _data(np.array([1.0, 1.0]))},
                                  "function": "sum(log(x - c)) + sum(x * x)",
                                  "variables": ["x"], "learning_rate": 0.4, "max_steps": 20}),
        ("/v1/gradient-descent", {"inputs": {"x": _data(np.array([2.0, 0.5])),
                                             "c": _data(np.array([1.0, 1.0]))},
                                  "function": "sum(log(x - c)) + sum(x * x)",
                                  "variables": ["x"], "learning_rate": 0.4, "max_steps": 20}),
        ("/v1/minimize", {**rosen, "method": "lbfgs", "max_steps": 500,
                          "tolerances": {"grad_tol": 1e-6}, "record_every": 25, "record_x": True}),
        ("/v1/minimize", {**rosen, "method": "lbfgs", "max_steps": 200, "memory": 4,
                          "bounds": {"x": {"lower": -0.5, "upper": 0.8}}, "record_every": 10}),
        ("/v1/minimize", {**rosen, "method": "newton-cg", "max_steps": 60, "record_every": 5}),
        ("/v1/minimize", {**rosen, "method": "trust-ncg", "max_steps": 60,
                          "tolerances": {"grad_tol": 1e-8}, "record_every": 5}),
        ("/v1/minimize", {**rosen, "method": "gd", "learning_rate": 1e-3, "max_steps": 300,
                          "momentum": 0.9, "record_every": 20}),
        ("/v1/minimize", {**two, "method": "adam", "learning_rate": 0.05, "max_steps": 200,
                          "record_every": 20, "record_x": True}),
        ("/v1/minimize", {**two, "method": "lbfgs", "max_steps": 200,
                          "tolerances": {"grad_tol": 1e-10}, "record_every": 5}),
        ("/v1/minimize", {**image, "method": "lbfgs", "max_steps": 100,
                          "tolerances": {"grad_tol": 1e-9}, "record_every": 10}),
        ("/v1/minimize", {**kernel, "method": "trust-ncg", "max_steps": 30, "record_every": 3}),
        ("/v1/minimize", {**mixed, "method": "lbfgs", "max_steps": 100, "record_every": 10}),
        ("/v1/minimize", {**mixed, "method": "newton-cg", "max_steps": 20, "record_every": 2}),
        ("/v1/minimize", {**ignored, "method": "adam", "learning_rate": 0.1, "max_steps": 50,
                          "record_every": 10}),
    ]  # fmt: skip
    point = {"x": _data(rng.uniform(-2, 2, 12))}
    for fmt in ("coo", "dense"):
        for order in ("F", "C"):
            runs.append(("/v1/hessian", {"inputs": point, "function": ROSEN, "format": fmt,
                                         "order": order}))  # fmt: skip
    runs.append(("/v1/hessian", {**{n: v for n, v in mixed.items() if n != "variables"},
                                 "wrt": ["x", "z"], "format": "coo"}))  # fmt: skip
    runs.append(("/v1/hessian", {**{n: v for n, v in two.items() if n != "variables"},
                                 "wrt": ["a", "b"], "format": "coo", "order": "C"}))  # fmt: skip
    runs.append(("/v1/hessian", {**{n: v for n, v in kernel.items() if n != "variables"},
                                 "wrt": ["x", "k"], "format": "coo"}))  # fmt: skip
    return runs


def main() -> None:
    client = TestClient(create_app(Settings()))
    cases = []
    for path, body in _requests(np.random.default_rng(1414)):
        response = client.post(path, json=body)
        assert response.status_code < 500, (path, response.text)
        cases.append({"path": path, "request": body, "status_code": response.status_code,
                      "response": response.text})  # fmt: skip
    json.dump(cases, sys.stdout)


if __name__ == "__main__":
    main()
