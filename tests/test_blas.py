"""The service runs OpenBLAS's Haswell kernels, on one thread, on every host.

The answers pinned in ``tests/fixtures`` (``tests/api/test_*_pinned.py``) are those kernels'; an
AVX-512 host left to OpenBLAS's own choice answers other last bits, and so does a host whose
OpenBLAS splits long dot products among its cores. These tests check the choices themselves, that
they are made before NumPy loads OpenBLAS, that they are reported, and that an answer that depends
on OpenBLAS's thread count is the same whatever the host's cores.
"""

import json
import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from service.blas import (
    CORETYPE_VARIABLE,
    PINNED_CORETYPE,
    THREADS_VARIABLE,
    check_kernels,
    check_threads,
    cpu_flags,
    loaded_kernels,
    pin_kernels,
    pin_threads,
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


def _run(code: str, env: dict[str, str], cpus: set[int] | None = None) -> Any:
    # cpus: the CPUs the child may run on, set before it loads OpenBLAS, which counts a host's
    # cores as the CPUs it may run on.
    if cpus is not None:
        code = f"import os; os.sched_setaffinity(0, {sorted(cpus)});" + code
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, check=True
    )
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_a_server_process_that_imports_the_service_first_is_pinned() -> None:
    code = (
        "import service, numpy, scipy.linalg, json, os;"
        "from service.blas import loaded_kernels;"
        "print(json.dumps([os.environ.get('OPENBLAS_CORETYPE'),"
        " [k['architecture'] for k in loaded_kernels()]]))"
    )
    env = {k: v for k, v in os.environ.items() if k != CORETYPE_VARIABLE}
    asked, architectures = _run(code, env)
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


def test_one_thread_is_asked_for_unless_the_operator_chose() -> None:
    environ: dict[str, str] = {}
    assert pin_threads(environ) == "1"
    assert environ == {THREADS_VARIABLE: "1"}
    environ = {THREADS_VARIABLE: ""}  # set but empty: OpenBLAS would choose, so the service does
    assert pin_threads(environ) == "1"
    assert environ == {THREADS_VARIABLE: "1"}
    environ = {THREADS_VARIABLE: "4"}
    assert pin_threads(environ) == "4"
    assert environ == {THREADS_VARIABLE: "4"}


def test_other_thread_variables_do_not_count_as_the_operators_choice() -> None:
    # OpenBLAS reads OPENBLAS_NUM_THREADS before these two, so the service's 1 decides.
    environ = {"OMP_NUM_THREADS": "8", "GOTO_NUM_THREADS": "8"}
    assert pin_threads(environ) == "1"
    assert environ[THREADS_VARIABLE] == "1"


def test_this_process_runs_the_threads_the_service_asked_for() -> None:
    # tests/conftest.py imports the service before NumPy, as a server process does; the count is
    # the service's 1 or an operator's.
    if os.environ[THREADS_VARIABLE] == "1":
        assert [lib["threads"] for lib in loaded_kernels()] == [1, 1]
    assert check_threads() == []


def _without_blas_settings() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in (CORETYPE_VARIABLE, THREADS_VARIABLE)}


REPORT = (
    "import json, os; from service.blas import loaded_kernels;"
    "print(json.dumps([os.environ.get('OPENBLAS_NUM_THREADS'),"
    " [k['threads'] for k in loaded_kernels()]]))"
)


def test_a_server_process_runs_one_thread_or_the_operators_count() -> None:
    env = _without_blas_settings()
    asked, threads = _run("import service, numpy, scipy.linalg;" + REPORT, env)
    assert (asked, threads) == ("1", [1, 1])
    cores = len(os.sched_getaffinity(0))
    asked, threads = _run("import service;" + REPORT, env | {THREADS_VARIABLE: "2"})
    assert (asked, threads) == ("2", [min(2, cores)] * 2)  # never more threads than cores


def test_a_process_that_loaded_numpy_first_is_warned_about_its_threads() -> None:
    code = (
        "import numpy, scipy.linalg, service, json, logging;"
        "from service.blas import check_threads;"
        "logging.basicConfig();"
        "print(json.dumps([k['threads'] for k in check_threads()]))"
    )
    wrong = _run(code, _without_blas_settings())
    cores = len(os.sched_getaffinity(0))
    # OpenBLAS took the host's cores before the service asked for one thread.
    assert wrong == ([cores, cores] if cores > 1 else [])


def test_a_thread_count_above_the_one_asked_for_is_logged(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    library = {"library": "libopenblas.so", "version": "0", "architecture": "Haswell"}
    libraries = [library | {"threads": 1}, library | {"threads": 4}]
    monkeypatch.setattr("service.blas.loaded_kernels", lambda: libraries)
    with caplog.at_level(logging.WARNING, logger="service.blas"):
        assert check_threads("2") == [libraries[1]]
        assert check_threads("8") == []
        assert check_threads("0") == [] and check_threads("many") == []  # OpenBLAS's own choice
    messages = [r.getMessage() for r in caplog.records]
    assert messages == [
        "OpenBLAS libopenblas.so runs 4 threads, not 2 (was NumPy imported before the service?): "
        "last bits of answers may differ from other hosts', and idle threads spin"
    ]


# A descent of 20,001 values: the norms of its gradients are dot products that OpenBLAS splits
# among its threads from 10,001 values on, each count summing in another order.
DESCENT = (
    "import json, sys, numpy as np;"
    "from fastapi.testclient import TestClient;"
    "from service.config import Settings; from service.main import create_app;"
    "x = np.linspace(-1.0, 1.0, 20_001).tolist();"
    "body = {'function': 'sum(square(sin(x) - 0.5))', 'inputs': {'x': {'data': x}},"
    " 'learning_rate': 0.1, 'max_steps': 3, 'record_every': 1};"
    "answer = TestClient(create_app(Settings())).post('/v1/gradient-descent', json=body);"
    "from service.blas import loaded_kernels;"
    "print(json.dumps([answer.status_code, answer.text, [k['threads'] for k in loaded_kernels()]]))"
)


@pytest.mark.slow
def test_an_answer_that_depends_on_the_thread_count_is_the_same_on_every_host() -> None:
    env = _without_blas_settings()
    # The service's own choice, on this host's cores and on a host of one core, and an operator
    # who asks for the one thread explicitly.
    answers = [
        _run("import service;" + DESCENT, env),
        _run("import service;" + DESCENT, env, cpus={min(os.sched_getaffinity(0))}),
        _run("import service;" + DESCENT, env | {THREADS_VARIABLE: "1"}),
    ]
    assert answers[0][0] == 200, answers[0][1]
    assert answers[1:] == answers[:1] * 2
    assert answers[0][2] == [1, 1]
    # What OpenBLAS left to itself runs on a four-core host (threadpoolctl raises the count past
    # this host's cores, as the cores of that host would), the kernels being the same: other bits,
    # so the equality above is not that of a request BLAS threads cannot change.
    four = (
        "import service, numpy, scipy.linalg; from threadpoolctl import threadpool_limits;"
        "threadpool_limits(4);" + DESCENT
    )
    status, text, threads = _run(four, env)
    assert (status, threads) == (200, [4, 4])
    assert text != answers[0][1]


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
    architectures = _run(code, {k: v for k, v in os.environ.items() if k != CORETYPE_VARIABLE})
    asked = _this_hosts_choice()
    if asked is not None:
        assert architectures == [asked, asked], path.name
