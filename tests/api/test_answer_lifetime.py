"""What a request allocates is freed when it is answered, not at the next garbage collection.

An object kept alive by a reference cycle waits for the collector, which runs after hundreds of
allocations: a large answer held that way stays in memory for many requests after it was sent,
and the next ones' arrays come from fresh pages, each faulted in again (README, "Binary bodies",
has the measured cost). The ASGI app is called directly, with the collector off, so that only
reference counting can free anything.
"""

import asyncio
import base64
import gc
import json
import weakref
from typing import Any

import numpy as np
import pytest

from service.api.openapi_document import EXAMPLES_FILE
from service.config import Settings
from service.engine import layout
from service.main import create_app

pytestmark = pytest.mark.anyio

OCTET = "application/octet-stream"
HEADER = "Inference-Header-Content-Length"
SMALL = np.arange(6.0).reshape(2, 3) / 7  # parsed and computed on the event loop
LARGE = np.arange(40_000.0).reshape(200, 200) / 7  # validated and computed in a worker thread
# A request body per route, as the README and the OpenAPI document show them.
EXAMPLES: dict[str, Any] = json.loads(EXAMPLES_FILE.read_text())


def binary_body(x: np.ndarray) -> tuple[bytes, list[tuple[bytes, bytes]]]:
    """A binary /v1/vec request (CONVENTIONS 3.1) and its headers."""
    tensor = {"encoding": "binary", "shape": list(x.shape), "binary_data_size": x.nbytes}
    header = json.dumps({"x": tensor, "order": "F", "encoding": "binary"}).encode()
    header += b" " * (-len(header) % 8)
    headers = [(b"content-type", OCTET.encode()), (HEADER.lower().encode(), b"%d" % len(header))]
    return header + x.astype("<f8").tobytes(), headers


def base64_body(x: np.ndarray) -> tuple[bytes, list[tuple[bytes, bytes]]]:
    """A JSON /v1/vec request with base64 data, and its headers."""
    data = base64.b64encode(x.astype("<f8").tobytes()).decode()
    tensor = {"encoding": "base64", "shape": list(x.shape), "data": data}
    body = json.dumps({"x": tensor, "order": "F", "encoding": "base64"}).encode()
    return body, [(b"content-type", b"application/json")]


async def post(
    app: Any, body: bytes, headers: list[tuple[bytes, bytes]], path: str = "/v1/vec"
) -> int:
    """POST to ``app``; return the status once the whole answer was sent (and dropped)."""
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
        "scheme": "http", "path": path, "raw_path": path.encode(), "root_path": "",
        "query_string": b"", "client": ("127.0.0.1", 1), "server": ("t", 80),
        "headers": [(b"host", b"t"), *headers, (b"content-length", b"%d" % len(body))],
    }  # fmt: skip
    received = False
    answered = asyncio.Event()
    status = 0

    async def receive() -> dict[str, Any]:
        nonlocal received
        if not received:
            received = True
            return {"type": "http.request", "body": body, "more_body": False}
        await answered.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]
        elif not message.get("more_body", False):
            answered.set()

    await app(scope, receive, send)
    return status


async def freed(ref: weakref.ref[np.ndarray]) -> bool:
    """Whether ``ref``'s array is freed within a second (the collector being off).

    For a moment after the answer is sent, the worker thread's last result and the event loop's
    handle that resumed this task may still hold it; an array in a reference cycle stays.
    """
    for _ in range(200):
        if ref() is None:
            return True
        await asyncio.sleep(0.005)
    return False


@pytest.fixture
def vectors(monkeypatch: pytest.MonkeyPatch) -> list[weakref.ref[np.ndarray]]:
    """Weak references to every array ``layout.vec`` returns (the answers' vectors)."""
    made: list[weakref.ref[np.ndarray]] = []
    original = layout.vec

    def recording(x: np.ndarray, order: str) -> np.ndarray:
        vector = original(x, order)
        made.append(weakref.ref(vector))
        return vector

    monkeypatch.setattr(layout, "vec", recording)
    return made


@pytest.mark.parametrize("x", [SMALL, LARGE], ids=["inline", "worker thread"])
@pytest.mark.parametrize("encode", [binary_body, base64_body], ids=["binary", "base64"])
async def test_the_answer_is_freed_once_sent(
    collector_off: None, vectors: list[weakref.ref[np.ndarray]], x: np.ndarray, encode: Any
) -> None:
    app = create_app(Settings())
    assert await post(app, *encode(x)) == 200
    [vector] = vectors
    assert await freed(vector)


@pytest.mark.parametrize("x", [SMALL, LARGE], ids=["inline", "worker thread"])
@pytest.mark.parametrize("encode", [binary_body, base64_body], ids=["binary", "base64"])
async def test_a_vec_request_leaves_nothing_for_the_collector(
    collector_off: None, x: np.ndarray, encode: Any
) -> None:
    app = create_app(Settings())
    body, headers = encode(x)
    assert await post(app, body, headers) == 200  # the first request builds lasting caches
    gc.collect()
    assert await post(app, body, headers) == 200
    await asyncio.sleep(0.05)  # the worker thread and the event loop drop their last references
    assert gc.collect() == 0


@pytest.mark.parametrize("path", sorted(EXAMPLES))
async def test_every_route_s_example_leaves_nothing_for_the_collector(
    collector_off: None, path: str
) -> None:
    # The routes that compute watch for the client's disconnect meanwhile, with a task stopped
    # once the computation is done.
    app = create_app(Settings())
    body = json.dumps(EXAMPLES[path]).encode()
    headers = [(b"content-type", b"application/json")]
    assert await post(app, body, headers, path) == 200
    gc.collect()
    assert await post(app, body, headers, path) == 200
    await asyncio.sleep(0.05)
    assert gc.collect() == 0
