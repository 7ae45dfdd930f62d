"""The README harness's parser and matcher can fail: each rule of the format has a case."""

import pytest

from tests.readme_examples import (
    FormatError,
    examples,
    for_server,
    json_values,
    mismatches,
)

FENCE = "```"


def _md(*parts: str) -> str:
    return "\n".join(parts) + "\n"


def test_a_curl_block_and_its_json_block_make_one_example() -> None:
    text = _md(
        "Intro",
        f"{FENCE}bash",
        "curl -s localhost:8000/healthz",
        FENCE,
        "",
        f"{FENCE}json",
        '{"status": "ok"}',
        FENCE,
        f"{FENCE}sh",
        "pip install .",
        FENCE,  # no curl: not an example
    )
    [example] = examples(text)
    assert (example.kind, example.code, example.expected) == (
        "bash",
        "curl -s localhost:8000/healthz",
        '{"status": "ok"}',
    )


def test_an_example_without_shown_output_or_marker_is_refused() -> None:
    with pytest.raises(FormatError, match="line 1"):
        examples(_md(f"{FENCE}python", "print(1)", FENCE))
    # Prose between the example and the json block breaks the pairing too.
    with pytest.raises(FormatError):
        examples(_md(f"{FENCE}bash", "curl x", FENCE, "text", f"{FENCE}json", "1", FENCE))


def test_markers_need_a_reason_and_are_kept() -> None:
    [example] = examples(
        _md("<!-- example: no-output (43 MB of base64) -->", f"{FENCE}bash", "curl y", FENCE)
    )
    assert example.marker == ("no-output", "43 MB of base64") and example.expected is None
    with pytest.raises(FormatError):
        examples(_md("<!-- example: skip -->", f"{FENCE}bash", "curl y", FENCE))


def test_addresses_are_rewritten() -> None:
    code = "curl localhost:8000/a http://127.0.0.1:8000/b http://localhost:8000/c localhost:80001"
    assert for_server(code, "http://h:1") == (
        "curl http://h:1/a http://h:1/b http://h:1/c http://h:11"
    )


def test_numbers_match_exactly() -> None:
    assert mismatches({"a": 1.0}, {"a": 1}) == [] and mismatches(3e6, 3000000) == []
    assert mismatches({"a": 1.0 + 2**-52}, {"a": 1}) != []  # one unit in the last place
    assert mismatches(0.9199999999999999, 0.9199999999999998) != []
    assert mismatches(True, 1) != [] and mismatches(1, True) != []
    assert mismatches("1", 1) != [] and mismatches(None, 0) != []


def test_objects_need_every_shown_key_and_no_other_unless_elided() -> None:
    shown = json_values('{"a": 1, "b": ...}', placeholders=True)[0]
    assert mismatches({"a": 1, "b": [1, 2]}, shown) == []
    assert mismatches({"a": 1}, shown) == ["/: missing key 'b'"]
    assert "keys not shown ['c']" in mismatches({"a": 1, "b": 0, "c": 2}, shown)[0]
    more = json_values('{"a": {"x": 1, ...}, ...}', placeholders=True)[0]
    assert mismatches({"a": {"x": 1, "y": 2}, "z": 3}, more) == []
    assert mismatches({"a": {"x": 2}}, more)[0].startswith("/a/x: 2 != shown 1")


def test_arrays_match_elementwise_with_an_optional_open_end() -> None:
    shown = json_values("[1, 2, ...]", placeholders=True)[0]
    assert mismatches([1, 2, 3, 4], shown) == [] and mismatches([1, 2], shown) == []
    assert mismatches([1], shown) != [] and mismatches([1, 3, 3], shown) != []
    assert mismatches([1, 2, 3], [1, 2]) != []


def test_ellipses_inside_strings_are_text_and_sequences_parse() -> None:
    assert json_values('{"s": "a...b"}\n[1]\n2', placeholders=True) == [{"s": "a...b"}, [1], 2]
