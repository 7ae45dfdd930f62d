"""Op-list answers stay bit-identical now that a function may also be a program.

``tests/fixtures/oplist_answers.json`` holds requests and their exact response bodies, captured
by ``scripts/capture_oplist_answers.py`` on main at 9a2b376, before programs existed. Replaying them
must give the same bytes' worth of JSON: every float, index and key the same.
"""

import json
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from service.config import Settings
from service.main import create_app

CASES: list[dict[str, Any]] = json.loads(
    (Path(__file__).parents[1] / "fixtures" / "oplist_answers.json").read_text()
)


@pytest.fixture(scope="module")
def client() -> TestClient:
    return TestClient(create_app(Settings()))


def test_the_fixture_covers_every_function_endpoint() -> None:
    paths = {case["path"] for case in CASES}
    assert paths == {"/v1/evaluate", "/v1/jacobian", "/v1/jvp", "/v1/vjp", "/v1/gradient-descent"}


def test_op_list_answers_are_the_captured_ones(client: TestClient) -> None:
    for case in CASES:
        response = client.post(case["path"], json=case["request"])
        assert response.status_code == 200, response.text
        assert json.loads(response.text) == json.loads(case["response"]), case["path"]
