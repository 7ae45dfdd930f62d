"""Requests per second of ``POST /v1/flat`` against a trivial FastAPI echo app (issue 12).

Both apps run under the same uvicorn settings (``--workers 1 --no-access-log``, uvicorn's own
choice of httptools and uvloop) on 127.0.0.1, with the service's **default settings** (one JSON
access-log line per request, ``SERVICE_LOG_LEVEL=info``; its log goes to a file). ``wrk`` (Debian
package) sends the same small body with the same connections and duration to each app in turn,
round after round (interleaved), so a change in the machine's load hits both alike. Reported: the
median requests per second of each, their ratio (target: /v1/flat >= 0.5 x echo), and each
server's CPU time per request (user + system from /proc/PID/stat over the round / requests), which
depends little on what else runs on the machine.

Run: ``.venv/bin/python benchmarks/transport_flat.py [--rounds 5] [--seconds 3]`` (any cwd; needs
``wrk``). ``benchmarks/compare.py --only http`` reports the same measurement among its rows.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.e2e.live import cpu_seconds, free_port  # noqa: E402

FLAT_BODY = b'{"index": [1, 2, 3], "dims": [2, 3, 4], "order": "F"}'


ECHO_APP = """
from typing import Any
from fastapi import FastAPI

def create_app() -> FastAPI:
    app = FastAPI()

    @app.post("/echo")
    async def echo(payload: dict[str, Any]) -> dict[str, Any]:
        return payload

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    return app
"""


@dataclass
class Server:
    """A started uvicorn: its base URL and PID."""

    base: str
    pid: int


@contextlib.contextmanager
def uvicorn_server(app: str, app_dir: Path, env: dict[str, str]) -> Iterator[Server]:
    """Start ``uvicorn APP --factory`` with the settings both apps share; stop it by PID."""
    port = free_port()
    log = tempfile.NamedTemporaryFile(prefix="compare-uvicorn-", suffix=".log", delete=False)
    command = [
        sys.executable,
        "-m",
        "uvicorn",
        app,
        "--factory",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
        "--no-access-log",
        "--log-level",
        "warning",
        "--app-dir",
        str(app_dir),
    ]
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=app_dir)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"{base}/healthz", timeout=1):
                    break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(
                        f"{app} did not start: {Path(log.name).read_text()[-2000:]}"
                    ) from None
                time.sleep(0.1)
        yield Server(base, process.pid)
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)
        os.unlink(log.name)


def wrk(url: str, body: bytes, seconds: int, connections: int) -> tuple[float, int]:
    """Requests per second and count of ``wrk`` POSTing ``body`` to ``url``; errors fail."""
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(
            'wrk.method = "POST"\n'
            f"wrk.body = {json.dumps(body.decode())}\n"
            'wrk.headers["Content-Type"] = "application/json"\n'
        )
    try:
        out = subprocess.run(
            ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "-s", script.name, url],
            capture_output=True,
            text=True,
            check=True,
            timeout=seconds + 30,
        ).stdout
    finally:
        os.unlink(script.name)
    if "Non-2xx" in out:
        raise SystemExit(f"wrk against {url}: error answers\n{out}")
    rate = re.search(r"Requests/sec:\s+([0-9.]+)", out)
    count = re.search(r"([0-9]+) requests in", out)
    if rate is None or count is None:
        raise SystemExit(f"wrk printed no rate:\n{out}")
    return float(rate.group(1)), int(count.group(1))


def flat_vs_echo(
    rounds: int, seconds: int = 3, connections: int = 8
) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """Return each app's requests per second and server CPU µs per request, round by round."""
    if shutil.which("wrk") is None:
        raise SystemExit("the http section needs wrk (apt-get install wrk)")
    env = {**os.environ, "SERVICE_LOG_LEVEL": os.environ.get("SERVICE_LOG_LEVEL", "info")}
    with tempfile.TemporaryDirectory() as folder:
        Path(folder, "echo_app.py").write_text(ECHO_APP)
        with (
            uvicorn_server("service.main:create_app", ROOT, env) as service,
            uvicorn_server("echo_app:create_app", Path(folder), env) as echo,
        ):
            check = urllib.request.Request(
                f"{service.base}/v1/flat",
                data=FLAT_BODY,
                headers={"Content-Type": "application/json"},
            )
            with urllib.request.urlopen(check) as response:
                if json.loads(response.read())["flat"] != 23:
                    raise SystemExit("/v1/flat answered a wrong index")
            rates: dict[str, list[float]] = {"flat": [], "echo": []}
            cpu: dict[str, list[float]] = {"flat": [], "echo": []}
            targets = {"flat": (service, "/v1/flat"), "echo": (echo, "/echo")}
            for _ in range(rounds):
                for name, (server, path) in targets.items():
                    before = cpu_seconds(server.pid)
                    rate, count = wrk(server.base + path, FLAT_BODY, seconds, connections)
                    rates[name].append(rate)
                    # Server CPU time per request does not depend on what else runs on the machine.
                    cpu[name].append(1e6 * (cpu_seconds(server.pid) - before) / count)
    return rates, cpu


def main(argv: list[str] | None = None) -> int:
    """Run the interleaved rounds and print a Markdown table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds (default 5)")
    parser.add_argument("--seconds", type=int, default=3, help="wrk duration per app and round")
    parser.add_argument("--connections", type=int, default=8, help="wrk connections (default 8)")
    args = parser.parse_args(argv)
    load_before = os.getloadavg()[0]
    rates, cpu = flat_vs_echo(args.rounds, args.seconds, args.connections)
    load_after = os.getloadavg()[0]
    flat, echo = statistics.median(rates["flat"]), statistics.median(rates["echo"])
    print("| app | median req/s | min–max req/s | server CPU µs/request |")
    print("|---|---:|---:|---:|")
    for name, label in (("flat", "service `POST /v1/flat`"), ("echo", "FastAPI echo")):
        series = rates[name]
        print(f"| {label} | {statistics.median(series):.0f} | {min(series):.0f}–{max(series):.0f}"
              f" | {statistics.median(cpu[name]):.0f} |")  # fmt: skip
    print(
        f"\n- /v1/flat ÷ echo: **{flat / echo:.2f}** (requests/s, target >= 0.5); CPU per request "
        f"{statistics.median(cpu['flat']) / statistics.median(cpu['echo']):.2f}x the echo's"
    )
    print(
        f"- wrk -t1 -c{args.connections} -d{args.seconds}s, {args.rounds} interleaved rounds;"
        f" uvicorn --workers 1 --no-access-log on 127.0.0.1; the service with default settings"
        f" (one access-log line per request); 1-min load average {load_before:.2f} before,"
        f" {load_after:.2f} after, {os.cpu_count()} CPUs"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
