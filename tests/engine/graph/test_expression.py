"""The expression parser: the issue's examples compile, and nothing else gets through.

Fuzzing: random strings and random syntax trees (including every forbidden construct) only ever
compile or raise ExpressionError; a planted ``__import__`` call proves nothing is evaluated.
"""

import ast
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from service.engine.graph.expression import (
    MAX_DEPTH,
    MAX_LENGTH,
    ExpressionError,
    compile_expression,
)

INPUTS = frozenset({"x", "k", "y", "w", "b"})
EXAMPLES = [
    "sum(square(xcorr2d(x, k) - y))",
    "x * sin(x)",
    "mean(log_softmax(w @ x + b, axis=0))",
    "tanh(x) + x",
    "sum(100 * (x[1:] - x[:-1] ** 2) ** 2 + (1 - x[:-1]) ** 2)",
]


@pytest.mark.parametrize("source", EXAMPLES)
def test_the_examples_compile(source: str) -> None:
    graph, offsets = compile_expression(source, INPUTS)
    assert graph["nodes"] and set(offsets) == {n["id"] for n in graph["nodes"]}


def test_the_rosenbrock_slices_map_to_slice_nodes() -> None:
    graph, _ = compile_expression(EXAMPLES[4], INPUTS)
    slices = [n["index"] for n in graph["nodes"] if n["op"] == "slice"]
    assert [[1, None, None]] in slices and [[None, -1, None]] in slices


@pytest.mark.parametrize(
    ("source", "offset", "words"),
    [
        ("x.__class__", 0, "attribute access"),
        ("x['__class__']", 2, "int literals"),
        ("(lambda: x)()", 1, "only registered operations"),
        ("sum([x for x in y])", 4, "comprehension"),
        ("x + zz", 4, "unknown name 'zz'"),
        ("x +", 3, "invalid syntax"),
        ("sin(x, 2)", 7, "positional argument"),
        ("sin(x, **k)", 7, "**parameters"),
        ("1 + 2", 0, "does not use any input"),
        ("x / 0", 0, "division by the constant 0"),
        ("x if y else k", 0, "IfExp"),
        ("'a'", 0, "only numbers"),
        # Python gives this one no position: the long literal is found in the text.
        ("x * 1" + "0" * 5000, 4, "more than 4300 digits"),
        ("x1 + x * 1_" + "0" * 5000, 9, "more than 4300 digits"),
    ],
)
def test_refusals_carry_the_offset(source: str, offset: int, words: str) -> None:
    with pytest.raises(ExpressionError) as error:
        compile_expression(source, INPUTS)
    assert error.value.offset == offset, str(error.value)
    assert words in str(error.value)


def test_a_syntax_error_says_so_once() -> None:
    with pytest.raises(ExpressionError) as error:
        compile_expression("x +", INPUTS)
    assert str(error.value).count("invalid syntax") == 1, str(error.value)


def test_an_input_named_by_a_python_keyword_is_pointed_out() -> None:
    # "lambda" is a valid input name (the graph form can use it), but no expression can.
    with pytest.raises(ExpressionError) as error:
        compile_expression("sin(lambda)", frozenset({"lambda"}))
    assert "Python keyword" in str(error.value) and "'lambda'" in str(error.value)


def test_a_number_literal_past_pythons_digit_limit_is_worded_for_the_client() -> None:
    with pytest.raises(ExpressionError) as error:
        compile_expression("x * 1" + "0" * 5000, INPUTS)
    message = str(error.value)
    assert "more than 4300 digits" in message and "sys." not in message


def test_bounds_are_checked_before_parsing() -> None:
    with pytest.raises(ExpressionError, match="characters"):
        compile_expression("x+" * MAX_LENGTH + "x", INPUTS)
    with pytest.raises(ExpressionError, match="nest deeper"):
        compile_expression("(" * (MAX_DEPTH + 1) + "x" + ")" * (MAX_DEPTH + 1), INPUTS)
    with pytest.raises(ExpressionError, match="nest deeper"):
        compile_expression("-" * 500 + "x", INPUTS)


def test_nothing_is_evaluated(tmp_path: Path) -> None:
    marker = tmp_path / "evaluated"
    for source in (f"__import__('os').system('touch {marker}')", f"open('{marker}', 'w')",
                   "exec('x')", "eval('x')"):  # fmt: skip
        with pytest.raises(ExpressionError):
            compile_expression(source, INPUTS)
    assert not marker.exists()


@given(st.text(max_size=60))
@settings(max_examples=300)
def test_random_strings_compile_or_are_refused(source: str) -> None:
    try:
        compile_expression(source, INPUTS)
    except ExpressionError as error:
        assert 0 <= error.offset <= max(len(source), MAX_LENGTH)


_LEAVES = st.sampled_from(["x", "k", "1", "2.5", "'s'", "None", "True", "x.T", "__x__"])


def _extend(children: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    two = st.tuples(children, children)
    return st.one_of(
        two.map(lambda p: f"({p[0]} + {p[1]})"),
        two.map(lambda p: f"({p[0]} @ {p[1]})"),
        two.map(lambda p: f"({p[0]} ** {p[1]})"),
        children.map(lambda c: f"-{c}"),
        children.map(lambda c: f"sin({c})"),
        two.map(lambda p: f"sum({p[0]}, axes={p[1]})"),
        children.map(lambda c: f"{c}[1:, ::2]"),
        children.map(lambda c: f"{c}['__dict__']"),
        children.map(lambda c: f"(lambda: {c})"),
        children.map(lambda c: f"[{c} for x in k]"),
        children.map(lambda c: f"({c}).real"),
        two.map(lambda p: f"({p[0]} if {p[1]} else x)"),
        two.map(lambda p: f"{{{p[0]}: {p[1]}}}"),
        children.map(lambda c: f"f({c})"),
    )


@given(st.recursive(_LEAVES, _extend, max_leaves=12))
@settings(max_examples=300)
def test_random_syntax_trees_compile_or_are_refused(source: str) -> None:
    ast.parse(source, mode="eval")  # the generator writes valid Python
    try:
        graph, _ = compile_expression(source, INPUTS)
    except ExpressionError:
        return
    # A string is a legal parameter value (einsum subscripts, padding names), so the generator's
    # one keyword value may hold it; a quote anywhere else must have been refused.
    elsewhere = source.replace("axes='s'", "axes=0")
    forbidden = ("lambda", " for ", ".real", ".T", "__", " if ", "{", "'")
    assert not any(word in elsewhere for word in forbidden), source
    assert graph["nodes"] or graph["output"] in INPUTS


@pytest.mark.parametrize("source", ["sum(x, axes='s')", "f(sum(x, axes='s'))[1:, ::2]"])
def test_a_string_keyword_value_compiles_and_is_judged_by_the_graph(source: str) -> None:
    # Found by the random-tree test: strings are parameter values, checked when the graph is built.
    graph, _ = compile_expression(source, INPUTS)
    assert {"id": "_1", "op": "sum", "args": ["x"], "axes": "s"} in graph["nodes"]


@pytest.mark.parametrize("source", ["sin('s')", "x + 's'"])
def test_a_string_outside_a_keyword_value_is_refused(source: str) -> None:
    with pytest.raises(ExpressionError, match="only numbers may be constants"):
        compile_expression(source, INPUTS)
