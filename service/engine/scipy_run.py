"""The SciPy methods of ``POST /v1/minimize``: L-BFGS-B, Newton-CG and trust-ncg in a worker thread.

``scipy.optimize.minimize`` runs in a worker thread whose iteration callback makes the records and
checks the service's stopping rules; its events are handed over in batches (at most every
:data:`HANDOVER_SECONDS`, so the two threads do not trade the GIL every iteration). When SciPy
ends the run itself, its result maps onto a status (:func:`scipy_status`) and its message is
quoted in the reason. Closing the event generator stops SciPy at its next function evaluation or
iteration.
"""

import contextvars
import math
import threading
import time
from collections.abc import Generator

import numpy as np
import scipy.optimize

from . import layout
from .cancel import checkpoint
from .descent import DescentState, Status, Stop, stopping_rule
from .errors import DomainError, NonFiniteError
from .minimize_params import (
    CountingObjective,
    Method,
    MinimizeEvent,
    MinimizeParams,
    MinimizeSummary,
    record,
)
from .types import FloatArray

__all__ = ["HANDOVER_SECONDS", "ScipyRun", "scipy_status"]

_SCIPY_NAMES = {"lbfgs": "L-BFGS-B", "newton-cg": "Newton-CG", "trust-ncg": "trust-ncg"}
# The SciPy worker wakes its consumer at most this often (and at the end): the latency of a
# streamed line, traded against a thread switch per iteration.
HANDOVER_SECONDS = 0.02
# L-BFGS-B's line search tries at most this many points per iteration (SciPy's default maxls).
_MAX_LINE_SEARCH = 20


def scipy_status(method: Method, result: scipy.optimize.OptimizeResult) -> Status:
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


class ScipyRun:
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
        # The last two points as (bytes of z, (f, gradient)): an iterate and the trial after it,
        # or the accepted trial. Compared by equality (a memcmp), not hashed: 8 KB hash at n = 1000.
        self._cache: list[tuple[bytes, tuple[float, FloatArray]]] = []
        self._ready = threading.Condition()
        self._batch: list[MinimizeEvent | BaseException] = []
        self._handed = 0.0  # when the consumer was last woken
        self._closed = threading.Event()
        self._stop: Stop | None = None
        # SciPy's vectors are x itself when x is a vector (programs): no reshapes per call.
        self._flat = len(objective.in_shape) == 1

    def _tensor(self, z: FloatArray) -> FloatArray:
        return z if self._flat else layout.ten(z, self._objective.in_shape, "C")

    def _vector(self, x: FloatArray) -> FloatArray:
        return x if self._flat else layout.vec(x, "C")

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
        for known, result in self._cache:
            if known == key:
                return result
        self._interrupt()
        try:
            evaluation, grad = self._objective.value_and_gradient(self._tensor(z))
            result = (evaluation.f, self._vector(grad))
        except (NonFiniteError, DomainError):
            result = (math.inf, np.zeros_like(z))  # outside f's finite domain: back off
        self._cache = [*self._cache[-1:], (key, result)]
        return result

    def _value(self, z: FloatArray) -> float:
        return self._value_and_grad(z)[0]

    def _gradient(self, z: FloatArray) -> FloatArray:
        # SciPy asks for f, then the gradient at the same point: the second call is a cache hit
        return self._value_and_grad(z)[1]

    def _hessp(self, z: FloatArray, p: FloatArray) -> FloatArray:
        self._interrupt()
        return self._vector(self._objective.hvp(self._tensor(z), self._tensor(p)))

    def _callback(self, intermediate_result: scipy.optimize.OptimizeResult) -> None:
        z = np.array(intermediate_result.x, dtype=np.float64)
        f, g = self._value_and_grad(z)
        if not math.isfinite(f):
            raise _Interrupted(Stop("diverged", f"step {self._last.step + 1}: f is not finite"))
        # ||g||_2 as numpy.linalg.norm computes it for a vector, without its checks
        norm = math.sqrt(float(g.dot(g)))
        state = DescentState(self._last.step + 1, self._tensor(z), f, self._tensor(g), norm, None,
                             None)  # fmt: skip
        stop = stopping_rule(self._last, state, self._descent, self._f_limit)
        if stop is None and time.monotonic() > self._deadline:
            stop = Stop(
                "deadline",
                f"step {state.step}: the wall-clock budget of {self._deadline_seconds:g} s was "
                "used up",
            )
        self._last = state
        recorded = state.step % self._descent.record_every == 0
        self._hand(record(state, self._descent, self._objective.counts()) if recorded else None,
                   last=False)  # fmt: skip
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
                self._value,
                z0,
                jac=self._gradient,
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
        status = scipy_status(p.method, result)
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
        yield record(start, self._descent, self._objective.counts())
        if stop is not None:
            yield self._summary(stop, start.step)
            return
        if self._deadline_seconds is not None:
            self._deadline = time.monotonic() + self._deadline_seconds
        # SciPy's thread runs under this one's cancellation token (its context): the kernels of
        # an evaluation stop at their checkpoints when the client leaves, not at its end.
        context = contextvars.copy_context()
        worker = threading.Thread(target=context.run, args=(self._work,), name="minimize",
                                  daemon=True)  # fmt: skip
        worker.start()
        try:
            while True:
                with self._ready:
                    while not self._batch:
                        # a client that left stops the run here; closing joins SciPy's thread
                        checkpoint()
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
