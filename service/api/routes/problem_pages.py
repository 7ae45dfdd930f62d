"""``GET /problems/{name}``: a short human page for each problem ``type`` the service uses.

A problem's ``type`` (``/problems/shape-mismatch``) is a relative URI; here it resolves to a
page saying when the problem occurs and what to do. The pages are plain HTML with no script or
stylesheet (the docs' Content-Security-Policy needs no exception).
"""

from html import escape

from fastapi import APIRouter
from fastapi.responses import HTMLResponse
from starlette.exceptions import HTTPException

from ..problems import PROBLEM_TYPES

# Pages for people, like /docs: outside the API's schema (and its SDK).
router = APIRouter(include_in_schema=False)

# name -> (status, when it happens, what to do)
PAGES: dict[str, tuple[int, str, str]] = {
    "request-validation": (422, "The body is not a valid request: a field is missing, unknown, "
        "of the wrong type or out of range. Each entry of `errors` has a `pointer` (RFC 6901) to "
        "the place in the body and a `detail` saying what is expected there.",
        "Fix the fields the pointers name; the request schemas are in GET /openapi.json."),
    "shape-mismatch": (422, "Shapes that do not fit together: a tensor of the wrong shape for an "
        "operation, Jacobians that do not chain, labels that do not describe a matrix.",
        "Compare the shapes the detail names; GET /v1/ops says what each operation expects."),
    "index-out-of-range": (422, "A multi-index or flat index outside the given dimensions.",
        "Indices run from 0 to dim - 1 (flat: to the product of the dims - 1)."),
    "invalid-parameter": (422, "A parameter value the operation cannot use (e.g. a window larger "
        "than the image, a permutation that is not one).", "Change the parameter the detail "
        "names."),
    "unknown-operation": (422, "A function names an operation that is not registered.",
        "GET /v1/ops lists the operations; write each as {\"op\": \"<name>\", ...}."),
    "non-finite": (422, "A computation produced or received NaN or infinity.", "Scale the "
        "input or choose a stabler function (log_softmax instead of log(softmax), ...)."),
    "domain-error": (422, "An input outside a function's domain (log of a non-positive number, "
        "sqrt's derivative at 0, ...).", "Move the input into the domain the detail names."),
    "engine-error": (422, "The engine refused the computation for a reason given in the detail.",
        "Follow the detail."),
    "invalid-tensor": (422, "A tensor that passed the schema but cannot be decoded (a dense "
        "Jacobian that is not 2-D, a COO index outside its shape, ...).", "Fix the tensor the "
        "detail names."),
    "limit-exceeded": (413, "The body, a tensor, or the estimated work, memory or response size "
        "is over a configured limit. `quantity`, `estimate` and `limit` say which and by how much, "
        "`setting` names the SERVICE_* setting; `hint` suggests a cheaper request (COO instead "
        "of dense, a JVP instead of a Jacobian). POST /v1/estimate answers the same estimate "
        "without computing.",
        "Send less, follow the hint, or raise the SERVICE_* setting on your own deployment."),
    "unsupported-media-type": (415, "A body that is neither application/json nor "
        "application/octet-stream, JSON declared in a charset other than UTF-8, or a "
        "Content-Encoding other than identity and gzip.",
        "Send Content-Type: application/json in UTF-8 (or the binary form of the conventions, "
        "section 3.1), uncompressed or gzip."),
    "invalid-body": (400, "A body that cannot be read at all, such as a broken or truncated gzip "
        "stream.", "Send the body again, compressed whole or not compressed."),
    "deadline-exceeded": (504, "The computation ran past SERVICE_COMPUTATION_DEADLINE_SECONDS and "
        "was stopped at its next checkpoint; its slot is free again. (Gradient descent and "
        "minimization end with status 'deadline' instead.)", "Ask for less (POST /v1/estimate "
        "says what a request costs), or raise the setting on your own deployment."),
    "cancelled": (400, "The client disconnected while its computation ran; the computation was "
        "stopped. Nobody normally sees this page's response: it is what the logs record.",
        "Nothing to do; keep the connection open until the answer arrives."),
    "not-acceptable": (406, "No representation of the answer satisfies the Accept header.",
        "Accept application/json (errors are always application/problem+json)."),
    "incomplete-body": (400, "The client disconnected before its whole body arrived.",
        "Retry with a complete body; check proxies' body size and time limits."),
    "body-stalled": (408, "The request body stopped arriving for longer than "
        "SERVICE_BODY_READ_TIMEOUT_SECONDS, or arrived slower than "
        "SERVICE_MIN_BODY_RATE_BYTES_PER_SECOND once its window had passed; the connection was "
        "not held for it.", "Send the whole body without pauses; check the client's and proxies' "
        "upload buffering."),
    "saturated": (503, "Every computation slot of this process stayed busy, or too many body "
        "bytes are in flight.", "Retry after the Retry-After header's seconds, or add replicas."),
    "unauthorized": (401, "API keys are configured and the request presented none or a wrong "
        "one.", "Send Authorization: Bearer <key> or X-API-Key: <key>."),
    "internal-error": (500, "An unexpected error; the detail is generic and the traceback is in "
        "the server's log under the response's X-Request-ID.", "Report it with the request id."),
}  # fmt: skip


def page(name: str) -> str:
    """Return the HTML page of problem type ``/problems/<name>``."""
    status, when, action = PAGES[name]
    title = name.replace("-", " ").capitalize()
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        f"<title>{escape(title)} — jacobian-service</title></head><body>"
        f"<h1>{escape(title)}</h1><p>type <code>/problems/{escape(name)}</code>, "
        f"HTTP {status}</p><h2>When</h2><p>{escape(when)}</p><h2>What to do</h2>"
        f"<p>{escape(action)}</p><p>Every problem is RFC 9457 application/problem+json; "
        'all types: <a href="/problems">/problems</a>.</p></body></html>'
    )


@router.get("/problems", response_class=HTMLResponse)
async def problem_index() -> HTMLResponse:
    """Return an HTML list of every problem type, each linked to its page."""
    items = "".join(
        f'<li><a href="{escape(t)}"><code>{escape(t)}</code></a></li>' for t in PROBLEM_TYPES
    )
    return HTMLResponse(
        '<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Problem types — '
        f"jacobian-service</title></head><body><h1>Problem types</h1><ul>{items}</ul></body></html>"
    )


@router.get("/problems/{name}", response_class=HTMLResponse)
async def problem_page(name: str) -> HTMLResponse:
    """Return the page a problem's ``type`` URI points at: when it occurs, what to do."""
    if name not in PAGES:
        raise HTTPException(404, f"no problem type /problems/{name}; GET /problems lists them")
    return HTMLResponse(page(name))
