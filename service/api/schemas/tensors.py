"""Models of the vec, ten, flat and unflat endpoints."""

from typing import Annotated

from pydantic import Field

from ...codec import Tensor, TensorOut
from .common import Order, ResponseEncoding, ResponseModel, StrictModel

Dims = Annotated[
    list[Annotated[int, Field(ge=1)]],
    Field(max_length=32, description="Tensor dimensions (d_1, ..., d_n), each >= 1."),
]
# Bounded so that every index fits int64; the engine reports the ones outside their dimension.
IndexComponent = Annotated[int, Field(ge=0, le=2**63 - 1)]
Index = Annotated[list[IndexComponent], Field(max_length=32)]


class VecRequest(StrictModel):
    """``vec``: flatten ``x`` into a vector in the given order."""

    model_config = StrictModel.model_config | {
        "json_schema_extra": {"examples": [{"x": {"data": [[1, 2, 3], [4, 5, 6]]}, "order": "F"}]}
    }

    x: Tensor
    order: Order = "F"
    encoding: ResponseEncoding = "list"


class VecResponse(ResponseModel):
    """The vector ``vec(x)`` and the shape it came from."""

    vector: TensorOut
    in_shape: list[int]
    order: Order


class TenRequest(StrictModel):
    """``ten``: reshape a vector of length prod(shape) into a tensor of ``shape``."""

    model_config = StrictModel.model_config | {
        "json_schema_extra": {
            "examples": [{"vector": {"data": [1, 4, 2, 5, 3, 6]}, "shape": [2, 3], "order": "F"}]
        }
    }

    vector: Tensor
    shape: Annotated[list[Annotated[int, Field(ge=1)]], Field(max_length=32)]
    order: Order = "F"
    encoding: ResponseEncoding = "list"


class TenResponse(ResponseModel):
    """The tensor ``ten(vector)``."""

    tensor: TensorOut
    order: Order


class FlatRequest(StrictModel):
    """``flat``: multi-index (or a list of them) of a ``dims`` tensor -> flat index."""

    model_config = StrictModel.model_config | {
        "json_schema_extra": {"examples": [{"index": [1, 0, 2], "dims": [2, 3, 4], "order": "F"}]}
    }

    index: Index | list[Index] = Field(
        description="One multi-index [i_1, ..., i_n], or a list of them; 0 <= i_j < d_j."
    )
    dims: Dims
    order: Order = "F"


class FlatResponse(ResponseModel):
    """Flat index (or indices, matching the request's nesting)."""

    flat: int | list[int]
    dims: list[int]
    order: Order


class UnflatRequest(StrictModel):
    """``unflat``: flat index (or a list of them) of a ``dims`` tensor -> multi-index."""

    model_config = StrictModel.model_config | {
        "json_schema_extra": {"examples": [{"flat": 13, "dims": [2, 3, 4], "order": "F"}]}
    }

    flat: IndexComponent | list[IndexComponent] = Field(
        description="A flat index, or a list; 0 <= flat < prod(dims)."
    )
    dims: Dims
    order: Order = "F"


class UnflatResponse(ResponseModel):
    """Multi-index (or indices, matching the request's nesting)."""

    index: Index | list[Index]
    dims: list[int]
    order: Order
