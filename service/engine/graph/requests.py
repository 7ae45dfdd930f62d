"""Entry points for program requests: one call per request kind, limits checked first.

A program that is a path of one-input operations over its only input is an op list: it is handed
to :class:`~service.engine.chain.Chain` and :mod:`service.engine.functions`, today's code, so its
answers are the op list's, bit for bit. Every other program runs on the graph.
"""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from .. import functions
from .. import layout as index_layout
from ..chain import Chain
from ..errors import LimitExceeded, ShapeError
from ..fdcheck import PRODUCT_NNZ, FDCheck
from ..functions import Direction, FormatRequest, FunctionLimits
from ..jacobian import Format, Jacobian
from ..layout import size_of
from ..strategy import ComputedBy, Strategy
from ..types import FloatArray, Layout, Order, Shape
from . import strategies
from .nary import Unary
from .program import GraphError, Program

__all__ = [
    "PackedProgram",
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
    check: FDCheck | None = None


@dataclass(frozen=True, eq=False)
class ProgramProduct:
    """The output value and the JVP (one tensor) or the VJPs (one per ``wrt`` input)."""

    value: FloatArray
    tangent: FloatArray | None
    cotangents: dict[str, FloatArray] | None
    check: FDCheck | None = None


def as_chain(program: Program) -> Chain | None:
    """Return the :class:`Chain` a path-graph program is, or None.

    Its errors name the program's nodes (label and pointer), as :meth:`Program.trace` does, so a
    request's error does not depend on which engine ran it.
    """
    ops = program.chain_ops()
    if ops is None:
        return None
    places = [node.place for node in program.nodes]
    return Chain(
        [op.op for op in ops if isinstance(op, Unary)],
        next(iter(program.inputs.values())),
        places,
    )


def check_tensors(program: Program, max_elements: int) -> None:
    """Raise :class:`LimitExceeded` if a value or a workspace of the program is over the limit."""
    for what, elements in program.largest_tensors():
        if elements > max_elements:
            raise LimitExceeded(
                f"elements of {what}", elements, max_elements, setting="max_tensor_elements"
            )


class PackedProgram:
    """A program as a function of one vector: its ``wrt`` inputs laid end to end, others fixed.

    Each ``wrt`` input is flattened in order F, the notes' ``vec``, so the vector's basis is every
    input's basis in turn and the Jacobian of this function stacks the per-input Jacobians (in_out,
    order F) row-wise. It is what :func:`~service.engine.fdcheck.fd_check` compares
    (:class:`~service.engine.fdcheck.Differentiable`).

    Parameters
    ----------
    program : Program
    inputs : mapping of str to ndarray
        Every input's value; the ``wrt`` ones are where :meth:`pack` starts.
    wrt : sequence of str
        Checked input names.
    """

    def __init__(
        self, program: Program, inputs: Mapping[str, FloatArray], wrt: Sequence[str]
    ) -> None:
        self.program = program
        self.names = tuple(wrt)
        self.fixed = dict(inputs)
        sizes = [size_of(program.inputs[n]) for n in self.names]
        ends = np.cumsum([0, *sizes]).tolist()
        self._spans = [
            (n, a, b, program.inputs[n])
            for n, a, b in zip(self.names, ends, ends[1:], strict=False)
        ]
        self.in_shape: Shape = (ends[-1],)
        self.out_shape: Shape = program.out_shape

    def pack(self, values: Mapping[str, FloatArray]) -> FloatArray:
        """Return the ``wrt`` inputs of ``values`` as one vector."""
        return np.concatenate([index_layout.vec(values[n], "F") for n in self.names])

    def _trace(self, x: FloatArray) -> dict[str, FloatArray]:
        inputs = dict(self.fixed)
        for name, a, b, shape in self._spans:
            inputs[name] = index_layout.ten(x[a:b], shape, "F")
        return self.program.trace(inputs)

    def forward(self, x: FloatArray) -> FloatArray:
        """Return the output with the ``wrt`` inputs taken from ``x``."""
        return self._trace(x)[self.program.output]

    def jvp(self, x: FloatArray, tangents: FloatArray) -> FloatArray:
        """(k, in_size) -> (k, *out_shape): the tangents of all ``wrt`` inputs pushed at once."""
        batch = {
            n: index_layout.ten_batch(tangents[:, a:b], shape, "F")
            for n, a, b, shape in self._spans
        }
        return self.program.jvp(self._trace(x), batch)

    def vjp(self, x: FloatArray, cotangents: FloatArray) -> FloatArray:
        """(c, *out_shape) -> (c, in_size): the pullbacks to the ``wrt`` inputs, end to end."""
        pulled = self.program.vjp(self._trace(x), cotangents, self.names)
        return np.concatenate(
            [index_layout.vec_batch(pulled[n], 1, "F") for n in self.names], axis=1
        )

    def chain_jacobian(self, x: FloatArray, size: int) -> FloatArray | None:
        """Return the ``"chain"`` strategy's Jacobians stacked (in_out, order F), or None."""
        peak = strategies.plan(self.program, self.names, strategy="chain", fmt="dense",
                               max_dense_elements=size, max_nnz=1 << 62).chain_peak_nnz  # fmt: skip
        if peak > max(size, PRODUCT_NNZ):
            return None
        chosen = strategies.plan(self.program, self.names, strategy="chain", fmt="dense",
                                 max_dense_elements=size, max_nnz=peak)  # fmt: skip
        found = strategies.jacobians(self.program, self._trace(x), self.names, chosen,
                                     order="F", fmt="dense", layout="in_out")  # fmt: skip
        return np.concatenate([np.asarray(found[n].matrix) for n in self.names])


def _check(
    program: Program, inputs: Mapping[str, FloatArray], names: tuple[str, ...],
    limits: FunctionLimits,
) -> FDCheck:  # fmt: skip
    """Compare the derivatives in every ``wrt`` input with central differences (as the x form).

    (An op list never comes here: it takes the x form's own check, bit for bit.)
    """
    packed = PackedProgram(program, inputs, names)
    largest = max(size_of(shape) for shape in program.shapes.values())
    return functions.bounded_fd_check(packed, packed.pack(inputs), largest, limits)


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
    check: bool = False,
) -> ProgramJacobians:
    """Return the output and its Jacobian with respect to each input of ``wrt``.

    Parameters
    ----------
    program : Program
    inputs : mapping of str to ndarray
    wrt : sequence of str or None
        Inputs to differentiate (default: all).
    fmt, strategy, layout, order, limits, check
        As in :func:`service.engine.functions.jacobian`; the check covers every ``wrt`` input.

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
            check=check,
            limits=limits,
        )
        return ProgramJacobians(
            result.value, {name: result.jacobian}, result.strategy, result.check
        )
    resolved = resolve_format(program, names, fmt, limits)
    chosen = strategies.plan(program, names, strategy=strategy, fmt=resolved,
                             max_dense_elements=limits.max_dense_elements,
                             max_nnz=limits.max_nnz)  # fmt: skip
    values = program.trace(inputs)
    matrices = strategies.jacobians(program, values, names, chosen, order=order, fmt=resolved,
                                    layout=layout)  # fmt: skip
    report = _check(program, inputs, names, limits) if check else None
    return ProgramJacobians(values[program.output], matrices, chosen.strategy, report)


def product(
    program: Program,
    inputs: Mapping[str, FloatArray],
    vectors: Mapping[str, FloatArray] | FloatArray,
    wrt: Sequence[str] | None,
    *,
    direction: Direction,
    limits: FunctionLimits,
    check: bool = False,
) -> ProgramProduct:
    """Return the output and a JVP (tangents of the ``wrt`` inputs, summed) or the VJPs.

    Parameters
    ----------
    vectors : mapping of str to ndarray, or ndarray
        ``"jvp"``: one tangent per ``wrt`` input, keyed by name, each of that input's shape.
        ``"vjp"``: the cotangent, of the output's shape.
    check : bool
        Also compare the derivatives in every ``wrt`` input with central differences.

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
                                       check=check, limits=limits)  # fmt: skip
            return ProgramProduct(result.value, result.product, None, result.check)
        values = program.trace(inputs)
        batch = {name: vectors[name][np.newaxis] for name in names}
        tangent = program.jvp(values, batch)[0]
        report = _check(program, inputs, names, limits) if check else None
        return ProgramProduct(values[program.output], tangent, None, report)
    assert not isinstance(vectors, Mapping)
    if vectors.shape != program.out_shape:
        raise ShapeError(f"cotangent has shape {list(vectors.shape)}, the output has "
                         f"{list(program.out_shape)}")  # fmt: skip
    if chain is not None and names == tuple(program.inputs):
        (name,) = names
        result = functions.product(chain, inputs[name], vectors, direction="vjp", check=check,
                                   limits=limits)  # fmt: skip
        return ProgramProduct(result.value, None, {name: result.product}, result.check)
    values = program.trace(inputs)
    pulled = program.vjp(values, vectors[np.newaxis], names)
    report = _check(program, inputs, names, limits) if check else None
    cotangents = {n: g[0] for n, g in pulled.items()}
    return ProgramProduct(values[program.output], None, cotangents, report)


def elements_of(program: Program) -> int:
    """Return the number of elements of all inputs together."""
    return sum(size_of(shape) for shape in program.inputs.values())
