"""POST /v1/minimize, /v1/hvp and /v1/hessian: the contract (numerics: tests/engine)."""

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import numpy as np
import pytest
import scipy.optimize

from service.api.schemas.minimize import MinimizeRequest
from service.config import Settings
from service.main import create_app

pytestmark = pytest.mark.anyio
NDJSON = "application/x-ndjson"
EXAMPLE: dict[str, Any] = MinimizeRequest.model_config["json_schema_extra"]["examples"][0]  # type: ignore[index]
SETTINGS = Settings(max_descent_steps=1_000, max_trajectory_elements=5_000)
SIN_SQUARED = [{"op": "sin"}, {"op": "square"}, {"op": "sum"}]


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=create_app(SETTINGS))
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
        yield c


def _problem(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    return response.json()


METHODS = [
    {"method": "gd", "learning_rate": 0.2},
    {"method": "adam", "learning_rate": 0.2},
    {"method": "lbfgs"},
    {"method": "newton-cg"},
    {"method": "trust-ncg"},
]


@pytest.mark.parametrize("method", METHODS, ids=lambda m: m["method"])
async def test_streamed_lines_equal_the_json_trajectory(
    client: httpx.AsyncClient, method: dict[str, Any]
) -> None:
    body = {**EXAMPLE, **method, "record_x": True, "max_steps": 30}
    whole = await client.post("/v1/minimize", json=body)
    assert whole.status_code == 200, whole.text
    document = whole.json()
    streamed = await client.post("/v1/minimize", json=body, headers={"accept": NDJSON})
    assert streamed.headers["content-type"] == NDJSON
    lines = [json.loads(line) for line in streamed.text.splitlines()]
    assert lines[:-1] == document["trajectory"]
    assert lines[-1] == {k: v for k, v in document.items() if k != "trajectory"}
    assert document["method"] == method["method"]
    trajectory = document["trajectory"]
    assert document["f_final"] <= trajectory[0]["f"]
    if method["method"] not in ("gd", "adam"):  # f = sum(cos((x - c)²)) has minimum -2
        assert document["f_final"] == pytest.approx(-2.0, abs=1e-9)
    counts = document["evaluations"]
    assert counts["function"] >= document["steps"] and counts["gradient"] >= document["steps"]
    steps = [point["evaluations"]["function"] for point in document["trajectory"]]
    assert steps == sorted(steps)


async def test_the_request_example_converges_by_newton_cg(client: httpx.AsyncClient) -> None:
    response = await client.post("/v1/minimize", json=EXAMPLE)
    body = response.json()
    assert body["status"] == "converged_grad", body["reason"]
    c = np.array([1.0, -2.0])
    np.testing.assert_allclose(np.cos((np.array(body["x_final"]["data"]) - c) ** 2), -1, rtol=1e-12)
    assert body["evaluations"]["hvp"] > 0


async def test_lbfgs_bounds_are_per_variable(client: httpx.AsyncClient) -> None:
    body = {
        **EXAMPLE,
        "method": "lbfgs",
        "bounds": {"x": {"lower": 0.0, "upper": {"data": [1.0, 0.5]}}},
    }
    response = await client.post("/v1/minimize", json=body)
    x = np.array(response.json()["x_final"]["data"])
    assert np.all(x >= 0) and np.all(x <= [1.0, 0.5])
    unknown = await client.post("/v1/minimize", json={**body, "bounds": {"k": {"lower": 0.0}}})
    assert "unknown variables ['k']" in _problem(unknown, 422)["detail"]
    wrong = await client.post("/v1/minimize", json={**body, "method": "trust-ncg"})
    assert "option of method 'lbfgs'" in _problem(wrong, 422)["detail"]


async def test_minimize_refusals(client: httpx.AsyncClient) -> None:
    vector = await client.post("/v1/minimize", json={**EXAMPLE, "function": [{"op": "sin"}]})
    assert "minimization needs a scalar function" in _problem(vector, 422)["detail"]
    too_long = await client.post("/v1/minimize", json={**EXAMPLE, "max_steps": 1001})
    _problem(too_long, 413)
    unknown = await client.post("/v1/minimize", json={**EXAMPLE, "method": "bfgs"})
    assert _problem(unknown, 422)["errors"][0]["pointer"] == "/method"


async def test_hvp_of_an_elementwise_loss(client: httpx.AsyncClient) -> None:
    x, v = np.array([0.5, 1.0, 2.0]), np.array([1.0, -2.0, 0.5])
    body = {
        "x": {"data": x.tolist()},
        "function": SIN_SQUARED,
        "vectors": {"x": {"data": v.tolist()}},
    }
    response = await client.post("/v1/hvp", json=body)
    assert response.status_code == 200, response.text
    document = response.json()
    assert document["value"]["data"] == pytest.approx(np.sum(np.sin(x) ** 2), rel=1e-15)
    # d²/dx² sin²(x) = 2 cos(2x)
    np.testing.assert_allclose(document["hvp"]["x"]["data"], 2 * np.cos(2 * x) * v, rtol=1e-14)
    wrong = await client.post("/v1/hvp", json={**body, "vectors": {"k": body["vectors"]["x"]}})
    assert "exactly the differentiated inputs ['x']" in str(_problem(wrong, 422)["errors"])
    short = await client.post("/v1/hvp", json={**body, "vectors": {"x": {"data": [1.0]}}})
    assert "vectors.x has shape [1]" in _problem(short, 422)["detail"]


@pytest.mark.parametrize("fmt", ["coo", "dense", "auto"])
async def test_hessian_formats(client: httpx.AsyncClient, fmt: str) -> None:
    x = np.array([[0.5, 1.0], [2.0, -1.0]])
    body = {"x": {"data": x.tolist()}, "function": SIN_SQUARED, "format": fmt, "order": "C"}
    response = await client.post("/v1/hessian", json=body)
    assert response.status_code == 200, response.text
    h = response.json()["hessian"]
    assert h["shape"] == [4, 4] and h["in_shape"] == h["out_shape"] == [2, 2]
    diagonal = 2 * np.cos(2 * np.reshape(x, -1))
    if h["format"] == "coo":
        assert h["row"] == h["col"] == [0, 1, 2, 3]
        np.testing.assert_allclose(h["data"], diagonal, rtol=1e-14)
    else:
        np.testing.assert_allclose(h["data"]["data"], np.diag(diagonal), rtol=1e-14)
    # auto: the bound (2 entries per row, two curved operations) is over a third of 16: dense.
    assert h["format"] == ("coo" if fmt == "coo" else "dense")


async def test_second_order_refusals(client: httpx.AsyncClient) -> None:
    body = {"x": {"data": [1.0, 2.0]}, "function": [{"op": "sin"}]}
    vector = await client.post("/v1/hessian", json=body)
    assert "a Hessian needs a scalar function" in _problem(vector, 422)["detail"]
    hvp = await client.post("/v1/hvp", json={**body, "vectors": {"x": {"data": [1.0, 0.0]}}})
    assert "a Hessian-vector product needs a scalar function" in _problem(hvp, 422)["detail"]


ROSEN = "sum(100 * (x[1:] - x[:-1] ** 2) ** 2 + (1 - x[:-1]) ** 2)"


async def test_program_hvp_and_hessian_of_rosenbrock(client: httpx.AsyncClient) -> None:
    x = np.array([-1.2, 1.0, 0.5, 2.0])
    v = np.array([1.0, -1.0, 0.5, 0.25])
    body = {"inputs": {"x": {"data": x.tolist()}}, "function": ROSEN,
            "vectors": {"x": {"data": v.tolist()}}}  # fmt: skip
    response = await client.post("/v1/hvp", json=body)
    assert response.status_code == 200, response.text
    np.testing.assert_allclose(
        response.json()["hvp"]["x"]["data"], scipy.optimize.rosen_hess_prod(x, v), rtol=1e-13
    )
    body = {"inputs": {"x": {"data": x.tolist()}}, "function": ROSEN, "format": "dense"}
    hessian = (await client.post("/v1/hessian", json=body)).json()["hessian"]
    assert hessian["shape"] == [4, 4] and hessian["in_shape"] == [4]
    np.testing.assert_allclose(hessian["data"]["data"], scipy.optimize.rosen_hess(x), rtol=1e-13)
    coo = (await client.post("/v1/hessian", json={**body, "format": "coo"})).json()["hessian"]
    assert coo["format"] == "coo" and coo["shape"] == [4, 4]
    sparse = np.zeros((4, 4))
    sparse[coo["row"], coo["col"]] = coo["data"]
    np.testing.assert_allclose(sparse, scipy.optimize.rosen_hess(x), rtol=1e-13)
    # The tridiagonal structure, entry for entry: (i, i - 1), (i, i), (i, i + 1).
    assert list(zip(coo["row"], coo["col"], strict=True)) == [
        (i, j) for i in range(4) for j in range(4) if abs(i - j) <= 1
    ]


async def test_program_hessian_over_the_limit_is_refused_before_arithmetic(
    client: httpx.AsyncClient,
) -> None:
    app = create_app(Settings(max_coo_nnz=100))
    transport = httpx.ASGITransport(app=app)
    body = {"inputs": {"x": {"data": [0.5] * 40}}, "function": ROSEN, "format": "coo"}
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as limited:
        problem = _problem(await limited.post("/v1/hessian", json=body), 413)
    assert "Hessian non-zeros" in problem["detail"]


async def test_program_hessian_is_joint_over_wrt(client: httpx.AsyncClient) -> None:
    # f = sum(a * b * b): H over (a, b) = [[0, 2b], [2b, 2a]] per element.
    a, b = [1.0, 2.0], [3.0, -1.0]
    body = {"inputs": {"a": {"data": a}, "b": {"data": b}}, "function": "sum(a * b * b)",
            "wrt": ["a", "b"], "format": "dense"}  # fmt: skip
    hessian = (await client.post("/v1/hessian", json=body)).json()["hessian"]
    expected = np.zeros((4, 4))
    expected[0, 2] = expected[2, 0] = 2 * b[0]
    expected[1, 3] = expected[3, 1] = 2 * b[1]
    expected[2, 2], expected[3, 3] = 2 * a[0], 2 * a[1]
    np.testing.assert_allclose(hessian["data"]["data"], expected, rtol=1e-15)


@pytest.mark.parametrize("method", ["lbfgs", "newton-cg", "trust-ncg"])
async def test_program_minimize_reaches_rosenbrocks_minimum(
    client: httpx.AsyncClient, method: str
) -> None:
    body = {"inputs": {"x": {"data": [-1.2, 1.0, -1.2, 1.0]}}, "function": ROSEN,
            "method": method, "max_steps": 500, "tolerances": {"grad_tol": 1e-8}}  # fmt: skip
    whole = await client.post("/v1/minimize", json=body)
    assert whole.status_code == 200, whole.text
    document = whole.json()
    assert document["status"] == "converged_grad", document["reason"]
    np.testing.assert_allclose(document["final"]["x"]["data"], np.ones(4), atol=1e-6)
    streamed = await client.post("/v1/minimize", json=body, headers={"accept": NDJSON})
    lines = [json.loads(line) for line in streamed.text.splitlines()]
    assert lines[:-1] == document["trajectory"]
    assert lines[-1] == {k: v for k, v in document.items() if k != "trajectory"}


async def test_program_minimize_over_some_variables_with_bounds(client: httpx.AsyncClient) -> None:
    # min over k >= 0.5 of sum((k - y)^2): k = max(y, 0.5); x is not a variable.
    body = {"inputs": {"k": {"data": [0.0, 0.0, 0.0]}, "y": {"data": [1.0, -2.0, 0.7]}},
            "function": "sum((k - y) ** 2)", "variables": ["k"], "method": "lbfgs",
            "max_steps": 100, "bounds": {"k": {"lower": 0.5}}}  # fmt: skip
    document = (await client.post("/v1/minimize", json=body)).json()
    np.testing.assert_allclose(document["final"]["k"]["data"], [1.0, 0.5, 0.7], atol=1e-8)
    assert list(document["final"]) == ["k"]
