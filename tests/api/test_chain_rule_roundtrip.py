"""/v1/chain-rule takes the service's own Jacobian answers unchanged, checks and honours them.

The round trip: the answers of /v1/jacobian for g at x and for f at g(x), sent as they came, must
compose to /v1/jacobian of f∘g at x; and, independently of the service's chain rule, to the
product of the two matrices computed with NumPy from the answers.
"""

import base64
import itertools
from collections.abc import AsyncIterator
from typing import Any

import httpx
import numpy as np
import pytest

from service.config import Settings
from service.main import create_app

pytestmark = pytest.mark.anyio
RNG = np.random.default_rng(13)
X = RNG.uniform(-1.0, 1.0, (1, 3, 4))
G = [{"op": "xcorr2d", "kernel": {"data": RNG.standard_normal((2, 1, 2, 2)).tolist()}},
     {"op": "tanh"}]  # fmt: skip  # (1, 3, 4) -> (2, 2, 3)
F = [{"op": "transpose", "axes": [1, 0, 2]}, {"op": "sum", "axes": [2]}, {"op": "sin"}]


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=create_app(Settings()))
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
        yield c


async def post(client: httpx.AsyncClient, path: str, body: dict[str, Any]) -> dict[str, Any]:
    response = await client.post(path, json=body)
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


def dense(jacobian: dict[str, Any]) -> np.ndarray:
    """The matrix of a Jacobian answer, decoded here without the service's codec."""
    if jacobian["format"] == "dense":
        data = jacobian["data"]
        if data["encoding"] == "base64":
            raw = np.frombuffer(base64.b64decode(data["data"]), dtype="<f8")
            return raw.reshape(data["shape"])
        return np.array(data["data"], dtype=float)
    matrix = np.zeros(jacobian["shape"])
    parts = {}
    for name, dtype in (("row", "<i8"), ("col", "<i8"), ("data", "<f8")):
        value = jacobian[name]
        parts[name] = (np.frombuffer(base64.b64decode(value), dtype=dtype)
                       if isinstance(value, str) else np.array(value))  # fmt: skip
    matrix[parts["row"], parts["col"]] = parts["data"]
    return matrix


async def jacobian_of(client, function, x, **options) -> dict[str, Any]:
    body = {"x": {"data": x.tolist()}, "function": function, **options}
    return (await post(client, "/v1/jacobian", body))["jacobian"]


async def g_of_x(client: httpx.AsyncClient) -> np.ndarray:
    answer = await post(client, "/v1/evaluate", {"x": {"data": X.tolist()}, "function": G})
    return np.array(answer["value"]["data"])


CASES = list(itertools.product(["in_out", "out_in"], ["F", "C"], ["coo", "dense"],
                               ["list", "base64"]))  # fmt: skip


@pytest.mark.parametrize(("layout", "order", "fmt", "encoding"), CASES)
async def test_answers_of_g_and_f_compose_to_the_answer_of_f_after_g(
    client: httpx.AsyncClient, layout: str, order: str, fmt: str, encoding: str
) -> None:
    options = {"layout": layout, "order": order, "format": fmt, "encoding": encoding}
    y = await g_of_x(client)
    j_g = await jacobian_of(client, G, X, **options)
    j_f = await jacobian_of(client, F, y, **options)
    j_h = await jacobian_of(client, G + F, X, **options)
    # Unchanged answers in, no request-wide layout or order: the inputs' own labels decide.
    got = (await post(client, "/v1/chain-rule", {"jacobians": [j_g, j_f], "format": fmt,
                                                 "encoding": encoding}))["jacobian"]  # fmt: skip
    for key in ("in_shape", "out_shape", "order", "format"):
        assert got[key] == j_h[key], key
    # The request's layout defaults to in_out: out_in inputs were transposed into it.
    assert got["layout"] == "in_out"
    expected = dense(j_h) if layout == "in_out" else dense(j_h).T
    np.testing.assert_allclose(dense(got), expected, rtol=1e-12, atol=1e-14)
    product = dense(j_g) @ dense(j_f) if layout == "in_out" else (dense(j_f) @ dense(j_g)).T
    np.testing.assert_allclose(dense(got), product, rtol=1e-12, atol=1e-14)
    assert got["nnz"] == np.count_nonzero(dense(got))


async def test_inputs_in_different_layouts_are_each_honoured(client: httpx.AsyncClient) -> None:
    y = await g_of_x(client)
    j_g = await jacobian_of(client, G, X, layout="out_in", format="coo")
    j_f = await jacobian_of(client, F, y, layout="in_out", format="dense")
    j_h = await jacobian_of(client, G + F, X, layout="out_in", format="dense")
    got = (await post(client, "/v1/chain-rule", {"jacobians": [j_g, j_f], "layout": "out_in",
                                                 "format": "dense"}))["jacobian"]  # fmt: skip
    assert got["layout"] == "out_in" and got["shape"] == j_h["shape"]
    np.testing.assert_allclose(dense(got), dense(j_h), rtol=1e-12, atol=1e-14)


def _coo(**header: Any) -> dict[str, Any]:
    # [[1, 0], [0, 2], [3, 0]]: in_out from size 3 to size 2
    return {"format": "coo", "shape": [3, 2], "row": [0, 1, 2], "col": [0, 1, 0],
            "data": [1.0, 2.0, 3.0], **header}  # fmt: skip


def _dense(**header: Any) -> dict[str, Any]:
    return {"format": "dense", "data": {"data": [[1.0], [0.0]]}, **header}  # size 2 -> size 1


INCONSISTENT = [
    ({"jacobians": [_coo(nnz=4), _dense()]}, "/jacobians/0/nnz",
     "nnz is 4 but there are 3 entries given in row/col/data: fix nnz or omit it"),
    ({"jacobians": [_coo(), _dense(nnz=2)]}, "/jacobians/1/nnz",
     "nnz is 2 but there are 1 non-zero entries of data"),
    ({"jacobians": [_coo(), _dense(shape=[1, 2])]}, "/jacobians/1/shape",
     "shape [1, 2] is not the shape [2, 1] of data: fix it or omit shape"),
    ({"jacobians": [_coo(in_shape=[2, 2]), _dense()]}, "/jacobians/0/in_shape",
     "in_shape [2, 2] has 4 elements but the matrix has 3 rows in layout 'in_out'"),
    ({"jacobians": [_coo(layout="out_in", in_shape=[3]), _dense()]}, "/jacobians/0/in_shape",
     "in_shape [3] has 3 elements but the matrix has 2 columns in layout 'out_in'"),
    ({"jacobians": [_coo(order="F"), _dense(order="C")]}, "/jacobians/1/order",
     "order 'C' differs from jacobians[0].order 'F': every Jacobian of a chain must use one "
     "index order"),
    ({"jacobians": [_coo(order="C"), _dense()], "order": "F"}, "/jacobians/0/order",
     "order 'C' differs from the request's order 'F'"),
    ({"jacobians": [_coo(out_shape=[2]), _dense(in_shape=[1, 2])]}, "/jacobians/1/in_shape",
     "in_shape [1, 2] differs from jacobians[0].out_shape [2]: the output of function 0 is the "
     "input of function 1"),
    ({"jacobians": [_coo(encoding="base64"), _dense()]}, "/jacobians/0",
     "encoding is 'base64' but row, col, data are not base64 strings"),
]  # fmt: skip


@pytest.mark.parametrize(("body", "pointer", "detail"), INCONSISTENT)
async def test_an_inconsistent_header_is_a_422_naming_the_field(
    client: httpx.AsyncClient, body: dict[str, Any], pointer: str, detail: str
) -> None:
    response = await client.post("/v1/chain-rule", json=body)
    assert response.status_code == 422, response.text
    problem = response.json()
    assert problem["type"] == "/problems/request-validation"
    [error] = problem["errors"]
    assert error["pointer"] == pointer and detail in error["detail"], error


async def test_a_consistent_header_is_accepted_and_labels_the_product(
    client: httpx.AsyncClient,
) -> None:
    body = {"jacobians": [_coo(nnz=3, in_shape=[3], out_shape=[2], order="C", layout="in_out",
                               encoding="list"),
                          _dense(shape=[2, 1], nnz=1, in_shape=[2], out_shape=[1])]}  # fmt: skip
    got = (await post(client, "/v1/chain-rule", body))["jacobian"]
    assert got["order"] == "C" and got["in_shape"] == [3] and got["out_shape"] == [1]
    np.testing.assert_array_equal(dense(got), [[1.0], [0.0], [3.0]])


@pytest.mark.parametrize("stated", [[], {}, ["base64"], 3, None])
async def test_an_encoding_that_is_not_a_string_is_a_422_not_a_500(
    client: httpx.AsyncClient, stated: Any
) -> None:
    # Found by schemathesis: a list was looked up in a dict of encodings (unhashable: a 500).
    body = {"jacobians": [{**_coo(), "encoding": stated}, _dense()]}
    response = await client.post("/v1/chain-rule", json=body)
    if stated is None:  # null is "not stated"
        assert response.status_code == 200, response.text
        return
    assert response.status_code == 422, response.text
    problem = response.json()
    assert problem["type"] == "/problems/request-validation"
    assert [e["pointer"] for e in problem["errors"]] == ["/jacobians/0/encoding"], problem
