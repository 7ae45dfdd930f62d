"""The Jacobian wire format of ``service/codec/sparse.py`` (CONVENTIONS section 4) on its own.

Oracles: ``struct.pack``/``struct.unpack`` for the little-endian bytes, dense matrices built by
loops for the COO triplets, and hand-written headers; never the codec's own output read back by
itself.
"""

import base64
import json
import struct

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given
from hypothesis import strategies as st
from pydantic import TypeAdapter, ValidationError

from service.codec import DecodeLimits
from service.codec.errors import CodecError
from service.codec.sparse import JacobianIn, decode_jacobian, encode_jacobian
from service.engine.errors import LimitExceeded
from service.engine.jacobian import Jacobian

ADAPTER: TypeAdapter = TypeAdapter(JacobianIn)


def read(body: dict, **limits: int) -> object:
    context = {"limits": DecodeLimits(**limits)} if limits else {"limits": DecodeLimits()}
    return ADAPTER.validate_json(json.dumps(body), context=context)


def b64(fmt: str, values: list) -> str:
    return base64.b64encode(struct.pack(f"<{len(values)}{fmt}", *values)).decode()


def unb64(fmt: str, text: str) -> list:
    raw = base64.b64decode(text)
    return list(struct.unpack(f"<{len(raw) // struct.calcsize(fmt)}{fmt}", raw))


def dense_from_triplets(shape, row, col, data) -> np.ndarray:
    matrix = np.zeros(shape)
    for r, c, v in zip(row, col, data, strict=True):
        matrix[r][c] += v  # duplicates sum
    return matrix


triplets = st.integers(1, 5).flatmap(
    lambda rows: st.integers(1, 5).flatmap(
        lambda cols: st.lists(
            st.tuples(st.integers(0, rows - 1), st.integers(0, cols - 1),
                      st.floats(-10, 10, allow_nan=False).filter(lambda v: v != 0)),
            max_size=12,
        ).map(lambda entries: ((rows, cols), entries))
    )
)  # fmt: skip


@given(triplets, st.sampled_from(["list", "base64"]))
def test_coo_input_decodes_to_the_matrix_the_triplets_describe(case, encoding: str) -> None:
    shape, entries = case
    row = [r for r, _, _ in entries]
    col = [c for _, c, _ in entries]
    data = [v for _, _, v in entries]
    if encoding == "base64":
        body = {"format": "coo", "shape": list(shape), "row": b64("q", row),
                "col": b64("q", col), "data": b64("d", data)}  # fmt: skip
    else:
        body = {"format": "coo", "shape": list(shape), "row": row, "col": col, "data": data}
    matrix = decode_jacobian(read(body))
    assert isinstance(matrix, sp.coo_array) and matrix.shape == shape
    expected = dense_from_triplets(shape, row, col, data)
    np.testing.assert_allclose(matrix.toarray(), expected, rtol=1e-15, atol=0)
    # Canonical: sorted by (row, col), no duplicates, no stored zeros.
    keys = list(zip(matrix.row.tolist(), matrix.col.tolist(), strict=True))
    assert keys == sorted(set(keys)) and np.all(matrix.data != 0)


def test_encoded_coo_is_little_endian_int64_and_float64() -> None:
    matrix = sp.coo_array((np.array([2.5, -1.0]), (np.array([0, 2]), np.array([1, 0]))),
                          shape=(3, 2))  # fmt: skip
    out = encode_jacobian(Jacobian(matrix, (3,), (2,), "in_out", "C"), "base64").model_dump()
    assert unb64("q", out["row"]) == [0, 2] and unb64("q", out["col"]) == [1, 0]
    assert unb64("d", out["data"]) == [2.5, -1.0]
    assert {k: out[k] for k in ("format", "shape", "in_shape", "out_shape", "layout", "order",
                                 "nnz", "encoding")} == {
        "format": "coo", "shape": [3, 2], "in_shape": [3], "out_shape": [2],
        "layout": "in_out", "order": "C", "nnz": 2, "encoding": "base64"}  # fmt: skip
    listed = encode_jacobian(Jacobian(matrix, (3,), (2,), "in_out", "F"), "list").model_dump()
    assert (listed["row"], listed["col"], listed["data"]) == ([0, 2], [1, 0], [2.5, -1.0])


def test_encoded_dense_counts_its_non_zeros() -> None:
    matrix = np.array([[0.0, 1.5], [0.0, 0.0], [-2.0, 0.0]])
    out = encode_jacobian(Jacobian(matrix, (3,), (1, 2), "in_out", "F"), "list").model_dump()
    assert out["format"] == "dense" and out["nnz"] == 2 and out["shape"] == [3, 2]
    assert out["data"]["data"] == [[0.0, 1.5], [0.0, 0.0], [-2.0, 0.0]]


def test_dense_input_is_its_2d_data() -> None:
    matrix = decode_jacobian(read({"format": "dense", "data": {"data": [[1, 2], [3, 4]]}}))
    np.testing.assert_array_equal(matrix, [[1.0, 2.0], [3.0, 4.0]])
    with pytest.raises(CodecError, match="must be 2-D"):
        decode_jacobian(read({"format": "dense", "data": {"data": [1, 2]}}))


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"row": [0, 1], "col": [0], "data": [1.0, 2.0]}, "equal lengths"),
        ({"row": "AAAA", "col": [0], "data": [1.0]}, "not a multiple of 8"),
        ({"row": "!!!!", "col": [0], "data": [1.0]}, "not valid standard base64"),
        ({"row": [0], "col": [0], "data": [1.0], "encoding": "base64"}, "encoding is 'base64'"),
        ({"row": [-1], "col": [0], "data": [1.0]}, "greater than or equal to 0"),
        ({"row": [0], "col": [0], "data": [True]}, "valid number"),
    ],
)
def test_malformed_coo_is_refused_with_a_reason(body: dict, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        read({"format": "coo", "shape": [2, 2], **body})


def test_indices_outside_the_shape_and_non_finite_values_are_codec_errors() -> None:
    with pytest.raises(CodecError):
        decode_jacobian(read({"format": "coo", "shape": [2, 2], "row": [2], "col": [0],
                              "data": [1.0]}))  # fmt: skip
    with pytest.raises(CodecError, match="non-finite"):
        decode_jacobian(read({"format": "coo", "shape": [2, 2], "row": [0], "col": [0],
                              "data": b64("d", [float("inf")])}))  # fmt: skip


def test_sizes_are_bounded_before_decoding() -> None:
    with pytest.raises(LimitExceeded):
        read({"format": "coo", "shape": [11, 2], "row": [0], "col": [0], "data": [1.0]},
             max_elements=10)  # fmt: skip
    eleven = {"row": b64("q", [0] * 11), "col": b64("q", [0] * 11), "data": b64("d", [1.0] * 11)}
    with pytest.raises(LimitExceeded):
        read({"format": "coo", "shape": [2, 2], **eleven}, max_elements=10)
