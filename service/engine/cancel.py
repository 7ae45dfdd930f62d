"""Cancellation tokens: how a computation learns that its deadline passed or its client left.

A thread cannot be stopped from outside, so long loops stop themselves: between operations, and
between blocks of large kernels, they call :func:`checkpoint`, which raises
:class:`~service.engine.errors.DeadlineExceeded` or :class:`~service.engine.errors.Cancelled` when
the token of the running computation says so. The API creates one token per computation, runs the
computation under it (:meth:`CancelToken.run`) and sets it when the client disconnects; the
deadline needs nobody to set it. Code run without a token (tests, benchmarks) never stops.
"""

import time
from collections.abc import Callable
from contextvars import ContextVar
from typing import ParamSpec, TypeVar

from .errors import Cancelled, DeadlineExceeded

_CURRENT: ContextVar["CancelToken | None"] = ContextVar("cancel_token", default=None)

Params = ParamSpec("Params")
Result = TypeVar("Result")


class CancelToken:
    """The stop flag and deadline of one computation.

    Parameters
    ----------
    deadline_seconds : float or None
        Wall-clock budget from now; None for no deadline (cancellation only).

    Attributes
    ----------
    checks : int
        How many checkpoints ran under this token (tests measure that a stopped computation
        stops checking, i.e. stopped computing).
    """

    def __init__(self, deadline_seconds: float | None) -> None:
        self.deadline_seconds = deadline_seconds
        self._deadline = None if deadline_seconds is None else time.monotonic() + deadline_seconds
        self._cancelled = False
        self.checks = 0

    def cancel(self) -> None:
        """Ask the computation to stop at its next checkpoint (its client went away)."""
        self._cancelled = True

    @property
    def cancelled(self) -> bool:
        """Whether :meth:`cancel` was called."""
        return self._cancelled

    def check(self) -> None:
        """Raise if the computation must stop.

        Raises
        ------
        Cancelled
            After :meth:`cancel`.
        DeadlineExceeded
            Once the deadline has passed.
        """
        self.checks += 1
        if self._cancelled:
            raise Cancelled("the client disconnected; its computation was stopped")
        if self._deadline is not None and time.monotonic() > self._deadline:
            assert self.deadline_seconds is not None  # set together with _deadline
            raise DeadlineExceeded(self.deadline_seconds)

    def run(
        self, function: Callable[Params, Result], *args: Params.args, **kwargs: Params.kwargs
    ) -> Result:
        """Call ``function`` with this token as the current one (in the calling thread).

        The token is checked first: a client that left while the call waited for its thread
        costs nothing more.
        """
        reset = _CURRENT.set(self)
        try:
            self.check()
            return function(*args, **kwargs)
        finally:
            _CURRENT.reset(reset)


def checkpoint() -> None:
    """Stop here if the current computation's token says so; a no-op without a token.

    Raises
    ------
    Cancelled, DeadlineExceeded
        See :meth:`CancelToken.check`.
    """
    token = _CURRENT.get()
    if token is not None:
        token.check()
