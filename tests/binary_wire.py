"""A binary-body writer and reader written from CONVENTIONS section 3.1 alone.

Independent of ``service.codec``: the tests check the service against this reading of the
contract, not against its own code.

* Request: ``Content-Type: application/octet-stream``, ``Inference-Header-Content-Length: N``; the
  first N bytes are the JSON request; each tensor given here as an ndarray becomes
  ``{"encoding": "binary", "shape", "dtype", "binary_data_size"}`` and its ``tobytes()``
  (little-endian, C order) follows the header, in the order the tensors appear in the JSON text.
* Response: the same layout; the header length is in the response header of the same name.
"""

import json
from typing import Any

import numpy as np

HEADER = "Inference-Header-Content-Length"
DTYPES = {"float64": "<f8", "float32": "<f4", "int64": "<i8"}


def encode(document: Any) -> tuple[bytes, dict[str, str]]:
    """Return the body and headers of a binary request; ndarrays in ``document`` become segments.

    The segments are collected while ``json.dumps`` writes the text, so their order is the text
    order by construction.
    """
    segments: list[bytes] = []

    def descriptor(array: np.ndarray) -> dict[str, Any]:
        name = {np.dtype("float64"): "float64", np.dtype("float32"): "float32"}.get(
            array.dtype, "int64"
        )
        raw = np.ascontiguousarray(array, dtype=DTYPES[name]).tobytes()
        segments.append(raw)
        return {
            "encoding": "binary",
            "shape": list(array.shape),
            "dtype": name,
            "binary_data_size": len(raw),
        }

    class Writer(json.JSONEncoder):
        def default(self, value: Any) -> Any:
            if isinstance(value, np.ndarray):
                return descriptor(value)
            return super().default(value)

    header = Writer().encode(document).encode("utf-8")
    headers = {"content-type": "application/octet-stream", HEADER: str(len(header))}
    return header + b"".join(segments), headers


def decode(body: bytes, header_length: int) -> Any:
    """Return the document of a binary response with every binary tensor replaced by an ndarray.

    Walks the parsed header in text order (objects keep their key order) and consumes one segment
    per binary tensor; the segments must end exactly at the end of the body.
    """
    document = json.loads(body[:header_length])
    offset = header_length

    def walk(node: Any) -> Any:
        nonlocal offset
        if isinstance(node, dict):
            if node.get("encoding") == "binary" and "binary_data_size" in node:
                size = node["binary_data_size"]
                raw = body[offset : offset + size]
                assert len(raw) == size, "segment runs past the body"
                offset += size
                return np.frombuffer(raw, dtype=DTYPES[node["dtype"]]).reshape(node["shape"])
            return {key: walk(value) for key, value in node.items()}
        if isinstance(node, list):
            return [walk(item) for item in node]
        return node

    decoded = walk(document)
    assert offset == len(body), f"{len(body) - offset} bytes after the last segment"
    return decoded


def base64_arrays(document: Any) -> Any:
    """Return a JSON answer with every base64 tensor (and COO row/col/data) as an ndarray."""
    import base64

    def walk(node: Any, key: str = "") -> Any:
        if isinstance(node, dict):
            if node.get("format") == "coo" and isinstance(node.get("row"), str):
                out = {k: v for k, v in node.items() if k not in ("row", "col", "data", "encoding")}
                for name, dtype in (("row", "<i8"), ("col", "<i8"), ("data", "<f8")):
                    out[name] = np.frombuffer(base64.b64decode(node[name]), dtype=dtype)
                return out
            if node.get("encoding") == "base64" and isinstance(node.get("data"), str):
                raw = base64.b64decode(node["data"])
                return np.frombuffer(raw, dtype="<f8").reshape(node["shape"])
            return {k: walk(v, k) for k, v in node.items()}
        if isinstance(node, list):
            return [walk(item) for item in node]
        return node

    return walk(document)


def normalize_binary(document: Any) -> Any:
    """Drop the wire-only ``encoding`` keys of a decoded binary COO, to compare with base64."""
    if isinstance(document, dict):
        if document.get("format") == "coo":
            return {k: v for k, v in document.items() if k != "encoding"}
        return {k: normalize_binary(v) for k, v in document.items()}
    if isinstance(document, list):
        return [normalize_binary(item) for item in document]
    return document


def assert_identical(left: Any, right: Any, where: str = "") -> None:
    """Assert two decoded answers are equal, arrays bit for bit (same dtype, shape and bytes)."""
    if isinstance(left, np.ndarray) or isinstance(right, np.ndarray):
        assert isinstance(left, np.ndarray) and isinstance(right, np.ndarray), where
        assert left.dtype == right.dtype and left.shape == right.shape, where
        assert left.tobytes() == right.tobytes(), where
    elif isinstance(left, dict):
        assert isinstance(right, dict) and set(left) == set(right), (where, left, right)
        for key in left:
            assert_identical(left[key], right[key], f"{where}/{key}")
    elif isinstance(left, list):
        assert isinstance(right, list) and len(left) == len(right), where
        for i, (a, b) in enumerate(zip(left, right, strict=True)):
            assert_identical(a, b, f"{where}/{i}")
    else:
        assert left == right, (where, left, right)
