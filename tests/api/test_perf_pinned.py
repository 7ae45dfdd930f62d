"""Issue 12's faster paths keep every answer bit-identical, signs of zeros included.

``tests/fixtures/perf_pins.json`` holds requests and their exact response bodies, captured by
``scripts/capture_perf_pins.py`` on main at 640fe78, before the descent fast path, the JVP/VJP
rules from stored outputs and the disjoint average pools. Each float is compared by its
shortest repr, which is unique per float64, so one changed bit or a zero's sign fails.
"""

import json
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from service.config import Settings
from service.main import create_app

CASES: list[dict[str, Any]] = json.loads(
    (Path(__file__).parents[1] / "fixtures" / "perf_pins.json").read_text()
)


def _exact(text: str) -> Any:
    # Floats stay their literal text: 0.0 and -0.0, or two neighbouring floats, differ.
    return json.loads(text, parse_float=str)


@pytest.fixture(scope="module")
def client() -> TestClient:
    return TestClient(create_app(Settings()))


def test_the_fixture_covers_descent_minimize_and_products() -> None:
    paths = {case["path"] for case in CASES}
    assert paths == {
        "/v1/gradient-descent",
        "/v1/minimize",
        "/v1/evaluate",
        "/v1/jvp",
        "/v1/vjp",
        "/v1/jacobian",
    }
    statuses = {
        json.loads(case["response"])["status"]
        for case in CASES
        if case["path"] == "/v1/gradient-descent"
    }
    assert statuses == {"max_steps", "diverged", "converged_grad", "converged_f", "converged_x"}


@pytest.mark.parametrize("index", range(len(CASES)), ids=lambda i: f"{i}-{CASES[i]['path']}")
def test_answers_are_the_captured_ones(client: TestClient, index: int) -> None:
    case = CASES[index]
    response = client.post(case["path"], json=case["request"])
    assert response.status_code == 200, response.text
    assert _exact(response.text) == _exact(case["response"])
