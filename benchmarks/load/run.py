"""Bounded load test: start the service on 127.0.0.1, run locust headless, print a Markdown table.

Run: ``.venv/bin/python benchmarks/load/run.py [--users 32] [--run-time 60] [--workers 2]``
(any cwd; needs ``pip install locust``). ``--host http://127.0.0.1:PORT`` loads a server that is
already running instead of starting one.

What it does:

1. ``python -m service`` with ``SERVICE_WORKERS=--workers`` on a free loopback port (the other
   settings at their defaults), awaited on ``/healthz``;
2. ``locust -f benchmarks/load/locustfile.py --headless -u USERS -r USERS --run-time Ns
   --only-summary --csv PREFIX --exit-code-on-error 1`` in a subprocess, killed if it runs
   ``--run-time`` + 60 s;
3. the ``PREFIX_stats.csv`` rows as a Markdown table (endpoint, requests, failures, req/s,
   p50 ms, p99 ms; locust rounds percentiles above 100 ms to two significant digits), the
   failures if any, and the CPU seconds used by the server processes, by locust and by the rest
   of the machine (``/proc/stat``: other jobs on the machine make the numbers noisy);
4. the server is stopped by its PID (SIGTERM, then SIGKILL of it and its workers) in ``finally``.

The exit status is locust's: 1 when any request failed (a non-200 status or a body that the
locustfile's checks refused). Server and load generator share the machine's cores, so the
numbers compare runs on one machine only.
"""

from __future__ import annotations

import argparse
import csv
import os
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LOCUSTFILE = Path(__file__).resolve().parent / "locustfile.py"
sys.path.insert(0, str(ROOT))

from tests.e2e.live import serve  # noqa: E402

# Slack beyond --run-time for locust's start, spawning, stop and CSV writing.
LOCUST_SLACK_S = 60
MAX_FAILURES_SHOWN = 10


@dataclass(frozen=True)
class StatsRow:
    """One row of locust's ``_stats.csv``."""

    name: str
    requests: int
    failures: int
    rps: float
    p50_ms: float
    p99_ms: float


def run_locust(
    host: str, users: int, run_time_s: int, csv_prefix: Path, spawn_rate: int | None = None
) -> subprocess.CompletedProcess[str]:
    """Run the locustfile headless against ``host``; return the finished process (not raised)."""
    command = [
        sys.executable, "-m", "locust",
        "-f", str(LOCUSTFILE),
        "--headless",
        "-u", str(users),
        "-r", str(spawn_rate or users),
        "--run-time", f"{run_time_s}s",
        "--stop-timeout", "10",
        "--host", host,
        "--only-summary",
        "--csv", str(csv_prefix),
        "--exit-code-on-error", "1",
        "--loglevel", "WARNING",
    ]  # fmt: skip
    return subprocess.run(
        command,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=run_time_s + LOCUST_SLACK_S,
        check=False,
    )


def _number(value: str) -> float:
    return float(value) if value not in ("", "N/A") else float("nan")


def read_stats(csv_prefix: Path) -> list[StatsRow]:
    """Parse ``<csv_prefix>_stats.csv``: one row per request name, then ``Aggregated``."""
    path = Path(f"{csv_prefix}_stats.csv")
    with path.open(newline="") as handle:
        return [
            StatsRow(
                name=row["Name"],
                requests=int(row["Request Count"]),
                failures=int(row["Failure Count"]),
                rps=_number(row["Requests/s"]),
                p50_ms=_number(row["50%"]),
                p99_ms=_number(row["99%"]),
            )
            for row in csv.DictReader(handle)
        ]


def read_failures(csv_prefix: Path) -> list[dict[str, str]]:
    """Parse ``<csv_prefix>_failures.csv`` (method, name, error, occurrences)."""
    path = Path(f"{csv_prefix}_failures.csv")
    if not path.exists():
        return []
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def markdown(rows: list[StatsRow]) -> str:
    """Render the stats rows as a Markdown table."""
    lines = [
        "| endpoint | requests | failures | req/s | p50 ms | p99 ms |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        name = "**all**" if row.name == "Aggregated" else f"`{row.name}`"
        lines.append(
            f"| {name} | {row.requests} | {row.failures} | {row.rps:.1f} | "
            f"{row.p50_ms:.0f} | {row.p99_ms:.0f} |"
        )
    return "\n".join(lines)


def machine_busy_seconds() -> float:
    """Return CPU seconds spent by the whole machine outside idle and iowait (/proc/stat)."""
    fields = [int(value) for value in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]
    # guest time is already counted in user/nice (fields 9 and 10).
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _report(
    done: subprocess.CompletedProcess[str],
    csv_prefix: Path,
    wall_s: float,
    server_cpu_s: float,
    locust_cpu_s: float,
    machine_cpu_s: float,
) -> int:
    if not Path(f"{csv_prefix}_stats.csv").exists():
        print(done.stdout[-4000:], done.stderr[-4000:], sep="\n", file=sys.stderr)
        print(f"locust wrote no stats (exit code {done.returncode})", file=sys.stderr)
        return done.returncode or 1
    print(markdown(read_stats(csv_prefix)))
    failures = read_failures(csv_prefix)
    for failure in failures[:MAX_FAILURES_SHOWN]:
        print(f"FAILED {failure['Occurrences']}x {failure['Name']}: {failure['Error'][:500]}")
    if len(failures) > MAX_FAILURES_SHOWN:
        print(f"... and {len(failures) - MAX_FAILURES_SHOWN} more kinds of failure")
    other_cpu_s = machine_cpu_s - server_cpu_s - locust_cpu_s
    print(
        f"\nwall {wall_s:.1f} s on {os.cpu_count()} cores; CPU seconds: server {server_cpu_s:.1f},"
        f" locust {locust_cpu_s:.1f}, rest of the machine {other_cpu_s:.1f} (whole machine"
        f" {machine_cpu_s / wall_s:.2f} cores busy on average); locust exit code"
        f" {done.returncode}"
    )
    return done.returncode


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--users", type=int, default=32, help="concurrent clients (default 32)")
    parser.add_argument("--spawn-rate", type=int, default=None, help="users/s (default: all)")
    parser.add_argument("--run-time", type=int, default=60, help="seconds (default 60)")
    parser.add_argument("--workers", type=int, default=2, help="SERVICE_WORKERS (default 2)")
    parser.add_argument("--host", default=None, help="load this running server instead")
    parser.add_argument("--out", type=Path, default=None, help="keep the CSV files here")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="load-") as tmp:
        out = args.out or Path(tmp)
        out.mkdir(parents=True, exist_ok=True)
        csv_prefix = out / "locust"
        if args.host:
            machine_before, start = machine_busy_seconds(), time.perf_counter()
            done = run_locust(args.host, args.users, args.run_time, csv_prefix, args.spawn_rate)
            wall_s = time.perf_counter() - start
            machine_cpu_s = machine_busy_seconds() - machine_before
            return _report(done, csv_prefix, wall_s, float("nan"), _children_cpu(), machine_cpu_s)
        with serve({"SERVICE_WORKERS": str(args.workers)}) as server:
            print(f"server {server.base_url} (pid {server.pid}, {args.workers} workers); "
                  f"{args.users} users for {args.run_time} s", flush=True)  # fmt: skip
            cpu_before, machine_before = server.cpu_seconds(), machine_busy_seconds()
            start = time.perf_counter()
            done = run_locust(
                server.base_url, args.users, args.run_time, csv_prefix, args.spawn_rate
            )
            wall_s = time.perf_counter() - start
            server_cpu_s = server.cpu_seconds() - cpu_before
            machine_cpu_s = machine_busy_seconds() - machine_before
            # Only locust has been waited for so far: the server's CPU is not in this yet.
            locust_cpu_s = _children_cpu()
        return _report(done, csv_prefix, wall_s, server_cpu_s, locust_cpu_s, machine_cpu_s)


if __name__ == "__main__":
    sys.exit(main())
