"""The function endpoints: ops, evaluate, jacobian, jvp, vjp, chain-rule (contract only).

Hand-computed cases and cross-endpoint consistency; the numerics of every operation and strategy
are proven against oracles in tests/engine.
"""

import base64
from collections.abc import AsyncIterator
from typing import Any

import httpx
import numpy as np
import pytest

from service.api.schemas.ops import spec_tags
from service.config import Settings
from service.engine.op import op_names
from service.main import create_app

pytestmark = pytest.mark.anyio
PROBLEM_JSON = "application/problem+json"
RNG = np.random.default_rng(11)
X = RNG.uniform(0.5, 1.5, (2, 5, 6))
KERNEL = RNG.standard_normal((3, 2, 2, 3))
CHAIN = [
    {"op": "xcorr2d", "kernel": {"data": KERNEL.tolist()}, "padding": "same"},
    {"op": "tanh"},
    {"op": "avg_pool2d", "size": [2, 2]},
    {"op": "softplus"},
]


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


def dense(coo: dict[str, Any]) -> np.ndarray:
    matrix = np.zeros(coo["shape"])
    matrix[coo["row"], coo["col"]] = coo["data"]
    return matrix


def test_every_registered_operation_has_a_request_model() -> None:
    assert spec_tags() == set(op_names())


async def test_ops_lists_every_operation(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/ops")
    operations = {op["name"]: op for op in response.json()["operations"]}
    assert set(operations) == set(op_names())
    assert operations["xcorr2d"]["linear"] is True and operations["tanh"]["linear"] is False
    assert "kernel" in operations["xcorr2d"]["params"]
    assert "relu'(0) = 0" in operations["relu"]["note"]


async def test_evaluate_hand_computed(client: httpx.AsyncClient) -> None:
    body = await post(
        client,
        "/v1/evaluate",
        {"x": {"data": [1, 2, 3]}, "function": [{"op": "square"}, {"op": "sum"}]},
    )
    assert body["value"]["data"] == 14.0 and body["value"]["shape"] == []


async def test_jacobian_of_square_is_diagonal_2x(client: httpx.AsyncClient) -> None:
    body = await post(
        client,
        "/v1/jacobian",
        {"x": {"data": [[1, -2], [3, 0.5]]}, "function": [{"op": "square"}], "format": "dense"},
    )
    # order F: vec(x) = [1, 3, -2, 0.5]; d x_i^2 / d x_i = 2 x_i
    assert body["jacobian"]["data"]["data"] == np.diag([2.0, 6.0, -4.0, 1.0]).tolist()


async def test_strategies_return_the_same_coo(client: httpx.AsyncClient) -> None:
    results = {}
    for strategy in ("chain", "reverse", "forward"):
        body = await post(
            client,
            "/v1/jacobian",
            {"x": {"data": X.tolist()}, "function": CHAIN, "format": "coo", "strategy": strategy},
        )
        assert body["strategy"] == strategy
        results[strategy] = body["jacobian"]
    reference = results["chain"]
    assert reference["nnz"] > 0
    for other in ("reverse", "forward"):
        assert results[other]["row"] == reference["row"]
        assert results[other]["col"] == reference["col"]
        np.testing.assert_allclose(results[other]["data"], reference["data"], rtol=1e-12)


async def test_out_in_c_is_the_transposed_permutation(client: httpx.AsyncClient) -> None:
    base = {"x": {"data": X.tolist()}, "function": CHAIN, "format": "coo"}
    default = dense((await post(client, "/v1/jacobian", base))["jacobian"])
    other = await post(client, "/v1/jacobian", {**base, "layout": "out_in", "order": "C"})
    jacobian = other["jacobian"]
    out_shape = jacobian["out_shape"]
    assert jacobian["in_shape"] == list(X.shape) and jacobian["shape"] == list(default.T.shape)
    # row r of the F/in_out matrix is x-index unflat_F(r): it is column flat_C(that index) here
    rows = np.ravel_multi_index(np.unravel_index(np.arange(X.size), X.shape, order="F"), X.shape)
    size = int(np.prod(out_shape))
    cols = np.ravel_multi_index(np.unravel_index(np.arange(size), out_shape, order="F"), out_shape)
    expected = np.zeros((size, X.size))
    expected[np.ix_(cols, rows)] = default.T
    got = dense(jacobian)
    # Same structure exactly; values up to rounding (the C-order kernels sum in another order).
    np.testing.assert_array_equal(got != 0, expected != 0)
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=0)


async def test_jvp_and_vjp_match_the_jacobian(client: httpx.AsyncClient) -> None:
    base = {"x": {"data": X.tolist()}, "function": CHAIN}
    full = await post(client, "/v1/jacobian", {**base, "format": "dense", "order": "C"})
    matrix = np.array(full["jacobian"]["data"]["data"])  # (in, out), C order
    out_shape = full["value"]["shape"]
    tangent = RNG.standard_normal(X.shape)
    cotangent = RNG.standard_normal(out_shape)
    jvp = await post(client, "/v1/jvp", {**base, "tangent": {"data": tangent.tolist()}})
    vjp = await post(client, "/v1/vjp", {**base, "cotangent": {"data": cotangent.tolist()}})
    # in_out: JVP = ten(J^T vec(v)), VJP = ten(J vec(u)); C order vec is NumPy's ravel
    np.testing.assert_allclose(
        np.array(jvp["jvp"]["data"]),
        (matrix.T @ tangent.ravel()).reshape(out_shape),
        rtol=1e-12,
        atol=1e-14,
    )
    np.testing.assert_allclose(
        np.array(vjp["vjp"]["data"]),
        (matrix @ cotangent.ravel()).reshape(X.shape),
        rtol=1e-12,
        atol=1e-14,
    )
    assert jvp["value"] == vjp["value"] == full["value"]


async def test_check_reports_a_passing_comparison(client: httpx.AsyncClient) -> None:
    body = await post(
        client, "/v1/jacobian", {"x": {"data": X.tolist()}, "function": CHAIN, "check": True}
    )
    check = body["check"]
    assert check["passed"] is True and check["max_rel_error"] < 1e-6
    assert check["directions"] >= 1 and check["step"] > 0


async def test_huge_sparse_jacobian_is_coo_and_dense_is_refused(client: httpx.AsyncClient) -> None:
    # x (1, 335, 335) -> xcorr with a 1x1 kernel -> tanh: J is 112225 x 112225 diagonal, whose
    # dense form would need 112225**2 * 8 bytes = 100.8 GB.
    x = {"data": RNG.standard_normal((1, 335, 335)).tolist()}
    function = [{"op": "xcorr2d", "kernel": {"data": [[[0.5]]]}}, {"op": "tanh"}]
    body = await post(
        client,
        "/v1/jacobian",
        {"x": x, "function": function, "format": "coo", "encoding": "base64"},
    )
    assert body["jacobian"]["nnz"] == 335 * 335
    response = await client.post(
        "/v1/jacobian", json={"x": x, "function": function, "format": "dense"}
    )
    assert response.status_code == 413 and response.headers["content-type"] == PROBLEM_JSON
    problem = response.json()
    assert problem["estimate"] == (335 * 335) ** 2 and problem["limit"] == 25_000_000
    assert "coo" in problem["hint"]


async def test_chain_rule_multiplies_in_the_notes_order(client: httpx.AsyncClient) -> None:
    j_g = RNG.standard_normal((4, 3))  # g: R^4 -> R^3 (in_out)
    j_f = np.array([[1.0, 0.0], [0.0, 0.0], [2.0, -1.0]])  # f: R^3 -> R^2
    row, col = np.nonzero(j_f)
    coo = {
        "format": "coo",
        "shape": [3, 2],
        "encoding": "base64",
        "row": base64.b64encode(row.astype("<i8").tobytes()).decode(),
        "col": base64.b64encode(col.astype("<i8").tobytes()).decode(),
        "data": base64.b64encode(j_f[row, col].astype("<f8").tobytes()).decode(),
    }
    coo.pop("encoding")
    body = await post(
        client,
        "/v1/chain-rule",
        {
            "jacobians": [{"format": "dense", "data": {"data": j_g.tolist()}}, coo],
            "format": "dense",
        },
    )
    np.testing.assert_allclose(body["jacobian"]["data"]["data"], j_g @ j_f, rtol=1e-15)
    transposed = await post(
        client,
        "/v1/chain-rule",
        {
            "jacobians": [
                {"format": "dense", "data": {"data": j_g.T.tolist()}},
                {"format": "dense", "data": {"data": j_f.T.tolist()}},
            ],
            "layout": "out_in",
        },
    )
    np.testing.assert_allclose(transposed["jacobian"]["data"]["data"], (j_g @ j_f).T, rtol=1e-15)


async def problem(client: httpx.AsyncClient, path: str, body: dict[str, Any]) -> dict[str, Any]:
    response = await client.post(path, json=body)
    assert response.headers["content-type"] == PROBLEM_JSON
    result: dict[str, Any] = response.json()
    assert result["status"] == response.status_code
    return result


async def test_chain_rule_inner_dimension_mismatch(client: httpx.AsyncClient) -> None:
    got = await problem(
        client,
        "/v1/chain-rule",
        {
            "jacobians": [
                {"format": "dense", "data": {"data": np.ones((4, 3)).tolist()}},
                {"format": "dense", "data": {"data": np.ones((2, 2)).tolist()}},
            ]
        },
    )
    assert got["status"] == 422 and got["type"] == "/problems/shape-mismatch"
    assert (
        "jacobians[0] has 3 columns" in got["detail"] and "jacobians[1] has 2 rows" in got["detail"]
    )


async def test_domain_error_names_the_operation(client: httpx.AsyncClient) -> None:
    got = await problem(
        client,
        "/v1/evaluate",
        {"x": {"data": [1.0, -1.0]}, "function": [{"op": "scale", "factor": 2}, {"op": "log"}]},
    )
    assert (got["status"], got["type"]) == (422, "/problems/domain-error")
    assert got["detail"].startswith("operation 1 (log)")


async def test_shape_error_names_the_operation(client: httpx.AsyncClient) -> None:
    got = await problem(
        client,
        "/v1/jacobian",
        {"x": {"data": [1.0, 2.0]}, "function": [{"op": "tanh"}, {"op": "sum", "axes": [3]}]},
    )
    assert (got["status"], got["type"]) == (422, "/problems/shape-mismatch")
    assert got["detail"].startswith("operation 1 (sum)")


async def test_unknown_operation_is_a_validation_problem(client: httpx.AsyncClient) -> None:
    got = await problem(
        client,
        "/v1/evaluate",
        {"x": {"data": [1.0]}, "function": [{"op": "tanh"}, {"op": "frobnicate"}]},
    )
    assert got["type"] == "/problems/request-validation"
    assert [error["pointer"] for error in got["errors"]] == ["/function/1"]


async def test_tangent_shape_must_match_x(client: httpx.AsyncClient) -> None:
    got = await problem(
        client,
        "/v1/jvp",
        {"x": {"data": [1.0, 2.0]}, "function": [{"op": "tanh"}], "tangent": {"data": [1.0]}},
    )
    assert got["type"] == "/problems/shape-mismatch" and "[1]" in got["detail"]
