"""Programs over HTTP (CONVENTIONS 5.1): named inputs, expression/graph/op-list forms, wrt,
per-input Jacobians, JVP (sum over inputs) and VJP (one per input), pointers of refusals, GET
/v1/ops arity, and gradient descent over some inputs. Oracles: NumPy written out by hand and
central differences."""

from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from service.config import Settings
from service.engine.graph.nary import nary_classes
from service.main import create_app
from tests.oracles import central_difference_jacobian

RNG = np.random.default_rng(2026)


@pytest.fixture(scope="module")
def client() -> TestClient:
    return TestClient(create_app(Settings()))


def t(a: Any) -> dict[str, Any]:
    return {"data": np.asarray(a, dtype=float).tolist()}


def ok(client: TestClient, path: str, body: dict[str, Any]) -> dict[str, Any]:
    response = client.post(path, json=body)
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


def refused(client: TestClient, path: str, body: dict[str, Any]) -> dict[str, Any]:
    response = client.post(path, json=body)
    assert response.status_code == 422, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    result: dict[str, Any] = response.json()
    return result


def _xcorr(x: np.ndarray, k: np.ndarray) -> np.ndarray:
    # The notes' (x * k)[i, j] = sum_{c,h,w} x[c, i+h, j+w] k[c, h, w], written as loops.
    c, kh, kw = k.shape
    out = np.zeros((x.shape[1] - kh + 1, x.shape[2] - kw + 1))
    for i in range(out.shape[0]):
        for j in range(out.shape[1]):
            out[i, j] = np.sum(x[:, i : i + kh, j : j + kw] * k)
    return out


X = RNG.standard_normal((2, 5, 6))
K = RNG.standard_normal((2, 2, 3))
Y = RNG.standard_normal((4, 4))
W = RNG.standard_normal((3, 4))
V = RNG.standard_normal((4, 2))
B = RNG.standard_normal((3, 1))
R = RNG.uniform(-1, 1, 5)
EXAMPLES: list[tuple[str, dict[str, np.ndarray], Any]] = [
    ("sum(square(xcorr2d(x, k) - y))", {"x": X, "k": K, "y": Y},
     lambda x, k, y: np.sum((_xcorr(x, k) - y) ** 2)),
    ("x * sin(x)", {"x": R}, lambda x: x * np.sin(x)),
    ("mean(log_softmax(w @ x + b, axis=0))", {"w": W, "x": V, "b": B},
     lambda w, x, b: np.mean((w @ x + b) - np.log(np.sum(np.exp(w @ x + b), axis=0)))),
    ("tanh(x) + x", {"x": R}, lambda x: np.tanh(x) + x),
    ("sum(100 * (x[1:] - x[:-1] ** 2) ** 2 + (1 - x[:-1]) ** 2)", {"x": R},
     lambda x: np.sum(100 * (x[1:] - x[:-1] ** 2) ** 2 + (1 - x[:-1]) ** 2)),
]  # fmt: skip


@pytest.mark.parametrize(("source", "inputs", "oracle"), EXAMPLES, ids=[e[0] for e in EXAMPLES])
def test_the_examples_evaluate_and_differentiate(
    client: TestClient, source: str, inputs: dict[str, np.ndarray], oracle: Any
) -> None:
    body = {"inputs": {n: t(v) for n, v in inputs.items()}, "function": source}
    value = ok(client, "/v1/evaluate", body)["value"]["data"]
    np.testing.assert_allclose(value, oracle(**inputs), rtol=1e-12, atol=1e-12)
    found = ok(client, "/v1/jacobian", {**body, "format": "dense"})
    assert set(found["jacobians"]) == set(inputs)
    for name, x in inputs.items():
        jacobian = found["jacobians"][name]
        assert jacobian["in_shape"] == list(x.shape) and jacobian["layout"] == "in_out"

        def f(v: np.ndarray, name: str = name) -> np.ndarray:
            return np.asarray(oracle(**{**inputs, name: v}))

        expected = central_difference_jacobian(f, x, "F")
        np.testing.assert_allclose(jacobian["data"]["data"], expected, rtol=1e-6, atol=1e-5)


def test_wrt_selects_the_inputs_and_graph_equals_expression(client: TestClient) -> None:
    inputs = {"x": t(X), "k": t(K), "y": t(Y)}
    graph = {
        "nodes": [
            {"id": "z", "op": "xcorr2d", "args": ["x", "k"]},
            {"id": "r", "op": "subtract", "args": ["z", "y"]},
            {"id": "s", "op": "square", "args": ["r"]},
            {"id": "f", "op": "sum", "args": ["s"]},
        ],
        "output": "f",
    }
    base = {"inputs": inputs, "wrt": ["k"], "format": "coo"}
    by_graph = ok(client, "/v1/jacobian", {**base, "function": graph})
    by_text = ok(client, "/v1/jacobian", {**base, "function": "sum(square(xcorr2d(x, k) - y))"})
    assert list(by_graph["jacobians"]) == ["k"]
    assert by_graph == by_text
    # d/dk sum((x*k - y)^2) = 2 sum_ij (x*k - y)_ij x[:, i:i+2, j:j+3] (a gradient: 12 x 1)
    residual = _xcorr(X, K) - Y
    grad = sum(2 * residual[i, j] * X[:, i : i + 2, j : j + 3]
               for i in range(4) for j in range(4))  # fmt: skip
    coo = by_graph["jacobians"]["k"]
    dense = np.zeros(coo["shape"])
    dense[coo["row"], coo["col"]] = coo["data"]
    np.testing.assert_allclose(dense[:, 0], np.ravel(grad, order="F"), rtol=1e-12)


def test_jvp_sums_over_inputs_and_vjp_is_per_input(client: TestClient) -> None:
    a, b = RNG.standard_normal((2, 3)), RNG.standard_normal(3)
    da, db = RNG.standard_normal((2, 3)), RNG.standard_normal(3)
    u = RNG.standard_normal((2, 3))
    base = {"inputs": {"a": t(a), "b": t(b)}, "function": "a * b + sin(a)"}
    jvp = ok(client, "/v1/jvp", {**base, "tangents": {"a": t(da), "b": t(db)}})
    np.testing.assert_allclose(jvp["jvp"]["data"], (b + np.cos(a)) * da + a * db, rtol=1e-12)
    only_a = ok(client, "/v1/jvp", {**base, "tangents": {"a": t(da)}})
    np.testing.assert_allclose(only_a["jvp"]["data"], (b + np.cos(a)) * da, rtol=1e-12)
    vjp = ok(client, "/v1/vjp", {**base, "cotangent": t(u), "wrt": ["b", "a"]})
    assert list(vjp["cotangents"]) == ["b", "a"]
    np.testing.assert_allclose(vjp["cotangents"]["a"]["data"], u * (b + np.cos(a)), rtol=1e-12)
    # b was broadcast over the rows: its cotangent sums over them
    np.testing.assert_allclose(vjp["cotangents"]["b"]["data"], np.sum(u * a, axis=0), rtol=1e-12)


def test_the_op_list_form_with_inputs_is_the_op_list(client: TestClient) -> None:
    function = [{"op": "sin"}, {"op": "sum", "axes": [0]}]
    old = ok(client, "/v1/jacobian", {"x": t(X[0]), "function": function})
    new = ok(client, "/v1/jacobian", {"inputs": {"x": t(X[0])}, "function": function})
    assert new["jacobians"]["x"] == old["jacobian"] and new["value"] == old["value"]


@pytest.mark.parametrize(
    ("body", "pointer", "kind"),
    [
        ({"function": "x.__class__"}, "/function", "invalid-parameter"),
        ({"function": "x['__class__']"}, "/function", "invalid-parameter"),
        ({"function": "(lambda: x)()"}, "/function", "invalid-parameter"),
        ({"function": "sum([x for x in x])"}, "/function", "invalid-parameter"),
        ({"function": "x + q"}, "/function", "invalid-parameter"),
        ({"function": "nope(x)"}, "/function", "unknown-operation"),
        ({"function": "x @ x"}, "/function", "shape-mismatch"),
        ({"function": "sin(x)", "wrt": ["q"]}, "/wrt/0", "invalid-parameter"),
        (
            {"function": {"nodes": [{"id": "a", "op": "add", "args": ["x", "z"]}], "output": "a"}},
            "/function/nodes/0/args/1",
            "invalid-parameter",
        ),
        (
            {
                "function": {
                    "nodes": [
                        {"id": "a", "op": "sin", "args": ["b"]},
                        {"id": "b", "op": "sin", "args": ["a"]},
                    ],
                    "output": "a",
                }
            },
            "/function/nodes/0",
            "invalid-parameter",
        ),
        (
            {
                "function": {
                    "nodes": [{"id": "a", "op": "sum", "args": ["x"], "axes": [7]}],
                    "output": "a",
                }
            },
            "/function/nodes/0",
            "shape-mismatch",
        ),
        (
            {
                "function": {
                    "nodes": [{"id": "a", "op": "xcorr2d", "args": ["x"], "kernel": "no"}],
                    "output": "a",
                }
            },
            "/function/nodes/0/kernel",
            "invalid-parameter",
        ),
    ],  # fmt: skip
)
def test_refusals_are_problems_with_pointers(
    client: TestClient, body: dict[str, Any], pointer: str, kind: str
) -> None:
    problem = refused(client, "/v1/jacobian", {"inputs": {"x": t(X[0])}, **body})
    assert problem["type"] == f"/problems/{kind}"
    assert [e["pointer"] for e in problem["errors"]] == [pointer]


# A program whose graph is a path runs as an op list on some routes and on the graph on others; a
# runtime error must name the program's own place either way (the op list's position is not in it).
_SQRT_GRAPH = {
    "nodes": [{"id": "r", "op": "sqrt", "args": ["x"]}, {"id": "s", "op": "sum", "args": ["r"]}],
    "output": "s",
}
# Not a path (x is read twice): the graph runs as a program on every route, descent included.
_SQRT_DAG = {
    "nodes": [
        {"id": "r", "op": "sqrt", "args": ["x"]},
        {"id": "m", "op": "multiply", "args": ["r", "x"]},
        {"id": "s", "op": "sum", "args": ["m"]},
    ],
    "output": "s",
}
_ROUTE_FIELDS: dict[str, dict[str, Any]] = {
    "/v1/evaluate": {},
    "/v1/jacobian": {},
    "/v1/jvp": {"tangents": {"x": t([1.0, 1.0])}},
    "/v1/vjp": {"cotangent": t(1.0)},
    "/v1/hvp": {"vectors": {"x": t([1.0, 1.0])}},
    "/v1/hessian": {},
    "/v1/gradient-descent": {"learning_rate": 0.1, "max_steps": 3},
    "/v1/minimize": {"method": "lbfgs", "max_steps": 3},
}


@pytest.mark.parametrize("path", list(_ROUTE_FIELDS))
@pytest.mark.parametrize(
    ("function", "label", "pointer"),
    [
        ("sum(sqrt(x))", "expression character 4 (sqrt)", "/function"),
        (_SQRT_GRAPH, "node 'r' (sqrt)", "/function/nodes/0"),
        ([{"op": "sqrt"}, {"op": "sum"}], "operation 0 (sqrt)", "/function/0"),
        ("sum(sqrt(x) * x)", "expression character 4 (sqrt)", "/function"),
        (_SQRT_DAG, "node 'r' (sqrt)", "/function/nodes/0"),
    ],
    ids=["expression", "graph", "op-list", "expression, not a path", "graph, not a path"],
)
def test_a_runtime_error_names_the_programs_place_on_every_route(
    client: TestClient, path: str, function: Any, label: str, pointer: str
) -> None:
    body = {"inputs": {"x": t([-1.0, 4.0])}, "function": function, **_ROUTE_FIELDS[path]}
    problem = refused(client, path, body)
    assert problem["type"] == "/problems/domain-error"
    assert problem["detail"].startswith(f"{label}: sqrt needs x ")
    assert [e["pointer"] for e in problem["errors"]] == [pointer]


@pytest.mark.parametrize(
    ("function", "label"),
    [
        ("sum(log(x))", "expression character 4 (log)"),
        (
            {
                "nodes": [
                    {"id": "r", "op": "log", "args": ["x"]},
                    {"id": "s", "op": "sum", "args": ["r"]},
                ],
                "output": "s",
            },
            "node 'r' (log)",
        ),
        ([{"op": "log"}, {"op": "sum"}], "operation 0 (log)"),
    ],
    ids=["expression", "graph", "op-list"],
)
def test_a_run_that_leaves_the_domain_names_the_programs_place_in_its_reason(
    client: TestClient, function: Any, label: str
) -> None:
    # A 200 whose reason changed in session 6 for path programs ("operation 0 (log)" before);
    # the op list keeps its wording. x_1 = 0.5 - 1.0 * (1 / 0.5) = -1.5 is outside log's domain.
    body = {"inputs": {"x": t([0.5])}, "function": function, "learning_rate": 1.0, "max_steps": 3}
    answer = client.post("/v1/gradient-descent", json=body).json()
    assert answer["status"] == "diverged"
    assert (
        answer["reason"] == f"step 1: {label}: log needs x > 0; got 1 element(s) outside, e.g. -1.5"
    )


def test_forms_cannot_be_mixed(client: TestClient) -> None:
    for body in (
        {"x": t(R), "inputs": {"x": t(R)}, "function": [{"op": "sin"}]},
        {"x": t(R), "function": "sin(x)"},
        {"x": t(R), "function": [{"op": "sin"}], "wrt": ["x"]},
        {"inputs": {"x": t(R)}, "function": "sin(x)", "tangent": t(R)},
    ):
        problem = refused(client, "/v1/jvp", body)
        assert problem["type"] == "/problems/request-validation"


def test_ops_lists_arity_and_argument_names(client: TestClient) -> None:
    listing = client.get("/v1/ops").json()
    programs = {op["name"]: op for op in listing["program_operations"]}
    assert set(programs) == set(nary_classes())
    assert programs["xcorr2d"]["args"] == ["image", "kernel"] and programs["xcorr2d"]["arity"] == 2
    assert programs["concatenate"]["arity"] is None
    assert all(op["arity"] == 1 and op["args"] == ["x"] for op in listing["operations"])


def test_descent_recovers_a_kernel(client: TestClient) -> None:
    """The README's example: learn k from (x, x * k) by descending mse(xcorr2d(x, k), y)."""
    rng = np.random.default_rng(3)
    x, k_true = rng.standard_normal((3, 32, 32)), rng.standard_normal((3, 3, 3))
    y = np.stack([_xcorr(x, k_true)])[0]
    body = {
        "inputs": {"x": t(x), "k": t(np.zeros((3, 3, 3))), "y": t(y)},
        "function": "mse(xcorr2d(x, k), y)",
        "variables": ["k"],
        "learning_rate": 0.05,
        "max_steps": 1000,
        "record_every": 500,
    }
    run = ok(client, "/v1/gradient-descent", body)
    assert run["status"] == "max_steps" and list(run["final"]) == ["k"]
    k = np.array(run["final"]["k"]["data"])
    assert np.linalg.norm(k - k_true) / np.linalg.norm(k_true) < 1e-8
    assert [p["step"] for p in run["trajectory"]] == [0, 500, 1000]


def test_descent_over_two_variables_uses_the_joint_gradient_norm(client: TestClient) -> None:
    a0, b0 = np.array([3.0, -1.0]), np.array([0.5])
    body = {
        "inputs": {"a": t(a0), "b": t(b0), "c": t([1.0, 2.0])},
        "function": "sum(square(a - c)) + sum(square(b))",
        "variables": ["a", "b"],
        "learning_rate": 0.1,
        "max_steps": 0,
        "record_x": True,
    }
    run = ok(client, "/v1/gradient-descent", body)
    grad = np.concatenate([2 * (a0 - [1.0, 2.0]), 2 * b0])
    assert run["grad_norm_final"] == pytest.approx(np.linalg.norm(grad), rel=1e-15)
    assert run["trajectory"][0]["variables"]["a"]["data"] == a0.tolist()
    fixed = ok(client, "/v1/gradient-descent", {**body, "variables": ["b"], "max_steps": 50})
    assert list(fixed["final"]) == ["b"] and abs(fixed["final"]["b"]["data"][0]) < 1e-3


def test_check_covers_every_wrt_input_of_a_program(client: TestClient) -> None:
    """check (central differences) on the program forms: every wrt input, the x form's fields."""
    a, b = RNG.standard_normal((2, 3)), RNG.standard_normal(3)
    u = RNG.standard_normal((2, 3))
    base = {"inputs": {"a": t(a), "b": t(b)}, "function": "a * b + sin(a)", "check": True}
    fields = {"passed", "max_abs_error", "max_rel_error", "step", "relative_step", "directions",
              "full", "checked", "rtol", "atol"}  # fmt: skip
    jacobian = ok(client, "/v1/jacobian", base)["check"]
    assert set(jacobian) == fields
    # 6 + 3 elements of the two inputs: the whole basis, so every Jacobian row is checked
    assert jacobian["passed"] and jacobian["full"] and jacobian["directions"] == 9
    assert jacobian["checked"] == ["jvp", "vjp", "jacobian"]
    only_b = ok(client, "/v1/vjp", {**base, "cotangent": t(u), "wrt": ["b"]})["check"]
    assert only_b["passed"] and only_b["directions"] == 3
    tangents = {"a": t(a), "b": t(b)}
    assert ok(client, "/v1/jvp", {**base, "tangents": tangents})["check"]["directions"] == 9
    assert ok(client, "/v1/jacobian", {**base, "check": False})["check"] is None


def test_check_of_an_op_list_program_is_the_x_forms(client: TestClient) -> None:
    function = [{"op": "tanh"}, {"op": "sum", "axes": [1]}]
    old = ok(client, "/v1/jacobian", {"x": t(X[0]), "function": function, "check": True})
    new = ok(client, "/v1/jacobian", {"inputs": {"x": t(X[0])}, "function": function,
                                      "check": True})  # fmt: skip
    assert new["check"] == old["check"]


def test_batched_matmul_and_einsum_ellipsis_broadcast(client: TestClient) -> None:
    """`@` broadcasts batch axes like np.matmul; each input's Jacobian sums over its broadcast."""
    a, b = RNG.standard_normal((2, 1, 3, 2)), RNG.standard_normal((3, 2, 2))
    oracles = {"a": lambda v: np.matmul(v, b), "b": lambda v: np.matmul(a, v)}
    for source in ("a @ b", "einsum(a, b, subscripts='...ij,...jk->...ik')"):
        body = {"inputs": {"a": t(a), "b": t(b)}, "function": source, "format": "dense"}
        found = ok(client, "/v1/jacobian", body)
        np.testing.assert_allclose(found["value"]["data"], np.matmul(a, b), rtol=1e-12)
        for name, x in (("a", a), ("b", b)):
            expected = central_difference_jacobian(oracles[name], x, "F")
            got = found["jacobians"][name]["data"]["data"]
            np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-6)
