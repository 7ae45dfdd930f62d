"""Each node of a prepared program as two closures: its step forward and its step back.

Part of :mod:`service.engine.graph.prepared`, whose docstring states what is prepared. A step
reads its arguments from the value slots and writes its output slot; a step back reads the
cotangent of its output and adds its arguments' cotangents, so an evaluation is one call per node
with nothing decided at run time. The rules are the operations' own, on the same floats:

- a domain check runs only for an operation that has one (``power`` with an integer ``p >= 0``
  has none);
- a one-input operation's VJP is called on a batch of one, except where the unbatched rule is the
  same arithmetic without the batch axis: ``scale``, ``add``, ``multiply`` by a constant,
  ``sum``/``mean`` (a broadcast copy), ``power`` (``p x^(p-1) u``), every elementwise function
  (``g'(x) u``, ``g'`` from the stored value where the op has that rule), and likewise the
  forward of ``scale``, ``add``, ``power`` and a full ``sum``/``mean`` (NumPy sums a batch of one
  in the same order: checked over shapes and layouts when this was written);
- ``slice``, the elementwise pairs of equal shapes and ``mse`` of equal shapes pull back without
  the batch axis (a scatter into zeros, ``±u`` or ``u * partial``, ``partial * u``).
"""

from collections.abc import Callable, Sequence
from typing import cast

import numpy as np

from ..op import ElementwiseOp, Op
from ..ops.affine import Add, Multiply, Scale
from ..ops.elementwise import Power
from ..ops.reduce import Mean, Sum
from ..types import FloatArray, Shape
from .nary import NaryOp, Unary
from .ops import broadcast
from .ops.structure import Slice
from .program import Node, Program

__all__ = ["Back", "Overflow", "Step", "finite", "node_steps"]

# One node forward: reads its argument slots, writes its output slot.
Step = Callable[[list[FloatArray]], None]
# One node back: reads the values and its output's cotangent, adds its arguments' cotangents.
Back = Callable[[Sequence[FloatArray], list[FloatArray | None]], None]
# A pullback of one argument: (arguments, output, cotangent of the output) -> its cotangent.
Pullback = Callable[[Sequence[FloatArray], FloatArray, FloatArray], FloatArray]
# The same for a one-input operation: (x, y, u) -> g.
UnaryPullback = Callable[[FloatArray, FloatArray, FloatArray], FloatArray]


class Overflow(Exception):
    """Raised by a checked step whose output is not finite; the objective names the node."""


def finite(a: FloatArray) -> bool:
    """Whether every entry of ``a`` is finite."""
    return bool(np.isfinite(a).all())


def _reduces_all(op: Op, shape: Shape) -> bool:
    """Whether ``op`` is ``sum`` or ``mean`` over every axis of ``shape``."""
    if type(op) is not Sum and type(op) is not Mean:
        return False
    return len(op._axes(shape)) == len(shape)


def _has_domain(op: Op) -> bool:
    if type(op) is Power and op.p >= 0 and op.p.is_integer():
        return False  # its check returns at once: every real x
    return type(op).check_domain is not Op.check_domain


def _unary_forward(op: Op, shape: Shape) -> Callable[[FloatArray], FloatArray]:
    """Return the forward of a one-input op (LinearOp's ``apply(x[newaxis])[0] + offset``)."""
    kind = type(op)
    if kind is Scale:
        factor = cast(Scale, op).factor
        return lambda x: factor * x
    if kind is Add:
        constant = cast(Add, op).constant
        return lambda x: x + constant
    if kind is Power:
        p = cast(Power, op).p
        return lambda x: np.power(x, p)
    if _reduces_all(op, shape):
        weight = cast(Sum | Mean, op)._weight(shape, tuple(range(len(shape))))
        reduce = np.add.reduce  # numpy.sum's own call, without its wrapper
        return lambda x: cast(FloatArray, weight * reduce(x, None))
    return op._forward


def _unary_pullback(op: Op, shape: Shape) -> UnaryPullback:
    """Return the pullback of a one-input op (module docstring: the op's VJP, unbatched)."""
    kind = type(op)
    if kind is Scale:
        factor = cast(Scale, op).factor
        return lambda x, y, u: factor * u
    if kind is Add:
        return lambda x, y, u: u  # the identity; the copy the op makes is not needed here
    if kind is Multiply:
        constant = cast(Multiply, op).constant
        return lambda x, y, u: u * constant
    if kind is Sum or kind is Mean:
        reduction = cast(Sum | Mean, op)
        axes = reduction._axes(shape)
        weight = reduction._weight(shape, axes)
        if _reduces_all(op, shape):  # every element receives w u: numpy.full's empty and copy

            def filled(x: FloatArray, y: FloatArray, u: FloatArray) -> FloatArray:
                grad = np.empty(shape)
                grad.fill(weight * u)
                return grad

            return filled
        return lambda x, y, u: np.array(np.broadcast_to(weight * np.expand_dims(u, axes),
                                                        shape))  # fmt: skip
    if kind is Power and cast(Power, op).p != 0:
        p = cast(Power, op).p
        return lambda x, y, u: (p * np.power(x, p - 1.0)) * u  # derivative(x) * u
    if isinstance(op, ElementwiseOp) and kind._vjp is ElementwiseOp._vjp:
        # g'(x) * u, g'(x) from the stored value where the op has that rule: elementwise
        return lambda x, y, u: op._vjp_given(x, y, u)
    return lambda x, y, u: op._vjp(x, u[np.newaxis])[0]


def _pullback(program: Program, node: Node, j: int) -> Pullback:
    """Return the pullback of argument ``j`` of an n-ary ``node`` (module docstring)."""
    op = node.op
    shape = program.shapes[node.args[j]]
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


def _one(out: int, s: int, forward: Callable[[FloatArray], FloatArray], pull: UnaryPullback,
         check: Callable[..., None] | None) -> tuple[Step, Back]:  # fmt: skip
    """Return the steps of a node reading one varying slot ``s`` (a one-input op, a matrix)."""
    if check is None:

        def step(values: list[FloatArray]) -> None:
            values[out] = forward(values[s])
    else:

        def step(values: list[FloatArray]) -> None:
            x = values[s]
            check(x, differentiating=False)
            values[out] = forward(x)

    def back(values: Sequence[FloatArray], pulled: list[FloatArray | None]) -> None:
        u = pulled[out]
        if u is None:
            return
        x = values[s]
        if check is not None:
            check(x, differentiating=True)
        g = pull(x, values[out], u)
        before = pulled[s]
        pulled[s] = g if before is None else before + g  # a value used twice sums its cotangents

    return step, back


def _many(out: int, slots: tuple[int, ...], op: NaryOp, pulls: Sequence[tuple[int, Pullback]],
          check: bool) -> tuple[Step, Back]:  # fmt: skip
    """Return the steps of an n-ary node: its forward, the pullbacks of its varying arguments."""
    forward = op._forward

    def step(values: list[FloatArray]) -> None:
        args = [values[k] for k in slots]
        if check:
            op.check_domain(args, differentiating=False)
        values[out] = forward(args)

    def back(values: Sequence[FloatArray], pulled: list[FloatArray | None]) -> None:
        u = pulled[out]
        if u is None:
            return
        args = [values[k] for k in slots]
        if check:
            op.check_domain(args, differentiating=True)
        y = values[out]
        for k, pull in pulls:
            g = pull(args, y, u)
            before = pulled[k]
            pulled[k] = g if before is None else before + g

    return step, back


def _checked(step: Step, out: int) -> Step:
    def checked_step(values: list[FloatArray]) -> None:
        step(values)
        if not finite(values[out]):
            raise Overflow

    return checked_step


def node_steps(
    program: Program,
    node: Node,
    slot: dict[str, int],
    varying: Sequence[int],
    matrix: tuple[Callable[[FloatArray], FloatArray], Callable[[FloatArray], FloatArray]] | None,
    checked: bool,
) -> tuple[Step, Back]:
    """Return ``node``'s step forward and back.

    Parameters
    ----------
    program : Program
    node : Node
    slot : dict of str to int
        The slot of every value.
    varying : sequence of int
        Positions of the arguments a variable reaches.
    matrix : (forward, pullback) or None
        The node as a prepared matrix in its one varying argument.
    checked : bool
        Whether the output is tested for overflow (:class:`Overflow`).
    """
    out = slot[node.id]
    slots = tuple(slot[a] for a in node.args)
    op = node.op
    if matrix is not None:
        forward, pullback = matrix
        steps = _one(out, slots[varying[0]], forward, lambda x, y, u: pullback(u), None)
    elif isinstance(op, Unary):
        shape = program.shapes[node.args[0]]
        check = op.op.check_domain if _has_domain(op.op) else None
        pull = _unary_pullback(op.op, shape)
        steps = _one(out, slots[0], _unary_forward(op.op, shape), pull, check)
    else:
        pulls = [(slots[j], _pullback(program, node, j)) for j in varying]
        has_domain = type(op).check_domain is not NaryOp.check_domain
        steps = _many(out, slots, op, pulls, has_domain)
    step, back = steps
    return (_checked(step, out) if checked else step), back
