"""Large operator bodies are validated in the worker-thread call that computes their answer.

``/v1/vec``, ``/v1/ten``, ``/v1/flat`` and ``/v1/unflat`` take a body over the inline threshold
as a deferred body (one hop to the thread pool instead of two). Their answers and their problems
must be exactly those of a body parsed on its own: checked here against NumPy and against pointers
written from the request's layout, in list, base64 and binary bodies.
"""

import base64
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import numpy as np
import pytest

from service.api import deps
from service.config import Settings
from service.main import create_app
from tests.binary_wire import HEADER
from tests.binary_wire import decode as decode_binary
from tests.binary_wire import encode as encode_binary

pytestmark = pytest.mark.anyio
SHAPE = (100, 120)  # 12,000 float64: every encoding's body is over the inline threshold
PROBLEM_JSON = "application/problem+json"


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=create_app(Settings()))
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        yield client


def tensor_body(x: np.ndarray, encoding: str) -> tuple[bytes, dict[str, str]]:
    """A /v1/vec request for ``x`` (order F) written from CONVENTIONS 3 and 3.1 alone."""
    if encoding == "binary":
        return encode_binary({"x": x, "order": "F", "encoding": "binary"})
    if encoding == "base64":
        data = base64.b64encode(x.astype("<f8").tobytes()).decode()
        tensor: dict[str, Any] = {"encoding": "base64", "shape": list(x.shape), "data": data}
    else:
        tensor = {"data": x.tolist()}  # json.dumps writes NaN and Infinity as bare literals
    document = {"x": tensor, "order": "F", "encoding": encoding}
    return json.dumps(document).encode(), {"content-type": "application/json"}


def vector_of(response: httpx.Response) -> np.ndarray:
    if response.headers["content-type"] == "application/octet-stream":
        document = decode_binary(response.content, int(response.headers[HEADER]))
        return np.asarray(document["vector"]).reshape(-1)
    vector = response.json()["vector"]
    if vector["encoding"] == "base64":
        return np.frombuffer(base64.b64decode(vector["data"]), dtype="<f8")
    return np.asarray(vector["data"], dtype=np.float64)


@pytest.mark.parametrize("encoding", ["list", "base64", "binary"])
async def test_a_large_vec_answer_is_numpys_f_order_ravel(client, encoding: str) -> None:
    x = np.random.default_rng(11).standard_normal(SHAPE)
    body, headers = tensor_body(x, encoding)
    assert len(body) > deps.INLINE_BODY_BYTES
    response = await client.post("/v1/vec", content=body, headers=headers)
    assert response.status_code == 200, response.text
    expected = x.ravel(order="F")
    assert vector_of(response).view(np.uint64).tolist() == expected.view(np.uint64).tolist()


NON_FINITE = {"nan": float("nan"), "+inf": float("inf"), "-inf": float("-inf")}
POSITIONS = {"first": (0, 0), "middle": (SHAPE[0] // 2, SHAPE[1] // 3), "last": (-1, -1)}


@pytest.mark.parametrize("position", list(POSITIONS))
@pytest.mark.parametrize("value", list(NON_FINITE))
@pytest.mark.parametrize("encoding", ["list", "base64", "binary"])
async def test_every_non_finite_value_of_a_large_body_is_a_422_at_its_tensor(
    client, encoding: str, value: str, position: str
) -> None:
    x = np.random.default_rng(12).standard_normal(SHAPE)
    x[POSITIONS[position]] = NON_FINITE[value]
    body, headers = tensor_body(x, encoding)
    response = await client.post("/v1/vec", content=body, headers=headers)
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == PROBLEM_JSON
    [error] = response.json()["errors"]
    i, j = (p % n for p, n in zip(POSITIONS[position], SHAPE, strict=True))
    # A list's value has its own place; the bytes of base64 and binary data are one value.
    assert error["pointer"] == (f"/x/data/{i}/{j}" if encoding == "list" else "/x/data")
    if encoding != "list":
        assert f"at index [{i}, {j}]" in error["detail"]


@pytest.mark.parametrize("encoding", ["list", "base64", "binary"])
async def test_finite_values_whose_sum_of_squares_overflows_are_accepted(
    client, encoding: str
) -> None:
    # Every value is finite; their squares (and sums) are not: no shortcut may refuse them.
    x = np.full(SHAPE, 1.5e308)
    x[::2] = -1.7e308
    body, headers = tensor_body(x, encoding)
    response = await client.post("/v1/vec", content=body, headers=headers)
    assert response.status_code == 200, response.text
    assert vector_of(response).tolist() == x.ravel(order="F").tolist()


async def test_a_large_body_over_a_tensor_limit_is_a_413() -> None:
    transport = httpx.ASGITransport(app=create_app(Settings(max_tensor_elements=1000)))
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        for encoding in ("list", "base64", "binary"):
            body, headers = tensor_body(np.ones(SHAPE), encoding)
            response = await client.post("/v1/vec", content=body, headers=headers)
            assert response.status_code == 413, (encoding, response.text)
            assert response.json()["type"] == "/problems/limit-exceeded"


async def test_a_large_binary_answer_refused_by_accept_is_a_406(client) -> None:
    # encoding "binary" rules JSON out; the request says it takes JSON only.
    body, headers = tensor_body(np.ones(SHAPE), "base64")
    document = {**json.loads(body), "encoding": "binary"}
    response = await client.post("/v1/vec", json=document, headers={"accept": "application/json"})
    assert response.status_code == 406, response.text
    assert response.headers["content-type"] == PROBLEM_JSON


async def test_large_flat_and_ten_requests_answer_as_the_formulas(client) -> None:
    dims = [7, 11, 13]
    index = np.random.default_rng(13).integers(0, dims, size=(800, 3))
    response = await client.post("/v1/flat", json={"index": index.tolist(), "dims": dims})
    assert response.status_code == 200, response.text
    expected = [i + 7 * j + 77 * k for i, j, k in index.tolist()]  # F: first index fastest
    assert response.json()["flat"] == expected
    vector = np.arange(float(np.prod(SHAPE)))
    body, headers = encode_binary(
        {"vector": vector, "shape": list(SHAPE), "order": "F", "encoding": "binary"}
    )
    response = await client.post("/v1/ten", content=body, headers=headers)
    assert response.status_code == 200, response.text
    tensor = decode_binary(response.content, int(response.headers[HEADER]))["tensor"]
    # ten is vec's inverse: element (i, j) of an F-order tensor is vector[i + rows * j]
    rows, cols = SHAPE
    assert all(
        tensor[i, j] == vector[i + rows * j] for i in range(0, rows, 7) for j in range(0, cols, 5)
    )


async def test_only_non_light_computations_watch_for_the_clients_disconnect(
    client, monkeypatch: pytest.MonkeyPatch
) -> None:
    watched: list[str] = []
    original: Callable[..., Any] = deps._cancel_on_disconnect

    async def recording(receive: Any, token: Any) -> None:
        watched.append("watch")
        await original(receive, token)

    monkeypatch.setattr(deps, "_cancel_on_disconnect", recording)
    body, headers = tensor_body(np.ones(SHAPE), "binary")
    assert (await client.post("/v1/vec", content=body, headers=headers)).status_code == 200
    assert watched == []  # vec's work is bounded by the body it already has
    request = {"x": {"data": np.ones(SHAPE).tolist()}, "function": [{"op": "scale", "factor": 2}]}
    assert (await client.post("/v1/evaluate", json=request)).status_code == 200
    assert watched == ["watch"]
