"""The prepared objective: ``f`` and its gradient, evaluated for many steps.

Part of :mod:`service.engine.descent`, whose docstring describes the preparation.
"""

import abc
import math
from typing import NamedTuple, Protocol

import numpy as np
import scipy.sparse as sp

from .. import layout
from ..chain import Chain
from ..errors import DomainError, NonFiniteError
from ..op import LinearOp, Op
from ..ops.affine import Add, Multiply, Scale
from ..ops.rearrange import Reshape, Transpose
from ..ops.reduce import Mean, MeanSquaredError, SquaredNorm, Sum
from ..sparse import CsrMatVec
from ..types import FloatArray, Shape
from .params import PREPARED_NNZ, check_scalar

__all__ = [
    "PROPAGATING",
    "Descendable",
    "Evaluation",
    "Objective",
    "QuietObjective",
]


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


class _LossStage:
    """``squared_norm`` or ``mse`` as the last operation: ``f`` forward, ``∇f`` back.

    The op's VJP of the seed cotangent 1 is ``∇f(x) * 1`` through a batch axis (a reshape, a
    broadcast product and an index: 5 µs of a small step); ``∇f(x) * 1.0`` is ``∇f(x)``
    exactly, so the gradient itself is passed back. Neither loss has a domain to check.
    """

    __slots__ = ("_op",)

    def __init__(self, op: SquaredNorm | MeanSquaredError) -> None:
        self._op = op

    def forward(self, x: FloatArray) -> FloatArray:
        return self._op._forward(x)

    def pullback(self, x: FloatArray, y: FloatArray, u: FloatArray) -> FloatArray:
        # u is the seed 1.0: the loss is the last operation (see Objective)
        return self._op._gradient(x)


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
PROPAGATING = (Add, Scale, Multiply, Reshape, Transpose, Sum, Mean, SquaredNorm, MeanSquaredError)


def _nonfinite_gradient() -> NonFiniteError:
    return NonFiniteError("the gradient has non-finite entries (overflow)")


def prepared_operations(chain: Chain, max_prepared_nnz: int = PREPARED_NNZ) -> tuple[int, ...]:
    """Return the indices of the operations :class:`Objective` prepares as sparse matrices.

    From shapes alone, so that the cost model charges their two CSR copies
    (:func:`~service.engine.estimates.descent_step_cost`).
    """
    budget = min(max_prepared_nnz, PREPARED_NNZ)
    return tuple(
        index
        for index, op in enumerate(chain.ops)
        if isinstance(op, LinearOp)
        and _is_stencil(op, chain.shapes[index], chain.shapes[index + 1], budget)
    )


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


class QuietObjective(abc.ABC):
    """A prepared objective whose rules can run inside the caller's ``np.errstate``.

    The descent loop enters ``np.errstate`` once per step and calls :meth:`evaluate_quietly` and
    :meth:`gradient_unchecked` inside it (:func:`~service.engine.descent.update`), testing the
    gradient through the norm it needs anyway; :meth:`evaluate` and :meth:`gradient` are the
    same rules for any other caller. Op lists (:class:`Objective`) and programs
    (:mod:`service.engine.graph.prepared`) provide them.
    """

    __slots__ = ()

    @property
    @abc.abstractmethod
    def in_shape(self) -> Shape:
        """Shape of ``x``."""

    @abc.abstractmethod
    def evaluate_quietly(self, x: FloatArray) -> "Evaluation":
        """:meth:`evaluate` for a caller that already ignores floating-point errors.

        The loop enters ``np.errstate`` once per step instead of once per call (2 µs each).
        """

    @abc.abstractmethod
    def gradient_unchecked(self, evaluation: "Evaluation") -> FloatArray:
        """:meth:`gradient` for a caller that ignores floating-point errors and tests the result.

        The loop tests the gradient's norm, which it needs anyway (:func:`_state`); a second pass
        over the entries would only repeat that test.
        """

    def evaluate(self, x: FloatArray) -> "Evaluation":
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

    def gradient(self, evaluation: "Evaluation") -> FloatArray:
        """Return ``ten(∂f/∂x)`` at an evaluated point.

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

    def value_and_gradient(self, x: FloatArray) -> tuple["Evaluation", FloatArray]:
        """Return :meth:`evaluate` and :meth:`gradient` at ``x``, under one ``np.errstate``.

        Raises
        ------
        NonFiniteError, DomainError
            As :meth:`evaluate` and :meth:`gradient`.
        """
        with np.errstate(all="ignore"):
            evaluation = self.evaluate_quietly(x)
            u = self.gradient_unchecked(evaluation)
        if not _all_finite(u):
            raise _nonfinite_gradient()
        return evaluation, u


class Objective(QuietObjective):
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
    naming the operation (``"operation 1 (log): ..."``, or its program's place; see
    :meth:`Chain.locate`), exactly where ``Chain.trace`` and ``Chain.vjp`` would.
    """

    __slots__ = (
        "_backward",
        "_checked",
        "_forward",
        "_ones",
        "_stages",
        "chain",
        "prepared",
    )

    def __init__(self, chain: Chain, *, max_prepared_nnz: int = PREPARED_NNZ) -> None:
        check_scalar(chain)
        self.chain = chain
        stages: list[_Stage] = []
        prepared = prepared_operations(chain, max_prepared_nnz)
        for index, op in enumerate(chain.ops):
            in_shape, out_shape = chain.shapes[index], chain.shapes[index + 1]
            if index in prepared:
                assert isinstance(op, LinearOp)  # prepared_operations checked it
                stages.append(_MatrixStage(op, in_shape, out_shape))
            elif isinstance(op, Add):
                stages.append(_OffsetStage(op.constant))
            elif isinstance(op, (SquaredNorm, MeanSquaredError)) and index == len(chain.ops) - 1:
                stages.append(_LossStage(op))
            else:
                stages.append(_OpStage(op))
        self._stages: tuple[_Stage, ...] = tuple(stages)
        # Whether operation i's output is tested for overflow; the last one's, f, is tested as
        # a float after the loop.
        self._checked = tuple(
            not isinstance(following, PROPAGATING) for following in chain.ops[1:]
        ) + (False,)
        self._ones = np.ones(chain.out_shape)
        self.prepared: tuple[int, ...] = prepared
        # What a step walks, bound once (a step is a few µs of Python around its arithmetic):
        # forward (index, rule, tested) in order, backward (index, rule) in reverse.
        self._forward = tuple(
            (index, stage.forward, self._checked[index]) for index, stage in enumerate(stages)
        )
        self._backward = tuple(
            (index, stages[index].pullback) for index in reversed(range(len(stages)))
        )

    @property
    def in_shape(self) -> Shape:
        """Shape of ``x``."""
        return self.chain.in_shape

    def evaluate_quietly(self, x: FloatArray) -> Evaluation:
        """Evaluate ``f(x)``, keeping the intermediates, inside the caller's ``np.errstate``."""
        values = [x]
        y = x
        for index, forward, tested in self._forward:
            try:
                y = forward(y)
            except (DomainError, NonFiniteError) as error:
                raise self.chain.locate(index, error) from error
            values.append(y)
            if tested and not _all_finite(y):
                self._overflow(values, index)
        f = float(y.item())
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
        raise self.chain.locate(
            first, NonFiniteError("the result has non-finite entries (overflow)")
        )

    def gradient_unchecked(self, evaluation: Evaluation) -> FloatArray:
        """Return ``ten(∂f/∂x)``, the VJP of the cotangent 1 through the stored intermediates."""
        u: FloatArray = self._ones
        values = evaluation.values
        for index, pullback in self._backward:
            try:
                u = pullback(values[index], values[index + 1], u)
            except (DomainError, NonFiniteError) as error:
                raise self.chain.locate(index, error) from error
        # Offset stages pass the cotangent through: a chain of them would hand out the seed.
        return u.copy() if u is self._ones else u
