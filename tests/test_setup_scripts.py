"""The set-up scripts: system-deps.sh picks a Docker CLI package, serve.sh and test.sh differ.

system-deps.sh runs against stub ``apt-get``/``apt-cache`` commands on a PATH without docker, so
the choice it makes (docker-cli where the release has it, else docker.io) is observed without
installing anything.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SYSTEM_DEPS = ROOT / "scripts" / "system-deps.sh"


def _stub(directory: Path, name: str, body: str) -> None:
    path = directory / name
    path.write_text(f"#!/bin/bash\n{body}\n")
    path.chmod(0o755)


def _run_system_deps(tmp_path: Path, candidates: dict[str, str]) -> list[str]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "apt.log"
    _stub(bin_dir, "apt-get", f'echo "apt-get $*" >> {log}')
    policy = "\n".join(
        f'[[ "$2" == "{name}" ]] && '
        f'printf "{name}:\\n  Installed: (none)\\n  Candidate: {version}\\n"'
        for name, version in candidates.items()
    )
    _stub(bin_dir, "apt-cache", policy + "\nexit 0")
    for present in ("nginx", "chromium", "chromedriver"):
        _stub(bin_dir, present, "exit 0")
    _stub(bin_dir, "id", "echo 0")  # root: no sudo
    env = {**os.environ, "PATH": f"{bin_dir}:/usr/bin:/bin"}
    assert subprocess.run(["bash", "-c", "command -v docker"], env=env,
                          capture_output=True).returncode != 0  # fmt: skip
    done = subprocess.run(["bash", str(SYSTEM_DEPS)], env=env, capture_output=True, text=True,
                          timeout=60)  # fmt: skip
    assert done.returncode == 0, done.stderr
    return log.read_text().splitlines()


@pytest.mark.parametrize(
    ("candidates", "package"),
    [
        ({"docker-cli": "26.1.5+dfsg1-9", "docker.io": "26.1.5+dfsg1-9"}, "docker-cli"),
        ({"docker.io": "20.10.24+dfsg1-1+deb12u1+b6"}, "docker.io"),
    ],
)
def test_a_missing_docker_cli_is_installed_from_a_package(
    tmp_path: Path, candidates: dict[str, str], package: str
) -> None:
    calls = _run_system_deps(tmp_path, candidates)
    assert calls[0].startswith("apt-get update")
    assert calls[1].split()[-1] == package and "--no-install-recommends" in calls[1]


def test_no_docker_package_is_an_error_that_says_so(tmp_path: Path) -> None:
    with pytest.raises(AssertionError, match="no docker-cli or docker.io package"):
        _run_system_deps(tmp_path, {})


def test_serving_and_testing_use_separate_environments() -> None:
    serve = (ROOT / "scripts" / "serve.sh").read_text()
    test = (ROOT / "scripts" / "test.sh").read_text()
    # serve.sh installs non-editable into its own venv; test.sh keeps .venv editable: neither
    # flips the other's install.
    assert ".venv-serve" in serve and ".venv/" not in serve.replace(".venv-serve", "")
    assert "-e '.[dev]'" in test and ".venv-serve" not in test
    assert "==>" in serve and "--quiet" not in serve  # progress is shown


def test_ci_runs_a_derandomized_profile_then_random_examples_with_a_printed_seed() -> None:
    from hypothesis import settings

    assert settings.get_profile("ci").derandomize is True
    random = settings.get_profile("ci-random")
    assert random.derandomize is False and 0 < random.max_examples <= 20
    run = (ROOT / ".ci" / "run").read_text()
    assert "HYPOTHESIS_PROFILE=ci-random" in run and '--hypothesis-seed="$seed"' in run
    assert 'echo "==> property tests with random examples' in run and "$seed" in run
    assert "-m hypothesis" in run


def test_the_random_phase_runs_and_prints_its_seed(tmp_path: Path) -> None:
    # The exact command of .ci/run on one small module, with a fixed seed.
    env = {**os.environ, "HYPOTHESIS_PROFILE": "ci-random"}
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-m", "hypothesis",
         "--hypothesis-seed=12345", "tests/codec/test_sparse.py"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-2000:]
    assert "1 passed" in done.stdout
