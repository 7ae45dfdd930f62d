"""Optimizers against independent references: PyTorch's documented Adam update written out by
hand, and scipy.optimize.minimize called directly with hand-written NumPy f, gradient and HVP.

The test function is f(x) = logsumexp(A x + b) with A = [I; -I; R]: smooth, strictly convex and
coercive, with a non-diagonal Hessian Aᵀ(diag(s) - s sᵀ)A (s the softmax of A x + b).
"""

import threading

import numpy as np
import pytest
import scipy.optimize

from service.engine.chain import Chain
from service.engine.descent import DescentLimits, DescentParams, collect, descend
from service.engine.errors import ParameterError
from service.engine.minimize import minimize
from service.engine.minimize_params import Bounds, MinimizeParams, MinimizeRecord
from service.engine.op import get_op

N = 6
RNG = np.random.default_rng(14)
A = np.vstack([np.eye(N), -np.eye(N), RNG.normal(size=(4, N))])
B = RNG.normal(size=len(A))
X0 = RNG.normal(size=N)
LIMITS = DescentLimits(
    max_steps=10_000, max_trajectory_elements=10**6, max_tensor_elements=10**6, max_nnz=10**6
)


def chain() -> Chain:
    return Chain([get_op("linear")(weight=A, bias=B), get_op("logsumexp")()], (N,))


# -- the NumPy reference of f, its gradient and Hessian-vector product ---------------------------


def f_ref(x: np.ndarray) -> float:
    z = A @ x + B
    m = z.max()
    return float(m + np.log(np.exp(z - m).sum()))


def grad_ref(x: np.ndarray) -> np.ndarray:
    z = A @ x + B
    s = np.exp(z - z.max())
    s /= s.sum()
    return A.T @ s


def hessp_ref(x: np.ndarray, p: np.ndarray) -> np.ndarray:
    z = A @ x + B
    s = np.exp(z - z.max())
    s /= s.sum()
    ap = A @ p
    return A.T @ (s * ap - s * (s @ ap))


def run(**kwargs: object) -> object:
    return collect(minimize(chain(), X0, MinimizeParams(**kwargs), LIMITS))  # type: ignore[arg-type]


def test_adam_matches_pytorchs_documented_update_step_by_step() -> None:
    lr, b1, b2, eps, steps = 0.05, 0.8, 0.99, 1e-6, 60
    result = run(
        method="adam", learning_rate=lr, b1=b1, b2=b2, eps=eps, max_steps=steps, record_x=True
    )
    # torch.optim.Adam, "Algorithm" in its documentation (no weight decay, amsgrad, maximize).
    theta = X0.copy()
    m = np.zeros(N)
    v = np.zeros(N)
    expected = [theta.copy()]
    for t in range(1, steps + 1):
        g = grad_ref(theta)
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        m_hat = m / (1 - b1**t)
        v_hat = v / (1 - b2**t)
        theta = theta - lr * m_hat / (np.sqrt(v_hat) + eps)
        expected.append(theta.copy())
    got = np.stack([record.x for record in result.trajectory])
    np.testing.assert_allclose(got, np.stack(expected), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(
        [record.f for record in result.trajectory], [f_ref(x) for x in expected], rtol=1e-12
    )
    assert result.summary.status == "max_steps"
    assert result.summary.evaluations.function == steps + 1


def test_gd_is_the_gradient_descent_run_with_counts() -> None:
    params = {"learning_rate": 0.3, "max_steps": 40, "momentum": 0.5, "nesterov": True}
    result = run(method="gd", **params)
    plain = collect(descend(chain(), X0, DescentParams(**params), LIMITS))  # type: ignore[arg-type]
    assert [r.f for r in result.trajectory] == [r.f for r in plain.trajectory]
    assert all(isinstance(r, MinimizeRecord) for r in result.trajectory)
    assert [r.evaluations.gradient for r in result.trajectory] == list(range(1, 42))


@pytest.mark.parametrize(
    ("method", "scipy_method", "options"),
    [
        ("lbfgs", "L-BFGS-B", {"gtol": 1e-7}),
        ("newton-cg", "Newton-CG", {"xtol": 1e-10}),
        ("trust-ncg", "trust-ncg", {"gtol": 1e-7}),
    ],
)
def test_scipy_methods_reach_scipys_minimiser_in_as_many_iterations(
    method: str, scipy_method: str, options: dict[str, float]
) -> None:
    hessp = None if method == "lbfgs" else hessp_ref
    direct = scipy.optimize.minimize(
        f_ref, X0, jac=grad_ref, hessp=hessp, method=scipy_method, options=options
    )
    assert direct.success
    result = run(method=method, max_steps=500, grad_tol=1e-7)
    summary = result.summary
    assert summary.status == "converged_grad", summary.reason
    np.testing.assert_allclose(summary.x_final, direct.x, rtol=1e-5, atol=1e-5)
    assert abs(summary.steps - direct.nit) <= max(2, direct.nit // 4), (summary.steps, direct.nit)
    counts = summary.evaluations
    assert counts.function >= summary.steps and counts.gradient == counts.function
    assert (counts.hvp > 0) == (method != "lbfgs")
    # One record per iteration, each state's norm the 2-norm of the reference gradient.
    assert [r.step for r in result.trajectory] == list(range(summary.steps + 1))
    record = result.trajectory[-1]
    np.testing.assert_allclose(
        record.grad_norm, np.linalg.norm(grad_ref(summary.x_final)), rtol=1e-8
    )


def test_lbfgs_with_bounds_matches_scipy_with_the_same_bounds() -> None:
    lower, upper = np.full(N, -0.2), np.full(N, 0.3)
    direct = scipy.optimize.minimize(
        f_ref, np.clip(X0, lower, upper), jac=grad_ref, method="L-BFGS-B",
        bounds=list(zip(lower, upper, strict=True)), options={"ftol": 1e-14, "gtol": 1e-10},
    )  # fmt: skip
    result = run(method="lbfgs", max_steps=200, f_tol=1e-14, bounds=Bounds(lower, upper))
    x = result.summary.x_final
    assert np.all(x >= lower) and np.all(x <= upper)
    np.testing.assert_allclose(x, direct.x, atol=1e-6)
    assert result.trajectory[0].f == pytest.approx(f_ref(np.clip(X0, lower, upper)), rel=1e-14)


def test_scipys_own_ending_maps_to_a_status_with_its_message() -> None:
    # No tolerance of the service: L-BFGS-B ends by its own test (f stalls, or the line search).
    result = run(method="lbfgs", max_steps=500)
    assert result.summary.status in ("converged_f", "converged_grad", "line_search_failed")
    assert "SciPy L-BFGS-B (status" in result.summary.reason


def test_max_steps_zero_and_an_exhausted_deadline_stop_before_scipy_runs() -> None:
    result = run(method="trust-ncg", max_steps=0)
    assert result.summary.status == "max_steps" and len(result.trajectory) == 1
    limits = DescentLimits(**{**vars(LIMITS), "deadline_seconds": 0.0})
    timed = collect(minimize(chain(), X0, MinimizeParams(method="lbfgs", max_steps=100), limits))
    assert timed.summary.status == "deadline"


def test_closing_the_run_stops_the_worker_thread() -> None:
    before = threading.active_count()
    events = minimize(chain(), X0, MinimizeParams(method="newton-cg", max_steps=1000), LIMITS)
    next(events)
    next(events)  # the worker is running
    events.close()
    assert threading.active_count() == before


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"method": "lbfgs", "learning_rate": 0.1}, "chooses its own steps"),
        ({"method": "adam"}, "needs a learning_rate"),
        ({"method": "adam", "learning_rate": 0.1, "momentum": 0.5}, "options of method 'gd'"),
        (
            {"method": "newton-cg", "bounds": Bounds(np.zeros(N), np.ones(N))},
            "option of method 'lbfgs'",
        ),
        ({"method": "adam", "learning_rate": 0.1, "b1": 1.0}, "b1 must lie in"),
        ({"method": "adam", "learning_rate": 0.1, "eps": 0.0}, "eps must be"),
    ],
)
def test_parameters_that_do_not_fit_the_method_are_refused(kwargs: dict, message: str) -> None:
    with pytest.raises(ParameterError, match=message):
        MinimizeParams(max_steps=5, **kwargs)


def test_crossing_bounds_are_refused() -> None:
    params = MinimizeParams(method="lbfgs", max_steps=5, bounds=Bounds(np.ones(N), np.zeros(N)))
    with pytest.raises(ParameterError, match="bounds cross"):
        minimize(chain(), X0, params, LIMITS)
