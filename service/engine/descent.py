"""Gradient descent on a scalar function: the seed notes' ``x_{t+1} = x_t - γ ten(∂f/∂x_t)``.

This module owns the descent loop and nothing else. It is a pure fold over explicit state, in the
manner of optax's ``base.py``: :func:`init` turns ``x_0`` into a :class:`DescentState`,
:func:`update` maps a state to the next one (or to a :class:`Stop`), :func:`stopping_rule` says
whether a state ends the run, and :func:`run` strings them together as a generator of events.
Streaming and non-streaming callers share that one generator: the streamed lines *are* the
records the non-streamed response collects (:func:`collect`).

Gradient. ``f`` is a :class:`~service.engine.chain.Chain` whose output has exactly one element.
``∂f/∂x`` is the notes' ``lmn x 1`` Jacobian, so ``ten(∂f/∂x) = ten(J vec(1))``: the VJP with
cotangent 1. It is computed by one reverse pass over the stored intermediates; no Jacobian is
ever formed. The result does not depend on the index order (``vec``/``ten`` are inverse).

Preparation (once per request, :class:`Objective`). A linear operation that mixes neighbours (a
stencil: more than one entry per row *and* per column of its Jacobian, e.g. ``xcorr2d`` or an
overlapping ``avg_pool2d``) is replaced by its sparse matrix, built once: its forward is then
``ten_C(J^T vec_C(x)) + b`` and its VJP ``ten_C(J vec_C(u))``, two CSR mat-vecs per step. These
are exactly the operation's ``forward`` and ``vjp`` (the same Jacobian, in C order on both sides,
so the intermediates mean the same tensors); only the rounding differs. Diagonal, permuting and
reducing operations (``add``, ``scale``, ``reshape``, ``sum``, ...) already cost one pass of
arithmetic and dense ``linear`` is a BLAS mat-vec, so they run as they are. A matrix whose
non-zero bound exceeds :data:`PREPARED_NNZ` (or the caller's limit) is not built; the operation
then runs unprepared, with the same results. Every operation's shape rule ran once, in the
:class:`Chain`; a step repeats only the domain checks, which depend on the values.

Update rules (``g_t = ten(∂f/∂x_t)``, ``v_0 = 0``; PyTorch ``SGD`` / optax ``trace``)::

    plain (default):  x_{t+1} = x_t - γ g_t                       (the notes' rule)
    heavy ball β:     v_{t+1} = β v_t + g_t,  x_{t+1} = x_t - γ v_{t+1}
    Nesterov β:       v_{t+1} = β v_t + g_t,  x_{t+1} = x_t - γ (g_t + β v_{t+1})

Backtracking (Armijo) line search, plain direction only: try ``α = γ, ρ γ, ρ² γ, ...`` and accept
the first ``α`` with ``f(x_t - α g_t) <= f(x_t) - c α ||g_t||²``; ``c =`` :data:`ARMIJO_C`,
``ρ =`` :data:`BACKTRACK_FACTOR`, at most :data:`MAX_BACKTRACKS` reductions. A trial point where
``f`` is not finite or leaves an operation's domain is treated as insufficient decrease.

Stopping (checked on every state ``t``, in this order of precedence; the first that holds wins):

1. ``diverged``: ``f_t > divergence_factor · max(|f_0|, 1)`` (the blow-up threshold). A
   non-finite ``x``, ``f`` or gradient, or an iterate outside an operation's domain, is also
   ``diverged``; such a state is never formed, and the run stops at the step that produced it.
2. ``converged_grad``: ``||g_t||₂ <= grad_tol``.
3. ``converged_f``: ``|f_t - f_{t-1}| <= f_tol · max(|f_{t-1}|, |f_t|, 1)`` (t >= 1; scipy's
   L-BFGS-B ``ftol`` test).
4. ``converged_x``: ``||x_t - x_{t-1}||₂ <= x_tol · max(||x_{t-1}||₂, ||x_t||₂, 1)`` (t >= 1).
5. ``max_steps``: ``t = max_steps``.

``line_search_failed`` ends a backtracking run when no trial step decreases ``f`` enough.
``deadline`` ends a run whose wall-clock budget (``DescentLimits.deadline_seconds``, the
service's per-request deadline) is used up, when no rule above has fired at that state.

Records. State ``t`` is recorded when ``t % record_every == 0`` (step 0 included), so a run of
``T`` steps has ``T // record_every + 1`` records: 10 000 steps with ``record_every = 100`` give
steps 0, 100, ..., 10 000. The final state is always in the summary, recorded or not. Between
records :func:`run` yields None once per step, so a consumer (the NDJSON stream) regains control
after every step and can stop the run by closing the generator.
"""

import math
import time
from collections.abc import Callable, Generator, Iterable
from dataclasses import dataclass
from typing import Literal, NamedTuple, Protocol, get_args

import numpy as np
import scipy.sparse as sp

from . import layout
from .cancel import checkpoint
from .chain import Chain
from .errors import DomainError, LimitExceeded, NonFiniteError, ParameterError, ShapeError
from .functions import check_intermediates
from .op import LinearOp, Op
from .ops.affine import Add, Multiply, Scale
from .ops.rearrange import Reshape, Transpose
from .ops.reduce import Mean, MeanSquaredError, SquaredNorm, Sum
from .sparse import CsrMatVec
from .types import FloatArray, Shape

__all__ = [
    "ARMIJO_C",
    "BACKTRACK_FACTOR",
    "DIVERGENCE_FACTOR",
    "LINE_SEARCHES",
    "MAX_BACKTRACKS",
    "PREPARED_NNZ",
    "STATUSES",
    "DescentEvent",
    "DescentLimits",
    "DescentParams",
    "DescentRecord",
    "DescentResult",
    "DescentState",
    "DescentSummary",
    "Descendable",
    "Evaluation",
    "LineSearch",
    "Objective",
    "Status",
    "Step",
    "Stop",
    "arrive",
    "check_scalar",
    "check_scalar_shape",
    "check_steps",
    "collect",
    "descend",
    "init",
    "run",
    "stopping_rule",
    "update",
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


# -- parameters and limits -----------------------------------------------------------------------


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


# -- the prepared objective ----------------------------------------------------------------------


class _Stage(Protocol):
    """One operation of ``f`` as the loop runs it."""

    def forward(self, x: FloatArray) -> FloatArray:
        """(in_shape) -> (out_shape)."""
        ...

    def pullback(self, x: FloatArray, y: FloatArray, u: FloatArray) -> FloatArray:
        """(in_shape), (out_shape), (out_shape) -> (in_shape): ``ten(J vec(u))`` at ``x``.

        ``y`` is the stage's output at ``x``, from which some derivatives are cheaper.
        """
        ...


class _OpStage:
    """An operation run through its own rules, its shapes checked once instead of every step.

    The public ``forward``/``vjp`` run the shape rule on every call, which costs more than the
    arithmetic of a small elementwise operation. The :class:`Chain` has already run every shape
    rule for these exact shapes, and each step feeds the same shapes, so a step only repeats
    what can change with the values: the domain check. The rules then see exactly the inputs
    the public methods would have handed them.
    """

    __slots__ = ("op",)

    def __init__(self, op: Op) -> None:
        self.op = op

    def forward(self, x: FloatArray) -> FloatArray:
        self.op.check_domain(x, differentiating=False)
        return self.op._forward(x)

    def pullback(self, x: FloatArray, y: FloatArray, u: FloatArray) -> FloatArray:
        self.op.check_domain(x, differentiating=True)
        # A batch of one cotangent: (out) -> (1, *out) -> (1, *in) -> (in)
        g: FloatArray = self.op._vjp_given(x, y, u[np.newaxis])[0]
        return g


class _OffsetStage:
    """``add``: ``x + c`` forward and the identity back, without the op's copies.

    ``Add`` copies ``x`` before adding and copies the cotangent back (its public rules must not
    return the caller's array); ``x + c`` is the same float, and the loop never writes an array
    it handed on, so the cotangent itself is passed back.
    """

    __slots__ = ("_constant",)

    def __init__(self, constant: FloatArray) -> None:
        self._constant = constant

    def forward(self, x: FloatArray) -> FloatArray:
        y: FloatArray = x + self._constant
        return y

    def pullback(self, x: FloatArray, y: FloatArray, u: FloatArray) -> FloatArray:
        return u


class _MatrixStage:
    """A linear operation replaced by its sparse Jacobian, built once (C order on both sides).

    ``forward(x) = ten_C(J^T vec_C(x)) + b`` equals ``op.forward(x)`` and ``pullback(x, u) =
    ten_C(J vec_C(u))`` equals ``op.vjp``: the same matrix the chain rule uses, so every
    intermediate is the same tensor; only the summation order (rounding) differs.
    """

    __slots__ = ("_offset", "_pull", "_push")

    def __init__(self, op: LinearOp, in_shape: Shape, out_shape: Shape) -> None:
        # in_out: (in_size, out_size); a linear operation's Jacobian does not depend on x.
        jacobian = op.local_jacobian(np.zeros(in_shape), "C")
        # J vec(u): (in_size, out_size); J^T vec(x): (out_size, in_size); C order both sides
        self._pull = CsrMatVec(sp.csr_array(jacobian), out_shape, in_shape)
        self._push = CsrMatVec(sp.csr_array(jacobian.T), in_shape, out_shape)
        offset = op.offset()
        self._offset = None if offset is None else np.broadcast_to(offset, out_shape)

    def forward(self, x: FloatArray) -> FloatArray:
        y = self._push(x)
        return y if self._offset is None else y + self._offset

    def pullback(self, x: FloatArray, y: FloatArray, u: FloatArray) -> FloatArray:
        return self._pull(u)


def _all_finite(a: FloatArray) -> bool:
    # The sum of squares is finite exactly when every entry is, unless finite entries overflow
    # it (|a_i| above ~1.3e154); only then is each entry tested. One BLAS pass instead of two
    # NumPy passes and a boolean temporary.
    return math.isfinite(np.vdot(a, a)) or bool(np.isfinite(a).all())


# Operations whose every non-finite input entry makes an output entry non-finite, and which
# never raise (no domain): inf or NaN times a finite constant, plus a finite constant, summed
# with other entries or squared stays inf or NaN. The output of the operation before one of
# them need not be checked: the next check sees any overflow, and the first non-finite output
# is found again only then (:meth:`Objective._overflow`).
_PROPAGATING = (Add, Scale, Multiply, Reshape, Transpose, Sum, Mean, SquaredNorm, MeanSquaredError)


def _nonfinite_gradient() -> NonFiniteError:
    return NonFiniteError("the gradient has non-finite entries (overflow)")


def _is_stencil(op: LinearOp, in_shape: Shape, out_shape: Shape, max_nnz: int) -> bool:
    """Whether preparing ``op`` as a sparse matrix pays: mixing, sparse and small enough."""
    bound = op.sparsity(in_shape)
    dense = layout.size_of(in_shape) * layout.size_of(out_shape)
    mixing = bound.fan_in > 1 and bound.fan_out > 1
    # At half the entries or more a CSR mat-vec loses to the operation's dense arithmetic.
    return mixing and bound.nnz <= max_nnz and 2 * bound.nnz <= dense


class Descendable(Protocol):
    """What the loop needs of ``f``: the shape of ``x``, ``f`` with its intermediates, ``∇f``.

    :class:`Objective` (an op list) and the program objective of
    :mod:`service.engine.graph.descent` (several variables as one vector) both provide it.
    """

    @property
    def in_shape(self) -> Shape:
        """Shape of ``x``."""
        ...

    def evaluate(self, x: FloatArray) -> "Evaluation":
        """``f(x)`` and what the gradient needs; raises NonFiniteError or DomainError."""
        ...

    def gradient(self, evaluation: "Evaluation") -> FloatArray:
        """``ten(∂f/∂x)`` at the evaluated point, shape ``in_shape``."""
        ...


class Evaluation(NamedTuple):
    """``f(x)`` and the intermediates ``(x, op_1(x), ..., f(x))`` its gradient needs.

    A named tuple, as :class:`DescentState`: one is made per step.
    """

    f: float
    values: tuple[FloatArray, ...]


class Objective:
    """A scalar function prepared for many evaluations of ``f`` and its gradient.

    Parameters
    ----------
    chain : Chain
        ``f``; its output must have exactly one element.
    max_prepared_nnz : int
        Largest sparse operator to build (:data:`PREPARED_NNZ` caps it further).

    Raises
    ------
    ShapeError
        If ``f`` is not scalar (the message names its output shape).

    Attributes
    ----------
    chain : Chain
    prepared : tuple of int
        Indices of the operations that run as prepared sparse matrices.

    Notes
    -----
    :meth:`evaluate` and :meth:`gradient` raise :class:`NonFiniteError` or :class:`DomainError`
    naming the operation (``"operation 1 (log): ..."``), exactly where ``Chain.trace`` and
    ``Chain.vjp`` would.
    """

    __slots__ = ("_checked", "_names", "_ones", "_stages", "chain", "prepared")

    def __init__(self, chain: Chain, *, max_prepared_nnz: int = PREPARED_NNZ) -> None:
        check_scalar(chain)
        self.chain = chain
        budget = min(max_prepared_nnz, PREPARED_NNZ)
        stages: list[_Stage] = []
        prepared: list[int] = []
        for index, op in enumerate(chain.ops):
            in_shape, out_shape = chain.shapes[index], chain.shapes[index + 1]
            if isinstance(op, LinearOp) and _is_stencil(op, in_shape, out_shape, budget):
                stages.append(_MatrixStage(op, in_shape, out_shape))
                prepared.append(index)
            elif isinstance(op, Add):
                stages.append(_OffsetStage(op.constant))
            else:
                stages.append(_OpStage(op))
        self._stages: tuple[_Stage, ...] = tuple(stages)
        # Whether operation i's output is tested for overflow; the last one's, f, is tested as
        # a float after the loop.
        self._checked = tuple(
            not isinstance(following, _PROPAGATING) for following in chain.ops[1:]
        ) + (False,)
        self._names = tuple(f"operation {i} ({op.name})" for i, op in enumerate(chain.ops))
        self._ones = np.ones(chain.out_shape)
        self.prepared: tuple[int, ...] = tuple(prepared)

    @property
    def in_shape(self) -> Shape:
        """Shape of ``x``."""
        return self.chain.in_shape

    def evaluate(self, x: FloatArray) -> Evaluation:
        """Evaluate ``f(x)`` and keep the intermediates.

        Parameters
        ----------
        x : ndarray, shape ``in_shape``

        Returns
        -------
        Evaluation

        Raises
        ------
        NonFiniteError, DomainError
            Naming the operation whose result is not finite or whose domain ``x`` leaves.
        """
        with np.errstate(all="ignore"):
            return self.evaluate_quietly(x)

    def evaluate_quietly(self, x: FloatArray) -> Evaluation:
        """:meth:`evaluate` for a caller that already ignores floating-point errors.

        The loop enters ``np.errstate`` once per step instead of once per call (2 µs each).
        """
        values = [x]
        for index, stage in enumerate(self._stages):
            try:
                y = stage.forward(values[-1])
            except (DomainError, NonFiniteError) as error:
                raise type(error)(f"{self._names[index]}: {error}") from error
            values.append(y)
            if self._checked[index] and not _all_finite(y):
                self._overflow(values, index)
        f = float(values[-1].item())
        if not math.isfinite(f):
            self._overflow(values, len(self._stages) - 1)
        return Evaluation(f, tuple(values))

    def _overflow(self, values: list[FloatArray], index: int) -> None:
        """Raise NonFiniteError for the first operation up to ``index`` whose output is not finite.

        Only operation ``index``'s output was tested; those before it back to the last tested
        one fed propagating operations, so the first non-finite among them is where a check
        after every operation would have stopped.
        """
        first = index
        while first > 0 and not self._checked[first - 1]:
            first -= 1
        while _all_finite(values[first + 1]):
            first += 1
        raise NonFiniteError(f"{self._names[first]}: the result has non-finite entries (overflow)")

    def gradient(self, evaluation: Evaluation) -> FloatArray:
        """Return ``ten(∂f/∂x)``: the VJP of the cotangent 1 through the stored intermediates.

        Parameters
        ----------
        evaluation : Evaluation
            From :meth:`evaluate`.

        Returns
        -------
        ndarray, shape ``in_shape``

        Raises
        ------
        NonFiniteError, DomainError
            If the gradient is not finite, or an operation has no derivative at its input.
        """
        with np.errstate(all="ignore"):
            u = self.gradient_unchecked(evaluation)
        if not _all_finite(u):
            raise _nonfinite_gradient()
        return u

    def gradient_unchecked(self, evaluation: Evaluation) -> FloatArray:
        """:meth:`gradient` for a caller that ignores floating-point errors and tests the result.

        The loop tests the gradient's norm, which it needs anyway (:func:`_state`); a second pass
        over the entries would only repeat that test.
        """
        u: FloatArray = self._ones
        values = evaluation.values
        for index in range(len(self._stages) - 1, -1, -1):
            try:
                u = self._stages[index].pullback(values[index], values[index + 1], u)
            except (DomainError, NonFiniteError) as error:
                raise type(error)(f"{self._names[index]}: {error}") from error
        # Offset stages pass the cotangent through: a chain of them would hand out the seed.
        return u.copy() if u is self._ones else u


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
    """
    evaluate, gradient = objective.evaluate, objective.gradient
    return _arrive(evaluate, gradient, step, x, velocity, learning_rate, evaluation)


def _arrive(
    evaluate: Callable[[FloatArray], Evaluation],
    gradient: Callable[[Evaluation], FloatArray],
    step: int,
    x: FloatArray,
    velocity: FloatArray | None,
    learning_rate: float,
    evaluation: Evaluation | None = None,
) -> DescentState | Stop:
    """:func:`arrive` with the objective's two rules given (its quiet ones on the fast path)."""
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
            x = state.x - gamma * g  # the notes' rule, exactly
        else:
            beta = params.momentum
            velocity = g if state.velocity is None else beta * state.velocity + g
            direction = g + beta * velocity if params.nesterov else velocity
            x = state.x - gamma * direction
        if isinstance(objective, Objective):
            # An op list evaluates inside this one errstate block (the fast path).
            evaluate, gradient = objective.evaluate_quietly, objective.gradient_unchecked
            return _arrive(evaluate, gradient, state.step + 1, x, velocity, gamma)
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
