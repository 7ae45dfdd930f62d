"""Every curl and Python example of the README runs against a live server and prints what it shows.

The format (``docs/readme-examples.md``): the ``json`` block after an example is its expected
stdout; ``...`` elides keys, values or trailing elements; numbers match exactly.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.readme_examples import Example, examples, for_server, json_values, mismatches

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = examples((ROOT / "README.md").read_text())
RUN = [example for example in EXAMPLES if example.marker is None or example.marker[0] != "skip"]
TIMEOUT_S = 60.0


def _run(example: Example, base_url: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    code = for_server(example.code, base_url)
    # python3 inside a bash example is this interpreter (numpy available), as in the venv.
    env = {
        **os.environ,
        "BASE": base_url,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    if example.kind == "python":
        script = tmp_path / "example.py"
        script.write_text(code)
        command = [sys.executable, str(script)]
    else:
        command = ["bash", "-euo", "pipefail", "-c", code]
    return subprocess.run(
        command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=TIMEOUT_S
    )


def test_the_readme_has_examples_of_both_kinds() -> None:
    kinds = {example.kind for example in EXAMPLES}
    assert kinds == {"bash", "python"}, kinds
    compared = [example for example in EXAMPLES if example.expected is not None]
    # Markers are for the few examples whose output cannot be shown (each says why); skipped
    # ones (not run at all) must stay rare.
    assert len(compared) >= 0.8 * len(EXAMPLES), [e.name for e in EXAMPLES if e.marker]
    assert len(EXAMPLES) - len(RUN) <= 3, [e.name for e in EXAMPLES if e not in RUN]


@pytest.mark.parametrize("example", RUN, ids=[example.name for example in RUN])
def test_readme_example(example: Example, live_server: str, tmp_path: Path) -> None:
    done = _run(example, live_server, tmp_path)
    where = f"README line {example.line}"
    assert done.returncode == 0, f"{where}: exit {done.returncode}\n{done.stderr[-2000:]}"
    actual = json_values(done.stdout)
    assert actual, f"{where}: printed nothing\n{done.stderr[-2000:]}"
    if example.expected is None:
        return
    shown = json_values(example.expected, placeholders=True)
    assert len(actual) == len(shown), (
        f"{where}: printed {len(actual)} JSON values, the README shows {len(shown)}:\n"
        f"{done.stdout[:2000]}"
    )
    problems = [
        problem
        for index, (got, want) in enumerate(zip(actual, shown, strict=True))
        for problem in mismatches(got, want, f"/{index}" if len(shown) > 1 else "")
    ]
    assert not problems, f"{where}:\n" + "\n".join(problems) + f"\nprinted:\n{done.stdout[:2000]}"
