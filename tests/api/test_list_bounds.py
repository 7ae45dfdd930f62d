"""Every list-valued field of a request is bounded (issue 10): by a ``max_length``, or by a setting.

Shapes, axes, index lists, op lists, node lists and the parameters of graph nodes have a fixed
``max_length``: one entry more is a 422 that points at the list. The lists that carry data
(tensor entries, COO triplets, the indices of ``/v1/flat`` and ``/v1/unflat``) are bounded by the
settings instead, counted on the raw bytes before parsing: one entry more is a 413 naming the
setting. The schema walk below finds every array of every request model, so a new list field
without a bound fails here.
"""

from typing import Any

import pytest
from fastapi.testclient import TestClient

from service.api.deps import REQUEST_MODELS
from service.api.schemas.programs import (
    MAX_PARAMETER_DEPTH,
    MAX_PARAMETER_ITEMS,
    MAX_PARAMETER_TEXT,
)
from service.config import Settings
from service.main import create_app

X = {"data": [[[1.0, 2.0], [3.0, 4.0]]]}
K = {"data": [[[1.0]]]}
OVER = MAX_PARAMETER_ITEMS + 1
# The data lists, each bounded by the setting named (tested below with the setting at 3).
DATA_LISTS = {
    ("Tensor", "data"): "max_tensor_elements",
    ("CooJacobianIn", "row"): "max_tensor_elements",
    ("CooJacobianIn", "col"): "max_tensor_elements",
    ("CooJacobianIn", "data"): "max_tensor_elements",
    ("FlatRequest", "index"): "max_index_count",
    ("UnflatRequest", "flat"): "max_index_count",
}


@pytest.fixture(scope="module")
def client() -> TestClient:
    return TestClient(create_app(Settings()))


def unbounded_arrays(
    schema: Any, owner: str, field: str | None, found: set[tuple[str, Any]]
) -> None:
    """Collect ``(model, field)`` of every array without ``maxItems`` in a JSON schema."""
    if isinstance(schema, list):
        for item in schema:
            unbounded_arrays(item, owner, field, found)
        return
    if not isinstance(schema, dict):
        return
    if schema.get("type") == "array" and "maxItems" not in schema:
        found.add((owner, field))
    for key, value in schema.items():
        if key == "properties":
            for name, sub in value.items():
                unbounded_arrays(sub, owner, name, found)
        elif key == "$defs":
            for name, sub in value.items():
                unbounded_arrays(sub, name, None, found)
        else:
            unbounded_arrays(value, owner, field, found)


def test_every_request_array_has_a_max_length_or_is_a_data_list_bounded_by_a_setting(
    client: TestClient,
) -> None:
    found: set[tuple[str, Any]] = set()
    for model in REQUEST_MODELS:
        unbounded_arrays(model.model_json_schema(), model.__name__, None, found)
    assert found == set(DATA_LISTS)


def program(node: dict[str, Any]) -> dict[str, Any]:
    nodes = [node, {"id": "z", "op": "sum", "args": ["y"]}]
    return {"inputs": {"x": X, "k": K}, "function": {"nodes": nodes, "output": "z"}}


def xcorr_node(**params: Any) -> dict[str, Any]:
    return program({"id": "y", "op": "xcorr2d", "args": ["x", "k"], **params})


def stride_expression(entries: int) -> str:
    return f"sum(xcorr2d(x, k, stride=[{', '.join(['1'] * entries)}]))"


# (name, path, body, pointer): one entry over each fixed bound.
OVER_A_MAX_LENGTH: list[tuple[str, str, dict[str, Any], str]] = [
    ("op list", "/v1/evaluate", {"x": X, "function": [{"op": "sum"}] * 65}, "/function"),
    ("axes", "/v1/evaluate", {"x": X, "function": [{"op": "sum", "axes": [0] * 33}]},
     "/function/0/axes"),
    ("reshape shape", "/v1/evaluate", {"x": X, "function": [{"op": "reshape", "shape": [1] * 33}]},
     "/function/0/shape"),
    ("tensor shape", "/v1/evaluate",
     {"x": {"data": [1.0], "shape": [1] * 33}, "function": [{"op": "sum"}]}, "/x/shape"),
    ("stride", "/v1/cross-correlation", {"x": X, "kernel": K, "stride": [1, 1, 1]}, "/stride"),
    ("padding", "/v1/cross-correlation",
     {"x": X, "kernel": K, "padding": [[0, 0], [0, 0], [0, 0]]}, "/padding"),
    ("wrt", "/v1/jacobian", {"inputs": {"x": X}, "function": "sum(x)", "wrt": ["x"] * 17},
     "/wrt"),
    ("dims", "/v1/flat", {"index": [0, 0], "dims": [1] * 33}, "/dims"),
    ("in_shape label", "/v1/chain-rule", {"jacobians": [{
        "format": "coo", "shape": [1, 1], "row": [0], "col": [0], "data": [1.0],
        "in_shape": [1] * 33}]}, "/jacobians/0/in_shape"),
    ("chain-rule factors", "/v1/chain-rule", {"jacobians": [{
        "format": "dense", "data": {"data": [[1.0]]}}] * 65}, "/jacobians"),
    ("node args", "/v1/evaluate", program({"id": "y", "op": "add", "args": ["x"] * 65}),
     "/function/nodes/0/args"),
    ("graph nodes", "/v1/evaluate", {"inputs": {"x": X}, "function": {"nodes": [
        {"id": f"n{i}", "op": "sin", "args": ["x"]} for i in range(513)], "output": "n0"}},
     "/function/nodes"),
    ("node stride", "/v1/evaluate", xcorr_node(stride=[1] * OVER), "/function/nodes/0/stride"),
    ("node padding pairs", "/v1/evaluate", xcorr_node(padding=[[0, 0]] * OVER),
     "/function/nodes/0/padding"),
    ("node padding pair", "/v1/evaluate", xcorr_node(padding=[[0] * OVER, [0, 0]]),
     "/function/nodes/0/padding/0"),
    ("node nesting", "/v1/evaluate", xcorr_node(padding=[[[0], 0], [0, 0]]),
     "/function/nodes/0/padding/0/0"),
    ("node slice index", "/v1/evaluate",
     program({"id": "y", "op": "slice", "args": ["x"], "index": [0] * OVER}),
     "/function/nodes/0/index"),
    ("node axis", "/v1/evaluate",
     program({"id": "y", "op": "concatenate", "args": ["x", "x"], "axis": [0] * OVER}),
     "/function/nodes/0/axis"),
    ("node subscripts", "/v1/evaluate",
     program({"id": "y", "op": "einsum", "args": ["x", "x"], "subscripts": "a" * 201}),
     "/function/nodes/0/subscripts"),
    ("unknown node parameter", "/v1/evaluate",
     program({"id": "y", "op": "add", "args": ["x", "x"], "extra": list(range(OVER))}),
     "/function/nodes/0/extra"),
    ("node parameter name", "/v1/evaluate",
     program({"id": "y", "op": "add", "args": ["x", "x"], "p" * 201: 1}), "/function/nodes/0"),
    ("expression parameter", "/v1/evaluate",
     {"inputs": {"x": X, "k": K}, "function": stride_expression(OVER)}, "/function"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("path", "body", "pointer"),
    [case[1:] for case in OVER_A_MAX_LENGTH],
    ids=[case[0] for case in OVER_A_MAX_LENGTH],
)
def test_one_entry_over_a_max_length_is_a_422_pointing_at_the_list(
    client: TestClient, path: str, body: dict[str, Any], pointer: str
) -> None:
    response = client.post(path, json=body)
    assert response.status_code == 422, response.text
    problem = response.json()
    assert pointer in [error["pointer"] for error in problem["errors"]], problem
    assert len(response.content) < 4096  # nothing long is echoed


def test_the_node_parameter_bounds_admit_the_longest_parameters_and_any_tensor(
    client: TestClient,
) -> None:
    assert MAX_PARAMETER_DEPTH == 2  # padding pairs: [[top, bottom], [left, right]]
    at_bounds = xcorr_node(padding=[[0, 0], [0, 0]], stride=[1, 1])
    assert client.post("/v1/evaluate", json=at_bounds).status_code == 200
    # A string at the bound reaches the operation, which judges it.
    longest = client.post("/v1/evaluate", json=xcorr_node(padding="v" * MAX_PARAMETER_TEXT))
    assert longest.status_code == 422
    assert "padding must be" in longest.json()["detail"], longest.text
    # Tensor parameters are bounded by the tensor limits, not by MAX_PARAMETER_ITEMS.
    long = {"data": [[[1.0] * 40]]}
    mask = [[[True] * 40]]
    where = {"inputs": {"a": long, "b": long}, "function": {"nodes": [
        {"id": "y", "op": "where", "args": ["a", "b"], "mask": mask},
        {"id": "z", "op": "add", "args": ["y"], "constant": [1.0] * 40},
        {"id": "s", "op": "sum", "args": ["z"]}], "output": "s"}}  # fmt: skip
    response = client.post("/v1/evaluate", json=where)
    assert response.status_code == 200, response.text
    assert response.json()["value"]["data"] == 80.0


# (path, body with one entry over a limit of 3, setting)
OVER_A_SETTING: list[tuple[str, dict[str, Any], str]] = [
    ("/v1/evaluate", {"x": {"data": [1.0] * 4}, "function": [{"op": "sum"}]},
     "max_tensor_elements"),
    ("/v1/chain-rule", {"jacobians": [{"format": "coo", "shape": [2, 2], "row": [0, 0, 1, 1],
                                       "col": [0, 1, 0, 1], "data": [1.0] * 4}]},
     "max_tensor_elements"),
    ("/v1/flat", {"index": [[0, 0]] * 4, "dims": [2, 2]}, "max_index_count"),
    ("/v1/unflat", {"flat": [0] * 4, "dims": [2, 2]}, "max_index_count"),
]  # fmt: skip


@pytest.mark.parametrize(("path", "body", "setting"), OVER_A_SETTING)
def test_one_entry_over_a_data_list_setting_is_a_413_naming_it(
    path: str, body: dict[str, Any], setting: str
) -> None:
    assert setting in DATA_LISTS.values()
    limits = {"max_tensor_elements": 3, "max_index_count": 3}
    with TestClient(create_app(Settings(**limits))) as small:
        response = small.post(path, json=body)
    assert response.status_code == 413, response.text
    assert response.json()["setting"] == setting
