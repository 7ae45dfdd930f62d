"""POST /v1/gradient-descent: the contract. The numerics are proven in tests/engine/test_descent.py.

The hand-computed case is the request model's own example: f(x) = ½||x - c||² with c = (1, -2),
x_0 = (3, 0), γ = 0.5, so x_t - c = 2^-t (2, 2), f_t = 4^(1-t) and ||∇f_t|| = √8 · 2^-t, all exact
in binary floating point.
"""

import json
import math
from collections.abc import AsyncIterator
from typing import Any

import anyio
import httpx
import numpy as np
import pytest
from fastapi import FastAPI

from service.api.schemas.descent import GradientDescentRequest
from service.config import Settings
from service.engine.descent import loop as engine_descent
from service.main import create_app

pytestmark = pytest.mark.anyio
PATH = "/v1/gradient-descent"
PROBLEM_JSON = "application/problem+json"
NDJSON = "application/x-ndjson"
EXAMPLE: dict[str, Any] = GradientDescentRequest.model_config["json_schema_extra"]["examples"][0]  # type: ignore[index]
SETTINGS = Settings(
    max_descent_steps=20_000, max_trajectory_elements=5_000, max_tensor_elements=100_000
)


def make_app(settings: Settings = SETTINGS) -> FastAPI:
    return create_app(settings)


@pytest.fixture
def app() -> FastAPI:
    return make_app()


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
        yield c


def quadratic(c: list[float]) -> list[dict[str, Any]]:
    return [
        {"op": "add", "constant": {"data": [-v for v in c]}},
        {"op": "squared_norm"},
        {"op": "scale", "factor": 0.5},
    ]


def ndjson_lines(response: httpx.Response) -> list[dict[str, Any]]:
    assert response.headers["content-type"] == NDJSON
    assert response.text.endswith("\n")
    return [json.loads(line) for line in response.text.splitlines()]


def problem_of(response: httpx.Response) -> dict[str, Any]:
    """The problem body, without the per-request id (checked against its header when present)."""
    assert response.headers["content-type"] == PROBLEM_JSON
    body = response.json()
    request_id = body.pop("request_id", None)
    if request_id is not None:
        assert request_id in response.headers.get("x-request-id", "")
    return body


def validation_problem(detail: str, pointer: str) -> dict[str, Any]:
    return {
        "type": "/problems/request-validation",
        "title": "Request validation failed",
        "status": 422,
        "detail": "1 validation error in the request",
        "instance": PATH,
        "errors": [{"detail": detail, "pointer": pointer}],
    }


# -- results --------------------------------------------------------------------------------------


async def test_the_example_by_hand(client: httpx.AsyncClient) -> None:
    response = await client.post(PATH, json=EXAMPLE)
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"

    def point(t: int) -> dict[str, Any]:
        return {
            "step": t,
            "f": 4.0 ** (1 - t),
            "grad_norm": math.sqrt(8) * 2.0**-t,
            "learning_rate": None if t == 0 else 0.5,
            "x": None,
        }

    assert response.json() == {
        "status": "max_steps",
        "reason": "step 20: max_steps = 20 reached",
        "steps": 20,
        "final_step": 20,
        "f_final": 4.0**-19,
        "grad_norm_final": math.sqrt(8) * 2.0**-20,
        "x_final": {
            "encoding": "list",
            "dtype": "float64",
            "shape": [2],
            "data": [1 + 2.0**-19, -2 + 2.0**-19],
        },
        "trajectory": [point(t) for t in (0, 5, 10, 15, 20)],
    }


async def test_streamed_lines_equal_the_json_run(client: httpx.AsyncClient) -> None:
    request = {
        **EXAMPLE,
        "tolerances": {"grad_tol": 1e-3},
        "record_every": 2,
        "record_x": True,
        "encoding": "base64",
    }
    whole = (await client.post(PATH, json=request)).json()
    streamed = await client.post(PATH, json=request, headers={"accept": NDJSON})
    assert streamed.status_code == 200
    lines = ndjson_lines(streamed)
    *points, summary = lines
    trajectory = whole.pop("trajectory")
    assert points == trajectory
    assert summary == whole
    assert summary["status"] == "converged_grad" and summary["steps"] == 12
    assert [p["step"] for p in points] == [0, 2, 4, 6, 8, 10, 12]
    assert points[1]["x"]["encoding"] == "base64"


async def test_ten_thousand_steps_stream_101_points_and_a_summary(
    client: httpx.AsyncClient,
) -> None:
    request = {
        "function": quadratic([1.0, 2.0]),
        "x0": {"data": [0.0, 0.0]},
        "learning_rate": 1e-4,
        "max_steps": 10_000,
        "record_every": 100,
    }
    lines = ndjson_lines(await client.post(PATH, json=request, headers={"accept": NDJSON}))
    assert len(lines) == 102
    assert [line["step"] for line in lines[:-1]] == list(range(0, 10_001, 100))
    assert {k: lines[-1][k] for k in ("status", "steps", "final_step")} == {
        "status": "max_steps",
        "steps": 10_000,
        "final_step": 10_000,
    }


async def test_divergence_is_a_result(client: httpx.AsyncClient) -> None:
    response = await client.post(PATH, json={**EXAMPLE, "learning_rate": 3})
    assert response.status_code == 200
    body = response.json()
    # f_t = 4^(t+1) exceeds 1e12 · f_0 = 4e12 first at t = 20 (4^21 ≈ 4.4e12).
    assert (body["status"], body["steps"], body["final_step"]) == ("diverged", 20, 20)
    assert body["reason"] == (
        "step 20: f = 4.39805e+12 exceeds the blow-up threshold 4e+12 = 1e+12·max(|f(x_0)|, 1)"
    )


# -- refusals -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "detail", "pointer"),
    [
        ({"nesterov": True}, "nesterov needs momentum > 0 (got true)", "/nesterov"),
        (
            {"momentum": 0.5, "line_search": "backtracking"},
            "line_search 'backtracking' needs momentum 0, not 0.5: Armijo's "
            'condition is tested along -grad f (got "backtracking")',
            "/line_search",
        ),
        ({"learning_rate": 0}, "Input should be greater than 0 (got 0)", "/learning_rate"),
        ({"momentum": 1.0}, "Input should be less than 1 (got 1.0)", "/momentum"),
        (
            {"record_every": 0},
            "Input should be greater than or equal to 1 (got 0)",
            "/record_every",
        ),
        (
            {"tolerances": {"f_tol": -1}},
            "Input should be greater than or equal to 0 (got -1)",
            "/tolerances/f_tol",
        ),
    ],
)
async def test_invalid_options_name_their_field(
    client: httpx.AsyncClient, change: dict[str, Any], detail: str, pointer: str
) -> None:
    response = await client.post(PATH, json={**EXAMPLE, **change})
    assert response.status_code == 422
    assert problem_of(response) == validation_problem(detail, pointer)


async def test_a_non_scalar_function_is_refused_naming_its_output_shape(
    client: httpx.AsyncClient,
) -> None:
    response = await client.post(
        PATH, json={**EXAMPLE, "function": [{"op": "tanh"}], "x0": {"data": [[1.0, 2.0, 3.0]]}}
    )
    assert response.status_code == 422
    assert problem_of(response) == {
        "type": "/problems/shape-mismatch",
        "title": "Shape mismatch",
        "status": 422,
        "detail": "gradient descent needs a scalar function, but f(x) has shape [1, 3] "
        "(3 elements); end the function with a reduction such as 'sum' or 'squared_norm'",
        "instance": PATH,
    }


async def test_a_start_without_a_finite_f_is_refused(client: httpx.AsyncClient) -> None:
    function = [{"op": "scale", "factor": 1e300}, {"op": "scale", "factor": 1e300}, {"op": "sum"}]
    response = await client.post(PATH, json={**EXAMPLE, "function": function})
    assert response.status_code == 422
    assert problem_of(response) == {
        "type": "/problems/non-finite",
        "title": "Non-finite value",
        "status": 422,
        "detail": "operation 1 (scale): the result has non-finite entries (overflow)",
        "instance": PATH,
    }


@pytest.mark.parametrize("accept", ["application/json", NDJSON])
async def test_limits_are_413_before_running_even_when_streaming(
    client: httpx.AsyncClient, accept: str
) -> None:
    headers = {"accept": accept}
    too_long = await client.post(PATH, json={**EXAMPLE, "max_steps": 20_001}, headers=headers)
    assert too_long.status_code == 413
    assert problem_of(too_long) == {
        "type": "/problems/limit-exceeded",
        "title": "Limit exceeded",
        "status": 413,
        "detail": "gradient-descent steps: estimated 20001 exceeds the limit 20000",
        "instance": PATH,
        "quantity": "gradient-descent steps",
        "estimate": 20_001,
        "limit": 20_000,
        "setting": "max_descent_steps",
    }
    # (4999 // 2 + 1) points x 2 elements = 5000 fits; one more point does not.
    fits = {**EXAMPLE, "max_steps": 4_999, "record_every": 2, "record_x": True}
    assert (await client.post(PATH, json=fits)).status_code == 200
    over = await client.post(PATH, json={**fits, "max_steps": 5_000}, headers=headers)
    assert over.status_code == 413
    assert over.json()["quantity"] == "recorded trajectory elements (points x elements of x)"
    assert (over.json()["estimate"], over.json()["limit"]) == (5_002, 5_000)


# -- streaming: failures after the first byte, disconnects ----------------------------------------


async def test_a_failure_mid_stream_ends_it_with_a_problem_line(
    client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_update = engine_descent.update
    calls = 0

    def failing_update(*args: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls == 3:
            raise RuntimeError("boom")
        return real_update(*args)

    monkeypatch.setattr(engine_descent, "update", failing_update)
    request = {**EXAMPLE, "record_every": 1}
    lines = ndjson_lines(await client.post(PATH, json=request, headers={"accept": NDJSON}))
    assert [line["step"] for line in lines[:-1]] == [0, 1, 2]
    lines[-1].pop("request_id", None)
    assert lines[-1] == {
        "type": "/problems/internal-error",
        "title": "Internal server error",
        "status": 500,
        "detail": "the server failed while streaming; the error has been logged",
        "instance": PATH,
    }


def asgi_scope(spec_version: str, body: bytes) -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": spec_version},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": PATH,
        "raw_path": PATH.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [
            (b"host", b"testserver"),
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"accept", NDJSON.encode()),
        ],
        "client": ("127.0.0.1", 12345),
        "server": ("testserver", 80),
    }


# 2.4: the route notices through request.is_disconnected(); 2.0: Starlette's own listener cancels
# the stream. Either way no further slice of steps is run.
@pytest.mark.parametrize("spec_version", ["2.4", "2.0"])
async def test_a_client_that_disconnects_stops_the_computation(
    app: FastAPI, monkeypatch: pytest.MonkeyPatch, spec_version: str
) -> None:
    real_update = engine_descent.update
    steps = 0

    def counting_update(*args: Any) -> Any:
        nonlocal steps
        steps += 1
        return real_update(*args)

    monkeypatch.setattr(engine_descent, "update", counting_update)
    max_steps = 20_000  # about 0.5 s of steps; the first slice is 20 ms
    body = json.dumps(
        {
            "function": quadratic([1.0, 2.0]),
            "x0": {"data": [0.0, 0.0]},
            "learning_rate": 1e-6,
            "max_steps": max_steps,
            "record_every": max_steps,
        }
    ).encode()
    first_line = anyio.Event()
    body_sent = False
    messages: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        nonlocal body_sent
        if not body_sent:
            body_sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        if not first_line.is_set():
            await first_line.wait()
        return {"type": "http.disconnect"}  # the client leaves once it has read a line

    async def send(message: dict[str, Any]) -> None:
        messages.append(message)
        if message["type"] == "http.response.body" and message.get("body"):
            first_line.set()

    with anyio.fail_after(10):
        await app(asgi_scope(spec_version, body), receive, send)
    assert messages[0]["status"] == 200
    received = b"".join(m.get("body", b"") for m in messages if m["type"] == "http.response.body")
    lines = [json.loads(line) for line in received.splitlines()]
    assert lines[0]["step"] == 0
    assert all("status" not in line for line in lines), "no summary: the run was stopped"
    assert 0 < steps < max_steps // 2


# -- documentation --------------------------------------------------------------------------------


def test_openapi_documents_both_representations(app: FastAPI) -> None:
    document = app.openapi()
    operation = document["paths"][PATH]["post"]
    assert operation["operationId"] == "gradient_descent"
    content = operation["responses"]["200"]["content"]
    # The x0 form's response, or a program's (issue 9: inputs/variables, `final` by name).
    assert content["application/json"]["schema"]["anyOf"] == [
        {"$ref": "#/components/schemas/GradientDescentResponse"},
        {"$ref": "#/components/schemas/ProgramDescentResponse"},
    ]
    lines = content[NDJSON]["schema"]["oneOf"]
    assert lines[0] == {"$ref": "#/components/schemas/TrajectoryPoint"}
    assert lines[1]["title"] == "DescentSummaryLine"
    assert lines[2] == {"$ref": "#/components/schemas/Problem"}
    body = operation["requestBody"]["content"]["application/json"]["schema"]
    assert body == {"$ref": "#/components/schemas/GradientDescentRequest"}
    text = json.dumps(document)
    names = set(document["components"]["schemas"])
    refs = {part.split('"')[0] for part in text.split('"#/components/schemas/')[1:]}
    assert refs <= names, refs - names
    for status in ("413", "422", "500"):
        assert PROBLEM_JSON in operation["responses"][status]["content"]


def test_the_example_validates_against_the_request_model() -> None:
    GradientDescentRequest.model_validate_json(json.dumps(EXAMPLE))
    assert np.isfinite(EXAMPLE["learning_rate"])
