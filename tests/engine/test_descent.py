"""Gradient descent: closed-form iterates, every stopping rule at exactly its step, the notes'
update against the chain's Jacobian, momentum/Nesterov/backtracking against NumPy references.

The workhorse is ``f(x) = ½||x - c||²`` written as operations ``[add(-c), squared_norm,
scale(0.5)]``: its gradient is ``x - c``, so ``x_t = c + (1 - γ)^t (x_0 - c)``,
``||∇f(x_t)|| = |1 - γ|^t ||x_0 - c||`` and ``f_t = ½ ||∇f(x_t)||²``. Tolerances are placed at
geometric midpoints between consecutive closed-form values, so rounding cannot move the step at
which a rule fires.
"""

import dataclasses
import math

import numpy as np
import pytest

from service.engine import descent, layout
from service.engine.chain import Chain
from service.engine.descent import (
    DescentLimits,
    DescentParams,
    DescentRecord,
    DescentResult,
    Objective,
    collect,
    descend,
)
from service.engine.errors import (
    DomainError,
    LimitExceeded,
    NonFiniteError,
    ParameterError,
    ShapeError,
)
from service.engine.op import Op, get_op

# The documented line search (README, engine docstring): Armijo with c = 1e-4, halving. Written
# here as literals so that a change to the engine's constants is caught, not followed.
ARMIJO_C = 1e-4
BACKTRACK_FACTOR = 0.5
LIMITS = DescentLimits(
    max_steps=100_000, max_trajectory_elements=10**7, max_tensor_elements=10**7, max_nnz=10**8
)
EXACT = 1e-12


def op(name: str, **params: object) -> Op:
    return get_op(name)(**params)


def quadratic(c: np.ndarray) -> list[Op]:
    """``f(x) = ½||x - c||²``."""
    return [op("add", constant=-c), op("squared_norm"), op("scale", factor=0.5)]


def least_squares(w: np.ndarray, b: np.ndarray) -> list[Op]:
    """``f(x) = ½||W x - b||²`` for a vector ``x``; gradient ``W^T (W x - b)``."""
    return [
        op("linear", weight=w),
        op("add", constant=-b),
        op("squared_norm"),
        op("scale", factor=0.5),
    ]


def run(
    ops: list[Op], x0: np.ndarray, limits: DescentLimits = LIMITS, **params: object
) -> DescentResult:
    return collect(descend(Chain(ops, x0.shape), x0, DescentParams(**params), limits))  # type: ignore[arg-type]


def norm(v: np.ndarray) -> float:
    return float(np.linalg.norm(v))


def first_step(values: list[float], tol: float, start: int = 0) -> int:
    """The first ``t >= start`` with ``values[t] <= tol``; ``tol`` must be clear of every value."""
    for value in values:
        assert abs(value - tol) > 1e-6 * tol, "tolerance too close to a value: rounding could flip"
    return next(t for t in range(start, len(values)) if values[t] <= tol)


@pytest.fixture
def problem(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    c = rng.standard_normal((2, 3, 4))
    return c, c + rng.standard_normal((2, 3, 4))


# -- the notes' rule ------------------------------------------------------------------------------


@pytest.mark.parametrize("gamma", [0.1, 0.5, 1.0, 1.5, 1.9, 2.0])
def test_quadratic_iterates_follow_the_closed_form_at_every_recorded_step(
    problem: tuple[np.ndarray, np.ndarray], gamma: float
) -> None:
    c, x0 = problem
    result = run(quadratic(c), x0, learning_rate=gamma, max_steps=30, record_every=3, record_x=True)
    assert [r.step for r in result.trajectory] == list(range(0, 31, 3))
    d0 = x0 - c
    scale = norm(c) + norm(d0)
    for record in result.trajectory:
        factor = (1 - gamma) ** record.step
        assert record.x is not None
        np.testing.assert_allclose(record.x, c + factor * d0, rtol=0, atol=EXACT * scale)
        expected_norm = abs(factor) * norm(d0)
        assert record.grad_norm == pytest.approx(expected_norm, rel=EXACT, abs=EXACT * scale)
        assert math.sqrt(2 * record.f) == pytest.approx(expected_norm, rel=EXACT, abs=EXACT * scale)
        assert record.learning_rate == (None if record.step == 0 else gamma)
    summary = result.summary
    assert (summary.status, summary.steps, summary.final_step) == ("max_steps", 30, 30)
    assert summary.x_final is result.trajectory[-1].x
    assert summary.reason == "step 30: max_steps = 30 reached"


def test_one_step_is_x_minus_gamma_ten_of_the_chains_jacobian(rng: np.random.Generator) -> None:
    # Order matters for this f (reshape and the weights follow it): the step must use the
    # Jacobian in the request's order, in the notes' in_out layout, through ten in that order.
    for order in ("F", "C"):
        x0 = rng.standard_normal((2, 5, 6))
        ops = [
            op("xcorr2d", kernel=rng.standard_normal((2, 3, 2)), stride=(1, 2)),
            op("reshape", shape=(-1,), order=order),
            op("multiply", constant=rng.standard_normal(9)),
            op("tanh"),
            op("sum"),
        ]
        chain = Chain(ops, x0.shape)
        assert Objective(chain).prepared == (0,), "the correlation runs as its sparse matrix"
        jacobian = chain.jacobian(
            x0, order=order, fmt="dense", layout="in_out", max_dense_elements=10**6, max_nnz=10**6
        ).matrix
        assert jacobian.shape == (60, 1)
        gamma = 0.3
        expected = x0 - gamma * layout.ten(np.asarray(jacobian)[:, 0], x0.shape, order)
        result = run(ops, x0, learning_rate=gamma, max_steps=1, record_x=True)
        np.testing.assert_allclose(result.trajectory[1].x, expected, rtol=EXACT, atol=1e-15)
        assert result.trajectory[0].f == pytest.approx(float(chain.forward(x0)), rel=EXACT)


def test_ten_thousand_steps_recorded_every_hundred_give_101_records(
    rng: np.random.Generator,
) -> None:
    c = rng.standard_normal(2)
    result = run(quadratic(c), c + 1.0, learning_rate=1e-4, max_steps=10_000, record_every=100)
    assert [r.step for r in result.trajectory] == list(range(0, 10_001, 100))
    assert (result.summary.status, result.summary.steps) == ("max_steps", 10_000)


def test_events_are_records_nones_and_one_summary(problem: tuple[np.ndarray, np.ndarray]) -> None:
    c, x0 = problem
    events = list(
        descend(Chain(quadratic(c), x0.shape), x0, DescentParams(0.5, 6, record_every=3), LIMITS)
    )
    kinds = [type(e).__name__ for e in events]
    assert kinds == [
        "DescentRecord", "NoneType", "NoneType", "DescentRecord", "NoneType", "NoneType",
        "DescentRecord", "DescentSummary",
    ]  # fmt: skip
    assert [e.step for e in events if isinstance(e, DescentRecord)] == [0, 3, 6]


def test_closing_the_generator_stops_the_run(problem: tuple[np.ndarray, np.ndarray]) -> None:
    c, x0 = problem
    events = descend(Chain(quadratic(c), x0.shape), x0, DescentParams(0.5, 1000), LIMITS)
    assert isinstance(next(events), DescentRecord)
    events.close()
    assert next(events, "done") == "done"


def test_inputs_are_not_written_and_states_are_read_only(
    problem: tuple[np.ndarray, np.ndarray],
) -> None:
    c, x0 = problem
    before = x0.copy()
    result = run(quadratic(c), x0, learning_rate=0.5, max_steps=3, record_x=True)
    np.testing.assert_array_equal(x0, before)
    for record in result.trajectory:
        assert record.x is not None and not record.x.flags.writeable


# -- stopping rules -------------------------------------------------------------------------------


@pytest.mark.parametrize("gamma", [2.5, 3.0])
def test_learning_rate_above_two_diverges_at_the_blow_up_threshold(
    problem: tuple[np.ndarray, np.ndarray], gamma: float
) -> None:
    c, x0 = problem
    f0 = 0.5 * norm(x0 - c) ** 2
    f = [f0 * (gamma - 1) ** (2 * t) for t in range(200)]
    threshold = 1e12 * max(f0, 1.0)
    expected = next(t for t in range(200) if f[t] > threshold)
    assert min(abs(v / threshold - 1) for v in f) > 1e-6  # no borderline step
    result = run(quadratic(c), x0, learning_rate=gamma, max_steps=1000, record_every=1)
    summary = result.summary
    assert (summary.status, summary.steps, summary.final_step) == ("diverged", expected, expected)
    assert "exceeds the blow-up threshold" in summary.reason
    assert summary.f_final == pytest.approx(f[expected], rel=1e-9)
    assert result.trajectory[-1].step == expected  # a finite state is recorded


def test_overflow_is_diverged_and_reports_the_last_finite_iterate(rng: np.random.Generator) -> None:
    # f = ½||x - c||² with x - c = 3 (-2)^t: the sum of squares 36·4^t first overflows at t = 510
    # (36·4^509 ≈ 1.3e308 is finite). The threshold is out of reach (factor·f0 = inf).
    c = rng.standard_normal((2, 2))
    x0 = c + 3.0
    result = run(
        quadratic(c),
        x0,
        learning_rate=3.0,
        max_steps=1000,
        divergence_factor=1.7e308,
        record_every=1,
    )
    summary = result.summary
    assert (summary.status, summary.steps, summary.final_step) == ("diverged", 510, 509)
    assert summary.reason == (
        "step 510: operation 1 (squared_norm): the result has non-finite entries (overflow)"
    )
    np.testing.assert_allclose(summary.x_final, c + 3.0 * (-2.0) ** 509, rtol=1e-9)
    assert np.isfinite(summary.f_final) and result.trajectory[-1].step == 509


def test_leaving_the_domain_is_diverged_naming_the_operation() -> None:
    # f = sqrt(x): x_1 = 1 - 4 · 0.5 = -1 is outside sqrt's domain.
    result = run([op("sqrt"), op("sum")], np.array([1.0]), learning_rate=4.0, max_steps=10)
    summary = result.summary
    assert (summary.status, summary.steps, summary.final_step) == ("diverged", 1, 0)
    assert summary.reason.startswith("step 1: operation 0 (sqrt): ")
    assert summary.x_final.tolist() == [1.0]


def test_grad_tol_fires_at_exactly_its_step(problem: tuple[np.ndarray, np.ndarray]) -> None:
    c, x0 = problem
    r0 = norm(x0 - c)
    values = [0.5**t * r0 for t in range(40)]
    tol = 0.5**6.5 * r0
    expected = first_step(values, tol)
    assert expected == 7
    summary = run(quadratic(c), x0, learning_rate=0.5, max_steps=40, grad_tol=tol).summary
    assert (summary.status, summary.steps) == ("converged_grad", expected)
    assert summary.reason.startswith("step 7: ||grad f|| = ")


def test_f_tol_fires_at_exactly_its_step(rng: np.random.Generator) -> None:
    # f_0 = 5000, f_t = f_0 / 4^t: the relative change is 0.75 while f >= 1, then shrinks.
    c = rng.standard_normal(4)
    x0 = c + 100.0 * np.array([1.0, 0, 0, 0])
    f = [5000.0 / 4**t for t in range(40)]
    criterion = [math.inf] + [abs(f[t] - f[t - 1]) / max(f[t - 1], f[t], 1.0) for t in range(1, 40)]
    tol = math.sqrt(criterion[9] * criterion[10])
    expected = first_step(criterion, tol)
    assert expected == 10
    summary = run(quadratic(c), x0, learning_rate=0.5, max_steps=40, f_tol=tol).summary
    assert (summary.status, summary.steps) == ("converged_f", expected)


def test_x_tol_fires_at_exactly_its_step(problem: tuple[np.ndarray, np.ndarray]) -> None:
    c, x0 = problem
    d0 = x0 - c
    xs = [c + 0.5**t * d0 for t in range(40)]
    criterion = [math.inf] + [
        norm(xs[t] - xs[t - 1]) / max(norm(xs[t - 1]), norm(xs[t]), 1.0) for t in range(1, 40)
    ]
    tol = math.sqrt(criterion[5] * criterion[6])
    expected = first_step(criterion, tol)
    assert expected == 6
    summary = run(quadratic(c), x0, learning_rate=0.5, max_steps=40, x_tol=tol).summary
    assert (summary.status, summary.steps) == ("converged_x", expected)


def test_max_steps_zero_evaluates_x0_only(problem: tuple[np.ndarray, np.ndarray]) -> None:
    c, x0 = problem
    result = run(quadratic(c), x0, learning_rate=0.5, max_steps=0)
    assert [r.step for r in result.trajectory] == [0]
    assert (result.summary.status, result.summary.steps, result.summary.final_step) == (
        "max_steps",
        0,
        0,
    )


@pytest.mark.parametrize(
    ("tolerances", "status"),
    [
        ({"grad_tol": 1e-8, "f_tol": 1.0, "x_tol": 10.0}, "converged_grad"),
        ({"f_tol": 1.0, "x_tol": 10.0}, "converged_f"),
        ({"x_tol": 10.0}, "converged_x"),
        ({}, "max_steps"),
    ],
)
def test_precedence_when_several_rules_fire_on_the_same_step(
    problem: tuple[np.ndarray, np.ndarray], tolerances: dict[str, float], status: str
) -> None:
    # γ = 1 lands on c at step 1, where every listed rule and max_steps = 1 hold at once.
    c, x0 = problem
    summary = run(quadratic(c), x0, learning_rate=1.0, max_steps=1, **tolerances).summary
    assert (summary.status, summary.steps) == (status, 1)


def test_divergence_takes_precedence_over_every_other_rule(rng: np.random.Generator) -> None:
    # f_0 = 18, f_1 = 72 > 1.5 · 18; f_tol, x_tol and max_steps hold at step 1 as well. (grad_tol
    # cannot join them: the gradient grows, so a tolerance above it would fire at step 0.)
    c = rng.standard_normal(4)
    summary = run(
        quadratic(c),
        c + 3.0,
        learning_rate=3.0,
        max_steps=1,
        divergence_factor=1.5,
        f_tol=1e9,
        x_tol=1e9,
    ).summary
    assert (summary.status, summary.steps) == ("diverged", 1)


# -- momentum, Nesterov, backtracking -------------------------------------------------------------


@pytest.mark.parametrize("nesterov", [False, True])
def test_momentum_matches_a_numpy_reference(rng: np.random.Generator, nesterov: bool) -> None:
    w, b, x0 = rng.standard_normal((6, 4)), rng.standard_normal(6), rng.standard_normal(4)
    gamma, beta, steps = 0.5 / np.linalg.norm(w, 2) ** 2, 0.9, 60
    # Reference (PyTorch SGD, dampening 0): v = β v + g; x -= γ (g + β v) or γ v.
    x, v, expected = x0.copy(), np.zeros(4), [x0.copy()]
    for _ in range(steps):
        g = w.T @ (w @ x - b)
        v = beta * v + g
        x = x - gamma * (g + beta * v if nesterov else v)
        expected.append(x)
    result = run(
        least_squares(w, b),
        x0,
        learning_rate=gamma,
        max_steps=steps,
        momentum=beta,
        nesterov=nesterov,
        record_x=True,
    )
    got = np.array([r.x for r in result.trajectory])
    np.testing.assert_allclose(got, np.array(expected), rtol=1e-10, atol=1e-12)


def test_backtracking_accepts_only_armijo_steps_and_the_longest_of_them(
    rng: np.random.Generator,
) -> None:
    w, b, x0 = rng.standard_normal((6, 4)), rng.standard_normal(6), rng.standard_normal(4)
    gamma = 20 / np.linalg.norm(w, 2) ** 2  # far too long: backtracking must shorten it

    def f(x: np.ndarray) -> float:
        return 0.5 * float(np.sum((w @ x - b) ** 2))

    def armijo(x: np.ndarray, g: np.ndarray, alpha: float) -> bool:
        return f(x - alpha * g) <= f(x) - ARMIJO_C * alpha * float(g @ g)

    result = run(
        least_squares(w, b),
        x0,
        learning_rate=gamma,
        max_steps=30,
        line_search="backtracking",
        record_x=True,
    )
    records = result.trajectory
    shortened = 0
    for before, after in zip(records, records[1:], strict=False):
        assert before.x is not None and after.x is not None and after.learning_rate is not None
        g = w.T @ (w @ before.x - b)
        alpha = after.learning_rate
        k = round(math.log(alpha / gamma, BACKTRACK_FACTOR))
        assert alpha == gamma * BACKTRACK_FACTOR**k, "a step length γ ρ^k"
        np.testing.assert_allclose(after.x, before.x - alpha * g, rtol=1e-12, atol=1e-14)
        assert after.f <= before.f - ARMIJO_C * alpha * float(g @ g)
        assert armijo(before.x, g, alpha)
        if k > 0:
            shortened += 1
            assert not armijo(before.x, g, alpha / BACKTRACK_FACTOR), "the longest such step"
    assert shortened > 0


def test_backtracking_keeps_gamma_when_it_already_decreases_enough(
    problem: tuple[np.ndarray, np.ndarray],
) -> None:
    c, x0 = problem
    plain = run(quadratic(c), x0, learning_rate=0.5, max_steps=10, record_x=True)
    searched = run(
        quadratic(c),
        x0,
        learning_rate=0.5,
        max_steps=10,
        record_x=True,
        line_search="backtracking",
    )
    assert [r.learning_rate for r in searched.trajectory[1:]] == [0.5] * 10
    for a, b in zip(plain.trajectory, searched.trajectory, strict=True):
        np.testing.assert_array_equal(a.x, b.x)


@pytest.mark.parametrize(
    ("ops", "x0", "gamma"),
    [
        # x² at 1e145: the full step lands near -2e154, whose square overflows (NonFiniteError).
        ([op("square"), op("sum")], 1e145, 1e9),
        # exp(x²) at 2: the full step lands at -216, outside exp's domain (DomainError).
        ([op("square"), op("exp"), op("sum")], 2.0, 1.0),
    ],
    ids=["overflow", "domain"],
)
def test_backtracking_treats_a_trial_without_finite_f_as_too_long(
    ops: list[Op], x0: float, gamma: float
) -> None:
    result = run(ops, np.array([x0]), learning_rate=gamma, max_steps=5, line_search="backtracking")
    assert result.summary.status == "max_steps"
    first = result.trajectory[1].learning_rate
    assert first is not None and first < gamma
    fs = [r.f for r in result.trajectory]
    assert all(a > b for a, b in zip(fs, fs[1:], strict=False))


def test_backtracking_without_any_decrease_fails_the_line_search() -> None:
    # |x| at x = 1e-300: every trial step γ 2^-k (k <= 50) overshoots 0 by far more than x.
    result = run(
        [op("abs"), op("sum")],
        np.array([1e-300]),
        learning_rate=1.0,
        max_steps=5,
        line_search="backtracking",
    )
    summary = result.summary
    assert (summary.status, summary.steps, summary.final_step) == ("line_search_failed", 1, 0)
    assert summary.x_final.tolist() == [1e-300]


# -- preparation ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("x_shape", "first"),
    [
        ((3, 9, 8), op("xcorr2d", kernel=np.arange(27.0).reshape(3, 3, 3) - 13)),
        ((2, 7, 9), op("xcorr2d", kernel=np.ones((4, 2, 2, 3)), stride=(2, 1), padding="same")),
        ((2, 2, 8, 8), op("xcorr2d", kernel=np.ones((2, 3, 2)), dilation=(1, 2), padding="full")),
        ((2, 7, 6), op("avg_pool2d", size=(3, 2), stride=(1, 1))),
    ],
    ids=["xcorr", "xcorr-bank-stride-same", "xcorr-batch-dilated-full", "avg-pool-overlapping"],
)
def test_prepared_matrices_compute_what_the_operations_compute(
    rng: np.random.Generator, x_shape: tuple[int, ...], first: Op
) -> None:
    x = rng.standard_normal(x_shape)
    chain = Chain([first, op("tanh"), op("squared_norm")], x_shape)
    prepared, plain = Objective(chain), Objective(chain, max_prepared_nnz=0)
    assert (prepared.prepared, plain.prepared) == ((0,), ())
    a, b = prepared.evaluate(x), plain.evaluate(x)
    for value_a, value_b in zip(a.values, b.values, strict=True):
        assert value_a.shape == value_b.shape
        np.testing.assert_allclose(value_a, value_b, rtol=EXACT, atol=1e-13)
    assert a.f == pytest.approx(float(chain.forward(x)), rel=EXACT)
    expected = chain.vjp(x, np.ones((1,)))[0]
    for objective, evaluation in ((prepared, a), (plain, b)):
        np.testing.assert_allclose(objective.gradient(evaluation), expected, rtol=1e-11, atol=1e-13)


def test_cheap_operations_are_not_prepared(rng: np.random.Generator) -> None:
    c = rng.standard_normal((3, 4))
    ops = [*quadratic(c), op("reshape", shape=(1,)), op("linear", weight=np.ones((1, 1)))]
    assert Objective(Chain(ops, (3, 4))).prepared == ()


# -- refusals before running ----------------------------------------------------------------------


def test_non_scalar_function_is_refused_naming_its_shape() -> None:
    with pytest.raises(ShapeError, match=r"f\(x\) has shape \[2, 3\] \(6 elements\)"):
        descend(Chain([op("tanh")], (2, 3)), np.zeros((2, 3)), DescentParams(0.1, 5), LIMITS)


def test_single_element_outputs_of_any_rank_are_scalars() -> None:
    result = run([op("sum", axes=(1,))], np.ones((1, 3)), learning_rate=0.1, max_steps=2)
    assert result.summary.x_final.tolist() == [[0.8, 0.8, 0.8]]


@pytest.mark.parametrize(
    ("ops", "x0", "error", "match"),
    [
        (
            [op("scale", factor=1e300), op("scale", factor=1e300), op("sum")],
            np.array([1.0]),
            NonFiniteError,
            "operation 1 \\(scale\\)",
        ),
        ([op("log"), op("sum")], np.array([-1.0]), DomainError, "operation 0 \\(log\\)"),
        ([op("sqrt"), op("sum")], np.array([0.0]), DomainError, "operation 0 \\(sqrt\\)"),
    ],
    ids=["overflow", "log-domain", "sqrt-slope"],
)
def test_a_start_without_finite_f_or_gradient_is_refused(
    ops: list[Op], x0: np.ndarray, error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match):
        descend(Chain(ops, x0.shape), x0, DescentParams(0.1, 5), LIMITS)


def test_limits_are_checked_before_running(problem: tuple[np.ndarray, np.ndarray]) -> None:
    c, x0 = problem  # 24 elements
    chain = Chain(quadratic(c), x0.shape)

    def limits(**changes: int) -> DescentLimits:
        return DescentLimits(**{**LIMITS.__dict__, **changes})

    with pytest.raises(LimitExceeded, match="gradient-descent steps: estimated 11 exceeds") as e:
        descend(chain, x0, DescentParams(0.1, 11), limits(max_steps=10))
    assert (e.value.estimate, e.value.limit) == (11, 10)
    # 99 // 10 + 1 = 10 points of 24 elements
    recorded = DescentParams(0.1, 99, record_every=10, record_x=True)
    with pytest.raises(LimitExceeded, match="points x elements of x") as e:
        descend(chain, x0, recorded, limits(max_trajectory_elements=239))
    assert e.value.estimate == 240
    descend(chain, x0, recorded, limits(max_trajectory_elements=240))
    descend(chain, x0, DescentParams(0.1, 99, record_every=10), limits(max_trajectory_elements=10))
    with pytest.raises(LimitExceeded, match="elements of the input"):
        descend(chain, x0, DescentParams(0.1, 5), limits(max_tensor_elements=23))


@pytest.mark.parametrize(
    ("params", "match"),
    [
        ({"learning_rate": 0.0}, "learning_rate"),
        ({"learning_rate": math.inf}, "learning_rate"),
        ({"max_steps": -1}, "max_steps"),
        ({"grad_tol": -1.0}, "grad_tol"),
        ({"f_tol": math.nan}, "f_tol"),
        ({"divergence_factor": 1.0}, "divergence_factor"),
        ({"momentum": 1.0}, "momentum"),
        ({"nesterov": True}, "nesterov needs momentum > 0"),
        ({"line_search": "wolfe"}, "line_search"),
        ({"line_search": "backtracking", "momentum": 0.5}, "needs momentum 0"),
        ({"record_every": 0}, "record_every"),
    ],
)
def test_invalid_parameters_are_refused(params: dict[str, object], match: str) -> None:
    arguments: dict[str, object] = {"learning_rate": 0.1, "max_steps": 5, **params}
    with pytest.raises(ParameterError, match=match):
        DescentParams(**arguments)  # type: ignore[arg-type]


def test_statuses_are_the_documented_ones() -> None:
    assert set(descent.STATUSES) == {
        "converged_grad",
        "converged_f",
        "converged_x",
        "max_steps",
        "diverged",
        "line_search_failed",
        "deadline",
    }


def test_a_used_up_deadline_ends_the_run_with_its_own_status() -> None:
    c = np.array([1.0, -2.0])
    x0 = np.array([3.0, 0.0])
    no_time = dataclasses.replace(LIMITS, deadline_seconds=0.0)
    result = run(quadratic(c), x0, no_time, learning_rate=0.5, max_steps=1000)
    summary = result.summary
    assert summary.status == "deadline" and "budget of 0 s" in summary.reason
    # The state at the deadline is the last one computed, and it is a correct iterate.
    assert summary.steps == summary.final_step < 1000
    expected = c + 0.5**summary.final_step * (x0 - c)
    np.testing.assert_allclose(summary.x_final, expected, rtol=EXACT)
    # A rule that holds at the same state wins over the deadline (it is checked first).
    converged = run(quadratic(c), c.copy(), no_time, learning_rate=0.5, max_steps=10, grad_tol=1.0)
    assert converged.summary.status == "converged_grad"


def half_square() -> list[Op]:
    """``f(x) = ½||x||²``: x_(t+1) = (1 - γ) x_t, all exact in binary for the values below."""
    return [op("squared_norm"), op("scale", factor=0.5)]


def test_grad_tol_is_inclusive() -> None:
    # x0 - c = (3, 4): ||∇f(x0)|| = 5 exactly, so grad_tol = 5 fires at step 0 (the rule is <=).
    c = np.array([1.0, -2.0])
    result = run(quadratic(c), c + np.array([3.0, 4.0]), learning_rate=0.5, max_steps=10,
                 grad_tol=5.0)  # fmt: skip
    assert (result.summary.status, result.summary.steps) == ("converged_grad", 0)


def test_the_blow_up_threshold_is_floored_at_one() -> None:
    # f0 = 0.125 < 1: threshold = 10 * max(|f0|, 1) = 10. γ = 3 gives x_t = (-2)^t x0 and
    # f_t = 0.125 * 4^t: 8 at t = 3 (kept), 32 at t = 4 (diverged); without the floor it
    # would stop at t = 2 (f = 2 > 1.25).
    result = run(half_square(), np.array([0.5]), learning_rate=3.0, max_steps=50,
                 divergence_factor=10.0)  # fmt: skip
    assert (result.summary.status, result.summary.final_step) == ("diverged", 4)


def test_f_tol_scales_by_the_larger_of_both_values() -> None:
    # γ = 2.1: x_t = (-1.1)^t x0, f grows by 1.21 a step; |f_1 - f_0| / f_1 = 0.21 / 1.21 ≈ 0.174
    # <= 0.19 < 0.21 = |f_1 - f_0| / f_0: only a scale that includes |f_t| fires, at step 1.
    result = run(half_square(), np.array([10.0]), learning_rate=2.1, max_steps=20, f_tol=0.19)
    assert (result.summary.status, result.summary.steps) == ("converged_f", 1)


def test_x_tol_scales_by_the_larger_of_both_norms() -> None:
    # Same run: ||x_1 - x_0|| = 21, ||x_1|| = 11, ||x_0|| = 10: 21 / 11 ≈ 1.91 <= 2 < 2.1.
    result = run(half_square(), np.array([10.0]), learning_rate=2.1, max_steps=20, x_tol=2.0)
    assert (result.summary.status, result.summary.steps) == ("converged_x", 1)
