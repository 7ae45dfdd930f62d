"""The client installs alone (`pip install ./client`) in a fresh virtualenv and works there.

Nothing of the service comes along (no service, FastAPI, pydantic, uvicorn, nor SciPy, which is
optional); the client's own tests pass against the installed copy; the `jacobian` console script
talks to a live server, and without SciPy COO Jacobians are the light ``CooJacobian``.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

from tests.client import raw
from tests.e2e.live import LiveServer

ROOT = Path(__file__).resolve().parents[2]
CLIENT = ROOT / "client"
PROBE = """
import importlib.util, json, sys
import jacobian_client
from jacobian_client import Client
absent = [m for m in ("service", "fastapi", "pydantic", "uvicorn", "scipy")
          if importlib.util.find_spec(m) is None]
J = Client(sys.argv[1]).jacobian(["tanh"], x=[0.5, 1.0], format="coo")
print(json.dumps({"file": jacobian_client.__file__, "absent": absent, "type": type(J).__name__,
                  "dense": J.toarray().tolist(), "modules": sorted(m for m in sys.modules
                                                               if m.split(".")[0] == "service")}))
"""


def run(*command: str | Path, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [str(c) for c in command],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, f"{command}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done


@pytest.mark.slow
def test_the_client_installs_alone_and_works(tmp_path: Path, server: LiveServer) -> None:
    venv = tmp_path / "venv"
    # No PYTHONPATH: the installed copy must be what runs, not the source tree.
    env = {k: v for k, v in os.environ.items() if k not in {"PYTHONPATH", "VIRTUAL_ENV"}}
    run(sys.executable, "-m", "venv", venv, cwd=tmp_path, env=env)
    python, script = venv / "bin" / "python", venv / "bin" / "jacobian"
    run(python, "-m", "pip", "install", "--quiet", CLIENT, "pytest", cwd=tmp_path, env=env)

    probe = json.loads(run(python, "-c", PROBE, server.base_url, cwd=tmp_path, env=env).stdout)
    assert Path(probe["file"]).resolve().is_relative_to(venv.resolve()), probe["file"]
    assert probe["absent"] == ["service", "fastapi", "pydantic", "uvicorn", "scipy"]
    assert probe["type"] == "CooJacobian" and probe["modules"] == []
    expected = 1.0 - np.tanh([0.5, 1.0]) ** 2  # d tanh / dx on the diagonal
    np.testing.assert_allclose(np.diag(probe["dense"]), expected, rtol=1e-15)

    # The client's own tests, against the installed package (their directory has no package).
    run(
        python,
        "-m",
        "pytest",
        "-p",
        "no:cacheprovider",
        "-q",
        "-c",
        CLIENT / "pyproject.toml",
        "--rootdir",
        CLIENT,
        CLIENT / "tests",
        cwd=tmp_path,
        env=env,
    )

    # The console script, without SciPy, writes a .npz that SciPy loads.
    run(
        script,
        "--url",
        server.base_url,
        "jacobian",
        '["tanh", "sum"]',
        "-i",
        "x=[0.5, 1.0]",
        "--format",
        "coo",
        "-o",
        "J.npz",
        cwd=tmp_path,
        env=env,
    )
    answer = raw.post(
        server.base_url,
        "/v1/jacobian",
        {
            "x": {"data": [0.5, 1.0]},
            "function": [{"op": "tanh"}, {"op": "sum"}],
            "format": "coo",
            "encoding": "base64",
        },
    )
    loaded = sp.load_npz(tmp_path / "J.npz")
    expected_coo = raw.coo(answer["jacobian"])
    assert loaded.row.tolist() == expected_coo["row"].tolist()
    raw.same_bits(loaded.data, expected_coo["data"])
