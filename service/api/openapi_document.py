"""Finishing the OpenAPI document for SDK generators: shared enums, exact statuses, examples.

* Enums used in more than one place (``order``, ``layout``, ``encoding``, ...) become one
  component each and are referenced, so a generator makes one ``Order`` type, not one per field.
* Each operation declares exactly the error statuses it can answer, all with the Problem schema:
  what its dependencies can raise (body reading, content negotiation, computation slots), not a
  blanket list. A generated SDK then returns a problem for each, never an "unexpected status".
* Each JSON request body carries the README's example for its path
  (``service/api/request_examples.json``, harvested by ``scripts/export_openapi.py``).
"""

import json
from collections import defaultdict
from collections.abc import Iterator
from http import HTTPStatus
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute

from .deps import BODY_PARSERS, get_compute
from .negotiation import check_accept
from .problems import PROBLEM_MEDIA_TYPE, PROBLEM_RESPONSES, STATUS_DESCRIPTIONS

EXAMPLES_FILE = Path(__file__).with_name("request_examples.json")

# Names (and meanings) of the enums shared across schemas; others are named after their field.
ENUM_NAMES: dict[tuple[str, ...], tuple[str, str]] = {
    ("F", "C"): ("Order", "Index order: 'F' = first index fastest (the notes' flat), 'C' = last."),
    ("in_out", "out_in"): ("Layout", "Jacobian layout: 'in_out' = the notes' (input size x "
                           "output size) matrix, 'out_in' = its transpose."),
    ("list", "base64", "binary"): ("Encoding", "How tensors are written: nested lists, base64 "
                                   "of the little-endian C-order bytes, or binary body segments."),
    ("list", "base64"): ("Encoding", "How tensors are written: nested lists or base64."),
    ("coo", "dense", "auto"): ("JacobianFormat", "'coo', 'dense', or 'auto' (chosen by sparsity "
                               "and limits)."),
    ("float64", "float32"): ("Dtype", "Element type of the given bytes; computed in float64."),
    ("valid", "same", "full"): ("PaddingMode", "Padding of a cross-correlation."),
}  # fmt: skip

# What each kind of dependency can answer: reading and validating a body (client gone, stalled,
# too large, wrong type, invalid, too many bytes in flight), negotiating a representation, and
# waiting for a computation slot.
READS_BODY = frozenset({400, 408, 413, 415, 422, 503})
NEGOTIATES = frozenset({406})
COMPUTES = frozenset({503})


def _string_enums(node: Any, found: dict[tuple[str, ...], list[tuple[Any, Any]]]) -> None:
    """Collect (container, key) of every inline string enum with two or more values."""
    children = node.items() if isinstance(node, dict) else enumerate(node)
    for key, child in children:
        if isinstance(child, dict | list):
            if (
                isinstance(child, dict)
                and child.get("type") == "string"
                and len(child.get("enum", [])) >= 2
            ):
                found[tuple(child["enum"])].append((node, key))
            else:
                _string_enums(child, found)


def _field_name(container: Any, key: Any) -> str:
    return "".join(part.title() for part in str(key).split("_"))


def share_enums(schema: dict[str, Any]) -> None:
    """Replace every string enum used more than once by a ``$ref`` to one component."""
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    found: dict[tuple[str, ...], list[tuple[Any, Any]]] = defaultdict(list)
    _string_enums(schema, found)
    for values, places in sorted(found.items()):
        if len(places) < 2:
            continue
        name, description = ENUM_NAMES.get(values, (_field_name(*places[0]), ""))
        if name in components and components[name].get("enum") != list(values):
            name += "Enum"
        components[name] = {"type": "string", "enum": list(values), "title": name}
        if description:
            components[name]["description"] = description
        for container, key in places:
            siblings = {
                k: v for k, v in container[key].items() if k not in ("type", "enum", "title")
            }
            container[key] = {"$ref": f"#/components/schemas/{name}", **siblings}
    schema["components"]["schemas"] = dict(sorted(components.items()))


def _calls(dependant: Dependant) -> list[Any]:
    found = []
    for dependency in dependant.dependencies:
        found.append(dependency.call)
        found.extend(_calls(dependency))
    return found


def api_routes(routes: list[Any]) -> Iterator[tuple[str, APIRoute]]:
    """Yield (path, route) of every API route, also inside included routers.

    FastAPI keeps an included router as one entry whose effective routes carry the full path.
    """
    for route in routes:
        if isinstance(route, APIRoute):
            yield route.path_format, route
        elif hasattr(route, "effective_candidates"):
            for candidate in route.effective_candidates():
                original = getattr(candidate, "original_route", None)
                if isinstance(original, APIRoute):
                    yield candidate.path_format, original
                else:
                    yield from api_routes([candidate])


def error_statuses(route: APIRoute) -> set[int]:
    """Return every error status ``route`` can answer, from what its dependencies do."""
    statuses = {401, 500}  # keys may be configured for any path; any handler may fail
    if route.dependant.path_params:
        statuses.add(404)
    for call in _calls(route.dependant):
        if call in BODY_PARSERS:
            statuses |= READS_BODY
        elif call is check_accept:
            statuses |= NEGOTIATES
        elif call is get_compute:
            statuses |= COMPUTES
    return statuses


def declare_statuses(schema: dict[str, Any], app: FastAPI) -> None:
    """Set each operation's error responses to exactly the statuses it can answer."""
    problem = {PROBLEM_MEDIA_TYPE: {"schema": {"$ref": "#/components/schemas/Problem"}}}
    for path, route in api_routes(app.routes):
        if not route.include_in_schema:
            continue
        for method in route.methods or ():
            operation = schema["paths"].get(path, {}).get(method.lower())
            if operation is None:
                continue
            responses = {
                code: answer
                for code, answer in operation["responses"].items()
                if code[0] not in "45"
            }
            # A route may declare more (a status of its own); the routers' blanket list is not.
            own = {
                int(code): answer
                for code, answer in route.responses.items()
                if str(code)[0] in "45" and code not in PROBLEM_RESPONSES
            }
            for status in sorted(error_statuses(route) | set(own)):
                description = own.get(status, {}).get("description") or STATUS_DESCRIPTIONS.get(
                    status, HTTPStatus(status).phrase
                )
                responses[str(status)] = {"description": description, "content": problem}
            operation["responses"] = responses


def add_examples(schema: dict[str, Any]) -> None:
    """Put the README's example body of each path into its JSON request body."""
    examples: dict[str, Any] = json.loads(EXAMPLES_FILE.read_text())
    for path, item in schema.get("paths", {}).items():
        body = item.get("post", {}).get("requestBody", {}).get("content", {})
        if "application/json" in body and path in examples:
            body["application/json"]["examples"] = {
                "readme": {"summary": "The README's example", "value": examples[path]}
            }
