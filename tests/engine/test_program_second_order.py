"""Programs: exact HVPs and Hessians on the graph, and minimization over some inputs, against
scipy.optimize's Rosenbrock (rosen, rosen_der, rosen_hess, rosen_hess_prod), closed forms and
central differences of the gradient."""

import numpy as np
import pytest
import scipy.optimize

from service.api.programs import build_program
from service.engine.descent import DescentLimits, collect
from service.engine.functions import FunctionLimits
from service.engine.graph.hvp import Linearization, program_hvp
from service.engine.hessian import program_hessian
from service.engine.minimize import minimize_program
from service.engine.minimize_params import MinimizeParams
from tests import oracles

ROSEN = "sum(100 * (x[1:] - x[:-1] ** 2) ** 2 + (1 - x[:-1]) ** 2)"
LIMITS = FunctionLimits(max_tensor_elements=10**6, max_dense_elements=10**6, max_nnz=10**6)
RUN_LIMITS = DescentLimits(
    max_steps=10_000, max_trajectory_elements=10**6, max_tensor_elements=10**6, max_nnz=10**6
)


@pytest.mark.parametrize("n", [2, 3, 7, 40])
def test_rosenbrock_hvp_is_scipys_rosen_hess_prod(n: int) -> None:
    rng = np.random.default_rng(n)
    program = build_program(ROSEN, {"x": (n,)}, "F")
    x = rng.uniform(-2, 2, n)
    vectors = rng.normal(size=(3, n))
    found = program_hvp(program, {"x": x}, {"x": vectors})
    expected = np.stack([scipy.optimize.rosen_hess_prod(x, v) for v in vectors])
    np.testing.assert_allclose(
        found.products["x"], expected, rtol=1e-12, atol=1e-12 * abs(expected).max()
    )
    np.testing.assert_allclose(found.gradient["x"], scipy.optimize.rosen_der(x), rtol=1e-12)
    assert float(found.value) == pytest.approx(scipy.optimize.rosen(x), rel=1e-14)


@pytest.mark.parametrize("n", [2, 9])
def test_rosenbrock_hessian_is_rosen_hess_and_symmetric(n: int) -> None:
    x = np.random.default_rng(1).uniform(-2, 2, n)
    program = build_program(ROSEN, {"x": (n,)}, "F")
    dense = program_hessian(program, {"x": x}, None, order="F", limits=LIMITS).matrix
    assert isinstance(dense, np.ndarray)
    np.testing.assert_array_equal(dense, dense.T)
    expected = scipy.optimize.rosen_hess(x)
    np.testing.assert_allclose(dense, expected, rtol=1e-12, atol=1e-12 * abs(expected).max())


def test_quadratic_form_over_one_input_with_the_matrix_fixed() -> None:
    # f(x) = ½ xᵀ A x with A an input held fixed: H = (A + Aᵀ) / 2 ... symmetrized A.
    rng = np.random.default_rng(2)
    a = rng.normal(size=(5, 5))
    program = build_program("0.5 * sum(x * (A @ x))", {"x": (5,), "A": (5, 5)}, "F")
    x, v = rng.normal(size=(2, 5))
    found = program_hvp(program, {"x": x, "A": a}, {"x": v[np.newaxis]})
    np.testing.assert_allclose(found.products["x"][0], 0.5 * (a + a.T) @ v, rtol=1e-12, atol=1e-12)


def test_joint_hessian_of_a_bilinear_loss_matches_differences_of_the_gradient() -> None:
    # mse(xcorr2d(x, k), y) over (x, k) jointly: cross blocks come from the bilinear rule.
    rng = np.random.default_rng(3)
    shapes = {"x": (2, 4, 5), "k": (2, 2, 2), "y": (3, 4)}
    inputs = {name: rng.normal(size=shape) for name, shape in shapes.items()}
    program = build_program("mse(xcorr2d(x, k), y)", shapes, "F")
    dense = program_hessian(program, inputs, ["x", "k"], order="C", limits=LIMITS).matrix
    sizes = [40, 8]

    def gradient(z: np.ndarray) -> np.ndarray:
        values = {**inputs, "x": z[:40].reshape(2, 4, 5), "k": z[40:].reshape(2, 2, 2)}
        found = program_hvp(
            program, values, {"x": np.zeros((1, 2, 4, 5)), "k": np.zeros((1, 2, 2, 2))}
        )
        return np.concatenate([found.gradient["x"].ravel(), found.gradient["k"].ravel()])

    z = np.concatenate([inputs["x"].ravel(), inputs["k"].ravel()])
    fd = oracles.central_difference_jacobian(gradient, z, "C")
    assert dense.shape == (sum(sizes), sum(sizes))
    np.testing.assert_allclose(dense, fd, atol=1e-6 * max(1, abs(fd).max()))
    np.testing.assert_array_equal(dense, dense.T)


@pytest.mark.parametrize(
    ("method", "scipy_method", "options"),
    [
        ("lbfgs", "L-BFGS-B", {"gtol": 1e-8}),
        ("newton-cg", "Newton-CG", {"xtol": 1e-12}),
        ("trust-ncg", "trust-ncg", {"gtol": 1e-8}),
    ],
)
def test_rosenbrock_minimised_as_scipy_does_with_rosen(
    method: str, scipy_method: str, options: dict[str, float]
) -> None:
    n = 8
    x0 = np.random.default_rng(4).uniform(-1.5, 1.5, n)
    hessp = None if method == "lbfgs" else scipy.optimize.rosen_hess_prod
    direct = scipy.optimize.minimize(
        scipy.optimize.rosen, x0, jac=scipy.optimize.rosen_der, hessp=hessp,
        method=scipy_method, options=options,
    )  # fmt: skip
    program = build_program(ROSEN, {"x": (n,)}, "F")
    params = MinimizeParams(method=method, max_steps=2000, grad_tol=1e-8)
    events, unpack = minimize_program(program, {"x": x0}, None, params, RUN_LIMITS)
    result = collect(events)
    summary = result.summary
    assert summary.status == "converged_grad", summary.reason
    np.testing.assert_allclose(unpack(summary.x_final)["x"], direct.x, atol=1e-5)
    np.testing.assert_allclose(unpack(summary.x_final)["x"], np.ones(n), atol=1e-5)
    assert abs(summary.steps - direct.nit) <= max(3, direct.nit // 4), (summary.steps, direct.nit)
    assert (summary.evaluations.hvp > 0) == (method != "lbfgs")


def test_minimising_over_one_input_holds_the_others() -> None:
    # min over k of mse(x * k, y) with x fixed: k = y / x elementwise.
    rng = np.random.default_rng(5)
    x, y = rng.uniform(1, 2, 6), rng.normal(size=6)
    program = build_program("mse(x * k, y)", {"x": (6,), "k": (6,), "y": (6,)}, "F")
    params = MinimizeParams(method="newton-cg", max_steps=50, grad_tol=1e-12)
    events, unpack = minimize_program(
        program, {"x": x, "k": np.zeros(6), "y": y}, ["k"], params, RUN_LIMITS
    )
    summary = collect(events).summary
    np.testing.assert_allclose(unpack(summary.x_final)["k"], y / x, rtol=1e-6)


def test_an_input_the_output_ignores_has_zero_gradient_and_product() -> None:
    program = build_program("sum(x ** 3)", {"x": (2,), "y": (3,)}, "F")
    x, y = np.array([1.0, -2.0]), np.ones(3)
    found = program_hvp(program, {"x": x, "y": y}, {"x": np.ones((1, 2)), "y": np.ones((1, 3))})
    np.testing.assert_array_equal(found.gradient["y"], np.zeros(3))
    np.testing.assert_array_equal(found.products["y"], np.zeros((1, 3)))
    np.testing.assert_allclose(found.products["x"][0], 6 * x, rtol=1e-15)


def test_one_linearization_answers_many_products() -> None:
    # Newton-CG asks for many products at one point: each equals scipy's rosen_hess_prod there.
    rng = np.random.default_rng(9)
    x = rng.uniform(-2, 2, 12)
    point = Linearization(build_program(ROSEN, {"x": (12,)}, "F"), {"x": x}, ["x"])
    np.testing.assert_allclose(point.gradient()["x"], scipy.optimize.rosen_der(x), rtol=1e-12)
    for _ in range(3):
        vectors = rng.normal(size=(2, 12))
        found = point.products({"x": vectors}, 2)["x"]
        expected = np.stack([scipy.optimize.rosen_hess_prod(x, v) for v in vectors])
        np.testing.assert_allclose(found, expected, rtol=1e-12, atol=1e-12 * abs(expected).max())


@pytest.mark.parametrize(
    ("parameters", "stride", "dilation", "k_shape"),
    [
        ("", (1, 1), (1, 1), (3, 3, 3)),
        (", stride=[2, 2], padding='same'", (2, 2), (1, 1), (3, 3, 3)),
        (", dilation=[2, 2], padding='full'", (1, 1), (2, 2), (2, 3, 3, 2)),
    ],
)
def test_kernel_recovery_hvp_is_the_loops_gauss_newton_form(
    parameters: str, stride: tuple[int, int], dilation: tuple[int, int], k_shape: tuple[int, ...]
) -> None:
    """mse(xcorr2d(x, k), y) over k with x fixed, against the loops' kernel Jacobian.

    With J the loops' d(x*k)/dk (in_out, C order) and P outputs, the gradient is
    (2/P) J (J^T k - y) and H v = (2/P) J J^T v, one-off and at an evaluated point.
    """
    rng = np.random.default_rng(7)
    x = rng.normal(size=(3, 7, 8))
    k = rng.normal(size=k_shape)
    kh, kw = k_shape[-2:]
    if "same" in parameters:
        pairs = (oracles.same_padding(7, kh, stride[0], dilation[0]),
                 oracles.same_padding(8, kw, stride[1], dilation[1]))  # fmt: skip
    elif "full" in parameters:
        pairs = (((kh - 1) * dilation[0],) * 2, ((kw - 1) * dilation[1],) * 2)
    else:
        pairs = ((0, 0), (0, 0))
    y_shape = oracles.xcorr_forward_loops(x, k, stride, pairs, dilation).shape
    out_size = int(np.prod(y_shape))
    J = np.zeros((k.size, out_size))
    for (row, col), value in oracles.xcorr_kernel_jacobian_loops(
        x, k_shape, stride, pairs, dilation, "C"
    ).items():
        J[row, col] = value
    y = rng.normal(size=y_shape)
    inputs = {"x": x, "k": k, "y": y}
    program = build_program(f"mse(xcorr2d(x, k{parameters}), y)",
                            {name: v.shape for name, v in inputs.items()}, "F")  # fmt: skip
    vectors = rng.normal(size=(2, *k_shape))
    point = Linearization(program, inputs, ["k"])
    gradient = 2.0 / out_size * J @ (J.T @ np.reshape(k, -1) - np.reshape(y, -1))
    products = 2.0 / out_size * (J @ (J.T @ np.reshape(vectors, (2, -1)).T)).T
    found = program_hvp(program, inputs, {"k": vectors})
    np.testing.assert_allclose(np.reshape(found.gradient["k"], -1), gradient, rtol=1e-12,
                               atol=1e-12 * abs(gradient).max())  # fmt: skip
    for pulled in (found.products["k"], point.products({"k": vectors}, 2)["k"]):
        np.testing.assert_allclose(np.reshape(pulled, (2, -1)), products, rtol=1e-12,
                                   atol=1e-12 * abs(products).max())  # fmt: skip
