"""Models of ``POST /v1/minimize``: gd, Adam, L-BFGS-B, Newton-CG and trust-ncg under one run model.

The request extends the gradient-descent request's stopping rules and records with ``method`` and
its parameters; the response, trajectory points and NDJSON lines are gradient descent's plus the
running counts of function, gradient and Hessian-vector evaluations.
"""

from typing import Annotated

import numpy as np
from pydantic import Field

from ...codec import Tensor, decode_tensor
from ...engine.descent import LineSearch
from ...engine.errors import ShapeError
from ...engine.minimize import Bounds, Method, MinimizeParams
from ...engine.types import Shape
from .common import Order, ResponseEncoding, ResponseModel, StrictModel
from .descent import DescentSummaryLine, DescentTolerances, TrajectoryPoint
from .ops import Function

Bound = Annotated[
    float | Tensor | None,
    Field(description="A number for every element, a tensor of x's shape, or null (unbounded)."),
]


class VariableBounds(StrictModel):
    """Box constraints ``lower <= x <= upper`` of one variable (L-BFGS-B)."""

    lower: Bound = None
    upper: Bound = None


def _bound(value: float | Tensor | None, shape: Shape, fill: float, what: str) -> np.ndarray:
    if value is None:
        return np.full(shape, fill)
    if isinstance(value, float | int):
        return np.full(shape, float(value))
    array = decode_tensor(value)
    if array.shape != shape:
        raise ShapeError(f"{what} has shape {list(array.shape)}, x0 has {list(shape)}")
    return array


class MinimizeRequest(StrictModel):
    """Minimize a scalar function from x0 by gd, adam, lbfgs, newton-cg or trust-ncg.

    ``function`` must end in exactly one element. ``learning_rate`` is required by gd and adam and
    refused by the SciPy methods, which choose their own steps; ``momentum``/``nesterov``/
    ``line_search`` belong to gd, ``b1``/``b2``/``eps`` to adam, ``bounds``/``memory`` to lbfgs.
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

    function: Function
    x0: Tensor = Field(description="The starting point x_0; its shape is the function's input.")
    method: Method = Field(
        description="gd (the notes' rule), adam (PyTorch/optax), lbfgs (SciPy L-BFGS-B), "
        "newton-cg (SciPy Newton-CG) or trust-ncg (SciPy trust-ncg); the last two with exact "
        "Hessian-vector products."
    )
    max_steps: int = Field(
        ge=0, description="Most iterations; at most the service's SERVICE_MAX_DESCENT_STEPS (413)."
    )
    tolerances: DescentTolerances = Field(default_factory=DescentTolerances)
    record_every: int = Field(
        1, ge=1, description="Record iterations 0, k, 2k, ...: max_steps // k + 1 points at most."
    )
    record_x: bool = Field(False, description="Include x in every recorded point.")
    learning_rate: float | None = Field(
        None, gt=0, allow_inf_nan=False, description="γ > 0 of gd and adam (required by them)."
    )
    momentum: float = Field(0.0, ge=0, lt=1, description="gd: heavy-ball β in [0, 1).")
    nesterov: bool = Field(False, description="gd: Nesterov momentum; needs momentum > 0.")
    line_search: LineSearch = Field("none", description="gd: 'backtracking' (Armijo, momentum 0).")
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
    order: Order = "F"
    encoding: ResponseEncoding = "list"

    def params(self, shape: Shape) -> MinimizeParams:
        """Return the engine's parameters for this request, ``x`` of ``shape``."""
        bounds = None
        if self.bounds is not None:
            unknown = sorted(set(self.bounds) - {"x"})
            if unknown:
                raise ShapeError(f"bounds name unknown variables {unknown}; the variable is 'x'")
            box = self.bounds.get("x", VariableBounds())
            bounds = Bounds(
                _bound(box.lower, shape, -np.inf, "bounds.x.lower"),
                _bound(box.upper, shape, np.inf, "bounds.x.upper"),
            )
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


__all__ = [
    "Evaluations",
    "MinimizePoint",
    "MinimizeRequest",
    "MinimizeResponse",
    "MinimizeSummaryLine",
    "VariableBounds",
]
