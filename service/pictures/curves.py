"""The descent curve: f and ||∇f|| per recorded step, with how the run ended in the title."""

from collections.abc import Sequence

import numpy as np
from matplotlib.axes import Axes

from ..engine.descent import DescentRecord, DescentSummary
from .figure import PictureType, index_ticks, new_figure, render

SIZE_PX = (900, 640)


def _plot(axes: Axes, steps: np.ndarray, values: np.ndarray, label: str, color: str) -> None:
    finite = values[np.isfinite(values)]
    # Log scale shows linear convergence as a straight line; it needs every value positive.
    log = finite.size > 0 and bool(np.all(finite > 0))
    axes.plot(steps, values, color=color, linewidth=1.5, marker="." if steps.size <= 60 else None)
    if log:
        axes.set_yscale("log")
    axes.set_ylabel(f"{label} ({'log' if log else 'linear'} scale)")
    axes.grid(True, which="both", alpha=0.3)
    axes.xaxis.set_major_locator(index_ticks())


def descent_picture(
    records: Sequence[DescentRecord],
    summary: DescentSummary,
    media_type: PictureType,
    title: str = "gradient descent",
) -> bytes:
    """Return the curves of f and ||∇f|| of a descent (or minimization) run as PNG or SVG bytes.

    Parameters
    ----------
    records : sequence of DescentRecord
        The recorded steps (step 0, record_every, ...).
    summary : DescentSummary
        How the run ended; its status, step and final values go into the title.
    media_type : {"image/png", "image/svg+xml"}
    title : str
        What ran (e.g. ``"minimize (lbfgs)"``); the status follows it in the title.

    Returns
    -------
    bytes
    """
    steps = np.array([record.step for record in records], dtype=np.int64)
    f = np.array([record.f for record in records], dtype=np.float64)
    grad = np.array([record.grad_norm for record in records], dtype=np.float64)
    figure = new_figure(*SIZE_PX)
    top, bottom = figure.subplots(2, 1, sharex=True)
    _plot(top, steps, f, "f(x_t)", "#1f3b73")
    _plot(bottom, steps, grad, "‖∇f(x_t)‖₂", "#b5453a")
    bottom.set_xlabel(f"step t ({steps.size} recorded)")
    figure.suptitle(
        f"{title}: {summary.status} at step {summary.steps}\n"
        f"f = {summary.f_final:.6g}, ‖∇f‖ = {summary.grad_norm_final:.6g}",
        fontsize=12,
    )
    top.set_title(summary.reason, fontsize=8, wrap=True)
    figure.subplots_adjust(left=0.12, right=0.97, top=0.84, bottom=0.09, hspace=0.12)
    return render(figure, media_type)
