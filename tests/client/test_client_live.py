"""Every client method against a live server equals the raw HTTP answer, bit for bit.

Each case sends one request through :class:`jacobian_client.Client` in every encoding and the same
request as plain JSON (``raw.py``), and compares arrays by their bytes.
"""

import numpy as np
import pytest
from jacobian_client import (
    AsyncClient,
    Client,
    ValidationProblemError,
    op,
)

from tests.client import raw
from tests.client.raw import listed, same_bits, same_jacobian
from tests.e2e.live import LiveServer

RNG = np.random.default_rng(20261201)
X = RNG.normal(size=(2, 3, 4))
IMAGE, KERNEL = RNG.normal(size=(2, 5, 6)), RNG.normal(size=(2, 2, 3))
CHAIN = [op.xcorr2d(kernel=KERNEL[:1]), "tanh", op.scale(factor=0.5)]
CHAIN_WIRE = [
    {"op": "xcorr2d", "kernel": listed(KERNEL[:1])},
    {"op": "tanh"},
    {"op": "scale", "factor": 0.5},
]
QUADRATIC = [op.add(constant=[-1.0, 2.0]), "squared_norm", op.scale(factor=0.5)]
QUADRATIC_WIRE = [
    {"op": "add", "constant": {"data": [-1.0, 2.0]}},
    {"op": "squared_norm"},
    {"op": "scale", "factor": 0.5},
]
DESCENT = {"learning_rate": 0.3, "max_steps": 12, "record_every": 3, "record_x": True}


def test_vec_and_ten(client: Client, server: LiveServer) -> None:
    answer = raw.post_base64(server.base_url, "/v1/vec", {"x": listed(X), "order": "C"})
    same_bits(client.vec(X, order="C"), raw.tensor(answer["vector"]))
    vector = X.ravel()
    answer = raw.post_base64(
        server.base_url, "/v1/ten", {"vector": listed(vector), "shape": [4, 6]}
    )
    same_bits(client.ten(vector, (4, 6)), raw.tensor(answer["tensor"]))


def test_flat_and_unflat(client: Client, server: LiveServer) -> None:
    answer = raw.post(
        server.base_url, "/v1/flat", {"index": [[1, 0, 2], [0, 2, 3]], "dims": [2, 3, 4]}
    )
    assert client.flat([[1, 0, 2], [0, 2, 3]], [2, 3, 4]).tolist() == answer["flat"]
    assert client.flat((1, 0, 2), (2, 3, 4), order="C") == 14
    answer = raw.post(server.base_url, "/v1/unflat", {"flat": [13, 14], "dims": [2, 3, 4]})
    assert client.unflat([13, 14], [2, 3, 4]).tolist() == answer["index"]
    assert client.unflat(13, [2, 3, 4]) == (1, 0, 2)


@pytest.mark.parametrize("jacobian", ["coo", "dense"])
def test_cross_correlation(client: Client, server: LiveServer, jacobian: str) -> None:
    options = {
        "stride": [1, 2],
        "padding": "same",
        "jacobian": jacobian,
        "wrt": ["x", "kernel"],
        "layout": "out_in",
        "order": "C",
    }
    answer = raw.post_base64(
        server.base_url,
        "/v1/cross-correlation",
        {"x": listed(IMAGE), "kernel": listed(KERNEL), **options},
    )
    result = client.cross_correlation(IMAGE, KERNEL, **options)
    same_bits(result.output, raw.tensor(answer["output"]))
    same_jacobian(result.jacobian_x, answer["jacobian_x"])
    same_jacobian(result.jacobian_kernel, answer["jacobian_kernel"])


def test_evaluate(client: Client, server: LiveServer) -> None:
    answer = raw.post_base64(
        server.base_url, "/v1/evaluate", {"x": listed(IMAGE[:1]), "function": CHAIN_WIRE}
    )
    same_bits(client.evaluate(CHAIN, x=IMAGE[:1]), raw.tensor(answer["value"]))


@pytest.mark.parametrize("fmt", ["coo", "dense"])
def test_jacobian(client: Client, server: LiveServer, fmt: str) -> None:
    options = {"format": fmt, "strategy": "chain", "layout": "in_out", "order": "F", "check": True}
    body = {"x": listed(IMAGE[:1]), "function": CHAIN_WIRE, **options}
    answer = raw.post_base64(server.base_url, "/v1/jacobian", body)
    jac = client.jacobian(CHAIN, x=IMAGE[:1], **options)
    same_jacobian(jac, answer["jacobian"])
    same_bits(jac.meta.value, raw.tensor(answer["value"]))
    assert jac.meta.strategy == answer["strategy"] and jac.meta.check == answer["check"]
    # wrt as a sequence, like JAX's tuple argnums: a dict name -> Jacobian.
    keyed = client.jacobian(CHAIN, x=IMAGE[:1], wrt=["x"], **options)
    same_jacobian(keyed["x"], answer["jacobian"])


def test_jvp_and_vjp(client: Client, server: LiveServer) -> None:
    tangent = RNG.normal(size=IMAGE[:1].shape)
    answer = raw.post_base64(
        server.base_url,
        "/v1/jvp",
        {"x": listed(IMAGE[:1]), "function": CHAIN_WIRE, "tangent": listed(tangent)},
    )
    value, pushed, check = client.jvp(CHAIN, tangent, IMAGE[:1])
    same_bits(value, raw.tensor(answer["value"]))
    same_bits(pushed, raw.tensor(answer["jvp"]))
    cotangent = RNG.normal(size=raw.tensor(answer["value"]).shape)
    answer = raw.post_base64(
        server.base_url,
        "/v1/vjp",
        {"x": listed(IMAGE[:1]), "function": CHAIN_WIRE, "cotangent": listed(cotangent)},
    )
    result = client.vjp(CHAIN, cotangent, x=IMAGE[:1])
    same_bits(result.value, raw.tensor(answer["value"]))
    same_bits(result.cotangent, raw.tensor(answer["vjp"]))


def test_chain_rule(client: Client, server: LiveServer) -> None:
    dense = RNG.normal(size=(3, 2))
    row, col, data = [0, 1], [0, 0], [1.5, -1.0]
    body = {
        "jacobians": [
            {"format": "dense", "data": listed(dense)},
            {"format": "coo", "shape": [2, 1], "row": row, "col": col, "data": data},
        ],
        "format": "coo",
    }
    answer = raw.post_base64(server.base_url, "/v1/chain-rule", body)
    import scipy.sparse as sp

    factor = sp.coo_array((data, (row, col)), shape=(2, 1))
    same_jacobian(client.chain_rule([dense, factor], format="coo"), answer["jacobian"])


def test_gradient_descent_and_its_stream(client: Client, server: LiveServer) -> None:
    body = {"function": QUADRATIC_WIRE, "x0": {"data": [3.0, 0.0]}, **DESCENT}
    answer = raw.post_base64(server.base_url, "/v1/gradient-descent", body)
    result = client.gradient_descent(QUADRATIC, [3.0, 0.0], **DESCENT)
    # Streamed: exactly the records of the JSON trajectory, one by one, then the same result.
    with client.gradient_descent(QUADRATIC, [3.0, 0.0], stream=True, **DESCENT) as stream:
        streamed = list(stream)
        final = stream.result
    raw.same_run(answer, result, streamed, final)


def test_async_client_gives_the_same_answers(server: LiveServer) -> None:
    import asyncio

    async def run() -> tuple:
        async with AsyncClient(server.base_url) as client:
            jac = await client.jacobian(CHAIN, x=IMAGE[:1], format="coo")
            stream = await client.gradient_descent(QUADRATIC, [3.0, 0.0], stream=True, **DESCENT)
            steps = [record.step async for record in stream]
            return jac, steps, await stream.result()

    jac, steps, result = asyncio.run(run())
    answer = raw.post_base64(
        server.base_url,
        "/v1/jacobian",
        {"x": listed(IMAGE[:1]), "function": CHAIN_WIRE, "format": "coo"},
    )
    same_jacobian(jac, answer["jacobian"])
    assert steps == [0, 3, 6, 9, 12] and result.steps == 12


def test_a_bad_request_raises_a_problem_with_pointers(server: LiveServer) -> None:
    with Client(server.base_url) as client:
        with pytest.raises(ValidationProblemError) as caught:
            client.evaluate([op.scale(factor=1.0), op.power(p="two")], x=[1.0])
        assert caught.value.pointers == ["/function/1/p"]
        assert caught.value.request_id and "/function/1/p" in str(caught.value)
        with pytest.raises(ValidationProblemError) as caught:
            client.cross_correlation(IMAGE, KERNEL[:, :, :1].repeat(2, axis=0))
        assert caught.value.type == "/problems/shape-mismatch" and caught.value.status == 422
