"""Models of ``POST /v1/gradient-descent``: the request, the JSON response, the NDJSON lines.

A streamed run (``Accept: application/x-ndjson``) writes one :class:`TrajectoryPoint` per line,
each identical to the matching entry of the non-streamed ``trajectory``, then one
:class:`DescentSummaryLine` (the line with a ``status``). The JSON response is that summary plus
the trajectory.
"""

from typing import Annotated, Any

from pydantic import Field, ValidationInfo, field_validator, model_validator

from ...codec import Tensor, TensorOut
from ...engine.descent import DIVERGENCE_FACTOR, DescentParams, LineSearch, Status
from .common import Order, ResponseEncoding, ResponseModel, StrictModel
from .programs import AnyFunction, Inputs, Wrt

Tolerance = Annotated[float, Field(ge=0, allow_inf_nan=False)]


class DescentTolerances(StrictModel):
    """Stopping rules besides ``max_steps``; an omitted (or null) tolerance turns its rule off."""

    grad_tol: Tolerance | None = Field(
        None, description="Stop ('converged_grad') when ||grad f(x_t)||_2 <= grad_tol."
    )
    f_tol: Tolerance | None = Field(
        None,
        description="Stop ('converged_f') when |f_t - f_(t-1)| <= f_tol * max(|f_(t-1)|, |f_t|, "
        "1), the relative change of f (scipy L-BFGS-B's ftol).",
    )
    x_tol: Tolerance | None = Field(
        None,
        description="Stop ('converged_x') when ||x_t - x_(t-1)||_2 <= x_tol * max(||x_(t-1)||_2, "
        "||x_t||_2, 1), the relative step.",
    )
    divergence_factor: float = Field(
        DIVERGENCE_FACTOR,
        gt=1,
        allow_inf_nan=False,
        description="Stop ('diverged') when f_t > divergence_factor * max(|f(x_0)|, 1), the "
        "blow-up threshold. Non-finite x, f or gradient is 'diverged' too.",
    )


class RunRequest(StrictModel):
    """What every run request shares (gradient descent and minimize).

    The function in its two forms (an op list from ``x0``, or a program from ``inputs`` over some
    ``variables``), ``max_steps``, the stopping rules, the records, the options of the notes' rule
    (``momentum``, ``nesterov``, ``line_search``), the index order and the response encoding.
    """

    function: AnyFunction
    x0: Tensor | None = Field(
        None, description="The starting point x_0 of an op list; its shape is the input's."
    )
    inputs: Inputs | None = Field(
        None, description="Programs: every input's value; the variables start from theirs."
    )
    variables: Wrt | None = Field(
        None,
        description="Programs: the inputs that descend (default: all); the others stay fixed. "
        "||grad f||, every method, tolerance and stopping rule cover the variables jointly.",
    )
    max_steps: int = Field(
        ge=0,
        description="Most updates (iterations); at most the service's SERVICE_MAX_DESCENT_STEPS "
        "(413).",
    )
    tolerances: DescentTolerances = Field(default_factory=DescentTolerances)
    record_every: int = Field(
        1, ge=1, description="Record steps 0, k, 2k, ...: max_steps // k + 1 points at most."
    )
    record_x: bool = Field(False, description="Include x in every recorded point.")
    momentum: float = Field(
        0.0, ge=0, lt=1, description="The notes' rule: heavy-ball β in [0, 1); 0 is the plain rule."
    )
    nesterov: bool = Field(
        False, description="The notes' rule: Nesterov momentum; needs momentum > 0."
    )
    line_search: LineSearch = Field(
        "none",
        description="The notes' rule: 'backtracking' is Armijo backtracking along -grad f "
        "(momentum 0).",
    )
    order: Order = "F"
    encoding: ResponseEncoding = "list"

    @model_validator(mode="after")
    def _one_form(self) -> "RunRequest":
        if self.x0 is None and self.inputs is None:
            raise ValueError("give x0 (with an op list) or inputs (a program): the request has "
                             "neither")  # fmt: skip
        if self.x0 is not None and self.inputs is not None:
            raise ValueError("give either x0 (with an op list) or inputs (a program), not both")
        if self.x0 is not None and not isinstance(self.function, list):
            raise ValueError("with x0 the function must be an op list; use inputs for "
                             "expressions and graphs")  # fmt: skip
        if self.x0 is not None and self.variables is not None:
            raise ValueError("variables needs inputs; with x0 the variable is x")
        return self


class GradientDescentRequest(RunRequest):
    """Minimize a scalar function by the notes' rule x_(t+1) = x_t - γ ten(df/dx(x_t)).

    ``function`` must end in exactly one element (e.g. with ``squared_norm``, ``sum``, ``mse``).
    Options: heavy-ball ``momentum`` β (``v = β v + g``, ``x -= γ v``), ``nesterov`` (``x -= γ
    (g + β v)``), Armijo ``line_search: "backtracking"`` (from γ, halving, c = 1e-4, at most 50
    halvings; momentum 0 only). Records every ``record_every``-th step, step 0 included.
    """

    model_config = StrictModel.model_config | {
        "json_schema_extra": {
            "examples": [
                {
                    "function": [
                        {"op": "add", "constant": {"data": [-1.0, 2.0]}},
                        {"op": "squared_norm"},
                        {"op": "scale", "factor": 0.5},
                    ],
                    "x0": {"data": [3.0, 0.0]},
                    "learning_rate": 0.5,
                    "max_steps": 20,
                    "tolerances": {"grad_tol": 1e-6},
                    "record_every": 5,
                }
            ]
        }
    }

    learning_rate: float = Field(
        gt=0, allow_inf_nan=False, description="γ > 0; with a line search, the first trial step."
    )

    @field_validator("nesterov")
    @classmethod
    def _nesterov_needs_momentum(cls, nesterov: bool, info: ValidationInfo) -> bool:
        if nesterov and info.data.get("momentum") == 0:
            raise ValueError("nesterov needs momentum > 0")
        return nesterov

    @field_validator("line_search")
    @classmethod
    def _line_search_needs_plain_steps(cls, line_search: str, info: ValidationInfo) -> str:
        momentum = info.data.get("momentum")
        if line_search == "backtracking" and momentum is not None and momentum != 0:
            raise ValueError(
                f"line_search 'backtracking' needs momentum 0, not {momentum}: Armijo's "
                "condition is tested along -grad f"
            )
        return line_search

    def params(self) -> DescentParams:
        """Return the engine's parameters for this request."""
        tolerances = self.tolerances
        return DescentParams(
            learning_rate=self.learning_rate,
            max_steps=self.max_steps,
            grad_tol=tolerances.grad_tol,
            f_tol=tolerances.f_tol,
            x_tol=tolerances.x_tol,
            divergence_factor=tolerances.divergence_factor,
            momentum=self.momentum,
            nesterov=self.nesterov,
            line_search=self.line_search,
            record_every=self.record_every,
            record_x=self.record_x,
        )


class TrajectoryPoint(ResponseModel):
    """One recorded step; also one NDJSON line of a streamed run."""

    step: int = Field(description="t; a multiple of record_every.")
    f: float = Field(description="f(x_t).")
    grad_norm: float = Field(description="||grad f(x_t)||_2.")
    learning_rate: float | None = Field(
        description="The step length γ that produced x_t (varies with a line search); null at "
        "step 0."
    )
    x: TensorOut | None = Field(None, description="x_t, when record_x is true.")


class DescentSummaryLine(ResponseModel):
    """How the run ended: the last NDJSON line of a streamed run."""

    status: Status = Field(
        description="The stopping rule that fired: converged_grad, converged_f, converged_x, "
        "max_steps, diverged (non-finite x, f or gradient, or f above the blow-up threshold), "
        "or line_search_failed (backtracking found no sufficient decrease)."
    )
    reason: str = Field(description="The rule, the step and the values that fired it.")
    steps: int = Field(description="The step at which the rule fired.")
    final_step: int = Field(
        description="The step of x_final: steps, or steps - 1 when that step produced no finite "
        "iterate (non-finite values, a domain exit, or a failed line search)."
    )
    f_final: float = Field(description="f(x_final); always finite.")
    grad_norm_final: float = Field(description="||grad f(x_final)||_2.")
    x_final: TensorOut


class GradientDescentResponse(DescentSummaryLine):
    """The summary of the run and its recorded trajectory."""

    trajectory: list[TrajectoryPoint]


class ProgramTrajectoryPoint(ResponseModel):
    """One recorded step of a program's run; also one NDJSON line."""

    step: int = Field(description="t; a multiple of record_every.")
    f: float = Field(description="f at step t.")
    grad_norm: float = Field(description="||grad f||_2 over all variables jointly.")
    learning_rate: float | None = Field(description="The step length that produced step t.")
    variables: dict[str, TensorOut] | None = Field(
        None, description="Each variable's value, when record_x is true."
    )


class ProgramDescentSummaryLine(ResponseModel):
    """How a program's run ended: the last NDJSON line of a streamed run."""

    status: Status
    reason: str
    steps: int
    final_step: int
    f_final: float
    grad_norm_final: float = Field(description="||grad f||_2 over all variables jointly.")
    final: dict[str, TensorOut] = Field(description="Variable name -> its final value.")


class ProgramDescentResponse(ProgramDescentSummaryLine):
    """The summary of a program's run and its recorded trajectory."""

    trajectory: list[ProgramTrajectoryPoint]


def ndjson_schema(
    point: type[TrajectoryPoint] = TrajectoryPoint,
    summary_line: type[DescentSummaryLine] = DescentSummaryLine,
    programs: bool = False,
) -> dict[str, Any]:
    """Return the OpenAPI schema of one NDJSON line: a point, the summary, or a problem.

    The summary's schema is written inline; what it refers to (``TensorOut``) and the other two
    line kinds are components of the document already.

    Parameters
    ----------
    point, summary_line : type
        The models of a trajectory line and of the summary line (gradient descent's by default).
    programs : bool
        Also list a program's lines (``ProgramTrajectoryPoint``, ``ProgramDescentSummaryLine``).
    """
    summary = summary_line.model_json_schema(ref_template="#/components/schemas/{model}")
    summary.pop("$defs", None)
    lines: list[dict[str, Any]] = [
        {"$ref": f"#/components/schemas/{point.__name__}"},
        summary,
        {"$ref": "#/components/schemas/Problem"},
    ]
    if programs:
        program = ProgramDescentSummaryLine.model_json_schema(
            ref_template="#/components/schemas/{model}"
        )
        program.pop("$defs", None)
        lines += [{"$ref": "#/components/schemas/ProgramTrajectoryPoint"}, program]
    also = "; for a program (inputs) ProgramTrajectoryPoint and ProgramDescentSummaryLine"
    return {
        "description": f"One JSON object per line: a {point.__name__} per recorded step as it "
        f"is computed, then the {summary_line.__name__} (the line with 'status')"
        f"{also if programs else ''}. A failure after the stream started ends it with a Problem "
        "line.",
        "oneOf": lines,
    }


__all__ = [
    "DescentSummaryLine",
    "DescentTolerances",
    "GradientDescentRequest",
    "GradientDescentResponse",
    "ProgramDescentResponse",
    "ProgramDescentSummaryLine",
    "ProgramTrajectoryPoint",
    "RunRequest",
    "TrajectoryPoint",
    "ndjson_schema",
]
