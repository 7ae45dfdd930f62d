"""Binary bodies (CONVENTIONS section 3.1): a JSON header, then raw tensor segments.

Request: the first ``N`` bytes (``N`` = the ``Inference-Header-Content-Length`` header) are the JSON
document. Every object in it that has a ``binary_data_size`` key is a binary tensor::

    {"encoding": "binary", "shape": [d_1, ..., d_n], "dtype": "float64" | "float32" | "int64",
     "binary_data_size": n}

whose bytes (little-endian, C order over ``shape``) are the next ``n`` bytes of the body, the
segments following one another in the order the tensors appear in the JSON text. The header is
read without knowing the request model, so the tensors of any field, present or future, are found
the same way. Every descriptor, and the body's length, is checked before any segment becomes an
array; a segment then becomes a zero-copy view of the body when its offset is aligned for its
dtype (a copy otherwise).

The checked header is handed to the model's own JSON validation with each descriptor's ``data``
set to the index of its segment, and the segments in the validation context: a tensor model reads
its array from there (:func:`segment_for`). A descriptor in a JSON-only body finds no segments and
is refused with a pointer to it.

Response: tensors encoded as ``"binary"`` carry a :class:`Segment` in ``data``;
:func:`split_segments` replaces each by ``binary_data_size`` and returns the arrays in the order of
the header, which is the order of the segments after it.
"""

import json
import math
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

import numpy as np
from pydantic import ValidationInfo

from ..engine.errors import LimitExceeded
from .errors import CodecError

HEADER_LENGTH = "Inference-Header-Content-Length"
# The dtypes a segment may carry: tensors take the float types, COO indices int64.
SEGMENT_DTYPES: dict[str, np.dtype[Any]] = {
    "float64": np.dtype("<f8"),
    "float32": np.dtype("<f4"),
    "int64": np.dtype("<i8"),
}
# Segments start at multiples of this many bytes when the JSON header is padded to it
# (:func:`pad_header`): the largest itemsize of SEGMENT_DTYPES.
SEGMENT_ALIGNMENT = 8
# A segment whose array is narrower than its wire dtype is widened this many bytes at a time.
WIDEN_CHUNK_BYTES = 1 << 20
_DESCRIPTOR_KEYS = ("encoding", "shape", "dtype", "binary_data_size")
Loc = tuple[str | int, ...]


# The segments of the binary body being answered, for tensors validated after the body (the
# parameters of a program's graph nodes are validated when the program is built). The API sets a
# fresh list per request; the worker threads it runs see it through their copied context.
REQUEST_SEGMENTS: ContextVar[list[np.ndarray[Any, Any]] | None] = ContextVar(
    "request_segments", default=None
)


class BinaryBodyError(CodecError):
    """A binary body whose framing is wrong; ``loc`` is the path of the tensor in the header.

    Parameters
    ----------
    loc : tuple of str and int
        Keys and list indices from the header's root to the offending value (``()``: the body).
    message : str
    header : bytes
        The JSON header, so that the API can turn ``loc`` into a JSON Pointer.
    """

    def __init__(self, loc: Loc, message: str, header: bytes = b"") -> None:
        super().__init__(message)
        self.loc = loc
        self.message = message
        self.header = header


class Segment:
    """The array of one binary tensor of a response, and the dtype it has on the wire.

    ``array`` is C-contiguous. When its dtype is the wire dtype (little-endian), the segment is
    sent straight from its buffer; otherwise (int32 COO indices, whose wire dtype is int64) it is
    widened :data:`WIDEN_CHUNK_BYTES` at a time while it is sent, so that a full-size widened
    copy never sits next to the engine's array.

    Deliberately not a dataclass: pydantic passes unknown objects through ``model_dump``
    unchanged, where it would turn a dataclass into a dict.
    """

    __slots__ = ("array", "dtype")

    def __init__(self, array: np.ndarray[Any, Any], dtype: np.dtype[Any] | None = None) -> None:
        self.array = array
        self.dtype = array.dtype if dtype is None else dtype

    @property
    def nbytes(self) -> int:
        """Bytes of the segment on the wire."""
        return self.array.size * self.dtype.itemsize

    def chunks(self) -> Iterator[memoryview]:
        """Yield the segment's wire bytes: one view of the array, or widened chunks of it."""
        flat = self.array.reshape(-1)
        if flat.dtype == self.dtype:
            if flat.size:
                yield memoryview(flat).cast("B")  # type: ignore[arg-type]
            return
        step = max(WIDEN_CHUNK_BYTES // self.dtype.itemsize, 1)
        for start in range(0, flat.size, step):
            yield memoryview(flat[start : start + step].astype(self.dtype)).cast("B")  # type: ignore[arg-type]


@dataclass(frozen=True)
class _Descriptor:
    loc: Loc
    node: dict[str, Any]
    dtype: np.dtype[Any]
    shape: tuple[int, ...]
    offset: int
    size: int


def _pairs_without_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # A repeated key would move a tensor's place in the text away from its place in the document.
    document: dict[str, Any] = {}
    for key, value in pairs:
        if key in document:
            raise BinaryBodyError((), f"the JSON header repeats the key {key!r}")
        document[key] = value
    return document


def _header_length(value: str | None, body_length: int) -> int:
    if value is None:
        raise BinaryBodyError(
            (), f"an application/octet-stream body needs the {HEADER_LENGTH} header: the length "
            "of its JSON header in bytes"
        )  # fmt: skip
    text = value.strip()
    if not text.isdigit() or len(text) > 20:
        raise BinaryBodyError((), f"{HEADER_LENGTH} must be a byte count, got {value!r}")
    length = int(text)
    if length > body_length:
        raise BinaryBodyError(
            (), f"{HEADER_LENGTH} is {length} but the body has only {body_length} bytes"
        )
    return length


def _descriptors(document: Any) -> list[tuple[Loc, dict[str, Any]]]:
    """Return every object with ``binary_data_size`` and its path, in JSON text order.

    Objects keep their keys in text order, so a depth-first walk visits values in text order.
    The walk is iterative: the header's nesting depth is bounded only by the JSON parser.
    """
    found: list[tuple[Loc, dict[str, Any]]] = []
    stack: list[tuple[Loc, Any]] = [((), document)]
    while stack:
        loc, node = stack.pop()
        if isinstance(node, dict):
            if "binary_data_size" in node:
                found.append((loc, node))
                continue
            children: list[tuple[Loc, Any]] = [((*loc, key), value) for key, value in node.items()]
        elif isinstance(node, list):
            children = [
                ((*loc, i), item) for i, item in enumerate(node) if isinstance(item, dict | list)
            ]
        else:
            continue
        stack.extend(reversed(children))
    return found


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_descriptor(
    loc: Loc, node: dict[str, Any], offset: int, end: int, max_elements: int, max_rank: int
) -> _Descriptor:
    """Check one descriptor against its shape and the bytes left; nothing is read yet."""
    extra = [key for key in node if key not in _DESCRIPTOR_KEYS]
    if extra:
        raise BinaryBodyError(
            (*loc, extra[0]), f"a binary tensor has only {', '.join(_DESCRIPTOR_KEYS)}; its bytes "
            f"follow the JSON header, so {extra[0]!r} is not allowed"
        )  # fmt: skip
    if node.get("encoding") != "binary":
        raise BinaryBodyError(
            (*loc, "encoding"), "an object with binary_data_size needs encoding 'binary'"
        )
    shape = node.get("shape")
    if not isinstance(shape, list) or not all(_is_count(d) and d >= 1 for d in shape):
        raise BinaryBodyError((*loc, "shape"), "a binary tensor needs shape: a list of ints >= 1")
    if len(shape) > max_rank:
        raise BinaryBodyError(
            (*loc, "shape"), f"rank {len(shape)} exceeds the maximum rank {max_rank}"
        )
    dtype_name = node.get("dtype", "float64")
    if dtype_name not in SEGMENT_DTYPES:
        raise BinaryBodyError(
            (*loc, "dtype"), f"dtype must be one of {', '.join(SEGMENT_DTYPES)}, got {dtype_name!r}"
        )
    size = node["binary_data_size"]
    if not _is_count(size) or size < 0:
        raise BinaryBodyError((*loc, "binary_data_size"), "binary_data_size must be an int >= 0")
    elements = math.prod(shape)
    if elements > max_elements:
        raise LimitExceeded(
            "elements of one tensor", elements, max_elements, setting="max_tensor_elements"
        )
    dtype = SEGMENT_DTYPES[dtype_name]
    expected = elements * dtype.itemsize
    if size != expected:
        raise BinaryBodyError(
            (*loc, "binary_data_size"), f"binary_data_size is {size} but shape {shape} of "
            f"{dtype_name} needs {expected} bytes"
        )  # fmt: skip
    if offset + size > end:
        raise BinaryBodyError(
            (*loc, "binary_data_size"), f"the segment of {size} bytes at body offset {offset} "
            f"runs past the end of the body ({end} bytes)"
        )  # fmt: skip
    return _Descriptor(loc, node, dtype, tuple(shape), offset, size)


def _view(body: bytes, descriptor: _Descriptor) -> np.ndarray[Any, Any]:
    count = descriptor.size // descriptor.dtype.itemsize
    array = np.frombuffer(body, descriptor.dtype, count, descriptor.offset)
    # NumPy sets the flag when it makes the array (reading the address through ``ctypes``
    # costs 2.6 us per segment); for the segment dtypes the alignment is the item size on the
    # 64-bit platforms the service runs on.
    if not array.flags.aligned:
        array = array.copy()  # unaligned: one copy beats slow unaligned arithmetic everywhere
    return array.reshape(descriptor.shape)


def read_binary_body(
    body: bytes, header_length: str | None, max_elements: int, max_rank: int
) -> tuple[bytes, list[np.ndarray[Any, Any]]]:
    """Split a binary body into a JSON header for the request model and the segments' arrays.

    Parameters
    ----------
    body : bytes
        The whole request body.
    header_length : str or None
        The ``Inference-Header-Content-Length`` header as received.
    max_elements, max_rank : int
        Bounds of one tensor, checked before anything is read.

    Returns
    -------
    header : bytes
        The JSON document with each descriptor's ``data`` set to its segment's index (the header
        as received when it is not valid JSON, so that validation reports that).
    segments : list of ndarray
        Read-only arrays of the segments' dtypes and shapes, views of ``body`` where aligned.

    Raises
    ------
    BinaryBodyError
        On a missing or wrong header length, a malformed descriptor, a size that contradicts its
        shape, a segment past the end of the body, or bytes after the last segment.
    LimitExceeded
        If a tensor has more elements than ``max_elements``.
    """
    start = _header_length(header_length, len(body))
    raw_header = body[:start]
    checked: list[_Descriptor] = []
    offset = start
    try:
        try:
            text = raw_header.decode("utf-8")
            document = json.loads(text, object_pairs_hook=_pairs_without_duplicates)
        except (ValueError, RecursionError):
            return raw_header, []  # not JSON: the model's own parser reports where
        for loc, node in _descriptors(document):
            descriptor = _check_descriptor(loc, node, offset, len(body), max_elements, max_rank)
            checked.append(descriptor)
            offset += descriptor.size
        if offset != len(body):
            where = checked[-1].loc if checked else ()
            raise BinaryBodyError(
                where, f"the body has {len(body) - offset} bytes after the last segment (header "
                f"{start} bytes, segments {offset - start} bytes, body {len(body)} bytes)"
            )  # fmt: skip
    except BinaryBodyError as error:
        error.header = raw_header
        raise
    for index, descriptor in enumerate(checked):
        descriptor.node["data"] = index
    header = json.dumps(document, separators=(",", ":")).encode()
    return header, [_view(body, descriptor) for descriptor in checked]


def pad_header(header: bytes) -> bytes:
    """Return a JSON header padded with spaces to a multiple of :data:`SEGMENT_ALIGNMENT` bytes.

    Trailing spaces are insignificant in JSON. With the header padded, every segment whose
    predecessors all have sizes that are multiples of 8 (float64, int64) starts at an 8-aligned
    offset: the reader's arrays can be views of the body instead of copies.
    """
    return header + b" " * (-len(header) % SEGMENT_ALIGNMENT)


def segment_for(data: Any, info: ValidationInfo) -> np.ndarray[Any, Any]:
    """Return the segment a validated binary descriptor refers to (``ValueError`` if none).

    ``data`` is the index :func:`read_binary_body` wrote into the descriptor. The segments come
    from the validation context, or else from :data:`REQUEST_SEGMENTS`; a descriptor in a
    JSON-only body has none to refer to.
    """
    segments = (info.context or {}).get("binary_segments", REQUEST_SEGMENTS.get())
    if segments is None:
        raise ValueError(
            "a binary tensor is only valid in an application/octet-stream body with an "
            f"{HEADER_LENGTH} header (CONVENTIONS 3.1); send list or base64 data in JSON"
        )
    # The index may arrive as a float: the tensor model reads data as numbers.
    if not isinstance(data, int | float) or data != int(data) or not 0 <= data < len(segments):
        raise ValueError("a binary tensor needs binary_data_size and no data of its own")
    return segments[int(data)]  # type: ignore[no-any-return]


def binary_array(values: np.ndarray[Any, Any], dtype: str) -> dict[str, Any]:
    """Write a 1-D array as a binary tensor of a response (COO ``row``/``col``/``data``).

    Integer indices narrower than int64 (the engine builds int32 where they fit) are kept as
    they are and widened only while they are sent (:meth:`Segment.chunks`).
    """
    wire = SEGMENT_DTYPES[dtype]
    source = np.asarray(values)
    # Signed integers of any width or byte order become the wire's int64 chunk by chunk.
    keep = source.dtype.kind == wire.kind == "i"
    array = np.ascontiguousarray(source if keep else source.astype(wire, copy=False))
    return {
        "encoding": "binary",
        "dtype": dtype,
        "shape": list(array.shape),
        "data": Segment(array, wire),
    }


def split_segments(document: Any) -> tuple[Any, list[Segment]]:
    """Replace each tensor's :class:`Segment` by its ``binary_data_size``; return the arrays.

    Parameters
    ----------
    document : dict
        A response dumped to Python objects; tensors encoded as ``"binary"`` hold a
        :class:`Segment` in ``data``.

    Returns
    -------
    header : dict
        The document with ``binary_data_size`` in place of each segment.
    segments : list of Segment
        The segments in header order (JSON text order of the header).
    """
    segments: list[Segment] = []
    return _take_segments(document, segments), segments


def _take_segments(node: Any, segments: list[Segment]) -> Any:
    """Return ``node`` with its segments taken out into ``segments`` (see split_segments).

    A module function, not a closure of :func:`split_segments`: a closure that calls itself is a
    reference cycle (function, cell, function) through which the list of segments, and so every
    array of the answer, stayed alive after the answer was sent, until the next collection.
    """
    if isinstance(node, dict):
        data = node.get("data")
        if isinstance(data, Segment):
            segments.append(data)
            out = {key: value for key, value in node.items() if key != "data"}
            out["binary_data_size"] = data.nbytes
            return out
        return {key: _take_segments(value, segments) for key, value in node.items()}
    if isinstance(node, list):
        return [_take_segments(item, segments) for item in node]
    return node
