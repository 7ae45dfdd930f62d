"""Gradient descent on op lists that end in ``squared_norm`` or ``mse``, against the notes' loop.

The prepared objective hands a final loss's gradient straight back (no VJP of the seed 1.0).
Oracle: ``x <- x - γ ∇f(x)`` written here with each gradient derived by hand (seed notes), for
functions whose every stage is one product per element, so the trajectory is the same floats:
``x_final`` bit for bit, ``f`` at every recorded step exactly.
"""

import base64
from collections.abc import Callable

import httpx
import numpy as np
import pytest

from service.config import Settings
from service.main import create_app

pytestmark = pytest.mark.anyio
SHAPE = (2, 3, 4)
STEPS = 25


def b64(array: np.ndarray) -> dict[str, object]:
    data = base64.b64encode(np.ascontiguousarray(array, dtype="<f8").tobytes()).decode()
    return {"encoding": "base64", "shape": list(array.shape), "data": data}


RNG = np.random.default_rng(61)
TARGET, OFFSET = RNG.standard_normal(SHAPE), RNG.standard_normal(SHAPE)
N = TARGET.size


def mean_square(v: np.ndarray) -> float:
    return float(np.mean(np.square(v)))


def sum_square(v: np.ndarray) -> float:
    return float(np.sum(np.square(v)))


# (op list, f, grad f), each written from the notes: mse(y) = mean((y - t)^2), grad 2 (y - t) / N;
# squared_norm(y) = sum y^2, grad 2 y; scale a: J = a I; add c: J = I.
CASES: dict[str, tuple[list[dict], Callable, Callable]] = {
    "squared_norm": (
        [{"op": "squared_norm"}],
        sum_square,
        lambda x: 2.0 * x,
    ),
    "mse": (
        [{"op": "mse", "target": b64(TARGET)}],
        lambda x: mean_square(x - TARGET),
        lambda x: 2.0 * (x - TARGET) / N,
    ),
    "add then squared_norm": (
        [{"op": "add", "constant": b64(OFFSET)}, {"op": "squared_norm"}],
        lambda x: sum_square(x + OFFSET),
        lambda x: 2.0 * (x + OFFSET),
    ),
    "scale then mse": (
        [{"op": "scale", "factor": -3.0}, {"op": "mse", "target": b64(TARGET)}],
        lambda x: mean_square(-3.0 * x - TARGET),
        lambda x: -3.0 * (2.0 * (-3.0 * x - TARGET) / N),
    ),
}


@pytest.mark.parametrize("name", list(CASES))
async def test_the_trajectory_is_the_notes_loop_bit_for_bit(name: str) -> None:
    function, f, gradient = CASES[name]
    x0 = np.random.default_rng(62).standard_normal(SHAPE)
    rate = 0.05
    request = {
        "function": function,
        "x0": b64(x0),
        "learning_rate": rate,
        "max_steps": STEPS,
        "record_every": 1,
        "tolerances": {"grad_tol": 0.0},
        "encoding": "base64",
    }
    transport = httpx.ASGITransport(app=create_app(Settings()))
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        response = await client.post("/v1/gradient-descent", json=request)
    assert response.status_code == 200, response.text[:300]
    answer = response.json()
    x, values = x0.copy(), [f(x0)]
    for _ in range(STEPS):
        x = x - rate * gradient(x)
        values.append(f(x))
    final = np.frombuffer(base64.b64decode(answer["x_final"]["data"]), "<f8").reshape(SHAPE)
    assert answer["steps"] == STEPS
    assert final.view(np.int64).tolist() == x.view(np.int64).tolist()
    recorded = {record["step"]: record["f"] for record in answer["trajectory"]}
    assert recorded == {step: values[step] for step in recorded}
    assert len(recorded) >= STEPS
