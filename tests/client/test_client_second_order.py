"""hvp, hessian and minimize against a live server equal the raw HTTP answers, bit for bit."""

import numpy as np
import pytest
from jacobian_client import Client, op

from tests.client import raw
from tests.client.raw import listed, same_bits, same_jacobian
from tests.e2e.live import LiveServer

X = np.array([0.5, 1.0, 2.0])
F = ["sin", "square", "sum"]
F_WIRE = [{"op": "sin"}, {"op": "square"}, {"op": "sum"}]
G = [op.add(constant=[-1.0, 2.0]), "square", "cos", "sum"]
G_WIRE = [
    {"op": "add", "constant": {"data": [-1.0, 2.0]}},
    {"op": "square"},
    {"op": "cos"},
    {"op": "sum"},
]


def test_hvp_and_hessian(client: Client, server: LiveServer) -> None:
    v = np.array([1.0, -2.0, 0.5])
    answer = raw.post_base64(
        server.base_url,
        "/v1/hvp",
        {"x": listed(X), "function": F_WIRE, "vectors": {"x": listed(v)}},
    )
    value, product = client.hvp(F, v, X)
    same_bits(value, raw.tensor(answer["value"]))
    same_bits(product, raw.tensor(answer["hvp"]["x"]))
    keyed = client.hvp(F, {"x": v}, x=X).hvp
    same_bits(keyed["x"], raw.tensor(answer["hvp"]["x"]))
    for fmt in ("coo", "dense"):
        answer = raw.post_base64(
            server.base_url, "/v1/hessian", {"x": listed(X), "function": F_WIRE, "format": fmt}
        )
        hessian = client.hessian(F, X, format=fmt)
        same_jacobian(hessian, answer["hessian"])
        same_bits(hessian.meta.value, raw.tensor(answer["value"]))


@pytest.mark.parametrize("method", ["newton-cg", "lbfgs", "adam"])
def test_minimize_and_its_stream(client: Client, server: LiveServer, method: str) -> None:
    options = {"method": method, "max_steps": 30, "record_x": True, "grad_tol": 1e-10}
    wire = {"method": method, "max_steps": 30, "record_x": True, "tolerances": {"grad_tol": 1e-10}}
    if method == "adam":
        options["learning_rate"] = wire["learning_rate"] = 0.05
    if method == "lbfgs":
        options["bounds"] = (0.0, None)
        wire["bounds"] = {"x": {"lower": 0.0, "upper": None}}
    answer = raw.post_base64(
        server.base_url, "/v1/minimize", {"function": G_WIRE, "x0": {"data": [0.5, -1.5]}, **wire}
    )
    result = client.minimize(G, [0.5, -1.5], **options)
    with client.minimize(G, [0.5, -1.5], stream=True, **options) as stream:
        streamed = list(stream)
        final = stream.result
    raw.same_run(answer, result, streamed, final)
