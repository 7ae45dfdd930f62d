"""Gradient descent on a scalar function: the seed notes' ``x_{t+1} = x_t - γ ten(∂f/∂x_t)``.

This module owns the descent loop and nothing else. It is a pure fold over explicit state, in the
manner of optax's ``base.py``: :func:`init` turns ``x_0`` into a :class:`DescentState`,
:func:`update` maps a state to the next one (or to a :class:`Stop`), :func:`stopping_rule` says
whether a state ends the run, and :func:`run` strings them together as a generator of events.
Streaming and non-streaming callers share that one generator: the streamed lines *are* the
records the non-streamed response collects (:func:`collect`).

Gradient. ``f`` is a :class:`~service.engine.chain.Chain` whose output has exactly one element.
``∂f/∂x`` is the notes' ``lmn x 1`` Jacobian, so ``ten(∂f/∂x) = ten(J vec(1))``: the VJP with
cotangent 1. It is computed by one reverse pass over the stored intermediates; no Jacobian is
ever formed. The result does not depend on the index order (``vec``/``ten`` are inverse).

Preparation (once per request, :class:`Objective`). A linear operation that mixes neighbours (a
stencil: more than one entry per row *and* per column of its Jacobian, e.g. ``xcorr2d`` or an
overlapping ``avg_pool2d``) is replaced by its sparse matrix, built once: its forward is then
``ten_C(J^T vec_C(x)) + b`` and its VJP ``ten_C(J vec_C(u))``, two CSR mat-vecs per step. These
are exactly the operation's ``forward`` and ``vjp`` (the same Jacobian, in C order on both sides,
so the intermediates mean the same tensors); only the rounding differs. Diagonal, permuting and
reducing operations (``add``, ``scale``, ``reshape``, ``sum``, ...) already cost one pass of
arithmetic and dense ``linear`` is a BLAS mat-vec, so they run as they are. A matrix whose
non-zero bound exceeds :data:`PREPARED_NNZ` (or the caller's limit) is not built; the operation
then runs unprepared, with the same results. Every operation's shape rule ran once, in the
:class:`Chain`; a step repeats only the domain checks, which depend on the values.

Update rules (``g_t = ten(∂f/∂x_t)``, ``v_0 = 0``; PyTorch ``SGD`` / optax ``trace``)::

    plain (default):  x_{t+1} = x_t - γ g_t                       (the notes' rule)
    heavy ball β:     v_{t+1} = β v_t + g_t,  x_{t+1} = x_t - γ v_{t+1}
    Nesterov β:       v_{t+1} = β v_t + g_t,  x_{t+1} = x_t - γ (g_t + β v_{t+1})

Backtracking (Armijo) line search, plain direction only: try ``α = γ, ρ γ, ρ² γ, ...`` and accept
the first ``α`` with ``f(x_t - α g_t) <= f(x_t) - c α ||g_t||²``; ``c =`` :data:`ARMIJO_C`,
``ρ =`` :data:`BACKTRACK_FACTOR`, at most :data:`MAX_BACKTRACKS` reductions. A trial point where
``f`` is not finite or leaves an operation's domain is treated as insufficient decrease.

Stopping (checked on every state ``t``, in this order of precedence; the first that holds wins):

1. ``diverged``: ``f_t > divergence_factor · max(|f_0|, 1)`` (the blow-up threshold). A
   non-finite ``x``, ``f`` or gradient, or an iterate outside an operation's domain, is also
   ``diverged``; such a state is never formed, and the run stops at the step that produced it.
2. ``converged_grad``: ``||g_t||₂ <= grad_tol``.
3. ``converged_f``: ``|f_t - f_{t-1}| <= f_tol · max(|f_{t-1}|, |f_t|, 1)`` (t >= 1; scipy's
   L-BFGS-B ``ftol`` test).
4. ``converged_x``: ``||x_t - x_{t-1}||₂ <= x_tol · max(||x_{t-1}||₂, ||x_t||₂, 1)`` (t >= 1).
5. ``max_steps``: ``t = max_steps``.

``line_search_failed`` ends a backtracking run when no trial step decreases ``f`` enough.
``deadline`` ends a run whose wall-clock budget (``DescentLimits.deadline_seconds``, the
service's per-request deadline) is used up, when no rule above has fired at that state.

Records. State ``t`` is recorded when ``t % record_every == 0`` (step 0 included), so a run of
``T`` steps has ``T // record_every + 1`` records: 10 000 steps with ``record_every = 100`` give
steps 0, 100, ..., 10 000. The final state is always in the summary, recorded or not. Between
records :func:`run` yields None once per step, so a consumer (the NDJSON stream) regains control
after every step and can stop the run by closing the generator.
"""

from .loop import (
    DescentEvent,
    DescentRecord,
    DescentResult,
    DescentState,
    DescentSummary,
    Step,
    Stop,
    arrive,
    collect,
    descend,
    init,
    run,
    stopping_rule,
    update,
)
from .objective import PROPAGATING, Descendable, Evaluation, Objective, QuietObjective
from .params import (
    ARMIJO_C,
    BACKTRACK_FACTOR,
    DIVERGENCE_FACTOR,
    LINE_SEARCHES,
    MAX_BACKTRACKS,
    PREPARED_NNZ,
    STATUSES,
    DescentLimits,
    DescentParams,
    LineSearch,
    Status,
    check_scalar,
    check_scalar_shape,
    check_steps,
)

__all__ = [
    "ARMIJO_C",
    "BACKTRACK_FACTOR",
    "DIVERGENCE_FACTOR",
    "LINE_SEARCHES",
    "MAX_BACKTRACKS",
    "PREPARED_NNZ",
    "PROPAGATING",
    "STATUSES",
    "arrive",
    "check_scalar",
    "check_scalar_shape",
    "check_steps",
    "collect",
    "descend",
    "Descendable",
    "DescentEvent",
    "DescentLimits",
    "DescentParams",
    "DescentRecord",
    "DescentResult",
    "DescentState",
    "DescentSummary",
    "Evaluation",
    "init",
    "LineSearch",
    "Objective",
    "QuietObjective",
    "run",
    "Status",
    "Step",
    "Stop",
    "stopping_rule",
    "update",
]
