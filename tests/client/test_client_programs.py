"""Programs (named inputs, expressions, graphs, wrt) through the client equal the raw answers."""

import numpy as np
from jacobian_client import Client

from tests.client import raw
from tests.client.raw import listed, same_bits, same_jacobian
from tests.e2e.live import LiveServer

RNG = np.random.default_rng(20261202)
X, K, Y = RNG.normal(size=(1, 5, 5)), RNG.normal(size=(1, 2, 2)), RNG.normal(size=(4, 4))
LOSS = "sum(square(xcorr2d(x, k) - y))"
INPUTS = {"x": listed(X), "k": listed(K), "y": listed(Y)}
GRAPH = {
    "nodes": [
        {"id": "z", "op": "xcorr2d", "args": ["x", "k"]},
        {"id": "r", "op": "subtract", "args": ["z", "y"]},
        {"id": "s", "op": "square", "args": ["r"]},
        {"id": "f", "op": "sum", "args": ["s"]},
    ],
    "output": "f",
}


def test_jacobians_per_input_like_argnums(client: Client, server: LiveServer) -> None:
    for function in (LOSS, GRAPH):
        answer = raw.post_base64(
            server.base_url,
            "/v1/jacobian",
            {"inputs": INPUTS, "function": function, "wrt": ["x", "k"], "format": "coo"},
        )
        keyed = client.jacobian(function, x=X, k=K, y=Y, wrt=["x", "k"], format="coo")
        assert list(keyed) == ["x", "k"]
        for name in ("x", "k"):
            same_jacobian(keyed[name], answer["jacobians"][name])
        single = client.jacobian(function, x=X, k=K, y=Y, wrt="k", format="coo")
        same_jacobian(single, answer["jacobians"]["k"])
        same_bits(single.meta.value, raw.tensor(answer["value"]))


def test_evaluate_jvp_and_vjp_of_a_program(client: Client, server: LiveServer) -> None:
    answer = raw.post_base64(server.base_url, "/v1/evaluate", {"inputs": INPUTS, "function": LOSS})
    same_bits(client.evaluate(LOSS, x=X, k=K, y=Y), raw.tensor(answer["value"]))
    tangents = {"x": RNG.normal(size=X.shape), "k": RNG.normal(size=K.shape)}
    answer = raw.post_base64(
        server.base_url,
        "/v1/jvp",
        {
            "inputs": INPUTS,
            "function": LOSS,
            "wrt": ["x", "k"],
            "tangents": {n: listed(t) for n, t in tangents.items()},
        },
    )
    same_bits(client.jvp(LOSS, tangents, x=X, k=K, y=Y).tangent, raw.tensor(answer["jvp"]))
    answer = raw.post_base64(
        server.base_url,
        "/v1/vjp",
        {"inputs": INPUTS, "function": LOSS, "wrt": ["k", "y"], "cotangent": {"data": 1.0}},
    )
    pulled = client.vjp(LOSS, 1.0, x=X, k=K, y=Y, wrt=["k", "y"]).cotangent
    assert list(pulled) == ["k", "y"]
    for name in ("k", "y"):
        same_bits(pulled[name], raw.tensor(answer["cotangents"][name]))


def test_descent_over_a_kernel_and_its_stream(client: Client, server: LiveServer) -> None:
    start = {**INPUTS, "k": listed(np.zeros_like(K))}
    options = {"learning_rate": 0.05, "max_steps": 6, "record_every": 2, "record_x": True}
    answer = raw.post_base64(
        server.base_url,
        "/v1/gradient-descent",
        {"inputs": start, "function": "mse(xcorr2d(x, k), y)", "variables": ["k"], **options},
    )
    args = ("mse(xcorr2d(x, k), y)",)
    named = {"x": X, "k": np.zeros_like(K), "y": Y}
    result = client.gradient_descent(*args, variables=["k"], **named, **options)
    with client.gradient_descent(*args, variables=["k"], stream=True, **named, **options) as run:
        streamed = list(run)
        final = run.result
    for outcome in (result, final):
        assert outcome.status == answer["status"] and list(outcome.final) == ["k"]
        same_bits(outcome.final["k"], raw.tensor(answer["final"]["k"]))
    expected = [
        (p["step"], p["f"], raw.tensor(p["variables"]["k"]).tobytes()) for p in answer["trajectory"]
    ]
    for records in (result.trajectory, streamed):
        assert [(r.step, r.f, r.x["k"].tobytes()) for r in records] == expected
