"""Corrupted binary bodies always get a 4xx problem: never a 500, never a hang.

Each example starts from a valid binary body (tensors in op parameters and COO triplets
included, written by the independent writer of ``tests/binary_wire.py``) and corrupts it:
truncations, extra bytes, a wrong ``Inference-Header-Content-Length``, sizes that contradict the
shape or run past the end, dtype and shape changes, descriptors with data or without a size.
"""

import json
from typing import Any

import anyio
import httpx
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from service.config import Settings
from service.main import create_app
from tests.binary_wire import HEADER, encode

PROBLEM_JSON = "application/problem+json"
APP = create_app(Settings(max_tensor_elements=10_000))

EVALUATE = {
    "x": np.arange(24.0).reshape(2, 3, 4),
    "function": [
        {"op": "xcorr2d", "kernel": np.ones((2, 2, 2))},
        {"op": "add", "constant": np.full((2, 3), 0.5)},
    ],
    "encoding": "binary",
}
CHAIN_RULE = {
    "jacobians": [
        {
            "format": "coo",
            "shape": [3, 4],
            "row": np.array([0, 2], dtype=np.int64),
            "col": np.array([1, 3], dtype=np.int64),
            "data": np.array([1.5, -2.0]),
        },
        {"format": "dense", "data": np.eye(4)},
    ],
}
BASES = {"/v1/evaluate": EVALUATE, "/v1/chain-rule": CHAIN_RULE}


def descriptors(node: Any) -> list[dict[str, Any]]:
    """The binary tensor objects of a header, in text order."""
    if isinstance(node, dict):
        if "binary_data_size" in node:
            return [node]
        return [d for value in node.values() for d in descriptors(value)]
    if isinstance(node, list):
        return [d for item in node for d in descriptors(item)]
    return []


@st.composite
def corrupted(draw: st.DrawFn) -> tuple[str, bytes, dict[str, str]]:
    """Return (path, body, headers) of a corrupted binary request."""
    path = draw(st.sampled_from(sorted(BASES)))
    body, headers = encode(BASES[path])
    length = int(headers[HEADER])
    header, segments = json.loads(body[:length]), body[length:]
    kind = draw(st.sampled_from([
        "truncate", "extra", "header-length", "header-length-text", "size", "size-past-end",
        "dtype", "shape", "data-key", "no-size", "not-binary",
    ]))  # fmt: skip
    target = draw(st.sampled_from(descriptors(header)))
    if kind == "truncate":
        return path, body[: draw(st.integers(0, len(body) - 1))], headers
    if kind == "extra":
        return path, body + draw(st.binary(min_size=1, max_size=64)), headers
    if kind == "header-length":
        wrong = draw(st.integers(0, len(body) + 100).filter(lambda n: n != length))
        return path, body, {**headers, HEADER: str(wrong)}
    if kind == "header-length-text":
        printable = st.characters(min_codepoint=32, max_codepoint=126)  # what httpx can send
        text = draw(st.text(printable, max_size=8).filter(lambda t: not t.strip().isdigit()))
        return path, body, {**headers, HEADER: text}
    if kind == "size":
        target["binary_data_size"] = draw(
            st.integers(0, 10 * target["binary_data_size"] + 8).filter(
                lambda n: n != target["binary_data_size"]
            )
        )
    elif kind == "size-past-end":
        # Consistent with its own shape, but more bytes than the body holds.
        extra = draw(st.integers(1, 1000))
        target["shape"] = [target["binary_data_size"] // 8 + extra]
        target["binary_data_size"] = 8 * target["shape"][0]
    elif kind == "dtype":
        dtypes = ["float64", "float32", "int64", "float16", "complex128", 1]
        target["dtype"] = draw(st.sampled_from(dtypes).filter(lambda d: d != target["dtype"]))
    elif kind == "shape":
        shapes = st.lists(st.integers(-2, 5), max_size=4).filter(lambda s: s != target["shape"])
        target["shape"] = draw(shapes)
    elif kind == "data-key":
        target["data"] = draw(st.sampled_from([[1.0], 0, "AAAA", None]))
    elif kind == "no-size":
        del target["binary_data_size"]
    else:
        target["encoding"] = draw(st.sampled_from(["list", "base64", None]))
    new_header = json.dumps(header).encode()
    return path, new_header + segments, {**headers, HEADER: str(len(new_header))}


async def _post(path: str, body: bytes, headers: dict[str, str]) -> httpx.Response:
    transport = httpx.ASGITransport(app=APP, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        with anyio.fail_after(10):  # a hang fails the example instead of the run
            return await client.post(path, content=body, headers=headers)


@given(corrupted())
def test_a_corrupted_binary_body_is_a_4xx_problem(case: tuple[str, bytes, dict[str, str]]) -> None:
    path, body, headers = case
    response = anyio.run(_post, path, body, headers)
    assert 400 <= response.status_code < 500, (response.status_code, response.text)
    assert response.headers["content-type"] == PROBLEM_JSON
    problem = response.json()
    # A framing or descriptor error points at the tensor; a corruption that stays self-consistent
    # (a shape changed together with its size) is a valid body whose shapes do not compose.
    if problem["type"] == "/problems/request-validation":
        assert problem["errors"], problem
    else:
        assert problem["type"] in ("/problems/shape-mismatch", "/problems/invalid-tensor"), problem


@pytest.mark.parametrize("mutate, pointer, words", [
    (
        lambda h: h["function"][0]["kernel"].update(binary_data_size=8),
        "/function/0/kernel/binary_data_size", "needs 64 bytes",
    ),
    (
        lambda h: h["function"][1]["constant"].update(dtype="float32"),
        "/function/1/constant/binary_data_size", "needs 24 bytes",
    ),
    (lambda h: h["x"].update(data=[1.0]), "/x/data", "not allowed"),
    (lambda h: h["x"].update(encoding="list"), "/x/encoding", "needs encoding 'binary'"),
])  # fmt: skip
def test_each_mismatch_points_at_its_tensor(mutate, pointer, words) -> None:
    body, headers = encode(EVALUATE)
    length = int(headers[HEADER])
    header = json.loads(body[:length])
    mutate(header)
    new_header = json.dumps(header).encode()
    headers = {**headers, HEADER: str(len(new_header))}
    response = anyio.run(_post, "/v1/evaluate", new_header + body[length:], headers)
    [error] = response.json()["errors"]
    assert response.status_code == 422 and error["pointer"] == pointer and words in error["detail"]


@pytest.mark.parametrize("cut, pointer, words", [
    (-1, "/function/1/constant/binary_data_size", "runs past the end of the body"),
    (+3, "/function/1/constant", "3 bytes after the last segment"),
])  # fmt: skip
def test_short_and_long_bodies_point_at_the_last_tensor(cut, pointer, words) -> None:
    body, headers = encode(EVALUATE)
    body = body[:cut] if cut < 0 else body + b"\0" * cut
    response = anyio.run(_post, "/v1/evaluate", body, headers)
    [error] = response.json()["errors"]
    assert response.status_code == 422 and error["pointer"] == pointer and words in error["detail"]


@pytest.mark.parametrize("value, words", [
    (None, "needs the Inference-Header-Content-Length header"),
    ("12x", "must be a byte count"),
    ("100000", "but the body has only"),
])  # fmt: skip
def test_a_missing_or_wrong_header_length_is_a_422_at_the_root(value, words) -> None:
    body, headers = encode(EVALUATE)
    headers = {"content-type": headers["content-type"]} | ({HEADER: value} if value else {})
    response = anyio.run(_post, "/v1/evaluate", body, headers)
    [error] = response.json()["errors"]
    assert response.status_code == 422 and error["pointer"] == "" and words in error["detail"]


def test_an_over_limit_binary_tensor_is_a_413_before_reading() -> None:
    # 10^6 elements declared against a limit of 10^4, with no bytes sent for them.
    header = json.dumps(
        {"x": {"encoding": "binary", "shape": [1000, 1000], "binary_data_size": 8_000_000}}
    ).encode()
    headers = {"content-type": "application/octet-stream", HEADER: str(len(header))}
    response = anyio.run(_post, "/v1/vec", header, headers)
    assert response.status_code == 413 and response.json()["type"] == "/problems/limit-exceeded"
