"""A large operator body keeps the precedence of its problems when every computation slot is held.

``/v1/vec``, ``/v1/ten``, ``/v1/flat`` and ``/v1/unflat`` validate a body over the inline
threshold in the worker-thread call that computes its answer (``deps.deferred_body``). Before
that change such a body was validated first and only a valid one waited for a slot, as a small
body still is: an invalid body is a 422 (a 413 for a limit) whatever the load, and only a request
the service would otherwise serve is refused with 503 ``/problems/saturated``. The expected
answers here are written from CONVENTIONS (pointers into the request, limit settings), and each
large body is checked beside the same request made small.
"""

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import numpy as np
import pytest

from service.api import deps
from service.config import Settings
from service.main import create_app
from tests.binary_wire import encode as encode_binary

pytestmark = pytest.mark.anyio
PROBLEM_JSON = "application/problem+json"
LARGE, SMALL = 5000, 3  # elements: bodies over and under the inline threshold


@pytest.fixture
async def saturated() -> AsyncIterator[httpx.AsyncClient]:
    # One slot, held by the test; a request that needs it is refused at once.
    app = create_app(
        Settings(max_concurrent_computations=1, computation_wait_seconds=0, max_index_count=4000)
    )
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        release = await app.state.computations.acquire()
        try:
            yield client
        finally:
            release()


def json_request(document: dict[str, Any]) -> tuple[bytes, dict[str, str]]:
    return json.dumps(document).encode(), {"content-type": "application/json"}


def vec_with_a_string(size: int, encoding: str) -> tuple[bytes, dict[str, str]]:
    """A vec request whose x holds one string (JSON) or a bad shape (binary): invalid."""
    if encoding == "binary":
        # the descriptor's shape does not match its binary_data_size (CONVENTIONS 3.1)
        body, headers = encode_binary({"x": np.ones(size), "order": "F"})
        header_length = int(headers["Inference-Header-Content-Length"])
        header = json.loads(body[:header_length])
        header["x"]["shape"] = [size + 1]
        text = json.dumps(header).encode()
        headers = {**headers, "Inference-Header-Content-Length": str(len(text))}
        return text + body[header_length:], headers
    return json_request({"x": {"data": [1.0] * (size - 1) + ["one"]}})


async def post(
    client: httpx.AsyncClient, path: str, request: tuple[bytes, dict[str, str]]
) -> httpx.Response:
    body, headers = request
    return await client.post(path, content=body, headers=headers)


@pytest.mark.parametrize("encoding", ["list", "binary"])
async def test_an_invalid_large_body_is_a_422_while_every_slot_is_held(
    saturated: httpx.AsyncClient, encoding: str
) -> None:
    for size in (SMALL, LARGE):
        request = vec_with_a_string(size, encoding)
        assert (len(request[0]) > deps.INLINE_BODY_BYTES) == (size == LARGE)
        response = await post(saturated, "/v1/vec", request)
        assert response.status_code == 422, (size, response.text[:300])
        assert response.headers["content-type"] == PROBLEM_JSON
        assert response.json()["type"] == "/problems/request-validation"
        pointers = [error["pointer"] for error in response.json()["errors"]]
        expected = f"/x/data/{size - 1}" if encoding == "list" else "/x/binary_data_size"
        assert pointers == [expected], pointers


async def test_a_large_body_over_the_index_limit_is_a_413_while_every_slot_is_held(
    saturated: httpx.AsyncClient,
) -> None:
    # 4001 multi-indices against max_index_count 4000, a 44 kB body
    index = [[0, 1, 2]] * 4001
    request = json_request({"index": index, "dims": [2, 3, 4]})
    assert len(request[0]) > deps.INLINE_BODY_BYTES
    response = await post(saturated, "/v1/flat", request)
    assert response.status_code == 413, response.text[:300]
    problem = response.json()
    assert problem["type"] == "/problems/limit-exceeded"
    assert problem["setting"] == "max_index_count"


async def test_a_large_invalid_unflat_and_ten_are_422_while_every_slot_is_held(
    saturated: httpx.AsyncClient,
) -> None:
    count = 3500  # under max_index_count, over the inline threshold
    flat = json_request({"flat": list(range(count)) + [-1], "dims": [count]})
    assert len(flat[0]) > deps.INLINE_BODY_BYTES
    response = await post(saturated, "/v1/unflat", flat)
    assert response.status_code == 422, response.text[:300]
    assert [e["pointer"] for e in response.json()["errors"]] == [f"/flat/{count}"]
    ten = json_request({"vector": {"data": [0.5] * LARGE}, "shape": [0, LARGE]})
    assert len(ten[0]) > deps.INLINE_BODY_BYTES
    response = await post(saturated, "/v1/ten", ten)
    assert response.status_code == 422, response.text[:300]
    assert [e["pointer"] for e in response.json()["errors"]] == ["/shape/0"]


async def test_a_valid_large_body_waits_for_a_slot_like_a_small_one(
    saturated: httpx.AsyncClient,
) -> None:
    # What the service would serve is what saturation refuses: 503 with Retry-After.
    for size in (SMALL, LARGE):
        response = await post(saturated, "/v1/vec", json_request({"x": {"data": [1.0] * size}}))
        assert response.status_code == 503, (size, response.text[:300])
        assert response.json()["type"] == "/problems/saturated"
        assert int(response.headers["retry-after"]) >= 1


async def test_a_large_body_no_representation_satisfies_is_a_406_while_every_slot_is_held(
    saturated: httpx.AsyncClient,
) -> None:
    # encoding "binary" rules JSON out; the request takes JSON only (CONVENTIONS: 406).
    document = {"x": {"data": [1.0] * LARGE}, "encoding": "binary"}
    body, headers = json_request(document)
    response = await saturated.post(
        "/v1/vec", content=body, headers={**headers, "accept": "application/json"}
    )
    assert response.status_code == 406, response.text[:300]
    assert response.headers["content-type"] == PROBLEM_JSON
