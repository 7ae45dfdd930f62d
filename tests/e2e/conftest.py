"""A live server for the end-to-end tests: ``python -m service`` on a free loopback port.

The server runs as a subprocess exactly as it is deployed (settings from ``SERVICE_*``), is
awaited on ``/healthz``, and is stopped by its PID when the session ends.
"""

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[2]
HOST = "127.0.0.1"
START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 10.0


def free_port() -> int:
    """Return a TCP port that was free on the loopback interface a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def _wait_healthy(base_url: str, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    last_error = "no attempt made"
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(
                f"the server exited with code {process.returncode} before answering /healthz:\n"
                + log.read_text(errors="replace")[-4000:]
            )
        try:
            response = httpx.get(f"{base_url}/healthz", timeout=2.0)
            if response.status_code == 200:
                return
            last_error = f"status {response.status_code}"
        except httpx.HTTPError as error:
            last_error = repr(error)
        time.sleep(0.1)
    pytest.fail(
        f"{base_url}/healthz did not answer 200 within {START_TIMEOUT_S} s ({last_error}):\n"
        + log.read_text(errors="replace")[-4000:]
    )


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is not None:
        return
    os.kill(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=STOP_TIMEOUT_S)


@pytest.fixture(scope="session")
def live_server() -> Iterator[str]:
    """Start ``python -m service`` on a free 127.0.0.1 port; yield its base URL."""
    port = free_port()
    # Only our settings: a SERVICE_* variable of the caller's shell (API keys, limits) must not
    # change what the tests see.
    inherited = {k: v for k, v in os.environ.items() if not k.startswith("SERVICE_")}
    env = {
        **inherited,
        "SERVICE_HOST": HOST,
        "SERVICE_PORT": str(port),
        "SERVICE_WORKERS": "1",
        "SERVICE_LOG_LEVEL": "warning",
    }
    with tempfile.TemporaryDirectory(prefix="e2e-server-") as tmp:
        log = Path(tmp) / "server.log"
        with log.open("wb") as sink:
            process = subprocess.Popen(
                [sys.executable, "-m", "service"],
                cwd=ROOT,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=sink,
                stderr=subprocess.STDOUT,
            )
            try:
                base_url = f"http://{HOST}:{port}"
                _wait_healthy(base_url, process, log)
                yield base_url
            finally:
                _stop(process)
