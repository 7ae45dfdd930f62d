"""Jacobians on the wire (CONVENTIONS section 4).

COO: ``{"format": "coo", "shape": [rows, cols], "in_shape", "out_shape", "layout", "order",
"nnz", "row", "col", "data"}``, canonical (sorted by (row, col), no duplicates, no stored zeros).
In base64 mode ``row``/``col`` are little-endian int64 bytes and ``data`` little-endian float64.
Dense: the same header with ``format: "dense"`` and ``data`` a 2-D tensor.
"""

from typing import Annotated, Any, Literal

import numpy as np
import scipy.sparse as sp
from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema

from ..engine.jacobian import Jacobian
from .tensors import Encoding, TensorOut, encode_index_array, encode_tensor, encode_values

_ARRAY_SCHEMA = {
    "anyOf": [
        {"type": "array", "items": {"type": "number"}},
        {"type": "string", "contentEncoding": "base64"},
    ]
}


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
    row: Annotated[Any, WithJsonSchema(_ARRAY_SCHEMA)]
    col: Annotated[Any, WithJsonSchema(_ARRAY_SCHEMA)]
    data: Annotated[Any, WithJsonSchema(_ARRAY_SCHEMA)]


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
    encoding : {"list", "base64"}

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
