"""What a descent run may do: its parameters, the service's limits and the checks before a run.

Part of :mod:`service.engine.descent`, whose docstring states the update and stopping rules.
"""

import math
from dataclasses import dataclass
from typing import Literal, get_args

from .. import layout
from ..chain import Chain
from ..errors import LimitExceeded, ParameterError, ShapeError
from ..functions import check_intermediates
from ..types import Shape

__all__ = [
    "ARMIJO_C",
    "BACKTRACK_FACTOR",
    "DIVERGENCE_FACTOR",
    "LINE_SEARCHES",
    "MAX_BACKTRACKS",
    "PREPARED_NNZ",
    "STATUSES",
    "check_scalar",
    "check_scalar_shape",
    "check_steps",
    "DescentLimits",
    "DescentParams",
    "LineSearch",
    "Status",
]

LineSearch = Literal["none", "backtracking"]
Status = Literal[
    "converged_grad",
    "converged_f",
    "converged_x",
    "max_steps",
    "diverged",
    "line_search_failed",
    "deadline",
]
LINE_SEARCHES: tuple[LineSearch, ...] = get_args(LineSearch)
STATUSES: tuple[Status, ...] = get_args(Status)

# Armijo's sufficient-decrease constant and the step reduction (Nocedal & Wright, Algorithm 3.1,
# with their suggested c = 1e-4); 50 halvings take γ below 1e-15 γ.
ARMIJO_C = 1e-4
BACKTRACK_FACTOR = 0.5
MAX_BACKTRACKS = 50
# Default blow-up threshold: f above this many times max(|f(x_0)|, 1) counts as diverged.
DIVERGENCE_FACTOR = 1e12
# Largest prepared operator (non-zeros). Two CSR copies are kept (J and J^T, 12 bytes an entry
# each with int32 indices), so this bounds the preparation at about 100 MB.
PREPARED_NNZ = 1 << 22


def _check_tolerance(value: float | None, name: str) -> None:
    if value is not None and not (math.isfinite(value) and value >= 0):
        raise ParameterError(f"{name} must be a finite number >= 0, got {value!r}")


@dataclass(frozen=True)
class DescentParams:
    """How to descend and when to stop.

    Parameters
    ----------
    learning_rate : float
        ``γ > 0``; with a line search, the first trial step.
    max_steps : int
        ``>= 0`` updates at most.
    grad_tol, f_tol, x_tol : float or None
        Tolerances of the stopping rules (module docstring); None turns a rule off.
    divergence_factor : float
        ``> 1``: the blow-up threshold is ``divergence_factor · max(|f(x_0)|, 1)``.
    momentum : float
        ``β`` in ``[0, 1)``; 0 is the plain rule.
    nesterov : bool
        Nesterov's look-ahead form of the momentum; needs ``momentum > 0``.
    line_search : {"none", "backtracking"}
        ``"backtracking"``: Armijo backtracking along ``-g``; needs ``momentum == 0``.
    record_every : int
        ``>= 1``: record the states whose step is a multiple of it.
    record_x : bool
        Keep ``x`` in each record (``x`` can be large).

    Raises
    ------
    ParameterError
        For any value outside the ranges above.
    """

    learning_rate: float
    max_steps: int
    grad_tol: float | None = None
    f_tol: float | None = None
    x_tol: float | None = None
    divergence_factor: float = DIVERGENCE_FACTOR
    momentum: float = 0.0
    nesterov: bool = False
    line_search: LineSearch = "none"
    record_every: int = 1
    record_x: bool = False

    def __post_init__(self) -> None:
        if not (math.isfinite(self.learning_rate) and self.learning_rate > 0):
            raise ParameterError(
                f"learning_rate must be a finite number > 0, got {self.learning_rate!r}"
            )
        if self.max_steps < 0:
            raise ParameterError(f"max_steps must be >= 0, got {self.max_steps}")
        _check_tolerance(self.grad_tol, "grad_tol")
        _check_tolerance(self.f_tol, "f_tol")
        _check_tolerance(self.x_tol, "x_tol")
        if not (math.isfinite(self.divergence_factor) and self.divergence_factor > 1):
            raise ParameterError(
                f"divergence_factor must be a finite number > 1, got {self.divergence_factor!r}"
            )
        if not 0 <= self.momentum < 1:
            raise ParameterError(f"momentum must lie in [0, 1), got {self.momentum!r}")
        if self.nesterov and self.momentum == 0:
            raise ParameterError("nesterov needs momentum > 0")
        if self.line_search not in LINE_SEARCHES:
            raise ParameterError(
                f"line_search must be one of {list(LINE_SEARCHES)}, got {self.line_search!r}"
            )
        if self.line_search == "backtracking" and self.momentum != 0:
            raise ParameterError(
                "line_search 'backtracking' needs momentum 0: Armijo's condition is tested "
                "along -grad f"
            )
        if self.record_every < 1:
            raise ParameterError(f"record_every must be >= 1, got {self.record_every}")

    def recorded_points(self) -> int:
        """Return the most records a run can make: ``max_steps // record_every + 1``."""
        return self.max_steps // self.record_every + 1


@dataclass(frozen=True)
class DescentLimits:
    """Bounds from the service settings (the engine never reads settings).

    Parameters
    ----------
    max_steps : int
        Largest ``max_steps`` accepted.
    max_trajectory_elements : int
        Largest ``recorded points x (size of x if record_x else 1)``.
    max_tensor_elements : int
        Largest tensor along the function (input, intermediates, output).
    max_nnz : int
        Largest prepared operator; :data:`PREPARED_NNZ` caps it further.
    deadline_seconds : float or None
        Wall-clock budget of the run, from its first step; when it is used up the run ends with
        status ``"deadline"`` (a result, like every other stopping rule).
    """

    max_steps: int
    max_trajectory_elements: int
    max_tensor_elements: int
    max_nnz: int
    deadline_seconds: float | None = None


def check_scalar(chain: Chain, purpose: str = "gradient descent") -> None:
    """Raise :class:`ShapeError` unless ``f`` has exactly one element.

    Parameters
    ----------
    chain : Chain
    purpose : str
        What needs the scalar, to begin the message (``"a Hessian"``).
    """
    check_scalar_shape(chain.out_shape, purpose)


def check_scalar_shape(out_shape: Shape, purpose: str) -> None:
    """Raise :class:`ShapeError` unless ``out_shape`` has exactly one element (see above)."""
    size = layout.size_of(out_shape)
    if size != 1:
        raise ShapeError(
            f"{purpose} needs a scalar function, but f(x) has shape {list(out_shape)} "
            f"({size} elements); end the function with a reduction such as 'sum' or "
            "'squared_norm'"
        )


def _check_limits(chain: Chain, params: DescentParams, limits: DescentLimits) -> None:
    check_intermediates(chain, limits.max_tensor_elements)
    check_steps(layout.size_of(chain.in_shape), params, limits)


def check_steps(x_size: int, params: DescentParams, limits: DescentLimits) -> None:
    """Raise :class:`LimitExceeded` if the steps or the recorded trajectory are over a limit.

    Parameters
    ----------
    x_size : int
        Elements of ``x`` (every variable), recorded per point when ``record_x``.
    """
    if params.max_steps > limits.max_steps:
        raise LimitExceeded(
            "gradient-descent steps", params.max_steps, limits.max_steps,
            setting="max_descent_steps",
        )  # fmt: skip
    per_point = x_size if params.record_x else 1
    elements = params.recorded_points() * per_point
    if elements > limits.max_trajectory_elements:
        what = "points x elements of x" if params.record_x else "points"
        raise LimitExceeded(
            f"recorded trajectory elements ({what})",
            elements,
            limits.max_trajectory_elements,
            hint="record less often (record_every)"
            + (" or without x (record_x false)" if params.record_x else ""),
            setting="max_trajectory_elements",
        )
