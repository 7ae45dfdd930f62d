"""Operator bodies validated in their worker-thread call: at once, and around the inline threshold.

Large ``/v1/vec`` and ``/v1/ten`` bodies (binary segments among them) are validated, computed and
written in one worker-thread call each; many at once must each answer their own tensor. A body of
exactly ``INLINE_BODY_BYTES`` is parsed on the loop and one byte more is deferred: both must give
the same answer, and the same 422 at the same pointer. Oracles: NumPy's ``ravel``/``reshape``
in F order and pointers written from the request (CONVENTIONS).
"""

import asyncio
import json

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


async def test_many_large_bodies_at_once_each_answer_their_own_tensor() -> None:
    rng = np.random.default_rng(71)
    tensors = [rng.standard_normal((70 + i, 30)) for i in range(12)]  # over 16 KiB each
    transport = httpx.ASGITransport(app=create_app(Settings()))
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:

        async def vec(x: np.ndarray) -> np.ndarray:
            body, headers = encode_binary({"x": x, "order": "F", "encoding": "binary"})
            assert len(body) > deps.INLINE_BODY_BYTES
            response = await client.post("/v1/vec", content=body, headers=headers)
            assert response.status_code == 200, response.text[:300]
            return decode_binary(response.content, int(response.headers[HEADER]))["vector"]

        async def ten(x: np.ndarray) -> np.ndarray:
            vector = x.ravel(order="F")
            document = {
                "vector": vector,
                "shape": list(x.shape),
                "order": "F",
                "encoding": "binary",
            }
            body, headers = encode_binary(document)
            response = await client.post("/v1/ten", content=body, headers=headers)
            assert response.status_code == 200, response.text[:300]
            return decode_binary(response.content, int(response.headers[HEADER]))["tensor"]

        vectors, back = await asyncio.gather(
            asyncio.gather(*(vec(x) for x in tensors)), asyncio.gather(*(ten(x) for x in tensors))
        )
    for x, vector, tensor in zip(tensors, vectors, back, strict=True):
        assert vector.tobytes() == x.ravel(order="F").tobytes()
        assert tensor.shape == x.shape and tensor.tobytes() == x.tobytes()


def padded(document: dict, size: int) -> bytes:
    """``document`` as JSON text of exactly ``size`` bytes (trailing whitespace is JSON's)."""
    text = json.dumps(document).encode()
    assert len(text) <= size
    return text + b" " * (size - len(text))


@pytest.mark.parametrize("valid", [True, False])
async def test_a_body_at_the_inline_threshold_and_one_byte_over_answer_alike(valid: bool) -> None:
    x = np.random.default_rng(72).standard_normal((20, 30)).round(6)
    data = x.tolist()
    if not valid:
        data[7][11] = "seven"
    document = {"x": {"data": data}, "order": "F"}
    transport = httpx.ASGITransport(app=create_app(Settings()))
    answers = []
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        for size in (deps.INLINE_BODY_BYTES, deps.INLINE_BODY_BYTES + 1):
            response = await client.post(
                "/v1/vec",
                content=padded(document, size),
                headers={"content-type": "application/json"},
            )
            answers.append(response)
    for response in answers:
        if valid:
            assert response.status_code == 200, response.text[:300]
            assert response.json()["vector"]["data"] == x.ravel(order="F").tolist()
        else:
            assert response.status_code == 422, response.text[:300]
            assert [e["pointer"] for e in response.json()["errors"]] == ["/x/data/7/11"]
    small, large = (r.json() for r in answers)
    small.pop("request_id", None), large.pop("request_id", None)
    assert small == large
