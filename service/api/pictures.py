"""Pictures as representations: ``image/png`` and ``image/svg+xml``, offered through negotiation.

A route that can draw its result offers :func:`pictures` with its other representations
(:func:`service.api.negotiation.offer`), so ``Accept`` picks among JSON, binary, downloads and
pictures by the same rules, and JSON stays the answer for ``*/*`` or no ``Accept``. A picture is
drawn by the route itself (the representation has no renderer): it needs the request as well as
the result (the heatmaps show the input and the kernel), and it is drawn in the same worker
thread call, under the same computation slot, as the computation it shows.
"""

from collections.abc import Callable
from typing import Any

from fastapi import Request
from starlette.responses import Response

from ..pictures import PICTURE_TYPES, PictureType
from .negotiation import Representation, negotiate

FORMATS = {"image/png": "PNG", "image/svg+xml": "SVG, titles and labels as text"}


def pictures(
    description: str, applies: Callable[[Any], bool] = lambda body: True
) -> tuple[Representation, ...]:
    """Return the PNG and SVG representations, described by ``description``.

    Only the requests ``applies`` admits have them (406 for the others).
    """
    return tuple(
        Representation(media_type, f"{description} ({FORMATS[media_type]})", None, applies)
        for media_type in PICTURE_TYPES
    )


def accepted_picture(request: Request, operation: str, body: object) -> PictureType | None:
    """Return the picture type ``Accept`` picks for ``operation``, or None for another answer.

    Raises
    ------
    NotAcceptable
        If no representation of the operation satisfies ``Accept`` (406).
    """
    chosen = negotiate(request, operation, getattr(body, "encoding", None), body)
    if chosen is None or chosen.media_type not in PICTURE_TYPES:
        return None
    return chosen.media_type


def picture_response(content: bytes, media_type: PictureType) -> Response:
    """Return the picture; ``Vary: Accept`` because the same request has other answers too."""
    return Response(content, media_type=media_type, headers={"Vary": "Accept"})
