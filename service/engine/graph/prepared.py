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
from ..descent import PREPARED_NNZ, PROPAGATING, Evaluation, QuietObjective
from ..errors import DomainError, NonFiniteError
from ..op import ElementwiseOp, Op
from ..ops.affine import Add, Multiply, Scale
from ..ops.elementwise import Power
from ..ops.reduce import Mean, Sum
from ..sparse import CsrMatVec
from ..types import FloatArray, Shape
from .nary import NaryOp, Unary
from .ops import broadcast
from .ops.structure import Slice
from .program import Node, Program, blame

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


def _has_domain(op: NaryOp) -> bool:
    if isinstance(op, Unary):
        return type(op.op).check_domain is not Op.check_domain
    return type(op).check_domain is not NaryOp.check_domain


def _propagates(op: NaryOp) -> bool:
    """Whether a non-finite argument entry always gives a non-finite output entry, no error."""
    if isinstance(op, Unary):
        inner = op.op
        positive_power = isinstance(inner, Power) and inner.p > 0 and inner.p.is_integer()
        return isinstance(inner, PROPAGATING) or positive_power
    return isinstance(op, _PROPAGATING_NODES)


def _reduces_all(op: Op, shape: Shape) -> bool:
    """Whether ``op`` is ``sum`` or ``mean`` over every axis of ``shape``."""
    if type(op) is not Sum and type(op) is not Mean:
        return False
    return len(op._axes(shape)) == len(shape)


def _unary_pullback(op: Op, shape: Shape) -> Pullback:
    """Return the pullback of a one-input op: its VJP on a batch of one, or those floats unbatched.

    Each unbatched rule is the op's ``_vjp`` with the batch axis left out: the same elementwise
    products (a leading axis of length 1 changes no float), the same broadcast copies.
    """
    kind = type(op)
    if kind is Scale:
        factor = cast(Scale, op).factor
        return lambda args, y, u: factor * u
    if kind is Add:
        return lambda args, y, u: u  # the identity; the copy the op makes is not needed here
    if kind is Multiply:
        constant = cast(Multiply, op).constant
        return lambda args, y, u: u * constant
    if kind is Sum or kind is Mean:
        reduction = cast(Sum | Mean, op)
        axes = reduction._axes(shape)
        weight = reduction._weight(shape, axes)
        if _reduces_all(op, shape):  # every element receives w u
            return lambda args, y, u: np.full(shape, weight * u)
        return lambda args, y, u: np.array(np.broadcast_to(weight * np.expand_dims(u, axes),
                                                           shape))  # fmt: skip
    if isinstance(op, ElementwiseOp) and kind._vjp is ElementwiseOp._vjp:
        # g'(x) * u, g'(x) from the stored value where the op has that rule: elementwise
        return lambda args, y, u: op._vjp_given(args[0], y, u)
    return lambda args, y, u: op._vjp(args[0], u[np.newaxis])[0]


def _pullback(program: Program, node: Node, j: int) -> Pullback:
    """Return the pullback of argument ``j`` of ``node`` (see :func:`_unary_pullback`)."""
    op = node.op
    shape = program.shapes[node.args[j]]
    if isinstance(op, Unary):
        return _unary_pullback(op.op, shape)
    if isinstance(op, Slice):
        index = op.index

        def scatter(args: Sequence[FloatArray], y: FloatArray, u: FloatArray) -> FloatArray:
            grad = np.zeros(shape)
            grad[index] = u  # basic slicing selects each element at most once
            return grad

        return scatter
    kind = type(op)
    shapes = [program.shapes[a] for a in node.args]
    if kind is broadcast.MeanSquaredError and shape == broadcast.broadcast_shape(shapes, op.name):
        # (a - b) * (±2 / N) * u, with nothing to sum over broadcast axes
        mse = cast(broadcast.MeanSquaredError, op)
        return lambda args, y, u: mse._partial(args, j) * u
    if kind._vjp is broadcast._Broadcasting._vjp and shape == program.shapes[node.id]:
        elementwise = cast(broadcast._Broadcasting, op)

        def scaled(args: Sequence[FloatArray], y: FloatArray, u: FloatArray) -> FloatArray:
            partial = elementwise.partial(args, j)
            if isinstance(partial, float) and abs(partial) == 1.0:
                return u if partial > 0 else np.negative(u)
            return np.multiply(u, partial)

        return scaled
    return lambda args, y, u: op._vjp(args, j, u[np.newaxis])[0]


class _Rule:
    """One varying node as an evaluation runs it."""

    __slots__ = ("args", "checked", "domain", "forward", "label", "node", "out", "pulls")

    def __init__(self, program: Program, node: Node, slot: Mapping[str, int],
                 fixed: Mapping[str, FloatArray], checked: bool, budget: int) -> None:  # fmt: skip
        self.node = node
        self.label = node.label
        self.out = slot[node.id]
        self.args = tuple(slot[a] for a in node.args)
        self.checked = checked  # whether the output is tested for overflow
        varying = [j for j, a in enumerate(node.args) if a not in fixed]
        matrix = _prepare(program, node, varying[0], fixed, budget) if len(varying) == 1 else None
        self.domain = matrix is None and _has_domain(node.op)
        self.forward: Callable[[Sequence[FloatArray]], FloatArray]
        pulls: list[tuple[int, Pullback]] = []
        if matrix is not None:
            (j,) = varying
            self.forward = lambda args: matrix.forward(args[j])
            pulls.append((j, lambda args, y, u: matrix.pullback(u)))
        else:
            op = node.op
            if isinstance(op, Unary):
                inner = op.op
                shape = program.shapes[node.args[0]]
                # LinearOp's forward, apply(x[newaxis])[0] + offset, without the batch axis
                if type(inner) is Scale:
                    factor = inner.factor
                    self.forward = lambda args: factor * args[0]
                elif type(inner) is Add:
                    constant = inner.constant
                    self.forward = lambda args: args[0] + constant
                elif _reduces_all(inner, shape):
                    # w * sum over every axis: NumPy sums a batch of one in the same order
                    weight = cast(Sum | Mean, inner)._weight(shape, tuple(range(len(shape))))
                    self.forward = lambda args: cast(FloatArray, weight * np.sum(args[0]))
                else:
                    self.forward = lambda args: inner._forward(args[0])
            else:
                self.forward = op._forward
            pulls.extend((j, _pullback(program, node, j)) for j in varying)
        self.pulls = tuple((j, self.args[j], pull) for j, pull in pulls)


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

    __slots__ = ("_base", "_in_shape", "_ones", "_output", "_rules", "_spans", "packing", "program")

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
        self._rules = tuple(
            _Rule(program, node, slot, fixed, node.id != program.output and (
                not consumers[node.id] or not all(map(_propagates, consumers[node.id]))), budget)
            for node in varying_nodes
        )  # fmt: skip
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
        for index, rule in enumerate(self._rules):
            args = [values[k] for k in rule.args]
            try:
                if rule.domain:
                    rule.node.op.check_domain(args, differentiating=False)
                y = rule.forward(args)
            except (DomainError, NonFiniteError) as error:
                self._overflow(values, index)  # an earlier overflow is what failed first
                raise type(error)(f"{rule.label}: {error}") from error
            values[rule.out] = y
            if rule.checked and not _finite(y):
                self._overflow(values, index + 1)
        f = float(values[self._output].item())
        if not math.isfinite(f):
            self._overflow(values, len(self._rules))
        return Evaluation(f, tuple(values))

    def _overflow(self, values: Sequence[FloatArray], stop: int) -> None:
        """Raise NonFiniteError naming the first of the first ``stop`` nodes whose output is not.

        The nodes are searched in order: the first non-finite output is where a test after every
        node would have stopped. Returns when all of them are finite.
        """
        for rule in self._rules[:stop]:
            if not _finite(values[rule.out]):
                raise NonFiniteError(f"{rule.label}: the result has non-finite entries (overflow)")

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
        for rule in reversed(self._rules):
            u = pulled[rule.out]
            if u is None:
                continue
            args = [values[k] for k in rule.args]
            try:
                if rule.domain:
                    rule.node.op.check_domain(args, differentiating=True)
                for _, k, pull in rule.pulls:
                    g = pull(args, values[rule.out], u)
                    before = pulled[k]
                    pulled[k] = g if before is None else before + g
            except (DomainError, NonFiniteError) as error:
                raise type(error)(f"{rule.label}: {error}") from error
        parts = [pulled[k] for k, *_ in self._spans]
        if len(parts) == 1 and parts[0] is not None:
            # one variable: its gradient, vec_C (NumPy's reshape), a copy as packing makes
            return np.array(parts[0].reshape(self.in_shape))
        zero_filled = (  # no path from a variable to the output: its gradient is zero
            np.zeros(shape) if part is None else part
            for shape, part in zip(self.packing.shapes, parts, strict=True)
        )
        return self.packing.pack(dict(zip(self.packing.names, zero_filled, strict=True)))


def _finite(a: FloatArray) -> bool:
    return math.isfinite(a) if a.ndim == 0 else bool(np.isfinite(a).all())
