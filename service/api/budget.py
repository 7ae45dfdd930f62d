"""What a request may cost: raw-body counts before parsing, response sizes before computing.

Two checks happen before the engine's cost model (:mod:`service.engine.cost`) is even reached:

* **Before parsing.** A list-encoded body becomes Python objects at about 100 bytes per number
  (measured: pydantic-core's JSON value, the Python float, the list slot, the decoded array) and
  every invalid string becomes a validation error of about 3 KB. So the raw bytes are counted
  first, at C speed with NumPy: numbers are at most ``commas + 1``, strings ``quotes / 2``, lists
  ``[`` . A body whose parse would exceed ``SERVICE_MAX_REQUEST_MEMORY_BYTES``, or that holds
  more strings than ``SERVICE_MAX_BODY_STRINGS``, is refused before one object is built.
* **Before computing.** The response's size follows from the shapes: at most 25 bytes per float
  and ``digits + 1`` per index in a JSON list, 4/3 of the raw bytes in base64. Over
  ``SERVICE_MAX_RESPONSE_BYTES`` the request is refused (413) before any arithmetic.
"""

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..codec import Encoding
from ..config import Settings
from ..engine.cancel import checkpoint
from ..engine.cost import Cost, CostLimits, check_cost
from ..engine.errors import LimitExceeded

# Measured peak bytes per element while a list-encoded body is validated (RSS, 3e6 elements):
# 100-108 per number of a flat list, 168 for lists of 4, 235 per component of index triples;
# the rule below bounds all three: 110 per number plus 450 per list.
PARSE_BYTES_PER_NUMBER = 110
PARSE_BYTES_PER_LIST = 450
# Measured: 3.0 KB per invalid string (two validation errors each, rendered).
PARSE_BYTES_PER_STRING = 3_100
# The bytes are scanned in blocks, so the scan holds at most this much beyond the body.
SCAN_BLOCK = 4 << 20
# JSON text of one float64 at most ("-2.2250738585072014e-308") and its separator.
LIST_FLOAT_BYTES = 25
# Python objects of one float in a list response: the float (24), its list slot (8).
LIST_FLOAT_OBJECT_BYTES = 32
# JSON keys, brackets and metadata around the arrays of a response.
RESPONSE_OVERHEAD = 4096
HINT = (
    "ask for encoding 'base64' (4/3 bytes per raw byte instead of up to 25 per number), "
    "format 'coo' for sparse Jacobians, or /v1/jvp and /v1/vjp instead of a whole Jacobian"
)


@dataclass(frozen=True)
class BodyCounts:
    """Separators counted in a raw JSON body: upper bounds on what parsing it builds."""

    size: int
    commas: int
    quotes: int
    brackets: int

    @property
    def numbers(self) -> int:
        """Upper bound on the numbers in the body (list entries are comma-separated)."""
        return self.commas + 1

    @property
    def strings(self) -> int:
        """Upper bound on the strings in the body."""
        return self.quotes // 2

    @property
    def parse_bytes(self) -> int:
        """Upper bound on the peak memory of parsing and validating the body."""
        return (
            self.size
            + PARSE_BYTES_PER_NUMBER * self.numbers
            + PARSE_BYTES_PER_LIST * self.brackets
            + PARSE_BYTES_PER_STRING * self.strings
        )


# Bodies up to this size are counted by bytes.count (see count_separators).
COUNT_DIRECTLY = 4096


def count_separators(raw: bytes) -> BodyCounts:
    """Count commas, double quotes and ``[`` in ``raw`` with NumPy (no Python object per byte).

    A body of at most :data:`COUNT_DIRECTLY` bytes is counted with ``bytes.count`` instead:
    1.7 µs for a 60-byte ``/v1/flat`` body against 12.6 µs of NumPy set-up (and 4x slower
    than NumPy on 10 MB).
    """
    if len(raw) <= COUNT_DIRECTLY:
        return BodyCounts(len(raw), raw.count(b","), raw.count(b'"'), raw.count(b"["))
    view = np.frombuffer(raw, dtype=np.uint8)
    commas = quotes = brackets = 0
    for start in range(0, len(view), SCAN_BLOCK):
        block = view[start : start + SCAN_BLOCK]
        commas += int(np.count_nonzero(block == ord(",")))
        quotes += int(np.count_nonzero(block == ord('"')))
        brackets += int(np.count_nonzero(block == ord("[")))
    return BodyCounts(len(raw), commas, quotes, brackets)


def check_body(counts: BodyCounts, settings: Settings) -> None:
    """Refuse a body whose parse would hold too many strings or too much memory (413).

    Raises
    ------
    LimitExceeded
        ``max_body_strings`` or ``max_request_memory_bytes``.
    """
    if counts.strings > settings.max_body_strings:
        raise LimitExceeded(
            "strings in the request body", counts.strings, settings.max_body_strings,
            "send numbers as numbers; large tensors as base64", setting="max_body_strings",
        )  # fmt: skip
    if counts.parse_bytes > settings.max_request_memory_bytes:
        raise LimitExceeded(
            "peak bytes of parsing the list-encoded body", counts.parse_bytes,
            settings.max_request_memory_bytes,
            "send large tensors with encoding 'base64' (8 bytes per number instead of ~100)",
            setting="max_request_memory_bytes",
        )  # fmt: skip


@dataclass(frozen=True)
class Payload:
    """A response's bytes on the wire and the transient memory of writing them."""

    bytes: int = RESPONSE_OVERHEAD
    memory: int = 0

    def __add__(self, other: "Payload") -> "Payload":
        return Payload(self.bytes + other.bytes, self.memory + other.memory)


def _base64_bytes(raw: int) -> int:
    return 4 * math.ceil(raw / 3)


def float_payload(count: int, encoding: Encoding) -> Payload:
    """Return the payload of ``count`` float64 values written as a list, base64 or binary.

    Memory: the list's Python objects, the serialized text and its copy into ``bytes``; for
    base64 the raw bytes, the text and its copies; for a binary segment its bytes, twice.
    """
    if encoding == "binary":
        return Payload(8 * count, 2 * 8 * count)
    if encoding == "base64":
        text = _base64_bytes(8 * count)
        return Payload(text, 8 * count + 3 * text)
    text = LIST_FLOAT_BYTES * count
    return Payload(text, LIST_FLOAT_OBJECT_BYTES * count + 3 * text)


def index_payload(count: int, largest: int, encoding: Encoding) -> Payload:
    """Return the payload of ``count`` int64 indices below ``largest`` (list, base64, binary)."""
    if encoding == "binary":
        return Payload(8 * count, 2 * 8 * count)
    if encoding == "base64":
        text = _base64_bytes(8 * count)
        return Payload(text, 8 * count + 3 * text)
    text = (len(str(max(largest, 1))) + 1) * count
    return Payload(text, LIST_FLOAT_OBJECT_BYTES * count + 3 * text)


def coo_payload(nnz: int, rows: int, cols: int, encoding: Encoding) -> Payload:
    """Return the payload of a COO Jacobian with at most ``nnz`` entries."""
    return (
        index_payload(nnz, rows, encoding)
        + index_payload(nnz, cols, encoding)
        + float_payload(nnz, encoding)
    )


@dataclass(frozen=True)
class RequestCost:
    """A request's estimated engine cost and response payload.

    ``facts`` holds what the estimate learned on the way (shapes, non-zero bounds, the format and
    strategy ``auto`` picks) for ``POST /v1/estimate``.
    """

    cost: Cost
    response: Payload
    facts: dict[str, Any] = field(default_factory=dict)

    @property
    def total(self) -> Cost:
        """The engine's cost with the response's memory held on top of its peak."""
        return self.cost.holding(self.response.memory)


def check_request(estimate: RequestCost, settings: Settings) -> None:
    """Refuse a request whose response, work or memory is over its limit (413), in that order.

    Raises
    ------
    LimitExceeded
        ``max_response_bytes``, ``max_work`` or ``max_request_memory_bytes``.
    """
    if estimate.response.bytes > settings.max_response_bytes:
        raise LimitExceeded(
            "response bytes", estimate.response.bytes, settings.max_response_bytes, HINT,
            setting="max_response_bytes",
        )  # fmt: skip
    check_cost(estimate.total, cost_limits(settings))
    # Estimating may have taken a while (a program's shapes, the chain rule's patterns): stop
    # here rather than start computing for a client that left.
    checkpoint()


def cost_limits(settings: Settings) -> CostLimits:
    """Return the engine's cost bounds from the settings."""
    return CostLimits(settings.max_work, settings.max_request_memory_bytes)
