"""The estimates of the function routes, from shapes alone (what each route checks first).

Each ``*_cost`` function returns a :class:`~service.api.budget.RequestCost` for one request body;
the route calls it (through :func:`~service.api.budget.check_request`) before any arithmetic, and
``POST /v1/estimate`` calls the same function without computing, so the two cannot disagree.
"""

from collections.abc import Sequence
from typing import Any, cast

import numpy as np

from ..codec import Encoding, decode_tensor
from ..codec.sparse import CooJacobianIn, DenseJacobianIn
from ..config import Settings
from ..engine import estimates, functions
from ..engine.chain import Chain
from ..engine.cost import Cost
from ..engine.graph import costs as graph_costs
from ..engine.graph import strategies
from ..engine.graph.curvature import hessian_plan
from ..engine.graph.program import Program
from ..engine.graph.requests import as_chain, check_tensors, resolve_format
from ..engine.hessian import hessian_format, hessian_nnz_bound
from ..engine.layout import size_of
from ..engine.types import FloatArray, Layout, Order, Shape
from .budget import Payload, RequestCost, coo_payload, float_payload
from .programs import build_program
from .schemas.descent import GradientDescentRequest
from .schemas.functions import (
    ChainRuleRequest,
    EvaluateRequest,
    JacobianRequest,
    JvpRequest,
    VjpRequest,
)
from .schemas.minimize import MinimizeRequest
from .schemas.ops import OpSpec
from .schemas.second_order import HessianRequest, HvpRequest


def chain_of(function: list[OpSpec], x: FloatArray, order: Order) -> Chain:
    """Return the :class:`Chain` of an op list applied to ``x`` (the x form)."""
    return Chain([spec.to_engine(order) for spec in function], x.shape)


def function_limits(settings: Settings) -> functions.FunctionLimits:
    """Return the engine's bounds on one function request from the settings."""
    return functions.FunctionLimits(
        max_tensor_elements=settings.max_tensor_elements,
        max_dense_elements=settings.max_dense_jacobian_elements,
        max_nnz=settings.max_coo_nnz,
    )


def _x_chain(body: Any) -> Chain:
    # The x form: an op list applied to x.
    assert body.x is not None and isinstance(body.function, list)
    return chain_of(body.function, decode_tensor(body.x), body.order)


def evaluate_cost(body: EvaluateRequest, settings: Settings) -> RequestCost:
    """Estimate ``/v1/evaluate`` from shapes alone."""
    if body.program:
        return program_evaluate_cost(body, settings)
    chain = _x_chain(body)
    functions.check_intermediates(chain, settings.max_tensor_elements)
    payload = float_payload(size_of(chain.out_shape), body.encoding)
    facts = {"output_shape": list(chain.out_shape), "shapes": [list(s) for s in chain.shapes]}
    return RequestCost(estimates.evaluate_cost(chain), payload, facts)


def jacobian_payload(
    fmt: str, nnz_bound: int, in_size: int, out_size: int, encoding: Encoding
) -> Payload:
    """Return the payload of a Jacobian in ``fmt`` (``"coo"`` or ``"dense"``)."""
    if fmt == "coo":
        return coo_payload(nnz_bound, in_size, out_size, encoding)
    return float_payload(in_size * out_size, encoding)


def jacobian_cost(body: JacobianRequest, settings: Settings) -> RequestCost:
    """Estimate ``/v1/jacobian``; its facts name the format and strategy ``auto`` resolves to."""
    if body.program:
        return program_jacobian_cost(body, settings)
    chain = _x_chain(body)
    fmt, plan = functions.plan_jacobian(
        chain, fmt=body.format, strategy=body.strategy, limits=function_limits(settings)
    )
    n, m = size_of(chain.in_shape), size_of(chain.out_shape)
    payload = float_payload(m, body.encoding) + jacobian_payload(
        fmt, plan.nnz_bound, n, m, body.encoding
    )
    cost = estimates.jacobian_cost(chain, plan, fmt, body.check)
    rows, cols = (n, m) if body.layout == "in_out" else (m, n)
    facts = {
        "output_shape": list(chain.out_shape),
        "jacobian_shape": [rows, cols],
        "nnz_bound": plan.nnz_bound,
        "dense_bytes": 8 * n * m,
        "format": fmt,
        "strategy": plan.strategy,
        "strategy_costs": plan.costs,
    }
    return RequestCost(cost, payload, facts)


def product_cost(body: JvpRequest | VjpRequest, settings: Settings) -> RequestCost:
    """Estimate ``/v1/jvp`` or ``/v1/vjp`` from shapes alone."""
    if body.program:
        return program_product_cost(body, settings)
    chain = _x_chain(body)
    functions.check_intermediates(chain, settings.max_tensor_elements)
    n, m = size_of(chain.in_shape), size_of(chain.out_shape)
    product_size = m if isinstance(body, JvpRequest) else n
    payload = float_payload(m, body.encoding) + float_payload(product_size, body.encoding)
    facts = {"output_shape": list(chain.out_shape), "input_shape": list(chain.in_shape)}
    return RequestCost(estimates.product_cost(chain, body.check), payload, facts)


def _given(jacobian: CooJacobianIn | DenseJacobianIn, layout: Layout) -> estimates.GivenJacobian:
    # What the chain rule knows of a factor before decoding it, in in_out orientation; a matrix
    # may state its own layout (the request's by default).
    if isinstance(jacobian, CooJacobianIn):
        rows, cols = jacobian.shape
        # validated: the decoded arrays
        row, col = np.asarray(cast(Any, jacobian.row)), np.asarray(cast(Any, jacobian.col))
        if (jacobian.layout or layout) == "out_in":
            rows, cols, row, col = cols, rows, col, row
        if row.shape != col.shape:  # the decoder refuses it with a pointer
            return estimates.GivenJacobian(rows, cols, int(row.size), False)
        return estimates.GivenJacobian(rows, cols, int(row.size), False, row, col)
    data = decode_tensor(jacobian.data)
    rows, cols = (data.shape + (1, 1))[:2] if data.ndim < 2 else data.shape[:2]
    if (jacobian.layout or layout) == "out_in":
        rows, cols = cols, rows
    return estimates.GivenJacobian(rows, cols, data.size, True)


def chain_rule_cost(body: ChainRuleRequest, settings: Settings) -> RequestCost:
    """Estimate ``/v1/chain-rule`` before decoding a factor; the facts name the format."""
    # In in_out orientation the product is J_1 ... J_n whatever the layouts.
    factors = [_given(jacobian, body.layout) for jacobian in body.jacobians]
    fmt = body.format
    if fmt == "auto":
        coo = any(isinstance(j, CooJacobianIn) for j in body.jacobians)
        fmt = "coo" if coo else "dense"
    cost, nnz = estimates.multiply_cost(factors, fmt == "dense")
    rows, cols = factors[0].rows, factors[-1].cols
    payload = jacobian_payload(fmt, nnz, rows, cols, body.encoding)
    if body.layout == "out_in":
        rows, cols = cols, rows
    facts = {"jacobian_shape": [rows, cols], "nnz_bound": nnz, "dense_bytes": 8 * rows * cols,
             "format": fmt}  # fmt: skip
    return RequestCost(cost, payload, facts)


# -- program forms (named inputs) ----------------------------------------------------------------


def _program(body: Any, settings: Settings) -> Program:
    assert body.inputs is not None
    shapes = {name: decode_tensor(tensor).shape for name, tensor in body.inputs.items()}
    program = build_program(body.function, shapes, body.order)
    check_tensors(program, settings.max_tensor_elements)
    return program


def _sizes(program: Program, names: Sequence[str]) -> int:
    return sum(size_of(program.inputs[name]) for name in names)


def program_evaluate_cost(body: EvaluateRequest, settings: Settings) -> RequestCost:
    """Estimate ``/v1/evaluate`` of a program."""
    program = _program(body, settings)
    chain = as_chain(program)
    cost = estimates.evaluate_cost(chain) if chain else graph_costs.trace_cost(program)
    payload = float_payload(size_of(program.out_shape), body.encoding)
    return RequestCost(cost, payload, {"output_shape": list(program.out_shape)})


def program_jacobian_cost(body: JacobianRequest, settings: Settings) -> RequestCost:
    """Estimate ``/v1/jacobian`` of a program; the facts name the format and strategy."""
    program = _program(body, settings)
    names = program.check_wrt(body.wrt)
    m = size_of(program.out_shape)
    chain = as_chain(program)
    limits = function_limits(settings)
    payload = float_payload(m, body.encoding)
    if chain is not None and names == tuple(program.inputs):
        fmt, plan = functions.plan_jacobian(
            chain, fmt=body.format, strategy=body.strategy, limits=limits
        )
        n = size_of(chain.in_shape)
        cost = estimates.jacobian_cost(chain, plan, fmt, body.check)
        payload += jacobian_payload(fmt, plan.nnz_bound, n, m, body.encoding)
        facts: dict[str, Any] = {
            "format": fmt,
            "strategy": plan.strategy,
            "nnz_bounds": {names[0]: plan.nnz_bound},
        }
    else:
        fmt = resolve_format(program, names, body.format, limits)
        graph_plan = strategies.plan(program, names, strategy=body.strategy, fmt=fmt,
                                     max_dense_elements=limits.max_dense_elements,
                                     max_nnz=limits.max_nnz)  # fmt: skip
        cost = graph_costs.jacobian_cost(program, graph_plan, names, fmt)
        if body.check:
            cost = cost.then(graph_costs.fd_check_cost(program, names))
        for name in names:
            n = size_of(program.inputs[name])
            nnz = graph_plan.nnz_bounds[name]
            payload += jacobian_payload(fmt, nnz, n, m, body.encoding)
        facts = {
            "format": fmt, "strategy": graph_plan.strategy,
            "nnz_bounds": graph_plan.nnz_bounds, "strategy_costs": graph_plan.costs,
        }  # fmt: skip
    facts["output_shape"] = list(program.out_shape)
    return RequestCost(cost, payload, facts)


def program_product_cost(body: JvpRequest | VjpRequest, settings: Settings) -> RequestCost:
    """Estimate ``/v1/jvp`` or ``/v1/vjp`` of a program."""
    program = _program(body, settings)
    if isinstance(body, JvpRequest):
        wrt = body.wrt if body.wrt is not None else list(body.tangents or {})
        names = program.check_wrt(wrt)
        product = size_of(program.out_shape)
    else:
        names = program.check_wrt(body.wrt)
        product = _sizes(program, names)
    chain = as_chain(program)
    if chain is not None:
        cost = estimates.product_cost(chain, body.check)
    else:
        cost = graph_costs.product_cost(program, names)
        if body.check:
            cost = cost.then(graph_costs.fd_check_cost(program, names))
    payload = float_payload(size_of(program.out_shape) + product, body.encoding)
    return RequestCost(cost, payload, {"output_shape": list(program.out_shape)})


# -- second order ---------------------------------------------------------------------------------


def hvp_cost(body: HvpRequest, settings: Settings) -> RequestCost:
    """Estimate ``/v1/hvp`` (forward over reverse, one vector)."""
    if body.program:
        program = _program(body, settings)
        names = program.check_wrt(list(body.vectors), "vectors")
        cost = graph_costs.hvp_cost(program, names)
        size = _sizes(program, names)
    else:
        chain = _x_chain(body)
        functions.check_intermediates(chain, settings.max_tensor_elements)
        cost = estimates.hvp_cost(chain)
        size = size_of(chain.in_shape)
    return RequestCost(cost, float_payload(1 + size, body.encoding), {"hvp_elements": size})


def hessian_cost(body: HessianRequest, settings: Settings) -> RequestCost:
    """Estimate ``/v1/hessian``: structural COO or dense, for op lists and graphs."""
    chain: Chain | None
    if body.program:
        program = _program(body, settings)
        names = program.check_wrt(body.wrt)
        chain = as_chain(program)
        if chain is None or names != tuple(program.inputs):
            plan = hessian_plan(program, names)
            n, bound = plan.size, plan.nnz_bound
            fmt = hessian_format(n, bound, body.format, settings.max_dense_jacobian_elements)
            if fmt == "dense":
                cost = graph_costs.dense_hessian_cost(program, names, settings.max_tensor_elements)
            else:
                cost = graph_costs.structural_hessian_cost(program, plan)
            return _hessian_estimate(cost, fmt, n, bound, body.encoding)
    else:
        chain = _x_chain(body)
    functions.check_intermediates(chain, settings.max_tensor_elements)
    n, bound = size_of(chain.in_shape), hessian_nnz_bound(chain)
    fmt = hessian_format(n, bound, body.format, settings.max_dense_jacobian_elements)
    cost = estimates.hessian_cost(chain, bound, fmt)
    return _hessian_estimate(cost, fmt, n, bound, body.encoding)


def _hessian_estimate(cost: Cost, fmt: str, n: int, bound: int, encoding: Encoding) -> RequestCost:
    payload = float_payload(1, encoding) + jacobian_payload(fmt, bound, n, n, encoding)
    facts = {"format": fmt, "hessian_shape": [n, n], "nnz_bound": bound}
    return RequestCost(cost, payload, facts)


# -- runs: gradient descent and minimization ------------------------------------------------------


def _run_objective(
    body: Any, settings: Settings, names: Sequence[str] | None
) -> tuple[Cost, Cost, dict[str, Shape]]:
    """Return one step's cost (the run's prepared matrices held), one HVP's, the shapes.

    The run's limits use ``max_coo_nnz`` as the largest matrix it prepares (``descent_limits``).
    """
    if body.inputs is not None:
        program = _program(body, settings)
        variables = program.check_wrt(names, "variables")
        shapes = {name: program.inputs[name] for name in variables}
        chain = as_chain(program)
        if chain is None:
            step = graph_costs.run_step_cost(program, variables, settings.max_coo_nnz)
            return step, graph_costs.hvp_cost(program, variables), shapes
    else:
        assert body.x0 is not None and isinstance(body.function, list)
        chain = chain_of(body.function, decode_tensor(body.x0), body.order)
        functions.check_intermediates(chain, settings.max_tensor_elements)
        shapes = {"x": chain.in_shape}
    step = estimates.descent_step_cost(chain, settings.max_coo_nnz)
    return step, estimates.hvp_cost(chain), shapes


def _run_payload(points: int, size: int, record_x: bool, encoding: Encoding) -> Payload:
    per_point = size + 4 if record_x else 4
    return float_payload(points * per_point + size, encoding)


def descent_cost(body: GradientDescentRequest, settings: Settings) -> RequestCost:
    """Estimate one step of ``/v1/gradient-descent`` and its whole JSON response.

    The number of steps is bounded by ``max_steps`` and by the run's deadline, not by the work
    limit: a run that converges early must not be refused for the steps it might have taken.
    """
    step, _, shapes = _run_objective(body, settings, body.variables)
    size = sum(size_of(shape) for shape in shapes.values())
    points = body.params().recorded_points()
    payload = _run_payload(points, size, body.record_x, body.encoding)
    facts = {"recorded_points": points, "step": "work and peak memory are for one step",
             "work_all_steps": step.work * body.max_steps}  # fmt: skip
    return RequestCost(step, payload, facts)


def minimize_cost(body: MinimizeRequest, settings: Settings) -> RequestCost:
    """Estimate one iteration of ``/v1/minimize`` and its whole JSON response.

    An iteration is a value and gradient (``gd``, ``adam``, ``lbfgs`` with its workspace held),
    or, for ``newton-cg`` and ``trust-ncg``, one Hessian-vector product of their inner
    iterations on top. As for descent, the iterations are bounded by ``max_steps`` and the run's
    deadline, not by the work limit.
    """
    names = body.variables if body.inputs is not None else None
    step, product, shapes = _run_objective(body, settings, names)
    size = sum(size_of(shape) for shape in shapes.values())
    step = estimates.minimize_step_cost(step, product, size, body.method, body.memory)
    points = body.params(shapes).descent_params().recorded_points()
    payload = _run_payload(points, size, body.record_x, body.encoding)
    facts = {"recorded_points": points, "step": "work and peak memory are for one iteration",
             "work_all_steps": step.work * body.max_steps}  # fmt: skip
    return RequestCost(step, payload, facts)
