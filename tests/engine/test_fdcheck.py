"""The central-difference check passes on correct chains and fails on wrong derivatives."""

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given, settings

from service.engine.chain import Chain
from service.engine.errors import DomainError, LimitExceeded, ParameterError
from service.engine.fdcheck import fd_check
from service.engine.op import ElementwiseOp, get_op
from service.engine.types import FloatArray, Order
from tests.strategies import ChainCase, op_chains

# SciPy _numdiff's central step: EPS**(1/3) relative to max(1, |x|), computed here independently.
RELATIVE_STEP = float(np.finfo(np.float64).eps) ** (1 / 3)


@dataclass(frozen=True, eq=False)
class Cube(ElementwiseOp):
    """``x**3`` with a correct derivative; subclasses below break one rule each."""

    name: ClassVar[str] = "test_cube"

    def _forward(self, x: FloatArray) -> FloatArray:
        return x**3

    def derivative(self, x: FloatArray) -> FloatArray:
        return 3 * x**2


@dataclass(frozen=True, eq=False)
class CubeWrongVjp(Cube):
    def _vjp(self, x: FloatArray, cotangents: FloatArray) -> FloatArray:
        return 1.01 * self.derivative(x) * cotangents


@dataclass(frozen=True, eq=False)
class CubeWrongJvp(Cube):
    def _jvp(self, x: FloatArray, tangents: FloatArray) -> FloatArray:
        return 2 * x * tangents  # the derivative of x**2


@dataclass(frozen=True, eq=False)
class CubeWrongJacobian(Cube):
    def _local_jacobian(self, x: FloatArray, order: Order) -> sp.coo_array:
        return super()._local_jacobian(-x, order) * 0.5


@given(case=op_chains())
@settings(max_examples=30)
def test_correct_chains_pass(case: ChainCase) -> None:
    result = fd_check(Chain(case.ops, case.in_shape), case.x, max_directions=64)
    assert result.passed, result
    assert result.full and result.checked == ("jvp", "vjp", "jacobian")
    assert result.directions == case.x.size


def test_the_report_states_step_directions_and_tolerance() -> None:
    x = np.array([[0.5, -3.0], [2.0, 0.1]])
    result = fd_check(get_op("tanh")(), x, rtol=1e-7, atol=1e-9)
    assert result.relative_step == pytest.approx(RELATIVE_STEP)
    assert result.step == pytest.approx(RELATIVE_STEP * 3.0)  # max(1, |x|) at x = -3
    assert (result.directions, result.cotangents, result.full) == (4, 4, True)
    assert (result.rtol, result.atol) == (1e-7, 1e-9)
    assert result.passed and result.max_abs_error < 1e-9
    assert result.max_rel_error == pytest.approx(result.max_abs_error / result.scale)


def test_the_quotients_own_error_is_estimated_and_allowed() -> None:
    # sin((|x|^2)^3): a large gain before an oscillation. The differences are off by a few 1e-6
    # relative; the Richardson estimate sees that, so the correct derivative passes.
    x = np.random.default_rng(0).uniform(-1.5, 1.5, size=(3, 3))
    chain = Chain([get_op("squared_norm")(), get_op("power")(p=3), get_op("sin")()], (3, 3))
    result = fd_check(chain, x)
    assert result.max_rel_error > result.rtol  # a plain tolerance would call this wrong
    assert result.fd_error == pytest.approx(result.max_abs_error, rel=0.05)
    assert result.passed
    broken = Chain([get_op("squared_norm")(), get_op("power")(p=3), CubeWrongVjp()], (3, 3))
    assert not fd_check(broken, x / 4).passed


def test_large_inputs_sample_a_bounded_number_of_seeded_directions() -> None:
    rng = np.random.default_rng(0)
    chain = Chain([get_op("sin")(), get_op("avg_pool2d")(size=2), get_op("softmax")()], (3, 10, 10))
    x = rng.normal(size=(3, 10, 10))
    result = fd_check(chain, x, max_directions=8, seed=5)
    assert result.passed, result
    assert (result.directions, result.cotangents, result.full) == (8, 8, False)
    assert result.checked == ("jvp", "vjp")
    assert fd_check(chain, x, max_directions=8, seed=5) == result  # seeded: reproducible


@pytest.mark.parametrize(
    ("op", "max_directions"),
    [(CubeWrongVjp(), 32), (CubeWrongVjp(), 2), (CubeWrongJvp(), 32), (CubeWrongJvp(), 2)],
    ids=["vjp-full", "vjp-sampled", "jvp-full", "jvp-sampled"],
)
def test_a_wrong_jvp_or_vjp_fails(op: Cube, max_directions: int) -> None:
    x = np.random.default_rng(1).uniform(0.5, 1.5, size=(2, 3))
    assert fd_check(Cube(), x, max_directions=max_directions).passed
    chain = Chain([get_op("scale")(factor=2.0), op, get_op("sum")(axes=(0,))], (2, 3))
    result = fd_check(chain, x, max_directions=max_directions)
    assert not result.passed
    assert result.max_rel_error > 1e-3


def test_a_wrong_local_jacobian_fails_the_full_check() -> None:
    x = np.random.default_rng(2).uniform(0.5, 1.5, size=(4,))
    result = fd_check(CubeWrongJacobian(), x)
    assert "jacobian" in result.checked and not result.passed


def test_the_check_refuses_to_hold_more_than_max_elements() -> None:
    chain = Chain([get_op("sum")(axes=(1,))], (50, 40))
    # 10 directions give 10 x 50 quotients; 10 cotangents pull back to 10 x 2000 elements.
    with pytest.raises(LimitExceeded) as caught:
        fd_check(chain, np.zeros((50, 40)), max_directions=10, max_elements=10 * 2000 - 1)
    assert caught.value.estimate == 10 * 2000
    assert fd_check(chain, np.ones((50, 40)), max_directions=10, max_elements=10 * 2000).passed


def test_invalid_settings_and_domain_errors() -> None:
    with pytest.raises(ParameterError, match="max_directions"):
        fd_check(get_op("exp")(), np.zeros(2), max_directions=0)
    with pytest.raises(ParameterError, match="tolerances"):
        fd_check(get_op("exp")(), np.zeros(2), rtol=-1.0)
    # log at 1e-7: the point is in the domain, x - h is not.
    with pytest.raises(DomainError, match=r"operation 0 \(log\)"):
        fd_check(get_op("log")(), np.array([1e-7]))
