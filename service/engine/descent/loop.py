"""The descent loop: states, the update rules, the stopping rules, records and the run.

Part of :mod:`service.engine.descent`, whose docstring states the rules.
"""

import math
import time
from collections.abc import Callable, Generator, Iterable
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from ..cancel import checkpoint
from ..chain import Chain
from ..errors import DomainError, NonFiniteError, ShapeError
from ..types import FloatArray
from .objective import (
    Descendable,
    Evaluation,
    Objective,
    QuietObjective,
    _all_finite,
    _nonfinite_gradient,
)
from .params import (
    ARMIJO_C,
    BACKTRACK_FACTOR,
    MAX_BACKTRACKS,
    DescentLimits,
    DescentParams,
    Status,
    _check_limits,
    check_scalar,
)

__all__ = [
    "arrive",
    "collect",
    "descend",
    "DescentEvent",
    "DescentRecord",
    "DescentResult",
    "DescentState",
    "DescentSummary",
    "init",
    "run",
    "Step",
    "Stop",
    "stopping_rule",
    "update",
]

# -- state, records, stopping --------------------------------------------------------------------


class DescentState(NamedTuple):
    """Everything the next step needs; one per step, never mutated.

    A named tuple, not a frozen dataclass: one is made per step, and a frozen dataclass's
    ``__init__`` costs about 2 µs of a small step's 40.

    Attributes
    ----------
    step : int
        ``t``.
    x : ndarray, shape ``in_shape``
        ``x_t`` (read-only).
    f : float
        ``f(x_t)``.
    grad : ndarray, shape ``in_shape``
        ``ten(∂f/∂x_t)``.
    grad_norm : float
        ``||grad||₂``.
    velocity : ndarray or None
        ``v_t`` of the momentum rules (None while zero: at ``t = 0`` and without momentum).
    learning_rate : float or None
        The step length that produced ``x_t`` (None at ``t = 0``).
    """

    step: int
    x: FloatArray
    f: float
    grad: FloatArray
    grad_norm: float
    velocity: FloatArray | None
    learning_rate: float | None


@dataclass(frozen=True)
class Stop:
    """A stopping rule that fired: its status and a sentence naming the step and the values."""

    status: Status
    reason: str


@dataclass(frozen=True, eq=False)
class DescentRecord:
    """One recorded state: ``step``, ``f``, ``||∇f||``, the γ that produced it, maybe ``x``."""

    step: int
    f: float
    grad_norm: float
    learning_rate: float | None
    x: FloatArray | None


@dataclass(frozen=True, eq=False)
class DescentSummary:
    """How the run ended.

    Attributes
    ----------
    status : str
        One of :data:`STATUSES`.
    reason : str
        The rule and the values that fired it.
    steps : int
        The step at which the rule fired.
    final_step : int
        The step of ``x_final``: ``steps``, or ``steps - 1`` when that step produced no finite
        state (non-finite ``x``, ``f`` or gradient, a domain exit, or a failed line search).
    x_final : ndarray, shape ``in_shape``
    f_final, grad_norm_final : float
        Of ``x_final``; always finite.
    """

    status: Status
    reason: str
    steps: int
    final_step: int
    x_final: FloatArray
    f_final: float
    grad_norm_final: float


# None marks a step that was taken and not recorded, so a consumer regains control every step.
DescentEvent = DescentRecord | DescentSummary | None


def _frozen(x: FloatArray) -> FloatArray:
    x.setflags(write=False)
    return x


def _norm(v: FloatArray) -> float:
    # ||v||_2 over every entry, whatever the shape. The plain sum of squares overflows once an
    # entry passes ~1.3e154; only then is the norm taken of v scaled by its largest entry.
    norm = math.sqrt(float(np.vdot(v, v)))
    if math.isinf(norm) and np.all(np.isfinite(v)):
        largest = float(np.max(np.abs(v)))
        scaled = v / largest
        norm = largest * math.sqrt(float(np.vdot(scaled, scaled)))
    return norm


def _state(
    gradient: Callable[[Evaluation], FloatArray],
    step: int,
    x: FloatArray,
    evaluation: Evaluation,
    velocity: FloatArray | None,
    learning_rate: float | None,
) -> DescentState:
    grad = gradient(evaluation)
    grad_norm = _norm(grad)
    if not math.isfinite(grad_norm):
        if not _all_finite(grad):  # only an unchecked gradient gets here with such entries
            raise _nonfinite_gradient()
        raise NonFiniteError(f"the gradient norm overflows (max |entry| {np.abs(grad).max():.6g})")
    return DescentState(step, _frozen(x), evaluation.f, grad, grad_norm, velocity, learning_rate)


def init(objective: Descendable, x0: FloatArray) -> DescentState:
    """Return the state at ``t = 0``.

    Parameters
    ----------
    objective : Objective
    x0 : ndarray, shape ``objective.in_shape``
        Copied; the caller's array is never written.

    Returns
    -------
    DescentState

    Raises
    ------
    ShapeError
        If ``x0`` does not have the function's input shape.
    NonFiniteError, DomainError
        If ``x0``, ``f(x0)`` or the gradient there is not finite or not defined: the run would
        have nowhere to start (a request error, unlike a divergence during the run).
    """
    x = np.array(x0, dtype=np.float64, copy=True)
    if x.shape != objective.in_shape:
        raise ShapeError(
            f"x0 of shape {list(x.shape)} does not match the function's input shape "
            f"{list(objective.in_shape)}"
        )
    if not np.isfinite(x).all():
        raise NonFiniteError("x0 has non-finite entries")
    return _state(objective.gradient, 0, x, objective.evaluate(x), None, None)


def arrive(
    objective: Descendable,
    step: int,
    x: FloatArray,
    velocity: FloatArray | None,
    learning_rate: float,
    evaluation: Evaluation | None = None,
    *,
    rules: tuple[Callable[[FloatArray], Evaluation], Callable[[Evaluation], FloatArray]]
    | None = None,
) -> DescentState | Stop:
    """Return state ``step`` at ``x``, or ``Stop("diverged")`` if it is not finite or not defined.

    Parameters
    ----------
    objective : Objective
    step : int
    x : ndarray, shape ``in_shape``
        The new iterate; owned by the state from now on.
    velocity : ndarray or None
    learning_rate : float
        The step length that produced ``x``.
    evaluation : Evaluation, optional
        ``f`` at ``x`` when the caller already has it (a line search's accepted trial).
    rules : (evaluate, gradient), optional
        In place of ``objective.evaluate`` and ``objective.gradient``: an op list's quiet ones on
        the fast path (:func:`update`).
    """
    evaluate, gradient = rules or (objective.evaluate, objective.gradient)
    if not _all_finite(x):
        return Stop("diverged", f"step {step}: x has non-finite entries (overflow)")
    try:
        if evaluation is None:
            evaluation = evaluate(x)
        return _state(gradient, step, x, evaluation, velocity, learning_rate)
    except (NonFiniteError, DomainError) as error:
        return Stop("diverged", f"step {step}: {error}")


def _backtrack(
    objective: Descendable, state: DescentState, params: DescentParams
) -> DescentState | Stop:
    g = state.grad
    slope = state.grad_norm**2  # <g, g>: the decrease rate of f along -g
    alpha = params.learning_rate
    step = state.step + 1
    with np.errstate(all="ignore"):
        for _ in range(MAX_BACKTRACKS + 1):
            x = state.x - alpha * g
            if np.isfinite(x).all():
                try:
                    trial: Evaluation | None = objective.evaluate(x)
                except (NonFiniteError, DomainError):
                    trial = None  # outside f's finite domain: too long a step
                if trial is not None and trial.f <= state.f - ARMIJO_C * alpha * slope:
                    return arrive(objective, step, x, None, alpha, trial)
            alpha *= BACKTRACK_FACTOR
    return Stop(
        "line_search_failed",
        f"step {step}: no step length γ·{BACKTRACK_FACTOR}^k (k = 0..{MAX_BACKTRACKS}) gives "
        f"f(x - α g) <= f(x) - {ARMIJO_C}·α·||g||² from f = {state.f:.17g}, "
        f"||g|| = {state.grad_norm:.6g}",
    )


def update(
    objective: Descendable, state: DescentState, params: DescentParams
) -> DescentState | Stop:
    """Take one step: ``x_{t+1}`` from ``x_t`` by the rule ``params`` select.

    Parameters
    ----------
    objective : Objective
    state : DescentState
        ``t``.
    params : DescentParams

    Returns
    -------
    DescentState or Stop
        The state ``t + 1``; or ``Stop("diverged")`` if ``x_{t+1}``, ``f`` or the gradient is not
        finite or leaves an operation's domain; or ``Stop("line_search_failed")``.
    """
    if params.line_search == "backtracking":
        return _backtrack(objective, state, params)
    g = state.grad
    gamma = params.learning_rate
    velocity: FloatArray | None = None
    with np.errstate(all="ignore"):
        if params.momentum == 0:
            # the notes' rule, exactly: x_t - γ g, written over the fresh γ g; for a 0-d x the
            # product is a NumPy scalar, which cannot be written over
            x = np.multiply(g, gamma)
            if isinstance(x, np.ndarray):
                np.subtract(state.x, x, out=x)
            else:
                x = state.x - x
        else:
            beta = params.momentum
            velocity = g if state.velocity is None else beta * state.velocity + g
            direction = g + beta * velocity if params.nesterov else velocity
            x = state.x - gamma * direction
        if isinstance(objective, QuietObjective):
            # A prepared op list or program evaluates inside this one errstate block.
            rules = (objective.evaluate_quietly, objective.gradient_unchecked)
            return arrive(objective, state.step + 1, x, velocity, gamma, rules=rules)
    return arrive(objective, state.step + 1, x, velocity, gamma)


def stopping_rule(
    previous: DescentState | None, state: DescentState, params: DescentParams, f_limit: float
) -> Stop | None:
    """Return the rule that ends the run at ``state``, or None (precedence: module docstring).

    Parameters
    ----------
    previous : DescentState or None
        State ``t - 1`` (None at ``t = 0``).
    state : DescentState
        State ``t``.
    params : DescentParams
    f_limit : float
        The blow-up threshold ``divergence_factor · max(|f_0|, 1)``.

    Returns
    -------
    Stop or None
    """
    t = state.step
    if state.f > f_limit:
        return Stop(
            "diverged",
            f"step {t}: f = {state.f:.6g} exceeds the blow-up threshold {f_limit:.6g} "
            f"= {params.divergence_factor:g}·max(|f(x_0)|, 1)",
        )
    if params.grad_tol is not None and state.grad_norm <= params.grad_tol:
        return Stop(
            "converged_grad",
            f"step {t}: ||grad f|| = {state.grad_norm:.6g} <= grad_tol = {params.grad_tol:g}",
        )
    if previous is not None and params.f_tol is not None:
        change = abs(state.f - previous.f)
        scale = max(abs(previous.f), abs(state.f), 1.0)
        if change <= params.f_tol * scale:
            return Stop(
                "converged_f",
                f"step {t}: |f_t - f_(t-1)| = {change:.6g} <= f_tol·max(|f_(t-1)|, |f_t|, 1) "
                f"= {params.f_tol:g}·{scale:.6g}",
            )
    if previous is not None and params.x_tol is not None:
        moved = _norm(state.x - previous.x)
        scale = max(_norm(previous.x), _norm(state.x), 1.0)
        if moved <= params.x_tol * scale:
            return Stop(
                "converged_x",
                f"step {t}: ||x_t - x_(t-1)|| = {moved:.6g} <= x_tol·max(||x_(t-1)||, ||x_t||, 1) "
                f"= {params.x_tol:g}·{scale:.6g}",
            )
    if t >= params.max_steps:
        return Stop("max_steps", f"step {t}: max_steps = {params.max_steps} reached")
    return None


def _record(state: DescentState, record_x: bool) -> DescentRecord:
    return DescentRecord(
        state.step, state.f, state.grad_norm, state.learning_rate, state.x if record_x else None
    )


def _summary(stop: Stop, steps: int, state: DescentState) -> DescentSummary:
    return DescentSummary(
        stop.status, stop.reason, steps, state.step, state.x, state.f, state.grad_norm
    )


Step = Callable[[DescentState], "DescentState | Stop"]


def run(
    objective: Descendable,
    start: DescentState,
    params: DescentParams,
    deadline_seconds: float | None = None,
    step: Step | None = None,
) -> Generator[DescentEvent, None, None]:
    """Descend from ``start`` until a stopping rule fires: the fold as a stream of events.

    Parameters
    ----------
    objective : Objective
    start : DescentState
        Usually :func:`init`'s.
    params : DescentParams
    deadline_seconds : float, optional
        Wall-clock budget counted from the first step; checked after every step.
    step : callable, optional
        Maps state ``t`` to state ``t + 1`` or a :class:`Stop`, in place of :func:`update`: another
        update rule (Adam, in :mod:`service.engine.minimize`) under the same stopping rules.

    Yields
    ------
    DescentRecord
        For each state whose step is a multiple of ``record_every``, as soon as it exists.
    None
        After each other step, so a consumer can pause or stop between any two steps.
    DescentSummary
        Last, exactly once.
    """
    f_limit = params.divergence_factor * max(abs(start.f), 1.0)
    # The budget starts when the loop does, so a stream's time-to-first-line counts too.
    deadline = None if deadline_seconds is None else time.monotonic() + deadline_seconds
    previous: DescentState | None = None
    state = start
    while True:
        # Only a client that left stops a run here: the token of a descent carries no deadline,
        # the run's own deadline ends it with status "deadline" (a result).
        checkpoint()
        stop = stopping_rule(previous, state, params, f_limit)
        if stop is None and deadline is not None and time.monotonic() > deadline:
            stop = Stop(
                "deadline",
                f"step {state.step}: the wall-clock budget of {deadline_seconds:g} s was used up",
            )
        yield _record(state, params.record_x) if state.step % params.record_every == 0 else None
        if stop is not None:
            yield _summary(stop, state.step, state)
            return
        following = update(objective, state, params) if step is None else step(state)
        if isinstance(following, Stop):
            yield _summary(following, state.step + 1, state)
            return
        previous, state = state, following


def descend(
    chain: Chain, x0: FloatArray, params: DescentParams, limits: DescentLimits
) -> Generator[DescentEvent, None, None]:
    """Check, prepare and start a run; return its events (the request entry point).

    Everything that can refuse the request happens here, before the first event: the scalar
    check, the limits, the preparation and the evaluation at ``x0``. Iterating the result then
    only computes; divergence is reported as a summary, never raised.

    Parameters
    ----------
    chain : Chain
        ``f``, with ``chain.in_shape == x0.shape``.
    x0 : ndarray
    params : DescentParams
    limits : DescentLimits

    Returns
    -------
    generator of DescentEvent
        See :func:`run`; closing it stops the run.

    Raises
    ------
    ShapeError
        If ``f`` is not scalar, or ``x0`` does not fit it.
    LimitExceeded
        If ``max_steps``, the trajectory or an intermediate tensor is over its limit.
    NonFiniteError, DomainError
        If ``f`` or its gradient is not finite or not defined at ``x0``.
    """
    check_scalar(chain)
    _check_limits(chain, params, limits)
    objective = Objective(chain, max_prepared_nnz=limits.max_nnz)
    start = init(objective, x0)
    return run(objective, start, params, limits.deadline_seconds)


@dataclass(frozen=True, eq=False)
class DescentResult:
    """A whole run: the records and the summary."""

    trajectory: tuple[DescentRecord, ...]
    summary: DescentSummary


def collect(events: Iterable[DescentEvent]) -> DescentResult:
    """Run ``events`` to the end and keep the records and the summary.

    Parameters
    ----------
    events : iterator of DescentEvent
        From :func:`descend` or :func:`run`.

    Returns
    -------
    DescentResult
    """
    records: list[DescentRecord] = []
    for event in events:
        if isinstance(event, DescentSummary):
            return DescentResult(tuple(records), event)
        if event is not None:
            records.append(event)
    raise RuntimeError("the run ended without a summary")  # run() always yields one
