"""Gradient descent over some inputs of a program: the variables descend, the others stay fixed.

The loop of :mod:`service.engine.descent` runs unchanged on one vector ``x``: here ``x`` is the
variables laid end to end (each flattened in C order, in the order of ``variables``), so the
update rules, the stopping rules and ``||∇f||`` all cover every variable jointly. The vector is an
internal representation: results are handed back as tensors, by name (:meth:`Packing.unpack`).

Preparation (once per request, as for op lists) is
:class:`~service.engine.graph.prepared.ProgramObjective`'s: fixed values computed once, stencils
as matrices, each node's rule chosen once, overflow tested only where it could hide.

A program that is a path graph over its one variable is an op list and runs through
:class:`~service.engine.descent.Objective`, the op-list code, bit for bit.
"""

from collections.abc import Callable, Generator, Mapping, Sequence

from .. import layout
from ..descent import (
    Descendable,
    DescentEvent,
    DescentLimits,
    DescentParams,
    Objective,
    check_steps,
    init,
    run,
)
from ..errors import ShapeError
from ..types import FloatArray
from .prepared import Packing, ProgramObjective
from .program import Program
from .requests import as_chain, check_tensors

__all__ = ["Packing", "ProgramObjective", "descend_program"]

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
