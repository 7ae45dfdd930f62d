"""Problem responses become exceptions of the right class with readable messages."""

import httpx
import pytest
from jacobian_client.errors import (
    AuthenticationError,
    ClientProblemError,
    LimitExceededError,
    ProblemError,
    ServerProblemError,
    UnavailableError,
    ValidationProblemError,
    problem_from_response,
)

PROBLEM = {
    "type": "/problems/request-validation",
    "title": "Request validation failed",
    "status": 422,
    "detail": "1 validation error in the request",
    "errors": [{"detail": "Input should be a valid number", "pointer": "/x/data/0/1"}],
    "request_id": "abc-1",
}


def test_a_validation_problem_carries_every_field_and_prints_them() -> None:
    error = problem_from_response(httpx.Response(422, json=PROBLEM))
    assert isinstance(error, ValidationProblemError) and isinstance(error, ClientProblemError)
    assert (error.type, error.status, error.request_id) == (PROBLEM["type"], 422, "abc-1")
    assert error.pointers == ["/x/data/0/1"]
    text = str(error)
    for part in ("422", "Request validation failed", "/x/data/0/1", "abc-1", PROBLEM["type"]):
        assert part in text


@pytest.mark.parametrize(
    ("status", "cls"),
    [
        (401, AuthenticationError),
        (413, LimitExceededError),
        (404, ClientProblemError),
        (503, UnavailableError),
        (500, ServerProblemError),
    ],
)
def test_status_selects_the_class(status: int, cls: type[ProblemError]) -> None:
    error = problem_from_response(httpx.Response(status, json={"status": status, "title": "t"}))
    assert type(error) is cls


def test_401_says_how_to_pass_a_key() -> None:
    error = problem_from_response(
        httpx.Response(401, json={"status": 401, "title": "Unauthorized"})
    )
    assert "api_key=" in str(error) and "JACOBIAN_API_KEY" in str(error)


def test_a_body_that_is_not_a_problem_still_gives_one() -> None:
    response = httpx.Response(502, text="<html>bad gateway</html>", headers={"x-request-id": "r9"})
    error = problem_from_response(response)
    assert isinstance(error, ServerProblemError)
    assert (error.status, error.type, error.request_id) == (502, "about:blank", "r9")
    assert "bad gateway" in error.detail
