"""Models of the function endpoints: ops, evaluate, jacobian, jvp, vjp, chain-rule."""

from typing import Annotated, Any, Literal

from pydantic import ConfigDict, Field, model_validator

from ...codec import Tensor, TensorOut
from ...codec.sparse import JacobianIn, JacobianOut
from ...engine.fdcheck import FDCheck
from .common import Layout, Order, ResponseEncoding, ResponseModel, StrictModel
from .programs import AnyFunction, Inputs, Name, Wrt


class _FunctionRequest(StrictModel):
    """Either ``x`` and an op list, or named ``inputs``, any form of function and ``wrt``."""

    x: Tensor | None = Field(None, description="The input of an op list (the `x` form).")
    inputs: Inputs | None = None
    function: AnyFunction
    wrt: Wrt | None = None

    @model_validator(mode="after")
    def _one_form(self) -> "_FunctionRequest":
        if self.x is None and self.inputs is None:
            raise ValueError("give x (with an op list) or inputs (a program): the request has "
                             "neither")  # fmt: skip
        if self.x is not None and self.inputs is not None:
            raise ValueError("give either x (with an op list) or inputs (a program), not both")
        if self.x is not None and not isinstance(self.function, list):
            raise ValueError("with x the function must be an op list; use inputs for "
                             "expressions and graphs")  # fmt: skip
        if self.x is not None and self.wrt is not None:
            raise ValueError("wrt needs inputs; with x the derivative is with respect to x")
        return self

    @property
    def program(self) -> bool:
        """Whether this is the program form (``inputs``)."""
        return self.inputs is not None


_EXAMPLE_FUNCTION = [
    {"op": "xcorr2d", "kernel": {"data": [[[1, 2]]]}},
    {"op": "tanh"},
]
_EXAMPLE_X = {"data": [[[0.1, 0.2, 0.3], [0.4, 0.5, 0.6]]]}
FormatRequest = Annotated[
    Literal["coo", "dense", "auto"],
    Field(
        description="'coo', 'dense', or 'auto' (COO when at most a third of the entries can be "
        "non-zero or the dense matrix is over its limit, dense otherwise)."
    ),
]


def _examples(**extra: object) -> ConfigDict:
    example: dict[str, Any] = {"x": _EXAMPLE_X, "function": _EXAMPLE_FUNCTION, **extra}
    return ConfigDict(**StrictModel.model_config, json_schema_extra={"examples": [example]})


class OperationInfo(ResponseModel):
    """One registered operation."""

    op: str = Field(description='Its name as written in a function: {"op": "<name>", ...}.')
    name: str = Field(description="The same name (kept for clients written before `op`).")
    linear: bool = Field(description="Whether the operation is linear (or affine) in x.")
    note: str = Field(description="Differentiability: the choice made at non-smooth points.")
    params: dict[str, str] = Field(description="Parameter name -> what it is.")
    uses_request_order: bool = Field(
        description="Whether the result depends on the request's index order (reshape, linear)."
    )
    arity: int = Field(1, description="Number of tensor arguments: 1 (the input x).")
    args: list[str] = Field(["x"], description="Names of the tensor arguments.")


class ProgramOperationInfo(ResponseModel):
    """An operation of several tensor arguments, for expressions and graphs."""

    name: str
    arity: int | None = Field(description="Number of tensor arguments; null: any number >= 1.")
    args: list[str] = Field(description="Names of the tensor arguments (one, repeated, if any).")
    linear: bool = Field(description="Whether the operation is linear in each argument.")
    note: str = Field(description="Differentiability: the choice made at non-smooth points.")
    params: dict[str, str] = Field(description="Parameter name -> what it is.")


class OperationsResponse(ResponseModel):
    """Every operation a function may use."""

    operations: list[OperationInfo] = Field(
        description="Operations of one tensor: op lists, and one-argument calls in programs."
    )
    program_operations: list[ProgramOperationInfo] = Field(
        description="Operations of several tensors, for expressions and graphs (a name here and "
        "in `operations` is chosen by its number of arguments)."
    )


class EvaluateRequest(_FunctionRequest):
    """Evaluate h(x) for h = op_n ∘ ... ∘ op_1, or a program at its inputs."""

    model_config = _examples()

    order: Order = "F"
    encoding: ResponseEncoding = "list"


class EvaluateResponse(ResponseModel):
    """h(x)."""

    value: TensorOut


class CheckReport(ResponseModel):
    """Comparison with central differences (step rule of SciPy's ``_numdiff``)."""

    passed: bool
    max_abs_error: float
    max_rel_error: float
    step: float = Field(description="Largest step h_i = EPS**(1/3) * max(1, |x_i|) used.")
    relative_step: float
    directions: int = Field(description="Input directions probed.")
    full: bool = Field(description="True when the directions were the whole input basis.")
    checked: list[str] = Field(description="What was compared: jvp, vjp, jacobian.")
    rtol: float
    atol: float

    @classmethod
    def from_engine(cls, check: FDCheck | None) -> "CheckReport | None":
        """Return the report of an engine check, or None when no check ran."""
        if check is None:
            return None
        return cls(
            passed=check.passed,
            max_abs_error=check.max_abs_error,
            max_rel_error=check.max_rel_error,
            step=check.step,
            relative_step=check.relative_step,
            directions=check.directions,
            full=check.full,
            checked=list(check.checked),
            rtol=check.rtol,
            atol=check.atol,
        )


class JacobianRequest(_FunctionRequest):
    """The Jacobian of h at x: lmn x pqr in the notes' layout (per input for a program)."""

    model_config = _examples(format="dense")

    format: FormatRequest = "auto"
    layout: Layout = "in_out"
    order: Order = "F"
    strategy: Literal["auto", "chain", "reverse", "forward"] = Field(
        "auto",
        description="'chain': sparse product of the local Jacobians (the notes' chain rule); "
        "'reverse': VJPs of the output basis; 'forward': JVPs of the input basis; 'auto': the "
        "cheapest by estimated cost. All give the same matrix.",
    )
    encoding: ResponseEncoding = "list"
    check: bool = Field(False, description="Also compare with central differences.")


class JacobianResponse(ResponseModel):
    """h(x), its Jacobian, and how it was computed."""

    value: TensorOut
    jacobian: JacobianOut
    strategy: Literal["chain", "reverse", "forward"]
    check: CheckReport | None = None


class JvpRequest(_FunctionRequest):
    """h(x) and the JVP ten(J^T vec(tangent)), without forming J."""

    model_config = _examples(tangent={"data": [[[1, 0, 0], [0, 0, 0]]]})

    tangent: Tensor | None = Field(None, description="Same shape as x (the `x` form).")
    tangents: Annotated[dict[Name, Tensor], Field(min_length=1, max_length=16)] | None = Field(
        None,
        description="Programs: one tangent per input in `wrt`, keyed by name; the JVP is the sum "
        "of their images.",
    )

    @model_validator(mode="after")
    def _tangent_form(self) -> "JvpRequest":
        if self.program == (self.tangent is not None) or self.program != (
            self.tangents is not None
        ):
            raise ValueError("give tangent with x, tangents (name -> tensor) with inputs")
        return self

    order: Order = "F"
    encoding: ResponseEncoding = "list"
    check: bool = False


class JvpResponse(ResponseModel):
    """h(x) and J^T v."""

    value: TensorOut
    jvp: TensorOut
    check: CheckReport | None = None


class VjpRequest(_FunctionRequest):
    """h(x) and the VJP ten(J vec(cotangent)), without forming J (per input for a program)."""

    model_config = _examples(cotangent={"data": [[1, 0], [0, 0]]})

    cotangent: Tensor = Field(description="Same shape as h(x).")
    order: Order = "F"
    encoding: ResponseEncoding = "list"
    check: bool = False


class VjpResponse(ResponseModel):
    """h(x) and J u."""

    value: TensorOut
    vjp: TensorOut
    check: CheckReport | None = None


class ProgramJacobianResponse(ResponseModel):
    """A program's output and its Jacobian with respect to each input of `wrt`."""

    value: TensorOut
    jacobians: dict[str, JacobianOut] = Field(
        description="Input name -> J (that input's shape as in_shape, the output's as out_shape)."
    )
    strategy: Literal["chain", "reverse", "forward"]
    check: CheckReport | None = Field(
        None, description="With check: every input of `wrt` compared with central differences."
    )


class ProgramVjpResponse(ResponseModel):
    """A program's output and the VJP for each input of `wrt`."""

    value: TensorOut
    cotangents: dict[str, TensorOut] = Field(description="Input name -> ten(J_name vec(u)).")
    check: CheckReport | None = Field(
        None, description="With check: every input of `wrt` compared with central differences."
    )


class ChainRuleRequest(StrictModel):
    """Compose Jacobians: J_h = J_1 J_2 ... J_n (in_out) for h = f_n ∘ ... ∘ f_1."""

    model_config = StrictModel.model_config | {
        "json_schema_extra": {
            "examples": [
                {
                    "jacobians": [
                        {"format": "dense", "data": {"data": [[1, 2], [3, 4], [5, 6]]}},
                        {
                            "format": "coo",
                            "shape": [2, 1],
                            "row": [0, 1],
                            "col": [0, 0],
                            "data": [1.0, -1.0],
                        },
                    ]
                }
            ]
        }
    }

    jacobians: Annotated[list[JacobianIn], Field(min_length=1, max_length=64)] = Field(
        description="J_1, ..., J_n of the functions applied first to last. A Jacobian answer "
        "of this service can be sent unchanged: its header fields are checked against its "
        "matrix and its neighbours, and one in the other layout is transposed."
    )
    layout: Layout = Field(
        "in_out",
        description="Layout of the product, and of every input that does not state its own.",
    )
    order: Order = Field(
        "F",
        description="Index order the given Jacobians use; the product does not depend on it, "
        "the result is labelled with it. Default: the inputs' stated order, else 'F'; inputs "
        "that state another order are refused.",
    )
    format: Literal["coo", "dense", "auto"] = Field(
        "auto", description="'auto': COO if any factor is COO, dense otherwise."
    )
    encoding: ResponseEncoding = "list"


class ChainRuleResponse(ResponseModel):
    """The product in the notes' sense."""

    jacobian: JacobianOut
