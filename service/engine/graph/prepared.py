"""A program prepared for many evaluations of its value and gradient over some of its inputs.

Gradient descent and every minimize method evaluate one program at thousands of points; for a
small program (Rosenbrock at n = 1000: twelve nodes of a thousand elements) the Python around
each node's arithmetic costs more than the arithmetic. :class:`ProgramObjective` therefore does,
once per request, everything that does not depend on the point:

- values that no variable reaches (the fixed inputs and what is computed from them alone) are
  computed once;
- a node linear in its one varying argument whose other arguments are fixed, and which mixes
  neighbours (``xcorr2d(x, k)`` over ``k`` with ``x`` fixed: the notes' kernel Jacobian), becomes
  its matrix, built once (dense when at least half full; CSR through SciPy's kernel without its
  dispatch, :class:`~service.engine.sparse.CsrMatVec`), so a step is one mat-vec each way;
- every other node gets its rule, chosen once: shapes were checked when the program was built,
  a domain check runs only for an operation that has a domain, and the pullbacks of the common
  operations skip the batch axis of the general VJP (:func:`_pullback`), with the same floats;
- values live in slots (fixed values, the variables, each node's output), so a step does no
  name lookups.

Overflow is tested as for op lists (:mod:`service.engine.descent.objective`): a node's output
only when a consumer could hide a non-finite entry (an operation outside
:data:`_PROPAGATING_NODES`, or none), and ``f`` itself; after a failure the nodes are searched in
order for the first non-finite output, which is the node a test after every node would have
named. A domain error is reported only after that search, for the same reason.

The rules run inside the caller's ``np.errstate`` (:class:`~service.engine.descent.QuietObjective`):
the descent loop enters it once per step.
"""

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import cast

import numpy as np
import scipy.sparse as sp

from .. import layout
from ..cancel import checkpoint
from ..descent import PREPARED_NNZ, PROPAGATING, Evaluation, QuietObjective
from ..errors import DomainError, NonFiniteError
from ..ops.elementwise import Power
from ..sparse import CsrMatVec
from ..types import FloatArray, Shape
from .nary import NaryOp, Unary
from .ops import broadcast
from .program import Node, Program, blame
from .rules import Overflow, finite, node_steps

__all__ = ["Packing", "ProgramObjective"]

# Pullback of one argument: (arguments, node output, cotangent of the output) -> its cotangent.
Pullback = Callable[[Sequence[FloatArray], FloatArray, FloatArray], FloatArray]

# n-ary operations that, like PROPAGATING, turn every non-finite entry of an argument into a
# non-finite output entry and never raise: each argument entry reaches an output entry through
# +, -, * (inf - inf and inf * 0 are NaN), or the mean of squares of a difference.
_PROPAGATING_NODES = (broadcast.Add, broadcast.Subtract, broadcast.Multiply,
                      broadcast.MeanSquaredError)  # fmt: skip


@dataclass(frozen=True)
class Packing:
    """The variables laid end to end in one vector (each flattened in C order)."""

    names: tuple[str, ...]
    shapes: tuple[Shape, ...]

    @property
    def size(self) -> int:
        """Elements of all variables."""
        return sum(layout.size_of(shape) for shape in self.shapes)

    def pack(self, values: Mapping[str, FloatArray]) -> FloatArray:
        """Return the vector of the variables' values."""
        return np.concatenate([layout.vec(values[n], "C") for n in self.names])

    def unpack(self, x: FloatArray) -> dict[str, FloatArray]:
        """Return ``name -> tensor`` for a vector made by :meth:`pack`."""
        result, start = {}, 0
        for name, shape in zip(self.names, self.shapes, strict=True):
            size = layout.size_of(shape)
            result[name] = layout.ten(x[start : start + size], shape, "C")
            start += size
        return result


class _Matrix:
    """``y = ten_C(M^T vec_C(arg)) + offset`` with ``M`` (in_out) built once, and its pullback.

    ``forward`` and ``pullback`` are chosen once: dense mat-vecs (at least half full) or CSR ones
    through SciPy's kernel; either way the same bits as ``M @ v``. ``ten_C`` and ``vec_C`` are
    NumPy's reshapes: the matrix was built in C order on both sides.
    """

    __slots__ = ("_csr", "_dense", "_flat_in", "_flat_out", "_in_shape", "_out_shape", "forward",
                 "offset", "pullback")  # fmt: skip

    def __init__(self, jacobian: sp.coo_array, offset: FloatArray | None, in_shape: Shape,
                 out_shape: Shape) -> None:  # fmt: skip
        n, m = jacobian.shape
        self.offset = offset  # None for a linear (not affine) node
        self._in_shape, self._out_shape = in_shape, out_shape
        self._flat_in, self._flat_out = (n,), (m,)
        self.forward: Callable[[FloatArray], FloatArray]
        self.pullback: Callable[[FloatArray], FloatArray]
        if 2 * jacobian.nnz >= n * m:
            dense = jacobian.toarray()
            self._dense = (np.ascontiguousarray(dense.T), dense)  # push (m, n), pull (n, m)
            self.forward, self.pullback = self._dense_forward, self._dense_pullback
        else:
            self._csr = (CsrMatVec(sp.csr_array(jacobian.T), in_shape, out_shape),
                         CsrMatVec(sp.csr_array(jacobian), out_shape, in_shape))  # fmt: skip
            self.forward, self.pullback = self._sparse_forward, self._csr[1]

    def _dense_forward(self, arg: FloatArray) -> FloatArray:
        y: FloatArray = (self._dense[0] @ arg.reshape(self._flat_in)).reshape(self._out_shape)
        return y if self.offset is None else y + self.offset

    def _dense_pullback(self, u: FloatArray) -> FloatArray:
        g: FloatArray = (self._dense[1] @ u.reshape(self._flat_out)).reshape(self._in_shape)
        return g

    def _sparse_forward(self, arg: FloatArray) -> FloatArray:
        y = self._csr[0](arg)
        return y if self.offset is None else y + self.offset


# Values (elements, all varying nodes together) from which a step checks for cancellation.
STOPPABLE_ELEMENTS = 1 << 16


def _linear(op: NaryOp) -> bool:
    return op.op.linear if isinstance(op, Unary) else op.linear


def _prepare(
    program: Program, node: Node, j: int, fixed: Mapping[str, FloatArray], budget: int
) -> _Matrix | None:
    """Return ``node`` as a matrix in its varying argument ``j``, or None when it does not pay."""
    if not _linear(node.op) or node.args.count(node.args[j]) > 1:
        return None
    shapes = [program.shapes[a] for a in node.args]
    bound = program.sparsity[(node.id, j)]
    n, m = layout.size_of(shapes[j]), layout.size_of(program.shapes[node.id])
    mixing = bound.fan_in > 1 and bound.fan_out > 1
    if not mixing or min(bound.nnz, n * m) > budget:
        return None
    args = [np.zeros(shapes[j]) if k == j else fixed[a] for k, a in enumerate(node.args)]
    with blame(node):
        jacobian = node.op.local_jacobian(args, j, "C")  # (n, m): independent of argument j
        at_zero = node.op.forward(args)  # the value at argument j = 0: the affine part
    return _Matrix(jacobian, at_zero if np.any(at_zero) else None, shapes[j], at_zero.shape)


def _propagates(op: NaryOp) -> bool:
    """Whether a non-finite argument entry always gives a non-finite output entry, no error."""
    if isinstance(op, Unary):
        inner = op.op
        positive_power = isinstance(inner, Power) and inner.p > 0 and inner.p.is_integer()
        return isinstance(inner, PROPAGATING) or positive_power
    return isinstance(op, _PROPAGATING_NODES)


class ProgramObjective(QuietObjective):
    """A scalar program as a function of its variables only, prepared for many evaluations.

    Parameters
    ----------
    program : Program
        Its output has exactly one element.
    inputs : mapping of str to ndarray
        Every input's value; the variables' values are where descent starts.
    variables : sequence of str
        The inputs that vary.
    max_prepared_nnz : int
        Largest matrix to build (:data:`~service.engine.descent.PREPARED_NNZ` caps it further).

    Raises
    ------
    NonFiniteError, DomainError
        If a value computed from the fixed inputs alone is not finite or not defined.
    """

    __slots__ = ("_backs", "_base", "_in_shape", "_ones", "_output", "_outs", "_places", "_spans",
                 "_steps", "_stoppable", "packing", "program")  # fmt: skip

    def __init__(
        self,
        program: Program,
        inputs: Mapping[str, FloatArray],
        variables: Sequence[str],
        *,
        max_prepared_nnz: int = PREPARED_NNZ,
    ) -> None:
        self.program = program
        self.packing = Packing(tuple(variables), tuple(program.inputs[v] for v in variables))
        self._in_shape = (self.packing.size,)
        active = frozenset(variables)
        fixed = {n: np.asarray(v, dtype=np.float64) for n, v in inputs.items() if n not in active}
        varying_nodes = []
        for node in program.nodes:
            if program.depends(node.id) & active:
                varying_nodes.append(node)
                continue
            with blame(node), np.errstate(over="ignore"):
                value = node.op.forward([fixed[a] for a in node.args])
                if not np.isfinite(value).all():
                    raise NonFiniteError("the result has non-finite entries (overflow)")
            fixed[node.id] = value
        names = [*fixed, *variables, *(n.id for n in varying_nodes)]
        slot = {name: k for k, name in enumerate(names)}
        # A node's output is tested when a consumer could hide an overflow, or nothing reads it.
        consumers: dict[str, list[NaryOp]] = {n.id: [] for n in varying_nodes}
        for node in varying_nodes:
            for arg in node.args:
                consumers.get(arg, []).append(node.op)
        budget = min(max_prepared_nnz, PREPARED_NNZ)
        steps, backs = [], []
        for node in varying_nodes:
            varying = [j for j, a in enumerate(node.args) if a not in fixed]
            matrix = None
            if len(varying) == 1:
                matrix = _prepare(program, node, varying[0], fixed, budget)
            checked = node.id != program.output and (
                not consumers[node.id] or not all(map(_propagates, consumers[node.id]))
            )
            prepared = None if matrix is None else (matrix.forward, matrix.pullback)
            step, back = node_steps(program, node, slot, varying, prepared, checked)
            steps.append(step)
            backs.append(back)
        self._steps = tuple(steps)
        self._backs = tuple(reversed(backs))
        # How errors name each node: its label and pointer, as Program.trace names it.
        self._places = tuple(node.place for node in varying_nodes)
        self._outs = tuple(slot[node.id] for node in varying_nodes)
        self._base: list[FloatArray | None] = [*fixed.values()] + [None] * (len(names) - len(fixed))
        # (slot, start, stop, shape) of each variable in x: an evaluation unpacks by slicing
        ends = np.cumsum([0, *(layout.size_of(shape) for shape in self.packing.shapes)])
        self._spans = tuple(
            (slot[v], int(a), int(b), shape)
            for v, a, b, shape in zip(variables, ends[:-1], ends[1:], self.packing.shapes,
                                      strict=True)
        )  # fmt: skip
        self._output = slot[program.output]
        self._ones = np.ones(program.out_shape)
        # A step over large values takes milliseconds per node: a client that left stops it
        # between nodes (a checkpoint each; skipped for small programs, whose whole step is
        # microseconds and which the run checks once a step anyway).
        sizes = (layout.size_of(program.shapes[node.id]) for node in varying_nodes)
        self._stoppable = sum(sizes) >= STOPPABLE_ELEMENTS

    @property
    def in_shape(self) -> Shape:
        """``(total elements of the variables,)``."""
        return self._in_shape

    def evaluate_quietly(self, x: FloatArray) -> Evaluation:
        """Evaluate ``f`` at the variables packed in ``x``; keep every value for the gradient.

        Raises
        ------
        NonFiniteError, DomainError
            Naming the node whose result is not finite or whose domain its arguments leave.
        """
        # Every slot is filled below: fixed ones here, variables next, nodes in order.
        values = cast(list[FloatArray], list(self._base))
        for k, start, stop, shape in self._spans:
            # ten_C of the variable's part of x is NumPy's reshape (see Packing)
            values[k] = x[start:stop].reshape(shape)
        index = 0
        stoppable = self._stoppable
        try:
            for step in self._steps:
                if stoppable:
                    checkpoint()
                step(values)
                index += 1
        except Overflow:
            self._overflow(values, index + 1)
            overflow = NonFiniteError("the result has non-finite entries (overflow)")
            raise self._places[index].locate(overflow) from None
        except (DomainError, NonFiniteError) as error:
            self._overflow(values, index)  # an earlier overflow is what failed first
            raise self._places[index].locate(error) from error
        f = float(values[self._output].item())
        if not math.isfinite(f):
            self._overflow(values, len(self._steps))
        return Evaluation(f, tuple(values))

    def _overflow(self, values: Sequence[FloatArray], stop: int) -> None:
        """Raise NonFiniteError naming the first of the first ``stop`` nodes whose output is not.

        The nodes are searched in order: the first non-finite output is where a test after every
        node would have stopped. Returns when all of them are finite.
        """
        for place, out in zip(self._places[:stop], self._outs, strict=False):
            if not finite(values[out]):
                raise place.locate(NonFiniteError("the result has non-finite entries (overflow)"))

    def gradient_unchecked(self, evaluation: Evaluation) -> FloatArray:
        """Return ``∇f`` with respect to every variable, packed like ``x``.

        Raises
        ------
        DomainError
            If a node has no derivative at its arguments.
        """
        values = evaluation.values
        pulled: list[FloatArray | None] = [None] * len(values)
        pulled[self._output] = self._ones
        index = 0
        stoppable = self._stoppable
        try:
            for back in self._backs:
                if stoppable:
                    checkpoint()
                back(values, pulled)
                index += 1
        except (DomainError, NonFiniteError) as error:
            raise self._places[len(self._places) - 1 - index].locate(error) from error
        parts = [pulled[k] for k, *_ in self._spans]
        if len(parts) == 1 and parts[0] is not None:
            # one variable: its gradient, vec_C (NumPy's reshape), a copy as packing makes
            return np.array(parts[0].reshape(self.in_shape))
        zero_filled = (  # no path from a variable to the output: its gradient is zero
            np.zeros(shape) if part is None else part
            for shape, part in zip(self.packing.shapes, parts, strict=True)
        )
        return self.packing.pack(dict(zip(self.packing.names, zero_filled, strict=True)))
