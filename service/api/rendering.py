"""JSON answers with large base64 data, written as bytes in the worker thread.

FastAPI serializes a returned model on the event-loop thread with pydantic's ``dump_json``, which
copies every string into the output while checking it for characters to escape: 130 ms for the
43 MB base64 COO Jacobian of a (3, 224, 224) image, during which no other client is served.
Base64 text (``A-Z a-z 0-9 + / =``) never needs escaping, so the body can be assembled from
bytes: the model is dumped with a short placeholder in place of each large base64 string, and
the strings are sent between its pieces, as the bytes they were made from. The result is the
same JSON document, byte for byte, as FastAPI would have written.
"""

import uuid
from typing import Any

from pydantic import BaseModel
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from ..codec.tensors import Base64Text

# Base64 strings at least this long are spliced in; shorter ones are dumped as usual.
SPLICE_MIN = 4096
# The placeholders' prefix: random per process (no client can write it into an answer), made once
# (uuid4 reads the OS's random source, a system call that small answers would pay every time).
_TAG = f"splice-{uuid.uuid4().hex}-"


def _swap(model: BaseModel, tag: str, texts: list[str]) -> BaseModel:
    """Return ``model`` with its large base64 strings replaced by numbered placeholders.

    A string counts as base64 when it is a field of a model whose ``encoding`` is ``"base64"``
    (the wire format's tensors and COO Jacobians); nested models and lists of them are visited.
    """
    base64 = getattr(model, "encoding", None) == "base64"
    update: dict[str, Any] = {}
    for name in type(model).model_fields:
        value = getattr(model, name)
        if base64 and isinstance(value, str) and len(value) >= SPLICE_MIN:
            update[name] = f"{tag}{len(texts)}"
            texts.append(value)
        elif isinstance(value, BaseModel):
            swapped = _swap(value, tag, texts)
            if swapped is not value:
                update[name] = swapped
        elif isinstance(value, list) and any(isinstance(item, BaseModel) for item in value):
            items = [_swap(v, tag, texts) if isinstance(v, BaseModel) else v for v in value]
            if any(new is not old for new, old in zip(items, value, strict=True)):
                update[name] = items
    return model.model_copy(update=update) if update else model


def json_pieces(model: BaseModel) -> list[bytes]:
    """Return ``model`` as the JSON document FastAPI writes, in pieces to send in turn.

    Parameters
    ----------
    model : pydantic.BaseModel
        A response model; its base64 strings must be standard base64 (no escaping needed).

    Returns
    -------
    list of bytes
        Their concatenation is UTF-8 JSON identical to ``model.model_dump_json(by_alias=True)``.
        A :class:`~service.codec.tensors.Base64Text` is a piece as the bytes it keeps.
    """
    texts: list[str] = []
    tag = _TAG
    skeleton = _swap(model, tag, texts)
    dumped = skeleton.__pydantic_serializer__.to_json(skeleton, by_alias=True)
    pieces: list[bytes] = []
    start = 0
    # Placeholders come out in field order, which is the order they were numbered in.
    for number, text in enumerate(texts):
        placeholder = f'"{tag}{number}"'.encode()
        at = dumped.index(placeholder, start)
        raw = text.ascii if isinstance(text, Base64Text) else text.encode("ascii")
        pieces += [dumped[start:at] + b'"', raw, b'"']
        start = at + len(placeholder)
    pieces.append(dumped[start:])
    return pieces


class PiecesResponse(Response):
    """An ``application/json`` response whose body is sent piece by piece, never joined."""

    media_type = "application/json"

    def __init__(self, pieces: list[bytes]) -> None:
        self.pieces = pieces
        super().__init__(b"", headers={"content-length": str(sum(map(len, pieces)))})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Send the start, then every piece (``more_body`` until the last)."""
        await send(
            {"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers}
        )
        last = len(self.pieces) - 1
        for index, piece in enumerate(self.pieces):
            await send({"type": "http.response.body", "body": piece, "more_body": index < last})


def json_response(model: BaseModel) -> Response:
    """Return ``model`` as an ``application/json`` response of :func:`json_pieces`."""
    return PiecesResponse(json_pieces(model))
