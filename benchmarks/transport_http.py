"""End to end over real HTTP: (3, 224, 224) image, (3, 3, 3) kernel, COO Jacobians, base64/binary.

What is timed: the client's whole round trip against ``python -m service`` (uvicorn, one worker,
127.0.0.1): encode the request (base64 JSON with stdlib ``json``/``base64``, or the binary body of
CONVENTIONS 3.1), POST with ``httpx.Client``, read the answer, decode the output and the COO
``row``/``col``/``data`` into ndarrays. Each repetition runs every (wrt, encoding) case once, in
turn (interleaved), so a change in machine load hits all of them alike; repetition 0 is an
untimed warm-up. Correctness, outside the timer: the binary answer equals the base64 answer bit
for bit, and the output equals ten(J^T vec(x)) (F order, in_out) computed here from the triplets.

Peak memory: for each case a fresh server answers one small request (imports, caches), then its
peak RSS is reset (``echo 5 > /proc/PID/clear_refs``), the case's request is sent once, and the
peak's rise above the RSS before the request (``VmHWM - VmRSS``) is compared with the size of the
response body. Linux only; reading and resetting another process's counters needs the same user.

Against the previous release (``--previous DIR``, a checkout of it, e.g. ``git archive 9a2b376 |
tar -x -C /tmp/previous``): the base64 request with ``wrt: ["x"]`` is sent to a server of each
release, each answer read by each of two clients, the four (server, client) pairs interleaved:

* the **standard-library client**, the previous release's README: ``json.dumps`` +
  ``base64.b64encode`` to send, ``json.loads`` + ``base64.b64decode`` to read the output and the
  COO ``row``/``col``/``data`` into ndarrays;
* **this release's client** (``client/``, ``jacobian_client.wire``): ``pybase64`` to send,
  ``wire.loads`` (base64 text left in the response bytes) and ``pybase64`` to read the same
  arrays.

The headline ratio is this release with its client over the previous release with its client:
what a user of each release waits for. The same-client ratios split it into the server's and the
client's shares, and each server's CPU time per request is printed too. All four decode the same
arrays, checked equal outside the timer.

Run: ``.venv/bin/python benchmarks/transport_http.py [--repeat 7] [--previous DIR]`` (any cwd).
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "client" / "src"))

import pybase64  # noqa: E402
from jacobian_client import wire  # noqa: E402

from tests.e2e.live import LiveServer, cpu_seconds, proc_status, serve  # noqa: E402

PATH = "/v1/cross-correlation"
HEADER = "Inference-Header-Content-Length"
SEED = 20261201
WIRE = {"float64": "<f8", "float32": "<f4", "int64": "<i8"}
CASES = [(("x",), "base64"), (("x",), "binary"), (("x", "kernel"), "base64"),
         (("x", "kernel"), "binary")]  # fmt: skip


def base64_request(x: np.ndarray, kernel: np.ndarray, wrt: tuple[str, ...]) -> bytes:
    def tensor(a: np.ndarray) -> dict[str, Any]:
        data = base64.b64encode(a.astype("<f8").tobytes()).decode("ascii")
        return {"encoding": "base64", "shape": list(a.shape), "data": data}

    body = {"x": tensor(x), "kernel": tensor(kernel), "jacobian": "coo", "wrt": list(wrt),
            "encoding": "base64"}  # fmt: skip
    return json.dumps(body).encode()


def binary_request(
    x: np.ndarray, kernel: np.ndarray, wrt: tuple[str, ...]
) -> tuple[bytes, dict[str, str]]:
    def descriptor(a: np.ndarray) -> dict[str, Any]:
        return {"encoding": "binary", "shape": list(a.shape), "binary_data_size": a.nbytes}

    header = json.dumps({"x": descriptor(x), "kernel": descriptor(kernel), "jacobian": "coo",
                         "wrt": list(wrt), "encoding": "binary"}).encode()  # fmt: skip
    header += b" " * (-len(header) % 8)  # aligned segments are used in place (README)
    body = b"".join([header, x.astype("<f8").tobytes(), kernel.astype("<f8").tobytes()])
    return body, {"content-type": "application/octet-stream", HEADER: str(len(header))}


def decode_base64(content: bytes) -> dict[str, Any]:
    doc = json.loads(content)
    out: dict[str, Any] = {"output": np.frombuffer(base64.b64decode(doc["output"]["data"]), "<f8")}
    for name in ("jacobian_x", "jacobian_kernel"):
        if doc[name] is not None:
            out[name] = {
                field: np.frombuffer(base64.b64decode(doc[name][field]), dtype)
                for field, dtype in (("row", "<i8"), ("col", "<i8"), ("data", "<f8"))
            } | {"shape": doc[name]["shape"]}
    out["output"] = out["output"].reshape(doc["output"]["shape"])
    return out


def decode_binary(content: bytes, header_length: int) -> dict[str, Any]:
    doc = json.loads(content[:header_length])
    offset = header_length

    def read(descriptor: dict[str, Any]) -> np.ndarray:
        nonlocal offset
        dtype = np.dtype(WIRE[descriptor["dtype"]])
        count = descriptor["binary_data_size"] // dtype.itemsize
        array = np.frombuffer(content, dtype, count, offset).reshape(descriptor["shape"])
        offset += descriptor["binary_data_size"]
        return array

    out: dict[str, Any] = {"output": read(doc["output"])}
    for name in ("jacobian_x", "jacobian_kernel"):
        if doc[name] is not None:
            out[name] = {field: read(doc[name][field]) for field in ("row", "col", "data")}
            out[name]["shape"] = doc[name]["shape"]
    if offset != len(content):
        raise RuntimeError("binary: the segments do not fill the body")
    return out


def round_trip(client: httpx.Client, x: np.ndarray, kernel: np.ndarray, case: Any) -> Any:
    wrt, encoding = case
    if encoding == "base64":
        response = client.post(PATH, content=base64_request(x, kernel, wrt),
                               headers={"content-type": "application/json"})  # fmt: skip
        response.raise_for_status()
        return decode_base64(response.content), len(response.content)
    body, headers = binary_request(x, kernel, wrt)
    response = client.post(PATH, content=body, headers=headers)
    response.raise_for_status()
    return decode_binary(response.content, int(response.headers[HEADER])), len(response.content)


def check(base64_answer: dict[str, Any], binary_answer: dict[str, Any], x: np.ndarray) -> None:
    """Raise unless the answers agree bit for bit and output = ten(J_x^T vec(x))."""
    for name, value in base64_answer.items():
        other = binary_answer[name]
        pairs = [(value, other)] if name == "output" else [
            (value[f], other[f]) for f in ("row", "col", "data")
        ]  # fmt: skip
        for a, b in pairs:
            if a.dtype != b.dtype or a.shape != b.shape or a.tobytes() != b.tobytes():
                raise RuntimeError(f"{name}: binary and base64 answers differ")
    jx = binary_answer["jacobian_x"]
    vec_x = x.ravel(order="F")
    product = np.bincount(
        jx["col"], weights=jx["data"] * vec_x[jx["row"]], minlength=jx["shape"][1]
    )
    if not np.allclose(product, binary_answer["output"].ravel(order="F"), rtol=1e-12, atol=1e-12):
        raise RuntimeError("output != ten(J^T vec(x))")


def peak_memory(x: np.ndarray, kernel: np.ndarray, case: Any) -> tuple[int, int, int]:
    """Return (peak rise, RSS before, response size) in bytes of one request, fresh server."""
    with serve() as server, httpx.Client(base_url=server.base_url, timeout=300) as client:
        small = np.ones((1, 4, 4))
        round_trip(client, small, np.ones((1, 2, 2)), case)  # imports and first-call caches
        Path(f"/proc/{server.pid}/clear_refs").write_text("5")  # VmHWM := VmRSS
        before = proc_status(server.pid)["VmRSS"] * 1024
        _, size = round_trip(client, x, kernel, case)
        peak = _hwm(server) * 1024
        return peak - before, before, size


def _hwm(server: LiveServer) -> int:
    return proc_status(server.pid)["VmHWM"]


def fast_round_trip(client: httpx.Client, x: np.ndarray, kernel: np.ndarray) -> dict[str, Any]:
    """This release's Python client: pybase64 to send, ``wire.loads`` + pybase64 to read."""

    def tensor(a: np.ndarray) -> dict[str, Any]:
        data = pybase64.b64encode(np.ascontiguousarray(a, dtype="<f8")).decode("ascii")
        return {"encoding": "base64", "shape": list(a.shape), "data": data}

    body = json.dumps({"x": tensor(x), "kernel": tensor(kernel), "jacobian": "coo",
                       "wrt": ["x"], "encoding": "base64"}).encode()  # fmt: skip
    response = client.post(PATH, content=body, headers={"content-type": "application/json"})
    response.raise_for_status()
    doc = wire.loads(response.content)
    jacobian = doc["jacobian_x"]
    return {
        "output": wire.decode_tensor(doc["output"]),
        "jacobian_x": {
            "row": wire.decode_array(jacobian["row"], "int64"),
            "col": wire.decode_array(jacobian["col"], "int64"),
            "data": wire.decode_array(jacobian["data"], "float64"),
            "shape": jacobian["shape"],
        },
    }


def previous_release(previous: Path, repeat: int, x: np.ndarray, kernel: np.ndarray) -> None:
    """Time the base64 request on both releases with both clients, interleaved; print a table."""
    clients = {
        "stdlib": lambda c: round_trip(c, x, kernel, (("x",), "base64"))[0],
        "jacobian_client": lambda c: fast_round_trip(c, x, kernel),
    }
    with (
        serve() as now,
        serve(root=previous) as before,
        httpx.Client(base_url=now.base_url, timeout=300) as now_client,
        httpx.Client(base_url=before.base_url, timeout=300) as before_client,
    ):
        servers = {"this release": (now, now_client), "previous": (before, before_client)}
        pairs = [(s, c) for s in servers for c in clients]
        wall: dict[tuple[str, str], list[float]] = {pair: [] for pair in pairs}
        cpu: dict[tuple[str, str], list[float]] = {pair: [] for pair in pairs}
        for rep in range(repeat + 1):
            answers = []
            shift = rep % len(pairs)  # each repetition starts with another pair
            for pair in pairs[shift:] + pairs[:shift]:
                server, http = servers[pair[0]]
                cpu_before, start = cpu_seconds(server.pid), time.perf_counter()
                answers.append(clients[pair[1]](http))
                if rep:
                    wall[pair].append(time.perf_counter() - start)
                    cpu[pair].append(cpu_seconds(server.pid) - cpu_before)
            for other in answers[1:]:  # outside the timer: the same arrays every time
                check(answers[0], other, x)

    def median(series: list[float]) -> float:
        return statistics.median(series)

    base = median(wall[("previous", "stdlib")])
    print(f"\n## Base64 end to end against the previous release ({previous})\n")
    print("| server | client | median s | min–max s | server CPU s | ÷ previous with stdlib |")
    print("|---|---|---:|---:|---:|---:|")
    for pair in pairs:
        series = wall[pair]
        cells = [pair[0], pair[1], f"{median(series):.3f}",
                 f"{min(series):.3f}–{max(series):.3f}", f"{median(cpu[pair]):.3f}",
                 f"**{median(series) / base:.2f}**"]  # fmt: skip
        print("| " + " | ".join(cells) + " |")
    headline = median(wall[("this release", "jacobian_client")]) / base
    same_server = median(wall[("this release", "stdlib")]) / base
    same_client = median(wall[("this release", "jacobian_client")]) / median(
        wall[("previous", "jacobian_client")]
    )
    print(
        f"\n- this release with its client ÷ the previous release with its client (stdlib): "
        f"**{headline:.2f}**; with the stdlib client on both: {same_server:.2f}; with"
        f" jacobian_client on both: {same_client:.2f}"
    )
    print(
        f"- median of {repeat} interleaved repetitions after 1 warm-up; server CPU = user +"
        " system seconds of the server process during the request (/proc/PID/stat, 10 ms ticks)"
    )


def main(argv: list[str] | None = None) -> int:
    """Run the interleaved timings and the memory measurements; print Markdown tables."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=7, help="timed repetitions (default 7)")
    parser.add_argument(
        "--previous", type=Path, help="a checkout of the previous release: base64 against it"
    )
    parser.add_argument(
        "--only-previous", action="store_true", help="only the section against --previous"
    )
    args = parser.parse_args(argv)
    if args.only_previous and args.previous is None:
        parser.error("--only-previous needs --previous")
    rng = np.random.default_rng(SEED)
    x, kernel = rng.standard_normal((3, 224, 224)), rng.standard_normal((3, 3, 3))
    if args.previous is not None:
        previous_release(args.previous.resolve(), args.repeat, x, kernel)
        if args.only_previous:
            return 0
    times: dict[Any, list[float]] = {case: [] for case in CASES}
    sizes: dict[Any, int] = {}
    load_before = os.getloadavg()
    with serve() as server, httpx.Client(base_url=server.base_url, timeout=300) as client:
        for rep in range(args.repeat + 1):
            answers = {}
            for case in CASES:
                start = time.perf_counter()
                answers[case], sizes[case] = round_trip(client, x, kernel, case)
                if rep:
                    times[case].append(time.perf_counter() - start)
            for wrt in (("x",), ("x", "kernel")):
                check(answers[(wrt, "base64")], answers[(wrt, "binary")], x)  # outside the timer
    load_after = os.getloadavg()

    print("## End to end over HTTP: (3, 224, 224) image, (3, 3, 3) kernel, jacobian coo\n")
    print("| wrt | encoding | median s | min–max s | response MB | base64 / binary |")
    print("|---|---|---:|---:|---:|---:|")
    for wrt, encoding in CASES:
        series = times[(wrt, encoding)]
        ratio = statistics.median(times[(wrt, "base64")]) / statistics.median(series)
        cells = [
            ", ".join(wrt), encoding, f"{statistics.median(series):.3f}",
            f"{min(series):.3f}–{max(series):.3f}", f"{sizes[(wrt, encoding)] / 1e6:.1f}",
            f"**{ratio:.1f}x**" if encoding == "binary" else "—",
        ]  # fmt: skip
        print("| " + " | ".join(cells) + " |")
    print(
        f"\n- median of {args.repeat} interleaved repetitions after 1 warm-up; client: httpx.Client"
        " (encode + POST + read + decode into ndarrays); server: python -m service (uvicorn, 1"
        f" worker) on 127.0.0.1; 1-min load average {load_before[0]:.2f} before,"
        f" {load_after[0]:.2f} after, {os.cpu_count()} CPUs"
    )
    print("- correctness: binary answers bit-identical to base64; output = ten(J_x^T vec(x))\n")
    print("| wrt | encoding | peak RSS rise MB | RSS before MB | response MB | peak / response |")
    print("|---|---|---:|---:|---:|---:|")
    for case in CASES:
        rise, before, size = peak_memory(x, kernel, case)
        cells = [", ".join(case[0]), case[1], f"{rise / 1e6:.1f}", f"{before / 1e6:.1f}",
                 f"{size / 1e6:.1f}", f"{rise / size:.2f}"]  # fmt: skip
        print("| " + " | ".join(cells) + " |")
    print(
        "\n- one request per fresh server after a small warm-up request; peak = VmHWM after the"
        " request minus VmRSS before it (VmHWM reset through /proc/PID/clear_refs)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
