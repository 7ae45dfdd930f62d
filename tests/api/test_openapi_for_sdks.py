"""The OpenAPI document is friendly to SDK generators, and problem types resolve to pages.

Shared enums are components, each operation declares exactly the error statuses it can answer
(by a rule written here, independently of the code that declares them), tags are described,
``servers`` is set, and every JSON request body carries the README's example, which the app
accepts.
"""

import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from scripts.export_openapi import render_examples
from service.api.openapi_document import EXAMPLES_FILE, api_routes
from service.api.problems import PROBLEM_RESPONSES, PROBLEM_TYPES
from service.api.routes.problem_pages import PAGES
from service.config import Settings
from service.main import create_app

ROOT = Path(__file__).resolve().parents[2]
DOCUMENT: dict[str, Any] = json.loads((ROOT / "openapi" / "openapi.json").read_text())
OPERATIONS = [
    (method, path, operation)
    for path, item in DOCUMENT["paths"].items()
    for method, operation in item.items()
]


def _own_statuses() -> dict[tuple[str, str], set[int]]:
    app = create_app(Settings())
    found: dict[tuple[str, str], set[int]] = {}
    for path, route in api_routes(app.routes):
        codes = {int(c) for c in route.responses if str(c)[0] in "45"} - set(PROBLEM_RESPONSES)
        for method in route.methods or ():
            found[(method.lower(), path)] = codes
    return found


BODY_ERRORS = {400, 401, 406, 408, 413, 415, 422, 500, 503}  # read, negotiate, validate, compute
# A run ends itself with status "deadline" and the estimate computes nothing: every other POST
# computes under SERVICE_COMPUTATION_DEADLINE_SECONDS and answers 504 past it.
NO_DEADLINE = {"/v1/estimate", "/v1/gradient-descent", "/v1/minimize"}


def expected_errors(method: str, path: str) -> set[int]:
    """What an operation can answer besides 2xx (the rule the README's Errors section states)."""
    if method == "post":
        return BODY_ERRORS if path in NO_DEADLINE else BODY_ERRORS | {504}
    if path.startswith("/v1/"):
        return {401, 406, 500}  # no body, no computation slot; Accept is negotiated
    return {401, 500}  # probes: a key only when SERVICE_PUBLIC_HEALTH=false


OWN_STATUSES = _own_statuses()


@pytest.fixture(scope="module")
def client() -> TestClient:
    return TestClient(create_app(Settings()))


def _string_enums(node: Any) -> list[tuple[str, ...]]:
    found = []
    if isinstance(node, dict):
        if node.get("type") == "string" and len(node.get("enum", [])) >= 2:
            found.append(tuple(node["enum"]))
        for child in node.values():
            found += _string_enums(child)
    elif isinstance(node, list):
        for child in node:
            found += _string_enums(child)
    return found


def test_shared_enums_are_components_referenced_by_ref() -> None:
    counts = Counter(_string_enums(DOCUMENT))
    assert all(count == 1 for count in counts.values()), counts.most_common(3)
    schemas = DOCUMENT["components"]["schemas"]
    for name, values in [("Order", ["F", "C"]), ("Layout", ["in_out", "out_in"])]:
        assert schemas[name]["enum"] == values
        assert json.dumps(DOCUMENT).count(f'"#/components/schemas/{name}"') >= 5, name
    assert "list" in schemas["Encoding"]["enum"] and "base64" in schemas["Encoding"]["enum"]


@pytest.mark.parametrize(("method", "path", "operation"), OPERATIONS,
                         ids=[f"{m} {p}" for m, p, _ in OPERATIONS])  # fmt: skip
def test_each_operation_declares_exactly_its_error_statuses(
    method: str, path: str, operation: dict[str, Any]
) -> None:
    declared = {int(code) for code in operation["responses"] if code[0] in "45"}
    # Statuses a route declares itself (beyond the routers' blanket list) are kept as well.
    own = {int(code) for code in OWN_STATUSES.get((method, path), ())}
    assert declared == expected_errors(method, path) | own
    for code in declared:
        content = operation["responses"][str(code)]["content"]
        assert content == {
            "application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}
        }, (code, content)


def test_tags_are_described_and_servers_set() -> None:
    described = {tag["name"]: tag.get("description", "") for tag in DOCUMENT.get("tags", [])}
    used = {tag for _, _, operation in OPERATIONS for tag in operation.get("tags", [])}
    missing = sorted(tag for tag in used if len(described.get(tag, "")) < 20)
    assert not missing, f"describe these tags in TAGS of service/main.py: {missing}"
    assert DOCUMENT["servers"][0]["url"] == "/"


def test_request_examples_are_the_readmes() -> None:
    assert EXAMPLES_FILE.read_text() == render_examples(), (
        "README curl bodies changed: run python scripts/export_openapi.py"
    )


@pytest.mark.parametrize(
    "path", sorted(p for m, p, _ in OPERATIONS if m == "post")
)  # fmt: skip
def test_every_request_body_has_an_example_the_app_accepts(client: TestClient, path: str) -> None:
    content = DOCUMENT["paths"][path]["post"]["requestBody"]["content"]["application/json"]
    assert "examples" in content, (
        f"{path}: add a README curl example with -d '<json body>' and run "
        "python scripts/export_openapi.py"
    )
    for example in content["examples"].values():
        response = client.post(path, json=example["value"])
        assert response.status_code == 200, (path, response.text[:500])


def test_every_problem_type_has_a_page(client: TestClient) -> None:
    assert {f"/problems/{name}" for name in PAGES} == set(PROBLEM_TYPES), (
        "each problem type needs an entry in PAGES of service/api/routes/problem_pages.py"
    )
    for problem_type in PROBLEM_TYPES:
        response = client.get(problem_type)
        assert response.status_code == 200, problem_type
        assert response.headers["content-type"].startswith("text/html")
        status = PAGES[problem_type.rsplit("/", 1)[-1]][0]
        assert f"HTTP {status}" in response.text and "What to do" in response.text
    index = client.get("/problems")
    assert all(f'href="{t}"' in index.text for t in PROBLEM_TYPES)


def test_a_problem_type_in_an_answer_resolves_to_its_page(client: TestClient) -> None:
    problem = client.post("/v1/flat", json={"index": [5, 0, 0], "dims": [2, 3, 4]}).json()
    page = client.get(problem["type"])
    assert page.status_code == 200 and "Index out of range" in page.text


def test_an_unknown_problem_type_is_a_404_problem(client: TestClient) -> None:
    response = client.get("/problems/no-such-thing")
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/problem+json"
    assert "GET /problems lists them" in response.json()["detail"]


def test_building_a_second_app_gives_the_same_document() -> None:
    # The document is rewritten in place (shared enums); schemas shared between apps must not
    # be, or the second app's document has references to components it lacks.
    first, second = create_app(Settings()).openapi(), create_app(Settings()).openapi()
    assert json.dumps(first, sort_keys=True) == json.dumps(second, sort_keys=True)
