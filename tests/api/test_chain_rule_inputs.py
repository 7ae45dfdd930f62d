"""A chain-rule input whose matrix cannot be read is a 422 that points at it (found by fuzzing)."""

import pytest
from fastapi.testclient import TestClient

from service.main import create_app


@pytest.fixture(scope="module")
def client() -> TestClient:
    return TestClient(create_app())


@pytest.mark.parametrize("first, pointer, words", [
    ({"format": "dense", "data": {"data": [[[1.0], [2.0]]]}}, "/jacobians/0/data",
     "a dense Jacobian must be 2-D, got shape [1, 2, 1]"),
    ({"format": "coo", "shape": [2, 2], "row": [5], "col": [0], "data": [1.0]}, "/jacobians/0",
     "COO indices fall outside the matrix shape [2, 2]"),
])  # fmt: skip
def test_an_unreadable_matrix_is_pointed_at(
    client: TestClient, first: dict[str, object], pointer: str, words: str
) -> None:
    second = {"format": "dense", "data": {"data": [[1.0], [1.0]]}}
    response = client.post("/v1/chain-rule", json={"jacobians": [first, second]})
    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["errors"] == [{"detail": words, "pointer": pointer}]
