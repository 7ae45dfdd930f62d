"""Models of programs (CONVENTIONS 5.1): named inputs, the expression and graph forms, ``wrt``."""

from typing import Annotated, Any

from pydantic import ConfigDict, Discriminator, Field, Tag

from ...codec import Tensor
from .common import StrictModel
from .ops import Function

MAX_INPUTS = 16
MAX_NODES = 512
# A graph node's parameters are its further members, any JSON: those that are not tensors are
# short (pairs, paddings, axes, slice indices, einsum subscripts), and bounded so (tensors are
# bounded by the tensor limits).
MAX_PARAMETER_ITEMS = 32
MAX_PARAMETER_DEPTH = 2
MAX_PARAMETER_TEXT = 200
Name = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")]

Inputs = Annotated[
    dict[Name, Tensor],
    Field(
        min_length=1,
        max_length=MAX_INPUTS,
        description="Named input tensors; names are identifiers (the names an expression uses).",
    ),
]
Expression = Annotated[
    str,
    Field(
        min_length=1,
        max_length=10_000,
        description="A safe Python expression over the inputs, e.g. 'sum(square(xcorr2d(x, k) - "
        "y))': names are inputs, calls are operations (keyword parameters), + - * / ** @, unary "
        "-, basic slicing x[1:, ::2]. Nothing is evaluated as Python.",
    ),
]
Wrt = Annotated[
    list[Name],
    Field(
        min_length=1,
        max_length=MAX_INPUTS,
        description="The inputs to differentiate with respect to (default: all).",
    ),
]


class NodeSpec(StrictModel):
    """``id = op(*args)``; the operation's parameters are further members of the object.

    A parameter that is not a tensor (a pair, a padding, axes, a slice index, subscripts) holds
    lists of at most 32 entries nested at most 2 deep, and strings of at most 200 characters.
    """

    model_config = ConfigDict(extra="allow", strict=True, frozen=True)

    id: Name
    op: Annotated[str, Field(min_length=1, max_length=64)]
    args: Annotated[list[Name], Field(min_length=1, max_length=64)]


class GraphSpec(StrictModel):
    """The graph form: nodes in any order that respects their arguments, and the output's name."""

    nodes: Annotated[list[NodeSpec], Field(max_length=MAX_NODES)]
    output: Name


def _function_form(value: Any) -> str | None:
    if isinstance(value, list | tuple):
        return "ops"
    if isinstance(value, str):
        return "expression"
    if isinstance(value, dict | GraphSpec):
        return "graph"
    return None


AnyFunction = Annotated[
    Annotated[Function, Tag("ops")]
    | Annotated[Expression, Tag("expression")]
    | Annotated[GraphSpec, Tag("graph")],
    Discriminator(_function_form),
    Field(
        description="An op list [op_1, ..., op_n] (h = op_n ∘ ... ∘ op_1), or with `inputs` an "
        "expression string or a graph {nodes, output} (CONVENTIONS 5.1)."
    ),
]
