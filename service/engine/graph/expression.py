"""The safe expression subset of CONVENTIONS 5.1, compiled to the graph form.

``ast.parse`` only builds a syntax tree; nothing is ever evaluated as Python. The tree is walked
with a whitelist of node types, and every other node is refused with its character offset:

- a **name** is an input; a **number** is a constant;
- ``a + b``, ``a - b``, ``a * b``, ``a / b``, ``a ** b`` and unary ``-a`` are the elementwise
  operations with NumPy broadcasting; with one constant side they become the one-input operations
  with that constant as a parameter (``x * 2`` is ``scale``, ``x ** 2`` is ``power(p=2)``,
  ``1 - x`` is ``add(scale(x, -1), constant=1)``); two constants are folded;
- ``a @ b`` is ``matmul``;
- ``f(a, b, key=literal)`` calls a registered operation: positional arguments are values,
  keywords are parameters (numbers, strings, booleans, null and nested lists of them);
- ``a[1:, ::2, 0]`` is ``slice`` (ints and slices of int literals only).

Attribute access, lambdas, comprehensions, strings outside keywords, dunder subscripts and every
other construct are refused. Length, node count and nesting depth are bounded before and after
parsing, so no input can exhaust the parser's stack.
"""

import ast
import math
import re
import sys
from dataclasses import dataclass, field
from keyword import iskeyword
from typing import Any

from ..errors import ParameterError

__all__ = ["MAX_DEPTH", "MAX_LENGTH", "MAX_NODES", "ExpressionError", "compile_expression"]

MAX_LENGTH = 10_000
MAX_NODES = 2_000
MAX_DEPTH = 64

_BINARY = {ast.Add: "add", ast.Sub: "subtract", ast.Mult: "multiply", ast.Div: "divide",
           ast.Pow: "power", ast.MatMult: "matmul"}  # fmt: skip
# An integer literal's digits (underscores allowed): not a name's, a fraction's or an exponent's.
_DIGITS = re.compile(r"(?<![\w.])[0-9][0-9_]*")


class ExpressionError(ParameterError):
    """A refused expression; ``offset`` is the 0-based character position of the culprit.

    ``pointer`` is ``"/function"``, for the problem's JSON pointer.
    """

    def __init__(self, message: str, offset: int) -> None:
        super().__init__(f"expression, character {offset}: {message}")
        self.offset = offset
        self.pointer = "/function"


@dataclass(frozen=True)
class _Const:
    value: float


@dataclass(frozen=True)
class _Value:
    name: str


@dataclass
class _Compiler:
    source: str
    inputs: frozenset[str]
    nodes: list[dict[str, Any]] = field(default_factory=list)
    offsets: dict[str, int] = field(default_factory=dict)
    prefix: str = "_"

    def offset(self, node: ast.AST) -> int:
        # The source is parsed as "(" + source + "\n)": one character before the client's.
        line, column = getattr(node, "lineno", 1), getattr(node, "col_offset", 0)
        lines = self.source.split("\n")
        position = sum(len(text) + 1 for text in lines[: line - 1]) + column - 1
        return max(0, min(position, len(self.source) - 3))  # within the client's text

    def refuse(self, node: ast.AST, message: str) -> ExpressionError:
        return ExpressionError(message, self.offset(node))

    def emit(self, at: ast.AST, op: str, args: list[str], **params: Any) -> _Value:
        name = f"{self.prefix}{len(self.nodes) + 1}"
        self.nodes.append({"id": name, "op": op, "args": args, **params})
        self.offsets[name] = self.offset(at)
        return _Value(name)

    # -- values ---------------------------------------------------------------------------------

    def value(self, node: ast.AST) -> _Const | _Value:
        if isinstance(node, ast.Name):
            if node.id not in self.inputs:
                known = ", ".join(sorted(self.inputs))
                raise self.refuse(node, f"unknown name {node.id!r}; the inputs are {known}")
            return _Value(node.id)
        if isinstance(node, ast.Constant):
            return _Const(self.number(node))
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd):
            operand = self.value(node.operand)
            if isinstance(node.op, ast.UAdd):
                return operand
            if isinstance(operand, _Const):
                return _Const(-operand.value)
            return self.emit(node, "scale", [operand.name], factor=-1.0)
        if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
            return self.binary(node)
        if isinstance(node, ast.Call):
            return self.call(node)
        if isinstance(node, ast.Subscript):
            return self.subscript(node)
        raise self.refuse(node, self.what(node))

    @staticmethod
    def what(node: ast.AST) -> str:
        names = {ast.Attribute: "attribute access", ast.Lambda: "a lambda",
                 ast.ListComp: "a comprehension", ast.SetComp: "a comprehension",
                 ast.DictComp: "a comprehension", ast.GeneratorExp: "a comprehension"}  # fmt: skip
        kind = names.get(type(node), f"{type(node).__name__} syntax")
        return f"{kind} is not allowed in an expression"

    def number(self, node: ast.Constant) -> float:
        value = node.value
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self.refuse(node, f"only numbers may be constants, got {value!r}")
        try:
            number = float(value)
        except OverflowError:
            raise self.refuse(node, "the number is too large") from None
        if not math.isfinite(number):
            raise self.refuse(node, "the number is not finite")
        return number

    def fold(self, node: ast.BinOp, a: float, b: float) -> _Const:
        try:
            if isinstance(node.op, ast.Add):
                result = a + b
            elif isinstance(node.op, ast.Sub):
                result = a - b
            elif isinstance(node.op, ast.Mult):
                result = a * b
            elif isinstance(node.op, ast.Div):
                result = a / b
            elif isinstance(node.op, ast.Pow):
                result = float(a**b)
            else:
                raise self.refuse(node, "@ needs two tensors")
        except (ZeroDivisionError, OverflowError, TypeError):
            raise self.refuse(node, "the constant arithmetic has no finite real value") from None
        if not math.isfinite(result):
            raise self.refuse(node, "the constant arithmetic has no finite real value")
        return _Const(result)

    def binary(self, node: ast.BinOp) -> _Const | _Value:
        a, b = self.value(node.left), self.value(node.right)
        op = _BINARY[type(node.op)]
        if isinstance(a, _Const) and isinstance(b, _Const):
            return self.fold(node, a.value, b.value)
        if isinstance(a, _Value) and isinstance(b, _Value):
            return self.emit(node, op, [a.name, b.name])
        if op == "matmul":
            raise self.refuse(node, "@ needs two tensors, not a number")
        if isinstance(a, _Value) and isinstance(b, _Const):
            return self.with_constant_right(node, op, a, b.value)
        assert isinstance(a, _Const) and isinstance(b, _Value)
        return self.with_constant_left(node, op, a.value, b)

    def with_constant_right(self, node: ast.BinOp, op: str, a: _Value, c: float) -> _Value:
        if op == "add":
            return self.emit(node, "add", [a.name], constant=c)
        if op == "subtract":
            return self.emit(node, "add", [a.name], constant=-c)
        if op == "multiply":
            return self.emit(node, "scale", [a.name], factor=c)
        if op == "divide":
            if c == 0:
                raise self.refuse(node, "division by the constant 0")
            return self.emit(node, "scale", [a.name], factor=1.0 / c)
        return self.emit(node, "power", [a.name], p=c)

    def with_constant_left(self, node: ast.BinOp, op: str, c: float, b: _Value) -> _Value:
        if op == "add":
            return self.emit(node, "add", [b.name], constant=c)
        if op == "subtract":
            negated = self.emit(node, "scale", [b.name], factor=-1.0)
            return self.emit(node, "add", [negated.name], constant=c)
        if op == "multiply":
            return self.emit(node, "scale", [b.name], factor=c)
        if op == "divide":
            inverse = self.emit(node, "power", [b.name], p=-1.0)
            return self.emit(node, "scale", [inverse.name], factor=c)
        if c <= 0:
            raise self.refuse(node, "a constant base of ** must be > 0")
        scaled = self.emit(node, "scale", [b.name], factor=math.log(c))
        return self.emit(node, "exp", [scaled.name])

    def call(self, node: ast.Call) -> _Value:
        if not isinstance(node.func, ast.Name):
            raise self.refuse(node.func, "only registered operations may be called, by name")
        args = []
        for arg in node.args:
            compiled = self.value(arg)
            if isinstance(compiled, _Const):
                raise self.refuse(arg, "a positional argument must be a tensor expression; give "
                                  "constants as keyword parameters")  # fmt: skip
            args.append(compiled.name)
        if not args:
            raise self.refuse(node, f"{node.func.id}() needs at least one tensor argument")
        params: dict[str, Any] = {}
        for keyword in node.keywords:
            if keyword.arg is None:
                raise self.refuse(keyword, "**parameters are not allowed")
            if keyword.arg in ("id", "op", "args"):
                raise self.refuse(keyword, f"{keyword.arg!r} is not a parameter")
            params[keyword.arg] = self.literal(keyword.value)
        return self.emit(node, node.func.id, args, **params)

    def literal(self, node: ast.AST) -> Any:
        if isinstance(node, ast.Constant):
            if node.value is None or isinstance(node.value, bool | str):
                return node.value
            number = self.number(node)
            return node.value if isinstance(node.value, int) else number
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
            inner = self.literal(node.operand)
            if isinstance(inner, bool) or not isinstance(inner, int | float):
                raise self.refuse(node, "only a number can be negated")
            return -inner
        if isinstance(node, ast.List | ast.Tuple):
            return [self.literal(item) for item in node.elts]
        raise self.refuse(node, "a parameter must be a literal: a number, string, true/false, "
                          "None or a list of them")  # fmt: skip

    def subscript(self, node: ast.Subscript) -> _Value:
        target = self.value(node.value)
        if isinstance(target, _Const):
            raise self.refuse(node, "only a tensor can be sliced")
        items = node.slice.elts if isinstance(node.slice, ast.Tuple) else [node.slice]
        index: list[Any] = []
        for item in items:
            if isinstance(item, ast.Slice):
                index.append([self.index(part) for part in (item.lower, item.upper, item.step)])
            else:
                bound = self.index(item)
                if bound is None:
                    raise self.refuse(item, "an index must be an int or a slice")
                index.append(bound)
        return self.emit(node, "slice", [target.name], index=index)

    def index(self, node: ast.AST | None) -> int | None:
        if node is None:
            return None
        value = self.literal(node) if isinstance(node, ast.Constant | ast.UnaryOp) else None
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.refuse(node, "slicing takes int literals only (no names, strings or "
                              "floats)")  # fmt: skip
        return value


def _prefilter(source: str) -> None:
    if len(source) > MAX_LENGTH:
        raise ExpressionError(f"the expression has {len(source)} characters, more than "
                              f"{MAX_LENGTH}", MAX_LENGTH)  # fmt: skip
    depth = 0
    for position, char in enumerate(source):
        if char in "([{":
            depth += 1
            if depth > MAX_DEPTH:
                raise ExpressionError(f"brackets nest deeper than {MAX_DEPTH}", position)
        elif char in ")]}":
            depth -= 1
        elif char == "\x00":
            raise ExpressionError("a NUL character", position)


def _check_size(tree: ast.AST, source: str) -> None:
    count = 0
    stack: list[tuple[ast.AST, int]] = [(tree, 0)]
    while stack:
        node, depth = stack.pop()
        count += 1
        if count > MAX_NODES or depth > MAX_DEPTH:
            limit = f"more than {MAX_NODES} syntax nodes" if count > MAX_NODES else (
                f"operators nest deeper than {MAX_DEPTH}")  # fmt: skip
            offset = _Compiler(source, frozenset()).offset(node)
            raise ExpressionError(f"the expression has {limit}", offset)
        stack.extend((child, depth + 1) for child in ast.iter_child_nodes(node))


def compile_expression(
    source: str, inputs: frozenset[str]
) -> tuple[dict[str, Any], dict[str, int]]:
    """Compile an expression into the graph form.

    Parameters
    ----------
    source : str
    inputs : frozenset of str
        The names the expression may use.

    Returns
    -------
    graph : dict
        ``{"nodes": [...], "output": name}``, the graph form of CONVENTIONS 5.1.
    offsets : dict of str to int
        The character offset of the syntax each node comes from.

    Raises
    ------
    ExpressionError
        For every refusal, with the character offset.
    """
    if not isinstance(source, str) or not source.strip():
        raise ExpressionError("the expression is empty", 0)
    _prefilter(source)
    # Parenthesized (the newline ends a trailing comment), so that leading whitespace and line
    # breaks are allowed; offsets are shifted back by one.
    wrapped = f"({source}\n)"
    try:
        tree = ast.parse(wrapped, mode="eval")
    except SyntaxError as error:
        compiler = _Compiler(wrapped, inputs)
        at = ast.Constant(0, lineno=error.lineno or 1, col_offset=max(0, (error.offset or 1) - 1))
        # Python's own message often is just "invalid syntax"; say it once.
        reason = (
            error.msg if error.msg.startswith("invalid syntax") else f"invalid syntax: {error.msg}"
        )
        offset = compiler.offset(at)
        if "integer string conversion" in error.msg:
            # Python's advice (sys.set_int_max_str_digits) is for the server, not the client.
            limit = sys.get_int_max_str_digits()
            reason = f"a number literal has more than {limit} digits; write it with an exponent"
            # Python gives this error no position (offset 0): the first literal that long.
            offset = next(
                (m.start() for m in _DIGITS.finditer(source) if len(m[0].replace("_", "")) > limit),
                offset,
            )
        # An input may have any identifier as its name, and a keyword cannot appear in Python.
        keywords = sorted(name for name in inputs if iskeyword(name))
        if keywords:
            named = ", ".join(map(repr, keywords))
            reason += (f" (the inputs {named} are Python keywords, which an expression cannot "
                       "name: rename them, or use the graph form)")  # fmt: skip
        raise ExpressionError(reason, offset) from None
    except (RecursionError, MemoryError, ValueError, OverflowError):
        raise ExpressionError("the expression cannot be parsed (too complex)", 0) from None
    _check_size(tree, wrapped)
    prefix = "_"
    while any(name.startswith(prefix) for name in inputs):
        prefix += "_"
    compiler = _Compiler(wrapped, inputs, prefix=prefix)
    result = compiler.value(tree.body)
    if isinstance(result, _Const):
        raise ExpressionError("the expression does not use any input", 0)
    return {"nodes": compiler.nodes, "output": result.name}, compiler.offsets
