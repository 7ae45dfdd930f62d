"""The binary reader's arrays are views of the request body where alignment allows."""

import gc
import json
import weakref

import numpy as np
import pytest
from pydantic import ValidationError

from service.api.schemas.tensors import VecRequest
from service.codec import decode_tensor
from service.codec.binary import Segment, read_binary_body, split_segments


def body_with_padding(padding: int) -> tuple[bytes, np.ndarray]:
    # The header is padded with spaces so that the segment starts `padding` bytes after a
    # multiple of 8 (the bytes object's buffer itself is 8-aligned).
    x = np.arange(12.0).reshape(3, 4)
    header = json.dumps({"x": {"encoding": "binary", "shape": [3, 4], "binary_data_size": 96}})
    header += " " * ((8 - len(header) % 8) % 8 + padding)
    return header.encode() + x.tobytes(), x


def test_an_aligned_segment_is_a_zero_copy_view_through_validation() -> None:
    body, x = body_with_padding(0)
    header, segments = read_binary_body(body, str(len(body) - 96), 1000, 8)
    [segment] = segments
    assert np.shares_memory(segment, np.frombuffer(body, dtype=np.uint8))
    request = VecRequest.model_validate_json(header, context={"binary_segments": segments})
    tensor = decode_tensor(request.x)
    assert np.shares_memory(tensor, np.frombuffer(body, dtype=np.uint8))
    assert tensor.dtype == np.float64 and not tensor.flags.writeable
    np.testing.assert_array_equal(tensor, x)


def test_an_unaligned_segment_is_copied_to_an_aligned_array() -> None:
    body, x = body_with_padding(3)
    _, [segment] = read_binary_body(body, str(len(body) - 96), 1000, 8)
    assert not np.shares_memory(segment, np.frombuffer(body, dtype=np.uint8))
    assert segment.flags.aligned
    np.testing.assert_array_equal(segment, x)


@pytest.mark.parametrize("dtype", ["float64", "float32", "int64"])
@pytest.mark.parametrize("padding", range(8))
def test_a_segment_is_a_view_exactly_when_its_address_is_a_multiple_of_its_item_size(
    dtype: str, padding: int
) -> None:
    values = np.arange(6).astype(dtype).reshape(2, 3)
    descriptor = {"encoding": "binary", "shape": [2, 3], "dtype": dtype}
    header = json.dumps({"x": {**descriptor, "binary_data_size": values.nbytes}})
    header += " " * ((8 - len(header) % 8) % 8 + padding)
    body = header.encode() + values.tobytes()
    _, [segment] = read_binary_body(body, str(len(header)), 1000, 8)
    address = np.frombuffer(body, dtype=np.uint8).ctypes.data + len(header)
    view = np.shares_memory(segment, np.frombuffer(body, dtype=np.uint8))
    assert view == (address % values.itemsize == 0)
    assert segment.flags.aligned and segment.dtype == values.dtype
    np.testing.assert_array_equal(segment, values)


def test_tensors_validated_after_the_body_find_the_request_segments() -> None:
    # A program's graph-node parameters are validated when the program is built, without the
    # body's validation context: the request's segments reach them through a context variable.
    import contextvars

    from service.codec import Tensor
    from service.codec.binary import REQUEST_SEGMENTS

    body, x = body_with_padding(0)
    header, segments = read_binary_body(body, str(len(body) - 96), 1000, 8)
    node_parameter = json.dumps(json.loads(header)["x"])

    def validate_later() -> np.ndarray:
        REQUEST_SEGMENTS.set(segments)
        return decode_tensor(Tensor.model_validate_json(node_parameter))

    np.testing.assert_array_equal(contextvars.copy_context().run(validate_later), x)
    with pytest.raises(ValidationError, match="application/octet-stream"):
        Tensor.model_validate_json(node_parameter)  # a JSON-only request has no segments


def test_split_segments_leaves_no_reference_cycle() -> None:
    # A cycle through the segments would keep an answer's arrays until the next collection.
    array = np.arange(4.0)
    ref = weakref.ref(array)
    document = {"y": [{"encoding": "binary", "shape": [4], "data": Segment(array)}]}
    gc.disable()
    try:
        header, segments = split_segments(document)
        assert header == {"y": [{"encoding": "binary", "shape": [4], "binary_data_size": 32}]}
        assert len(segments) == 1 and segments[0].array is array
        del header, segments, document, array
        assert ref() is None
    finally:
        gc.enable()
