"""The short CI version of the load test (issue 6, item 5): 8 users for 10 s, zero failures.

Runs ``benchmarks/load/locustfile.py`` through ``benchmarks/load/run.py``'s helpers against the
session's live server (``conftest.py``: ``python -m service``, 1 worker). Every request's body is
checked by the locustfile; here the CSV must show zero failures and requests of every task. The
full run (32 users, 60 s, 2 workers) is ``python benchmarks/load/run.py``; its table is in the
README.

locust runs in a subprocess: importing it here would monkey-patch the test process with gevent.
"""

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
TASKS = {
    "vec (8,16,16) b64",
    "cross-correlation (3,32,32)k3 coo b64",
    "jacobian [xcorr2d, tanh, sum] coo",
    "gradient-descent 100 steps",
}
USERS = 8
RUN_TIME_S = 10


def _load_runner() -> ModuleType:
    path = ROOT / "benchmarks" / "load" / "run.py"
    spec = importlib.util.spec_from_file_location("load_run", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the file runs
    spec.loader.exec_module(module)
    return module


def test_mixed_load_has_no_failures(live_server: str, tmp_path: Path) -> None:
    # locust is in the dev extra: its absence is a broken set-up, not a reason to skip.
    assert importlib.util.find_spec("locust") is not None, "pip install -e '.[dev]' (locust)"
    runner = _load_runner()
    prefix = tmp_path / "locust"
    done = runner.run_locust(live_server, USERS, RUN_TIME_S, prefix)
    assert Path(f"{prefix}_stats.csv").exists(), done.stderr[-4000:]
    rows = {row.name: row for row in runner.read_stats(prefix)}
    print("\n" + runner.markdown(list(rows.values())))
    failures = runner.read_failures(prefix)
    assert failures == [], failures[:5]
    assert done.returncode == 0, done.stderr[-4000:]
    assert set(rows) == TASKS | {"Aggregated"}
    for name in TASKS:
        assert rows[name].requests > 0, name
        assert rows[name].failures == 0, name
    assert rows["Aggregated"].failures == 0
