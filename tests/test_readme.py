"""The README documents every endpoint and every operation (it is the users' manual)."""

import json
import re
from pathlib import Path

from service.engine.op import op_names

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def test_every_endpoint_has_a_curl_example() -> None:
    document = json.loads((ROOT / "openapi" / "openapi.json").read_text())
    curled = set(re.findall(r"curl [^\n]*?localhost:8000(/[\w/-]+)", README))
    assert set(document["paths"]) <= curled, set(document["paths"]) - curled


def test_every_operation_is_in_the_op_table() -> None:
    listed = set(re.findall(r"^\| `(\w+)` \|", README, flags=re.MULTILINE))
    assert set(op_names()) <= listed, set(op_names()) - listed


def test_the_two_commands_exist() -> None:
    assert "bash scripts/serve.sh" in README and "bash scripts/test.sh" in README
    assert "bash scripts/test.sh" in (ROOT / ".ci" / "run").read_text()


def test_the_readme_points_only_inside_the_repository() -> None:
    # Every relative path the README names in backquotes exists in the repository.
    outside = re.findall(r"`(\.\./[^`]+)`", README)
    assert not outside, outside
    for path in set(re.findall(r"`((?:docs|deploy|scripts|tests|openapi)/[\w./-]+)`", README)):
        assert (ROOT / path).exists(), path
