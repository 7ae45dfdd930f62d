"""Jacobians on the wire (CONVENTIONS section 4).

COO: ``{"format": "coo", "shape": [rows, cols], "in_shape", "out_shape", "layout", "order",
"nnz", "row", "col", "data"}``, canonical (sorted by (row, col), no duplicates, no stored zeros).
In base64 mode ``row``/``col`` are little-endian int64 bytes and ``data`` little-endian float64.
Dense: the same header with ``format: "dense"`` and ``data`` a 2-D tensor.
"""

from typing import Annotated, Any, Literal

import numpy as np
import scipy.sparse as sp
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from ..engine.errors import LimitExceeded, ShapeError
from ..engine.jacobian import Jacobian
from ..engine.sparse import coo_from_triplets
from ..engine.types import FloatArray
from .binary import segment_for
from .errors import CodecError
from .tensors import (
    Encoding,
    Tensor,
    TensorOut,
    b64decode,
    base64_length,
    decode_tensor,
    defer_or_raise,
    encode_index_array,
    encode_tensor,
    encode_values,
    limits_from,
)


def _array_schema(item: str) -> dict[str, Any]:
    return {
        "anyOf": [
            {"type": "array", "items": {"type": item}},
            {"type": "string", "contentEncoding": "base64"},
            {
                "type": "object",
                "description": "A segment of an application/octet-stream body (CONVENTIONS 3.1).",
                "properties": {
                    "encoding": {"const": "binary"},
                    "dtype": {"const": "float64" if item == "number" else "int64"},
                    "shape": {
                        "type": "array",
                        "items": {"type": "integer", "minimum": 1},
                        "minItems": 1,
                        "maxItems": 1,
                    },
                    "binary_data_size": {"type": "integer", "minimum": 0},
                },
                "required": ["encoding", "dtype", "shape", "binary_data_size"],
                "additionalProperties": False,
            },
        ]
    }


_INDEX_SCHEMA = _array_schema("integer")
_VALUE_SCHEMA = _array_schema("number")


class _JacobianHeader(BaseModel):
    model_config = ConfigDict(frozen=True)

    shape: list[int] = Field(description="[rows, cols] of the matrix as laid out.")
    in_shape: list[int]
    out_shape: list[int]
    layout: Literal["in_out", "out_in"]
    order: Literal["F", "C"]
    nnz: int = Field(description="Stored entries (COO) or non-zero entries (dense).")


class CooJacobian(_JacobianHeader):
    """A canonical COO Jacobian; ``row``/``col``/``data`` are lists or base64 (int64/float64)."""

    format: Literal["coo"] = "coo"
    encoding: Encoding
    row: Annotated[Any, WithJsonSchema(_INDEX_SCHEMA)]
    col: Annotated[Any, WithJsonSchema(_INDEX_SCHEMA)]
    data: Annotated[Any, WithJsonSchema(_VALUE_SCHEMA)]


class DenseJacobian(_JacobianHeader):
    """A dense Jacobian; ``data`` is a 2-D tensor."""

    format: Literal["dense"] = "dense"
    data: TensorOut


JacobianOut = Annotated[CooJacobian | DenseJacobian, Field(discriminator="format")]


def encode_jacobian(jacobian: Jacobian, encoding: Encoding) -> CooJacobian | DenseJacobian:
    """Write a :class:`~service.engine.jacobian.Jacobian` in the wire format.

    Parameters
    ----------
    jacobian : Jacobian
    encoding : {"list", "base64", "binary"}

    Returns
    -------
    CooJacobian or DenseJacobian
    """
    header: dict[str, Any] = {
        "shape": list(jacobian.matrix.shape),
        "in_shape": list(jacobian.in_shape),
        "out_shape": list(jacobian.out_shape),
        "layout": jacobian.layout,
        "order": jacobian.order,
        "nnz": jacobian.nnz,
    }
    matrix = jacobian.matrix
    if isinstance(matrix, sp.coo_array):
        return CooJacobian.model_construct(
            format="coo",
            encoding=encoding,
            row=encode_index_array(np.asarray(matrix.row), encoding),
            col=encode_index_array(np.asarray(matrix.col), encoding),
            data=encode_values(np.asarray(matrix.data, dtype=np.float64), encoding),
            **header,
        )
    return DenseJacobian.model_construct(
        format="dense", data=encode_tensor(matrix, encoding), **header
    )


class BinaryArrayIn(BaseModel):
    """``row``, ``col`` or ``data`` of a COO Jacobian as a segment of a binary body (section 3.1).

    ``row``/``col`` are int64 and ``data`` float64, each of shape ``[entries]``.
    """

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    encoding: Literal["binary"]
    dtype: Literal["int64", "float64"]
    shape: Annotated[list[Annotated[int, Field(ge=1)]], Field(min_length=1, max_length=1)]
    binary_data_size: Annotated[int, Field(ge=0)]
    # The binary reader's segment index; no client writes it (see service.codec.binary).
    data: Annotated[int | None, WithJsonSchema({"type": "null"})] = None


_INDEX_LIST = list[Annotated[int, Field(ge=0, le=2**63 - 1)]]
_VALUE_LIST = list[Annotated[float, Field(strict=True, allow_inf_nan=False)]]


_WIRE_TYPES = {"row": np.dtype("<i8"), "col": np.dtype("<i8"), "data": np.dtype("<f8")}


def _decode_array(values: Any, name: str, info: ValidationInfo) -> np.ndarray[Any, Any]:
    """Turn a validated list, base64 text or segment into the array it carries (ValueError)."""
    wire = _WIRE_TYPES[name]
    if isinstance(values, BinaryArrayIn):
        array = segment_for(values.data, info)
        if array.dtype != wire:
            raise ValueError(f"{name} must be {wire.name}, got {values.dtype}")
        return array
    if not isinstance(values, str):
        return np.asarray(values, dtype=wire)
    raw = b64decode(values, name)
    if len(raw) % wire.itemsize:
        raise ValueError(
            f"{name} holds {len(raw)} bytes, not a multiple of {wire.itemsize} ({wire.name})"
        )
    return np.frombuffer(raw, dtype=wire)


def _wire_length(values: Any, itemsize: int) -> int:
    # Entries a list, a base64 string or a segment holds, known without decoding it.
    if isinstance(values, BinaryArrayIn):
        return values.shape[0]
    if isinstance(values, str):
        return base64_length(values) // itemsize
    return len(values)


_SHAPE_LABEL = Annotated[list[Annotated[int, Field(ge=1)]], Field(max_length=32)] | None
# How each encoding writes row/col/data on the wire (binary: a segment descriptor object).
_WRITTEN_AS: dict[str, tuple[type, str]] = {
    "list": (list, "lists"),
    "base64": (str, "base64 strings"),
    "binary": (dict, "binary segment descriptors"),
}


class _JacobianInHeader(BaseModel):
    """The header fields a Jacobian answer carries; all optional on input, checked if given.

    A Jacobian returned by the service can be sent back unchanged: ``layout`` and ``order`` say
    how this matrix is laid out (default: the request's), ``nnz`` must match the entries, and
    ``in_shape``/``out_shape`` must describe the matrix's sides.
    """

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    in_shape: _SHAPE_LABEL = None
    out_shape: _SHAPE_LABEL = None
    layout: Literal["in_out", "out_in"] | None = Field(
        None, description="This matrix's layout; default: the request's `layout`."
    )
    order: Literal["F", "C"] | None = Field(
        None, description="Index order of its rows and columns; must agree across the inputs."
    )
    nnz: Annotated[int, Field(ge=0)] | None = Field(
        None, description="If given: the entries given (COO) or the non-zero entries (dense)."
    )


class CooJacobianIn(_JacobianInHeader):
    """A Jacobian given as COO triplets (any order; duplicates are summed).

    ``row``/``col`` are lists of ints, base64 of little-endian int64 or binary int64 segments;
    ``data`` a list of numbers, base64 of little-endian float64 or a binary float64 segment
    (``encoding``, if given, says which). Each dimension and the number of entries are
    bounded by the tensor element limit, checked before anything is decoded.
    """

    format: Literal["coo"]
    shape: Annotated[list[Annotated[int, Field(ge=1)]], Field(min_length=2, max_length=2)]
    encoding: Encoding | None = Field(
        None, description="'list', 'base64' or 'binary': how row, col and data are written."
    )
    row: Annotated[_INDEX_LIST | str | BinaryArrayIn, WithJsonSchema(_INDEX_SCHEMA)]
    col: Annotated[_INDEX_LIST | str | BinaryArrayIn, WithJsonSchema(_INDEX_SCHEMA)]
    data: Annotated[_VALUE_LIST | str | BinaryArrayIn, WithJsonSchema(_VALUE_SCHEMA)]

    @model_validator(mode="before")
    @classmethod
    def _stated_encoding(cls, values: Any) -> Any:
        # Checked on the wire values: the field validators below replace them by arrays.
        stated = values.get("encoding") if isinstance(values, dict) else None
        # A list or object is not a key (unhashable): the field's own validation refuses it.
        if isinstance(stated, str) and stated in _WRITTEN_AS:
            wrong = [
                name
                for name in ("row", "col", "data")
                if name in values and not isinstance(values[name], _WRITTEN_AS[stated][0])
            ]
            if wrong:
                written = _WRITTEN_AS[stated][1]
                raise ValueError(
                    f"encoding is {values['encoding']!r} but {', '.join(wrong)} "
                    f"{'is' if len(wrong) == 1 else 'are'} not {written}: make them agree, or "
                    "omit encoding"
                )
        return values

    @field_validator("shape")
    @classmethod
    def _bounded_shape(cls, shape: list[int], info: ValidationInfo) -> list[int]:
        # A Jacobian's sides are the sizes of a function's input and output: tensor-sized.
        limit = limits_from(info).max_elements
        if max(shape) > limit:
            defer_or_raise(LimitExceeded("rows or columns of an input Jacobian", max(shape), limit,
                                         setting="max_tensor_elements"), info)  # fmt: skip
        return shape

    @field_validator("row", "col", "data")
    @classmethod
    def _decode(cls, values: Any, info: ValidationInfo) -> Any:
        # Returns the decoded array in place of the wire value; decode_jacobian hands it on.
        name = str(info.field_name)
        entries = _wire_length(values, _WIRE_TYPES[name].itemsize)
        limit = limits_from(info).max_elements
        if entries > limit:
            defer_or_raise(
                LimitExceeded(
                    "COO entries of an input Jacobian",
                    entries,
                    limit,
                    setting="max_tensor_elements",
                ),
                info,
            )
            return None
        return _decode_array(values, name, info)

    @model_validator(mode="after")
    def _equal_lengths(self) -> "CooJacobianIn":
        arrays: dict[str, Any] = {"row": self.row, "col": self.col, "data": self.data}
        if any(array is None for array in arrays.values()):
            return self  # over a limit: reported after validation
        lengths = {name: len(array) for name, array in arrays.items()}
        if len(set(lengths.values())) != 1:
            raise ValueError(f"row, col and data need equal lengths, got {lengths}")
        return self


class DenseJacobianIn(_JacobianInHeader):
    """A Jacobian given as a dense 2-D tensor (``shape``, if given, must be its shape)."""

    format: Literal["dense"]
    data: Tensor
    shape: (
        Annotated[list[Annotated[int, Field(ge=1)]], Field(min_length=2, max_length=2)] | None
    ) = None


JacobianIn = Annotated[CooJacobianIn | DenseJacobianIn, Field(discriminator="format")]


def decode_jacobian(jacobian: CooJacobianIn | DenseJacobianIn) -> sp.coo_array | FloatArray:
    """Return the matrix a validated input Jacobian carries.

    Returns
    -------
    scipy.sparse.coo_array (canonical) or ndarray of float64, shape (rows, cols)

    Raises
    ------
    CodecError
        If a dense Jacobian is not 2-D, or a COO index lies outside ``shape``.
    """
    if isinstance(jacobian, DenseJacobianIn):
        matrix = decode_tensor(jacobian.data)
        if matrix.ndim != 2:
            raise CodecError(f"a dense Jacobian must be 2-D, got shape {list(matrix.shape)}")
        return matrix
    rows, cols = jacobian.shape
    row = np.asarray(jacobian.row, dtype=np.int64)
    col = np.asarray(jacobian.col, dtype=np.int64)
    data = np.asarray(jacobian.data, dtype=np.float64)
    if not np.all(np.isfinite(data)):
        raise CodecError("a COO Jacobian holds non-finite values")
    try:
        return coo_from_triplets(row, col, data, (rows, cols))
    except ShapeError as error:
        raise CodecError(str(error)) from None
