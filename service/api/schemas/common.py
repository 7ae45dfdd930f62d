"""Pieces every request shares: strict models, index order, Jacobian layout, response encoding."""

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from ...codec import Encoding

OrderField = Field(
    "F",
    description="Index order of vec/ten/flat and of Jacobian rows/columns: 'F' (default) = first "
    "index fastest, the notes' flat; 'C' = last index fastest (NumPy/PyTorch/JAX).",
)
EncodingField = Field(
    "list", description="Encoding of every tensor in the response: 'list' (default) or 'base64'."
)
Order = Literal["F", "C"]
Layout = Literal["in_out", "out_in"]


class StrictModel(BaseModel):
    """Request base: unknown fields are refused and nothing is coerced (no bool -> number)."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class ResponseModel(BaseModel):
    """Response base."""

    model_config = ConfigDict(frozen=True)


__all__ = ["Encoding", "EncodingField", "Layout", "Order", "OrderField", "ResponseModel", "StrictModel"]
