"""Every entry of PROBLEM_TABLE renders as its RFC 9457 problem; routing errors and crashes too."""

import logging
from collections.abc import Callable

import httpx
import pytest
from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from starlette.requests import ClientDisconnect

from service.api.problems import (
    PROBLEM_TABLE,
    InvalidBody,
    NotAcceptable,
    UnsupportedMediaType,
)
from service.codec.errors import CodecError
from service.config import Settings
from service.engine import errors as engine_errors
from service.main import create_app

pytestmark = pytest.mark.anyio

PROBLEM_JSON = "application/problem+json"
GENERIC_500 = "the server failed to handle this request; the error has been logged"
SECRET = "s3cr3t-internal-state-0xdeadbeef"


def _validation_error() -> RequestValidationError:
    return RequestValidationError(
        [
            {
                "type": "float_type",
                "loc": ("body", "x", "data", 0),
                "msg": "Input should be a valid number",
                "input": "a",
            }
        ],
        body=b'{"x": {"data": ["a"]}}',
    )


# One raiser and the expected problem (minus ``instance``) per table entry, written from the spec.
CASES: dict[type[BaseException], tuple[Callable[[], BaseException], dict]] = {
    RequestValidationError: (
        _validation_error,
        {
            "type": "/problems/request-validation",
            "title": "Request validation failed",
            "status": 422,
            "detail": "1 validation error in the request",
            "errors": [
                {"detail": 'Input should be a valid number (got "a")', "pointer": "/x/data/0"}
            ],
        },
    ),
    engine_errors.IndexOutOfRange: (
        lambda: engine_errors.IndexOutOfRange("index [5] is out of range for dims [2]"),
        {
            "type": "/problems/index-out-of-range",
            "title": "Index out of range",
            "status": 422,
            "detail": "index [5] is out of range for dims [2]",
        },
    ),
    engine_errors.ShapeError: (
        lambda: engine_errors.ShapeError("x has shape [2] but k has shape [3]"),
        {
            "type": "/problems/shape-mismatch",
            "title": "Shape mismatch",
            "status": 422,
            "detail": "x has shape [2] but k has shape [3]",
        },
    ),
    engine_errors.ParameterError: (
        lambda: engine_errors.ParameterError("stride must be >= 1, got 0"),
        {
            "type": "/problems/invalid-parameter",
            "title": "Invalid parameter",
            "status": 422,
            "detail": "stride must be >= 1, got 0",
        },
    ),
    engine_errors.UnknownOperation: (
        lambda: engine_errors.UnknownOperation("unknown operation 'frobnicate'"),
        {
            "type": "/problems/unknown-operation",
            "title": "Unknown operation",
            "status": 422,
            "detail": "unknown operation 'frobnicate'",
        },
    ),
    engine_errors.NonFiniteError: (
        lambda: engine_errors.NonFiniteError("step 3 produced inf"),
        {
            "type": "/problems/non-finite",
            "title": "Non-finite value",
            "status": 422,
            "detail": "step 3 produced inf",
        },
    ),
    engine_errors.DomainError: (
        lambda: engine_errors.DomainError("log of -1.0 at index [0]"),
        {
            "type": "/problems/domain-error",
            "title": "Input outside the domain",
            "status": 422,
            "detail": "log of -1.0 at index [0]",
        },
    ),
    engine_errors.LimitExceeded: (
        lambda: engine_errors.LimitExceeded(
            "dense Jacobian elements", 1200, 1000, hint="ask for coo", setting="max_dense"
        ),
        {
            "type": "/problems/limit-exceeded",
            "title": "Limit exceeded",
            "status": 413,
            "detail": "dense Jacobian elements: estimated 1200 exceeds the limit 1000; ask for coo",
            "quantity": "dense Jacobian elements",
            "estimate": 1200,
            "limit": 1000,
            "hint": "ask for coo",
            "setting": "max_dense",
        },
    ),
    engine_errors.DeadlineExceeded: (
        lambda: engine_errors.DeadlineExceeded(0.25),
        {
            "type": "/problems/deadline-exceeded",
            "title": "Computation deadline exceeded",
            "status": 504,
            "detail": "the computation did not finish within its deadline of 0.25 s and was "
            "stopped",
        },
    ),
    engine_errors.Cancelled: (
        engine_errors.Cancelled,
        {
            "type": "/problems/cancelled",
            "title": "Computation cancelled",
            "status": 400,
            "detail": "the client disconnected; its computation was stopped",
        },
    ),
    engine_errors.EngineError: (
        lambda: engine_errors.EngineError("refused"),
        {
            "type": "/problems/engine-error",
            "title": "Computation refused",
            "status": 422,
            "detail": "refused",
        },
    ),
    CodecError: (
        lambda: CodecError("tensor 'x' cannot be written as base64"),
        {
            "type": "/problems/invalid-tensor",
            "title": "Invalid tensor",
            "status": 422,
            "detail": "tensor 'x' cannot be written as base64",
        },
    ),
    InvalidBody: (
        lambda: InvalidBody("the body is not valid gzip: incorrect header check"),
        {
            "type": "/problems/invalid-body",
            "title": "Unreadable request body",
            "status": 400,
            "detail": "the body is not valid gzip: incorrect header check",
        },
    ),
    UnsupportedMediaType: (
        lambda: UnsupportedMediaType("Content-Type 'text/plain' is not read here"),
        {
            "type": "/problems/unsupported-media-type",
            "title": "Unsupported media type",
            "status": 415,
            "detail": "Content-Type 'text/plain' is not read here",
        },
    ),
    NotAcceptable: (
        lambda: NotAcceptable("Accept 'image/gif' matches none of the representations"),
        {
            "type": "/problems/not-acceptable",
            "title": "Not acceptable",
            "status": 406,
            "detail": "Accept 'image/gif' matches none of the representations",
        },
    ),
    ClientDisconnect: (
        ClientDisconnect,
        {
            "type": "/problems/incomplete-body",
            "title": "Incomplete request body",
            "status": 400,
            "detail": "the client disconnected before the whole request body arrived",
        },
    ),
    Exception: (
        lambda: Exception(SECRET),
        {
            "type": "/problems/internal-error",
            "title": "Internal server error",
            "status": 500,
            "detail": GENERIC_500,
        },
    ),
}


class ShapeErrorWithoutEntry(engine_errors.ShapeError):
    """A subclass without its own table entry: rendered as its parent."""


EXTRA_CASES: dict[str, tuple[Callable[[], BaseException], dict]] = {
    "limit-without-hint": (
        lambda: engine_errors.LimitExceeded("COO non-zeros", 11, 10, setting="max_coo_nnz"),
        {
            "type": "/problems/limit-exceeded",
            "title": "Limit exceeded",
            "status": 413,
            "detail": "COO non-zeros: estimated 11 exceeds the limit 10",
            "quantity": "COO non-zeros",
            "estimate": 11,
            "limit": 10,
            "setting": "max_coo_nnz",
        },
    ),
    "subclass-uses-parent": (
        lambda: ShapeErrorWithoutEntry("links 1 and 2 do not fit"),
        {
            "type": "/problems/shape-mismatch",
            "title": "Shape mismatch",
            "status": 422,
            "detail": "links 1 and 2 do not fit",
        },
    ),
    "runtime-error": (
        lambda: RuntimeError(SECRET),
        {
            "type": "/problems/internal-error",
            "title": "Internal server error",
            "status": 500,
            "detail": GENERIC_500,
        },
    ),
}


def app_raising(make: Callable[[], BaseException]) -> FastAPI:
    app = create_app(Settings())

    @app.post("/raise")
    async def raise_it() -> None:
        raise make()

    return app


@pytest.fixture
def caplog_errors(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.ERROR, logger="service.problems")
    return caplog


REQUEST_ID = "test-problems-1"


async def call(app: FastAPI, method: str = "POST", path: str = "/raise") -> httpx.Response:
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(
        transport=transport, base_url="http://testserver", headers={"X-Request-ID": REQUEST_ID}
    ) as client:
        response = await client.request(method, path)
    # The id is echoed in the header and in the problem body (checked in the dicts below).
    assert response.headers["x-request-id"] == REQUEST_ID
    return response


def test_every_table_entry_has_a_case() -> None:
    assert set(CASES) == set(PROBLEM_TABLE)


@pytest.mark.parametrize(
    "exc_class", list(PROBLEM_TABLE), ids=[cls.__name__ for cls in PROBLEM_TABLE]
)
async def test_table_entry_renders_exact_problem(exc_class, caplog_errors) -> None:
    make, expected = CASES[exc_class]
    kind = PROBLEM_TABLE[exc_class]
    assert (kind.status, kind.type, kind.title) == (
        expected["status"],
        expected["type"],
        expected["title"],
    )
    response = await call(app_raising(make))
    assert response.status_code == expected["status"]
    assert response.headers["content-type"] == PROBLEM_JSON
    assert response.json() == expected | {"instance": "/raise", "request_id": REQUEST_ID}


@pytest.mark.parametrize(("make", "expected"), list(EXTRA_CASES.values()), ids=list(EXTRA_CASES))
async def test_more_exceptions_render_exact_problem(make, expected, caplog_errors) -> None:
    response = await call(app_raising(make))
    assert response.status_code == expected["status"]
    assert response.headers["content-type"] == PROBLEM_JSON
    assert response.json() == expected | {"instance": "/raise", "request_id": REQUEST_ID}


@pytest.mark.parametrize("exc_class", [RuntimeError, ValueError, KeyError, ZeroDivisionError])
async def test_unexpected_error_is_500_without_leaking_and_logged(exc_class, caplog_errors) -> None:
    def make() -> BaseException:
        return exc_class(SECRET)

    response = await call(app_raising(make))
    assert response.status_code == 500
    assert response.headers["content-type"] == PROBLEM_JSON
    assert response.json() == {
        "type": "/problems/internal-error",
        "title": "Internal server error",
        "status": 500,
        "detail": GENERIC_500,
        "instance": "/raise",
        "request_id": REQUEST_ID,
    }
    text = response.text
    assert SECRET not in text
    assert "Traceback" not in text and exc_class.__name__ not in text and "raise_it" not in text

    logged = [r for r in caplog_errors.records if r.name == "service.problems"]
    assert len(logged) == 1
    record = logged[0]
    assert record.levelno == logging.ERROR
    assert record.exc_info is not None and record.exc_info[0] is exc_class
    assert SECRET in caplog_errors.text
    assert "Traceback" in caplog_errors.text and "raise_it" in caplog_errors.text


async def test_404_is_about_blank_problem() -> None:
    response = await call(create_app(Settings()), "GET", "/no/such/path")
    assert response.status_code == 404
    assert response.headers["content-type"] == PROBLEM_JSON
    assert response.json() == {
        "type": "about:blank",
        "title": "Not Found",
        "status": 404,
        "detail": "GET /no/such/path: not found",
        "instance": "/no/such/path",
        "request_id": REQUEST_ID,
    }


async def test_405_is_about_blank_problem_with_allow() -> None:
    response = await call(create_app(Settings()), "GET", "/v1/vec")
    assert response.status_code == 405
    assert response.headers["content-type"] == PROBLEM_JSON
    assert response.headers["allow"] == "POST"
    assert response.json() == {
        "type": "about:blank",
        "title": "Method Not Allowed",
        "status": 405,
        "detail": "GET /v1/vec: method not allowed",
        "instance": "/v1/vec",
        "request_id": REQUEST_ID,
    }


async def test_engine_error_from_a_real_route_is_a_problem() -> None:
    # The same table applies to errors raised on the way through the real routes.
    transport = httpx.ASGITransport(app=create_app(Settings()))
    async with httpx.AsyncClient(
        transport=transport, base_url="http://testserver", headers={"X-Request-ID": REQUEST_ID}
    ) as client:
        response = await client.post("/v1/unflat", json={"flat": 6, "dims": [2, 3]})
    assert response.headers["content-type"] == PROBLEM_JSON
    assert response.json() == {
        "type": "/problems/index-out-of-range",
        "title": "Index out of range",
        "status": 422,
        "detail": "flat index 6 is out of range for dims [2, 3] (size 6)",
        "instance": "/v1/unflat",
        "request_id": REQUEST_ID,
    }
