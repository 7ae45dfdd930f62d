"""Build an engine :class:`~service.engine.graph.program.Program` from a request's function.

The three forms of CONVENTIONS 5.1 meet here: an expression is compiled to the graph form by the
engine's parser, the graph form is built node by node, and an op list is the path graph over the
one input. Expression and graph therefore go through the same builder and give the same bits.
A one-input operation's parameters are validated by its request model (``schemas.ops``), so a
tensor parameter is decoded exactly as in an op list; a bare list or number is taken as a tensor's
``data``.
"""

import dataclasses
import functools
import json
import typing
from collections.abc import Mapping, Sequence
from typing import Any, get_args

import numpy as np
from pydantic import ValidationError

from ..codec import Tensor
from ..engine.errors import ParameterError, ShapeError, UnknownOperation
from ..engine.graph.expression import compile_expression
from ..engine.graph.nary import Unary, build_op, nary_classes
from ..engine.graph.program import GraphError, Node, Program
from ..engine.op import Op
from ..engine.types import Order, Shape
from .problems import validation_errors
from .schemas.ops import OP_SPECS, OpSpec
from .schemas.programs import (
    MAX_PARAMETER_DEPTH,
    MAX_PARAMETER_ITEMS,
    MAX_PARAMETER_TEXT,
    GraphSpec,
)

__all__ = ["build_program"]

_SPECS: dict[str, type[OpSpec]] = {
    spec.model_fields["op"].annotation.__args__[0]: spec  # type: ignore[union-attr]
    for spec in OP_SPECS
}


def _is_tensor_field(spec: type[OpSpec], name: str) -> bool:
    annotation = spec.model_fields[name].annotation
    return annotation is Tensor or Tensor in get_args(annotation)


def _unary_builder(order: Order, pointer: str, label: str, expression: bool) -> Any:
    """Build a one-input operation from a node's parameters, or say which one is wrong.

    ``label`` names the node in messages (``node 'a'``, or an expression's character offset);
    an expression is one string, so its parameters have no pointers of their own: ``/function``.
    """

    def build(cls: type[Op], params: Mapping[str, Any]) -> Op:
        spec = _SPECS[cls.name]
        bare = {
            key
            for key, value in params.items()
            if key in spec.model_fields and _is_tensor_field(spec, key)
            and not isinstance(value, dict) and value is not None
        }  # fmt: skip
        wire = {key: {"data": value} if key in bare else value for key, value in params.items()}
        document = {"op": cls.name, **wire}
        try:
            model = spec.model_validate_json(json.dumps(document))
        except ValidationError as error:
            errors: list[dict[str, Any]] = [dict(e) for e in error.errors(include_url=False)]
            first = errors[0]
            # The request's renderer picks the union member meant and keeps its tags
            # ('union[float,list[...]]') out of the pointer.
            shown = validation_errors(errors, document)[0]
            parts = shown.pointer.split("/")[1:]
            field = parts[0] if parts else str(first["loc"][0])
            if field in bare and parts[1:2] == ["data"]:
                del parts[1]  # the client wrote the bare data: point at it
            location = "" if expression else "".join(f"/{part}" for part in parts)
            # The op list's wording (explain.py) for the two mistakes pydantic words for itself.
            if first["type"] == "extra_forbidden" and len(parts) == 1:
                message = (f"operation {cls.name!r} has no parameter {field!r}; GET /v1/ops "
                           "lists the parameters of every operation")  # fmt: skip
            elif first["type"] == "extra_forbidden":
                message = f"{cls.name}: {field}: unknown field {parts[-1]!r}"
            elif first["type"] == "missing" and len(first["loc"]) == 1:
                message = f"operation {cls.name!r} needs the parameter {field!r}"
            else:
                message = f"{cls.name}: {field}: {shown.detail}"
            raise GraphError(f"{label}: {message}", f"{pointer}{location}") from None
        return model.to_engine(order)

    return build


@functools.cache
def _tensor_parameters(name: str) -> frozenset[str]:
    """Return the parameters of operation ``name`` that are tensors (one-input or n-ary)."""
    names: set[str] = set()
    spec = _SPECS.get(name)
    if spec is not None:
        names.update(key for key in spec.model_fields if _is_tensor_field(spec, key))
    cls = nary_classes().get(name)
    if cls is not None:
        hints = typing.get_type_hints(cls)
        names.update(f.name for f in dataclasses.fields(cls) if hints[f.name] is np.ndarray)
    return frozenset(names)


def _escape(key: str) -> str:
    return key.replace("~", "~0").replace("/", "~1")


def _check_bounded(value: Any, name: str, pointer: str, graph: bool, depth: int = 0) -> None:
    """Refuse a non-tensor parameter value longer or deeper than its bounds (``NodeSpec``).

    The bounds come before the operation sees the value, so that a 200,000-entry stride is a 422
    with a pointer, not a message echoing it.

    ``graph``: the pointer is the value's, and goes down into it (an expression's is its own).
    """
    if isinstance(value, str) and len(value) > MAX_PARAMETER_TEXT:
        raise GraphError(f"{name}: a string of {len(value)} characters; at most "
                         f"{MAX_PARAMETER_TEXT}", pointer)  # fmt: skip
    if not isinstance(value, list | dict):
        return
    if depth >= MAX_PARAMETER_DEPTH:
        raise GraphError(f"{name}: nested {depth + 1} deep; a parameter's lists nest at most "
                         f"{MAX_PARAMETER_DEPTH} deep", pointer)  # fmt: skip
    if len(value) > MAX_PARAMETER_ITEMS:
        raise GraphError(f"{name}: {len(value)} entries; a parameter that is not a tensor has "
                         f"at most {MAX_PARAMETER_ITEMS}", pointer)  # fmt: skip
    items = value.items() if isinstance(value, dict) else enumerate(value)
    for key, item in items:
        inner = f"{pointer}/{_escape(str(key))}" if graph else pointer
        _check_bounded(item, name, inner, graph, depth + 1)


def _check_parameters(op: str, params: Mapping[str, Any], pointer: str, graph: bool) -> None:
    """Bound a node's parameters (see MAX_PARAMETER_ITEMS); ``graph``: point into the node."""
    tensors = _tensor_parameters(op)
    for key, value in params.items():
        where = f"{pointer}/{_escape(key)}" if graph and len(key) <= MAX_PARAMETER_TEXT else pointer
        if len(key) > MAX_PARAMETER_TEXT:
            raise GraphError(f"{op}: a parameter name of {len(key)} characters; at most "
                             f"{MAX_PARAMETER_TEXT}", where)  # fmt: skip
        if key not in tensors:
            _check_bounded(value, f"{op}: {key}", where, graph)


def _node(raw: Mapping[str, Any], order: Order, pointer: str, where: str = "") -> Node:
    params = {k: v for k, v in raw.items() if k not in ("id", "op", "args")}
    args = tuple(raw["args"])
    _check_parameters(raw["op"], params, pointer, graph=not where)
    label = where or f"node {raw['id']!r}"
    try:
        op = build_op(
            raw["op"], len(args), params, _unary_builder(order, pointer, label, bool(where))
        )
    except GraphError:
        raise
    except (ParameterError, UnknownOperation, ShapeError) as error:
        located = type(error)(f"{label}: {error}")
        located.pointer = pointer
        raise located from error
    return Node(raw["id"], op, args, where, pointer)


def build_program(
    function: str | GraphSpec | Sequence[OpSpec], shapes: Mapping[str, Shape], order: Order
) -> Program:
    """Return the program a request's ``function`` describes over inputs of ``shapes``.

    Parameters
    ----------
    function : str, GraphSpec or list of OpSpec
        Expression, graph form, or op list (then there must be exactly one input).
    shapes : mapping of str to shape
        The inputs, in request order.
    order : {"F", "C"}
        The request's index order (for ``reshape`` and ``linear``).

    Raises
    ------
    GraphError, ExpressionError
        With a pointer inside ``function`` (and a character offset for expressions).
    ShapeError, ParameterError, UnknownOperation
        From the operations, naming the node.
    """
    if isinstance(function, str):
        graph, offsets = compile_expression(function, frozenset(shapes))
        nodes = [
            _node(
                raw, order, "/function", f"expression character {offsets[raw['id']]} ({raw['op']})"
            )
            for raw in graph["nodes"]
        ]
        return Program(shapes, nodes, graph["output"])
    if isinstance(function, GraphSpec):
        nodes = [
            _node(node.model_dump(), order, f"/function/nodes/{k}")
            for k, node in enumerate(function.nodes)
        ]
        return Program(shapes, nodes, function.output)
    if len(shapes) != 1:
        raise GraphError("an op list applies to one input; with several inputs give an "
                         "expression or a graph", "/function")  # fmt: skip
    (name,) = shapes
    previous = name
    nodes = []
    for k, spec in enumerate(function):
        node_id = f"_{k + 1}" if f"_{k + 1}" != name else f"__{k + 1}"
        op = Unary(spec.to_engine(order))
        nodes.append(Node(node_id, op, (previous,), f"operation {k} ({spec.op})", f"/function/{k}"))
        previous = node_id
    return Program(shapes, nodes, previous)
