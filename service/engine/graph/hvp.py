"""Exact Hessian-vector products of a program: forward over reverse, on the graph.

A program is first linearized at a point (:class:`Linearization`): its values, the domain checks,
and the cotangent ``u`` reaching every value in the gradient's reverse pass. Products with any
number of tangents then reuse it: the tangents of every value forward (JVPs summed over
arguments), then ``u̇`` backward, each node adding ``J_j u̇ + S_j(u, tangents of all arguments)`` to
argument ``j`` (uses summed over paths; :mod:`service.engine.hessian` for the recursion). A
minimizer's conjugate-gradient iterations ask for many products at one point, and pay for the
evaluation and the gradient once.
"""

import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from ..cancel import checkpoint
from ..descent import check_scalar_shape
from ..errors import NonFiniteError, ShapeError
from ..op import batch_of
from ..types import FloatArray
from .program import Program, blame

__all__ = ["Linearization", "ProgramHvp", "program_hvp"]


def _finite(array: FloatArray, what: str) -> FloatArray:
    if not np.all(np.isfinite(array)):
        raise NonFiniteError(f"{what} has non-finite entries (overflow)")
    return array


@dataclass(frozen=True, eq=False)
class ProgramHvp:
    """A program's value, gradient and ``H v`` per differentiated input (B products each)."""

    value: FloatArray
    gradient: dict[str, FloatArray]
    products: dict[str, FloatArray]


class Linearization:
    """A program at a point: its values and the cotangent reaching each, over some inputs.

    Parameters
    ----------
    program : Program
        Its output has exactly one element (the caller checks).
    inputs : mapping of str to ndarray
        Every input's value.
    names : sequence of str
        The differentiated inputs (checked names); the others are held fixed.

    Raises
    ------
    ShapeError, DomainError, NonFiniteError
        From the evaluation or a node's domain, naming the node.
    """

    def __init__(
        self, program: Program, inputs: Mapping[str, FloatArray], names: Sequence[str]
    ) -> None:
        self.program = program
        self.names = tuple(names)
        active = frozenset(names)
        self.values = values = program.trace(inputs)
        # The program checked every shape once; per node only the domain is checked, then the
        # private rules run (as the program's descent objective does).
        self._nodes = [node for node in program.nodes if program.depends(node.id) & active]
        for node in self._nodes:
            with blame(node):
                node.op.check_domain([values[a] for a in node.args], differentiating=True)
        self._varying = {name for name in program.shapes if program.depends(name) & active}
        pulled: dict[str, FloatArray] = {program.output: np.ones((1, *program.out_shape))}
        for node in reversed(program.nodes):
            u = pulled.get(node.id)
            if u is None:
                continue
            args = [values[a] for a in node.args]
            for j, arg in enumerate(node.args):
                if arg in self._varying:
                    with blame(node):
                        g = node.op._vjp(args, j, u)
                    pulled[arg] = g if arg not in pulled else pulled[arg] + g
        self.adjoints = pulled  # (1, *shape) per value that the output depends on

    @functools.cached_property
    def _needs(self) -> set[str]:
        """Return the values whose tangents the products read.

        Those are the arguments of a node whose second-order rule may use them and, recursively,
        the arguments of such values (their tangents are pushed from the arguments').
        """
        program = self.program
        needs: set[str] = set()
        for node in reversed(self._nodes):
            shapes = [program.shapes[a] for a in node.args]
            for j, arg in enumerate(node.args):
                if arg not in self._varying:
                    continue
                curved = any(
                    node.op.curvature_fan(shapes, i, j) is not None for i in range(len(node.args))
                )
                if node.id in needs or curved:
                    needs.add(arg)
        return needs

    @property
    def value(self) -> FloatArray:
        """``f`` at the point."""
        return self.values[self.program.output]

    def gradient(self) -> dict[str, FloatArray]:
        """Return ``∇f`` per differentiated input (zeros where the output does not depend on it).

        Raises
        ------
        NonFiniteError
            If the gradient is not finite.
        """
        return {
            name: _finite(self.adjoints[name][0], "the gradient") if name in self.adjoints else
            np.zeros(self.program.inputs[name])  # the output does not depend on this input
            for name in self.names
        }  # fmt: skip

    def products(self, vectors: Mapping[str, FloatArray], count: int) -> dict[str, FloatArray]:
        """Return ``H v`` per differentiated input for ``count`` tangents of each.

        Parameters
        ----------
        vectors : mapping of str to ndarray
            ``v_w``, shape (count, *shape of w), for every differentiated input ``w``.
        count : int

        Raises
        ------
        ParameterError, DomainError
            From a node (no second-order rule), naming it.
        NonFiniteError
            If a product is not finite.
        """
        program, values = self.program, self.values
        dots = {name: vectors[name] for name in self.names}
        for node in self._nodes:
            if node.id not in self._needs:
                continue
            checkpoint()  # between operations: a cancelled or late computation stops here
            args = [values[a] for a in node.args]
            with blame(node):
                images = [node.op._jvp(args, j, dots[a]) for j, a in enumerate(node.args)
                          if a in dots]  # fmt: skip
            dots[node.id] = functools.reduce(np.add, images)
        moved: dict[str, FloatArray] = {}
        for node in reversed(self._nodes):
            u = self.adjoints.get(node.id)
            if u is None:
                continue
            checkpoint()
            u_dot = moved.pop(node.id, None)
            args = [values[a] for a in node.args]
            arg_dots = [dots.get(a) for a in node.args]
            for j, arg in enumerate(node.args):
                if arg not in self._varying:
                    continue
                with blame(node):
                    terms = [] if u_dot is None else [node.op._vjp(args, j, u_dot)]
                    second = node.op._second_order(args, j, u[0], arg_dots)
                if second is not None:
                    terms.append(second)
                for term in terms:
                    moved[arg] = term if arg not in moved else moved[arg] + term
        return {
            name: _finite(moved.get(name, np.zeros((count, *program.inputs[name]))), "the HVP")
            for name in self.names
        }


def program_hvp(
    program: Program,
    inputs: Mapping[str, FloatArray],
    vectors: Mapping[str, FloatArray],
) -> ProgramHvp:
    """Return ``f``, the gradient and ``H v`` per input of ``vectors``, on the graph.

    The Hessian is taken over the inputs named in ``vectors`` jointly (the others are held fixed),
    so block ``w`` of the result is ``sum_w' H_{w w'} v_{w'}`` (:class:`Linearization`).

    Parameters
    ----------
    program : Program
        Its output has exactly one element.
    inputs : mapping of str to ndarray
        Every input's value.
    vectors : mapping of str to ndarray
        ``v_w`` per differentiated input, each (B, *shape of w).

    Returns
    -------
    ProgramHvp

    Raises
    ------
    ShapeError
        If the output is not scalar or a vector does not fit its input.
    GraphError
        If ``vectors`` names something that is not an input.
    ParameterError, DomainError, NonFiniteError
        As for :func:`service.engine.hessian.hvp`, naming the node.
    """
    names = program.check_wrt(list(vectors), "vectors")
    check_scalar_shape(program.out_shape, "a Hessian-vector product")
    dots: dict[str, FloatArray] = {
        name: batch_of(vectors[name], program.inputs[name], f"vectors of {name!r}")
        for name in names
    }
    count = len(next(iter(dots.values())))
    if any(len(batch) != count for batch in dots.values()):
        raise ShapeError("every input's vectors must hold the same number of vectors")
    point = Linearization(program, inputs, names)
    products = point.products(dots, count)
    return ProgramHvp(point.value, point.gradient(), products)
