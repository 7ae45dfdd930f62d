"""Spy plots of Jacobians, drawn from the COO entries without densifying the matrix.

The matrix is mapped onto a raster of blocks. A small matrix gets one block per entry, drawn as a
square of several pixels; a matrix with more than :data:`MAX_RASTER_PX` rows (or columns) gets
blocks of ``ceil(rows / MAX_RASTER_PX)`` rows (columns), and each pixel shows how many non-zeros
its block holds (a density raster). Counting is a ``bincount`` over chunks of the COO entries, so
the transient memory is bounded by the chunk and the raster, never by the dense matrix.

Colours: white is a block without non-zeros. When no block holds more than one non-zero (every
small matrix) a non-zero is :data:`SPY_COLOR`; otherwise a block with ``n`` non-zeros gets
``viridis_r(n / max n)`` (perceptually uniform, darker is denser), explained by a colour bar.
"""

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp
from matplotlib import colormaps
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from numpy.typing import NDArray

from ..engine.cancel import checkpoint
from ..engine.jacobian import Jacobian
from ..engine.types import IndexArray
from .figure import PictureType, index_ticks, new_figure, render

MAX_RASTER_PX = 768  # raster side; with margins and colour bar the image stays within 1024 px
TARGET_PX = 480  # a small matrix is scaled up until its longer side reaches about this
MAX_CELL_PX = 40  # ... with at most this many pixels per entry
MIN_SIDE_PX = 64  # a thin matrix (a gradient row) is stretched to at least this
CHUNK = 1 << 20  # COO entries counted at once: 8 MiB per int64 index array
DENSITY_CMAP = "viridis_r"
SPY_COLOR = (31, 59, 115, 255)
BACKGROUND = (255, 255, 255, 255)
MARGIN = {"left": 110, "right": 30, "top": 100, "bottom": 90}
COLORBAR_PX = 110  # colour bar and its labels, right of a density raster
MIN_FIGURE = (620, 420)
FRAME_GAP_PX = 2  # the axes frame is drawn just outside the raster, never over its pixels


@dataclass(frozen=True)
class Blocks:
    """How matrix entries map to raster pixels along one axis.

    Attributes
    ----------
    entries : int
        Matrix rows (or columns) per block; 1 unless the matrix is larger than the raster.
    pixels : int
        Pixels per block; 1 for a density raster.
    count : int
        Blocks along the axis: ``ceil(n / entries)``.
    """

    entries: int
    pixels: int
    count: int

    @property
    def span(self) -> int:
        """Raster pixels along the axis."""
        return self.pixels * self.count


def blocks_for(n: int, longer: int) -> Blocks:
    """Return the block mapping of an axis of ``n`` entries; ``longer`` is the longer side."""
    if n > MAX_RASTER_PX:
        entries = math.ceil(n / MAX_RASTER_PX)
        return Blocks(entries, 1, math.ceil(n / entries))
    scale = min(max(TARGET_PX // longer, 1), MAX_CELL_PX)
    stretch = min(math.ceil(MIN_SIDE_PX / n), MAX_CELL_PX, MAX_RASTER_PX // n)
    return Blocks(1, max(scale, stretch), n)


def block_counts(
    row: NDArray[np.integer[Any]], col: NDArray[np.integer[Any]], rows: Blocks, cols: Blocks
) -> IndexArray:
    """Count the COO entries in every block, in chunks of :data:`CHUNK` entries.

    Parameters
    ----------
    row, col : ndarray of int, shape (nnz,)
        Coordinates of the stored entries (canonical COO: no duplicates, no explicit zeros).
    rows, cols : Blocks

    Returns
    -------
    ndarray of int64, shape (rows.count, cols.count)

    Raises
    ------
    DeadlineExceeded, Cancelled
        Between chunks, when the running computation's deadline passed or its client left.
    """
    cells = rows.count * cols.count
    counts = np.zeros(cells, dtype=np.int64)
    for start in range(0, row.size, CHUNK):
        # The plot runs under its computation's deadline: a 10^7-entry matrix is 10 chunks.
        checkpoint()
        r = row[start : start + CHUNK].astype(np.int64) // rows.entries
        c = col[start : start + CHUNK].astype(np.int64) // cols.entries
        counts += np.bincount(r * cols.count + c, minlength=cells)
    return counts.reshape(rows.count, cols.count)


def colorize(counts: IndexArray, rows: Blocks, cols: Blocks) -> np.ndarray:
    """Return the RGBA raster, shape (rows.span, cols.span, 4), uint8, of the block counts."""
    rgba = np.empty((*counts.shape, 4), dtype=np.uint8)
    rgba[...] = BACKGROUND
    lit = counts > 0
    peak = int(counts.max(initial=0))
    if peak <= 1:
        rgba[lit] = SPY_COLOR
    else:
        rgba[lit] = colormaps[DENSITY_CMAP](counts[lit] / peak, bytes=True)
    return np.repeat(np.repeat(rgba, rows.pixels, axis=0), cols.pixels, axis=1)


def _axis_label(role: str, shape: tuple[int, ...], order: str) -> str:
    return f"{role} flat index\n(order {order} over shape {tuple(shape)})"


def _title(name: str, jacobian: Jacobian, shape: tuple[int, int], nnz: int) -> str:
    rows, cols = shape
    return (
        f"{name}: {rows} × {cols}, nnz {nnz}\n"
        f"layout {jacobian.layout}, order {jacobian.order}, "
        f"in_shape {tuple(jacobian.in_shape)}, out_shape {tuple(jacobian.out_shape)}"
    )


def spy_figure(output: str, wrt: str, jacobian: Jacobian) -> tuple[Figure, dict[str, str]]:
    """Draw the spy plot (or density raster) of a COO Jacobian.

    Parameters
    ----------
    output, wrt : str
        Names of the function's output and of the input differentiated, for the title
        (``∂output/∂wrt``) and the axis labels (e.g. ``"output"`` and ``"kernel"``).
    jacobian : Jacobian
        With a ``scipy.sparse.coo_array`` matrix, (in_size, out_size) for ``in_out``.

    Returns
    -------
    figure : matplotlib.figure.Figure
    text : dict of str to str
        Where the raster is in the image and how blocks map to entries, for the PNG's ``tEXt``.
    """
    coo = jacobian.matrix
    if not isinstance(coo, sp.coo_array):
        raise TypeError("spy plots are drawn from COO Jacobians; compute the COO format")
    n_rows, n_cols = (int(n) for n in coo.shape)
    rows = blocks_for(n_rows, max(n_rows, n_cols))
    cols = blocks_for(n_cols, max(n_rows, n_cols))
    counts = block_counts(coo.row, coo.col, rows, cols)
    peak = int(counts.max(initial=0))
    density = peak > 1
    raster = colorize(counts, rows, cols)

    extra = COLORBAR_PX if density else 0
    width = max(MARGIN["left"] + cols.span + MARGIN["right"] + extra, MIN_FIGURE[0])
    height = max(MARGIN["top"] + rows.span + MARGIN["bottom"], MIN_FIGURE[1])
    figure = new_figure(width, height)
    # Integer pixel offsets (from the bottom left), so figimage places the raster unresampled.
    x0 = max(MARGIN["left"], (width - extra - cols.span) // 2)
    y0 = max(MARGIN["bottom"], (height - rows.span) // 2)
    figure.figimage(raster, xo=x0, yo=y0, origin="upper", resize=False)

    # Axes in matrix coordinates (entry j spans [j - 0.5, j + 0.5]), framed FRAME_GAP_PX outside.
    gap = FRAME_GAP_PX
    axes = figure.add_axes(
        (
            (x0 - gap) / width,
            (y0 - gap) / height,
            (cols.span + 2 * gap) / width,
            (rows.span + 2 * gap) / height,
        )
    )
    axes.set_facecolor("none")
    per_col_px = cols.span / n_cols
    per_row_px = rows.span / n_rows
    axes.set_xlim(-0.5 - gap / per_col_px, n_cols - 0.5 + gap / per_col_px)
    axes.set_ylim(n_rows - 0.5 + gap / per_row_px, -0.5 - gap / per_row_px)
    axes.xaxis.set_major_locator(index_ticks(8))
    axes.yaxis.set_major_locator(index_ticks(8))
    axes.xaxis.tick_top()
    axes.xaxis.set_label_position("bottom")
    in_role, out_role = f"input ({wrt})", "output"
    row_role, col_role = (in_role, out_role) if jacobian.layout == "in_out" else (out_role, in_role)
    row_shape, col_shape = (
        (jacobian.in_shape, jacobian.out_shape)
        if jacobian.layout == "in_out"
        else (jacobian.out_shape, jacobian.in_shape)
    )
    axes.set_ylabel(f"rows: {_axis_label(row_role, row_shape, jacobian.order)}")
    axes.set_xlabel(f"columns: {_axis_label(col_role, col_shape, jacobian.order)}")
    title = _title(f"∂{output}/∂{wrt}", jacobian, (n_rows, n_cols), int(coo.nnz))
    figure.suptitle(title, fontsize=11)
    if density:
        colorbar_axes = figure.add_axes(
            ((x0 + cols.span + 30) / width, y0 / height, 16 / width, rows.span / height)
        )
        mappable = ScalarMappable(norm=Normalize(0, peak), cmap=DENSITY_CMAP)
        bar = figure.colorbar(mappable, cax=colorbar_axes)
        bar.set_label(f"non-zeros per {rows.entries} × {cols.entries} block (white: none)")
    text = {
        # From the top-left corner of the image, as image readers count.
        "raster": f"{x0},{height - y0 - rows.span},{cols.span},{rows.span}",
        "blocks": f"{rows.entries},{cols.entries}",
        "block_pixels": f"{rows.pixels},{cols.pixels}",
        "peak": str(peak),
    }
    return figure, text


def spy_picture(output: str, wrt: str, jacobian: Jacobian, media_type: PictureType) -> bytes:
    """Return the spy plot of ``jacobian`` as PNG or SVG bytes; see :func:`spy_figure`."""
    figure, text = spy_figure(output, wrt, jacobian)
    return render(figure, media_type, text)
