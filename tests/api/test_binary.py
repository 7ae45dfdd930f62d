"""Binary bodies (CONVENTIONS 3.1) on every endpoint, checked with the independent writer/reader.

Every endpoint is called twice with the same numbers: once as JSON with base64 tensors and
``encoding: "base64"``, once as an ``application/octet-stream`` body with every tensor (op
parameters, constants, targets, COO triplets, tangents, cotangents, x0 included) binary and
``encoding: "binary"``. The decoded answers must be identical bit for bit.
"""

import base64
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import numpy as np
import pytest

from service.codec import tensors as tensors_codec
from service.config import Settings
from service.main import create_app
from tests.binary_wire import (
    HEADER,
    assert_identical,
    base64_arrays,
    decode,
    encode,
    normalize_binary,
)

pytestmark = pytest.mark.anyio

OCTET = "application/octet-stream"
PROBLEM_JSON = "application/problem+json"
RNG = np.random.default_rng(20261201)


def _values(*shape: int) -> np.ndarray:
    return RNG.standard_normal(shape)


X = _values(2, 4, 5)
KERNEL = _values(2, 2, 2)
CONSTANT = _values(3, 4)
WEIGHT = _values(5, 12)
BIAS = _values(5)
TANGENT = _values(2, 4, 5)
COTANGENT = _values(5)
X0 = _values(3)
SHIFT = _values(3)
ROWS = np.array([0, 2, 1, 2], dtype=np.int64)
COLS = np.array([3, 0, 1, 3], dtype=np.int64)
ENTRIES = _values(4)
DENSE = _values(4, 2)


def tensor(array: np.ndarray, kind: str) -> Any:
    """The tensor as the binary writer takes it (an ndarray) or as a base64 tensor object."""
    if kind == "binary":
        return array
    raw = np.ascontiguousarray(array, dtype="<f8").tobytes()
    return {
        "encoding": "base64",
        "shape": list(array.shape),
        "data": base64.b64encode(raw).decode(),
    }


def coo_field(array: np.ndarray, kind: str) -> Any:
    """A COO ``row``/``col``/``data``: an ndarray for the writer, or base64 of its bytes."""
    if kind == "binary":
        return array
    dtype = "<i8" if array.dtype.kind == "i" else "<f8"
    return base64.b64encode(np.ascontiguousarray(array, dtype=dtype).tobytes()).decode()


def function(kind: str) -> list[dict[str, Any]]:
    # x (2, 4, 5) -> xcorr (3, 4) -> tanh -> * constant -> linear (5,)
    return [
        {"op": "xcorr2d", "kernel": tensor(KERNEL, kind)},
        {"op": "tanh"},
        {"op": "multiply", "constant": tensor(CONSTANT, kind)},
        {"op": "linear", "weight": tensor(WEIGHT, kind), "bias": tensor(BIAS, kind)},
    ]


def chain_rule(kind: str, fmt: str) -> dict[str, Any]:
    return {
        "jacobians": [
            {
                "format": "coo",
                "shape": [3, 4],
                "row": coo_field(ROWS, kind),
                "col": coo_field(COLS, kind),
                "data": coo_field(ENTRIES, kind),
            },
            {"format": "dense", "data": tensor(DENSE, kind)},
        ],
        "format": fmt,
    }


Builder = Callable[[str], dict[str, Any]]
# path, request builder; every tensor of every request goes through `tensor` or `coo_field`.
ENDPOINTS: dict[str, tuple[str, Builder]] = {
    "vec": ("/v1/vec", lambda k: {"x": tensor(X, k), "order": "C"}),
    "ten": ("/v1/ten", lambda k: {"vector": tensor(X.reshape(-1), k), "shape": [4, 10]}),
    "evaluate": ("/v1/evaluate", lambda k: {"x": tensor(X, k), "function": function(k)}),
    "jacobian-coo": (
        "/v1/jacobian",
        lambda k: {"x": tensor(X, k), "function": function(k), "format": "coo"},
    ),
    "jacobian-dense": (
        "/v1/jacobian",
        lambda k: {
            "x": tensor(X, k),
            "function": function(k),
            "format": "dense",
            "layout": "out_in",
            "order": "C",
        },
    ),  # fmt: skip
    "jvp": (
        "/v1/jvp",
        lambda k: {"x": tensor(X, k), "function": function(k), "tangent": tensor(TANGENT, k)},
    ),
    "vjp": (
        "/v1/vjp",
        lambda k: {"x": tensor(X, k), "function": function(k), "cotangent": tensor(COTANGENT, k)},
    ),
    "chain-rule-coo": ("/v1/chain-rule", lambda k: chain_rule(k, "coo")),
    "chain-rule-dense": ("/v1/chain-rule", lambda k: chain_rule(k, "dense")),
    "cross-correlation": (
        "/v1/cross-correlation",
        lambda k: {
            "x": tensor(X, k),
            "kernel": tensor(KERNEL, k),
            "jacobian": "coo",
            "wrt": ["x", "kernel"],
        },
    ),  # fmt: skip
    "gradient-descent": (
        "/v1/gradient-descent",
        lambda k: {
            "function": [{"op": "add", "constant": tensor(SHIFT, k)}, {"op": "squared_norm"}],
            "x0": tensor(X0, k),
            "learning_rate": 0.1,
            "max_steps": 6,
            "record_x": True,
            "record_every": 2,
        },
    ),  # fmt: skip
}


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=create_app(Settings()))
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
        yield c


async def post_binary(
    client: httpx.AsyncClient, path: str, document: Any, **headers: str
) -> httpx.Response:
    body, binary_headers = encode(document)
    return await client.post(path, content=body, headers={**binary_headers, **headers})


def decoded(response: httpx.Response) -> Any:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == OCTET
    return decode(response.content, int(response.headers[HEADER]))


@pytest.mark.parametrize("name", list(ENDPOINTS))
async def test_binary_answers_equal_base64_answers_bit_for_bit(client, name) -> None:
    path, build = ENDPOINTS[name]
    as_base64 = await client.post(path, json={**build("base64"), "encoding": "base64"})
    assert as_base64.status_code == 200, as_base64.text
    binary = await post_binary(client, path, {**build("binary"), "encoding": "binary"})
    expected = base64_arrays(as_base64.json())
    assert_identical(normalize_binary(decoded(binary)), expected)
    # Accept alone asks for the binary body too, whatever the JSON encoding option says.
    accepted = await post_binary(client, path, build("binary"), accept=OCTET)
    assert_identical(normalize_binary(decoded(accepted)), expected)


@pytest.mark.parametrize("path, body", [
    ("/v1/flat", {"index": [[1, 0, 2], [0, 2, 3]], "dims": [2, 3, 4], "order": "C"}),
    ("/v1/unflat", {"flat": [13, 5], "dims": [2, 3, 4]}),
])  # fmt: skip
async def test_tensorless_requests_read_as_binary_bodies_answer_json(client, path, body) -> None:
    as_json = await client.post(path, json=body)
    binary = await post_binary(client, path, body)
    assert binary.status_code == 200 and binary.json() == as_json.json()


async def test_a_coo_jacobian_is_three_segments_in_header_order(client) -> None:
    path, build = ENDPOINTS["jacobian-coo"]
    response = await post_binary(client, path, {**build("binary"), "encoding": "binary"})
    length = int(response.headers[HEADER])
    header = json.loads(response.content[:length])
    jacobian = header["jacobian"]
    nnz = jacobian["nnz"]

    def descriptor(dtype: str) -> dict[str, Any]:
        return {"encoding": "binary", "dtype": dtype, "shape": [nnz], "binary_data_size": 8 * nnz}

    expected_descriptors = {
        "row": descriptor("int64"),
        "col": descriptor("int64"),
        "data": descriptor("float64"),
    }
    assert {key: jacobian[key] for key in ("row", "col", "data")} == expected_descriptors
    assert "data" not in header["value"] and header["value"]["binary_data_size"] == 5 * 8
    # value (5 floats) comes first in the header, so its segment comes first in the body.
    assert len(response.content) == length + 5 * 8 + 3 * 8 * nnz


@pytest.mark.parametrize("name", ["jacobian-coo", "cross-correlation", "chain-rule-coo"])
async def test_int32_indices_widened_chunk_by_chunk_are_the_base64_int64_indices(
    client, monkeypatch, name
) -> None:
    """The engine's int32 COO indices go out as int64 in 16-byte chunks: the same numbers."""
    monkeypatch.setattr("service.codec.binary.WIDEN_CHUNK_BYTES", 16)
    index_dtypes: list[np.dtype] = []
    write = tensors_codec.binary_array

    def recording(values: np.ndarray, dtype: str) -> dict[str, Any]:
        if dtype == "int64":
            index_dtypes.append(np.asarray(values).dtype)
        return write(values, dtype)

    monkeypatch.setattr(tensors_codec, "binary_array", recording)
    path, build = ENDPOINTS[name]
    as_base64 = await client.post(path, json={**build("base64"), "encoding": "base64"})
    assert as_base64.status_code == 200, as_base64.text
    binary = await post_binary(client, path, {**build("binary"), "encoding": "binary"})
    assert_identical(normalize_binary(decoded(binary)), base64_arrays(as_base64.json()))
    if name == "cross-correlation":  # its builder writes int32 indices: the widening path
        assert np.dtype(np.int32) in index_dtypes


async def test_descent_stream_keeps_json_lines_and_ends_with_a_binary_summary(client) -> None:
    path, build = ENDPOINTS["gradient-descent"]
    ndjson = {"accept": "application/x-ndjson"}
    reference = await client.post(
        path, json={**build("base64"), "encoding": "base64"}, headers=ndjson
    )
    expected_lines = [base64_arrays(json.loads(line)) for line in reference.text.splitlines()]
    body, headers = encode({**build("binary"), "encoding": "binary"})
    response = await client.post(path, content=body, headers={**headers, **ndjson})
    assert response.status_code == 200 and response.headers["content-type"].startswith(
        "application/x-ndjson"
    )
    content = response.content
    lines = []
    while True:
        end = content.index(b"\n")
        line, content = content[:end], content[end + 1 :]
        document = json.loads(line)
        if "status" in document:
            break
        lines.append(base64_arrays(document))  # iterates stay JSON (base64)
    # The summary line is a binary header: x_final's bytes follow its newline.
    summary = decode(line + content, len(line))
    assert_identical([*lines, normalize_binary(summary)], expected_lines)


async def test_binary_tensors_in_op_parameters_and_coo_triplets_are_read(client) -> None:
    # An all-binary chain-rule request equals the same product computed here from the triplets.
    path, build = ENDPOINTS["chain-rule-dense"]
    response = await post_binary(client, path, {**build("binary"), "encoding": "binary"})
    first = np.zeros((3, 4))
    np.add.at(first, (ROWS, COLS), ENTRIES)
    product = decoded(response)["jacobian"]["data"]
    np.testing.assert_allclose(product, first @ DENSE, rtol=1e-15, atol=1e-15)


async def test_float32_segments_are_read_as_float32(client) -> None:
    x = np.array([[1.5, -2.25], [3.0, 0.1]], dtype=np.float32)
    response = await post_binary(client, "/v1/vec", {"x": x, "order": "C"})
    assert response.json()["vector"]["data"] == [float(v) for v in x.reshape(-1)]


async def test_flat_list_with_shape_is_read_in_c_order(client) -> None:
    flat = {"x": {"data": [1, 2, 3, 4, 5, 6], "shape": [2, 3]}, "order": "C"}
    nested = {"x": {"data": [[1, 2, 3], [4, 5, 6]]}, "order": "F"}
    response = await client.post("/v1/vec", json={**flat, "order": "F"})
    assert response.json()["vector"]["data"] == [1.0, 4.0, 2.0, 5.0, 3.0, 6.0]
    assert response.json() == (await client.post("/v1/vec", json=nested)).json()
    wrong = await client.post("/v1/vec", json={"x": {"data": [1, 2, 3, 4, 5], "shape": [2, 3]}})
    assert wrong.status_code == 422
    assert wrong.json()["errors"] == [{
        "pointer": "/x/data",
        "detail": "data has shape [5] but shape says [2, 3] (a flat list needs 6 "
        "numbers)",
    }]  # fmt: skip


async def test_a_binary_tensor_in_a_json_body_is_a_422_at_the_tensor(client) -> None:
    descriptor = {"encoding": "binary", "shape": [2], "dtype": "float64", "binary_data_size": 16}
    body = {"x": {"data": [1.0, 2.0]}, "function": [{"op": "add", "constant": descriptor}]}
    response = await client.post("/v1/evaluate", json=body)
    assert response.status_code == 422
    assert response.headers["content-type"] == PROBLEM_JSON
    [error] = response.json()["errors"]
    assert error["pointer"] == "/function/0/constant"
    assert "application/octet-stream" in error["detail"]
    assert "(got" not in error["detail"], error


async def test_a_binary_tensor_without_its_size_is_told_to_give_it(client) -> None:
    body = {"x": {"encoding": "binary", "shape": [2], "dtype": "float64"}}
    response = await client.post("/v1/vec", json=body)
    assert response.status_code == 422
    [error] = response.json()["errors"]
    assert error["pointer"] == "/x"
    assert error["detail"].startswith("a binary tensor needs binary_data_size"), error
    # The model's placeholder for the missing data is no part of the answer.
    assert "(got" not in error["detail"], error


async def test_a_non_finite_segment_names_its_index_and_echoes_nothing(client) -> None:
    # The binary reader puts the segment's index in data; echoing it read "(got 0)".
    header = b'{"x": {"encoding": "binary", "shape": [3], "binary_data_size": 24}}'
    headers = {"content-type": OCTET, HEADER: str(len(header))}
    segment = np.array([1.0, np.nan, 2.0]).tobytes()
    response = await client.post("/v1/vec", content=header + segment, headers=headers)
    assert response.status_code == 422
    [error] = response.json()["errors"]
    assert error == {"pointer": "/x/data",
                     "detail": "data holds a non-finite value (nan) at index [1]"}  # fmt: skip


@pytest.mark.parametrize("keys", [("x", "tangent"), ("tangent", "x")])
async def test_segments_are_consumed_in_json_text_order(client, keys) -> None:
    descriptor = '{"encoding": "binary", "shape": [2], "binary_data_size": 16}'
    header = (
        f'{{"{keys[0]}": {descriptor}, "function": [{{"op": "scale", "factor": 2}}], '
        f'"{keys[1]}": {descriptor}}}'
    ).encode()
    first, second = np.array([1.0, 2.0]), np.array([3.0, 4.0])
    headers = {"content-type": OCTET, HEADER: str(len(header))}
    response = await client.post(
        "/v1/jvp", content=header + first.tobytes() + second.tobytes(), headers=headers
    )
    answer = {keys[0]: first, keys[1]: second}
    assert response.json()["value"]["data"] == (2 * answer["x"]).tolist()
    assert response.json()["jvp"]["data"] == (2 * answer["tangent"]).tolist()
