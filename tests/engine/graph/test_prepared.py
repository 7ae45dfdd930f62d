"""The prepared program (graph/prepared.py) against SciPy's Rosenbrock, central differences, and
the node a test after every operation names when a value overflows or leaves a domain."""

import numpy as np
import pytest
import scipy.optimize

from service.api.programs import build_program
from service.engine.errors import DomainError, NonFiniteError
from service.engine.graph.nary import Unary
from service.engine.graph.prepared import ProgramObjective
from service.engine.graph.program import Node, Program
from service.engine.op import get_op
from tests.oracles import central_difference_jacobian

ROSEN = "sum(100 * (x[1:] - x[:-1] ** 2) ** 2 + (1 - x[:-1]) ** 2)"


def _objective(source: str, inputs: dict[str, np.ndarray], variables: list[str]):
    program = build_program(source, {n: v.shape for n, v in inputs.items()}, "F")
    return ProgramObjective(program, inputs, variables)


@pytest.mark.parametrize("n", [2, 3, 10, 101])
def test_rosenbrock_value_and_gradient_are_scipys(n: int) -> None:
    rng = np.random.default_rng(n)
    x = rng.uniform(-2, 2, n)
    objective = _objective(ROSEN, {"x": x}, ["x"])
    for point in (x, rng.uniform(-2, 2, n), np.ones(n)):
        evaluation, grad = objective.value_and_gradient(point)
        np.testing.assert_allclose(evaluation.f, scipy.optimize.rosen(point), rtol=1e-13, atol=0)
        np.testing.assert_allclose(grad, scipy.optimize.rosen_der(point), rtol=1e-12, atol=1e-12)
    assert objective.value_and_gradient(np.ones(n))[0].f == 0.0


# Each term reaches one of the unbatched rules (scale, add and multiply by a constant, sum and mean
# over all or some axes, powers with and without a domain, derivatives from the stored value,
# slices, elementwise pairs of equal and broadcast shapes, mse of equal and broadcast shapes,
# where) or the general VJP (softplus, divide, maximum, matmul, logsumexp).
PROGRAMS = [
    "sum(2.5 * x + 1) + mean(x * y) + sum(sum(x, axes=[0]) ** 2) + mean(mean(x, axes=[1]))",
    "sum(tanh(x) * exp(-x) + sigmoid(y)) + sum(x[1:, :2] - y[:-1, ::2] * x[:-1, 1:])",
    "mse(x, y) + mse(x, b) + sum(x * b - y / (1 + x ** 2)) + sum(where(x, y, mask=[1, 0, 1]))",
    "sum(softplus(x @ b)) + sum(maximum(x, y) ** 3) + logsumexp(x - b)",
    "sum(x ** 0.5 * 3 + x ** -2 + x ** 0 + x ** 1) + mean(sum(y * x, axes=[1]) ** 2)",
]


@pytest.mark.parametrize("source", PROGRAMS)
@pytest.mark.parametrize("variables", [["x"], ["x", "y"], ["y", "b"]])
def test_gradients_are_central_differences(source: str, variables: list[str]) -> None:
    rng = np.random.default_rng(7)
    inputs = {"x": rng.uniform(0.2, 1.2, (4, 3)), "y": rng.uniform(-1, 1, (4, 3)),
              "b": rng.uniform(-1, 1, 3)}  # fmt: skip
    objective = _objective(source, inputs, variables)
    z = objective.packing.pack(inputs)
    grad = objective.gradient(objective.evaluate(z))

    def f(v: np.ndarray) -> np.ndarray:
        return np.asarray(objective.evaluate(v).f)

    expected = central_difference_jacobian(f, z, "C")[:, 0]
    np.testing.assert_allclose(grad, expected, rtol=1e-6, atol=1e-6)


def _message(objective: ProgramObjective, z: np.ndarray, kind: type[Exception]) -> str:
    with pytest.raises(kind) as raised:
        objective.evaluate(z)
    return str(raised.value)


def test_an_overflow_hidden_by_a_saturating_node_names_the_first_overflowing_node() -> None:
    # square overflows; the scale after it propagates inf, tanh turns it into 1: f is finite
    objective = _objective("sum(tanh(square(x * 1e150) * 1e300)) + sum(c)",
                           {"x": np.array([1e-151, 2e-151]), "c": np.ones(2)}, ["x"])  # fmt: skip
    assert np.isfinite(objective.evaluate(np.array([1e-151, 2e-151])).f)
    message = _message(objective, np.array([1e10, 1.0]), NonFiniteError)
    assert "(square): the result has non-finite entries (overflow)" in message


def test_an_overflow_that_reaches_f_names_where_it_began() -> None:
    # exp(700) is finite; times 1e10 it is not, and the sums only carry the inf to f
    objective = _objective("sum(exp(x) * 1e10 + y)", {"x": np.zeros(2), "y": np.zeros(2)}, ["x"])
    assert "(scale): the result has non-finite entries" in _message(
        objective, np.array([0.0, 700.0]), NonFiniteError
    )


def test_a_domain_error_after_an_unchecked_overflow_reports_the_overflow() -> None:
    # exp(x) * 1e300 overflows first (in node order); log(y) then leaves its domain
    inputs = {"x": np.zeros(2), "y": np.ones(2)}
    objective = _objective("sum(exp(x) * 1e300 + log(y))", inputs, ["x", "y"])
    overflow = _message(objective, np.array([700.0, 0.0, 1.0, -1.0]), NonFiniteError)
    assert "(scale): the result has non-finite entries" in overflow
    domain = _message(objective, np.array([0.0, 0.0, 1.0, -1.0]), DomainError)
    assert "(log): log needs x > 0" in domain


def test_a_node_nothing_reads_is_still_tested() -> None:
    nodes = [Node("a", Unary(get_op("square")()), ("x",)),
             Node("b", Unary(get_op("sum")()), ("x",))]  # fmt: skip
    program = Program({"x": (2,)}, nodes, "b")
    objective = ProgramObjective(program, {"x": np.zeros(2)}, ["x"])
    assert objective.evaluate(np.array([1.0, 2.0])).f == 3.0
    assert "node 'a' (square): the result has non-finite" in _message(
        objective, np.array([1.0, 1e200]), NonFiniteError
    )


def test_a_gradient_that_overflows_is_refused() -> None:
    # log is finite at the smallest subnormal; its derivative 1 / x is not
    objective = _objective("sum(log(x)) + sum(y)", {"x": np.ones(2), "y": np.ones(2)}, ["x", "y"])
    z = np.array([5e-324, 1.0, 1.0, 1.0])
    assert np.isfinite(objective.evaluate(z).f)
    with pytest.raises(NonFiniteError, match="the gradient has non-finite entries"):
        objective.value_and_gradient(z)
