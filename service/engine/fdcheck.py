"""Central-difference checks of a function's derivatives (JVP, VJP and chain-rule Jacobian).

The step follows SciPy's ``optimize._numdiff`` rule for central differences: elementwise
``h_i = EPS**(1/3) * max(1, |x_i|)``, which balances the ``O(h^2)`` truncation error against the
``O(EPS / h)`` rounding error. A direction ``v`` is probed by perturbing ``x`` by ``d = h * v``
(elementwise), so each coordinate keeps its own step.

For an input of at most ``max_directions`` elements every basis direction is probed, which
checks every row of the Jacobian (and the ``"chain"`` strategy's sparse product against them);
for larger inputs a bounded number of random directions, seeded, stands in for the full Jacobian.
The VJP is checked against the same difference quotients through ``<vjp(u), d> = <u, J^T d>``,
with the output basis or random cotangents.
"""

from dataclasses import dataclass
from typing import Protocol

import numpy as np

from . import layout
from .chain import Chain
from .errors import DomainError, LimitExceeded, NonFiniteError, ParameterError
from .op import Op
from .types import FloatArray, Shape

__all__ = ["EPS", "PRODUCT_NNZ", "RELATIVE_STEP", "Differentiable", "FDCheck", "fd_check"]

EPS = float(np.finfo(np.float64).eps)
# SciPy _numdiff, method "3-point": the relative step EPS**(1/3) ~ 6.06e-6.
RELATIVE_STEP = EPS ** (1.0 / 3.0)
# The chain-rule product is compared when none of its matrices can exceed this many non-zeros.
PRODUCT_NNZ = 1 << 22
_NO_LIMIT = 1 << 62


class Differentiable(Protocol):
    """What :func:`fd_check` compares: a function of one tensor with its derivative rules.

    :class:`~service.engine.chain.Chain` (an op list) provides it through a small adapter; a
    program with several inputs provides it as a function of its ``wrt`` inputs laid end to end
    (:class:`service.engine.graph.requests.PackedProgram`).
    """

    @property
    def in_shape(self) -> Shape:
        """Shape of ``x``."""
        ...

    @property
    def out_shape(self) -> Shape:
        """Shape of ``f(x)``."""
        ...

    def forward(self, x: FloatArray) -> FloatArray:
        """``f(x)``."""
        ...

    def jvp(self, x: FloatArray, tangents: FloatArray) -> FloatArray:
        """(k, *in_shape) -> (k, *out_shape)."""
        ...

    def vjp(self, x: FloatArray, cotangents: FloatArray) -> FloatArray:
        """(c, *out_shape) -> (c, *in_shape)."""
        ...

    def chain_jacobian(self, x: FloatArray, size: int) -> FloatArray | None:
        """Return the ``"chain"`` strategy's dense Jacobian (in_out, order F), or None.

        ``size`` is its number of elements; None when a partial product could exceed
        ``max(size, PRODUCT_NNZ)`` non-zeros.
        """
        ...


@dataclass(frozen=True, eq=False)
class _ChainFunction:
    """An op list as a :class:`Differentiable`."""

    chain: Chain

    @property
    def in_shape(self) -> Shape:
        return self.chain.in_shape

    @property
    def out_shape(self) -> Shape:
        return self.chain.out_shape

    def forward(self, x: FloatArray) -> FloatArray:
        return self.chain.forward(x)

    def jvp(self, x: FloatArray, tangents: FloatArray) -> FloatArray:
        return self.chain.jvp(x, tangents)

    def vjp(self, x: FloatArray, cotangents: FloatArray) -> FloatArray:
        return self.chain.vjp(x, cotangents)

    def chain_jacobian(self, x: FloatArray, size: int) -> FloatArray | None:
        # the sparse product is compared unless its partial products could grow large
        peak = self.chain.plan(
            strategy="chain", fmt="dense", max_dense_elements=size, max_nnz=_NO_LIMIT
        ).chain_peak_nnz
        if peak > max(size, PRODUCT_NNZ):
            return None
        product = self.chain.jacobian(
            x, strategy="chain", fmt="dense", max_dense_elements=size, max_nnz=peak
        ).matrix
        return np.asarray(product)


@dataclass(frozen=True)
class FDCheck:
    """Outcome of :func:`fd_check`.

    Attributes
    ----------
    passed : bool
        Every discrepancy is within ``atol + rtol * scale`` plus twice the estimated error of
        its difference quotients (see :func:`fd_check`).
    max_abs_error : float
        Largest discrepancy, in units of derivative values (per unit direction, per unit
        cotangent 1-norm).
    max_rel_error : float
        ``max_abs_error / scale``, where ``scale`` is the largest difference quotient in
        magnitude (a norm-wise relative error); 0 when both are 0.
    scale : float
        The largest difference quotient in magnitude.
    fd_error : float
        The largest estimated truncation error of a difference quotient (Richardson).
    step : float
        The largest step ``h_i`` used.
    relative_step : float
        ``EPS**(1/3)``.
    directions : int
        Input directions probed (``in_size`` when ``full``).
    cotangents : int
        Output cotangents checked against them.
    full : bool
        True when the directions are the whole input basis (every Jacobian row is checked).
    checked : tuple of str
        What was compared with the difference quotients: ``"jvp"``, ``"vjp"`` and, when
        ``full``, ``"jacobian"`` (the ``"chain"`` strategy's product of local Jacobians).
    rtol, atol : float
        The tolerance that decided ``passed``.
    """

    passed: bool
    max_abs_error: float
    max_rel_error: float
    scale: float
    fd_error: float
    step: float
    relative_step: float
    directions: int
    cotangents: int
    full: bool
    checked: tuple[str, ...]
    rtol: float
    atol: float


def _basis_or_sample(
    shape: tuple[int, ...], limit: int, rng: np.random.Generator
) -> tuple[FloatArray, bool]:
    size = layout.size_of(shape)
    if size <= limit:
        return layout.ten_batch(np.eye(size), shape, "F"), True  # (size, *shape)
    return rng.standard_normal((limit, *shape)), False  # (limit, *shape)


def _quotients(
    chain: Differentiable,
    x: FloatArray,
    perturbations: FloatArray,
    sigma: FloatArray,
    stretch: float,
) -> FloatArray:
    # (f(x + c d) - f(x - c d)) / (2 c sigma) per direction d: (k, *in_shape) -> (k, out_size)
    rows = [
        (chain.forward(x + stretch * d) - chain.forward(x - stretch * d)) / (2.0 * stretch * s)
        for d, s in zip(perturbations, sigma, strict=True)
    ]
    return layout.vec_batch(np.stack(rows), 1, "F")


def fd_check(
    function: Chain | Op | Differentiable,
    x: FloatArray,
    *,
    max_directions: int = 32,
    rtol: float = 1e-6,
    atol: float = 1e-6,
    seed: int = 0,
    max_elements: int | None = None,
) -> FDCheck:
    """Compare a function's derivatives with central differences at ``x``.

    Parameters
    ----------
    function : Chain, Op or Differentiable
        An operation is checked as a chain of one.
    x : ndarray, shape ``in_shape``
        Float64; each coordinate is perturbed by ``h_i = EPS**(1/3) max(1, |x_i|)`` times the
        direction's component.
    max_directions : int
        If ``in_size`` (resp. ``out_size``) is larger, that many seeded random directions
        (resp. cotangents) replace the basis.
    rtol, atol : float
        The tolerance, see Notes.
    seed : int
        Seed of the random directions and cotangents.
    max_elements : int, optional
        Bound on the float64 elements of the largest array the check holds (``directions x
        out_size`` quotients or ``cotangents x in_size`` pullbacks); checked before any work.

    Returns
    -------
    FDCheck

    Raises
    ------
    ParameterError
        If ``max_directions < 1`` or a tolerance is negative.
    LimitExceeded
        If the check would hold more than ``max_elements`` elements in one array.
    ShapeError, DomainError, NonFiniteError
        From the function, e.g. when ``x +- h`` leaves its domain.

    Notes
    -----
    For each direction ``v`` with ``d = h * v`` and ``sigma = max |d|``, the quotient
    ``q = (f(x + d) - f(x - d)) / (2 sigma)`` approximates ``J^T (d / sigma)`` with error
    ``O(sigma^2)``. It is compared with ``jvp(d / sigma)`` entrywise; for each cotangent ``u``,
    ``<vjp(u), d / sigma>`` is compared with ``<u, q>`` and divided by ``||u||_1``; with the full
    basis, the ``"chain"`` strategy's Jacobian is compared with the rows ``q``.

    The quotient's own error is estimated Richardson-style from a second quotient ``q2`` with
    the doubled step: ``e = |q - q2| / 3`` (the ``h^2`` term of ``q``; 0 when ``x +- 2d`` leaves
    the domain). Every comparison passes when its discrepancy is at most
    ``atol + rtol * scale + 2 e`` (``e`` carried through the same pairing for the VJP), so a
    correct derivative of a function that central differences resolve poorly (fast oscillation
    after a large gain) is not reported as wrong.
    """
    if max_directions < 1:
        raise ParameterError(f"max_directions must be >= 1, got {max_directions}")
    if rtol < 0 or atol < 0:
        raise ParameterError(f"tolerances must be >= 0, got rtol={rtol}, atol={atol}")
    x = np.asarray(x, dtype=np.float64)
    if isinstance(function, Op):
        function = Chain([function], x.shape)
    chain = _ChainFunction(function) if isinstance(function, Chain) else function
    n, m = layout.size_of(chain.in_shape), layout.size_of(chain.out_shape)
    largest = max(min(n, max_directions) * m, min(m, max_directions) * n)
    if max_elements is not None and largest > max_elements:
        raise LimitExceeded(
            "finite-difference check elements", largest, max_elements, "lower max_directions",
            setting="max_tensor_elements",
        )  # fmt: skip
    chain.forward(x)  # validates the shape and the domain before any perturbation
    rng = np.random.default_rng(seed)
    h = RELATIVE_STEP * np.maximum(1.0, np.abs(x))  # (in_shape)

    directions, full = _basis_or_sample(chain.in_shape, max_directions, rng)  # (k, *in_shape)
    perturbations = h * directions  # (k, *in_shape)
    sigma = np.max(np.abs(layout.vec_batch(perturbations, 1, "F")), axis=1)  # (k,)
    unit = perturbations / np.expand_dims(sigma, tuple(range(1, perturbations.ndim)))
    q = _quotients(chain, x, perturbations, sigma, 1.0)  # (k, out_size)
    try:
        # Richardson: q - q2 = -3 c sigma^2 + ..., so |q - q2| / 3 estimates q's error.
        truncation = np.abs(q - _quotients(chain, x, perturbations, sigma, 2.0)) / 3.0
    except (DomainError, NonFiniteError):
        truncation = np.zeros_like(q)
    scale = float(np.abs(q).max(initial=0.0))
    allowed = atol + rtol * scale

    # (error, slack) of each comparison; a comparison passes when error <= allowed + slack.
    jvp_error = np.abs(layout.vec_batch(chain.jvp(x, unit), 1, "F") - q)  # (k, out_size)
    comparisons = {"jvp": (jvp_error, 2.0 * truncation)}

    cotangents, _ = _basis_or_sample(chain.out_shape, max_directions, rng)  # (c, *out_shape)
    u = layout.vec_batch(cotangents, 1, "F")  # (c, out_size)
    norms = np.sum(np.abs(u), axis=1, keepdims=True)  # (c, 1)
    pulled = layout.vec_batch(chain.vjp(x, cotangents), 1, "F")  # (c, in_size)
    # <vjp(u), d/sigma> against <u, q>: (c, in) @ (in, k) and (c, out) @ (out, k) -> (c, k)
    pairing = pulled @ layout.vec_batch(unit, 1, "F").T - u @ q.T
    comparisons["vjp"] = (np.abs(pairing) / norms, 2.0 * (np.abs(u) @ truncation.T) / norms)

    if full:
        # The basis directions make q the Jacobian itself, row by row (order "F" on both sides).
        product = chain.chain_jacobian(x, q.size)
        if product is not None:
            comparisons["jacobian"] = (np.abs(product - q), 2.0 * truncation)

    max_abs = max(float(error.max(initial=0.0)) for error, _ in comparisons.values())
    passed = all(bool(np.all(error <= allowed + slack)) for error, slack in comparisons.values())
    max_rel = max_abs / scale if scale > 0 else (0.0 if max_abs == 0 else float("inf"))
    return FDCheck(
        passed=passed,
        max_abs_error=max_abs,
        max_rel_error=max_rel,
        scale=scale,
        fd_error=float(truncation.max(initial=0.0)),
        step=float(h.max()),
        relative_step=RELATIVE_STEP,
        directions=len(directions),
        cotangents=len(cotangents),
        full=full,
        checked=tuple(comparisons),
        rtol=rtol,
        atol=atol,
    )
