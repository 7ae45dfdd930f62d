"""Program requests (CONVENTIONS 5.1) as binary bodies, bit-identical to their base64 answers.

Every tensor of the program forms travels as a segment: ``inputs``, ``tangents``, the
``cotangent``, and the parameters of graph nodes (validated when the program is built, after the
body: they reach their segments through the request's context).
"""

import base64
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import numpy as np
import pytest

from service.config import Settings
from service.main import create_app
from tests.api.test_binary import decoded, post_binary
from tests.binary_wire import assert_identical, base64_arrays, normalize_binary

pytestmark = pytest.mark.anyio
RNG = np.random.default_rng(5)
X, K, Y = (
    RNG.standard_normal((2, 5, 6)),
    RNG.standard_normal((2, 3, 3)),
    RNG.standard_normal((3, 4)),
)
TANGENT = RNG.standard_normal((2, 5, 6))


def tensor(array: np.ndarray, kind: str) -> Any:
    """An ndarray for the binary writer, or a base64 tensor object."""
    if kind == "binary":
        return array
    data = base64.b64encode(array.tobytes()).decode()
    return {"encoding": "base64", "shape": list(array.shape), "data": data}


def graph(kind: str) -> dict[str, Any]:
    return {
        "nodes": [
            {"id": "z", "op": "xcorr2d", "args": ["x"], "kernel": tensor(K, kind)},
            {"id": "w", "op": "add", "args": ["z"], "constant": tensor(Y, kind)},
        ],
        "output": "w",
    }


CASES: dict[str, tuple[str, Callable[[str], dict[str, Any]]]] = {
    "evaluate-expression": ("/v1/evaluate", lambda k: {
        "inputs": {"x": tensor(X, k), "k": tensor(K, k), "y": tensor(Y, k)},
        "function": "sum(square(xcorr2d(x, k) - y))",
    }),
    "jacobian-per-input": ("/v1/jacobian", lambda k: {
        "inputs": {"x": tensor(X, k), "k": tensor(K, k)}, "function": "tanh(xcorr2d(x, k))",
        "format": "coo",
    }),
    "jvp-tangents": ("/v1/jvp", lambda k: {
        "inputs": {"x": tensor(X, k), "k": tensor(K, k)}, "wrt": ["x"],
        "function": "xcorr2d(x, k) * 2", "tangents": {"x": tensor(TANGENT, k)},
    }),
    "vjp-cotangent": ("/v1/vjp", lambda k: {
        "inputs": {"x": tensor(X, k), "k": tensor(K, k)}, "function": "xcorr2d(x, k)",
        "cotangent": tensor(Y, k),
    }),
    "graph-node-parameters": ("/v1/evaluate", lambda k: {
        "inputs": {"x": tensor(X, k)}, "function": graph(k),
    }),
    "descent-variables": ("/v1/gradient-descent", lambda k: {
        "inputs": {"x": tensor(X, k), "k": tensor(K, k), "y": tensor(Y, k)}, "variables": ["k"],
        "function": "mean(square(xcorr2d(x, k) - y))", "learning_rate": 0.01, "max_steps": 3,
        "record_x": True,
    }),
}  # fmt: skip


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=create_app(Settings()))
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
        yield c


@pytest.mark.parametrize("name", list(CASES))
async def test_program_binary_answers_equal_base64_answers(client, name) -> None:
    path, build = CASES[name]
    reference = await client.post(path, json={**build("base64"), "encoding": "base64"})
    assert reference.status_code == 200, reference.text
    binary = await post_binary(client, path, {**build("binary"), "encoding": "binary"})
    assert_identical(normalize_binary(decoded(binary)), base64_arrays(reference.json()))


async def test_npz_of_a_program_with_one_jacobian(client) -> None:
    import io

    import scipy.sparse as sp

    path, build = CASES["jacobian-per-input"]
    body = {**build("base64"), "wrt": ["k"]}
    answer = base64_arrays((await client.post(path, json={**body, "encoding": "base64"})).json())
    response = await client.post(path, json=body, headers={"accept": "application/x-npz"})
    matrix = sp.load_npz(io.BytesIO(response.content))
    coo = answer["jacobians"]["k"]
    np.testing.assert_array_equal(matrix.row, coo["row"])
    np.testing.assert_array_equal(matrix.col, coo["col"])
    assert matrix.data.tobytes() == coo["data"].tobytes()
