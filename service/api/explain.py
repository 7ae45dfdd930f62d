"""Validation messages that say what to do, instead of pydantic's or NumPy's wording.

pydantic reports an unknown ``op`` as "Input tag ... does not match any of the expected tags"
with every tag unsorted, a missing ``op`` as "Unable to extract tag using discriminator", and a
misplaced field as "Extra inputs are not permitted". Here each becomes a sentence naming the fix:
the closest operation names, where a misplaced field belongs (found in the request model's own
schema), the key to use. Applied to the errors of a request body before they are rendered.
"""

import difflib
import functools
import re
from typing import Any

from pydantic import BaseModel

from ..engine.op import op_names

_MAX_DEPTH = 8
_TAGS = re.compile(r"'([^']*)'")


@functools.cache
def field_places(model: type[BaseModel]) -> dict[str, tuple[str, ...]]:
    """Map each field name anywhere in ``model``'s request schema to the objects that have it.

    Places are JSON Pointer patterns of the parent object, ``*`` standing for any list index,
    e.g. ``{"grad_tol": ("/tolerances",), "kernel": ("", "/function/*")}``.
    """
    schema = model.model_json_schema()
    definitions = schema.get("$defs", {})
    places: dict[str, set[str]] = {}

    def walk(node: Any, where: str, depth: int, seen: frozenset[str]) -> None:
        if not isinstance(node, dict) or depth > _MAX_DEPTH:
            return
        reference = node.get("$ref")
        if isinstance(reference, str):
            name = reference.rsplit("/", 1)[-1]
            if name not in seen:
                walk(definitions.get(name), where, depth + 1, seen | {name})
            return
        for key in ("anyOf", "oneOf", "allOf"):
            for member in node.get(key, []):
                walk(member, where, depth + 1, seen)
        if isinstance(node.get("items"), dict):
            walk(node["items"], f"{where}/*", depth + 1, seen)
        for field, sub in node.get("properties", {}).items():
            places.setdefault(field, set()).add(where)
            walk(sub, f"{where}/{field}", depth + 1, seen)

    walk(schema, "", 0, frozenset())
    return {field: tuple(sorted(found)) for field, found in places.items()}


def _pattern(loc: tuple[Any, ...]) -> str:
    return "".join("/*" if isinstance(part, int) else f"/{part}" for part in loc)


def _misplaced(error: dict[str, Any], model: type[BaseModel]) -> str:
    loc = tuple(error.get("loc", ()))
    field, parent = str(loc[-1]), loc[:-1]
    places = field_places(model)
    # pydantic puts union tags (an op name, 'list[...]') into loc; they name no field.
    here = _pattern(tuple(part for part in parent if isinstance(part, int) or part in places))
    tags = [part for part in parent if isinstance(part, str) and part not in places]
    elsewhere = [place for place in places.get(field, ()) if place != here]
    if elsewhere:
        where = " or ".join(f"under {place or 'the top level'}" for place in elsewhere[:3])
        return f"unknown field {field!r} here: it belongs {where}"
    # Only a field right under the op's tag is a parameter; deeper ones belong to a tensor.
    if tags and parent[-1] == tags[-1] and tags[-1] in op_names():
        return (f"operation {tags[-1]!r} has no parameter {field!r}; GET /v1/ops lists the "
                "parameters of every operation")  # fmt: skip
    nearby = sorted(name for name, found in places.items() if here in found)
    close = difflib.get_close_matches(field, nearby, n=2, cutoff=0.6)
    guess = f"; did you mean {' or '.join(repr(name) for name in close)}?" if close else ""
    return f"unknown field {field!r}{guess} (the fields here: {', '.join(nearby)})"


def _unknown_tag(error: dict[str, Any]) -> str:
    context = error.get("ctx", {})
    key = str(context.get("discriminator", "")).strip("'")
    tag = str(context.get("tag", ""))
    expected = sorted(_TAGS.findall(str(context.get("expected_tags", ""))))
    close = difflib.get_close_matches(tag, expected, n=3, cutoff=0.6)
    guess = f"; did you mean {' or '.join(repr(name) for name in close)}?" if close else ";"
    if key == "op":
        return (f"unknown operation {tag!r}{guess} GET /v1/ops lists the {len(expected)} "
                "operations (the key \"op\" of each entry)")  # fmt: skip
    return f"unknown {key} {tag!r}{guess} expected one of: {', '.join(expected)}"


def _missing_tag(error: dict[str, Any]) -> str:
    key = str(error.get("ctx", {}).get("discriminator", "")).strip("'")
    given = error.get("input")
    if key == "op":
        hint = ""
        if isinstance(given, dict) and isinstance(given.get("name"), str):
            hint = f': write {{"op": {given["name"]!r}}} instead of "name"'.replace("'", '"')
        return (f'each operation needs the key "op" naming it{hint}; GET /v1/ops lists the '
                "operations")  # fmt: skip
    return f'this object needs the key "{key}" (it selects the kind of object)'


def explain(errors: list[dict[str, Any]], model: type[BaseModel]) -> list[dict[str, Any]]:
    """Return ``errors`` with messages that say what to do; everything else is kept."""
    explained = []
    for error in errors:
        kind = error.get("type")
        if kind == "extra_forbidden":
            error = {**error, "msg": _misplaced(error, model)}
        elif kind == "union_tag_invalid":
            error = {**error, "msg": _unknown_tag(error), "type": "unknown_tag"}
        elif kind == "union_tag_not_found":
            error = {**error, "msg": _missing_tag(error), "type": "missing_tag"}
        explained.append(error)
    return explained
