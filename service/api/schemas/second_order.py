"""Models of ``POST /v1/hvp`` and ``POST /v1/hessian``: second derivatives of a scalar function."""

from typing import Any, Literal

from pydantic import ConfigDict, Field

from ...codec import Tensor, TensorOut
from ...codec.sparse import JacobianOut
from .common import Order, ResponseEncoding, ResponseModel, StrictModel
from .ops import Function

_EXAMPLE_FUNCTION: list[dict[str, Any]] = [{"op": "sin"}, {"op": "square"}, {"op": "sum"}]
_EXAMPLE_X: dict[str, Any] = {"data": [0.5, 1.0, 2.0]}


def _examples(**extra: object) -> ConfigDict:
    example: dict[str, Any] = {"x": _EXAMPLE_X, "function": _EXAMPLE_FUNCTION, **extra}
    return ConfigDict(**StrictModel.model_config, json_schema_extra={"examples": [example]})


class HvpRequest(StrictModel):
    """f(x) and the exact Hessian-vector product H v (forward over reverse), f scalar."""

    model_config = _examples(vectors={"x": {"data": [1.0, 0.0, 0.0]}})

    x: Tensor
    function: Function
    vectors: dict[str, Tensor] = Field(
        description="The vector v per differentiated input, keyed by name ('x' in the op-list "
        "form), each of its input's shape."
    )
    order: Order = "F"
    encoding: ResponseEncoding = "list"


class HvpResponse(ResponseModel):
    """f(x) and H v per input."""

    value: TensorOut
    hvp: dict[str, TensorOut] = Field(description="H v, keyed like vectors.")


class HessianRequest(StrictModel):
    """f(x) and its Hessian, built from structural sparsity, f scalar."""

    model_config = _examples(format="coo")

    x: Tensor
    function: Function
    format: Literal["coo", "dense", "auto"] = Field(
        "auto",
        description="'auto': COO when the non-zero bound is below a third of the entries (or a "
        "dense matrix would be over its limit), dense otherwise.",
    )
    order: Order = "F"
    encoding: ResponseEncoding = "list"


class HessianResponse(ResponseModel):
    """f(x) and its Hessian.

    The Hessian is written as the Jacobian of the gradient: rows and columns both index x
    flattened in ``order`` (``in_shape`` = ``out_shape`` = x's shape, layout ``in_out``); it is
    symmetric, so the layout does not matter.
    """

    value: TensorOut
    hessian: JacobianOut


__all__ = ["HessianRequest", "HessianResponse", "HvpRequest", "HvpResponse"]
