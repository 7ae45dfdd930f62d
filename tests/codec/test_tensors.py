"""The tensor wire format (CONVENTIONS section 3): exact round trips and every rejection.

The base64 oracle is ``struct.pack`` over the elements in C order (lexicographic multi-index order
from ``itertools.product``), so it does not rely on NumPy's own byte layout.
"""

import base64
import itertools
import json
import struct

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from pydantic import ValidationError

from service.codec import DecodeLimits, Tensor, decode_tensor, encode_tensor
from service.engine.errors import LimitExceeded

float64_arrays = hnp.arrays(
    np.float64,
    hnp.array_shapes(min_dims=0, max_dims=4, min_side=1, max_side=4),
    elements=st.floats(allow_nan=False, allow_infinity=False, width=64),
)
float32_arrays = hnp.arrays(
    np.float32,
    hnp.array_shapes(min_dims=0, max_dims=3, min_side=1, max_side=4),
    elements=st.floats(allow_nan=False, allow_infinity=False, width=32),
)


def c_order_elements(array: np.ndarray) -> list[float]:
    return [float(array[index]) for index in itertools.product(*(range(d) for d in array.shape))]


def packed(array: np.ndarray, fmt: str = "d") -> str:
    values = c_order_elements(array)
    return base64.b64encode(struct.pack(f"<{len(values)}{fmt}", *values)).decode("ascii")


def validate(raw: str | bytes, **limits: int) -> Tensor:
    return Tensor.model_validate_json(raw, context={"limits": DecodeLimits(**limits)})


def places(error: ValidationError) -> set[tuple]:
    """Error locations with pydantic's union member tags removed (they name no JSON place)."""
    tags = ("float", "str", "int")

    def keep(part) -> bool:
        return isinstance(part, int) or ("[" not in part and part not in tags)

    return {tuple(p for p in e["loc"] if keep(p)) for e in error.errors()}


def nested(array: np.ndarray) -> object:
    """Nested Python lists of floats built by indexing, not by ``ndarray.tolist``."""
    if array.ndim == 0:
        return float(array[()])
    return [nested(array[i]) for i in range(array.shape[0])]


def same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    return a.shape == b.shape and a.dtype == b.dtype and a.tobytes() == b.tobytes()


# -- round trips ---------------------------------------------------------------------------------


@given(array=float64_arrays, encoding=st.sampled_from(["list", "base64"]))
def test_round_trip_is_bit_exact(array: np.ndarray, encoding: str) -> None:
    out = encode_tensor(array, encoding)
    wire = out.model_dump_json()
    back = decode_tensor(Tensor.model_validate_json(wire))
    assert back.dtype == np.float64
    assert same_bits(back, array)  # bit-exact, -0.0 and subnormals included
    assert json.loads(wire)["shape"] == list(array.shape)


@given(array=float64_arrays)
def test_list_encoding_is_nested_lists(array: np.ndarray) -> None:
    out = encode_tensor(array, "list")
    assert out.encoding == "list" and out.dtype == "float64" and out.shape == list(array.shape)
    assert out.data == nested(array)


@given(array=float64_arrays)
def test_base64_is_little_endian_c_order_bytes(array: np.ndarray) -> None:
    expected = packed(array)
    assert expected == base64.b64encode(np.ascontiguousarray(array).astype("<f8").tobytes()).decode(
        "ascii"
    )
    assert encode_tensor(array, "base64").data == expected
    # The wire order is C whatever the memory layout or the math order of the array.
    assert encode_tensor(np.asfortranarray(array), "base64").data == expected
    if array.ndim >= 2:
        transposed_view = np.ascontiguousarray(array.T).T  # F-contiguous, same values
        assert encode_tensor(transposed_view, "base64").data == expected


def test_base64_of_a_big_endian_array_is_still_little_endian() -> None:
    array = np.array([[1.0, -2.5], [3.25, 1e-300]], dtype=">f8")
    assert encode_tensor(array, "base64").data == packed(array.astype(np.float64))


def test_decoding_base64_reads_c_order() -> None:
    # Bytes 1..6 in C order over shape (2, 3) are [[1, 2, 3], [4, 5, 6]].
    raw = base64.b64encode(struct.pack("<6d", 1, 2, 3, 4, 5, 6)).decode()
    body = json.dumps({"encoding": "base64", "shape": [2, 3], "data": raw})
    assert decode_tensor(validate(body)).tolist() == [[1, 2, 3], [4, 5, 6]]


def test_schema_example_decodes() -> None:
    body = (
        '{"encoding": "base64", "shape": [2], "dtype": "float64", '
        '"data": "AAAAAAAA8D8AAAAAAAAAQA=="}'
    )
    assert decode_tensor(validate(body)).tolist() == [1.0, 2.0]


@given(array=float32_arrays)
def test_float32_base64_decodes_to_the_float32_values_exactly(array: np.ndarray) -> None:
    body = json.dumps(
        {
            "encoding": "base64",
            "dtype": "float32",
            "shape": list(array.shape),
            "data": packed(array, "f"),
        }
    )
    back = decode_tensor(validate(body))
    assert back.dtype == np.float64
    assert same_bits(back, array.astype(np.float64))


def test_decoded_array_is_read_only() -> None:
    back = decode_tensor(validate('{"data": [1, 2]}'))
    with pytest.raises(ValueError):
        back[0] = 5.0


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ('{"data": 2.5}', 2.5),
        ('{"data": 2.5, "shape": []}', 2.5),
        ('{"data": 3}', 3.0),
        ('{"data": [[1, 2], [3, 4]], "shape": [2, 2]}', [[1.0, 2.0], [3.0, 4.0]]),
        ('{"data": [1, 2], "shape": null}', [1.0, 2.0]),
        ('{"data": [1e308, -1e-320, -0.0]}', [1e308, -1e-320, -0.0]),
    ],
)
def test_valid_list_tensors(raw: str, expected) -> None:
    back = decode_tensor(validate(raw))
    assert back.dtype == np.float64
    assert back.tolist() == expected
    assert back.shape == np.shape(expected)


# -- rejections (422: ValidationError) -----------------------------------------------------------

B64_ONE = base64.b64encode(struct.pack("<d", 1.0)).decode()  # 8 bytes: one float64

REJECTED = {
    "ragged": ('{"data": [[1, 2], [3]]}', ("data",)),
    "ragged-deep": ('{"data": [[1, [2]], [3, 4]]}', ("data",)),
    "ragged-scalar-then-list": ('{"data": [1, [2]]}', ("data",)),
    "bool-top": ('{"data": true}', ("data",)),
    "bool-nested": ('{"data": [[1, 2], [3, false]]}', ("data", 1, 1)),
    "bool-in-list": ('{"data": [true]}', ("data", 0)),
    "string-top": ('{"data": "1.0"}', ("data",)),
    "string-nested": ('{"data": [1, "2"]}', ("data", 1)),
    "null-top": ('{"data": null}', ("data",)),
    "null-nested": ('{"data": [1, null]}', ("data", 1)),
    "nan": ('{"data": [1, NaN]}', ("data", 1)),
    "infinity": ('{"data": [1, Infinity]}', ("data", 1)),
    "minus-infinity": ('{"data": [[1], [-Infinity]]}', ("data", 1, 0)),
    "nan-top": ('{"data": NaN}', ("data",)),
    "overflow-1e400": ('{"data": [1, 1e400]}', ("data", 1)),
    "overflow-minus-1e400": ('{"data": -1e400}', ("data",)),
    "empty-list": ('{"data": []}', ("data",)),
    "empty-inner-list": ('{"data": [[]]}', ("data",)),
    "zero-dim": ('{"data": [[1]], "shape": [1, 0]}', ("shape", 1)),
    "negative-dim": ('{"data": [1], "shape": [-1]}', ("shape", 0)),
    "zero-dim-base64": (json.dumps({"encoding": "base64", "data": "", "shape": [0]}), ("shape", 0)),
    "bool-dim": ('{"data": [1], "shape": [true]}', ("shape", 0)),
    "shape-contradicts-list": ('{"data": [[1, 2], [3, 4]], "shape": [4]}', ("data",)),
    "shape-contradicts-scalar": ('{"data": 1, "shape": [1]}', ("data",)),
    "base64-too-few-bytes": (
        json.dumps({"encoding": "base64", "data": B64_ONE, "shape": [2]}),
        ("data",),
    ),
    "base64-too-many-bytes": (
        json.dumps({"encoding": "base64", "data": B64_ONE * 2, "shape": [1]}),
        ("data",),
    ),
    "base64-float32-count": (
        json.dumps({"encoding": "base64", "dtype": "float32", "data": B64_ONE, "shape": [1]}),
        ("data",),
    ),
    "base64-without-shape": (json.dumps({"encoding": "base64", "data": B64_ONE}), ("data",)),
    "base64-invalid-character": (
        json.dumps({"encoding": "base64", "data": "AAAAAAAA8D!=", "shape": [1]}),
        ("data",),
    ),
    "base64-url-alphabet": (
        json.dumps({"encoding": "base64", "data": "_-_-_-_-_-_-_-_-_-_-_-8=", "shape": [2]}),
        ("data",),
    ),
    "base64-missing-padding": (
        json.dumps({"encoding": "base64", "data": B64_ONE.rstrip("="), "shape": [1]}),
        ("data",),
    ),
    "base64-with-list-data": (
        json.dumps({"encoding": "base64", "data": [1.0], "shape": [1]}),
        ("data",),
    ),
    "list-with-string-data": (json.dumps({"encoding": "list", "data": B64_ONE}), ("data",)),
    "base64-nan-bytes": (
        json.dumps(
            {
                "encoding": "base64",
                "shape": [1],
                "data": base64.b64encode(struct.pack("<d", float("nan"))).decode(),
            }
        ),
        ("data",),
    ),
    "base64-inf-float32": (
        json.dumps(
            {
                "encoding": "base64",
                "shape": [1],
                "dtype": "float32",
                "data": base64.b64encode(struct.pack("<f", float("inf"))).decode(),
            }
        ),
        ("data",),
    ),
    "extra-field": ('{"data": [1], "units": "m"}', ("units",)),
    "missing-data": ('{"shape": [1]}', ("data",)),
    "unknown-encoding": ('{"data": [1], "encoding": "hex"}', ("encoding",)),
    "unknown-dtype": ('{"data": [1], "dtype": "int32"}', ("dtype",)),
    "rank-9-list": ('{"data": [[[[[[[[[1]]]]]]]]]}', ("data",)),
    "rank-9-base64": (
        json.dumps({"encoding": "base64", "data": B64_ONE, "shape": [1] * 9}),
        ("data",),
    ),
}


@pytest.mark.parametrize(("raw", "place"), list(REJECTED.values()), ids=list(REJECTED))
def test_rejected_with_the_offending_place(raw: str, place: tuple) -> None:
    with pytest.raises(ValidationError) as excinfo:
        validate(raw)
    assert place in places(excinfo.value), excinfo.value.errors()


def test_rank_8_is_accepted_and_rank_over_max_rank_is_refused() -> None:
    assert decode_tensor(validate('{"data": [[[[[[[[1]]]]]]]]}')).shape == (1,) * 8
    with pytest.raises(ValidationError, match="rank 3 exceeds the maximum rank 2"):
        validate('{"data": [[[1]]]}', max_rank=2)


def test_messages_name_the_problem() -> None:
    with pytest.raises(ValidationError, match=r"holds 8 bytes .* needs 16"):
        validate(json.dumps({"encoding": "base64", "data": B64_ONE, "shape": [2]}))
    with pytest.raises(ValidationError, match=r"data has shape \[2, 2\] but shape says \[4\]"):
        validate('{"data": [[1, 2], [3, 4]], "shape": [4]}')
    with pytest.raises(ValidationError, match="ragged"):
        validate('{"data": [[1, 2], [3]]}')


@pytest.mark.parametrize("text", ["!!!", "AAAA AAA", "AAAAAAAA8D8", "AAAAAAAA8D8=="])
def test_text_that_is_no_base64_is_told_so_whatever_its_length(text: str) -> None:
    # Lengths that differ from the shape's 8 bytes: the size it "holds" would mean nothing.
    with pytest.raises(ValidationError, match="not valid standard base64 with padding"):
        validate(json.dumps({"encoding": "base64", "data": text, "shape": [1]}))


# -- size limits (413: LimitExceeded, not a ValidationError) --------------------------------------


@pytest.mark.parametrize(
    "raw",
    [
        json.dumps({"data": list(range(11))}),
        json.dumps({"data": [[1.0] * 4] * 3}),
        json.dumps({"data": [[1.0] * 11], "shape": [1, 11]}),
        # Refused on the declared shape before the (absent) bytes are looked at.
        json.dumps({"encoding": "base64", "data": "", "shape": [11]}),
        json.dumps({"encoding": "base64", "data": B64_ONE, "shape": [10**9, 10**9]}),
    ],
    ids=["list-11", "list-3x4", "list-with-shape", "base64-11", "base64-1e18"],
)
def test_over_max_elements_is_limit_exceeded(raw: str) -> None:
    with pytest.raises(LimitExceeded) as excinfo:
        validate(raw, max_elements=10)
    assert not isinstance(excinfo.value, ValueError)
    assert excinfo.value.limit == 10
    assert excinfo.value.estimate > 10
    assert "tensor" in excinfo.value.quantity


def test_exactly_max_elements_is_accepted() -> None:
    assert (
        decode_tensor(validate(json.dumps({"data": list(range(10))}), max_elements=10)).size == 10
    )
    body = json.dumps({"encoding": "base64", "shape": [10], "data": packed(np.arange(10.0))})
    assert decode_tensor(validate(body, max_elements=10)).tolist() == list(range(10))


def test_limit_estimate_is_the_element_count() -> None:
    with pytest.raises(LimitExceeded) as excinfo:
        validate(json.dumps({"data": [[1.0] * 4] * 3}), max_elements=10)
    assert excinfo.value.estimate == 12
