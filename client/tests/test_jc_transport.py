"""Retries, answers and streams, against httpx mock transports (no server, no service code)."""

import ast
import email.utils
import json
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from jacobian_client import AsyncClient, Client, UnavailableError, ValidationProblemError
from jacobian_client.transport import RetryPolicy

SATURATED = {"type": "/problems/saturated", "title": "Service busy", "status": 503, "detail": "d"}
PACKAGE = Path(__file__).resolve().parents[1]


class Script:
    """A mock server answering with the given responses in turn and recording the requests."""

    def __init__(self, *responses: httpx.Response) -> None:
        self.responses = list(responses)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        # A fresh response each time: httpx consumes a response's stream once.
        model = self.responses[min(len(self.requests), len(self.responses)) - 1]
        return httpx.Response(model.status_code, headers=model.headers, content=model.content)


def busy(retry_after: str = "1") -> httpx.Response:
    return httpx.Response(503, json=SATURATED, headers={"Retry-After": retry_after})


VEC = httpx.Response(
    200,
    json={
        "vector": {"encoding": "list", "shape": [2], "data": [1.0, 2.0]},
        "in_shape": [2],
        "order": "F",
    },
)


def test_a_503_is_retried_and_the_answer_returned() -> None:
    script = Script(busy(), VEC)
    client = Client("http://test", transport=httpx.MockTransport(script), max_retry_delay=0.001)
    np.testing.assert_array_equal(client.vec([1.0, 2.0]), [1.0, 2.0])
    assert len(script.requests) == 2
    assert script.requests[0].content == script.requests[1].content


@pytest.mark.parametrize("retries", [0, 2])
def test_retries_are_bounded(retries: int) -> None:
    script = Script(busy())
    client = Client(
        "http://test", transport=httpx.MockTransport(script), retries=retries, max_retry_delay=0.001
    )
    with pytest.raises(UnavailableError) as caught:
        client.vec([1.0])
    assert len(script.requests) == retries + 1
    assert caught.value.type == "/problems/saturated"


def test_async_client_retries_the_same_way() -> None:
    import asyncio

    script = Script(busy(), busy(), VEC)

    async def run() -> np.ndarray:
        async with AsyncClient(
            "http://test", transport=httpx.MockTransport(script), max_retry_delay=0.001
        ) as client:
            return await client.vec([1.0, 2.0])

    np.testing.assert_array_equal(asyncio.run(run()), [1.0, 2.0])
    assert len(script.requests) == 3


def test_other_problems_are_not_retried() -> None:
    problem = {
        "status": 422,
        "title": "Bad",
        "detail": "d",
        "errors": [{"detail": "x", "pointer": "/x"}],
    }
    script = Script(httpx.Response(422, json=problem))
    client = Client("http://test", transport=httpx.MockTransport(script))
    with pytest.raises(ValidationProblemError):
        client.vec([1.0])
    assert len(script.requests) == 1


def test_retry_after_is_honoured_up_to_the_cap() -> None:
    policy = RetryPolicy(retries=3, max_delay=5.0, default_delay=0.5)
    assert policy.delay(busy("2")) == 2.0
    assert policy.delay(busy("120")) == 5.0
    assert policy.delay(httpx.Response(503)) == 0.5
    soon = email.utils.formatdate(time.time() + 3, usegmt=True)
    assert 1.0 <= policy.delay(busy(soon)) <= 3.0


def test_the_api_key_is_sent_as_a_bearer_token() -> None:
    script = Script(VEC)
    Client("http://test", api_key="k1", transport=httpx.MockTransport(script)).vec([1.0, 2.0])
    assert script.requests[0].headers["authorization"] == "Bearer k1"


def test_a_problem_inside_the_stream_is_raised() -> None:
    lines = [
        {"step": 0, "f": 1.0, "grad_norm": 2.0, "learning_rate": None, "x": None},
        {
            "type": "/problems/internal-error",
            "title": "Internal error",
            "status": 500,
            "detail": "the server failed while streaming",
        },
    ]
    body = "".join(json.dumps(line) + "\n" for line in lines)
    script = Script(
        httpx.Response(200, text=body, headers={"content-type": "application/x-ndjson"})
    )
    client = Client("http://test", transport=httpx.MockTransport(script))
    stream = client.gradient_descent(["sum"], [1.0], learning_rate=0.1, max_steps=3, stream=True)
    records = []
    with pytest.raises(Exception, match="failed while streaming"):
        for record in stream:
            records.append(record)
    assert [r.step for r in records] == [0]
    assert script.requests[0].headers["accept"] == "application/x-ndjson"


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
    return names


def test_the_client_and_its_tests_import_nothing_from_the_service() -> None:
    files = sorted((PACKAGE / "src").rglob("*.py")) + sorted((PACKAGE / "tests").rglob("*.py"))
    assert len(files) > 10
    for path in files:
        bad = {n for n in _imports(path) if n.split(".")[0] in {"service", "fastapi", "pydantic"}}
        assert not bad, f"{path} imports {bad}"
