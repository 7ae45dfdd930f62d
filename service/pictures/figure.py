"""Figures sized in pixels, and their bytes as PNG or SVG."""

import io
from typing import Literal, get_args

import matplotlib
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.backends.backend_svg import FigureCanvasSVG
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

PictureType = Literal["image/png", "image/svg+xml"]
PICTURE_TYPES: tuple[PictureType, ...] = get_args(PictureType)
DPI = 100
# Every picture fits in this square (the bound for density rasters holds for the whole
# image, margins and labels included).
MAX_SIDE_PX = 1024

# SVG element ids are random unless salted; a fixed salt makes identical requests give identical
# bytes. Text stays text (not glyph paths), so titles and labels can be read, searched and
# spoken. Process-wide on purpose: every SVG this service writes should be like that.
matplotlib.rcParams["svg.hashsalt"] = "jacobian-service"
matplotlib.rcParams["svg.fonttype"] = "none"


def new_figure(width_px: int, height_px: int) -> Figure:
    """Return an empty figure of exactly ``width_px`` x ``height_px`` pixels (at most 1024 each).

    Parameters
    ----------
    width_px, height_px : int

    Returns
    -------
    matplotlib.figure.Figure
    """
    width_px, height_px = min(width_px, MAX_SIDE_PX), min(height_px, MAX_SIDE_PX)
    return Figure(figsize=(width_px / DPI, height_px / DPI), dpi=DPI, facecolor="white")


def index_ticks(nbins: int | Literal["auto"] = "auto") -> MaxNLocator:
    """Return a tick locator for an axis of indices (entries, pixels, steps): integers only.

    ``min_n_ticks=1``: an axis of one index (a 1 x k kernel, a gradient's one column, a run of one
    recorded step) keeps its single integer tick; with the default of 2 matplotlib gives up on
    integers and labels it in tenths.
    """
    return MaxNLocator(nbins=nbins, integer=True, min_n_ticks=1)


def render(figure: Figure, media_type: PictureType, text: dict[str, str] | None = None) -> bytes:
    """Return the figure's bytes in ``media_type``.

    Parameters
    ----------
    figure : matplotlib.figure.Figure
    media_type : {"image/png", "image/svg+xml"}
    text : dict of str to str, optional
        PNG ``tEXt`` entries (machine-readable facts about the picture, e.g. where its raster
        is); not written into SVG, whose metadata keys are fixed.

    Returns
    -------
    bytes
    """
    buffer = io.BytesIO()
    if media_type == "image/png":
        FigureCanvasAgg(figure)
        metadata: dict[str, str | None] = {"Software": "jacobian-service", **(text or {})}
        figure.savefig(buffer, format="png", dpi=DPI, metadata=metadata)
    else:
        FigureCanvasSVG(figure)
        figure.savefig(buffer, format="svg", dpi=DPI, metadata={"Date": None})
    return buffer.getvalue()
