"""Request builders of the optimisation runs: ``/v1/gradient-descent`` and ``/v1/minimize``.

Both share the service's run model: stopping rules (``tolerances``), recorded steps
(``record_every``, ``record_x``), a JSON answer with the trajectory or an NDJSON stream of
records then a summary line. The clients add ``stream=True`` on top of these builders.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

import numpy.typing as npt

from .calls import Call
from .functions import Function, Wrt, merge_inputs, program
from .results import DescentResult, Order, decode_descent, decode_record
from .wire import as_tensor

Method = Literal["gd", "adam", "lbfgs", "newton-cg", "trust-ncg"]
Bound = float | npt.ArrayLike | None


def _tolerances(**values: float | None) -> dict[str, float]:
    return {name: value for name, value in values.items() if value is not None}


def _decode_run(answer: Any) -> DescentResult:
    return decode_descent(answer, [decode_record(record) for record in answer["trajectory"]])


def gradient_descent(
    function: Function,
    x0: npt.ArrayLike | None = None,
    /,
    *,
    learning_rate: float,
    max_steps: int,
    variables: Wrt = None,
    inputs: Mapping[str, npt.ArrayLike] | None = None,
    momentum: float = 0.0,
    nesterov: bool = False,
    line_search: Literal["none", "backtracking"] = "none",
    grad_tol: float | None = None,
    f_tol: float | None = None,
    x_tol: float | None = None,
    divergence_factor: float | None = None,
    record_every: int = 1,
    record_x: bool = False,
    order: Order = "F",
    **named: npt.ArrayLike,
) -> Call[DescentResult]:
    """``POST /v1/gradient-descent``: x ← x − γ ∇f(x) until a stopping rule.

    Parameters
    ----------
    function : str, op list or graph
        A scalar function.
    x0 : array_like, optional
        The start (op-list form; same as ``x=...``).
    learning_rate : float
    max_steps : int
    variables : str, sequence of str, or None
        The inputs that descend (programs); the others stay fixed. None: all.
    inputs : mapping, optional
    momentum, nesterov, line_search
        Heavy ball β, Nesterov's variant, ``"backtracking"`` Armijo line search.
    grad_tol, f_tol, x_tol, divergence_factor : float, optional
        Stopping tolerances (service defaults when None).
    record_every : int
    record_x : bool
        Record the iterate with each step.
    order : {"F", "C"}
    **named : array_like
        Inputs by name.

    Returns
    -------
    DescentResult
    """
    prog = program(function, merge_inputs(x0, inputs, named), variables,
                   wrt_key="variables", x_key="x0")  # fmt: skip
    body = {
        **prog.fields,
        "learning_rate": learning_rate,
        "max_steps": max_steps,
        "momentum": momentum,
        "nesterov": nesterov,
        "line_search": line_search,
        "tolerances": _tolerances(
            grad_tol=grad_tol, f_tol=f_tol, x_tol=x_tol, divergence_factor=divergence_factor
        ),  # fmt: skip
        "record_every": record_every,
        "record_x": record_x,
        "order": order,
    }
    return Call("POST", "/v1/gradient-descent", body, _decode_run)


def _bounds_wire(bounds: Mapping[str, tuple[Bound, Bound]] | tuple[Bound, Bound]) -> Any:
    # One (lower, upper) pair means the op-list form's single variable x.
    pairs = bounds if isinstance(bounds, Mapping) else {"x": bounds}
    wire: dict[str, Any] = {}
    for name, (lower, upper) in pairs.items():
        wire[name] = {
            side: value if value is None or isinstance(value, float | int) else as_tensor(value)
            for side, value in (("lower", lower), ("upper", upper))
        }
    return wire


def minimize(
    function: Function,
    x0: npt.ArrayLike | None = None,
    /,
    *,
    method: Method,
    max_steps: int,
    variables: Wrt = None,
    inputs: Mapping[str, npt.ArrayLike] | None = None,
    learning_rate: float | None = None,
    momentum: float | None = None,
    nesterov: bool | None = None,
    line_search: Literal["none", "backtracking"] | None = None,
    b1: float | None = None,
    b2: float | None = None,
    eps: float | None = None,
    bounds: Mapping[str, tuple[Bound, Bound]] | tuple[Bound, Bound] | None = None,
    memory: int | None = None,
    grad_tol: float | None = None,
    f_tol: float | None = None,
    x_tol: float | None = None,
    divergence_factor: float | None = None,
    record_every: int = 1,
    record_x: bool = False,
    order: Order = "F",
    **named: npt.ArrayLike,
) -> Call[DescentResult]:
    """``POST /v1/minimize``: gd, adam, lbfgs, newton-cg or trust-ncg on a scalar function.

    Parameters
    ----------
    function : str, op list or graph
        A scalar function.
    x0 : array_like, optional
        The start (op-list form; same as ``x=...``).
    method : {"gd", "adam", "lbfgs", "newton-cg", "trust-ncg"}
    max_steps : int
    variables : str, sequence of str, or None
        The inputs that move (programs); the others stay fixed. None: all.
    inputs : mapping, optional
    learning_rate : float, optional
        γ of gd and adam (required by them, refused by the SciPy methods).
    momentum, nesterov, line_search : optional
        gd only.
    b1, b2, eps : float, optional
        adam only.
    bounds : (lower, upper) or mapping name → (lower, upper), optional
        lbfgs box constraints; each side a number, an array of the variable's shape, or None.
    memory : int, optional
        lbfgs corrections kept.
    grad_tol, f_tol, x_tol, divergence_factor : float, optional
    record_every : int
    record_x : bool
    order : {"F", "C"}
    **named : array_like
        Inputs by name.

    Returns
    -------
    DescentResult
        With ``method`` and ``evaluations`` (counts of f, gradient and Hessian-vector products);
        each record has its ``evaluations`` too. Options left at None take the service's
        defaults and are not sent.
    """
    prog = program(function, merge_inputs(x0, inputs, named), variables,
                   wrt_key="variables", x_key="x0")  # fmt: skip
    options = {
        "learning_rate": learning_rate,
        "momentum": momentum,
        "nesterov": nesterov,
        "line_search": line_search,
        "b1": b1,
        "b2": b2,
        "eps": eps,
        "bounds": None if bounds is None else _bounds_wire(bounds),
        "memory": memory,
    }
    body = {
        **prog.fields,
        "method": method,
        "max_steps": max_steps,
        **{name: value for name, value in options.items() if value is not None},
        "tolerances": _tolerances(
            grad_tol=grad_tol, f_tol=f_tol, x_tol=x_tol, divergence_factor=divergence_factor
        ),  # fmt: skip
        "record_every": record_every,
        "record_x": record_x,
        "order": order,
    }
    return Call("POST", "/v1/minimize", body, _decode_run)
