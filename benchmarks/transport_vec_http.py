"""``/v1/vec`` of 10^6 float64 over real HTTP, base64 against binary, beside a bare echo server.

``benchmarks/transport.py`` times the server round trip in-process (no sockets). This script
times the same requests against ``python -m service`` (uvicorn, one worker, on 127.0.0.1, the
event loop uvicorn chooses: uvloop where installed) and, in the same run, against a **bare echo
server**: an ASGI app with no framework that reads the body and sends it back, under the same
uvicorn with the same loop and HTTP parser. The echo moves the bytes of each encoding's request
and answer and does nothing else: the floor that every server on uvicorn pays for those bytes,
whatever it computes.

What is timed, per request: the client's wall time (``http.client`` with ``TCP_NODELAY``: send
the pre-encoded body, read the whole answer, no decoding) and the server's CPU time (all its
threads, from ``/proc/PID/task/*/schedstat``, nanoseconds). Every repetition runs the four cases
(service and echo, base64-sized and binary-sized) in turn, each ``--calls`` times on one
keep-alive connection; repetition 0 is an untimed warm-up. The echo answers each request body
itself, within 16 bytes of the service's answer. Correctness, outside the timer: every service
answer is 200, and the binary answer's vector equals ``x.ravel(order="F")`` bit for bit.

Run: ``.venv/bin/python benchmarks/transport_vec_http.py [--repeat 7] [--calls 10]`` (any cwd).
"""

from __future__ import annotations

# isort: off
import _service_kernels  # noqa: F401  (the service's BLAS kernels: before NumPy loads OpenBLAS)

# isort: on
import argparse
import contextlib
import glob
import http.client
import os
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import transport  # noqa: E402

from tests.e2e.live import free_port, serve  # noqa: E402

HOST = "127.0.0.1"


async def echo(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """The bare echo server: read the whole body, answer it as it came."""
    if scope["type"] != "http":
        return
    parts = []
    while True:
        message = await receive()
        parts.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
    body = b"".join(parts)
    headers = [
        (b"content-type", b"application/octet-stream"),
        (b"content-length", str(len(body)).encode()),
    ]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def cpu_ns(pid: int) -> int:
    """CPU time of every thread of ``pid`` so far, in nanoseconds."""
    total = 0
    for path in glob.glob(f"/proc/{pid}/task/*/schedstat"):
        with contextlib.suppress(OSError):  # a thread that ended meanwhile
            total += int(Path(path).read_text().split()[0])
    return total


@contextlib.contextmanager
def echo_server() -> Iterator[tuple[int, int]]:
    """Run :func:`echo` under uvicorn on a free port; yield (pid, port)."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "transport_vec_http:echo", "--host", HOST,
         "--port", str(port), "--log-level", "warning", "--app-dir", str(Path(__file__).parent)],
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                connection = http.client.HTTPConnection(HOST, port, timeout=5)
                connection.request("POST", "/", body=b"ok")
                if connection.getresponse().read() == b"ok":
                    break
            except OSError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise
                time.sleep(0.1)
        yield process.pid, port
    finally:
        process.terminate()
        process.wait(timeout=10)


def connect(port: int) -> http.client.HTTPConnection:
    """A keep-alive connection with Nagle's algorithm off.

    ``http.client`` sends the head and the body in separate writes; with Nagle's algorithm on,
    the body's last segment can wait for the server's delayed ACK (40 ms on Linux), which has
    nothing to do with either server.
    """
    connection = http.client.HTTPConnection(HOST, port)
    connection.connect()
    assert connection.sock is not None
    connection.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return connection


def post(
    connection: http.client.HTTPConnection, path: str, body: bytes, headers: Any
) -> tuple[bytes, str | None]:
    """POST ``body``; return the whole answer and its header length (raises unless 200)."""
    connection.request("POST", path, body=body, headers=headers)
    response = connection.getresponse()
    content = response.read()
    if response.status != 200:
        raise RuntimeError(f"{path}: {response.status} {content[:300]!r}")
    return content, response.getheader(transport.HEADER_LENGTH)


def run(repeat: int, calls: int) -> None:
    """Time the four cases and print the table."""
    x = np.random.default_rng(transport.SEED).standard_normal(transport.near_square_shape(10**6))
    bin_body, bin_headers = transport.binary_request(x)
    bodies = {
        "base64": (transport.request_body(x, "base64"), transport.HEADERS),
        "binary": (bin_body, bin_headers),
    }
    load_before = os.getloadavg()[0]
    with serve({"SERVICE_ACCESS_LOG_EVERY": "1000000"}) as service, echo_server() as (pid, port):
        servers = {
            "service": (service.pid, connect(service.port)),
            "echo": (pid, connect(port)),
        }
        # The echo answers each request body itself: within 16 bytes of the service's answer.
        answers = {}
        for encoding, (body, headers) in bodies.items():
            answers[encoding], header_length = post(
                servers["service"][1], transport.PATH, body, headers
            )
        _, vector = transport.decode_binary(answers["binary"], int(header_length or 0))
        if vector.tobytes() != x.ravel(order="F").tobytes():
            raise RuntimeError("binary answer differs from x.ravel(order='F')")
        wall: dict[tuple[str, str], list[float]] = {}
        cpu: dict[tuple[str, str], list[float]] = {}
        for rep in range(repeat + 1):
            for server, (server_pid, connection) in servers.items():
                for encoding, (body, headers) in bodies.items():
                    path, sent = (transport.PATH, body) if server == "service" else ("/", body)
                    start_cpu, start = cpu_ns(server_pid), time.perf_counter()
                    for _ in range(calls):
                        answer, _ = post(connection, path, sent, headers)
                    elapsed = (time.perf_counter() - start) / calls
                    used = (cpu_ns(server_pid) - start_cpu) / calls / 1e9
                    if server == "echo" and len(answer) != len(body):
                        raise RuntimeError("the echo did not answer the body")
                    if rep:
                        wall.setdefault((server, encoding), []).append(elapsed)
                        cpu.setdefault((server, encoding), []).append(used)
    load_after = os.getloadavg()[0]

    def ms(series: list[float]) -> float:
        return statistics.median(series) * 1e3

    print("## /v1/vec over HTTP: 10^6 float64 (1000 x 1000), uvicorn on 127.0.0.1\n")
    print("| server | request + answer | base64 ms | binary ms | **ratio** | base64 server CPU ms "
          "| binary server CPU ms | CPU ratio |")  # fmt: skip
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    sizes = {enc: (len(b), len(answers[enc])) for enc, (b, _) in bodies.items()}
    for server in servers:
        b64, binary = ms(wall[(server, "base64")]), ms(wall[(server, "binary")])
        b64_cpu, bin_cpu = ms(cpu[(server, "base64")]), ms(cpu[(server, "binary")])
        print(
            f"| {server} | {sizes['base64'][0] / 1e6:.1f}+{sizes['base64'][1] / 1e6:.1f} / "
            f"{sizes['binary'][0] / 1e6:.1f}+{sizes['binary'][1] / 1e6:.1f} MB | {b64:.1f} | "
            f"{binary:.1f} | **{b64 / binary:.2f}x** | {b64_cpu:.1f} | {bin_cpu:.1f} | "
            f"{b64_cpu / bin_cpu:.2f}x |"
        )
    for encoding in bodies:
        beyond = ms(cpu[("service", encoding)]) - ms(cpu[("echo", encoding)])
        print(f"\n- {encoding}: the service's server CPU beyond the echo's: {beyond:.1f} ms")
    print(
        f"\n- median of {repeat} repetitions x {calls} calls after 1 warm-up, the four cases in"
        f" turn; echo = a bare ASGI app returning the body under the same uvicorn; 1-min load"
        f" average {load_before:.2f} before, {load_after:.2f} after"
    )


def main(argv: list[str] | None = None) -> int:
    """Parse the arguments and run."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--repeat", type=int, default=7, help="timed repetitions (default 7)")
    parser.add_argument("--calls", type=int, default=10, help="calls per case and repetition")
    args = parser.parse_args(argv)
    run(args.repeat, args.calls)
    return 0


if __name__ == "__main__":
    sys.exit(main())
