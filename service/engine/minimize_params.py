"""What a minimization run is: the methods and their parameters, the evaluation counts, records.

Shared by the run loops of :mod:`service.engine.minimize` (``gd``, ``adam``) and of
:mod:`service.engine.scipy_run` (``lbfgs``, ``newton-cg``, ``trust-ncg``).
"""

import math
from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import Literal, get_args

from .descent import (
    DescentEvent,
    DescentParams,
    DescentRecord,
    DescentState,
    DescentSummary,
    Evaluation,
    LineSearch,
    QuietObjective,
)
from .errors import ParameterError
from .types import FloatArray, Shape

__all__ = [
    "METHODS",
    "Bounds",
    "Counts",
    "CountingObjective",
    "Method",
    "MinimizeEvent",
    "MinimizeParams",
    "MinimizeRecord",
    "MinimizeSummary",
    "counted",
    "record",
]

Method = Literal["gd", "adam", "lbfgs", "newton-cg", "trust-ncg"]
METHODS: tuple[Method, ...] = get_args(Method)


@dataclass(frozen=True)
class Bounds:
    """Box constraints of ``lbfgs``: ``lower <= x <= upper`` elementwise (infinities allowed).

    Attributes
    ----------
    lower, upper : ndarray, shape ``in_shape``
    """

    lower: FloatArray
    upper: FloatArray


@dataclass(frozen=True)
class MinimizeParams:
    """The method, its parameters, and the run's stopping rules and records.

    Parameters
    ----------
    method : {"gd", "adam", "lbfgs", "newton-cg", "trust-ncg"}
    max_steps : int
        Iterations at most.
    grad_tol, f_tol, x_tol, divergence_factor, record_every, record_x
        As in :class:`~service.engine.descent.DescentParams`, for every method.
    learning_rate : float or None
        ``γ``; required by ``gd`` and ``adam``, refused by the others.
    momentum, nesterov, line_search
        ``gd`` only.
    b1, b2, eps : float
        ``adam`` only: ``0 <= b1, b2 < 1``, ``eps > 0``.
    bounds : Bounds or None
        ``lbfgs`` only.
    memory : int
        ``lbfgs`` only: corrections kept (SciPy's ``maxcor``), ``>= 1``.

    Raises
    ------
    ParameterError
        For a value outside its range, or a parameter that the method does not take.
    """

    method: Method
    max_steps: int
    grad_tol: float | None = None
    f_tol: float | None = None
    x_tol: float | None = None
    divergence_factor: float = DescentParams.divergence_factor
    record_every: int = 1
    record_x: bool = False
    learning_rate: float | None = None
    momentum: float = 0.0
    nesterov: bool = False
    line_search: LineSearch = "none"
    b1: float = 0.9
    b2: float = 0.999
    eps: float = 1e-8
    bounds: Bounds | None = None
    memory: int = 10

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ParameterError(f"method must be one of {list(METHODS)}, got {self.method!r}")
        first_order = self.method in ("gd", "adam")
        if first_order and self.learning_rate is None:
            raise ParameterError(f"method '{self.method}' needs a learning_rate")
        if not first_order and self.learning_rate is not None:
            raise ParameterError(
                f"method '{self.method}' chooses its own steps; learning_rate is for gd and adam"
            )
        if self.method != "gd" and (self.momentum or self.nesterov or self.line_search != "none"):
            raise ParameterError("momentum, nesterov and line_search are options of method 'gd'")
        if self.method != "lbfgs" and self.bounds is not None:
            raise ParameterError("bounds are an option of method 'lbfgs'")
        for name in ("b1", "b2"):
            value = getattr(self, name)
            if not 0 <= value < 1:
                raise ParameterError(f"{name} must lie in [0, 1), got {value!r}")
        if not (math.isfinite(self.eps) and self.eps > 0):
            raise ParameterError(f"eps must be a finite number > 0, got {self.eps!r}")
        if self.memory < 1:
            raise ParameterError(f"memory must be >= 1, got {self.memory}")
        self.descent_params()  # the shared parameters are checked where they are defined

    def descent_params(self) -> DescentParams:
        """Return the parameters of the shared fold: stopping rules, records, the ``gd`` rule."""
        return DescentParams(
            learning_rate=1.0 if self.learning_rate is None else self.learning_rate,
            max_steps=self.max_steps,
            grad_tol=self.grad_tol,
            f_tol=self.f_tol,
            x_tol=self.x_tol,
            divergence_factor=self.divergence_factor,
            momentum=self.momentum,
            nesterov=self.nesterov,
            line_search=self.line_search,
            record_every=self.record_every,
            record_x=self.record_x,
        )


@dataclass(frozen=True)
class Counts:
    """Evaluations so far: of ``f``, of its gradient, and Hessian-vector products."""

    function: int
    gradient: int
    hvp: int


@dataclass(frozen=True, eq=False)
class MinimizeRecord(DescentRecord):
    """A recorded iterate, with the evaluation counts when it was reached."""

    evaluations: Counts = Counts(0, 0, 0)


@dataclass(frozen=True, eq=False)
class MinimizeSummary(DescentSummary):
    """How the run ended, with the evaluation counts of the whole run."""

    evaluations: Counts = Counts(0, 0, 0)


MinimizeEvent = MinimizeRecord | MinimizeSummary | None


class CountingObjective(QuietObjective):
    """``f`` as the loop sees it, counted, with exact Hessian-vector products.

    Parameters
    ----------
    inner : QuietObjective
        An op list's :class:`~service.engine.descent.Objective` or a program's
        :class:`~service.engine.graph.prepared.ProgramObjective`.
    hvp : callable
        ``(x, v) -> H(x) v``, both of shape ``inner.in_shape``.
    """

    def __init__(
        self, inner: QuietObjective, hvp: Callable[[FloatArray, FloatArray], FloatArray]
    ) -> None:
        self._inner = inner
        self._hvp = hvp
        self.function_calls = 0
        self.gradient_calls = 0
        self.hvp_calls = 0

    @property
    def in_shape(self) -> Shape:
        """Shape of ``x``."""
        return self._inner.in_shape

    def evaluate_quietly(self, x: FloatArray) -> Evaluation:
        """Evaluate ``f(x)`` (counted) inside the caller's ``np.errstate``."""
        self.function_calls += 1
        return self._inner.evaluate_quietly(x)

    def gradient_unchecked(self, evaluation: Evaluation) -> FloatArray:
        """Return the gradient at an evaluated point (counted), not tested for overflow."""
        self.gradient_calls += 1
        return self._inner.gradient_unchecked(evaluation)

    def hvp(self, x: FloatArray, v: FloatArray) -> FloatArray:
        """Return ``H(x) v`` (counted), exactly."""
        self.hvp_calls += 1
        return self._hvp(x, v)

    def counts(self) -> Counts:
        """Return the counts so far."""
        return Counts(self.function_calls, self.gradient_calls, self.hvp_calls)


def counted(
    events: Generator[DescentEvent, None, None], objective: CountingObjective
) -> Generator[MinimizeEvent, None, None]:
    """Attach the running counts to the events of the shared fold; closing closes ``events``."""
    try:
        for event in events:
            if event is None:
                yield None
            elif isinstance(event, DescentSummary):
                yield MinimizeSummary(**vars(event), evaluations=objective.counts())
            else:
                yield MinimizeRecord(**vars(event), evaluations=objective.counts())
    finally:
        events.close()


def record(state: DescentState, params: DescentParams, counts: Counts) -> MinimizeRecord | None:
    """Return the record of ``state`` when its step is one to record, else None."""
    if state.step % params.record_every:
        return None
    x = state.x if params.record_x else None
    return MinimizeRecord(state.step, state.f, state.grad_norm, None, x, counts)
