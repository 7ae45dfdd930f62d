"""client.estimate and client.metadata equal the raw answers of /v1/estimate and /v1/metadata."""

import base64

import numpy as np
from jacobian_client import Client

from tests.client import raw
from tests.e2e.live import LiveServer


def b64(array: np.ndarray) -> dict:
    data = base64.b64encode(np.ascontiguousarray(array, dtype="<f8").tobytes()).decode()
    return {"encoding": "base64", "shape": list(array.shape), "data": data}


def test_estimate_is_the_raw_estimate_of_the_same_request(server: LiveServer) -> None:
    x, k = np.ones((3, 40, 40)), np.ones((3, 3, 3))
    body = {"x": b64(x), "kernel": b64(k), "jacobian": "coo", "encoding": "base64"}
    answer = raw.post(
        server.base_url, "/v1/estimate", {"path": "/v1/cross-correlation", "body": body}
    )
    with Client(server.base_url, encoding="base64") as client:
        got = client.estimate("cross_correlation", x, k, jacobian="coo")
        assert got == answer and got["refused"] is False and got["work"] > 0
        refused = client.estimate("jacobian", ["tanh"], x=np.ones((600, 600)), format="dense")
        assert refused["refused"] is True
        assert refused["problem"]["type"] == "/problems/limit-exceeded"
        metadata = client.metadata()
    assert metadata == raw.get(server.base_url, "/v1/metadata")
    assert "/v1/cross-correlation" in metadata["estimable_paths"]


def test_every_request_kind_is_estimated_through_the_client(server: LiveServer) -> None:
    with Client(server.base_url) as client:  # binary: the estimated body goes as base64
        hvp = client.estimate("hvp", "sum(tanh(x))", np.ones(3), x=np.zeros(3))
        minimize = client.estimate(
            "minimize", "sum(square(x - 1))", x=np.zeros(5), method="lbfgs", max_steps=20
        )
        hessian = client.estimate("hessian", "sum(x * x)", x=np.zeros(4000), format="dense")
    assert hvp["refused"] is False and hvp["work"] > 0
    assert minimize["refused"] is False and minimize["facts"]["work_all_steps"] > 0
    assert hessian["refused"] is True
    assert hessian["problem"]["setting"] == "max_request_memory_bytes"
