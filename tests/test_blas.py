"""The service runs OpenBLAS's Haswell kernels on every x86-64 host with AVX2 and FMA.

The answers pinned in ``tests/fixtures`` (``tests/api/test_*_pinned.py``) are those kernels'; an
AVX-512 host left to OpenBLAS's own choice answers other last bits. These tests check the choice
itself, that it is made before NumPy loads OpenBLAS, and that it is reported.
"""

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from service.blas import (
    CORETYPE_VARIABLE,
    PINNED_CORETYPE,
    check_kernels,
    cpu_flags,
    loaded_kernels,
    pin_kernels,
)
from service.config import Settings
from service.main import create_app

ROOT = Path(__file__).resolve().parents[1]
HASWELL_CPU = "processor\t: 0\nvendor_id\t: GenuineIntel\nflags\t\t: fpu sse2 avx avx2 fma bmi2\n"


def test_cpu_flags_are_read_from_the_first_flags_line() -> None:
    text = HASWELL_CPU + "processor\t: 1\nflags\t\t: fpu\n"
    assert cpu_flags(text) == {"fpu", "sse2", "avx", "avx2", "fma", "bmi2"}
    assert cpu_flags("processor\t: 0\nFeatures\t: fp asimd\n") == frozenset()


def test_an_x86_64_cpu_with_avx2_and_fma_is_pinned_to_haswell() -> None:
    environ: dict[str, str] = {}
    assert pin_kernels(environ, "x86_64", HASWELL_CPU) == "Haswell"
    assert environ == {CORETYPE_VARIABLE: "Haswell"}
    environ = {}
    assert pin_kernels(environ, "AMD64", HASWELL_CPU) == "Haswell"


def test_the_operators_choice_is_kept() -> None:
    environ = {CORETYPE_VARIABLE: "SkylakeX"}
    assert pin_kernels(environ, "x86_64", HASWELL_CPU) == "SkylakeX"
    assert environ == {CORETYPE_VARIABLE: "SkylakeX"}


@pytest.mark.parametrize(
    ("machine", "cpuinfo"),
    [
        ("aarch64", "processor\t: 0\nFeatures\t: fp asimd\n"),
        ("x86_64", "processor\t: 0\nflags\t\t: fpu sse2 avx avx2\n"),  # no FMA: Haswell's SIGILL
        ("x86_64", "processor\t: 0\nflags\t\t: fpu sse2 avx fma\n"),  # no AVX2
        ("x86_64", ""),  # no /proc/cpuinfo (not Linux): nothing known
    ],
)
def test_nothing_is_pinned_where_the_kernels_could_not_run(machine: str, cpuinfo: str) -> None:
    environ: dict[str, str] = {}
    assert pin_kernels(environ, machine, cpuinfo) is None
    assert environ == {}


def _this_hosts_choice() -> str | None:
    # What the service asks for on this host, computed without touching the real environment.
    environ = {k: v for k, v in os.environ.items() if k != CORETYPE_VARIABLE}
    return pin_kernels(environ)


def test_this_process_runs_the_kernels_the_service_asked_for() -> None:
    # tests/conftest.py imports the service before NumPy, as a server process does.
    libraries = loaded_kernels()
    assert len(libraries) == 2  # NumPy's OpenBLAS and SciPy's
    if _this_hosts_choice() == PINNED_CORETYPE:
        assert os.environ[CORETYPE_VARIABLE] == PINNED_CORETYPE
        assert [lib["architecture"] for lib in libraries] == [PINNED_CORETYPE] * 2
    # Whatever was asked for, by the service or by an operator, is what runs.
    assert check_kernels() == []


def test_a_server_process_that_imports_the_service_first_is_pinned() -> None:
    code = (
        "import service, numpy, scipy.linalg, json, os;"
        "from service.blas import loaded_kernels;"
        "print(json.dumps([os.environ.get('OPENBLAS_CORETYPE'),"
        " [k['architecture'] for k in loaded_kernels()]]))"
    )
    env = {k: v for k, v in os.environ.items() if k != CORETYPE_VARIABLE}
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, check=True
    )
    asked, architectures = json.loads(result.stdout)
    assert len(architectures) == 2
    assert asked == _this_hosts_choice()
    if asked is not None:
        assert architectures == [asked, asked]


def test_other_kernels_than_asked_for_are_logged(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="service.blas"):
        wrong = check_kernels(expected="Prescott")
    assert wrong == loaded_kernels()
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == len(wrong)
    assert all("not Prescott" in m and "imported before the service" in m for m in messages)


def test_metadata_reports_the_kernels() -> None:
    client = TestClient(create_app(Settings()))
    body = client.get("/v1/metadata").json()
    assert body["blas"] == loaded_kernels()


def _in_process_scripts() -> list[Path]:
    # Scripts and benchmarks that import NumPy and run the service in their own process (the
    # capture scripts write the answers that tests/fixtures pins).
    found = []
    for path in sorted([*ROOT.glob("scripts/*.py"), *ROOT.glob("benchmarks/*.py")]):
        text = path.read_text(encoding="utf-8")
        numeric = "\nimport numpy" in text or "\nimport scipy" in text
        if numeric and ("\nfrom service" in text or "\nimport service" in text):
            found.append(path)
    return found


@pytest.mark.parametrize("path", _in_process_scripts(), ids=lambda path: path.name)
def test_a_script_that_runs_the_service_in_process_is_pinned(path: Path) -> None:
    # Its module-level imports, as `python <path>` runs them (its main() is not called). A script
    # that stops for an optional package (numba, torch, jax) is checked for what it did import.
    code = "\n".join(
        [
            "import json, runpy, sys",
            f"sys.argv = [{str(path)!r}]",
            f"sys.path.insert(0, {str(path.parent)!r})",
            "try:",
            f"    runpy.run_path({str(path)!r}, run_name='imported')",
            "except (ImportError, SystemExit):",
            "    pass",
            "from service.blas import loaded_kernels",
            "print(json.dumps([k['architecture'] for k in loaded_kernels()]))",
        ]
    )
    env = {k: v for k, v in os.environ.items() if k != CORETYPE_VARIABLE}
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, check=True
    )
    asked = _this_hosts_choice()
    if asked is not None:
        assert json.loads(result.stdout.splitlines()[-1]) == [asked, asked], path.name
