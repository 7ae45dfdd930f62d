"""Each unclear error of issue 13 now says what to do: one table row per case, exact pointer.

No detail may carry pydantic's or NumPy's own wording (checked over the whole table).
"""

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from service.config import Settings
from service.main import create_app

pytestmark = pytest.mark.anyio

X = {"data": [[[1.0, 2.0, 3.0], [4.0, 5.0, 6.0], [7.0, 8.0, 9.0]]]}
K = {"data": [[[1.0, 2.0], [3.0, 4.0]]]}
A = {"data": [1.0, 2.0]}
DESCENT = {"x0": {"data": [1.0, 2.0]}, "function": [{"op": "square"}, {"op": "sum"}],
           "learning_rate": 0.1, "max_steps": 3}  # fmt: skip


def _eval(x: Any, *function: dict[str, Any]) -> dict[str, Any]:
    return {"x": x, "function": list(function)}


CASES: list[tuple[str, str, dict[str, Any], str, str]] = [
    ("op under name", "/v1/evaluate", _eval(X, {"name": "square"}), "/function/0",
     'each operation needs the key "op" naming it: write {"op": "square"} instead of "name"; '
     "GET /v1/ops lists the operations"),
    ("op missing", "/v1/evaluate", _eval(X, {"p": 2.0}), "/function/0",
     'each operation needs the key "op" naming it; GET /v1/ops lists the operations'),
    ("unknown op", "/v1/evaluate", _eval(X, {"op": "squre"}), "/function/0",
     "unknown operation 'squre'; did you mean 'square' or 'sqrt'? GET /v1/ops lists the 28 "
     'operations (the key "op" of each entry)'),
    ("unknown op, nothing close", "/v1/jacobian", _eval(X, {"op": "conv9"}), "/function/0",
     "unknown operation 'conv9'; GET /v1/ops lists the"),
    ("unknown format", "/v1/chain-rule", {"jacobians": [{"format": "csr", "data": []}]},
     "/jacobians/0", "unknown format 'csr'; expected one of: coo, dense"),
    ("ragged row", "/v1/vec", {"x": {"data": [[1, 2], [3, 4], [5]]}}, "/x/data/2",
     "this list has 1 entries but the first one at its depth has 2: nested lists need equal "
     "lengths at each depth (the data is ragged)"),
    ("ragged deeper", "/v1/vec", {"x": {"data": [[1, 2], [3, [4]]]}}, "/x/data/1/1",
     "this is a list where the first entry at its depth is a number"),
    ("number for a row", "/v1/vec", {"x": {"data": [[1, 2], 3]}}, "/x/data/1",
     "this is a number where the first entry at its depth is a list of 2"),
    ("ragged in an op", "/v1/evaluate", _eval(X, {"op": "add", "constant": {"data": [[1], []]}}),
     "/function/0/constant/data/1", "this list has 0 entries but the first one at its depth has 1"),
    ("grad_tol at the top", "/v1/gradient-descent", {**DESCENT, "grad_tol": 1e-6}, "/grad_tol",
     "unknown field 'grad_tol' here: it belongs under /tolerances"),
    ("kernel on tanh", "/v1/evaluate", _eval(X, {"op": "tanh", "kernel": K}),
     "/function/0/kernel",
     "operation 'tanh' has no parameter 'kernel'; GET /v1/ops lists the parameters of every "
     "operation"),
    ("typo of a field", "/v1/cross-correlation", {"x": X, "kernel": K, "strides": 2}, "/strides",
     "unknown field 'strides'; did you mean 'stride'? (the fields here: dilation, "),
    ("wrt without jacobian", "/v1/cross-correlation", {"x": X, "kernel": K, "wrt": ["kernel"]},
     "/wrt",
     "wrt chooses which Jacobians to return, but jacobian is 'none': add \"jacobian\": \"coo\" "
     '(or "dense"), or drop wrt'),
    ("bad value error prefix", "/v1/cross-correlation",
     {"x": X, "kernel": K, "jacobian": "coo", "wrt": ["x", "x"]}, "/wrt",
     "wrt lists ['x', 'x']: each of 'x' and 'kernel' at most once"),
    ("neither x nor inputs", "/v1/jacobian", {"function": [{"op": "tanh"}]}, "",
     "give x (with an op list) or inputs (a program): the request has neither"),
    ("both x and inputs", "/v1/evaluate",
     {**_eval(X, {"op": "tanh"}), "inputs": {"x": X}}, "",
     "give either x (with an op list) or inputs (a program), not both"),
    ("neither x0 nor inputs", "/v1/gradient-descent",
     {key: value for key, value in DESCENT.items() if key != "x0"}, "",
     "give x0 (with an op list) or inputs (a program): the request has neither"),
    ("unknown parameter in an expression", "/v1/evaluate",
     {"inputs": {"a": A}, "function": "sum(a, axis=0)"}, "/function",
     "expression character 0 (sum): operation 'sum' has no parameter 'axis'; GET /v1/ops lists "
     "the parameters of every operation"),
    ("unknown parameter in a graph", "/v1/evaluate",
     {"inputs": {"a": A}, "function": {"nodes": [{"id": "s", "op": "sum", "args": ["a"],
                                                   "axis": 0}], "output": "s"}},
     "/function/nodes/0/axis", "node 's': operation 'sum' has no parameter 'axis'"),
    ("missing parameter in an expression", "/v1/evaluate",
     {"inputs": {"a": A}, "function": "scale(a)"}, "/function",
     "expression character 0 (scale): operation 'scale' needs the parameter 'factor'"),
    ("wrong parameter in an expression", "/v1/evaluate",
     {"inputs": {"a": A}, "function": "2 * scale(a, factor='x')"}, "/function",
     "expression character 4 (scale): scale: factor: Input should be a valid number"),
    ("unknown parameter of an n-ary operation", "/v1/evaluate",
     {"inputs": {"a": A}, "function": "concatenate(a, a, axs=0)"}, "/function",
     "expression character 0 (concatenate): operation 'concatenate' has no parameter 'axs'; "
     "its parameters: axis"),
    ("missing parameter of an n-ary operation", "/v1/evaluate",
     {"inputs": {"a": A}, "function": {"nodes": [{"id": "e", "op": "einsum", "args": ["a", "a"]}],
                                       "output": "e"}},
     "/function/nodes/0", "node 'e': operation 'einsum' needs the parameter 'subscripts'"),
    ("bad entry of a node's bare tensor", "/v1/evaluate",
     {"inputs": {"x": X}, "function": {"nodes": [{"id": "k", "op": "xcorr2d", "args": ["x"],
                                                   "kernel": [[[1.0, None]]]}], "output": "k"}},
     "/function/nodes/0/kernel/0/0/1",
     "node 'k': xcorr2d: kernel: Input should be a valid number (got null)"),
    ("bad entry of a node's tensor", "/v1/evaluate",
     {"inputs": {"x": X}, "function": {"nodes": [{"id": "k", "op": "xcorr2d", "args": ["x"],
                                                   "kernel": {"data": [[[1.0, "2"]]]}}],
                                       "output": "k"}},
     "/function/nodes/0/kernel/data/0/0/1",
     "node 'k': xcorr2d: kernel: Input should be a valid number (got \"2\")"),
    ("unknown field of a node's tensor", "/v1/evaluate",
     {"inputs": {"x": X}, "function": {"nodes": [{"id": "k", "op": "xcorr2d", "args": ["x"],
                                                   "kernel": {"data": [[[1.0]]], "dtyp": 1}}],
                                       "output": "k"}},
     "/function/nodes/0/kernel/dtyp", "node 'k': xcorr2d: kernel: unknown field 'dtyp'"),
    ("unknown field of an op's tensor", "/v1/evaluate",
     _eval(X, {"op": "xcorr2d", "kernel": {**K, "dtyp": "float64"}}), "/function/0/kernel/dtyp",
     "unknown field 'dtyp'; did you mean 'dtype'?"),
    ("estimate without its body", "/v1/estimate", {"path": "/v1/evaluate"}, "/body",
     "Field required"),
]  # fmt: skip

INTERNALS = ("Value error", "inhomogeneous", "Unable to extract tag", "Extra inputs",
             "Input tag", "setting an array element", "union[", "function-after",
             "__init__", "positional argument", "keyword argument")  # fmt: skip


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=create_app(Settings()))
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
        yield c


@pytest.mark.parametrize(("case", "path", "body", "pointer", "detail"), CASES,
                         ids=[case[0] for case in CASES])  # fmt: skip
async def test_the_error_says_what_to_do(
    client: httpx.AsyncClient, case: str, path: str, body: dict[str, Any], pointer: str,
    detail: str,
) -> None:  # fmt: skip
    response = await client.post(path, json=body)
    assert response.status_code == 422, response.text
    errors = response.json()["errors"]
    assert [error["pointer"] for error in errors] == [pointer], errors
    assert errors[0]["detail"].startswith(detail), errors[0]["detail"]
    for internal in INTERNALS:
        assert internal not in errors[0]["detail"], (internal, errors[0]["detail"])


async def minimize_with_bound(client: httpx.AsyncClient, side: str, bound: str) -> httpx.Response:
    """POST /v1/minimize with ``bound`` written as is (JSON has no NaN or Infinity of its own)."""
    body = (
        '{"x0": {"data": [1.0, 2.0]}, "function": [{"op": "square"}, {"op": "sum"}], '
        f'"method": "lbfgs", "max_steps": 3, "bounds": {{"x": {{"{side}": {bound}}}}}}}'
    )
    return await client.post(
        "/v1/minimize", content=body, headers={"content-type": "application/json"}
    )


@pytest.mark.parametrize("side, value", [("lower", "NaN"), ("lower", "Infinity"),
                                         ("upper", "-Infinity"), ("upper", "NaN")])  # fmt: skip
async def test_a_bound_that_is_not_finite_is_refused_at_the_bound(
    client: httpx.AsyncClient, side: str, value: str
) -> None:
    # A bare NaN or infinite bound used to reach the projection of x0 and come back as "x0 has
    # non-finite entries", pointing at nothing; null is the way to leave a side unbounded.
    response = await minimize_with_bound(client, side, value)
    assert response.status_code == 422, response.text
    [error] = response.json()["errors"]
    assert error["pointer"] == f"/bounds/x/{side}", error
    assert error["detail"].startswith("Input should be a finite number"), error


@pytest.mark.parametrize("side, value", [("lower", "-Infinity"), ("lower", "-1e400"),
                                         ("upper", "Infinity"), ("upper", "1e400")])  # fmt: skip
async def test_an_infinite_bound_on_its_own_side_leaves_it_open(
    client: httpx.AsyncClient, side: str, value: str
) -> None:
    # -inf below and +inf above are what null means (unbounded), and were answered so: only an
    # infinity that closes the box (or NaN) is refused. -1e400 is a plain JSON number.
    opened, unbounded = [await minimize_with_bound(client, side, b) for b in (value, "null")]
    assert opened.status_code == unbounded.status_code == 200, opened.text
    assert opened.content == unbounded.content


async def test_ops_list_shows_the_wire_key(client: httpx.AsyncClient) -> None:
    operations = (await client.get("/v1/ops")).json()["operations"]
    assert all(entry["op"] == entry["name"] for entry in operations)
    assert "square" in {entry["op"] for entry in operations}


async def _ok(client: httpx.AsyncClient, path: str, body: dict[str, Any]) -> Any:
    response = await client.post(path, json=body)
    assert response.status_code == 200, response.text
    return response.json()


IMAGE = {"data": [[[float(3 * i + j) for j in range(7)] for i in range(7)]]}
ONE_INT = [
    ("/v1/cross-correlation", {"x": IMAGE, "kernel": K, "stride": 2, "dilation": 2},
     {"x": IMAGE, "kernel": K, "stride": [2, 2], "dilation": [2, 2]}),
    ("/v1/evaluate", _eval(IMAGE, {"op": "xcorr2d", "kernel": K, "stride": 2, "dilation": 3}),
     _eval(IMAGE, {"op": "xcorr2d", "kernel": K, "stride": [2, 2], "dilation": [3, 3]})),
    ("/v1/evaluate", _eval(IMAGE, {"op": "max_pool2d", "size": 3, "stride": 2}),
     _eval(IMAGE, {"op": "max_pool2d", "size": [3, 3], "stride": [2, 2]})),
    ("/v1/evaluate", _eval(IMAGE, {"op": "avg_pool2d", "size": 2}),
     _eval(IMAGE, {"op": "avg_pool2d", "size": [2, 2]})),
]  # fmt: skip


@pytest.mark.parametrize(("path", "one", "pair"), ONE_INT)
async def test_one_int_stands_for_both_axes_everywhere(
    client: httpx.AsyncClient, path: str, one: dict[str, Any], pair: dict[str, Any]
) -> None:
    assert await _ok(client, path, one) == await _ok(client, path, pair)


@pytest.mark.parametrize("bad", [0, True, [2], [1, 2, 3], 1.5])
async def test_one_int_is_still_validated(client: httpx.AsyncClient, bad: Any) -> None:
    response = await client.post("/v1/cross-correlation", json={"x": IMAGE, "kernel": K,
                                                                "stride": bad})  # fmt: skip
    assert response.status_code == 422
    assert all(e["pointer"].startswith("/stride") for e in response.json()["errors"])
