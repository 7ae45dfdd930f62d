"""Exceptions for RFC 9457 problem responses (CONVENTIONS section 6).

Every non-2xx answer becomes a :class:`ProblemError`, or one of its subclasses chosen by status::

    ProblemError
    ├── ClientProblemError          4xx: the request must change
    │   ├── AuthenticationError     401
    │   ├── LimitExceededError      413
    │   └── ValidationProblemError  422
    └── ServerProblemError          5xx
        └── UnavailableError        503 (retried by the client, bounded, before it is raised)

A body that is not problem+json (a proxy's HTML page, say) still becomes a problem, with
``type = "about:blank"`` and the start of the body as ``detail``.
"""

from __future__ import annotations

import json
from typing import Any

import httpx

_KNOWN_FIELDS = ("type", "title", "status", "detail", "instance", "errors", "request_id")
KEY_HINT = (
    "pass the key as Client(base_url, api_key=...), or to the command line as --api-key or "
    "the JACOBIAN_API_KEY environment variable"
)


class ProblemError(Exception):
    """A problem answered by the service.

    Attributes
    ----------
    type, title, detail : str
        The RFC 9457 fields (``type`` is a relative URI such as ``/problems/shape-mismatch``).
    status : int
        The HTTP status.
    errors : list of dict
        ``{"detail", "pointer"}`` for validation failures; ``pointer`` is a JSON Pointer into the
        request body.
    request_id : str or None
        The ``X-Request-ID`` of the exchange (quote it when reporting a problem).
    instance : str or None
        The request path.
    extra : dict
        Any further members (``estimate``, ``limit``, ``quantity``, ``hint``, ...).
    """

    def __init__(self, problem: dict[str, Any]) -> None:
        self.problem = problem
        self.type = str(problem.get("type", "about:blank"))
        self.title = str(problem.get("title", ""))
        self.status = int(problem.get("status", 0))
        self.detail = str(problem.get("detail", ""))
        self.instance: str | None = problem.get("instance")
        self.errors: list[dict[str, str]] = list(problem.get("errors") or [])
        self.request_id: str | None = problem.get("request_id")
        self.extra = {k: v for k, v in problem.items() if k not in _KNOWN_FIELDS}
        super().__init__(str(self))

    @property
    def pointers(self) -> list[str]:
        """The JSON Pointers of ``errors``, in order."""
        return [error.get("pointer", "") for error in self.errors]

    def __str__(self) -> str:
        lines = [f"{self.status} {self.title}: {self.detail}"]
        lines += [f"  at {e.get('pointer', '')}: {e.get('detail', '')}" for e in self.errors]
        lines += [f"  {key}: {value}" for key, value in self.extra.items()]
        lines.append(f"  type: {self.type}")
        if self.request_id:
            lines.append(f"  request id: {self.request_id}")
        return "\n".join(lines)


class ClientProblemError(ProblemError):
    """A 4xx problem: the request has to change."""


class AuthenticationError(ClientProblemError):
    """401: the service wants an API key (the message says how to pass one)."""

    def __str__(self) -> str:
        return f"{super().__str__()}\n  hint: {KEY_HINT}"


class LimitExceededError(ClientProblemError):
    """413: the request is over a configured limit (``extra`` has ``estimate`` and ``limit``)."""


class ValidationProblemError(ClientProblemError):
    """422: invalid input, shape or parameter; ``pointers`` say where."""


class ServerProblemError(ProblemError):
    """A 5xx problem."""


class UnavailableError(ServerProblemError):
    """503: every computation slot stayed busy through the client's retries."""


_BY_STATUS: dict[int, type[ProblemError]] = {
    401: AuthenticationError,
    413: LimitExceededError,
    422: ValidationProblemError,
    503: UnavailableError,
}


def problem_class(status: int) -> type[ProblemError]:
    """Return the exception class for an HTTP status."""
    if status in _BY_STATUS:
        return _BY_STATUS[status]
    return ClientProblemError if 400 <= status < 500 else ServerProblemError


def problem_from_dict(problem: dict[str, Any]) -> ProblemError:
    """Build the exception for a problem object (also used for in-stream problem lines)."""
    return problem_class(int(problem.get("status", 500)))(problem)


def problem_from_response(response: httpx.Response) -> ProblemError:
    """Build the exception for a non-2xx response whose body has been read."""
    problem: dict[str, Any] | None = None
    try:
        parsed = json.loads(response.content)
        if isinstance(parsed, dict):
            problem = parsed
    except ValueError:
        pass
    if problem is None:
        problem = {
            "type": "about:blank",
            "title": response.reason_phrase,
            "detail": response.text[:500],
        }
    problem.setdefault("status", response.status_code)
    problem.setdefault("request_id", response.headers.get("x-request-id"))
    return problem_from_dict(problem)
