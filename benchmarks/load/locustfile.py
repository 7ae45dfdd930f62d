"""Mixed workload for ``locust``: four endpoints with small but real payloads, every answer checked.

Run through ``benchmarks/load/run.py`` (which starts the server), or by hand against a running one:
``locust -f benchmarks/load/locustfile.py --headless -u 32 -r 32 --run-time 60s
--host http://127.0.0.1:8000 --only-summary``.

Tasks (weight; stats row name):

* 4, ``vec (8,16,16) b64``: ``POST /v1/vec`` of a (8, 16, 16) tensor in base64; the answer must
  be exactly ``x.ravel(order="F")``.
* 2, ``cross-correlation (3,32,32)k3 coo b64``: ``POST /v1/cross-correlation`` with the COO
  Jacobian in base64 (24 300 non-zeros, ~790 kB answer); the COO triplets must equal the ones
  built here by index arithmetic, the output the correlation computed here.
* 2, ``jacobian [xcorr2d, tanh, sum] coo``: ``POST /v1/jacobian`` of a (2, 12, 12) input; the
  value and the 288 gradient entries must match the hand-written adjoint here.
* 1, ``gradient-descent 100 steps``: ``POST /v1/gradient-descent`` on ½‖x − c‖² with x in R^64,
  γ = 0.1, 100 steps recorded every 10th; x_100 must equal c + 0.9^100 (x_0 − c).

Every request body and every expected answer is built once at import, so the load generator
spends its CPU on HTTP and checks, not on NumPy. A task marks its request failed (with the
reason) on any status but 200 or any mismatch.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from typing import Any

import numpy as np
from locust import constant, task
from locust.contrib.fasthttp import FastHttpUser

RNG = np.random.default_rng(20261126)
HEADERS = {"Content-Type": "application/json", "Accept": "application/json"}
RTOL = 1e-12


def b64_tensor(array: np.ndarray[Any, Any]) -> dict[str, Any]:
    """Return the wire form of ``array`` in base64 (little-endian float64, C order)."""
    data = base64.b64encode(np.ascontiguousarray(array, dtype="<f8").tobytes()).decode()
    return {"encoding": "base64", "shape": list(array.shape), "data": data}


def b64(array: np.ndarray[Any, Any], dtype: str) -> str:
    """Return base64 of ``array``'s bytes as little-endian ``dtype``."""
    return base64.b64encode(np.ascontiguousarray(array, dtype=dtype).tobytes()).decode()


def from_b64(tensor: dict[str, Any]) -> np.ndarray[Any, Any]:
    """Decode a base64 response tensor."""
    raw = base64.b64decode(tensor["data"])
    return np.frombuffer(raw, dtype="<f8").reshape(tensor["shape"])


def correlate(x: np.ndarray[Any, Any], k: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    """The notes' valid cross-correlation of x (C, H, W) with k (C, kh, kw), stride 1."""
    _, kh, kw = k.shape
    h_out, w_out = x.shape[1] - kh + 1, x.shape[2] - kw + 1
    out = np.zeros((h_out, w_out))
    for a in range(kh):
        for b in range(kw):
            out += np.tensordot(k[:, a, b], x[:, a : a + h_out, b : b + w_out], axes=1)
    return out


def correlate_adjoint(
    s: np.ndarray[Any, Any], k: np.ndarray[Any, Any], x_shape: tuple[int, ...]
) -> np.ndarray[Any, Any]:
    """Return the gradient of ``sum(s * correlate(x, k))`` with respect to x."""
    _, kh, kw = k.shape
    h_out, w_out = s.shape
    grad = np.zeros(x_shape)
    for a in range(kh):
        for b in range(kw):
            grad[:, a : a + h_out, b : b + w_out] += k[:, a, b][:, None, None] * s
    return grad


def coo_of_correlation(
    x_shape: tuple[int, int, int], k: np.ndarray[Any, Any]
) -> tuple[np.ndarray[Any, Any], ...]:
    """Canonical COO (sorted by row, then column) of dy/dx, in_out layout, order F."""
    channels, height, width = x_shape
    _, kh, kw = k.shape
    h_out, w_out = height - kh + 1, width - kw + 1
    c, a, b, i, j = np.meshgrid(
        np.arange(channels), np.arange(kh), np.arange(kw), np.arange(h_out), np.arange(w_out),
        indexing="ij",
    )  # fmt: skip
    # flat_F: the first index varies fastest.
    rows = (c + (i + a) * channels + (j + b) * channels * height).ravel()
    cols = (i + j * h_out).ravel()
    values = k[c, a, b].ravel()
    keep = values != 0
    rows, cols, values = rows[keep], cols[keep], values[keep]
    ordering = np.lexsort((cols, rows))
    return rows[ordering], cols[ordering], values[ordering]


def _vec_case() -> tuple[bytes, Callable[[dict[str, Any]], None]]:
    x = RNG.standard_normal((8, 16, 16))
    body = json.dumps({"x": b64_tensor(x), "encoding": "base64"}).encode()
    expected = b64(x.ravel(order="F"), "<f8")

    def check(answer: dict[str, Any]) -> None:
        vector = answer["vector"]
        if vector["shape"] != [x.size] or vector["data"] != expected:
            raise AssertionError("vec: the vector is not x.ravel(order='F')")

    return body, check


def _xcorr_case() -> tuple[bytes, Callable[[dict[str, Any]], None]]:
    x = RNG.standard_normal((3, 32, 32))
    k = RNG.standard_normal((3, 3, 3))
    request = {"x": b64_tensor(x), "kernel": b64_tensor(k), "jacobian": "coo"}
    body = json.dumps({**request, "encoding": "base64"}).encode()
    output = correlate(x, k)
    rows, cols, values = coo_of_correlation((3, 32, 32), k)
    expected = {"row": b64(rows, "<i8"), "col": b64(cols, "<i8"), "data": b64(values, "<f8")}

    def check(answer: dict[str, Any]) -> None:
        if not np.allclose(from_b64(answer["output"]), output, rtol=RTOL, atol=RTOL):
            raise AssertionError("cross-correlation: wrong output")
        jac = answer["jacobian_x"]
        if jac["shape"] != [x.size, output.size] or jac["nnz"] != rows.size:
            raise AssertionError(f"cross-correlation: shape {jac['shape']} nnz {jac['nnz']}")
        for name, wire in expected.items():
            if jac[name] != wire:
                raise AssertionError(f"cross-correlation: COO {name} differs")

    return body, check


def _jacobian_case() -> tuple[bytes, Callable[[dict[str, Any]], None]]:
    x = RNG.standard_normal((2, 12, 12))
    k = RNG.standard_normal((2, 3, 3)) / 3
    function = [{"op": "xcorr2d", "kernel": b64_tensor(k)}, {"op": "tanh"}, {"op": "sum"}]
    request = {"x": b64_tensor(x), "function": function, "format": "coo"}
    body = json.dumps({**request, "encoding": "base64"}).encode()
    y = np.tanh(correlate(x, k))
    value = y.sum()
    gradient = correlate_adjoint(1.0 - y**2, k, x.shape).ravel(order="F")

    def check(answer: dict[str, Any]) -> None:
        if not np.isclose(from_b64(answer["value"]), value, rtol=RTOL, atol=RTOL):
            raise AssertionError("jacobian: wrong value")
        jac = answer["jacobian"]
        if jac["shape"] != [x.size, 1] or jac["nnz"] != x.size:
            raise AssertionError(f"jacobian: shape {jac['shape']} nnz {jac['nnz']}")
        data = np.frombuffer(base64.b64decode(jac["data"]), dtype="<f8")
        rows = np.frombuffer(base64.b64decode(jac["row"]), dtype="<i8")
        if not np.array_equal(rows, np.arange(x.size)):
            raise AssertionError("jacobian: rows are not 0..287")
        if not np.allclose(data, gradient, rtol=1e-10, atol=1e-12):
            raise AssertionError("jacobian: the gradient differs from the adjoint")

    return body, check


def _descent_case() -> tuple[bytes, Callable[[dict[str, Any]], None]]:
    x0 = RNG.standard_normal(64)
    c = RNG.standard_normal(64)
    gamma, steps = 0.1, 100
    request = {
        "function": [
            {"op": "add", "constant": {"data": (-c).tolist()}},
            {"op": "squared_norm"},
            {"op": "scale", "factor": 0.5},
        ],
        "x0": {"data": x0.tolist()},
        "learning_rate": gamma,
        "max_steps": steps,
        "record_every": 10,
    }
    body = json.dumps(request).encode()
    x_final = c + (1 - gamma) ** steps * (x0 - c)

    def check(answer: dict[str, Any]) -> None:
        if answer["status"] != "max_steps" or answer["steps"] != steps:
            raise AssertionError(f"descent: {answer['status']} after {answer['steps']}")
        if [point["step"] for point in answer["trajectory"]] != list(range(0, steps + 1, 10)):
            raise AssertionError("descent: wrong recorded steps")
        if not np.allclose(answer["x_final"]["data"], x_final, rtol=1e-9, atol=1e-12):
            raise AssertionError("descent: x_100 is not c + 0.9^100 (x0 - c)")

    return body, check


CASES = {
    "vec (8,16,16) b64": ("/v1/vec", *_vec_case()),
    "cross-correlation (3,32,32)k3 coo b64": ("/v1/cross-correlation", *_xcorr_case()),
    "jacobian [xcorr2d, tanh, sum] coo": ("/v1/jacobian", *_jacobian_case()),
    "gradient-descent 100 steps": ("/v1/gradient-descent", *_descent_case()),
}


def _problem_summary(response: Any) -> str:
    """The problem's type and detail, without the request id (so equal failures group)."""
    try:
        problem = response.json()
        return f"{problem['type']}: {problem['detail']}"
    except (KeyError, TypeError, ValueError):
        return (response.text or "")[:200]


class ServiceUser(FastHttpUser):
    """A client that posts the four requests back to back (no think time)."""

    wait_time = constant(0)
    connection_timeout = 10.0
    network_timeout = 30.0

    def _post(self, name: str) -> None:
        path, body, check = CASES[name]
        with self.client.post(
            path, data=body, headers=HEADERS, name=name, catch_response=True
        ) as response:
            if response.status_code != 200:
                response.failure(f"HTTP {response.status_code}: {_problem_summary(response)}")
                return
            try:
                check(response.json())
            except (AssertionError, KeyError, TypeError, ValueError) as error:
                response.failure(f"bad body: {error!r}")
            else:
                response.success()

    @task(4)
    def vec(self) -> None:
        self._post("vec (8,16,16) b64")

    @task(2)
    def cross_correlation(self) -> None:
        self._post("cross-correlation (3,32,32)k3 coo b64")

    @task(2)
    def jacobian(self) -> None:
        self._post("jacobian [xcorr2d, tanh, sum] coo")

    @task(1)
    def descent(self) -> None:
        self._post("gradient-descent 100 steps")
