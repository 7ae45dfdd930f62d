"""The README's client section runs as shown: the quick start and the command-line examples."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from tests.e2e.live import LiveServer

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()
SECTION = README[README.index("## Python client and command line") :]
SECTION = SECTION[: SECTION.index("\n## ", 1)]
DOCUMENTED_URL = "http://127.0.0.1:8000"


def blocks(tag: str) -> list[str]:
    return re.findall(rf"```{tag}\n(.*?)```", SECTION, flags=re.DOTALL)


def close(actual: Any, expected: Any) -> bool:
    if isinstance(expected, list):
        return len(actual) == len(expected) and all(map(close, actual, expected))
    if isinstance(expected, float | int) and not isinstance(expected, bool):
        return abs(actual - expected) <= 1e-12 * max(1.0, abs(expected))
    return bool(actual == expected)


def test_the_quick_start_prints_what_the_readme_shows(server: LiveServer, tmp_path: Path) -> None:
    (code,), (shown,) = blocks("python"), blocks("json")
    assert len(code.strip().splitlines()) <= 6  # imports, a client, a call, a print
    script = tmp_path / "quick_start.py"
    script.write_text(code.replace(DOCUMENTED_URL, server.base_url))
    run = subprocess.run(
        [sys.executable, str(script)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=tmp_path,
    )
    assert run.returncode == 0, run.stderr
    assert close(json.loads(run.stdout), json.loads(shown)), (run.stdout, shown)


def test_the_command_line_examples_run(server: LiveServer, tmp_path: Path) -> None:
    commands = next(b for b in blocks("sh") if "jacobian health" in b)
    rng = np.random.default_rng(3)
    np.save(tmp_path / "x.npy", rng.normal(size=4))
    np.save(tmp_path / "img.npy", rng.normal(size=(3, 8, 8)))
    np.save(tmp_path / "k.npy", rng.normal(size=(3, 3, 3)))
    np.save(tmp_path / "x0.npy", np.array([3.0, 0.0]))
    # `jacobian` is the console script of an installed client; here, its module.
    shim = f'jacobian() {{ "{sys.executable}" -m jacobian_client "$@"; }}\n'
    script = shim + commands.replace(DOCUMENTED_URL, server.base_url)
    run = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=tmp_path,
        env=dict(os.environ),
    )
    assert run.returncode == 0, run.stderr
    assert '"status": "ok"' in run.stdout and "\n14.0\n" in run.stdout
    x = np.load(tmp_path / "x.npy")
    gradient = sp.load_npz(tmp_path / "J.npz").toarray().ravel()
    np.testing.assert_allclose(gradient, 1.0 - np.tanh(x) ** 2, rtol=1e-14)
    assert sp.load_npz(tmp_path / "Jx.npz").shape == (3 * 8 * 8, 6 * 6)
    # f(x) = |x - (1, -2)|^2 with step 0.25 halves the distance each step.
    np.testing.assert_allclose(np.load(tmp_path / "x_final.npy"), [1.0, -2.0], atol=1e-12)
    # The same function under the bound x >= -1.5: the minimum moves to (1, -1.5).
    np.testing.assert_allclose(np.load(tmp_path / "x_min.npy"), [1.0, -1.5], atol=1e-8)
