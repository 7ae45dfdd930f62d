"""Dense Jacobians of ``xcorr2d`` then ``relu`` requested at once, differing in one parameter each.

Requests that differ only in kernel values, stride, order or layout run concurrently through the
app (the thread pool computes them side by side, sharing the engine's geometry caches); each must
be the seed notes' matrix of its own request, bit for bit (``tests/oracles.py`` loops: each entry
is the kernel tap where the output is positive, nothing elsewhere).
"""

import asyncio
import base64

import httpx
import numpy as np
import pytest

from service.config import Settings
from service.main import create_app
from tests.engine.test_dense_chain_reuse import GEOMETRIES, kernel, relu_oracle, same_bits

pytestmark = pytest.mark.anyio


def b64(array: np.ndarray) -> dict[str, object]:
    data = base64.b64encode(np.ascontiguousarray(array, dtype="<f8").tobytes()).decode()
    return {"encoding": "base64", "shape": list(array.shape), "data": data}


async def test_concurrent_requests_each_get_the_matrix_of_their_own_parameters() -> None:
    rng = np.random.default_rng(51)
    x = rng.standard_normal((2, 6, 7))
    kernels = [kernel(rng, (2, 2, 2, 2)) for _ in range(2)]  # same shape, other values
    cases = [
        (k, geometry, order, layout)
        for k in kernels
        for geometry in GEOMETRIES[1:]
        for order, layout in (("F", "in_out"), ("C", "out_in"))
    ]
    transport = httpx.ASGITransport(app=create_app(Settings()))
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:

        async def ask(k: np.ndarray, geometry, order: str, layout: str) -> np.ndarray:
            xcorr = {
                "op": "xcorr2d",
                "kernel": b64(k),
                "stride": list(geometry.stride),
                "padding": [list(p) for p in geometry.pairs],
                "dilation": list(geometry.dilation),
            }
            request = {
                "x": b64(x),
                "function": [xcorr, {"op": "relu"}],
                "format": "dense",
                "strategy": "chain",
                "order": order,
                "layout": layout,
                "encoding": "base64",
            }
            response = await client.post("/v1/jacobian", json=request)
            assert response.status_code == 200, response.text[:300]
            data = response.json()["jacobian"]["data"]
            return np.frombuffer(base64.b64decode(data["data"]), "<f8").reshape(data["shape"])

        answers = await asyncio.gather(*(ask(*case) for case in cases * 2))
    for index, got in enumerate(answers):
        k, geometry, order, layout = cases[index % len(cases)]
        assert same_bits(got, relu_oracle(x, k, geometry, order, layout)), index


@pytest.mark.parametrize(
    ("kernel_value", "x_value", "tail", "detail"),
    [
        # y = 4e308 overflows in the cross-correlation itself: the operation is named
        (1e308, 1e308, ["square"], "operation 0 (xcorr2d): the result has non-finite entries"),
        (1.0, 1e200, ["square", "tanh"], "operation 1 (square): the result has non-finite"),
        # y = 4 is finite, square' = 8 times the tap 1e308 is not: an entry of J overflows
        (1e308, 1e-308, ["square"], "the Jacobian has non-finite entries (overflow)"),
    ],
)
@pytest.mark.parametrize("strategy", ["chain", "forward"])
async def test_overflow_in_a_dense_jacobian_is_a_non_finite_problem(
    kernel_value: float, x_value: float, tail: list[str], detail: str, strategy: str
) -> None:
    request = {
        "x": {"data": np.full((1, 3, 3), x_value).tolist()},
        "function": [
            {"op": "xcorr2d", "kernel": {"data": np.full((1, 2, 2), kernel_value).tolist()}}
        ]
        + [{"op": name} for name in tail],
        "format": "dense",
        "strategy": strategy,
    }
    transport = httpx.ASGITransport(app=create_app(Settings()))
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        response = await client.post("/v1/jacobian", json=request)
    assert response.status_code == 422, response.text[:300]
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["type"] == "/problems/non-finite"
    assert problem["detail"].startswith(detail), problem["detail"]
