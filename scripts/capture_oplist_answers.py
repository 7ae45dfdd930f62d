"""Capture the op-list answers that programs must keep bit-identical (tests/fixtures).

Run on a commit whose op-list answers are the reference (it was first run on main at 9a2b376,
before programs existed):

    .venv/bin/python scripts/capture_oplist_answers.py > tests/fixtures/oplist_answers.json

Every request below goes through the public API; the file stores each request with its exact
response body. ``tests/api/test_oplist_pinned.py`` replays them and compares the bodies exactly,
so a change to any op-list answer (one bit of one float) fails it. Regenerate only when an issue
explicitly allows a documented change of the last bits.
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


def _requests() -> list[tuple[str, dict[str, Any]]]:
    rng = np.random.default_rng(909)
    x = rng.uniform(0.5, 1.5, (2, 5, 6))
    kernel = rng.standard_normal((3, 2, 2, 3))
    chains: list[tuple[list[dict[str, Any]], Any]] = [
        (
            [
                {"op": "xcorr2d", "kernel": {"data": kernel.tolist()}, "padding": "same"},
                {"op": "softplus"},
                {"op": "max_pool2d", "size": [2, 2]},
                {"op": "square"},
            ],
            x,
        ),
        (
            [
                {"op": "sin"},
                {"op": "multiply", "constant": {"data": rng.standard_normal(6).tolist()}},
                {"op": "reshape", "shape": [10, 6]},
                {"op": "log_softmax", "axis": 0},
                {"op": "logsumexp", "axes": [1]},
            ],
            x,
        ),
        (
            [
                {"op": "linear", "weight": {"data": rng.standard_normal((4, 60)).tolist()}},
                {"op": "relu"},
                {"op": "add", "constant": {"data": [0.5, -1.0, 2.0, 0.25]}},
                {"op": "power", "p": 3.0},
                {"op": "mse", "target": {"data": [1.0, 2.0, 3.0, 4.0]}},
            ],
            x,
        ),
        (
            [
                {"op": "transpose", "axes": [2, 0, 1]},
                {"op": "sqrt"},
                {"op": "softmax", "axis": 1},
                {"op": "scale", "factor": -2.5},
                {"op": "cos"},
                {"op": "mean", "axes": [0, 2]},
                {"op": "abs"},
                {"op": "squared_norm"},
            ],
            x,
        ),
        (
            [{"op": "log"}, {"op": "sum", "axes": None}],
            x,
        ),
    ]
    requests: list[tuple[str, dict[str, Any]]] = []
    for function, point in chains:
        base = {"x": {"data": point.tolist()}, "function": function}
        requests.append(("/v1/evaluate", base))
        for order in ("F", "C"):
            for strategy in ("chain", "reverse", "forward", "auto"):
                for fmt in ("coo", "dense"):
                    requests.append(
                        (
                            "/v1/jacobian",
                            {**base, "order": order, "strategy": strategy, "format": fmt},
                        )
                    )
            requests.append(
                ("/v1/jacobian", {**base, "order": order, "layout": "out_in", "check": True})
            )
        requests.append(
            ("/v1/jvp", {**base, "tangent": {"data": rng.standard_normal(point.shape).tolist()}})
        )
    for function, point in chains:
        if function[-1]["op"] in ("square", "logsumexp", "log"):
            continue
        requests.append(
            (
                "/v1/gradient-descent",
                {
                    "x0": {"data": point.tolist()},
                    "function": function,
                    "learning_rate": 0.01,
                    "max_steps": 20,
                    "record_every": 5,
                },
            )
        )
    return requests


def main() -> None:
    client = TestClient(create_app(Settings()))
    cases = []
    for path, body in _requests():
        response = client.post(path, json=body)
        assert response.status_code == 200, (path, response.text)
        cases.append({"path": path, "request": body, "response": response.text})
    # One VJP per chain needs the output shape, known from the evaluate answers.
    for case in [c for c in cases if c["path"] == "/v1/evaluate"]:
        value = np.asarray(json.loads(case["response"])["value"]["data"], dtype=float)
        cotangent = np.random.default_rng(7).standard_normal(value.shape)
        body = {**case["request"], "cotangent": {"data": cotangent.tolist()}}
        response = client.post("/v1/vjp", json=body)
        assert response.status_code == 200, response.text
        cases.append({"path": "/v1/vjp", "request": body, "response": response.text})
    json.dump(cases, sys.stdout)


if __name__ == "__main__":
    main()
