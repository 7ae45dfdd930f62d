"""A program: named inputs, operations applied to named values, one output (CONVENTIONS 5.1).

:class:`Program` checks the graph (unique names, known arguments, no cycle), orders the nodes
topologically (Kahn's algorithm, ties kept in the given order) and runs every shape rule, all
before any arithmetic. It then evaluates (:meth:`Program.trace`), pushes tangents of several inputs
forward (the output tangent is the **sum over inputs**, :meth:`Program.jvp`) and pulls cotangents
back with **accumulation** where a value feeds several nodes (:meth:`Program.vjp`). Only what
depends on the inputs being differentiated is visited: a node that no ``wrt`` input reaches
contributes no tangent and receives no cotangent.
"""

from collections.abc import Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass

import numpy as np

from .. import layout
from ..cancel import checkpoint
from ..errors import DomainError, NonFiniteError, ParameterError, Place, ShapeError
from ..op import Sparsity, batch_of
from ..types import FloatArray, Shape
from .nary import NaryOp, Unary

__all__ = ["GraphError", "Node", "Program"]

# A name must look like an identifier so that every graph can be written as an expression.
_MAX_NAME = 64


class GraphError(ParameterError):
    """An invalid graph: duplicate or unknown name, cycle, unknown ``wrt`` name, with a pointer.

    Parameters
    ----------
    message : str
    pointer : str
        JSON pointer into the request, e.g. ``"/function/nodes/2/args/0"`` or ``"/wrt/1"``.
    """

    def __init__(self, message: str, pointer: str) -> None:
        super().__init__(message)
        self.pointer = pointer


@dataclass(frozen=True, eq=False)
class Node:
    """``id = op(*args)``.

    Attributes
    ----------
    id : str
        The value's name.
    op : NaryOp
    args : tuple of str
        Names of inputs or other nodes, in argument order; a name may repeat (``x * x``).
    where : str
        How messages name the node: ``"node 'z' (xcorr2d)"``, or its place in an expression.
    pointer : str
        JSON pointer of the node in the request (``"/function/nodes/3"``).
    """

    id: str
    op: NaryOp
    args: tuple[str, ...]
    where: str = ""
    pointer: str = ""

    @property
    def label(self) -> str:
        """How messages name the node."""
        return self.where or f"node {self.id!r} ({self.op.label})"

    @property
    def place(self) -> Place:
        """How errors name the node: its label and pointer."""
        return Place(self.label, self.pointer or None)


class _Blame:
    # A class, not a generator-based context manager: it wraps every node of every descent step,
    # and contextlib's generator machinery cost a few microseconds per use.
    __slots__ = ("node",)

    def __init__(self, node: Node) -> None:
        self.node = node

    def __enter__(self) -> None:
        return None

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, _: object
    ) -> None:
        if not isinstance(error, _LOCATED) or isinstance(error, GraphError):
            return
        located = type(error)(f"{self.node.label}: {error}")
        if self.node.pointer:
            located.pointer = self.node.pointer
        raise located from error


_LOCATED = (ShapeError, ParameterError, DomainError, NonFiniteError)


def blame(node: Node) -> AbstractContextManager[None]:
    """Re-raise an engine error (not a limit) with the node's name, keeping its class."""
    return _Blame(node)


def _require_finite(array: FloatArray, what: str) -> None:
    if not np.all(np.isfinite(array)):
        raise NonFiniteError(f"{what} has non-finite entries (overflow)")


def _check_name(name: object, pointer: str) -> str:
    if not isinstance(name, str) or not name.isidentifier() or len(name) > _MAX_NAME:
        raise GraphError(f"a name must be an identifier of at most {_MAX_NAME} characters, "
                         f"got {name!r}", pointer)  # fmt: skip
    return name


class Program:
    """A function of named inputs given as a graph of operations.

    Parameters
    ----------
    inputs : mapping of str to shape
        Input names and shapes, in request order.
    nodes : sequence of Node
        In any order that respects the arguments.
    output : str
        The name of the value the program returns (an input or a node).

    Raises
    ------
    GraphError
        Duplicate or unknown names, a cycle, an empty graph: with a pointer to the culprit.
    ShapeError, ParameterError
        From a shape rule, naming the node.
    """

    __slots__ = (
        "_consumers",
        "_depends",
        "_tensors",
        "inputs",
        "nodes",
        "output",
        "shapes",
        "sparsity",
    )

    def __init__(self, inputs: Mapping[str, Sequence[int]], nodes: Sequence[Node], output: str):
        self.inputs: dict[str, Shape] = {
            _check_name(name, f"/inputs/{name}"): layout.check_dims(shape, f"input {name!r} shape")
            for name, shape in inputs.items()
        }
        if not self.inputs:
            raise GraphError("a program needs at least one input", "/inputs")
        by_id: dict[str, Node] = {}
        for node in nodes:
            _check_name(node.id, f"{node.pointer}/id")
            if node.id in self.inputs or node.id in by_id:
                raise GraphError(f"the name {node.id!r} is defined twice", f"{node.pointer}/id")
            by_id[node.id] = node
        for node in nodes:
            for j, arg in enumerate(node.args):
                if arg not in self.inputs and arg not in by_id:
                    raise GraphError(f"{node.label}: unknown name {arg!r} (not an input or a "
                                     "node)", f"{node.pointer}/args/{j}")  # fmt: skip
        if output not in self.inputs and output not in by_id:
            raise GraphError(f"the output {output!r} is not an input or a node", "/function/output")
        self.output = output
        self.nodes: tuple[Node, ...] = self._ordered(nodes, by_id)
        self.shapes: dict[str, Shape] = dict(self.inputs)
        self.sparsity: dict[tuple[str, int], Sparsity] = {}
        for node in self.nodes:
            arg_shapes = [self.shapes[a] for a in node.args]
            with blame(node):
                node.op.check_arity(len(arg_shapes))
                shape = layout.check_dims(node.op.out_shape(arg_shapes), "output shape")
                for j in range(len(arg_shapes)):
                    self.sparsity[(node.id, j)] = node.op.sparsity(arg_shapes, j)
            self.shapes[node.id] = shape
        self._depends: dict[str, frozenset[str]] = {name: frozenset({name}) for name in inputs}
        self._consumers: dict[str, int] = {}
        for node in self.nodes:
            self._depends[node.id] = frozenset().union(*(self._depends[a] for a in node.args))
            for arg in node.args:
                self._consumers[arg] = self._consumers.get(arg, 0) + 1
        # from shapes only, so once: every request and every descent start checks them
        self._tensors = tuple(self._sizes())

    @staticmethod
    def _ordered(nodes: Sequence[Node], by_id: Mapping[str, Node]) -> tuple[Node, ...]:
        """Kahn's algorithm: a node comes after all its arguments; ties keep the given order."""
        waiting = {n.id: len({a for a in n.args if a in by_id}) for n in nodes}
        users: dict[str, list[str]] = {}
        for node in nodes:
            for arg in dict.fromkeys(node.args):
                if arg in by_id:
                    users.setdefault(arg, []).append(node.id)
        position = {n.id: k for k, n in enumerate(nodes)}
        ready = sorted((i for i, w in waiting.items() if w == 0), key=position.__getitem__)
        ordered: list[Node] = []
        while ready:
            current = ready.pop(0)
            ordered.append(by_id[current])
            for user in users.get(current, []):
                waiting[user] -= 1
                if waiting[user] == 0:
                    ready.append(user)
            ready.sort(key=position.__getitem__)
        if len(ordered) != len(nodes):
            stuck = next(n for n in nodes if waiting[n.id] > 0)
            raise GraphError(f"the graph has a cycle through {stuck.label}", stuck.pointer)
        return tuple(ordered)

    # -- structure -------------------------------------------------------------------------------

    @property
    def out_shape(self) -> Shape:
        """Shape of the output."""
        return self.shapes[self.output]

    def depends(self, name: str) -> frozenset[str]:
        """Return the inputs that the value ``name`` depends on."""
        return self._depends[name]

    def check_wrt(self, wrt: Sequence[str] | None, field: str = "wrt") -> tuple[str, ...]:
        """Return ``wrt`` (default: every input) after checking each name is an input.

        ``field`` names the request member in messages and pointers (``wrt``, ``variables``).
        """
        if wrt is None:
            return tuple(self.inputs)
        if not wrt:
            raise GraphError(f"{field} must name at least one input", f"/{field}")
        for k, name in enumerate(wrt):
            if name not in self.inputs:
                raise GraphError(f"{field} names {name!r}, which is not an input; inputs: "
                                 f"{', '.join(self.inputs)}", f"/{field}/{k}")  # fmt: skip
        if len(set(wrt)) != len(wrt):
            raise GraphError(f"{field} names an input twice", f"/{field}")
        return tuple(wrt)

    def chain_ops(self) -> list[NaryOp] | None:
        """Return the ops of a path graph of one-input ops over the only input, else None.

        Such a program is exactly an op list: it is computed by
        :class:`~service.engine.chain.Chain`, today's code, so it gives the same bits.
        """
        if len(self.inputs) != 1 or not self.nodes:
            return None
        previous = next(iter(self.inputs))
        for node in self.nodes:
            if not isinstance(node.op, Unary) or node.args != (previous,):
                return None
            previous = node.id
        return [node.op for node in self.nodes] if previous == self.output else None

    def largest_tensors(self) -> Iterator[tuple[str, int]]:
        """Yield ``(what, elements)`` for every value and every op's workspace, from shapes."""
        return iter(self._tensors)

    def _sizes(self) -> Iterator[tuple[str, int]]:
        for name, shape in self.shapes.items():
            yield (f"the input {name!r}" if name in self.inputs else f"the value {name!r}",
                   layout.size_of(shape))  # fmt: skip
        for node in self.nodes:
            workspace = node.op.workspace_elements([self.shapes[a] for a in node.args])
            yield f"{node.label}'s working array", workspace

    # -- evaluation ------------------------------------------------------------------------------

    def _check_inputs(self, inputs: Mapping[str, FloatArray]) -> dict[str, FloatArray]:
        values: dict[str, FloatArray] = {}
        for name, shape in self.inputs.items():
            if name not in inputs:
                raise GraphError(f"the input {name!r} is missing", f"/inputs/{name}")
            value = np.asarray(inputs[name], dtype=np.float64)
            if value.shape != shape:
                raise ShapeError(f"input {name!r} has shape {list(value.shape)}, the program was "
                                 f"built for {list(shape)}")  # fmt: skip
            values[name] = value
        return values

    def trace(self, inputs: Mapping[str, FloatArray]) -> dict[str, FloatArray]:
        """Evaluate every node; return every named value (inputs included).

        Raises
        ------
        ShapeError
            If an input does not have its declared shape.
        DomainError, NonFiniteError
            From an operation, naming the node.
        """
        values = self._check_inputs(inputs)
        # Every shape rule ran when the program was built, so each node runs its own rule after
        # its domain check. Finiteness is checked once, on the output: an overflow reaches it
        # (inf or nan), and only then are the values searched for the node that overflowed.
        with np.errstate(all="ignore"):
            for node in self.nodes:
                checkpoint()  # between operations: a cancelled or late computation stops here
                args = [values[a] for a in node.args]
                with blame(node):
                    node.op.check_domain(args, differentiating=False)
                    values[node.id] = node.op._forward(args)
        if not np.all(np.isfinite(values[self.output])):
            for node in self.nodes:
                with blame(node):
                    _require_finite(values[node.id], "the result")
            _require_finite(values[self.output], "the output")  # an input, not finite
        return values

    def jvp(
        self, values: Mapping[str, FloatArray], tangents: Mapping[str, FloatArray]
    ) -> FloatArray:
        """Push tangents of some inputs forward: ``sum_w ten(J_w^T vec(v_w))``.

        Parameters
        ----------
        values : mapping
            From :meth:`trace`.
        tangents : mapping of str to ndarray, each (B, *shape of that input)
            One batch per differentiated input; the other inputs are held fixed.

        Returns
        -------
        ndarray, shape (B, *out_shape)
        """
        batches = {
            name: batch_of(t, self.inputs[name], f"tangents of {name!r}")
            for name, t in tangents.items()
        }
        count = len(next(iter(batches.values())))
        active = frozenset(batches)
        pushed: dict[str, FloatArray] = dict(batches)
        for node in self.nodes:
            if not self._depends[node.id] & active:
                continue
            checkpoint()
            args = [values[a] for a in node.args]
            with blame(node):
                node.op.check_domain(args, differentiating=True)
            total: FloatArray | None = None
            for j, arg in enumerate(node.args):
                if arg not in pushed:
                    continue
                with blame(node):
                    image = node.op._jvp(args, j, pushed[arg])
                total = image if total is None else total + image
            assert total is not None  # the node depends on an active input
            pushed[node.id] = total
        if self.output not in pushed:
            return np.zeros((count, *self.out_shape))
        result = pushed[self.output]
        _require_finite(result, "the JVP")
        return result

    def vjp(
        self, values: Mapping[str, FloatArray], cotangents: FloatArray, wrt: Sequence[str]
    ) -> dict[str, FloatArray]:
        """Pull cotangents of the output back to each input of ``wrt``, accumulating over uses.

        Parameters
        ----------
        values : mapping
            From :meth:`trace`.
        cotangents : ndarray, shape (B, *out_shape)
        wrt : sequence of str

        Returns
        -------
        dict of str to ndarray, each (B, *shape of that input)
            ``ten(J_w vec(u))`` for each ``w``: the sum over every path from ``w`` to the output.
        """
        cotangents = batch_of(cotangents, self.out_shape, "cotangents")
        active = frozenset(wrt)
        pulled: dict[str, FloatArray] = {self.output: cotangents}
        for node in reversed(self.nodes):
            checkpoint()
            u = pulled.pop(node.id, None)
            if u is None:
                continue
            args = [values[a] for a in node.args]
            with blame(node):
                node.op.check_domain(args, differentiating=True)
            for j, arg in enumerate(node.args):
                if not self._depends[arg] & active:
                    continue
                with blame(node):
                    g = node.op._vjp(args, j, u)
                # A value used by several nodes (or twice by one) sums its cotangents.
                pulled[arg] = g if arg not in pulled else pulled[arg] + g
        result = {}
        for name in wrt:
            found = pulled.get(name)
            g = np.zeros((len(cotangents), *self.inputs[name])) if found is None else found
            _require_finite(g, "the VJP")
            result[name] = g
        return result
