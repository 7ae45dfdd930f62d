"""Pictures as representations: ``Accept: image/png`` or ``Accept: image/svg+xml``.

A route that can draw its result asks :func:`accepted_picture` which picture, if any, the client
prefers to JSON, and answers with :func:`picture_response`. JSON stays the answer whenever the
client accepts it at least as much as any picture (no ``Accept``, ``*/*``, ``application/json``),
so every existing answer is unchanged. Errors stay ``application/problem+json`` whatever the
``Accept``.
"""

from typing import Any

from fastapi import Request
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from ..pictures import PICTURE_TYPES, PictureType

JSON = "application/json"


def _ranges(accept: str) -> list[tuple[str, str, float]]:
    """Parse an ``Accept`` header into (type, subtype, q) media ranges (RFC 9110 12.5.1)."""
    ranges = []
    for item in accept.split(","):
        media, *params = (part.strip() for part in item.split(";"))
        kind, _, subtype = media.lower().partition("/")
        if not kind or not subtype:
            continue
        q = 1.0
        for param in params:
            name, _, value = param.partition("=")
            if name.strip().lower() == "q":
                try:
                    q = min(max(float(value), 0.0), 1.0)
                except ValueError:
                    q = 0.0
        ranges.append((kind, subtype, q))
    return ranges


def quality(accept: str, media_type: str) -> float:
    """Return the q the ``Accept`` header gives ``media_type``: its most specific range's q."""
    kind, _, subtype = media_type.partition("/")
    best = (-1, 0.0)
    for range_kind, range_subtype, q in _ranges(accept):
        if (range_kind, range_subtype) == (kind, subtype):
            specificity = 2
        elif range_kind == kind and range_subtype == "*":
            specificity = 1
        elif (range_kind, range_subtype) == ("*", "*"):
            specificity = 0
        else:
            continue
        best = max(best, (specificity, q), key=lambda pair: pair[0])
    return best[1]


def accepted_picture(request: Request) -> PictureType | None:
    """Return the picture type the client prefers to JSON, or None to answer JSON.

    A picture is chosen only when its q is positive and higher than JSON's; among pictures, PNG
    wins ties.
    """
    accept = request.headers.get("accept")
    if not accept:
        return None
    json_q = quality(accept, JSON)
    best: PictureType | None = None
    best_q = json_q
    for media_type in PICTURE_TYPES:
        q = quality(accept, media_type)
        if q > best_q:
            best, best_q = media_type, q
    return best


class PictureNotAvailable(StarletteHTTPException):
    """The client asked for a picture of a result that has none (406 problem)."""

    def __init__(self, detail: str) -> None:
        super().__init__(406, detail)


def picture_response(content: bytes, media_type: PictureType) -> Response:
    """Return the picture; ``Vary: Accept`` because the same request also has a JSON answer."""
    return Response(content, media_type=media_type, headers={"Vary": "Accept"})


def picture_openapi(description: str) -> dict[int | str, dict[str, Any]]:
    """Return the ``responses`` entry that documents a route's picture representations."""
    binary = {"schema": {"type": "string", "format": "binary"}}
    return {
        200: {
            "description": description,
            "content": dict.fromkeys(PICTURE_TYPES, binary),
        },
        406: {
            "description": "A picture was asked for a result that has none.",
            "content": {
                "application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}
            },
        },
    }
