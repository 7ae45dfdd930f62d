"""Bodies are read without copies: one-part bodies as they are, aligned segments as views.

The binary bodies here are written from CONVENTIONS 3.1 by hand (a JSON header, then the raw
little-endian bytes); the ASGI app is called directly so that the test owns the very bytes
object the server receives and can tell a view of it from a copy.
"""

import asyncio
import json
from typing import Any

import numpy as np
import pytest

from service.api.routes import tensors
from service.config import Settings
from service.main import create_app

pytestmark = pytest.mark.anyio

X = np.arange(24.0).reshape(4, 6) / 7
OCTET = "application/octet-stream"
HEADER = "Inference-Header-Content-Length"


def binary_vec_body(pad_to: int) -> tuple[bytes, bytes]:
    """A binary /v1/vec body whose JSON header is padded with spaces to a multiple of pad_to."""
    tensor = {"encoding": "binary", "shape": list(X.shape), "dtype": "float64",
              "binary_data_size": X.nbytes}  # fmt: skip
    header = json.dumps({"x": tensor, "order": "F", "encoding": "binary"}).encode()
    header += b" " * (-len(header) % pad_to)
    return header, header + X.astype("<f8").tobytes()


async def call(parts: list[bytes], header_length: int) -> tuple[int, dict[str, str], bytes]:
    """POST /v1/vec to a fresh app as these body parts; return status, headers and body."""
    app = create_app(Settings())
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
        "scheme": "http", "path": "/v1/vec", "raw_path": b"/v1/vec", "root_path": "",
        "query_string": b"", "client": ("127.0.0.1", 1), "server": ("t", 80),
        "headers": [(b"host", b"t"), (b"content-type", OCTET.encode()),
                    (HEADER.lower().encode(), str(header_length).encode()),
                    (b"content-length", str(sum(map(len, parts))).encode())],
    }  # fmt: skip
    messages = [{"type": "http.request", "body": part, "more_body": i < len(parts) - 1}
                for i, part in enumerate(parts)]  # fmt: skip
    answered = asyncio.Event()
    start: dict[str, Any] = {}
    chunks: list[bytes] = []

    async def receive() -> dict[str, Any]:
        if messages:
            return messages.pop(0)
        await answered.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            start.update(message)
        else:
            chunks.append(bytes(message.get("body", b"")))
            if not message.get("more_body", False):
                answered.set()

    await app(scope, receive, send)
    headers = {k.decode(): v.decode() for k, v in start["headers"]}
    return start["status"], headers, b"".join(chunks)


@pytest.fixture
def decoded(monkeypatch: pytest.MonkeyPatch) -> list[np.ndarray]:
    """Record the array the /v1/vec route decodes from the request."""
    seen: list[np.ndarray] = []
    original = tensors.decode_tensor

    def recording(tensor: Any) -> np.ndarray:
        array = original(tensor)
        seen.append(array)
        return array

    monkeypatch.setattr(tensors, "decode_tensor", recording)
    return seen


def vector_of(status: int, headers: dict[str, str], content: bytes) -> np.ndarray:
    assert status == 200, content
    length = int(headers[HEADER.lower()])
    descriptor = json.loads(content[:length])["vector"]
    assert descriptor["binary_data_size"] == len(content) - length
    return np.frombuffer(content, dtype="<f8", offset=length)


async def test_an_aligned_segment_of_a_one_part_body_is_a_view_of_the_body(
    decoded: list[np.ndarray],
) -> None:
    header, body = binary_vec_body(8)
    answer = await call([body], len(header))
    assert np.array_equal(vector_of(*answer), X.ravel(order="F"))
    assert np.shares_memory(decoded[0], np.frombuffer(body, dtype=np.uint8))


async def test_an_unaligned_segment_is_copied_once_and_stays_exact(
    decoded: list[np.ndarray],
) -> None:
    header, body = binary_vec_body(1)
    if len(header) % 8 == 0:
        header, body = header + b" ", header + b" " + body[len(header) :]
    answer = await call([body], len(header))
    assert np.array_equal(vector_of(*answer), X.ravel(order="F"))
    assert decoded[0].flags.aligned
    assert not np.shares_memory(decoded[0], np.frombuffer(body, dtype=np.uint8))


async def test_a_body_in_several_parts_is_joined() -> None:
    header, body = binary_vec_body(8)
    parts = [body[:5], body[5 : len(header) + 3], body[len(header) + 3 :]]
    answer = await call(parts, len(header))
    assert np.array_equal(vector_of(*answer), X.ravel(order="F"))


async def test_the_answer_header_is_padded_so_its_segments_are_aligned() -> None:
    header, body = binary_vec_body(1)
    status, headers, content = await call([body], len(header))
    length = int(headers[HEADER.lower()])
    assert length % 8 == 0
    # the padding is JSON whitespace after the document
    assert json.loads(content[:length])["vector"]["shape"] == [X.size]
    assert content[:length].rstrip(b" ").endswith(b"}")
    vector = vector_of(status, headers, content)
    assert vector.flags.aligned and np.array_equal(vector, X.ravel(order="F"))
