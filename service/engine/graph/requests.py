"""Entry points for program requests: one call per request kind, limits checked first.

A program that is a path of one-input operations over its only input is an op list: it is handed
to :class:`~service.engine.chain.Chain` and :mod:`service.engine.functions`, today's code, so its
answers are the op list's, bit for bit. Every other program runs on the graph.
"""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from .. import functions
from ..chain import Chain, ComputedBy, Strategy
from ..errors import LimitExceeded, ShapeError
from ..functions import Direction, FormatRequest, FunctionLimits
from ..jacobian import Format, Jacobian
from ..layout import size_of
from ..types import FloatArray, Layout, Order
from . import strategies
from .nary import Unary
from .program import GraphError, Program

__all__ = [
    "ProgramJacobians",
    "ProgramProduct",
    "as_chain",
    "check_tensors",
    "evaluate",
    "jacobian",
    "product",
    "resolve_format",
]

# A COO entry costs 24 bytes and a dense one 8 (as in functions._resolve_format).
_COO_DENSITY = 1 / 3


@dataclass(frozen=True, eq=False)
class ProgramJacobians:
    """The output value, ``{w: J_w}`` and the strategy that built them."""

    value: FloatArray
    jacobians: dict[str, Jacobian]
    strategy: ComputedBy


@dataclass(frozen=True, eq=False)
class ProgramProduct:
    """The output value and the JVP (one tensor) or the VJPs (one per ``wrt`` input)."""

    value: FloatArray
    tangent: FloatArray | None
    cotangents: dict[str, FloatArray] | None


def as_chain(program: Program) -> Chain | None:
    """Return the :class:`Chain` a path-graph program is, or None."""
    ops = program.chain_ops()
    if ops is None:
        return None
    return Chain(
        [op.op for op in ops if isinstance(op, Unary)], next(iter(program.inputs.values()))
    )


def check_tensors(program: Program, max_elements: int) -> None:
    """Raise :class:`LimitExceeded` if a value or a workspace of the program is over the limit."""
    for what, elements in program.largest_tensors():
        if elements > max_elements:
            raise LimitExceeded(
                f"elements of {what}", elements, max_elements, setting="max_tensor_elements"
            )


def evaluate(
    program: Program, inputs: Mapping[str, FloatArray], limits: FunctionLimits
) -> FloatArray:
    """Return the program's output at ``inputs``."""
    check_tensors(program, limits.max_tensor_elements)
    return program.trace(inputs)[program.output]


def resolve_format(
    program: Program, wrt: Sequence[str], requested: FormatRequest, limits: FunctionLimits
) -> Format:
    """Resolve ``"auto"``: COO when sparse enough or when dense would exceed its limit."""
    if requested != "auto":
        return requested
    probe = strategies.plan(program, wrt, fmt="coo", max_dense_elements=1 << 62,
                            max_nnz=1 << 62)  # fmt: skip
    sparse_enough = sum(probe.nnz_bounds.values()) < _COO_DENSITY * probe.dense_elements
    return "coo" if sparse_enough or probe.dense_elements > limits.max_dense_elements else "dense"


def jacobian(
    program: Program,
    inputs: Mapping[str, FloatArray],
    wrt: Sequence[str] | None,
    *,
    fmt: FormatRequest,
    strategy: Strategy,
    layout: Layout,
    order: Order,
    limits: FunctionLimits,
) -> ProgramJacobians:
    """Return the output and its Jacobian with respect to each input of ``wrt``.

    Parameters
    ----------
    program : Program
    inputs : mapping of str to ndarray
    wrt : sequence of str or None
        Inputs to differentiate (default: all).
    fmt, strategy, layout, order, limits
        As in :func:`service.engine.functions.jacobian`.

    Raises
    ------
    LimitExceeded
        Before any arithmetic, if a tensor, a result or every strategy is over a limit.
    """
    names = program.check_wrt(wrt)
    check_tensors(program, limits.max_tensor_elements)
    chain = as_chain(program)
    if chain is not None and names == tuple(program.inputs):
        (name,) = names
        result = functions.jacobian(
            chain,
            inputs[name],
            fmt=fmt,
            strategy=strategy,
            layout=layout,
            order=order,
            check=False,
            limits=limits,
        )
        return ProgramJacobians(result.value, {name: result.jacobian}, result.strategy)
    resolved = resolve_format(program, names, fmt, limits)
    chosen = strategies.plan(program, names, strategy=strategy, fmt=resolved,
                             max_dense_elements=limits.max_dense_elements,
                             max_nnz=limits.max_nnz)  # fmt: skip
    values = program.trace(inputs)
    matrices = strategies.jacobians(program, values, names, chosen, order=order, fmt=resolved,
                                    layout=layout)  # fmt: skip
    return ProgramJacobians(values[program.output], matrices, chosen.strategy)


def product(
    program: Program,
    inputs: Mapping[str, FloatArray],
    vectors: Mapping[str, FloatArray] | FloatArray,
    wrt: Sequence[str] | None,
    *,
    direction: Direction,
    limits: FunctionLimits,
) -> ProgramProduct:
    """Return the output and a JVP (tangents of the ``wrt`` inputs, summed) or the VJPs.

    Parameters
    ----------
    vectors : mapping of str to ndarray, or ndarray
        ``"jvp"``: one tangent per ``wrt`` input, keyed by name, each of that input's shape.
        ``"vjp"``: the cotangent, of the output's shape.

    Raises
    ------
    GraphError
        If the tangents do not name exactly the ``wrt`` inputs.
    ShapeError
        If a tangent or the cotangent has the wrong shape.
    """
    names = program.check_wrt(wrt)
    check_tensors(program, limits.max_tensor_elements)
    chain = as_chain(program)
    if direction == "jvp":
        if not isinstance(vectors, Mapping) or set(vectors) != set(names):
            given = sorted(vectors) if isinstance(vectors, Mapping) else []
            raise GraphError(f"tangents must name exactly the inputs in wrt {list(names)}, got "
                             f"{given}", "/tangents")  # fmt: skip
        for name in names:
            if vectors[name].shape != program.inputs[name]:
                raise ShapeError(f"the tangent of {name!r} has shape {list(vectors[name].shape)}, "
                                 f"the input has {list(program.inputs[name])}")  # fmt: skip
        if chain is not None:
            (name,) = names
            result = functions.product(chain, inputs[name], vectors[name], direction="jvp",
                                       check=False, limits=limits)  # fmt: skip
            return ProgramProduct(result.value, result.product, None)
        values = program.trace(inputs)
        batch = {name: vectors[name][np.newaxis] for name in names}
        tangent = program.jvp(values, batch)[0]
        return ProgramProduct(values[program.output], tangent, None)
    assert not isinstance(vectors, Mapping)
    if vectors.shape != program.out_shape:
        raise ShapeError(f"cotangent has shape {list(vectors.shape)}, the output has "
                         f"{list(program.out_shape)}")  # fmt: skip
    if chain is not None and names == tuple(program.inputs):
        (name,) = names
        result = functions.product(chain, inputs[name], vectors, direction="vjp", check=False,
                                   limits=limits)  # fmt: skip
        return ProgramProduct(result.value, None, {name: result.product})
    values = program.trace(inputs)
    pulled = program.vjp(values, vectors[np.newaxis], names)
    return ProgramProduct(values[program.output], None, {n: g[0] for n, g in pulled.items()})


def elements_of(program: Program) -> int:
    """Return the number of elements of all inputs together."""
    return sum(size_of(shape) for shape in program.inputs.values())
