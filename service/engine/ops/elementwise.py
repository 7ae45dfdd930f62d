"""Elementwise operations ``y_i = g(x_i)``: one derivative rule each, like autograd's VJP table.

Every class here gives ``_forward`` (``g`` on any shape), ``derivative`` (``g'``) and
``second_derivative`` (``g''``, for Hessian-vector products); the diagonal Jacobian, JVP, VJP and
second-order rule come from :class:`~service.engine.op.ElementwiseOp`. Where ``g`` has a kink,
the ``note`` states the one value chosen for ``g'`` there (PyTorch's).
"""

import abc
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import ClassVar

import numpy as np
from numpy.typing import NDArray
from scipy.special import expit

from ..errors import DomainError, ParameterError
from ..op import ElementwiseOp, register
from ..types import FloatArray

# exp(x) overflows float64 above this.
_EXP_MAX = float(np.log(np.finfo(np.float64).max))


def _refuse(name: str, x: FloatArray, bad: NDArray[np.bool_], requirement: str) -> None:
    if np.any(bad):
        first = float(x[bad][0])
        raise DomainError(
            f"{name} needs {requirement}; got {int(np.count_nonzero(bad))} element(s) outside, "
            f"e.g. {first!r}"
        )


@dataclass(frozen=True, eq=False)
class _DerivativeOfOutput(ElementwiseOp):
    """An elementwise function whose derivative is a formula in its value ``y = g(x)``.

    Given the output (``Op.jvp``/``Op.vjp`` with ``output=``), the rules use
    :meth:`derivative_given` instead of recomputing ``g(x)``; the same floats either way.
    ``fresh_derivative`` says whether :meth:`derivative_given` returns a new array that nothing
    else refers to, which the rules may then overwrite with the product.
    """

    fresh_derivative: ClassVar[bool]

    @abc.abstractmethod
    def derivative_given(self, x: FloatArray, y: FloatArray) -> FloatArray:
        """Return ``g'(x)`` from ``y = g(x)``, bit for bit :meth:`derivative`."""

    def _jvp_given(self, x: FloatArray, y: FloatArray, tangents: FloatArray) -> FloatArray:
        return self._times_derivative(x, y, tangents)

    def _vjp_given(self, x: FloatArray, y: FloatArray, cotangents: FloatArray) -> FloatArray:
        return self._times_derivative(x, y, cotangents)

    def _times_derivative(self, x: FloatArray, y: FloatArray, batch: FloatArray) -> FloatArray:
        # g'(x) * batch: (in) * (B, *in) -> (B, *in), or (in) * (in) for the programs' rules.
        # One vector is multiplied into the derivative when that is a fresh array: a large
        # VJP's fresh temporaries are page faults (same floats).
        derivative = self.derivative_given(x, y)
        # A 0-d product comes back as a NumPy scalar, which cannot be written into.
        fresh = self.fresh_derivative and isinstance(derivative, np.ndarray)
        if fresh and np.shape(batch) == (1, *derivative.shape):
            np.multiply(derivative, batch[0], out=derivative)
            return derivative[np.newaxis]
        if fresh and np.shape(batch) == derivative.shape:
            np.multiply(derivative, batch, out=derivative)
            return derivative
        result: FloatArray = derivative * batch
        return result


@register
@dataclass(frozen=True, eq=False)
class Square(ElementwiseOp):
    """``x ** 2``; derivative ``2 x``."""

    name: ClassVar[str] = "square"

    def _forward(self, x: FloatArray) -> FloatArray:
        return np.square(x)

    def derivative(self, x: FloatArray) -> FloatArray:
        """Return ``2 x``."""
        return 2.0 * x

    def second_derivative(self, x: FloatArray) -> FloatArray:
        """Return 2."""
        return np.full_like(x, 2.0)


@register
@dataclass(frozen=True, eq=False)
class Power(ElementwiseOp):
    """``x ** p``; derivative ``p x ** (p - 1)``.

    Parameters
    ----------
    p : float
        The exponent. Integer ``p >= 0``: every real ``x``. Integer ``p < 0``: ``x != 0``.
        Non-integer ``p``: ``x >= 0`` (``x > 0`` if ``p < 0``), and a derivative at ``x = 0``
        needs ``p > 1`` (otherwise it is infinite).
    """

    name: ClassVar[str] = "power"
    note: ClassVar[str] = (
        "x**p; negative x needs an integer p; derivative at 0 needs p = 0 or p >= 1 (finite); "
        "p = 0 gives the constant 1 with derivative 0 everywhere"
    )
    params: ClassVar[Mapping[str, str]] = MappingProxyType({"p": "exponent (float)"})

    p: float

    def __post_init__(self) -> None:
        object.__setattr__(self, "p", float(self.p))
        if not np.isfinite(self.p):
            raise ParameterError(f"power: p must be finite, got {self.p!r}")

    def check_domain(self, x: FloatArray, *, differentiating: bool) -> None:
        """Refuse negative bases for non-integer ``p``, and 0 where value or slope is infinite."""
        p = self.p
        if p.is_integer():
            if p < 0:
                _refuse(self.name, x, x == 0, f"x != 0 for the negative exponent p = {p}")
            return
        if p < 0:
            _refuse(self.name, x, x <= 0, f"x > 0 for the non-integer exponent p = {p}")
        elif differentiating and p < 1:
            _refuse(self.name, x, x <= 0, f"x > 0 to differentiate x**{p} (infinite slope at 0)")
        else:
            _refuse(self.name, x, x < 0, f"x >= 0 for the non-integer exponent p = {p}")

    def _forward(self, x: FloatArray) -> FloatArray:
        return np.power(x, self.p)

    def derivative(self, x: FloatArray) -> FloatArray:
        """Return ``p x ** (p - 1)`` (zeros for ``p = 0``, where ``0 * 0 ** -1`` would be NaN)."""
        if self.p == 0:
            return np.zeros_like(x)
        return self.p * np.power(x, self.p - 1.0)

    def second_derivative(self, x: FloatArray) -> FloatArray:
        """Return ``p (p - 1) x ** (p - 2)`` (zeros for ``p`` 0 or 1, the affine cases)."""
        if self.p in (0.0, 1.0):
            return np.zeros_like(x)
        return self.p * (self.p - 1.0) * np.power(x, self.p - 2.0)


@register
@dataclass(frozen=True, eq=False)
class Exp(_DerivativeOfOutput):
    """``exp(x)``; derivative ``exp(x)``."""

    name: ClassVar[str] = "exp"
    fresh_derivative: ClassVar[bool] = False
    note: ClassVar[str] = "differentiable everywhere; inputs above ~709.78 overflow and are refused"

    def check_domain(self, x: FloatArray, *, differentiating: bool) -> None:
        """Refuse inputs whose exponential overflows float64."""
        _refuse(self.name, x, x > _EXP_MAX, f"x <= {_EXP_MAX:.6g} (larger values overflow)")

    def _forward(self, x: FloatArray) -> FloatArray:
        return np.exp(x)

    def derivative(self, x: FloatArray) -> FloatArray:
        """Return ``exp(x)``."""
        return np.exp(x)

    def derivative_given(self, x: FloatArray, y: FloatArray) -> FloatArray:
        """Return ``y = exp(x)`` itself (the output: not to be overwritten)."""
        return y

    def second_derivative(self, x: FloatArray) -> FloatArray:
        """Return ``exp(x)``."""
        return np.exp(x)


@register
@dataclass(frozen=True, eq=False)
class Log(ElementwiseOp):
    """Natural logarithm; derivative ``1 / x``; domain ``x > 0``."""

    name: ClassVar[str] = "log"
    note: ClassVar[str] = "domain x > 0; non-positive inputs are refused"

    def check_domain(self, x: FloatArray, *, differentiating: bool) -> None:
        """Refuse ``x <= 0``."""
        _refuse(self.name, x, x <= 0, "x > 0")

    def _forward(self, x: FloatArray) -> FloatArray:
        return np.log(x)

    def derivative(self, x: FloatArray) -> FloatArray:
        """Return ``1 / x``."""
        return 1.0 / x

    def second_derivative(self, x: FloatArray) -> FloatArray:
        """Return ``-1 / x**2``."""
        return -1.0 / np.square(x)


@register
@dataclass(frozen=True, eq=False)
class Sqrt(ElementwiseOp):
    """Square root; derivative ``1 / (2 sqrt(x))``; domain ``x >= 0`` (``x > 0`` for slopes)."""

    name: ClassVar[str] = "sqrt"
    note: ClassVar[str] = (
        "domain x >= 0; the derivative at 0 is infinite, so derivatives need x > 0"
    )

    def check_domain(self, x: FloatArray, *, differentiating: bool) -> None:
        """Refuse negative ``x``, and 0 when differentiating."""
        if differentiating:
            _refuse(self.name, x, x <= 0, "x > 0 to differentiate (infinite slope at 0)")
        else:
            _refuse(self.name, x, x < 0, "x >= 0")

    def _forward(self, x: FloatArray) -> FloatArray:
        return np.sqrt(x)

    def derivative(self, x: FloatArray) -> FloatArray:
        """Return ``0.5 / sqrt(x)``."""
        return 0.5 / np.sqrt(x)

    def second_derivative(self, x: FloatArray) -> FloatArray:
        """Return ``-0.25 x ** -1.5``."""
        return -0.25 / (x * np.sqrt(x))


@register
@dataclass(frozen=True, eq=False)
class Sin(ElementwiseOp):
    """``sin(x)``; derivative ``cos(x)``."""

    name: ClassVar[str] = "sin"

    def _forward(self, x: FloatArray) -> FloatArray:
        return np.sin(x)

    def derivative(self, x: FloatArray) -> FloatArray:
        """Return ``cos(x)``."""
        return np.cos(x)

    def second_derivative(self, x: FloatArray) -> FloatArray:
        """Return ``-sin(x)``."""
        return -np.sin(x)


@register
@dataclass(frozen=True, eq=False)
class Cos(ElementwiseOp):
    """``cos(x)``; derivative ``-sin(x)``."""

    name: ClassVar[str] = "cos"

    def _forward(self, x: FloatArray) -> FloatArray:
        return np.cos(x)

    def derivative(self, x: FloatArray) -> FloatArray:
        """Return ``-sin(x)``."""
        return -np.sin(x)

    def second_derivative(self, x: FloatArray) -> FloatArray:
        """Return ``-cos(x)``."""
        return -np.cos(x)


@register
@dataclass(frozen=True, eq=False)
class Tanh(_DerivativeOfOutput):
    """``tanh(x)``; derivative ``1 - tanh(x)**2``."""

    name: ClassVar[str] = "tanh"
    fresh_derivative: ClassVar[bool] = True

    def _forward(self, x: FloatArray) -> FloatArray:
        return np.tanh(x)

    def derivative(self, x: FloatArray) -> FloatArray:
        """Return ``1 - tanh(x)**2``."""
        return 1.0 - np.square(np.tanh(x))

    def derivative_given(self, x: FloatArray, y: FloatArray) -> FloatArray:
        """Return ``1 - y**2`` for ``y = tanh(x)`` (a fresh array, computed in place)."""
        result: FloatArray = np.square(y, out=np.empty(np.shape(y)))
        return np.subtract(1.0, result, out=result)

    def second_derivative(self, x: FloatArray) -> FloatArray:
        """Return ``-2 tanh(x) (1 - tanh(x)**2)``."""
        t = np.tanh(x)
        result: FloatArray = -2.0 * t * (1.0 - np.square(t))
        return result


@register
@dataclass(frozen=True, eq=False)
class Sigmoid(_DerivativeOfOutput):
    """Logistic ``1 / (1 + exp(-x))``; derivative ``s (1 - s)``."""

    name: ClassVar[str] = "sigmoid"
    fresh_derivative: ClassVar[bool] = True
    note: ClassVar[str] = "differentiable everywhere; computed with scipy.special.expit (stable)"

    def _forward(self, x: FloatArray) -> FloatArray:
        result: FloatArray = expit(x)
        return result

    def derivative(self, x: FloatArray) -> FloatArray:
        """Return ``s (1 - s)`` with ``s = sigmoid(x)``."""
        s: FloatArray = expit(x)
        return s * (1.0 - s)

    def derivative_given(self, x: FloatArray, y: FloatArray) -> FloatArray:
        """Return ``y (1 - y)`` for ``y = sigmoid(x)``."""
        return y * (1.0 - y)

    def second_derivative(self, x: FloatArray) -> FloatArray:
        """Return ``s (1 - s) (1 - 2 s)`` with ``s = sigmoid(x)``."""
        s: FloatArray = expit(x)
        return s * (1.0 - s) * (1.0 - 2.0 * s)


@register
@dataclass(frozen=True, eq=False)
class Relu(ElementwiseOp):
    """``max(x, 0)``; derivative 1 for ``x > 0``, else 0."""

    name: ClassVar[str] = "relu"
    note: ClassVar[str] = "kink at 0: relu'(0) = 0 (PyTorch)"

    def _forward(self, x: FloatArray) -> FloatArray:
        return np.maximum(x, 0.0)

    def derivative(self, x: FloatArray) -> FloatArray:
        """Return 1 where ``x > 0`` and 0 elsewhere, including at the kink."""
        return (x > 0).astype(np.float64)

    def second_derivative(self, x: FloatArray) -> FloatArray:
        """Return 0: piecewise linear, so zero off the kink (and, by choice, at it)."""
        return np.zeros_like(x)


@register
@dataclass(frozen=True, eq=False)
class Softplus(ElementwiseOp):
    """``log(1 + exp(x))``; derivative ``sigmoid(x)``."""

    name: ClassVar[str] = "softplus"
    note: ClassVar[str] = (
        "differentiable everywhere; computed as logaddexp(0, x) without overflow and without "
        "PyTorch's linear threshold"
    )

    def _forward(self, x: FloatArray) -> FloatArray:
        # log(exp(0) + exp(x)) with the max factored out: exact for large |x|, no overflow.
        return np.logaddexp(0.0, x)

    def derivative(self, x: FloatArray) -> FloatArray:
        """Return ``sigmoid(x)``."""
        result: FloatArray = expit(x)
        return result

    def second_derivative(self, x: FloatArray) -> FloatArray:
        """Return ``s (1 - s)`` with ``s = sigmoid(x)``."""
        s: FloatArray = expit(x)
        return s * (1.0 - s)


@register
@dataclass(frozen=True, eq=False)
class Abs(ElementwiseOp):
    """``|x|``; derivative ``sign(x)``."""

    name: ClassVar[str] = "abs"
    note: ClassVar[str] = "kink at 0: abs'(0) = 0 (PyTorch, sign(0) = 0)"

    def _forward(self, x: FloatArray) -> FloatArray:
        return np.abs(x)

    def derivative(self, x: FloatArray) -> FloatArray:
        """Return ``sign(x)``, 0 at 0."""
        return np.sign(x)

    def second_derivative(self, x: FloatArray) -> FloatArray:
        """Return 0: piecewise linear, so zero off the kink (and, by choice, at it)."""
        return np.zeros_like(x)
