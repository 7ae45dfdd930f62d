"""Minimization of a scalar function by the methods users already know, under one run model.

Every method runs as the gradient-descent fold of :mod:`service.engine.descent` does: a generator
of events (a :class:`MinimizeRecord` per recorded iteration, None after the others, one
:class:`MinimizeSummary` last), the same stopping rules checked on every iterate (``diverged``,
``converged_grad``, ``converged_f``, ``converged_x``, ``max_steps``, ``deadline``) and the same
records. Methods:

``gd``
    The notes' rule with the options of ``/v1/gradient-descent`` (momentum, Nesterov, Armijo
    backtracking): :func:`service.engine.descent.update` itself.
``adam``
    PyTorch's ``torch.optim.Adam`` and optax's ``adam`` (defaults ``b1 = 0.9``, ``b2 = 0.999``,
    ``eps = 1e-8``; no weight decay, no AMSGrad), with ``m_0 = v_0 = 0``::

        m_t = b1 m_{t-1} + (1 - b1) g_t          v_t = b2 v_{t-1} + (1 - b2) g_t²
        x_t = x_{t-1} - γ m̂_t / (sqrt(v̂_t) + eps),  m̂_t = m_t / (1 - b1^t), v̂_t = v_t / (1 - b2^t)
``lbfgs``, ``newton-cg``, ``trust-ncg``
    ``scipy.optimize.minimize`` with ``method="L-BFGS-B"`` (optional bounds; ``ftol = f_tol``,
    ``gtol = 0``, the service's 2-norm rule replacing SciPy's projected-gradient one),
    ``"Newton-CG"`` (``xtol = 0``) and ``"trust-ncg"`` (``gtol = grad_tol``), the last two with the
    exact Hessian-vector product of :func:`service.engine.hessian.hvp`, run in a worker thread
    by :class:`service.engine.scipy_run.ScipyRun`, whose iteration callback makes the records and
    checks the service's stopping rules; when SciPy ends the run itself, its result maps onto a
    status and its message is quoted in the reason. Closing the generator stops SciPy at its next
    function evaluation or iteration.

A trial point of a SciPy line search where ``f`` is not finite or leaves an operation's domain
is reported to SciPy as ``f = +inf`` (with a zero gradient), so the search backs off, as the
backtracking of ``gd`` treats it. Every record and the summary carry the running counts of
function, gradient and Hessian-vector evaluations.
"""

from collections.abc import Callable, Generator, Mapping, Sequence

import numpy as np

from . import layout
from .chain import Chain
from .descent import (
    Descendable,
    DescentLimits,
    DescentState,
    Objective,
    Stop,
    arrive,
    check_scalar,
    check_scalar_shape,
    check_steps,
    init,
    run,
)
from .errors import ParameterError
from .functions import check_intermediates
from .graph.descent import Packing, ProgramObjective
from .graph.hvp import Linearization
from .graph.program import Program
from .graph.requests import as_chain, check_tensors
from .hessian import hvp
from .minimize_params import (
    CountingObjective,
    MinimizeEvent,
    MinimizeParams,
    counted,
)
from .scipy_run import ScipyRun
from .types import FloatArray

__all__ = ["minimize", "minimize_program"]


class _AdamStep:
    """Adam's update as a :data:`~service.engine.descent.Step`; holds the moments ``m``, ``v``."""

    def __init__(self, objective: Descendable, params: MinimizeParams) -> None:
        self._objective = objective
        self._params = params
        self._m: FloatArray = np.zeros(objective.in_shape)
        self._v: FloatArray = np.zeros(objective.in_shape)

    def __call__(self, state: DescentState) -> DescentState | Stop:
        p = self._params
        assert p.learning_rate is not None  # checked by MinimizeParams
        g = state.grad
        t = state.step + 1
        with np.errstate(all="ignore"):
            self._m = p.b1 * self._m + (1.0 - p.b1) * g
            self._v = p.b2 * self._v + (1.0 - p.b2) * np.square(g)
            m_hat = self._m / (1.0 - p.b1**t)
            v_hat = self._v / (1.0 - p.b2**t)
            x = state.x - p.learning_rate * m_hat / (np.sqrt(v_hat) + p.eps)
        return arrive(self._objective, t, x, None, p.learning_rate)


def minimize(
    chain: Chain, x0: FloatArray, params: MinimizeParams, limits: DescentLimits
) -> Generator[MinimizeEvent, None, None]:
    """Check, prepare and start a run; return its events (the request entry point).

    Everything that can refuse the request happens here, before the first event: the scalar
    check, the limits, the bounds' shapes, the preparation and the evaluation at ``x0``.

    Parameters
    ----------
    chain : Chain
        ``f``, with ``chain.in_shape == x0.shape``.
    x0 : ndarray
        For ``lbfgs`` with bounds, projected into them first (as L-BFGS-B does).
    params : MinimizeParams
    limits : DescentLimits

    Returns
    -------
    generator of MinimizeEvent
        Closing it stops the run.

    Raises
    ------
    ShapeError, LimitExceeded, ParameterError, NonFiniteError, DomainError
        As :func:`service.engine.descent.descend`; ``ParameterError`` also for bounds that do not
        fit ``x0`` or cross (``lower > upper``).
    """
    check_scalar(chain, "minimization")
    check_intermediates(chain, limits.max_tensor_elements)

    def chain_hvp(x: FloatArray, v: FloatArray) -> FloatArray:
        product: FloatArray = hvp(chain, x, v[np.newaxis]).products[0]
        return product

    inner = Objective(chain, max_prepared_nnz=limits.max_nnz)
    return _start(CountingObjective(inner, chain_hvp), x0, params, limits)


def minimize_program(
    program: Program,
    inputs: Mapping[str, FloatArray],
    variables: Sequence[str] | None,
    params: MinimizeParams,
    limits: DescentLimits,
) -> tuple[Generator[MinimizeEvent, None, None], Callable[[FloatArray], dict[str, FloatArray]]]:
    """Check, prepare and start a run over some inputs of a program (the others stay fixed).

    ``x`` is the variables laid end to end (:class:`~service.engine.graph.descent.Packing`), so
    every method, tolerance and norm covers them jointly; ``bounds`` are given packed the same
    way. A path graph over its only input runs as the op list it is (:func:`minimize`).

    Returns
    -------
    events : generator of MinimizeEvent
    unpack : callable
        Turns a packed ``x`` into ``name -> tensor``.

    Raises
    ------
    GraphError, ShapeError, LimitExceeded, ParameterError, NonFiniteError, DomainError
        As :func:`minimize` and :func:`service.engine.graph.descent.descend_program`.
    """
    names = program.check_wrt(variables, "variables")
    check_scalar_shape(program.out_shape, "minimization")
    check_tensors(program, limits.max_tensor_elements)
    packing = Packing(names, tuple(program.inputs[n] for n in names))
    chain = as_chain(program)
    if chain is not None and names == tuple(program.inputs):
        (name,) = names
        return minimize(chain, inputs[name], params, limits), lambda x: {name: x}
    fixed = {n: v for n, v in inputs.items() if n not in names}

    points: dict[bytes, Linearization] = {}  # the last point: CG asks for many products there

    def packed_hvp(x: FloatArray, v: FloatArray) -> FloatArray:
        key = x.tobytes()
        point = points.get(key)
        if point is None:
            point = Linearization(program, {**fixed, **packing.unpack(x)}, names)
            point.gradient()  # refused if not finite, as a product's gradient always was
            points.clear()
            points[key] = point
        vectors = {n: t[np.newaxis] for n, t in packing.unpack(v).items()}
        products = point.products(vectors, 1)
        return packing.pack({n: p[0] for n, p in products.items()})

    inner = ProgramObjective(program, inputs, names, max_prepared_nnz=limits.max_nnz)
    counted = CountingObjective(inner, packed_hvp)
    return _start(counted, packing.pack(inputs), params, limits), packing.unpack


def _start(
    objective: CountingObjective, x0: FloatArray, params: MinimizeParams, limits: DescentLimits
) -> Generator[MinimizeEvent, None, None]:
    """Check the steps, trajectory and bounds, evaluate at ``x0``, and start the method."""
    x0 = np.asarray(x0, dtype=np.float64)
    check_steps(layout.size_of(x0.shape), params.descent_params(), limits)
    if params.bounds is not None:
        lower, upper = params.bounds.lower, params.bounds.upper
        if lower.shape != x0.shape or upper.shape != x0.shape:
            raise ParameterError(
                f"bounds must have the shape of x0 {list(x0.shape)}, got {list(lower.shape)} "
                f"and {list(upper.shape)}"
            )
        if np.any(lower > upper):
            raise ParameterError("bounds cross: some lower bound exceeds its upper bound")
        x0 = np.clip(x0, lower, upper)
    start = init(objective, x0)
    if params.method in ("gd", "adam"):
        step = _AdamStep(objective, params) if params.method == "adam" else None
        events = run(objective, start, params.descent_params(), limits.deadline_seconds, step)
        return counted(events, objective)
    return ScipyRun(objective, start, params, limits.deadline_seconds).events()
