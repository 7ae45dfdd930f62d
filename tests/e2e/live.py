"""Start ``python -m service`` with chosen ``SERVICE_*`` settings and stop it by PID.

Used by the session fixture of ``conftest.py`` (the default settings), the fault tests (which
need the server's PID for its memory and small limits) and ``benchmarks/load/run.py`` (which
needs several workers). No pytest here, so the benchmark can import it.

Every wait is bounded: the start by ``start_timeout`` seconds, the stop by SIGTERM, a grace
period, then SIGKILL of the server and of any worker process it left behind, each by its PID.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
HOST = "127.0.0.1"


class ServerStartError(RuntimeError):
    """The server exited or did not answer ``/healthz`` in time; the message has its log tail."""


def free_port() -> int:
    """Return a TCP port that was free on 127.0.0.1 a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def proc_status(pid: int) -> dict[str, int]:
    """Return the ``kB`` fields of ``/proc/<pid>/status`` (VmRSS, VmHWM, ...) as integers."""
    fields: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        parts = value.split()
        if len(parts) == 2 and parts[1] == "kB":
            fields[name] = int(parts[0])
    return fields


def descendants(pid: int) -> list[int]:
    """Return the PIDs of every live descendant of ``pid`` (uvicorn's worker processes)."""
    found: list[int] = []
    pending = [pid]
    while pending:
        parent = pending.pop()
        for task in Path(f"/proc/{parent}/task").glob("*"):
            try:
                children = (task / "children").read_text().split()
            except OSError:
                continue
            for child in map(int, children):
                if child not in found:
                    found.append(child)
                    pending.append(child)
    return found


def cpu_seconds(pid: int) -> float:
    """Return user + system CPU seconds used so far by process ``pid`` (0.0 if it is gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = stat.rsplit(")", 1)[1].split()
    # Fields 14 and 15 of proc(5) (utime, stime) are 11 and 12 after the ")" of the name.
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass
class LiveServer:
    """A running server: where it answers, its PID and its log file."""

    base_url: str
    host: str
    port: int
    process: subprocess.Popen[bytes]
    log_path: Path

    @property
    def pid(self) -> int:
        """The PID of ``python -m service`` (the only process when workers = 1)."""
        return self.process.pid

    def memory_kib(self) -> dict[str, int]:
        """Return ``VmRSS`` and ``VmHWM`` of the server process in KiB."""
        status = proc_status(self.pid)
        return {"VmRSS": status["VmRSS"], "VmHWM": status["VmHWM"]}

    def cpu_seconds(self) -> float:
        """Return the CPU seconds used by the server and its live worker processes."""
        return sum(cpu_seconds(pid) for pid in [self.pid, *descendants(self.pid)])

    def log_tail(self, chars: int = 4000) -> str:
        """Return the end of the server's combined stdout/stderr."""
        return self.log_path.read_text(errors="replace")[-chars:]


def _healthy(base_url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{base_url}/healthz", timeout=2.0) as response:
            return bool(response.status == 200)
    except (OSError, urllib.error.URLError):
        return False


def _stop(process: subprocess.Popen[bytes], grace: float) -> None:
    """SIGTERM the server by PID, then SIGKILL it and any leftover worker after ``grace`` s."""
    if process.poll() is not None:
        return
    workers = descendants(process.pid)
    os.kill(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=grace)
    deadline = time.monotonic() + grace
    for pid in workers:
        while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        with contextlib.suppress(ProcessLookupError):
            if Path(f"/proc/{pid}").exists():
                os.kill(pid, signal.SIGKILL)


@contextlib.contextmanager
def serve(
    settings: Mapping[str, str] | None = None,
    *,
    start_timeout: float = 60.0,
    stop_grace: float = 10.0,
    log_dir: Path | None = None,
    root: Path = ROOT,
) -> Iterator[LiveServer]:
    """Run ``python -m service`` on a free 127.0.0.1 port until the block ends.

    Parameters
    ----------
    settings : mapping, optional
        ``SERVICE_*`` variables, e.g. ``{"SERVICE_WORKERS": "2"}``. The caller's own
        ``SERVICE_*`` variables are dropped so that they cannot change the run; host and port
        are always chosen here.
    start_timeout : float
        Seconds to wait for ``/healthz`` to answer 200.
    stop_grace : float
        Seconds between SIGTERM and SIGKILL.
    log_dir : Path, optional
        Where to write ``server.log``; a temporary directory (removed afterwards) by default.
    root : Path, optional
        The checkout whose service runs (another release's, for a benchmark); this one's by
        default.
    """
    port = free_port()
    env = {key: value for key, value in os.environ.items() if not key.startswith("SERVICE_")}
    env.update({"SERVICE_LOG_LEVEL": "warning", "SERVICE_WORKERS": "1"})
    env.update(settings or {})
    env.update({"SERVICE_HOST": HOST, "SERVICE_PORT": str(port)})
    base_url = f"http://{HOST}:{port}"
    with contextlib.ExitStack() as stack:
        if log_dir is None:
            log_dir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="live-server-")))
        log_path = log_dir / "server.log"
        sink = stack.enter_context(log_path.open("wb"))
        process = subprocess.Popen(
            [sys.executable, "-m", "service"],
            cwd=root,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
        server = LiveServer(base_url, HOST, port, process, log_path)
        try:
            deadline = time.monotonic() + start_timeout
            while not _healthy(base_url):
                if process.poll() is not None:
                    raise ServerStartError(
                        f"the server exited with code {process.returncode}:\n{server.log_tail()}"
                    )
                if time.monotonic() > deadline:
                    raise ServerStartError(
                        f"{base_url}/healthz did not answer within {start_timeout} s:\n"
                        + server.log_tail()
                    )
                time.sleep(0.1)
            yield server
        finally:
            _stop(process, stop_grace)
