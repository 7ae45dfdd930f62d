"""Models of ``POST /v1/minimize``: gd, Adam, L-BFGS-B, Newton-CG and trust-ncg under one run model.

The request extends the gradient-descent request's stopping rules and records with ``method`` and
its parameters; the response, trajectory points and NDJSON lines are gradient descent's plus the
running counts of function, gradient and Hessian-vector evaluations.
"""

import math
from typing import Annotated

import numpy as np
from pydantic import AfterValidator, Field
from pydantic_core import PydanticKnownError

from ...codec import Tensor, decode_tensor
from ...engine import layout
from ...engine.errors import ShapeError
from ...engine.minimize_params import Bounds, Method, MinimizeParams
from ...engine.types import FloatArray, Shape
from .common import ResponseModel, StrictModel
from .descent import (
    DescentSummaryLine,
    ProgramDescentSummaryLine,
    ProgramTrajectoryPoint,
    RunRequest,
    TrajectoryPoint,
)


def _open_side(infinity: float) -> AfterValidator:
    """Accept a finite bound, or the infinity that leaves its side open (as null does).

    A NaN, or the infinity that closes the box (+inf below, -inf above), would only surface after
    x0 is projected into the box, as a non-finite x0: it is refused here, at the bound.
    """

    def check(value: float) -> float:
        if value != infinity and not math.isfinite(value):
            raise PydanticKnownError("finite_number")
        return value

    return AfterValidator(check)


_BOUND = "A number for every element, a tensor of x's shape, or null (unbounded)."
LowerBound = Annotated[
    Annotated[float, _open_side(-math.inf)] | Tensor | None, Field(description=_BOUND)
]
UpperBound = Annotated[
    Annotated[float, _open_side(math.inf)] | Tensor | None, Field(description=_BOUND)
]


def _packed(parts: list[FloatArray]) -> FloatArray:
    # One variable keeps its shape; several are laid end to end, each flattened in C order.
    if len(parts) == 1:
        return parts[0]
    return np.concatenate([layout.vec(part, "C") for part in parts])


class VariableBounds(StrictModel):
    """Box constraints ``lower <= x <= upper`` of one variable (L-BFGS-B)."""

    lower: LowerBound = None
    upper: UpperBound = None


def _bound(value: float | Tensor | None, shape: Shape, fill: float, what: str) -> np.ndarray:
    if value is None:
        return np.full(shape, fill)
    if isinstance(value, float | int):
        return np.full(shape, float(value))
    array = decode_tensor(value)
    if array.shape != shape:
        raise ShapeError(f"{what} has shape {list(array.shape)}, x0 has {list(shape)}")
    return array


class MinimizeRequest(RunRequest):
    """Minimize a scalar function from x0 by gd, adam, lbfgs, newton-cg or trust-ncg.

    ``function`` must end in exactly one element. ``learning_rate`` is required by gd and adam and
    refused by the SciPy methods, which choose their own steps; ``momentum``/``nesterov``/
    ``line_search`` belong to gd, ``b1``/``b2``/``eps`` to adam, ``bounds``/``memory`` to lbfgs.
    The other fields are those of /v1/gradient-descent (the shared RunRequest).
    """

    model_config = StrictModel.model_config | {
        "json_schema_extra": {
            "examples": [
                {
                    "function": [
                        {"op": "add", "constant": {"data": [-1.0, 2.0]}},
                        {"op": "square"},
                        {"op": "cos"},
                        {"op": "sum"},
                    ],
                    "x0": {"data": [0.5, -1.5]},
                    "method": "newton-cg",
                    "max_steps": 50,
                    "tolerances": {"grad_tol": 1e-10},
                }
            ]
        }
    }

    method: Method = Field(
        description="gd (the notes' rule), adam (PyTorch/optax), lbfgs (SciPy L-BFGS-B), "
        "newton-cg (SciPy Newton-CG) or trust-ncg (SciPy trust-ncg); the last two with exact "
        "Hessian-vector products."
    )
    learning_rate: float | None = Field(
        None, gt=0, allow_inf_nan=False, description="γ > 0 of gd and adam (required by them)."
    )
    b1: float = Field(0.9, ge=0, lt=1, description="adam: decay of the first moment.")
    b2: float = Field(0.999, ge=0, lt=1, description="adam: decay of the second moment.")
    eps: float = Field(
        1e-8, gt=0, allow_inf_nan=False, description="adam: added to sqrt(v̂) in the denominator."
    )
    bounds: dict[str, VariableBounds] | None = Field(
        None,
        description="lbfgs: box constraints per variable ('x' in the op-list form); x0 is "
        "projected into them first.",
    )
    memory: int = Field(10, ge=1, le=1000, description="lbfgs: corrections kept (SciPy maxcor).")

    def params(self, shapes: dict[str, Shape]) -> MinimizeParams:
        """Return the engine's parameters, for variables of ``shapes`` (in their order).

        Bounds of one variable ``x`` (the op-list form) have its shape; those of a program are
        laid end to end as its variables are (each flattened in C order).
        """
        bounds = None
        if self.bounds is not None:
            unknown = sorted(set(self.bounds) - set(shapes))
            if unknown:
                raise ShapeError(f"bounds name unknown variables {unknown}; the variables are "
                                 f"{list(shapes)}")  # fmt: skip
            lower, upper = [], []
            for name, shape in shapes.items():
                box = self.bounds.get(name, VariableBounds())
                lower.append(_bound(box.lower, shape, -np.inf, f"bounds.{name}.lower"))
                upper.append(_bound(box.upper, shape, np.inf, f"bounds.{name}.upper"))
            bounds = Bounds(*(_packed(parts) for parts in (lower, upper)))
        tolerances = self.tolerances
        return MinimizeParams(
            method=self.method,
            max_steps=self.max_steps,
            grad_tol=tolerances.grad_tol,
            f_tol=tolerances.f_tol,
            x_tol=tolerances.x_tol,
            divergence_factor=tolerances.divergence_factor,
            record_every=self.record_every,
            record_x=self.record_x,
            learning_rate=self.learning_rate,
            momentum=self.momentum,
            nesterov=self.nesterov,
            line_search=self.line_search,
            b1=self.b1,
            b2=self.b2,
            eps=self.eps,
            bounds=bounds,
            memory=self.memory,
        )


class Evaluations(ResponseModel):
    """Evaluations so far: of f, of its gradient, and Hessian-vector products."""

    function: int
    gradient: int
    hvp: int


class MinimizePoint(TrajectoryPoint):
    """One recorded iteration (learning_rate: γ for gd and adam, null for SciPy's methods)."""

    evaluations: Evaluations = Field(description="Counts when this iterate was reached.")


class MinimizeSummaryLine(DescentSummaryLine):
    """How the run ended: the last NDJSON line of a streamed run.

    For SciPy's methods, a status that SciPy decided quotes its message in ``reason``;
    ``line_search_failed`` then means that the method's line search or trust region could make no
    progress.
    """

    method: Method
    evaluations: Evaluations = Field(description="Counts of the whole run.")


class MinimizeResponse(MinimizeSummaryLine):
    """The summary of the run and its recorded trajectory."""

    trajectory: list[MinimizePoint]


class ProgramMinimizePoint(ProgramTrajectoryPoint):
    """One recorded iteration of a program's run, with the evaluation counts."""

    evaluations: Evaluations = Field(description="Counts when this iterate was reached.")


class ProgramMinimizeSummaryLine(ProgramDescentSummaryLine):
    """How a program's run ended: the last NDJSON line of a streamed run."""

    method: Method
    evaluations: Evaluations = Field(description="Counts of the whole run.")


class ProgramMinimizeResponse(ProgramMinimizeSummaryLine):
    """The summary of a program's run and its recorded trajectory."""

    trajectory: list[ProgramMinimizePoint]


__all__ = [
    "Evaluations",
    "MinimizePoint",
    "MinimizeRequest",
    "MinimizeResponse",
    "MinimizeSummaryLine",
    "ProgramMinimizePoint",
    "ProgramMinimizeResponse",
    "ProgramMinimizeSummaryLine",
    "VariableBounds",
]
