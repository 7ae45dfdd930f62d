"""Cross-correlation as heatmaps: the input channels, the kernel and the output side by side."""

import math

import numpy as np
from matplotlib.axes import Axes

from ..engine.types import FloatArray
from .figure import PictureType, index_ticks, new_figure, render

MAX_PANELS = 4  # per column: the first channels / filters / maps
MAX_PANEL_PX = 256  # a larger map is shown at every k-th pixel (a strided view, no copy)
ANNOTATE_UP_TO = 8  # maps up to this size print their values in the cells
COLUMN_PX = 330
ROW_PX = 230
HEADER_PX = 70


def _maps(tensor: FloatArray, label: str, index_names: str) -> list[tuple[str, FloatArray]]:
    """Split a tensor into its 2-D maps (leading indices named), the first MAX_PANELS of them."""
    lead = tensor.shape[:-2]
    panels = []
    for index in np.ndindex(*lead):
        names = ", ".join(f"{n}={i}" for n, i in zip(index_names[: len(lead)], index, strict=True))
        panels.append((f"{label}[{names}]" if names else label, tensor[index]))
        if len(panels) == MAX_PANELS:
            break
    return panels


def _heatmap(axes: Axes, title: str, values: FloatArray) -> None:
    height, width = values.shape
    every = math.ceil(max(height, width) / MAX_PANEL_PX)
    shown = values[::every, ::every]
    # The extent keeps the axes in the map's own indices when only every k-th pixel is shown.
    extent = (-0.5, width - 0.5, height - 0.5, -0.5)
    image = axes.imshow(shown, cmap="viridis", interpolation="nearest", extent=extent)
    axes.figure.colorbar(image, ax=axes, fraction=0.046, pad=0.04)
    suffix = f", every {every}th pixel" if every > 1 else ""
    axes.set_title(f"{title} ({height} × {width}{suffix})", fontsize=9)
    axes.tick_params(labelsize=7)
    axes.xaxis.set_major_locator(index_ticks())
    axes.yaxis.set_major_locator(index_ticks())
    if max(height, width) <= ANNOTATE_UP_TO:
        middle = (float(shown.min()) + float(shown.max())) / 2
        for (i, j), value in np.ndenumerate(shown):
            color = "black" if value > middle else "white"
            axes.text(j, i, f"{value:.3g}", ha="center", va="center", fontsize=8, color=color)


def correlation_picture(
    x: FloatArray, kernel: FloatArray, output: FloatArray, media_type: PictureType
) -> bytes:
    """Return the heatmaps of a cross-correlation as PNG or SVG bytes.

    Parameters
    ----------
    x : ndarray, shape (C, H, W) or (N, C, H, W)
        The image (a batch shows its first item).
    kernel : ndarray, shape (C, H', W') or (K, C, H', W')
    output : ndarray, shape (H_out, W_out), (K, H_out, W_out) or (N, ...)
    media_type : {"image/png", "image/svg+xml"}

    Returns
    -------
    bytes
    """
    batch = x.ndim == 4
    image = x[0] if batch else x
    out = output[0] if batch else output
    prefix = "x[n=0]" if batch else "x"
    columns = [
        _maps(image, prefix, "c"),
        _maps(kernel, "kernel", "kc" if kernel.ndim == 4 else "c"),
        _maps(out, "output[n=0]" if batch else "output", "k"),
    ]
    n_rows = max(len(column) for column in columns)
    figure = new_figure(COLUMN_PX * 3, HEADER_PX + ROW_PX * n_rows)
    grid = figure.add_gridspec(n_rows, 3)
    for j, column in enumerate(columns):
        for i, (title, values) in enumerate(column):
            _heatmap(figure.add_subplot(grid[i, j]), title, values)
    figure.suptitle(
        f"cross-correlation: x {x.shape} ⋆ kernel {kernel.shape} → output {output.shape}",
        fontsize=11,
    )
    figure.subplots_adjust(
        left=0.06, right=0.95, bottom=0.05, top=1 - HEADER_PX / figure.bbox.height, wspace=0.45
    )
    return render(figure, media_type)
