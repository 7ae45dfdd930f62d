"""POST /v1/cross-correlation: the contract. The numerics are proven in tests/engine/test_xcorr.py.

Hand-computed cases only: the CONVENTIONS §2 worked example, its transpose, its C-order
permutation, and the problems for every kind of bad input.
"""

import base64
from collections.abc import AsyncIterator
from typing import Any

import httpx
import numpy as np
import pytest

from service.config import Settings
from service.main import create_app

pytestmark = pytest.mark.anyio
PATH = "/v1/cross-correlation"
PROBLEM_JSON = "application/problem+json"

# CONVENTIONS §2: x (1, 2, 3), k = [[[1, 2]]], stride (1, 1) -> output (2, 2); order F, in_out.
WORKED_X = [[[0.5, -1.0, 2.0], [3.0, 4.0, -5.0]]]
WORKED_K = [[[1, 2]]]
WORKED_J = [
    [1, 0, 0, 0],
    [0, 1, 0, 0],
    [2, 0, 1, 0],
    [0, 2, 0, 1],
    [0, 0, 2, 0],
    [0, 0, 0, 2],
]


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(
        Settings(max_tensor_elements=100_000, max_coo_nnz=5_000, max_dense_jacobian_elements=400)
    )
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
        yield c


def b64(array: np.ndarray) -> dict[str, Any]:
    raw = np.ascontiguousarray(array, dtype="<f8").tobytes()
    return {
        "encoding": "base64",
        "shape": list(array.shape),
        "data": base64.b64encode(raw).decode(),
    }


def from_b64(text: str, dtype: str) -> np.ndarray:
    return np.frombuffer(base64.b64decode(text, validate=True), dtype=dtype)


async def test_worked_example_dense_in_out(client: httpx.AsyncClient) -> None:
    response = await client.post(
        PATH, json={"x": {"data": WORKED_X}, "kernel": {"data": WORKED_K}, "jacobian": "dense"}
    )
    assert response.status_code == 200
    body = response.json()
    # output[i, j] = x[0, i, j] * 1 + x[0, i, j + 1] * 2, by hand
    assert body["output"]["data"] == [[0.5 - 2.0, -1.0 + 4.0], [3.0 + 8.0, 4.0 - 10.0]]
    jacobian = body["jacobian_x"]
    assert jacobian["data"]["data"] == WORKED_J
    assert {key: jacobian[key] for key in ("format", "shape", "in_shape", "out_shape")} == {
        "format": "dense",
        "shape": [6, 4],
        "in_shape": [1, 2, 3],
        "out_shape": [2, 2],
    }
    assert (jacobian["layout"], jacobian["order"], jacobian["nnz"]) == ("in_out", "F", 8)
    assert body["jacobian_kernel"] is None


async def test_worked_example_out_in_is_the_transpose(client: httpx.AsyncClient) -> None:
    response = await client.post(
        PATH,
        json={
            "x": {"data": WORKED_X},
            "kernel": {"data": WORKED_K},
            "jacobian": "dense",
            "layout": "out_in",
        },
    )
    jacobian = response.json()["jacobian_x"]
    assert jacobian["data"]["data"] == np.array(WORKED_J).T.tolist()
    assert jacobian["shape"] == [4, 6]


async def test_order_c_permutes_rows_and_columns(client: httpx.AsyncClient) -> None:
    response = await client.post(
        PATH,
        json={
            "x": {"data": WORKED_X},
            "kernel": {"data": WORKED_K},
            "jacobian": "dense",
            "order": "C",
        },
    )
    got = np.array(response.json()["jacobian_x"]["data"]["data"])
    # Row r in F order is x-index unflat_F(r); it sits at row flat_C(that index) in C order.
    x_rows = [
        np.ravel_multi_index(np.unravel_index(r, (1, 2, 3), order="F"), (1, 2, 3)) for r in range(6)
    ]
    out_cols = [
        np.ravel_multi_index(np.unravel_index(c, (2, 2), order="F"), (2, 2)) for c in range(4)
    ]
    expected = np.zeros((6, 4))
    expected[np.ix_(x_rows, out_cols)] = WORKED_J
    assert got.tolist() == expected.tolist()


async def test_coo_is_canonical_and_base64_matches_lists(client: httpx.AsyncClient) -> None:
    rng = np.random.default_rng(3)
    x, k = rng.standard_normal((2, 5, 6)), rng.standard_normal((3, 2, 2, 3))
    common = {"jacobian": "coo", "wrt": ["x", "kernel"], "stride": [2, 1], "padding": "same"}
    listed = (
        await client.post(
            PATH, json={"x": {"data": x.tolist()}, "kernel": {"data": k.tolist()}, **common}
        )
    ).json()
    packed = (
        await client.post(
            PATH, json={"x": b64(x), "kernel": b64(k), "encoding": "base64", **common}
        )
    ).json()
    for name in ("jacobian_x", "jacobian_kernel"):
        coo = listed[name]
        rows, cols = np.array(coo["row"]), np.array(coo["col"])
        keys = rows * coo["shape"][1] + cols
        assert np.all(np.diff(keys) > 0), "sorted by (row, col) without duplicates"
        assert coo["nnz"] == len(coo["data"]) and 0 not in coo["data"]
        other = packed[name]
        assert from_b64(other["row"], "<i8").tolist() == coo["row"]
        assert from_b64(other["col"], "<i8").tolist() == coo["col"]
        assert from_b64(other["data"], "<f8").tolist() == coo["data"]
    output = np.array(listed["output"]["data"])
    assert from_b64(packed["output"]["data"], "<f8").reshape(output.shape).tolist() == (
        output.tolist()
    )


async def test_method_jacobian_agrees_with_direct(client: httpx.AsyncClient) -> None:
    rng = np.random.default_rng(4)
    x, k = rng.standard_normal((3, 7, 8)), rng.standard_normal((3, 3, 2))
    outputs = []
    for method in ("direct", "jacobian"):
        response = await client.post(
            PATH,
            json={
                "x": {"data": x.tolist()},
                "kernel": {"data": k.tolist()},
                "method": method,
                "dilation": [2, 1],
            },
        )
        assert response.status_code == 200
        outputs.append(np.array(response.json()["output"]["data"]))
    np.testing.assert_allclose(outputs[1], outputs[0], rtol=1e-12, atol=1e-12)


async def problem(client: httpx.AsyncClient, body: dict[str, Any]) -> dict[str, Any]:
    response = await client.post(PATH, json=body)
    assert response.headers["content-type"] == PROBLEM_JSON
    result = response.json()
    assert result["status"] == response.status_code
    return result


async def test_channel_mismatch_names_the_shapes(client: httpx.AsyncClient) -> None:
    got = await problem(
        client,
        {
            "x": {"data": np.zeros((2, 4, 4)).tolist()},
            "kernel": {"data": np.ones((3, 2, 2)).tolist()},
        },
    )
    assert got["type"] == "/problems/shape-mismatch" and got["status"] == 422
    assert "[2, 4, 4]" in got["detail"] and "[3, 2, 2]" in got["detail"]


async def test_kernel_larger_than_padded_image(client: httpx.AsyncClient) -> None:
    got = await problem(
        client,
        {
            "x": {"data": np.zeros((1, 2, 2)).tolist()},
            "kernel": {"data": np.ones((1, 3, 3)).tolist()},
        },
    )
    assert got["type"] == "/problems/shape-mismatch"
    assert "[1, 3, 3]" in got["detail"] and "[1, 2, 2]" in got["detail"], got["detail"]
    padded = await client.post(
        PATH,
        json={
            "x": {"data": np.zeros((1, 2, 2)).tolist()},
            "kernel": {"data": np.ones((1, 3, 3)).tolist()},
            "padding": "full",
        },
    )
    assert padded.status_code == 200
    assert np.array(padded.json()["output"]["data"]).shape == (4, 4)


@pytest.mark.parametrize(
    ("field", "value", "pointer"),
    [
        ("stride", [0, 1], "/stride/0"),
        ("stride", [1, -2], "/stride/1"),
        ("dilation", [1, 0], "/dilation/1"),
        ("padding", [[0, -1], [0, 0]], "/padding/0/1"),
        ("wrt", ["x", "x"], "/wrt"),
        ("jacobian", "sparse", "/jacobian"),
    ],
)
async def test_bad_parameters_are_request_validation_problems(
    client: httpx.AsyncClient, field: str, value: Any, pointer: str
) -> None:
    got = await problem(
        client, {"x": {"data": WORKED_X}, "kernel": {"data": WORKED_K}, field: value}
    )
    assert got["type"] == "/problems/request-validation" and got["status"] == 422
    assert [error["pointer"] for error in got["errors"]] == [pointer]


async def test_dense_over_the_limit_is_413_with_estimate(client: httpx.AsyncClient) -> None:
    # 1 x 6 x 6 image, 1 x 1 x 1 kernel: J is 36 x 36 = 1296 dense elements > 400.
    got = await problem(
        client,
        {
            "x": {"data": np.ones((1, 6, 6)).tolist()},
            "kernel": {"data": [[[2.0]]]},
            "jacobian": "dense",
        },
    )
    assert got["type"] == "/problems/limit-exceeded" and got["status"] == 413
    assert (got["quantity"], got["estimate"], got["limit"]) == (
        "dense Jacobian elements",
        1296,
        400,
    )
    assert "coo" in got["hint"]


async def test_coo_over_the_limit_is_413_with_estimate(client: httpx.AsyncClient) -> None:
    # 2 x 40 x 40 image, 2 x 3 x 3 kernel: nnz = 2*3*3 taps * 38*38 outputs = 25992 > 5000.
    got = await problem(
        client,
        {
            "x": {"data": np.ones((2, 40, 40)).tolist()},
            "kernel": {"data": np.ones((2, 3, 3)).tolist()},
            "jacobian": "coo",
        },
    )
    assert got["status"] == 413
    assert (got["estimate"], got["limit"]) == (2 * 3 * 3 * 38 * 38, 5000)
    assert "with respect to x" in got["quantity"]
