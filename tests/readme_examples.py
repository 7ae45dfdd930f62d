"""Find the README's examples and compare their output with the output the README shows.

The format is described in ``docs/readme-examples.md``: a ``bash``/``sh`` block containing
``curl`` or a ``python`` block is an example; the next ``json`` block is its expected stdout,
where ``...`` stands for "other keys" (object member), "any value" (after a key) or "more
elements" (last array element). Numbers match exactly: the README shows each float64 as
Python's shortest repr, which reads back to the same bits.
No pytest here: the parser and the matcher have their own unit tests.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

MORE_KEYS = "\u0000more-keys"
ANY_VALUE = "\u0000any-value"
MORE_ITEMS = "\u0000more-items"

FENCE = re.compile(r"^(`{3,})\s*([\w+-]*)\s*$")
MARKER = re.compile(r"^<!--\s*example:\s*(no-output|skip)\s*\((.+)\)\s*-->\s*$")
ADDRESS = re.compile(r"(?:https?://)?(?:localhost|127\.0\.0\.1):8000")


@dataclass(frozen=True)
class Block:
    """One fenced block of a Markdown file: tag, text, fence lines (1-based) and marker."""

    lang: str
    text: str
    line: int
    end: int
    marker: tuple[str, str] | None


@dataclass(frozen=True)
class Example:
    """A runnable block and what it must print (``expected`` is None when not compared)."""

    kind: str  # "bash" or "python"
    code: str
    line: int
    expected: str | None
    marker: tuple[str, str] | None

    @property
    def name(self) -> str:
        """A short test id: line number and the first line of code."""
        first = next((ln.strip() for ln in self.code.splitlines() if ln.strip()), "")
        return f"L{self.line}:{first[:50]}"


class FormatError(ValueError):
    """The README breaks the example format (e.g. a curl block with no shown output)."""


def fenced_blocks(markdown: str) -> list[Block]:
    """Return the fenced blocks of ``markdown`` in order.

    A marker comment counts for a block when it is the last non-blank line before the fence.
    """
    blocks: list[Block] = []
    lines = markdown.splitlines()
    i = 0
    last_text = ""
    while i < len(lines):
        opening = FENCE.match(lines[i])
        if not opening:
            if lines[i].strip():
                last_text = lines[i].strip()
            i += 1
            continue
        fence, lang = opening.group(1), opening.group(2).lower()
        body: list[str] = []
        j = i + 1
        while j < len(lines) and lines[j].strip() != fence:
            body.append(lines[j])
            j += 1
        found = MARKER.match(last_text)
        marker = (found.group(1), found.group(2).strip()) if found else None
        blocks.append(Block(lang, "\n".join(body), i + 1, j + 1, marker))
        last_text = ""
        i = j + 1
    return blocks


def _is_example(block: Block) -> str | None:
    if block.lang in ("bash", "sh", "shell") and re.search(r"\bcurl\s", block.text):
        return "bash"
    if block.lang in ("python", "py"):
        return "python"
    return None


def examples(markdown: str) -> list[Example]:
    """Return every example of ``markdown`` with its expected output.

    Raises
    ------
    FormatError
        An example that is neither followed by a ``json`` block nor marked.
    """
    blocks = fenced_blocks(markdown)
    found: list[Example] = []
    for index, block in enumerate(blocks):
        kind = _is_example(block)
        if kind is None:
            continue
        following = blocks[index + 1] if index + 1 < len(blocks) else None
        # The shown output must follow directly: nothing but blank lines in between.
        expected = None
        if following is not None and following.lang == "json":
            gap = markdown.splitlines()[block.end : following.line - 1]
            if not any(line.strip() for line in gap):
                expected = following.text
        if expected is None and block.marker is None:
            raise FormatError(
                f"README line {block.line}: a {kind} example needs a ```json block with its "
                "output right after it, or a marker <!-- example: no-output (reason) --> / "
                "<!-- example: skip (reason) --> (see docs/readme-examples.md)"
            )
        found.append(Example(kind, block.text, block.line, expected, block.marker))
    return found


def for_server(code: str, base_url: str) -> str:
    """Point every ``localhost:8000`` address of ``code`` at ``base_url``."""
    return ADDRESS.sub(base_url, code)


def _with_ellipses(text: str) -> str:
    """Rewrite the ``...`` placeholders outside strings into sentinel JSON members/values."""
    out: list[str] = []
    stack: list[str] = []
    in_string = escaped = False
    previous = ""  # last significant character outside strings
    i = 0
    while i < len(text):
        char = text[i]
        if in_string:
            out.append(char)
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
                previous = '"'
            i += 1
            continue
        if text.startswith("...", i) or text.startswith("\u2026", i):
            width = 3 if text.startswith("...", i) else 1
            if stack and stack[-1] == "{" and previous in "{,":
                out.append(json.dumps(MORE_KEYS) + ": null")
            elif stack and stack[-1] == "[" and previous in "[,":
                out.append(json.dumps(MORE_ITEMS))
            else:
                out.append(json.dumps(ANY_VALUE))
            previous = "v"
            i += width
            continue
        if char == '"':
            in_string = True
        elif char in "{[":
            stack.append(char)
        elif char in "}]" and stack:
            stack.pop()
        if not char.isspace():
            previous = char
        out.append(char)
        i += 1
    return "".join(out)


def json_values(text: str, *, placeholders: bool = False) -> list[Any]:
    """Parse a sequence of JSON values separated by whitespace (one document, NDJSON, ...).

    With ``placeholders`` the ``...`` of an expected output are accepted.
    """
    if placeholders:
        text = _with_ellipses(text)
    decoder = json.JSONDecoder()
    values: list[Any] = []
    position = 0
    while True:
        while position < len(text) and text[position].isspace():
            position += 1
        if position == len(text):
            return values
        value, position = decoder.raw_decode(text, position)
        values.append(value)


def mismatches(actual: Any, expected: Any, path: str = "") -> list[str]:
    """Return where ``actual`` differs from the shown ``expected`` (empty when they match).

    Paths are JSON Pointers into the value.
    """
    where = path or "/"
    if expected == ANY_VALUE:
        return []
    if isinstance(expected, dict):
        if not isinstance(actual, dict):
            return [f"{where}: expected an object, got {json.dumps(actual)[:80]}"]
        problems: list[str] = []
        shown = {key: value for key, value in expected.items() if key != MORE_KEYS}
        for key, value in shown.items():
            if key not in actual:
                problems.append(f"{where}: missing key {key!r}")
            else:
                problems += mismatches(actual[key], value, f"{path}/{key}")
        if MORE_KEYS not in expected:
            extra = sorted(set(actual) - set(shown))
            if extra:
                problems.append(f"{where}: keys not shown {extra} (add them, or '...')")
        return problems
    if isinstance(expected, list):
        if not isinstance(actual, list):
            return [f"{where}: expected an array, got {json.dumps(actual)[:80]}"]
        open_ended = bool(expected) and expected[-1] == MORE_ITEMS
        items = expected[:-1] if open_ended else expected
        if len(actual) < len(items) or (not open_ended and len(actual) != len(items)):
            return [f"{where}: {len(actual)} elements, shown {len(items)}"]
        problems = []
        for index, value in enumerate(items):
            problems += mismatches(actual[index], value, f"{path}/{index}")
        return problems
    if isinstance(expected, bool) or expected is None or isinstance(actual, bool):
        same = actual is expected or (type(actual) is type(expected) and actual == expected)
        return [] if same else [f"{where}: {json.dumps(actual)} != shown {json.dumps(expected)}"]
    if isinstance(expected, int | float):
        if not isinstance(actual, int | float):
            return [f"{where}: {json.dumps(actual)[:80]} is not the shown number {expected}"]
        # Exact: a tolerance let a README go on showing a last digit the server no longer
        # answered (0.9199999999999998 for 0.9199999999999999, session 6).
        if actual == expected:
            return []
        return [f"{where}: {actual!r} != shown {expected!r}"]
    if actual != expected:
        return [f"{where}: {json.dumps(actual)[:80]} != shown {json.dumps(expected)[:80]}"]
    return []


CURL_BODY = re.compile(
    r"curl\b[^|]*?(?:localhost|127\.0\.0\.1):8000(/v\d+/[\w/-]+)[^|]*?\s-d\s+'([^']*)'", re.S
)


def request_bodies(markdown: str) -> dict[str, Any]:
    """Return the first JSON body the README's curl examples send to each path.

    Only ``curl ... -d '<json>'`` with the body written out counts (not ``-d @-``).
    """
    bodies: dict[str, Any] = {}
    for example in examples(markdown):
        if example.kind != "bash":
            continue
        for path, body in CURL_BODY.findall(example.code):
            bodies.setdefault(path, json.loads(body))
    return dict(sorted(bodies.items()))
