"""The wire format, checked against CONVENTIONS section 3 and 3.1 written out by hand here."""

import base64
import json
import struct
from types import SimpleNamespace

import numpy as np
import pytest
from jacobian_client.calls import chain_rule
from jacobian_client.wire import (
    HEADER_LENGTH,
    Wire,
    WireFormatError,
    as_tensor,
    decode_array,
    decode_tensor,
    encode_body,
    loads,
    split_binary,
)


def test_list_and_base64_tensors_follow_section_3() -> None:
    x = np.array([[1.5, -2.0, 3.25]])
    listed = json.loads(encode_body({"x": as_tensor(x)}, "list").content)
    assert listed == {"x": {"data": [[1.5, -2.0, 3.25]], "shape": [1, 3]}}
    b64 = json.loads(encode_body({"x": as_tensor(x)}, "base64").content)
    raw = struct.pack("<3d", 1.5, -2.0, 3.25)  # little-endian, C order
    assert b64 == {
        "x": {
            "encoding": "base64",
            "shape": [1, 3],
            "dtype": "float64",
            "data": base64.b64encode(raw).decode(),
        },
    }


def test_float32_stays_float32_and_other_dtypes_become_float64() -> None:
    assert as_tensor(np.ones(2, dtype=np.float32)).array.dtype == np.float32
    assert as_tensor([1, 2]).array.dtype == np.float64
    body = json.loads(encode_body({"x": as_tensor(np.ones(2, np.float32))}, "base64").content)
    assert body["x"]["dtype"] == "float32"
    assert base64.b64decode(body["x"]["data"]) == struct.pack("<2f", 1.0, 1.0)


def test_a_complex_array_is_refused_not_cast_to_its_real_part() -> None:
    # astype(float64) would drop the imaginary part with only a ComplexWarning.
    with pytest.raises(TypeError, match="complex128"):
        as_tensor(np.array([1.0 + 2.0j, 3.0]))


def test_a_complex_sparse_jacobian_is_refused_too() -> None:
    # A COO factor's values are sent apart from as_tensor: the same cast hid there. (Any object
    # with row, col, data and shape is read as one: SciPy is an optional dependency.)
    factor = SimpleNamespace(row=[0, 1], col=[0, 1], data=np.array([1.0 + 2.0j, 3.0]), shape=(2, 2))
    with pytest.raises(TypeError, match="complex128"):
        chain_rule([factor, np.eye(2)])


def test_binary_segments_follow_the_json_text_order() -> None:
    # Section 3.1: segments in the order the tensors appear in the JSON text, however nested.
    a, b, c = np.arange(2.0), np.arange(3.0) + 10, np.array(7.0)
    idx = Wire(np.array([0, 2], dtype=np.int64), "index")
    body = {
        "first": as_tensor(a),
        "function": [{"op": "add", "constant": as_tensor(b)}],
        "row": idx,
        "last": as_tensor(c),
    }
    wire = encode_body(body, "binary")
    assert wire.headers["Content-Type"] == "application/octet-stream"
    n = int(wire.headers[HEADER_LENGTH])
    header = json.loads(wire.content[:n])
    assert header["first"] == {
        "encoding": "binary",
        "shape": [2],
        "dtype": "float64",
        "binary_data_size": 16,
    }
    assert header["row"]["dtype"] == "int64" and header["last"]["shape"] == []
    expected = struct.pack("<2d", 0, 1) + struct.pack("<3d", 10, 11, 12)
    expected += struct.pack("<2q", 0, 2) + struct.pack("<d", 7)
    assert wire.content[n:] == expected


def test_binary_reader_resolves_segments_in_header_order() -> None:
    header = json.dumps(
        {
            "y": {
                "encoding": "binary",
                "shape": [2, 1],
                "dtype": "float64",
                "binary_data_size": 16,
            },
            "j": {
                "row": {"encoding": "binary", "shape": [1], "dtype": "int64", "binary_data_size": 8}
            },
        }
    ).encode()
    content = header + struct.pack("<2d", 1.0, 2.0) + struct.pack("<q", 5)
    answer = split_binary(content, len(header))
    assert answer["y"].tolist() == [[1.0], [2.0]]
    assert answer["j"]["row"].tolist() == [5] and answer["j"]["row"].dtype == np.int64


@pytest.mark.parametrize("extra", [b"", b"\0" * 9])
def test_binary_reader_refuses_short_or_long_payloads(extra: bytes) -> None:
    header = (
        b'{"y": {"encoding": "binary", "shape": [2], "dtype": "float64", "binary_data_size": 16}}'
    )
    content = header + b"\0" * 8 + extra  # 8 bytes short, or 1 byte too many
    with pytest.raises(WireFormatError):
        split_binary(content, len(header))
    with pytest.raises(WireFormatError):
        split_binary(content, len(content) + 1)


def test_decoders_read_every_encoding() -> None:
    raw = base64.b64encode(struct.pack("<2d", 0.5, 0.25)).decode()
    as_b64 = {"encoding": "base64", "dtype": "float64", "shape": [2, 1], "data": raw}
    assert decode_tensor(as_b64).tolist() == [[0.5], [0.25]]
    assert decode_tensor({"encoding": "list", "shape": [], "data": 3.0}).shape == ()
    assert decode_array(base64.b64encode(struct.pack("<2q", 3, 4)).decode(), "int64").tolist() == [
        3,
        4,
    ]
    assert decode_array([1, 2], "int64").dtype == np.int64


# -- loads: long base64 strings stay in the response bytes ---------------------------------------

LONG = "A" * 5000


@pytest.mark.parametrize(
    "document",
    [
        {"a": 1, "b": [1.5, None, True], "s": "short"},
        {"data": LONG, "row": [LONG, {"x": LONG + "=="}], "n": 3},
        {"escaped": 'quote " inside', "slashes": "\\\\", "tail\\": "\\" * 5001 + '"' + LONG},
        {"long with escape": LONG + "\n" + LONG, "unicode": "é" * 3000 + LONG},
        [LONG, "\u0000not a tag", ""],
    ],
)
def test_loads_reads_what_json_loads_reads(document: object) -> None:
    content = json.dumps(document).encode()
    parsed = loads(content)

    def as_text(value: object) -> object:
        if isinstance(value, memoryview):
            return bytes(value).decode("ascii")
        if isinstance(value, dict):
            return {key: as_text(item) for key, item in value.items()}
        if isinstance(value, list):
            return [as_text(item) for item in value]
        return value

    assert as_text(parsed) == json.loads(content)


def test_loads_leaves_long_escape_free_strings_as_views_that_decode() -> None:
    x = np.linspace(-1.0, 1.0, 1000).reshape(10, 100)
    text = base64.b64encode(x.astype("<f8").tobytes()).decode()
    content = json.dumps(
        {"vector": {"encoding": "base64", "shape": [10, 100], "dtype": "float64", "data": text},
         "row": text, "detail": "x" * 5000 + "\\n"}
    ).encode()  # fmt: skip
    answer = loads(content)
    assert isinstance(answer["vector"]["data"], memoryview)
    assert bytes(answer["vector"]["data"]) == text.encode()
    assert isinstance(answer["detail"], str)  # it holds an escape
    assert np.array_equal(decode_tensor(answer["vector"]), x)
    assert np.array_equal(decode_array(answer["row"], "float64"), x.ravel())


def test_loads_of_invalid_json_raises_like_json_loads() -> None:
    with pytest.raises(json.JSONDecodeError):
        loads(b'{"a": "' + b"A" * 5000)
