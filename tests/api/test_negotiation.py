"""Content negotiation: 415 for bodies not read, 406 for answers not made, npz/npy downloads."""

import io
from collections.abc import AsyncIterator

import httpx
import numpy as np
import pytest
import scipy.sparse as sp

from service.api.negotiation import OFFERS, REMEMBERED_ACCEPT_LENGTH, choose
from service.api.problems import NotAcceptable
from service.config import Settings
from service.main import create_app
from tests.api.test_binary import ENDPOINTS, decoded, post_binary
from tests.binary_wire import base64_arrays

pytestmark = pytest.mark.anyio

PROBLEM_JSON = "application/problem+json"
NPZ = "application/x-npz"
NPY = "application/x-npy"
OCTET = "application/octet-stream"
XCORR = {"x": {"data": [[[1, 2, 3], [4, 5, 6]]]}, "kernel": {"data": [[[1, 2]]]}}


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=create_app(Settings()))
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
        yield c


def assert_problem(response: httpx.Response, status: int, kind: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM_JSON
    assert response.json()["type"] == f"/problems/{kind}"


@pytest.mark.parametrize("content_type", [
    "text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x",
    "application/xml", "image/png",
])  # fmt: skip
async def test_a_body_type_not_read_is_a_415_problem(client, content_type) -> None:
    body = b'{"x": {"data": [1, 2]}}'
    response = await client.post("/v1/vec", content=body, headers={"content-type": content_type})
    assert_problem(response, 415, "unsupported-media-type")


@pytest.mark.parametrize("content_type", [
    "application/json", "application/json; charset=utf-8", 'application/json;charset="UTF-8"',
    "application/merge-patch+json", "application/json; foo=bar", None,
    # US-ASCII text is UTF-8 text: such bodies were always read, and still are.
    "application/json; charset=us-ascii", 'application/json; charset="US-ASCII"',
])  # fmt: skip
async def test_json_bodies_are_read_with_or_without_a_type(client, content_type) -> None:
    headers = {"content-type": content_type} if content_type else {}
    response = await client.post("/v1/vec", content=b'{"x": {"data": [1, 2]}}', headers=headers)
    assert response.status_code == 200 and response.json()["vector"]["data"] == [1.0, 2.0]


@pytest.mark.parametrize("charset", ["utf-16", "UTF-16LE", '"latin-1"', "utf-32"])
async def test_a_json_body_in_another_charset_is_a_415(client, charset) -> None:
    body = '{"x": {"data": [1, 2]}}'.encode(charset.strip('"'))
    headers = {"content-type": f"application/json; charset={charset}"}
    response = await client.post("/v1/vec", content=body, headers=headers)
    assert_problem(response, 415, "unsupported-media-type")
    assert "UTF-8" in response.json()["detail"]


async def test_the_header_length_with_a_json_body_is_a_415(client) -> None:
    headers = {"content-type": "application/json", "inference-header-content-length": "3"}
    response = await client.post("/v1/vec", content=b'{"x": {"data": [1]}}', headers=headers)
    assert_problem(response, 415, "unsupported-media-type")


@pytest.mark.parametrize("path, body, accept", [
    ("/v1/vec", {"x": {"data": [1]}}, "image/png"),
    ("/v1/vec", {"x": {"data": [1]}}, "application/json;q=0, application/octet-stream;q=0"),
    ("/v1/vec", {"x": {"data": [1]}, "encoding": "binary"}, "application/json"),
    ("/v1/flat", {"index": [0], "dims": [2]}, "application/octet-stream"),
    ("/v1/evaluate", {"x": {"data": [1]}, "function": [{"op": "tanh"}]}, "application/x-npz"),
    ("/v1/cross-correlation", XCORR, NPZ),  # no Jacobian asked for
    ("/v1/cross-correlation", {**XCORR, "jacobian": "coo", "wrt": ["x", "kernel"]}, NPZ),
    ("/v1/jacobian", {"x": {"data": [1]}, "function": [{"op": "tanh"}], "format": "coo"}, NPY),
    ("/v1/ops", None, "text/html"),
])  # fmt: skip
async def test_an_accept_nothing_satisfies_is_a_406_problem(client, path, body, accept) -> None:
    headers = {"accept": accept}
    if body is None:
        response = await client.get(path, headers=headers)
    else:
        response = await client.post(path, json=body, headers=headers)
    assert_problem(response, 406, "not-acceptable")


@pytest.mark.parametrize("accept, media_type", [
    (None, "application/json"),
    ("*/*", "application/json"),
    ("text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8", "application/json"),
    ("application/*", "application/json"),
    ("application/octet-stream", "application/octet-stream"),
    ("application/json;q=0.5, application/octet-stream", "application/octet-stream"),
    ("application/x-npy, application/json", "application/x-npy"),
])  # fmt: skip
async def test_accept_picks_by_quality_then_header_order(client, accept, media_type) -> None:
    headers = {"accept": accept} if accept else {}
    response = await client.post("/v1/vec", json={"x": {"data": [1, 2]}}, headers=headers)
    assert response.status_code == 200 and response.headers["content-type"] == media_type


def test_a_remembered_choice_belongs_to_its_accept_and_its_offers() -> None:
    # The same Accept, asked again and for other offers: each answer is its own.
    accept = f"{NPY}, application/json;q=0.5"
    for _ in range(2):
        assert choose(accept, ["application/json", NPY]) == NPY
        assert choose(accept, ["application/json", NPZ]) == "application/json"
        with pytest.raises(NotAcceptable):  # refused every time, not only the first
            choose(accept, [NPZ, OCTET])


def test_a_long_accept_is_negotiated_as_a_short_one() -> None:
    padding = ", ".join(f"text/x-{i};q=0.1" for i in range(40))
    accept = f"{padding}, {NPZ};q=0.9, application/*;q=0.2"
    assert len(accept) > REMEMBERED_ACCEPT_LENGTH
    for _ in range(2):
        assert choose(accept, ["application/json", NPZ]) == NPZ
        assert choose(accept, ["application/json", NPY]) == "application/json"
        with pytest.raises(NotAcceptable):
            choose(accept, ["image/png"])


async def test_errors_are_problem_json_whatever_accept_says(client) -> None:
    for accept in (NPZ, "application/octet-stream", "*/*"):
        response = await client.post(
            "/v1/jacobian", json={"x": {"data": [1]}, "function": []}, headers={"accept": accept}
        )
        assert_problem(response, 422, "request-validation")


@pytest.mark.parametrize("name", ["jacobian-coo", "chain-rule-coo"])
async def test_npz_of_a_coo_jacobian_loads_with_scipy_and_equals_the_answer(client, name) -> None:
    path, build = ENDPOINTS[name]
    # The chain rule reads its inputs in the request's layout: these compose in in_out only.
    for layout in ("in_out", "out_in") if name.startswith("jacobian") else ("in_out",):
        body = {**build("base64"), "layout": layout}
        answer = base64_arrays(
            (await client.post(path, json={**body, "encoding": "base64"})).json()
        )
        response = await client.post(path, json=body, headers={"accept": NPZ})
        assert response.status_code == 200 and response.headers["content-type"] == NPZ
        matrix = sp.load_npz(io.BytesIO(response.content))
        coo = answer["jacobian"]
        assert isinstance(matrix, sp.coo_array) and matrix.shape == tuple(coo["shape"])
        np.testing.assert_array_equal(matrix.row, coo["row"])
        np.testing.assert_array_equal(matrix.col, coo["col"])
        assert matrix.data.tobytes() == coo["data"].tobytes()


async def test_npz_of_the_one_cross_correlation_jacobian(client) -> None:
    body = {**XCORR, "jacobian": "coo", "wrt": ["kernel"], "layout": "out_in"}
    response = await client.post("/v1/cross-correlation", json=body, headers={"accept": NPZ})
    matrix = sp.load_npz(io.BytesIO(response.content)).toarray()
    # d out / d kernel of x (1, 2, 3) with kernel (1, 1, 2): out[i, j] = x[i, j] k0 + x[i, j+1] k1,
    # rows the outputs in F order (o00, o10, o01, o11), columns the kernel entries (k0, k1).
    np.testing.assert_array_equal(matrix, [[1, 2], [4, 5], [2, 3], [5, 6]])


async def test_npz_of_a_dense_jacobian_holds_the_matrix_and_its_labels(client) -> None:
    path, build = ENDPOINTS["jacobian-dense"]
    answer = base64_arrays(
        (await client.post(path, json={**build("base64"), "encoding": "base64"})).json()
    )
    response = await client.post(path, json=build("base64"), headers={"accept": NPZ})
    with np.load(io.BytesIO(response.content), allow_pickle=False) as npz:
        assert sorted(npz.files) == ["in_shape", "jacobian", "layout", "order", "out_shape"]
        assert npz["jacobian"].tobytes() == answer["jacobian"]["data"].tobytes()
        assert npz["in_shape"].tolist() == [2, 4, 5] and npz["out_shape"].tolist() == [5]
        assert str(npz["layout"]) == "out_in" and str(npz["order"]) == "C"


@pytest.mark.parametrize("name, field", [
    ("vec", "vector"), ("ten", "tensor"), ("evaluate", "value"), ("jvp", "jvp"), ("vjp", "vjp"),
    ("cross-correlation", "output"), ("gradient-descent", "x_final"),
    ("jacobian-dense", "jacobian"), ("chain-rule-dense", "jacobian"),
])  # fmt: skip
async def test_npy_answers_the_endpoints_tensor(client, name, field) -> None:
    path, build = ENDPOINTS[name]
    answer = decoded(await post_binary(client, path, {**build("binary"), "encoding": "binary"}))
    expected = answer[field]["data"] if field == "jacobian" else answer[field]
    response = await client.post(path, json=build("base64"), headers={"accept": NPY})
    assert response.status_code == 200 and response.headers["content-type"] == NPY
    array = np.load(io.BytesIO(response.content), allow_pickle=False)
    assert array.dtype == np.float64 and array.tobytes() == expected.tobytes()
    assert array.shape == expected.shape


def test_the_openapi_document_lists_every_representation() -> None:
    document = create_app(Settings()).openapi()
    # The downloads this issue offers; other operations' offers are checked against the registry.
    # Pictures (issue 16) are representations of these operations too.
    pictures = {"image/png", "image/svg+xml"}
    downloads = {
        "vec": {NPY}, "ten": {NPY}, "evaluate": {NPY}, "jacobian": {NPZ, NPY, *pictures},
        "jvp": {NPY}, "vjp": {NPY}, "chain_rule": {NPZ, NPY},
        "cross_correlation": {NPZ, NPY, *pictures},
        "gradient_descent": {NPY, "application/x-ndjson", *pictures}, "flat": set(),
        "unflat": set(),
    }  # fmt: skip
    seen = set()
    for item in document["paths"].values():
        post = item.get("post")
        if post is None:
            continue
        operation = post["operationId"]
        seen.add(operation)
        assert set(post["requestBody"]["content"]) == {"application/json", OCTET}
        assert "Inference-Header-Content-Length" in post["requestBody"]["description"]
        [parameter] = [p for p in post["parameters"] if p["in"] == "header"]
        assert parameter["name"] == "Inference-Header-Content-Length"
        ok = post["responses"]["200"]
        offered = {r.media_type for r in OFFERS.get(operation, [])}
        assert set(ok["content"]) == {"application/json", *offered}, operation
        if operation in downloads:
            assert offered == downloads[operation] | ({OCTET} if downloads[operation] else set())
        if OCTET in offered:
            assert "Inference-Header-Content-Length" in ok["headers"]
            assert "binary_data_size" in ok["description"]
        assert {"406", "415"} <= set(post["responses"])
    assert set(downloads) <= seen
