"""The oracle of the client tests: the service's JSON answers, fetched and decoded by hand.

Requests go out as plain JSON with list tensors and ``"encoding": "base64"``; answers are decoded
here from CONVENTIONS section 3 (little-endian C-order float64, int64 COO indices), without the
client's code.
"""

import base64
from typing import Any

import httpx
import numpy as np


def post(base_url: str, path: str, body: dict[str, Any], **headers: str) -> Any:
    """POST ``body`` as JSON and return the parsed 200 answer."""
    response = httpx.post(f"{base_url}{path}", json=body, headers=headers, timeout=60.0)
    assert response.status_code == 200, response.text
    return response.json()


def post_base64(base_url: str, path: str, body: dict[str, Any]) -> Any:
    """POST ``body`` asking for base64 tensors in the answer."""
    return post(base_url, path, {**body, "encoding": "base64"})


def tensor(wire: dict[str, Any]) -> np.ndarray:
    """Decode a base64 response tensor."""
    assert wire["encoding"] == "base64", wire
    raw = base64.b64decode(wire["data"])
    return np.frombuffer(raw, dtype="<f8").reshape(wire["shape"])


def coo(wire: dict[str, Any]) -> dict[str, Any]:
    """Decode a base64 COO Jacobian into row, col, data and its labels."""
    return {
        "row": np.frombuffer(base64.b64decode(wire["row"]), dtype="<i8"),
        "col": np.frombuffer(base64.b64decode(wire["col"]), dtype="<i8"),
        "data": np.frombuffer(base64.b64decode(wire["data"]), dtype="<f8"),
        "shape": tuple(wire["shape"]),
        "labels": (
            tuple(wire["in_shape"]),
            tuple(wire["out_shape"]),
            wire["layout"],
            wire["order"],
        ),
    }


def listed(array: np.ndarray) -> dict[str, Any]:
    """A request tensor in the list encoding."""
    return {"data": np.asarray(array, dtype=np.float64).tolist()}


def same_bits(actual: Any, expected: np.ndarray) -> None:
    """Assert float64 arrays identical to the bit (shape, dtype and bytes)."""
    actual = np.asarray(actual)
    assert actual.shape == expected.shape and actual.dtype == np.float64, (actual, expected)
    assert np.ascontiguousarray(actual).tobytes() == np.ascontiguousarray(expected).tobytes()


def same_jacobian(actual: Any, wire: dict[str, Any]) -> None:
    """Assert a client Jacobian equals a raw base64 Jacobian (COO triplets or dense bits)."""
    labels = (tuple(wire["in_shape"]), tuple(wire["out_shape"]), wire["layout"], wire["order"])
    assert (actual.in_shape, actual.out_shape, actual.layout, actual.order) == labels
    assert tuple(actual.shape) == tuple(wire["shape"])
    if wire["format"] == "dense":
        same_bits(np.asarray(actual), tensor(wire["data"]))
        return
    expected = coo(wire)
    assert np.asarray(actual.row).tolist() == expected["row"].tolist()
    assert np.asarray(actual.col).tolist() == expected["col"].tolist()
    same_bits(actual.data, expected["data"])


def raw_points(trajectory: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    """The recorded points of a raw run (x recorded): step, f, |grad|, rate, counts, x bytes."""
    return [
        (
            p["step"],
            p["f"],
            p["grad_norm"],
            p["learning_rate"],
            p.get("evaluations"),
            tensor(p["x"]).tobytes(),
        )
        for p in trajectory
    ]


def same_run(answer: dict[str, Any], result: Any, streamed: list[Any], final: Any) -> None:
    """Assert a client run (and its streamed records and result) equals a raw JSON run."""
    expected = raw_points(answer["trajectory"])
    for records in (result.trajectory, streamed):
        got = [
            (r.step, r.f, r.grad_norm, r.learning_rate, r.evaluations, r.x.tobytes())
            for r in records
        ]
        assert got == expected
    for run in (result, final):
        same_bits(run.x_final, tensor(answer["x_final"]))
        assert (run.status, run.reason, run.steps, run.f_final, run.method, run.evaluations) == (
            answer["status"],
            answer["reason"],
            answer["steps"],
            answer["f_final"],
            answer.get("method"),
            answer.get("evaluations"),
        )


def get(base_url: str, path: str) -> Any:
    """GET ``path`` and return the parsed 200 answer."""
    response = httpx.get(f"{base_url}{path}", timeout=60.0)
    assert response.status_code == 200, response.text
    return response.json()
