"""Base64 answers written as bytes in the worker thread: the same JSON, decoded to the oracles."""

import json

import httpx
import numpy as np
import pybase64
import pytest
import scipy.signal
import scipy.sparse as sp

from service.api.rendering import SPLICE_MIN, json_pieces
from service.api.schemas.xcorr import CrossCorrelationResponse
from service.codec import encode_tensor
from service.codec.sparse import encode_jacobian
from service.config import Settings
from service.engine.jacobian import Jacobian
from service.main import create_app
from tests import oracles


def test_spliced_bytes_equal_pydantic_json_for_large_and_small_base64() -> None:
    rng = np.random.default_rng(12)
    large = rng.standard_normal((40, 50))  # 2000 float64: 21,336 base64 characters
    small = rng.standard_normal(3)
    matrix = sp.coo_array(sp.random(300, 200, density=0.05, random_state=1, format="coo"))
    matrix.sum_duplicates()
    jacobian = Jacobian(matrix, (300,), (200,), "in_out", "F")
    for encoding in ("base64", "list"):
        model = CrossCorrelationResponse(
            output=encode_tensor(large, encoding),
            jacobian_x=encode_jacobian(jacobian, encoding),
            jacobian_kernel=encode_jacobian(Jacobian(small[:, None], (3,), (1,), "in_out", "F"),
                                            encoding),
        )  # fmt: skip
        assert b"".join(json_pieces(model)) == model.model_dump_json(by_alias=True).encode()
    assert len(model.output.data) > SPLICE_MIN or encoding == "list"


@pytest.mark.anyio
async def test_a_base64_coo_answer_decodes_to_the_correlation_and_its_jacobian() -> None:
    rng = np.random.default_rng(7)
    x, k = rng.standard_normal((2, 30, 30)), rng.standard_normal((2, 3, 3))

    def b64(a: np.ndarray) -> dict[str, object]:
        return {"encoding": "base64", "shape": list(a.shape),
                "data": pybase64.b64encode(a.astype("<f8").tobytes()).decode()}  # fmt: skip

    request = {"x": b64(x), "kernel": b64(k), "jacobian": "coo", "encoding": "base64"}
    transport = httpx.ASGITransport(app=create_app(Settings()))
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        response = await client.post("/v1/cross-correlation", json=request)
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    answer = json.loads(response.content)
    output = np.frombuffer(pybase64.b64decode(answer["output"]["data"]), "<f8")
    expected = sum(scipy.signal.correlate(x[c], k[c], mode="valid") for c in range(2))
    np.testing.assert_allclose(output.reshape(28, 28), expected, rtol=1e-12, atol=1e-12)
    coo = answer["jacobian_x"]
    assert len(coo["data"]) >= SPLICE_MIN  # the spliced path
    row = np.frombuffer(pybase64.b64decode(coo["row"]), "<i8")
    col = np.frombuffer(pybase64.b64decode(coo["col"]), "<i8")
    data = np.frombuffer(pybase64.b64decode(coo["data"]), "<f8")
    dense = np.zeros(coo["shape"])
    dense[row, col] = data
    reference = oracles.xcorr_jacobian_loops(x.shape, k, (1, 1), ((0, 0), (0, 0)), (1, 1), "F")
    expected_dense = np.zeros(coo["shape"])
    for (r, c), v in reference.items():
        expected_dense[r, c] = v
    np.testing.assert_array_equal(dense, expected_dense)
