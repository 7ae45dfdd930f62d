"""The tensor wire format (CONVENTIONS section 3) and its two crossing points.

Grammar of a tensor on the wire::

    {"encoding": "list" | "base64" | "binary"   (default "list"),
     "data":     number | [data, ...]  (list)   or   "<base64 of raw bytes>"  (base64),
     "shape":    [int >= 1, ...]      (optional for list, checked if given; required otherwise),
     "dtype":    "float64" | "float32" (default "float64"),
     "binary_data_size": int          (binary only: the bytes of its segment; no data)}

A flat list with a shape is read in C order (the Open Inference Protocol's convention). Binary
tensors live only in ``application/octet-stream`` bodies (:mod:`service.codec.binary`).

base64 carries ``ndarray.tobytes()`` of a C-contiguous little-endian array over ``shape``; the wire
order is fixed and independent of the math ``order`` option. The engine computes in float64.

Validation happens while the model is built: ragged lists, booleans, strings, null, NaN and
infinities, byte counts that do not match the shape, and a shape that contradicts the list all fail
with a message and a location, which the API turns into a 422 with a JSON Pointer. Sizes are
checked before any array is allocated; an over-limit tensor raises
:class:`service.engine.errors.LimitExceeded` (413), which deliberately is not a ``ValueError`` so
that it escapes pydantic's error collection.
"""

import binascii
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any, Literal, TypeAlias, Union, cast

import numpy as np
import pybase64
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    WithJsonSchema,
    field_validator,
)
from pydantic_core import PydanticCustomError
from typing_extensions import TypeAliasType

from ..engine.errors import LimitExceeded
from ..engine.types import FloatArray
from .binary import Segment, binary_array, segment_for

Encoding: TypeAlias = Literal["list", "base64", "binary"]
DType: TypeAlias = Literal["float64", "float32"]

# Strict: booleans and numeric strings are not numbers; NaN and infinities are refused.
Number = Annotated[float, Field(strict=True, allow_inf_nan=False)]
if TYPE_CHECKING:
    # mypy cannot follow a recursive TypeAliasType; this is the same type, one level deep.
    NestedNumbers: TypeAlias = float | list[Any]
else:
    NestedNumbers = TypeAliasType(
        "NestedNumbers",
        Union[Number, list["NestedNumbers"]],  # noqa: UP007 - recursive alias
    )
# Documented one level deep: openapi-python-client cannot generate the recursive union (it drops
# every model that refers to it). Validation stays recursive and strict.
TENSOR_DATA_SCHEMA: dict[str, Any] = {
    "anyOf": [
        {"type": "number"},
        {"type": "array", "items": {}, "description": "nested lists of finite numbers"},
        {"type": "string", "contentEncoding": "base64"},
    ]
}
WIRE_DTYPES: dict[str, np.dtype[Any]] = {"float64": np.dtype("<f8"), "float32": np.dtype("<f4")}


@dataclass(frozen=True)
class DecodeLimits:
    """Bounds applied while decoding, passed through pydantic's validation ``context``.

    Parameters
    ----------
    max_elements : int
        Elements of one tensor (413 when exceeded).
    max_rank : int
        Rank of one tensor (422 when exceeded: such a tensor is not valid input).
    """

    max_elements: int = 16_000_000
    max_rank: int = 8


def limits_from(info: ValidationInfo) -> DecodeLimits:
    """Return the limits carried in the validation context, or the defaults."""
    context = info.context or {}
    limits = context.get("limits", DecodeLimits())
    return cast(DecodeLimits, limits)


def defer_or_raise(error: LimitExceeded, info: ValidationInfo) -> None:
    """Record a limit violation for after validation, or raise it when nobody collects them.

    The API passes a list as ``context["deferred_limits"]`` so that a request which is also
    invalid for the schema gets its 422 (with every pointer) rather than a 413; a valid request
    over a limit gets the 413 once validation has finished. Nothing is allocated either way.
    """
    sink = (info.context or {}).get("deferred_limits")
    if sink is None:
        raise error
    sink.append(error)


def _nominal_shape(data: Any) -> list[int]:
    # Follow the first element down: cheap, and enough to bound the size before allocating;
    # np.asarray then proves the list is not ragged.
    shape: list[int] = []
    while isinstance(data, list):
        shape.append(len(data))
        if not data:
            break
        data = data[0]
    return shape


def _first_ragged(data: Any, nominal: list[int]) -> tuple[list[int], int | None, int | None]:
    """Return the index path of the first list whose length breaks ``nominal``, with lengths.

    Lists are compared, breadth first, with the lengths the first elements gave at each depth;
    ``None`` stands for a number (where a list is due, or the reverse).
    """
    pending: list[tuple[list[int], Any]] = [([], data)]
    while pending:
        path, node = pending.pop(0)
        depth = len(path)
        expected = nominal[depth] if depth < len(nominal) else None
        length = len(node) if isinstance(node, list) else None
        if length != expected:
            return path, length, expected
        if isinstance(node, list):
            pending.extend(([*path, index], item) for index, item in enumerate(node))
    return [], None, None  # not reached for data NumPy refused as ragged


def check_size(shape: list[int] | tuple[int, ...], limits: DecodeLimits) -> None:
    """Raise before allocation when a tensor of ``shape`` has too many elements or dimensions."""
    if len(shape) > limits.max_rank:
        raise ValueError(f"rank {len(shape)} exceeds the maximum rank {limits.max_rank}")
    size = math.prod(shape)
    if size > limits.max_elements:
        raise LimitExceeded(
            "elements of one tensor", size, limits.max_elements, setting="max_tensor_elements"
        )


def _decode_list(data: Any, shape: list[int] | None, dtype: str) -> FloatArray:
    nominal = _nominal_shape(data)
    if 0 in nominal:
        raise ValueError(f"data has an empty dimension (nominal shape {nominal})")
    try:
        with np.errstate(over="raise"):
            array = np.asarray(data, dtype=WIRE_DTYPES[dtype])
    except FloatingPointError:
        raise ValueError(f"data holds a value outside the {dtype} range") from None
    except ValueError:
        at, length, expected = _first_ragged(data, nominal)
        if isinstance(length, int) and isinstance(expected, int):
            found = f"this list has {length} entries but the first one at its depth has {expected}"
        elif isinstance(length, int):
            found = "this is a list where the first entry at its depth is a number"
        else:
            found = f"this is a number where the first entry at its depth is a list of {expected}"
        raise PydanticCustomError(
            "ragged",
            found + ": nested lists need equal lengths at each depth (the data is ragged)",
            {"at": at},
        ) from None
    if shape is not None and list(array.shape) != shape:
        if array.ndim != 1 or array.size != math.prod(shape):
            flat = f" (a flat list needs {math.prod(shape)} numbers)" if array.ndim == 1 else ""
            raise ValueError(f"data has shape {list(array.shape)} but shape says {shape}{flat}")
        array = array.reshape(shape)  # a flat list with a shape: C order, as the wire's bytes
    return array.astype(np.float64, copy=False)


def base64_length(text: str) -> int:
    """Return the number of bytes standard base64 ``text`` decodes to, without decoding it."""
    return len(text.rstrip("=")) * 3 // 4


def _decode_base64(data: str, shape: list[int], dtype: str) -> FloatArray:
    wire = WIRE_DTYPES[dtype]
    expected = math.prod(shape) * wire.itemsize
    # The decoded length follows from the text length, so a wrong size is refused before decoding.
    decoded_length = base64_length(data)
    if decoded_length != expected:
        # Text that is no base64 at all is told so first: its "size" means nothing. Decoding
        # costs only on this error path, and the body's size already bounds it.
        b64decode(data)
        raise ValueError(
            f"base64 data holds {decoded_length} bytes but shape {shape} of {dtype} "
            f"needs {expected}"
        )
    array = np.frombuffer(b64decode(data), dtype=wire).reshape(shape)
    return array.astype(np.float64)


def b64decode(text: str, what: str = "data") -> bytes:
    """Decode strict standard base64 with padding (a ``ValueError`` naming ``what`` if not)."""
    try:
        return pybase64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as error:
        raise ValueError(f"{what} is not valid standard base64 with padding: {error}") from None


def _check_finite(array: FloatArray) -> None:
    finite = np.isfinite(array)
    if not finite.all():
        where = np.argwhere(~finite)[0].tolist()
        raise ValueError(f"data holds a non-finite value ({array[tuple(where)]}) at index {where}")


# The default of ``data``: only a binary tensor may leave it out (its bytes follow the header).
# Compared by identity, so no client string can stand for it.
_ABSENT = "\x00data absent"


# The error type of a binary tensor's failures. What stands in their ``data`` is the segment index
# the binary reader wrote or _ABSENT, never the client's text, so problems do not echo it.
BINARY_TENSOR_ERROR = "binary_tensor"


def _binary_error(message: str) -> PydanticCustomError:
    # The message goes in as context: a template would read braces in it as placeholders.
    return PydanticCustomError(BINARY_TENSOR_ERROR, "{message}", {"message": message})


def _no_default(schema: dict[str, Any]) -> None:
    schema.pop("default", None)


class Tensor(BaseModel):
    """A tensor received from a client (CONVENTIONS section 3); see the module docstring."""

    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        frozen=True,
        json_schema_extra={
            "examples": [
                {"data": [[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]},
                {
                    "encoding": "base64",
                    "shape": [2],
                    "dtype": "float64",
                    "data": "AAAAAAAA8D8AAAAAAAAAQA==",
                },
            ]
        },
    )

    encoding: Encoding = Field(
        "list",
        description="How `data` is written; 'binary' only in an application/octet-stream body.",
    )
    dtype: DType = Field("float64", description="Element type on the wire; computed in float64.")
    shape: list[Annotated[int, Field(ge=1)]] | None = Field(
        None,
        max_length=32,
        description="Dimensions (each >= 1). Optional for lists (checked if given; a flat list "
        "with a shape is read in C order); required for base64 and binary. [] is a scalar.",
    )
    binary_data_size: Annotated[int, Field(ge=0)] | None = Field(
        None,
        description="Binary only: the bytes of this tensor's segment in the body "
        "(prod(shape) x the dtype's size), which replaces `data`.",
    )
    data: Annotated[NestedNumbers | str, WithJsonSchema(TENSOR_DATA_SCHEMA)] = Field(
        _ABSENT,
        validate_default=True,
        json_schema_extra=_no_default,
        description="Nested lists of finite numbers (a bare number for rank 0; a flat list with "
        "`shape`), or base64 of the little-endian C-order bytes over `shape`. Required unless "
        "binary.",
    )

    @field_validator("data", mode="after")
    @classmethod
    def _decode(cls, data: Any, info: ValidationInfo) -> Any:
        # Returns the decoded ndarray in place of the wire value; decode_tensor hands it out.
        names = ("encoding", "dtype", "shape", "binary_data_size")
        if any(name not in info.data for name in names):
            # An earlier field already failed; its error is reported, nothing to decode.
            return data
        encoding, dtype, shape = info.data["encoding"], info.data["dtype"], info.data["shape"]
        size = info.data["binary_data_size"]
        if encoding == "binary" and size is None:
            raise _binary_error(
                "a binary tensor needs binary_data_size: the bytes of its segment after the "
                "JSON header (the product of shape times the dtype's size)"
            )
        if encoding != "binary" and size is not None:
            raise ValueError("binary_data_size goes only with encoding 'binary'")
        if encoding == "binary":
            # The binary reader checked shape, dtype and size against the body already.
            try:
                return _finished(segment_for(data, info).astype(np.float64, copy=False))
            except ValueError as error:
                raise _binary_error(str(error)) from None
        if data is _ABSENT:
            raise PydanticCustomError("missing", "Field required")
        limits = limits_from(info)
        try:
            check_size(shape if encoding == "base64" and shape else _nominal_shape(data), limits)
        except LimitExceeded as error:
            defer_or_raise(error, info)
            return None
        if encoding == "base64":
            if not isinstance(data, str):
                raise ValueError("encoding 'base64' needs data to be a base64 string")
            if shape is None:
                raise ValueError("encoding 'base64' needs an explicit shape")
            array = _decode_base64(data, shape, dtype)
        else:
            if isinstance(data, str):
                raise ValueError("encoding 'list' needs data to be numbers or nested lists")
            array = _decode_list(data, shape, dtype)
        return _finished(array)


def _finished(array: FloatArray) -> FloatArray:
    _check_finite(array)
    array.setflags(write=False)
    return array


def decode_tensor(tensor: Tensor) -> FloatArray:
    """Return the float64 array a validated :class:`Tensor` carries (read-only).

    Parameters
    ----------
    tensor : Tensor
        A model produced by ``model_validate``/``model_validate_json``.

    Returns
    -------
    ndarray of float64, shape ``tensor.shape`` (inferred for lists)
    """
    return cast(FloatArray, tensor.data)


# The response schema is written by hand because pydantic's union serializer checks every element
# against the recursive union (measured: 123 ms vs 70 ms for 10^6 floats); Any serializes directly.
_OUT_DATA_SCHEMA = {
    "anyOf": [
        {"type": "number"},
        {"type": "array", "items": {}},
        {"type": "string", "contentEncoding": "base64"},
    ],
    "description": "Nested lists (encoding 'list') or base64 of little-endian C-order float64 "
    "bytes (encoding 'base64').",
}


class TensorOut(BaseModel):
    """A tensor returned to a client: always float64, in the request's encoding."""

    model_config = ConfigDict(frozen=True)

    encoding: Encoding
    dtype: Literal["float64"] = "float64"
    shape: list[int]
    data: Annotated[Any, WithJsonSchema(_OUT_DATA_SCHEMA)]


class Base64Text(str):
    """Base64 text that keeps the ASCII bytes it was made from (:attr:`ascii`).

    A response writer sends those bytes as they are (``service/api/rendering.py``) instead of
    encoding the text again: one copy of a 43 MB Jacobian less.
    """

    ascii: bytes


def base64_text(values: np.ndarray[Any, Any], dtype: str) -> Base64Text:
    """Return standard base64 of the little-endian C-order bytes of ``values`` as ``dtype``.

    pybase64 reads the array's buffer directly: the only copy before encoding is a conversion
    the wire format requires (int32 indices to ``<i8``); a float64 array is encoded in place.
    """
    raw = pybase64.b64encode(np.ascontiguousarray(values, dtype=dtype).data)
    text = Base64Text(raw, "ascii")  # decoded straight into the subclass: one copy
    text.ascii = raw
    return text


def encode_tensor(array: FloatArray, encoding: Encoding = "list") -> TensorOut:
    """Write a float64 array in the wire format.

    Parameters
    ----------
    array : ndarray, shape (d_1, ..., d_n)
        Converted to float64 if needed.
    encoding : {"list", "base64", "binary"}

    Returns
    -------
    TensorOut
        ``data`` is ``array.tolist()`` (list), base64 of its little-endian C-order bytes, or
        (binary) a :class:`~service.codec.binary.Segment` of those bytes for a binary body.
    """
    array = np.asarray(array, dtype=np.float64)
    if encoding == "binary":
        data: Any = Segment(np.ascontiguousarray(array, dtype="<f8"))
    elif encoding == "base64":
        data = base64_text(array, "<f8")
    else:
        data = array.tolist()
    return TensorOut.model_construct(
        encoding=encoding, dtype="float64", shape=list(array.shape), data=data
    )


def encode_index_array(values: np.ndarray[Any, Any], encoding: Encoding) -> Any:
    """Write an integer array as a flat JSON list, base64 or binary of little-endian int64."""
    if encoding == "binary":
        return binary_array(values, "int64")
    if encoding == "base64":
        return base64_text(values, "<i8")
    return np.asarray(values, dtype=np.int64).tolist()


def encode_values(values: FloatArray, encoding: Encoding) -> Any:
    """Write a 1-D float array as a JSON list, base64 or binary of little-endian float64."""
    if encoding == "binary":
        return binary_array(values, "float64")
    if encoding == "base64":
        return base64_text(values, "<f8")
    return np.asarray(values, dtype=np.float64).tolist()


__all__ = [
    "DecodeLimits",
    "Encoding",
    "NestedNumbers",
    "Tensor",
    "TensorOut",
    "decode_tensor",
    "encode_index_array",
    "encode_tensor",
    "encode_values",
]
