"""The committed OpenAPI document is the app's, and it documents what clients rely on."""

import json
from pathlib import Path

import pytest
from fastapi import FastAPI

from scripts.export_openapi import TARGET, render
from service.config import Settings
from service.main import create_app

COMMITTED = Path(TARGET)


def test_committed_openapi_matches_the_app() -> None:
    assert COMMITTED.exists(), "run: python scripts/export_openapi.py"
    assert COMMITTED.read_text() == render(), (
        "openapi/openapi.json drifted from the app: run python scripts/export_openapi.py"
    )


def test_drift_check_notices_a_changed_route() -> None:
    app = create_app(Settings())
    baseline = json.dumps(app.openapi(), sort_keys=True)

    changed: FastAPI = create_app(Settings())

    @changed.get("/v1/added-for-the-test")
    async def added_for_the_test() -> dict[str, str]:
        return {}

    changed.openapi_schema = None
    assert json.dumps(changed.openapi(), sort_keys=True) != baseline


@pytest.fixture(scope="module")
def document() -> dict:
    return json.loads(COMMITTED.read_text())


def test_operation_ids_are_route_function_names(document: dict) -> None:
    ids = {op["operationId"] for path in document["paths"].values() for op in path.values()}
    assert {"vec", "ten", "flat", "unflat", "healthz", "readyz"} <= ids


def test_every_v1_operation_documents_problem_responses(document: dict) -> None:
    for path, operations in document["paths"].items():
        if not path.startswith("/v1/"):
            continue
        for method, operation in operations.items():
            # Only a body can be too large or invalid (GET /v1/ops declares neither).
            for status in ("413", "422", "500") if method == "post" else ("500",):
                content = operation["responses"][status]["content"]
                assert content["application/problem+json"]["schema"] == {
                    "$ref": "#/components/schemas/Problem"
                }, (method, path, status)
            if method == "post":
                body = operation["requestBody"]["content"]["application/json"]["schema"]
                name = body["$ref"].rsplit("/", 1)[-1]
                assert name in document["components"]["schemas"], (path, name)


def test_every_reference_resolves(document: dict) -> None:
    text = json.dumps(document)
    names = set(document["components"]["schemas"])
    refs = {part.split('"')[0] for part in text.split('"#/components/schemas/')[1:]}
    assert refs <= names, refs - names
