"""Programs on random DAGs: every strategy agrees with central differences and with the others,
the expression and graph forms give identical bits, the sum-over-paths rule holds at every split,
and a path graph is today's chain."""

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from service.api.programs import build_program
from service.api.schemas.programs import GraphSpec
from service.engine.chain import Chain
from service.engine.functions import FunctionLimits
from service.engine.graph import requests, strategies
from service.engine.graph.descent import ProgramObjective
from service.engine.graph.expression import compile_expression
from service.engine.graph.nary import Unary
from service.engine.graph.ops.broadcast import Multiply
from service.engine.graph.program import GraphError, Node, Program
from service.engine.graph.requests import PackedProgram
from tests.engine.graph.dags import DagCase, dags
from tests.oracles import central_difference_jacobian
from tests.strategies import ChainCase, op_chains

LIMITS = FunctionLimits(max_tensor_elements=10**6, max_dense_elements=10**6, max_nnz=10**6)


def _program(case: DagCase) -> Program:
    shapes = {n: v.shape for n, v in case.inputs.items()}
    return build_program(case.expression, shapes, "F")


def _dense(program: Program, inputs: dict[str, np.ndarray], strategy: str, order: str = "F"):
    found = requests.jacobian(program, inputs, None, fmt="dense", strategy=strategy,
                              layout="in_out", order=order, limits=LIMITS)  # fmt: skip
    return {n: np.asarray(j.matrix) for n, j in found.jacobians.items()}


@given(dags(), st.sampled_from(["F", "C"]))
@settings(max_examples=40)
def test_strategies_agree_with_differences_and_each_other(case: DagCase, order: str) -> None:
    program = _program(case)
    by = {s: _dense(program, case.inputs, s, order) for s in ("chain", "forward", "reverse")}
    for name, x in case.inputs.items():

        def f(value: np.ndarray, name: str = name) -> np.ndarray:
            return program.trace({**case.inputs, name: value})[program.output]

        oracle = central_difference_jacobian(f, x, order)
        for strategy, found in by.items():
            np.testing.assert_allclose(found[name], oracle, rtol=1e-6, atol=1e-6,
                                       err_msg=f"{strategy} d/d{name}")  # fmt: skip
            np.testing.assert_allclose(found[name], by["chain"][name], rtol=1e-12, atol=1e-12)


@given(dags())
@settings(max_examples=25)
def test_expression_and_graph_forms_give_identical_bits(case: DagCase) -> None:
    shapes = {n: v.shape for n, v in case.inputs.items()}
    graph, _ = compile_expression(case.expression, frozenset(shapes))
    from_expression = build_program(case.expression, shapes, "C")
    from_graph = build_program(GraphSpec.model_validate(graph), shapes, "C")
    for strategy in ("chain", "reverse"):
        a = _dense(from_expression, case.inputs, strategy, "C")
        b = _dense(from_graph, case.inputs, strategy, "C")
        assert a.keys() == b.keys()
        for name in a:
            assert a[name].tobytes() == b[name].tobytes()


@given(dags(), st.data())
@settings(max_examples=30)
def test_sum_over_paths_holds_at_every_split(case: DagCase, data: st.DataObject) -> None:
    """Cut at node v: J_w(h) = J_w(h | v fixed) + J_w(v) J_v(h) (in_out), CONVENTIONS 5.1."""
    program = _program(case)
    assume(program.nodes)  # a DAG with no operation has no split
    cut = data.draw(st.sampled_from(program.nodes)).id
    values = program.trace(case.inputs)
    # h with v as a new input: every use of v reads the input "v_cut" instead.
    nodes = [n for n in program.nodes if n.id != cut]
    renamed = [type(n)(n.id, n.op, tuple("v_cut" if a == cut else a for a in n.args))
               for n in nodes]  # fmt: skip
    output = "v_cut" if program.output == cut else program.output
    outer = Program({**program.inputs, "v_cut": program.shapes[cut]}, renamed, output)
    upto = Program(program.inputs, [n for n in program.nodes if n.id in _ancestors(program, cut)],
                   cut)  # fmt: skip
    whole = _dense(program, case.inputs, "chain")
    inner = _dense(upto, case.inputs, "forward")
    rest = _dense(outer, {**case.inputs, "v_cut": values[cut]}, "reverse")
    for name in case.inputs:
        expected = rest[name] + inner[name] @ rest["v_cut"]
        np.testing.assert_allclose(whole[name], expected, rtol=1e-10, atol=1e-12)


def _ancestors(program: Program, name: str) -> set[str]:
    found, stack = set(), [name]
    by_id = {n.id: n for n in program.nodes}
    while stack:
        current = stack.pop()
        if current in by_id and current not in found:
            found.add(current)
            stack.extend(by_id[current].args)
    return found


@given(op_chains(max_ops=4), st.sampled_from(["F", "C"]))
@settings(max_examples=25)
def test_a_path_graph_is_the_chain(case: ChainCase, order: str) -> None:
    chain = Chain(case.ops, case.in_shape)
    nodes = [Node(f"n{k}", Unary(op), ("x" if k == 0 else f"n{k - 1}",))
             for k, op in enumerate(case.ops)]  # fmt: skip
    program = Program({"x": case.in_shape}, nodes, f"n{len(nodes) - 1}")
    assert requests.as_chain(program) is not None
    found = _dense(program, {"x": case.x}, "chain", order)["x"]
    direct = np.asarray(
        chain.jacobian(
            case.x,
            order=order,
            strategy="chain",
            fmt="dense",
            max_dense_elements=10**6,
            max_nnz=10**6,
        ).matrix
    )
    assert found.tobytes() == direct.tobytes()
    # The general graph code, not the delegation, agrees too (the sum over one path).
    values = program.trace({"x": case.x})
    plan = strategies.plan(program, ["x"], strategy="chain", fmt="dense",
                           max_dense_elements=10**6, max_nnz=10**6)  # fmt: skip
    general = strategies.jacobians(program, values, ["x"], plan, order=order, fmt="dense",
                                   layout="in_out")["x"].matrix  # fmt: skip
    np.testing.assert_allclose(general, direct, rtol=1e-12, atol=1e-12)


def test_structural_errors_point_at_the_culprit() -> None:
    def build(graph: dict) -> None:
        build_program(GraphSpec.model_validate(graph), {"x": (2,)}, "F")

    with pytest.raises(GraphError) as error:
        build({"nodes": [{"id": "a", "op": "sin", "args": ["b"]},
                         {"id": "b", "op": "cos", "args": ["a"]}], "output": "b"})  # fmt: skip
    assert "cycle" in str(error.value) and error.value.pointer == "/function/nodes/0"
    with pytest.raises(GraphError) as error:
        build({"nodes": [{"id": "a", "op": "add", "args": ["x", "z"]}], "output": "a"})
    assert error.value.pointer == "/function/nodes/0/args/1"
    with pytest.raises(GraphError) as error:
        build({"nodes": [{"id": "x", "op": "sin", "args": ["x"]}], "output": "x"})
    assert error.value.pointer == "/function/nodes/0/id"


@given(dags(), st.data())
@settings(max_examples=25)
def test_the_descent_objective_gradient_matches_differences(
    case: DagCase, data: st.DataObject
) -> None:
    """The prepared objective's joint gradient over a drawn subset of variables."""
    program = _program(case)
    names = list(case.inputs)
    variables = data.draw(st.lists(st.sampled_from(names), min_size=1, unique=True))
    assume(int(np.prod(program.out_shape)) == 1)  # descent needs a scalar
    objective = ProgramObjective(program, case.inputs, variables)
    x = objective.packing.pack(case.inputs)
    grad = objective.gradient(objective.evaluate(x))

    def f(v: np.ndarray) -> np.ndarray:
        return np.asarray(objective.evaluate(v).f)

    expected = central_difference_jacobian(f, x, "C")[:, 0]
    np.testing.assert_allclose(grad, expected, rtol=1e-6, atol=1e-6)
    # The same values through the graph's own VJP (no preparation, no folding).
    pulled = program.vjp(program.trace(case.inputs), np.ones((1, *program.out_shape)), variables)
    direct = objective.packing.pack({n: g[0] for n, g in pulled.items()})
    np.testing.assert_allclose(grad, direct, rtol=1e-12, atol=1e-12)


def test_packed_program_derivatives_are_central_differences() -> None:
    """The function fd_check compares for a program: its rules against independent quotients."""
    rng = np.random.default_rng(91)
    x, k = rng.standard_normal((2, 5, 4)), rng.standard_normal((2, 2, 2))
    y = rng.standard_normal((4, 3))
    shapes = {"x": x.shape, "k": k.shape, "y": y.shape}
    program = build_program("xcorr2d(x, k) * y + k[0, 0, 0]", shapes, "F")
    packed = PackedProgram(program, {"x": x, "k": k, "y": y}, ["k", "x"])
    v = packed.pack({"x": x, "k": k})
    assert v.shape == (8 + 40,)
    # the packed vector: k then x, each flattened in order F (the notes' vec)
    np.testing.assert_array_equal(v[:8], np.reshape(k, -1, order="F"))
    expected = central_difference_jacobian(packed.forward, v, "F")  # (48, 12)
    n, m = expected.shape
    np.testing.assert_allclose(packed.chain_jacobian(v, n * m), expected, rtol=1e-6, atol=1e-6)
    basis = np.eye(n)
    jvp = np.reshape(packed.jvp(v, basis), (n, m), order="F")
    np.testing.assert_allclose(jvp, expected, rtol=1e-6, atol=1e-6)
    cotangents = np.reshape(np.eye(m), (m, *packed.out_shape), order="F")
    np.testing.assert_allclose(packed.vjp(v, cotangents).T, expected, rtol=1e-6, atol=1e-6)


def test_program_check_reports_a_wrong_rule() -> None:
    rng = np.random.default_rng(92)
    inputs = {"a": rng.standard_normal(4), "b": rng.standard_normal(4)}
    program = build_program("a * b", {"a": (4,), "b": (4,)}, "F")
    right = requests.jacobian(program, inputs, None, fmt="dense", strategy="reverse",
                              layout="in_out", order="F", limits=LIMITS, check=True)  # fmt: skip
    assert right.check is not None and right.check.passed and right.check.directions == 8
    with pytest.MonkeyPatch.context() as patch:
        # a planted bug: the VJP in b forgets its factor a
        patch.setattr(Multiply, "_vjp", lambda self, values, i, u: u if i == 1 else u * values[1])
        wrong = requests.jacobian(program, inputs, None, fmt="dense", strategy="reverse",
                                  layout="in_out", order="F", limits=LIMITS,
                                  check=True)  # fmt: skip
    assert wrong.check is not None and not wrong.check.passed
