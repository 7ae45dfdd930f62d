"""The server process keeps its long-lived objects out of the garbage collector's full scans.

A full collection scans every object the collector tracks, holding the GIL throughout: after
start-up (modules, the app, its schemas: about 150,000 objects) one took about 100 ms, during
which no request was answered. Each fresh worker ran one soon after its first requests: the
single slow ``/healthz`` probe that decided ``tests/e2e/test_hostile.py``'s p99 (98-107 ms
collections at the 100-115 ms probes, four fresh servers out of four). Checked in a fresh
process that builds the app as ``python -m service`` does.
"""

import subprocess
import sys

import pytest

import service.__main__ as entry

SCRIPT = """
import gc
from service.main import serve_app
serve_app()
print(len(gc.get_objects()))
"""


def test_the_served_app_leaves_a_full_collection_little_to_scan() -> None:
    run = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=120, check=False
    )
    assert run.returncode == 0, run.stderr[-2000:]
    tracked = int(run.stdout.split()[-1])
    assert tracked < 10_000, tracked


def test_python_m_service_serves_that_app(monkeypatch: pytest.MonkeyPatch) -> None:
    started: list[tuple[tuple[object, ...], dict[str, object]]] = []
    monkeypatch.setattr(
        entry.uvicorn, "run", lambda *args, **kwargs: started.append((args, kwargs))
    )
    entry.main()
    [(args, kwargs)] = started
    assert args == ("service.main:serve_app",) and kwargs["factory"] is True
