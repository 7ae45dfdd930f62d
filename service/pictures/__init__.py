"""Pictures of results: spy plots of Jacobians, descent curves, cross-correlation heatmaps.

Drawn with matplotlib's object-oriented API on the Agg (PNG) and SVG canvases, never ``pyplot``:
each call owns its figure, so renders in several worker threads do not share state. Like the
engine, this package knows nothing of HTTP; the API decides when a picture is wanted and renders
it in the same worker thread, under the same computation slot, as the computation it shows.
"""

from .curves import descent_picture
from .figure import PICTURE_TYPES, PictureType
from .heatmaps import correlation_picture
from .spy import spy_picture

__all__ = [
    "PICTURE_TYPES",
    "PictureType",
    "correlation_picture",
    "descent_picture",
    "spy_picture",
]
