"""The prepared program evaluator keeps every program-run answer bit-identical.

``tests/fixtures/program_pins.json`` holds requests with their status codes and exact response
bodies, captured by ``scripts/capture_program_pins.py`` on main at 7aa9681, before the prepared
plan of program descent and minimize: runs of every method over programs, their failures with
the node they name, and program Hessians. Floats are compared by their shortest repr.
"""

import json
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from service.config import Settings
from service.main import create_app

from .test_perf_pinned import _exact

CASES: list[dict[str, Any]] = json.loads(
    (Path(__file__).parents[1] / "fixtures" / "program_pins.json").read_text()
)


@pytest.fixture(scope="module")
def client() -> TestClient:
    return TestClient(create_app(Settings()))


def test_the_fixture_covers_every_method_and_the_failures() -> None:
    methods = {case["request"].get("method") for case in CASES if case["path"] == "/v1/minimize"}
    assert methods == {"gd", "adam", "lbfgs", "newton-cg", "trust-ncg"}
    reasons = [json.loads(case["response"]).get("reason", "") for case in CASES]
    assert any("(overflow)" in r and "(square)" in r for r in reasons)  # found behind tanh
    assert any("log needs x > 0" in r for r in reasons)
    assert {case["status_code"] for case in CASES} == {200, 422}


def _answer(text: str) -> Any:
    answer = _exact(text)
    answer.pop("request_id", None)  # a problem answer names its request
    return answer


@pytest.mark.parametrize("index", range(len(CASES)), ids=lambda i: f"{i}-{CASES[i]['path']}")
def test_answers_are_the_captured_ones(client: TestClient, index: int) -> None:
    case = CASES[index]
    response = client.post(case["path"], json=case["request"])
    assert response.status_code == case["status_code"], response.text
    assert _answer(response.text) == _answer(case["response"])
