"""Tensors on the wire, written from the service's CONVENTIONS section 3 alone.

A request body is built as plain JSON-able values in which every tensor is a :class:`Wire`
marker holding its array. :func:`encode_body` then writes the markers in one of three encodings:

* ``"list"``: ``{"data": nested lists, "shape": [...]}`` (float64 values are exact in JSON);
* ``"base64"``: ``{"encoding": "base64", "shape", "dtype", "data": "<base64>"}`` of the
  little-endian C-order bytes (``ndarray.tobytes()``);
* ``"binary"`` (section 3.1): ``{"encoding": "binary", "shape", "dtype", "binary_data_size"}``
  in a JSON header, followed by the raw segments **in the order the tensors appear in the JSON
  text**. The walk below visits values in exactly the order ``json.dumps`` writes them.

:func:`resolve_segments` is the reader of a binary response (JSON header, then one segment per
``binary_data_size`` in header order); :func:`loads` reads a JSON answer, leaving its base64 text
in the response bytes; :func:`decode_tensor` and :func:`decode_array` read any of the three forms
into NumPy (base64 with pybase64, several times faster than the standard library).
"""

from __future__ import annotations

import json
import math
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, TypeAlias

import numpy as np
import numpy.typing as npt
import pybase64

Encoding: TypeAlias = Literal["binary", "base64", "list"]
ENCODINGS: tuple[Encoding, ...] = ("binary", "base64", "list")
Kind: TypeAlias = Literal["tensor", "index", "values"]

HEADER_LENGTH = "Inference-Header-Content-Length"
OCTET_STREAM = "application/octet-stream"
WIRE_DTYPES: dict[str, np.dtype[Any]] = {
    "float64": np.dtype("<f8"),
    "float32": np.dtype("<f4"),
    "int64": np.dtype("<i8"),
}


@dataclass(frozen=True)
class Wire:
    """A NumPy array to be written as a tensor (or a COO index/value vector).

    Parameters
    ----------
    array : ndarray
        float64 or float32 for ``kind="tensor"``; 1-D int64 (``"index"``) or float64
        (``"values"``) for the ``row``/``col``/``data`` vectors of a COO Jacobian.
    kind : {"tensor", "index", "values"}
    """

    array: npt.NDArray[Any]
    kind: Kind = "tensor"


def as_tensor(value: Any) -> Wire:
    """Wrap anything ``np.asarray`` accepts as a tensor marker.

    float32 arrays stay float32 (the wire allows it and it halves the bytes); every other real
    dtype is converted to float64, the service's type.

    Parameters
    ----------
    value : array_like, any shape

    Returns
    -------
    Wire

    Raises
    ------
    TypeError
        For a complex array: the service computes over the reals, and a cast would silently
        drop the imaginary part.
    """
    if isinstance(value, Wire):
        return value
    array = real_array(value)
    if array.dtype != np.float32:
        array = array.astype(np.float64, copy=False)
    return Wire(array)


def real_array(value: Any) -> npt.NDArray[Any]:
    """Return ``np.asarray(value)``, refusing a complex array.

    Raises
    ------
    TypeError
        For a complex array: the service computes over the reals, and a cast to float64 would
        drop the imaginary part with only a ComplexWarning.
    """
    array = np.asarray(value)
    if array.dtype.kind == "c":
        raise TypeError(f"a tensor must be real, got {array.dtype}; send .real and .imag apart")
    return array


def _dtype_name(array: npt.NDArray[Any]) -> str:
    for name, dtype in WIRE_DTYPES.items():
        if array.dtype.kind == dtype.kind and array.dtype.itemsize == dtype.itemsize:
            return name
    raise TypeError(f"no wire dtype for {array.dtype}")


def _write(marker: Wire, encoding: Encoding, segments: list[bytes]) -> Any:
    array = marker.array
    if encoding == "list":
        # A COO vector is a flat list; a tensor carries its shape so that rank 0 stays rank 0.
        if marker.kind != "tensor":
            return array.tolist()
        return {"data": array.tolist(), "shape": list(array.shape)}
    raw = np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<")).tobytes()
    if encoding == "base64":
        text = pybase64.b64encode(raw).decode("ascii")
        if marker.kind != "tensor":
            return text
        return {
            "encoding": "base64",
            "shape": list(array.shape),
            "dtype": _dtype_name(array),
            "data": text,
        }
    segments.append(raw)
    return {
        "encoding": "binary",
        "shape": list(array.shape),
        "dtype": _dtype_name(array),
        "binary_data_size": len(raw),
    }


def _walk(value: Any, encoding: Encoding, segments: list[bytes]) -> Any:
    # Depth first, dicts in insertion order and lists in order: json.dumps's order.
    if isinstance(value, Wire):
        return _write(value, encoding, segments)
    if isinstance(value, Mapping):
        return {key: _walk(item, encoding, segments) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_walk(item, encoding, segments) for item in value]
    return value


def write_json(value: Any, encoding: Literal["base64", "list"]) -> Any:
    """Return ``value`` with its tensor markers written as JSON tensors (no binary segments)."""
    return _walk(value, encoding, [])


@dataclass(frozen=True)
class Body:
    """An encoded request body: its bytes and the headers that describe them."""

    content: bytes
    headers: dict[str, str]


def encode_body(body: Mapping[str, Any], encoding: Encoding) -> Body:
    """Write a request body whose tensors are :class:`Wire` markers.

    Parameters
    ----------
    body : mapping
        JSON-able values and markers.
    encoding : {"binary", "base64", "list"}

    Returns
    -------
    Body
        JSON (``application/json``), or for ``"binary"`` the JSON header followed by the
        segments (``application/octet-stream`` with ``Inference-Header-Content-Length``).
    """
    segments: list[bytes] = []
    header = json.dumps(_walk(body, encoding, segments), separators=(",", ":")).encode()
    if encoding != "binary":
        return Body(header, {"Content-Type": "application/json"})
    # Trailing spaces (valid JSON) up to a multiple of 8 bytes: the server uses aligned float64
    # and int64 segments in place instead of copying them.
    header += b" " * (-len(header) % 8)
    return Body(
        b"".join([header, *segments]),
        {"Content-Type": OCTET_STREAM, HEADER_LENGTH: str(len(header))},
    )


class WireFormatError(ValueError):
    """A response does not follow the wire format (a client or server bug, not a user error)."""


def resolve_segments(header: Any, payload: memoryview) -> Any:
    """Replace each binary tensor of a decoded JSON header by the array its segment holds.

    Parameters
    ----------
    header : JSON value
        The response's JSON header, parsed with dicts in text order.
    payload : memoryview
        The bytes after the header; consumed segment by segment in header order.

    Returns
    -------
    JSON value
        The header with every ``{"encoding": "binary", ...}`` object replaced by an ndarray of
        its ``dtype`` and ``shape`` (a read-only view of ``payload``).

    Raises
    ------
    WireFormatError
        If a segment runs past the payload, disagrees with its shape, or bytes are left over.
    """
    offset = 0

    def visit(value: Any) -> Any:
        nonlocal offset
        if isinstance(value, dict):
            if value.get("encoding") == "binary" and "binary_data_size" in value:
                size = int(value["binary_data_size"])
                dtype = WIRE_DTYPES[value.get("dtype", "float64")]
                shape = tuple(int(n) for n in value["shape"])
                if size != math.prod(shape) * dtype.itemsize or offset + size > len(payload):
                    raise WireFormatError(f"binary segment of {size} bytes does not fit {value}")
                array = np.frombuffer(payload[offset : offset + size], dtype=dtype)
                offset += size
                return array.reshape(shape)
            return {key: visit(item) for key, item in value.items()}
        if isinstance(value, list):
            return [visit(item) for item in value]
        return value

    resolved = visit(header)
    if offset != len(payload):
        raise WireFormatError(f"{len(payload) - offset} bytes after the last binary segment")
    return resolved


def split_binary(content: bytes, header_length: int) -> Any:
    """Parse a binary body: ``header_length`` bytes of JSON, then the segments."""
    if not 0 <= header_length <= len(content):
        raise WireFormatError(f"header length {header_length} outside a {len(content)}-byte body")
    view = memoryview(content)
    return resolve_segments(json.loads(bytes(view[:header_length])), view[header_length:])


# JSON strings at least this long without escapes are left in the body as views (see loads).
LONG_STRING = 4096
_BACKSLASH = 0x5C


def _string_end(content: bytes, opening: int) -> int:
    """Return the index of the quote that closes the JSON string opened at ``opening`` (-1: none).

    A quote preceded by an odd run of backslashes is escaped and belongs to the string.
    """
    end = content.find(b'"', opening + 1)
    while end > 0:
        before = end - 1
        while content[before] == _BACKSLASH:
            before -= 1
        if (end - 1 - before) % 2 == 0:
            return end
        end = content.find(b'"', end + 1)
    return end


def loads(content: bytes) -> Any:
    """Parse a JSON answer; every long string without escapes comes back as a ``memoryview``.

    A 43 MB base64 answer spends most of ``json.loads`` making Python strings of its base64
    text, only for the client to decode them again. Base64 needs no JSON escapes, so a long
    string free of backslashes is exactly the bytes between its quotes: each is cut out of the
    document (found by jumping from quote to quote, ``bytes.find`` speed), the rest is parsed as
    usual with a tag in its place, and the tag is replaced by a view of the response bytes, which
    :func:`decode_tensor` and :func:`decode_array` decode without a copy. Short strings, and long
    ones with escapes, are parsed by ``json.loads`` as always.

    Parameters
    ----------
    content : bytes
        A UTF-8 JSON document.

    Returns
    -------
    JSON value
        As ``json.loads(content)``, with long escape-free strings as memoryviews of ``content``.
    """
    view = memoryview(content)
    tag = f"\x00{uuid.uuid4().hex}-"
    pieces: list[bytes] = []
    texts: dict[str, memoryview] = {}
    start = 0
    opening = content.find(b'"')
    while opening >= 0:
        closing = _string_end(content, opening)
        if closing < 0:
            break  # not JSON: json.loads below says where
        if closing - opening > LONG_STRING and content.find(b"\\", opening, closing) < 0:
            name = f"{tag}{len(texts)}"
            pieces += [content[start:opening], json.dumps(name).encode()]
            texts[name] = view[opening + 1 : closing]
            start = closing + 1
        opening = content.find(b'"', closing + 1)
    if not texts:
        return json.loads(content)
    pieces.append(content[start:])

    def put_back(value: Any) -> Any:
        if isinstance(value, str):
            return texts.get(value, value)
        if isinstance(value, dict):
            return {key: put_back(item) for key, item in value.items()}
        if isinstance(value, list):
            return [put_back(item) for item in value]
        return value

    return put_back(json.loads(b"".join(pieces)))


def decode_array(value: Any, dtype: str) -> npt.NDArray[Any]:
    """Read a 1-D COO vector: a list, base64 text of ``dtype`` bytes, or a resolved array."""
    if isinstance(value, np.ndarray):
        return value
    if isinstance(value, str | memoryview):
        raw = pybase64.b64decode(value, validate=True)
        return np.frombuffer(raw, dtype=WIRE_DTYPES[dtype])
    return np.asarray(value, dtype=WIRE_DTYPES[dtype].newbyteorder("="))


def decode_tensor(value: Any) -> npt.NDArray[np.float64]:
    """Read a response tensor in any encoding into a float64 array of its shape.

    Parameters
    ----------
    value : dict or ndarray
        ``{"encoding": "list" | "base64", "shape", "dtype", "data"}``, or the array that
        :func:`resolve_segments` made of a binary tensor.

    Returns
    -------
    ndarray of float64, shape ``value["shape"]``
    """
    if isinstance(value, np.ndarray):
        return value.astype(np.float64, copy=False)
    shape = tuple(int(n) for n in value["shape"])
    if value.get("encoding") == "base64":
        dtype = WIRE_DTYPES[value.get("dtype", "float64")]
        raw = pybase64.b64decode(value["data"], validate=True)
        return np.frombuffer(raw, dtype=dtype).reshape(shape).astype(np.float64, copy=False)
    return np.asarray(value["data"], dtype=np.float64).reshape(shape)
