"""Models of ``POST /v1/hvp`` and ``POST /v1/hessian``: second derivatives of a scalar function.

Both take either ``x`` and an op list, or named ``inputs``, a function in any form and ``wrt``
(the program form of CONVENTIONS 5.1).
"""

from typing import Annotated, Any, Literal

from pydantic import ConfigDict, Field, model_validator

from ...codec import Tensor, TensorOut
from ...codec.sparse import JacobianOut
from .common import Order, ResponseEncoding, ResponseModel, StrictModel
from .functions import _FunctionRequest
from .programs import MAX_INPUTS, Name

_EXAMPLE_FUNCTION: list[dict[str, Any]] = [{"op": "sin"}, {"op": "square"}, {"op": "sum"}]
_EXAMPLE_X: dict[str, Any] = {"data": [0.5, 1.0, 2.0]}


def _examples(**extra: object) -> ConfigDict:
    example: dict[str, Any] = {"x": _EXAMPLE_X, "function": _EXAMPLE_FUNCTION, **extra}
    return ConfigDict(**StrictModel.model_config, json_schema_extra={"examples": [example]})


class HvpRequest(_FunctionRequest):
    """f and the exact Hessian-vector product H v (forward over reverse), f scalar.

    The Hessian is over the differentiated inputs jointly: ``x`` in the op-list form, ``wrt``
    (default: the names of ``vectors``) for a program; block w of the answer is
    ``sum_w' H_{w w'} v_{w'}``, as JAX's ``hvp``.
    """

    model_config = _examples(vectors={"x": {"data": [1.0, 0.0, 0.0]}})

    vectors: Annotated[dict[Name, Tensor], Field(min_length=1, max_length=MAX_INPUTS)] = Field(
        description="v per differentiated input, keyed by name ('x' in the op-list form), each "
        "of its input's shape."
    )
    order: Order = "F"
    encoding: ResponseEncoding = "list"

    @model_validator(mode="after")
    def _vectors_name_the_inputs(self) -> "HvpRequest":
        names = ["x"] if self.inputs is None else (self.wrt or list(self.vectors))
        if sorted(self.vectors) != sorted(names):
            raise ValueError(
                f"vectors must hold exactly the differentiated inputs {sorted(names)}, got "
                f"{sorted(self.vectors)}"
            )
        return self


class HvpResponse(ResponseModel):
    """f and H v per differentiated input."""

    value: TensorOut
    hvp: dict[str, TensorOut] = Field(description="H v, keyed like vectors.")


class HessianRequest(_FunctionRequest):
    """f and its Hessian over the differentiated inputs jointly, f scalar."""

    model_config = _examples(format="coo")

    format: Literal["coo", "dense", "auto"] = Field(
        "auto",
        description="'auto': COO when the non-zero bound is below a third of the entries (or a "
        "dense matrix would be over its limit), dense otherwise. Programs other than an op list "
        "over their only input are answered dense.",
    )
    order: Order = "F"
    encoding: ResponseEncoding = "list"


class HessianResponse(ResponseModel):
    """f and its Hessian.

    Written as the Jacobian of the gradient: rows and columns index the differentiated inputs
    laid end to end in ``wrt`` order, each flattened in ``order`` (``in_shape`` = ``out_shape`` =
    x's shape in the op-list form, ``[N]`` for a program); symmetric, so the layout does not
    matter.
    """

    value: TensorOut
    hessian: JacobianOut


__all__ = ["HessianRequest", "HessianResponse", "HvpRequest", "HvpResponse"]
