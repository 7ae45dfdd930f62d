"""Pieces every request shares: strict models, index order, Jacobian layout, response encoding."""

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from ...codec import Encoding

Order = Annotated[
    Literal["F", "C"],
    Field(
        description="Index order of vec/ten/flat and of Jacobian rows/columns: 'F' (default) = "
        "first index fastest, the notes' flat; 'C' = last index fastest (NumPy/PyTorch/JAX)."
    ),
]
Layout = Annotated[
    Literal["in_out", "out_in"],
    Field(
        description="Jacobian layout: 'in_out' (default) = the notes' (input size x output size) "
        "matrix whose columns are gradients of output components; 'out_in' = its transpose."
    ),
]
ResponseEncoding = Annotated[
    Encoding,
    Field(description="Encoding of every tensor in the response: 'list' (default) or 'base64'."),
]


class StrictModel(BaseModel):
    """Request base: unknown fields are refused and nothing is coerced (no bool -> number)."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class ResponseModel(BaseModel):
    """Response base."""

    model_config = ConfigDict(frozen=True)


__all__ = ["Layout", "Order", "ResponseEncoding", "ResponseModel", "StrictModel"]
