"""Gradient descent over some inputs of a program: the variables descend, the others stay fixed.

The loop of :mod:`service.engine.descent` runs unchanged on one vector ``x``: here ``x`` is the
variables laid end to end (each flattened in C order, in the order of ``variables``), so the
update rules, the stopping rules and ``||∇f||`` all cover every variable jointly. The vector is an
internal representation: results are handed back as tensors, by name (:meth:`Packing.unpack`).

Preparation (once per request, as for op lists):

- values that no variable reaches (the fixed inputs and what is computed from them alone) are
  computed once, not at every step;
- a node linear in its one varying argument whose other arguments are fixed, and which mixes
  neighbours (``xcorr2d(x, k)`` over ``k`` with ``x`` fixed: the notes' kernel Jacobian), becomes
  its matrix, built once (dense when at least half full), so a step is one mat-vec each way;
- every other node runs its own rules, its shapes checked once when the program was built.

A program that is a path graph over its one variable is an op list and runs through
:class:`~service.engine.descent.Objective`, the op-list code, bit for bit.
"""

import math
from collections.abc import Callable, Generator, Mapping, Sequence
from dataclasses import dataclass
from typing import cast

import numpy as np
import scipy.sparse as sp

from .. import layout
from ..descent import (
    PREPARED_NNZ,
    Descendable,
    DescentEvent,
    DescentLimits,
    DescentParams,
    Evaluation,
    Objective,
    check_steps,
    init,
    run,
)
from ..errors import DomainError, NonFiniteError, ShapeError
from ..types import FloatArray, Shape
from .nary import NaryOp, Unary
from .program import Node, Program, blame
from .requests import as_chain, check_tensors

__all__ = ["Packing", "ProgramObjective", "descend_program"]


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


@dataclass(frozen=True, eq=False)
class _Matrix:
    """``y = ten_C(M^T vec_C(arg)) + offset`` with ``M`` (in_out) built once, and its pullback."""

    push: sp.csr_array | FloatArray  # (out_size, in_size)
    pull: sp.csr_array | FloatArray  # (in_size, out_size)
    offset: FloatArray | None  # None for a linear (not affine) node
    in_shape: Shape
    out_shape: Shape

    def forward(self, arg: FloatArray) -> FloatArray:
        # ten_C is NumPy's reshape: the matrix was built in C order on both sides.
        y: FloatArray = np.reshape(self.push @ layout.vec(arg, "C"), self.out_shape)
        return y if self.offset is None else y + self.offset

    def pullback(self, u: FloatArray) -> FloatArray:
        g: FloatArray = np.reshape(self.pull @ layout.vec(u, "C"), self.in_shape)
        return g


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
    out_shape = at_zero.shape
    offset = at_zero if np.any(at_zero) else None
    if 2 * jacobian.nnz >= n * m:
        dense = jacobian.toarray()
        return _Matrix(np.ascontiguousarray(dense.T), dense, offset, shapes[j], out_shape)
    return _Matrix(sp.csr_array(jacobian.T), sp.csr_array(jacobian), offset, shapes[j],
                   out_shape)  # fmt: skip


@dataclass(frozen=True, eq=False)
class _Step:
    """One node as a step runs it: value slots instead of names, shapes checked once."""

    node: Node
    out: int  # slot of the node's value
    args: tuple[int, ...]  # slots of its arguments
    varying: tuple[int, ...]  # positions of the arguments that depend on a variable
    matrix: _Matrix | None


class ProgramObjective:
    """A scalar program as a function of its variables only, prepared for many steps.

    Values live in a list of slots (fixed values, then the variables, then each varying node's
    output), so a step does no name lookups.

    Parameters
    ----------
    program : Program
        Its output has exactly one element.
    inputs : mapping of str to ndarray
        Every input's value; the variables' values are where descent starts.
    variables : sequence of str
        The inputs that descend.
    max_prepared_nnz : int
        Largest matrix to build (:data:`~service.engine.descent.PREPARED_NNZ` caps it further).
    """

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
        active = frozenset(variables)
        fixed = {n: np.asarray(v, dtype=np.float64) for n, v in inputs.items() if n not in active}
        budget = min(max_prepared_nnz, PREPARED_NNZ)
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
        steps = []
        for node in varying_nodes:
            varying = tuple(k for k, a in enumerate(node.args) if a not in fixed)
            matrix = None
            if len(varying) == 1:
                matrix = _prepare(program, node, varying[0], fixed, budget)
            args = tuple(slot[a] for a in node.args)
            steps.append(_Step(node, slot[node.id], args, varying, matrix))
        self._steps = tuple(steps)
        self._base: list[FloatArray | None] = [*fixed.values()] + [None] * (len(names) - len(fixed))
        self._variables = tuple(slot[v] for v in variables)
        # (slot, start, stop, shape) of each variable in x: a step unpacks by slicing
        ends = np.cumsum([0, *(layout.size_of(shape) for shape in self.packing.shapes)])
        self._spans = tuple(
            (k, int(a), int(b), shape)
            for k, a, b, shape in zip(
                self._variables, ends[:-1], ends[1:], self.packing.shapes, strict=True
            )
        )
        self._output = slot[program.output]
        self._ones = np.ones(program.out_shape)

    @property
    def in_shape(self) -> Shape:
        """``(total elements of the variables,)``."""
        return (self.packing.size,)

    def evaluate(self, x: FloatArray) -> Evaluation:
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
            values[k] = np.reshape(x[start:stop], shape)
        with np.errstate(all="ignore"):
            for step in self._steps:
                args = [values[k] for k in step.args]
                try:
                    if step.matrix is not None:
                        y = step.matrix.forward(args[step.varying[0]])
                    else:
                        step.node.op.check_domain(args, differentiating=False)
                        y = step.node.op._forward(args)
                except (DomainError, NonFiniteError) as error:
                    raise type(error)(f"{step.node.label}: {error}") from error
                if not (math.isfinite(y) if y.ndim == 0 else np.isfinite(y).all()):
                    raise NonFiniteError(f"{step.node.label}: the result has non-finite entries "
                                         "(overflow)")  # fmt: skip
                values[step.out] = y
        return Evaluation(float(values[self._output].item()), tuple(values))

    def gradient(self, evaluation: Evaluation) -> FloatArray:
        """Return ``∇f`` with respect to every variable, packed like ``x``.

        Raises
        ------
        NonFiniteError, DomainError
            If the gradient is not finite, or a node has no derivative at its arguments.
        """
        values = evaluation.values
        pulled: list[FloatArray | None] = [None] * len(values)
        pulled[self._output] = self._ones
        with np.errstate(all="ignore"):
            for step in reversed(self._steps):
                u = pulled[step.out]
                if u is None:
                    continue
                args = [values[k] for k in step.args]
                try:
                    if step.matrix is None:
                        step.node.op.check_domain(args, differentiating=True)
                    for j in step.varying:
                        if step.matrix is not None:
                            g = step.matrix.pullback(u)
                        else:
                            g = step.node.op._vjp(args, j, u[np.newaxis])[0]
                        k = step.args[j]
                        before = pulled[k]
                        pulled[k] = g if before is None else before + g
                except (DomainError, NonFiniteError) as error:
                    raise type(error)(f"{step.node.label}: {error}") from error
            parts = [pulled[k] for k, *_ in self._spans]
            if len(parts) == 1 and parts[0] is not None:
                # one variable: its gradient, flattened (a copy, as packing makes)
                grad = np.array(layout.vec(parts[0], "C"))
            else:
                zero_filled = (  # no path from a variable to the output: its gradient is zero
                    np.zeros(shape) if part is None else part
                    for shape, part in zip(self.packing.shapes, parts, strict=True)
                )
                grad = self.packing.pack(dict(zip(self.packing.names, zero_filled, strict=True)))
            if not np.isfinite(grad).all():
                raise NonFiniteError("the gradient has non-finite entries (overflow)")
        return grad


Events = Generator[DescentEvent, None, None]


def descend_program(
    program: Program,
    inputs: Mapping[str, FloatArray],
    variables: Sequence[str] | None,
    params: DescentParams,
    limits: DescentLimits,
) -> tuple[Events, Callable[[FloatArray], dict[str, FloatArray]]]:
    """Check, prepare and start a run over ``variables``; return its events and the unpacking.

    Returns
    -------
    events : generator of DescentEvent
        As :func:`service.engine.descent.run`; ``x`` in the records and the summary is the
        variables packed in one vector.
    unpack : callable
        Turns such an ``x`` into ``name -> tensor``.

    Raises
    ------
    GraphError
        If ``variables`` names something that is not an input.
    ShapeError
        If the program's output is not a scalar.
    LimitExceeded
        If a tensor, the steps or the trajectory are over a limit.
    NonFiniteError, DomainError
        If ``f`` or its gradient is not finite or not defined at the start.
    """
    names = program.check_wrt(variables, "variables")
    size = layout.size_of(program.out_shape)
    if size != 1:
        raise ShapeError(f"gradient descent needs a scalar function, but the output has shape "
                         f"{list(program.out_shape)} ({size} elements); end it with a reduction "
                         "such as sum or mse")  # fmt: skip
    check_tensors(program, limits.max_tensor_elements)
    packing = Packing(names, tuple(program.inputs[n] for n in names))
    check_steps(packing.size, params, limits)
    chain = as_chain(program)
    objective: Descendable
    if chain is not None and names == tuple(program.inputs):
        (name,) = names
        objective = Objective(chain, max_prepared_nnz=limits.max_nnz)
        start = init(objective, inputs[name])
        return run(objective, start, params, limits.deadline_seconds), lambda x: {name: x}
    objective = ProgramObjective(program, inputs, names, max_prepared_nnz=limits.max_nnz)
    start = init(objective, packing.pack(inputs))
    return run(objective, start, params, limits.deadline_seconds), packing.unpack
