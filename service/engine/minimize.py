"""Minimization of a scalar function by the methods users already know, under one run model.

Every method runs as the gradient-descent fold of :mod:`service.engine.descent` does: a generator
of events (a :class:`MinimizeRecord` per recorded iteration, None after the others, one
:class:`MinimizeSummary` last), the same stopping rules checked on every iterate (``diverged``,
``converged_grad``, ``converged_f``, ``converged_x``, ``max_steps``, ``deadline``) and the same
records. Methods:

``gd``
    The notes' rule with the options of ``/v1/gradient-descent`` (momentum, Nesterov, Armijo
    backtracking): :func:`service.engine.descent.update` itself.
``adam``
    PyTorch's ``torch.optim.Adam`` and optax's ``adam`` (defaults ``b1 = 0.9``, ``b2 = 0.999``,
    ``eps = 1e-8``; no weight decay, no AMSGrad), with ``m_0 = v_0 = 0``::

        m_t = b1 m_{t-1} + (1 - b1) g_t          v_t = b2 v_{t-1} + (1 - b2) g_t²
        x_t = x_{t-1} - γ m̂_t / (sqrt(v̂_t) + eps),  m̂_t = m_t / (1 - b1^t), v̂_t = v_t / (1 - b2^t)
``lbfgs``, ``newton-cg``, ``trust-ncg``
    ``scipy.optimize.minimize`` with ``method="L-BFGS-B"`` (optional bounds; ``ftol = f_tol``,
    ``gtol = 0``, the service's 2-norm rule replacing SciPy's projected-gradient one),
    ``"Newton-CG"`` (``xtol = 0``) and ``"trust-ncg"`` (``gtol = grad_tol``), the last two with the
    exact Hessian-vector product of :func:`service.engine.hessian.hvp`. SciPy's iteration callback
    makes the records and checks the service's stopping rules; when SciPy ends the run itself,
    its result maps onto a status (:func:`_scipy_status`) and its message is quoted in the reason.
    SciPy runs in a worker thread that hands its events over in batches (at most every
    :data:`HANDOVER_SECONDS`, so the two threads do not trade the GIL every iteration); closing the
    generator
    stops SciPy at its next function evaluation or iteration.

A trial point of a SciPy line search where ``f`` is not finite or leaves an operation's domain
is reported to SciPy as ``f = +inf`` (with a zero gradient), so the search backs off, as the
backtracking of ``gd`` treats it. Every record and the summary carry the running counts of
function, gradient and Hessian-vector evaluations.
"""

import math
import threading
import time
from collections.abc import Generator
from dataclasses import dataclass
from typing import Literal, get_args

import numpy as np
import scipy.optimize

from . import layout
from .chain import Chain
from .descent import (
    DescentEvent,
    DescentLimits,
    DescentParams,
    DescentRecord,
    DescentState,
    DescentSummary,
    Evaluation,
    LineSearch,
    Objective,
    Status,
    Stop,
    arrive,
    check_scalar,
    init,
    run,
    stopping_rule,
)
from .errors import DomainError, LimitExceeded, NonFiniteError, ParameterError
from .functions import check_intermediates
from .hessian import hvp
from .types import FloatArray

__all__ = [
    "METHODS",
    "Bounds",
    "Counts",
    "CountingObjective",
    "HANDOVER_SECONDS",
    "Method",
    "MinimizeEvent",
    "MinimizeParams",
    "MinimizeRecord",
    "MinimizeSummary",
    "minimize",
]

Method = Literal["gd", "adam", "lbfgs", "newton-cg", "trust-ncg"]
METHODS: tuple[Method, ...] = get_args(Method)
_SCIPY_NAMES = {"lbfgs": "L-BFGS-B", "newton-cg": "Newton-CG", "trust-ncg": "trust-ncg"}
# The SciPy worker wakes its consumer at most this often (and at the end): the latency of a
# streamed line, traded against a thread switch per iteration.
HANDOVER_SECONDS = 0.02
# L-BFGS-B's line search tries at most this many points per iteration (SciPy's default maxls).
_MAX_LINE_SEARCH = 20


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


class CountingObjective(Objective):
    """An :class:`~service.engine.descent.Objective` that counts its evaluations and adds HVPs."""

    __slots__ = ("function_calls", "gradient_calls", "hvp_calls")

    def __init__(self, chain: Chain, *, max_prepared_nnz: int) -> None:
        super().__init__(chain, max_prepared_nnz=max_prepared_nnz)
        self.function_calls = 0
        self.gradient_calls = 0
        self.hvp_calls = 0

    def evaluate(self, x: FloatArray) -> Evaluation:
        """Evaluate ``f(x)`` (counted); see :meth:`Objective.evaluate`."""
        self.function_calls += 1
        return super().evaluate(x)

    def gradient(self, evaluation: Evaluation) -> FloatArray:
        """Return the gradient (counted); see :meth:`Objective.gradient`."""
        self.gradient_calls += 1
        return super().gradient(evaluation)

    def hvp(self, x: FloatArray, v: FloatArray) -> FloatArray:
        """Return ``H(x) v`` (counted), exactly: :func:`service.engine.hessian.hvp`."""
        self.hvp_calls += 1
        product: FloatArray = hvp(self.chain, x, v[np.newaxis]).products[0]
        return product

    def counts(self) -> Counts:
        """Return the counts so far."""
        return Counts(self.function_calls, self.gradient_calls, self.hvp_calls)


def _counted(
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


def _record(state: DescentState, params: DescentParams, counts: Counts) -> MinimizeRecord | None:
    if state.step % params.record_every:
        return None
    x = state.x if params.record_x else None
    return MinimizeRecord(state.step, state.f, state.grad_norm, None, x, counts)


class _AdamStep:
    """Adam's update as a :data:`~service.engine.descent.Step`; holds the moments ``m``, ``v``."""

    def __init__(self, objective: Objective, params: MinimizeParams) -> None:
        self._objective = objective
        self._params = params
        self._m: FloatArray = np.zeros(objective.in_shape)
        self._v: FloatArray = np.zeros(objective.in_shape)

    def __call__(self, state: DescentState) -> DescentState | Stop:
        p = self._params
        assert p.learning_rate is not None  # checked by MinimizeParams
        g = state.grad
        t = state.step + 1
        with np.errstate(all="ignore"):
            self._m = p.b1 * self._m + (1.0 - p.b1) * g
            self._v = p.b2 * self._v + (1.0 - p.b2) * np.square(g)
            m_hat = self._m / (1.0 - p.b1**t)
            v_hat = self._v / (1.0 - p.b2**t)
            x = state.x - p.learning_rate * m_hat / (np.sqrt(v_hat) + p.eps)
        return arrive(self._objective, t, x, None, p.learning_rate)


def _scipy_status(method: Method, result: scipy.optimize.OptimizeResult) -> Status:
    """Map SciPy's ending onto a service status (SciPy's own tests, not the callback's)."""
    status = int(result.status)
    message = str(result.message)
    if status == 1:
        return "max_steps"  # iteration or evaluation limit
    if "NaN" in message or not np.isfinite(result.fun):
        return "diverged"
    if status == 0:
        if method == "lbfgs":
            return "converged_grad" if "GRADIENT" in message else "converged_f"
        return "converged_x" if method == "newton-cg" else "converged_grad"
    # L-BFGS-B's abnormal line search, Newton-CG's precision loss or failed CG, trust-ncg's
    # failure to predict improvement: the globalization could make no progress.
    return "line_search_failed"


class _Interrupted(Exception):
    """Raised inside SciPy's calls to end the run from outside: closed, or out of time."""

    def __init__(self, stop: Stop) -> None:
        super().__init__(stop.reason)
        self.stop = stop


class _ScipyRun:
    """One SciPy minimization in a worker thread, its events handed over in batches."""

    def __init__(
        self,
        objective: CountingObjective,
        start: DescentState,
        params: MinimizeParams,
        deadline_seconds: float | None,
    ) -> None:
        self._objective = objective
        self._params = params
        self._descent = params.descent_params()
        self._deadline_seconds = deadline_seconds
        self._deadline = math.inf
        self._f_limit = self._descent.divergence_factor * max(abs(start.f), 1.0)
        self._last = start
        self._cache: dict[bytes, tuple[float, FloatArray]] = {}
        self._ready = threading.Condition()
        self._batch: list[MinimizeEvent | BaseException] = []
        self._handed = 0.0  # when the consumer was last woken
        self._closed = threading.Event()
        self._stop: Stop | None = None

    # -- SciPy's view of f: flat vectors (C order; vec and ten are inverse, any order would do) --

    def _interrupt(self) -> None:
        step = self._last.step + 1
        if self._closed.is_set():
            raise _Interrupted(Stop("deadline", f"step {step}: the run was stopped"))
        if time.monotonic() > self._deadline:
            raise _Interrupted(
                Stop(
                    "deadline",
                    f"step {step}: the wall-clock budget of {self._deadline_seconds:g} s was "
                    "used up",
                )
            )

    def _value_and_grad(self, z: FloatArray) -> tuple[float, FloatArray]:
        key = z.tobytes()
        if key in self._cache:
            return self._cache[key]
        self._interrupt()
        x = layout.ten(z, self._objective.in_shape, "C")
        try:
            evaluation = self._objective.evaluate(x)
            result = (evaluation.f, layout.vec(self._objective.gradient(evaluation), "C"))
        except (NonFiniteError, DomainError):
            result = (math.inf, np.zeros_like(z))  # outside f's finite domain: back off
        # The last two points: an iterate and the trial after it, or the accepted trial.
        if len(self._cache) >= 2:
            del self._cache[next(iter(self._cache))]
        self._cache[key] = result
        return result

    def _hessp(self, z: FloatArray, p: FloatArray) -> FloatArray:
        self._interrupt()
        shape = self._objective.in_shape
        product = self._objective.hvp(layout.ten(z, shape, "C"), layout.ten(p, shape, "C"))
        return layout.vec(product, "C")

    def _callback(self, intermediate_result: scipy.optimize.OptimizeResult) -> None:
        z = np.array(intermediate_result.x, dtype=np.float64)
        f, g = self._value_and_grad(z)
        if not math.isfinite(f):
            raise _Interrupted(Stop("diverged", f"step {self._last.step + 1}: f is not finite"))
        shape = self._objective.in_shape
        grad = layout.ten(g, shape, "C")
        x = layout.ten(z, shape, "C")
        norm = float(np.linalg.norm(g))
        state = DescentState(self._last.step + 1, x, f, grad, norm, None, None)
        stop = stopping_rule(self._last, state, self._descent, self._f_limit)
        if stop is None and time.monotonic() > self._deadline:
            stop = Stop(
                "deadline",
                f"step {state.step}: the wall-clock budget of {self._deadline_seconds:g} s was "
                "used up",
            )
        self._last = state
        self._hand(_record(state, self._descent, self._objective.counts()), last=False)
        if stop is not None:
            self._stop = stop
            raise StopIteration
        if self._closed.is_set():
            raise StopIteration

    def _minimize(self) -> MinimizeSummary:
        p = self._params
        z0 = layout.vec(self._last.x, "C")
        options: dict[str, object] = {"maxiter": p.max_steps}
        bounds = None
        if p.method == "lbfgs":
            options |= {
                "ftol": p.f_tol or 0.0,
                "gtol": 0.0,
                "maxcor": p.memory,
                "maxls": _MAX_LINE_SEARCH,
                "maxfun": (p.max_steps + 1) * (_MAX_LINE_SEARCH + 1),
            }
            if p.bounds is not None:
                bounds = scipy.optimize.Bounds(
                    layout.vec(p.bounds.lower, "C"), layout.vec(p.bounds.upper, "C")
                )
        elif p.method == "newton-cg":
            options["xtol"] = 0.0
        else:
            options["gtol"] = p.grad_tol or 0.0
        hessp = None if p.method == "lbfgs" else self._hessp
        try:
            # scipy-stubs types fun and x0 as 1-D arrays (shape (n,)), ours as n-D: same values.
            result = scipy.optimize.minimize(  # type: ignore[call-overload]
                self._value_and_grad,
                z0,
                jac=True,
                hessp=hessp,
                method=_SCIPY_NAMES[p.method],
                bounds=bounds,
                callback=self._callback,
                options=options,
            )
        except _Interrupted as interrupted:
            return self._summary(interrupted.stop, self._last.step)
        except (NonFiniteError, DomainError) as error:  # from a Hessian-vector product
            step = self._last.step + 1
            return self._summary(Stop("diverged", f"step {step}: {error}"), step)
        if self._stop is not None:
            return self._summary(self._stop, self._last.step)
        status = _scipy_status(p.method, result)
        # A failure is the iteration after the last iterate; a limit or a test, at that iterate.
        failed = status in ("diverged", "line_search_failed")
        step = self._last.step + 1 if failed else self._last.step
        name = _SCIPY_NAMES[p.method]
        reason = f"step {step}: SciPy {name} (status {result.status}): {result.message}"
        return self._summary(Stop(status, reason), step)

    def _summary(self, stop: Stop, steps: int) -> MinimizeSummary:
        last = self._last
        return MinimizeSummary(
            stop.status,
            stop.reason,
            steps,
            last.step,
            last.x,
            last.f,
            last.grad_norm,
            self._objective.counts(),
        )

    def _work(self) -> None:
        try:
            self._hand(self._minimize(), last=True)
        except BaseException as error:  # handed to the consumer, who raises it
            self._hand(error, last=True)

    def _hand(self, event: MinimizeEvent | BaseException, *, last: bool) -> None:
        with self._ready:
            self._batch.append(event)
            now = time.monotonic()
            if last or now - self._handed >= HANDOVER_SECONDS:
                self._handed = now
                self._ready.notify()

    def events(self) -> Generator[MinimizeEvent, None, None]:
        """Yield the run's events; closing the generator stops SciPy and waits for the thread."""
        start = self._last
        stop = stopping_rule(None, start, self._descent, self._f_limit)
        yield _record(start, self._descent, self._objective.counts())
        if stop is not None:
            yield self._summary(stop, start.step)
            return
        if self._deadline_seconds is not None:
            self._deadline = time.monotonic() + self._deadline_seconds
        worker = threading.Thread(target=self._work, name="minimize", daemon=True)
        worker.start()
        try:
            while True:
                with self._ready:
                    while not self._batch:
                        self._ready.wait(HANDOVER_SECONDS)
                    batch, self._batch = self._batch, []
                for event in batch:
                    if isinstance(event, BaseException):
                        raise event
                    yield event
                    if isinstance(event, MinimizeSummary):
                        return
        finally:
            self._closed.set()
            worker.join()


def _check_limits(chain: Chain, params: MinimizeParams, limits: DescentLimits) -> None:
    check_intermediates(chain, limits.max_tensor_elements)
    if params.max_steps > limits.max_steps:
        raise LimitExceeded(
            "minimization steps", params.max_steps, limits.max_steps, setting="max_descent_steps"
        )
    per_point = layout.size_of(chain.in_shape) if params.record_x else 1
    elements = params.descent_params().recorded_points() * per_point
    if elements > limits.max_trajectory_elements:
        raise LimitExceeded(
            "recorded trajectory elements",
            elements,
            limits.max_trajectory_elements,
            hint="record less often (record_every)",
            setting="max_trajectory_elements",
        )


def minimize(
    chain: Chain, x0: FloatArray, params: MinimizeParams, limits: DescentLimits
) -> Generator[MinimizeEvent, None, None]:
    """Check, prepare and start a run; return its events (the request entry point).

    Everything that can refuse the request happens here, before the first event: the scalar
    check, the limits, the bounds' shapes, the preparation and the evaluation at ``x0``.

    Parameters
    ----------
    chain : Chain
        ``f``, with ``chain.in_shape == x0.shape``.
    x0 : ndarray
        For ``lbfgs`` with bounds, projected into them first (as L-BFGS-B does).
    params : MinimizeParams
    limits : DescentLimits

    Returns
    -------
    generator of MinimizeEvent
        Closing it stops the run.

    Raises
    ------
    ShapeError, LimitExceeded, ParameterError, NonFiniteError, DomainError
        As :func:`service.engine.descent.descend`; ``ParameterError`` also for bounds that do not
        fit ``x0`` or cross (``lower > upper``).
    """
    check_scalar(chain, "minimization")
    _check_limits(chain, params, limits)
    objective = CountingObjective(chain, max_prepared_nnz=limits.max_nnz)
    x0 = np.asarray(x0, dtype=np.float64)
    if params.bounds is not None:
        lower, upper = params.bounds.lower, params.bounds.upper
        if lower.shape != x0.shape or upper.shape != x0.shape:
            raise ParameterError(
                f"bounds must have the shape of x0 {list(x0.shape)}, got {list(lower.shape)} "
                f"and {list(upper.shape)}"
            )
        if np.any(lower > upper):
            raise ParameterError("bounds cross: some lower bound exceeds its upper bound")
        x0 = np.clip(x0, lower, upper)
    start = init(objective, x0)
    if params.method in ("gd", "adam"):
        step = _AdamStep(objective, params) if params.method == "adam" else None
        events = run(objective, start, params.descent_params(), limits.deadline_seconds, step)
        return _counted(events, objective)
    return _ScipyRun(objective, start, params, limits.deadline_seconds).events()
