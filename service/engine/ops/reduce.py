"""Reductions: ``sum``, ``mean``, ``logsumexp`` over axes; scalar losses ``squared_norm``, ``mse``.

A reduction over axes ``A`` maps input element ``i`` to the output element ``o(i)`` that drops the
indices in ``A``. Its Jacobian has exactly one entry per row, at column ``o(i)``: the column grid is
the output's flat-index grid with the reduced axes re-inserted as length-1 axes, broadcast against
the input's grid.
"""

import abc
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import ClassVar

import numpy as np
import scipy.sparse as sp

from .. import layout
from ..errors import ShapeError
from ..op import LinearOp, Op, Sparsity, coo_from_grids, frozen_array, register
from ..types import FloatArray, IndexArray, Order, Shape
from ._util import int_tuple, normalize_axes

_AXES_DOC = "reduced axes, a list of ints (negative from the end), or null for all axes"


def _kept(in_shape: Shape, axes: tuple[int, ...]) -> Shape:
    return tuple(d for i, d in enumerate(in_shape) if i not in axes)


def _batch_axes(axes: tuple[int, ...]) -> tuple[int, ...]:
    # The same axes in a batch (B, *in_shape): shifted past the leading batch axis.
    return tuple(a + 1 for a in axes)


def _reduction_jacobian(
    in_shape: Shape, axes: tuple[int, ...], data: FloatArray | float, order: Order
) -> sp.coo_array:
    out_shape = _kept(in_shape, axes)
    rows = layout.flat_grid(in_shape, order)  # (in_shape)
    # (out_shape) -> (in_shape with 1 at the reduced axes): broadcasts against rows
    cols = np.expand_dims(layout.flat_grid(out_shape, order), axes)
    return coo_from_grids(rows, cols, data, (layout.size_of(in_shape), layout.size_of(out_shape)))


@dataclass(frozen=True, eq=False)
class _Reduction(Op):
    """An operation that reduces over ``axes``: their parameter, shape rule and sparsity."""

    params: ClassVar[Mapping[str, str]] = MappingProxyType({"axes": _AXES_DOC})

    axes: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        if self.axes is not None:
            object.__setattr__(self, "axes", int_tuple(self.axes, f"{self.name}: axes"))

    def _axes(self, in_shape: Shape) -> tuple[int, ...]:
        return normalize_axes(self.axes, in_shape, self.name)

    def out_shape(self, in_shape: Shape) -> Shape:
        """Return ``in_shape`` without the reduced axes (``()`` when all are reduced)."""
        return _kept(in_shape, self._axes(in_shape))

    def sparsity(self, in_shape: Shape) -> Sparsity:
        """One entry per input element; an output reads every element of its group."""
        axes = self._axes(in_shape)
        return Sparsity(layout.size_of(in_shape), 1, layout.size_of([in_shape[a] for a in axes]))


@dataclass(frozen=True, eq=False)
class _LinearReduction(_Reduction, LinearOp):
    """``y = w * sum over axes``; ``w`` is 1 for ``sum`` and ``1 / count`` for ``mean``."""

    @abc.abstractmethod
    def _weight(self, in_shape: Shape, axes: tuple[int, ...]) -> float:
        """Return the factor ``w`` in front of the sum."""

    def apply(self, t: FloatArray) -> FloatArray:
        """Reduce each ``t`` of the batch: (B, *in) -> (B, *out)."""
        axes = self._axes(t.shape[1:])
        weight = self._weight(t.shape[1:], axes)
        result: FloatArray = weight * np.sum(t, axis=_batch_axes(axes))
        return result

    def _vjp(self, x: FloatArray, cotangents: FloatArray) -> FloatArray:
        # Adjoint: <w sum_A t, u> = sum_i t_i w u_{o(i)} = <t, w u broadcast>, so the transpose
        # copies each cotangent entry, times w, to every input element of its group.
        axes = self._axes(x.shape)
        weight = self._weight(x.shape, axes)
        # (B, *out) -> (B, *in with 1 at the reduced axes)
        expanded = np.expand_dims(cotangents, _batch_axes(axes))
        return np.array(np.broadcast_to(weight * expanded, (len(cotangents), *x.shape)))

    def _local_jacobian(self, x: FloatArray, order: Order) -> sp.coo_array:
        axes = self._axes(x.shape)
        return _reduction_jacobian(x.shape, axes, self._weight(x.shape, axes), order)


@register
@dataclass(frozen=True, eq=False)
class Sum(_LinearReduction):
    """Sum over ``axes`` (all axes by default); the output drops them, like ``numpy.sum``."""

    name: ClassVar[str] = "sum"

    def _weight(self, in_shape: Shape, axes: tuple[int, ...]) -> float:
        return 1.0


@register
@dataclass(frozen=True, eq=False)
class Mean(_LinearReduction):
    """Mean over ``axes`` (all axes by default); the output drops them, like ``numpy.mean``."""

    name: ClassVar[str] = "mean"

    def _weight(self, in_shape: Shape, axes: tuple[int, ...]) -> float:
        return 1.0 / layout.size_of([in_shape[a] for a in axes])


@register
@dataclass(frozen=True, eq=False)
class LogSumExp(_Reduction):
    """``log(sum(exp(x)))`` over ``axes``; derivative: the softmax of each reduced group.

    Computed as ``m + log(sum(exp(x - m)))`` with ``m`` the group maximum, so no term overflows.
    """

    name: ClassVar[str] = "logsumexp"
    note: ClassVar[str] = "differentiable everywhere; stable (the group maximum is factored out)"

    def _forward(self, x: FloatArray) -> FloatArray:
        axes = self._axes(x.shape)
        m = np.max(x, axis=axes, keepdims=True)  # (in_shape with 1 at axes)
        total = np.sum(np.exp(x - m), axis=axes, keepdims=True)
        result: FloatArray = np.squeeze(np.log(total) + m, axis=axes)
        return result

    def _weights(self, x: FloatArray) -> tuple[tuple[int, ...], FloatArray]:
        # d y_o / d x_i = exp(x_i - y_o(i)): the softmax of i's group, each term <= 1.
        axes = self._axes(x.shape)
        y = np.expand_dims(self._forward(x), axes)  # (in_shape with 1 at axes)
        return axes, np.exp(x - y)

    def _jvp(self, x: FloatArray, tangents: FloatArray) -> FloatArray:
        axes, w = self._weights(x)
        # (in) * (B, *in) summed over the reduced axes -> (B, *out)
        result: FloatArray = np.sum(w * tangents, axis=_batch_axes(axes))
        return result

    def _vjp(self, x: FloatArray, cotangents: FloatArray) -> FloatArray:
        axes, w = self._weights(x)
        # (in) * (B, *in with 1 at the reduced axes) -> (B, *in)
        return w * np.expand_dims(cotangents, _batch_axes(axes))

    def _second_order(
        self, x: FloatArray, cotangent: FloatArray, tangents: FloatArray
    ) -> FloatArray:
        # VJP(u) = w u with w the softmax of each group; along t, w moves by
        # w (t - sum_group(w t)), and u is fixed.
        axes, w = self._weights(x)
        moved = w * (tangents - np.sum(w * tangents, axis=_batch_axes(axes), keepdims=True))
        result: FloatArray = moved * np.expand_dims(cotangent, axes)
        return result

    def curvature_blocks(self, in_shape: Shape, order: Order) -> IndexArray | None:
        """Return the reduced groups: ``(out_size, K)``, each group's flat indices."""
        axes = self._axes(in_shape)
        grid = layout.flat_grid(in_shape, order)
        # Move the reduced axes last: each output element's group becomes one row.
        moved = np.moveaxis(grid, axes, tuple(range(grid.ndim - len(axes), grid.ndim)))
        return np.reshape(moved, (-1, layout.size_of([in_shape[a] for a in axes])))

    def _local_jacobian(self, x: FloatArray, order: Order) -> sp.coo_array:
        axes, w = self._weights(x)
        return _reduction_jacobian(x.shape, axes, w, order)


@dataclass(frozen=True, eq=False)
class _ScalarLoss(Op):
    """``f: R^{in_shape} -> R`` (shape ``()``), whose rules all follow from its gradient.

    The Jacobian is one column, ``vec(grad f(x))``, so the JVP of ``t`` is ``<grad f(x), t>``
    and the VJP of ``u`` is ``u grad f(x)``. Subclasses write ``_forward`` and ``_gradient``.
    """

    @abc.abstractmethod
    def _gradient(self, x: FloatArray) -> FloatArray:
        """Return ``grad f(x)``, shape ``in_shape``."""

    @abc.abstractmethod
    def _curvature(self, in_shape: Shape) -> float:
        """Return ``c`` of the Hessian ``c I`` (both losses are quadratics)."""

    def out_shape(self, in_shape: Shape) -> Shape:
        """Return ``()``: the result is a scalar."""
        return ()

    def sparsity(self, in_shape: Shape) -> Sparsity:
        """One column holding every input."""
        n = layout.size_of(in_shape)
        return Sparsity(n, 1, n)

    def _jvp(self, x: FloatArray, tangents: FloatArray) -> FloatArray:
        # <grad, t> for each tangent: (in) * (B, *in) -> (B,)
        result: FloatArray = np.sum(
            self._gradient(x) * tangents, axis=tuple(range(1, tangents.ndim))
        )
        return result

    def _vjp(self, x: FloatArray, cotangents: FloatArray) -> FloatArray:
        # (B,) -> (B, 1, ..., 1) times (in) -> (B, *in); a reshape, as np.expand_dims's axis
        # normalization costs more than the product on a descent step's small tensors
        return self._gradient(x) * cotangents.reshape(cotangents.shape + (1,) * x.ndim)

    def _local_jacobian(self, x: FloatArray, order: Order) -> sp.coo_array:
        # One column: the gradient, flattened in ``order``.
        gradient = self._gradient(x)
        rows = layout.flat_grid(gradient.shape, order)
        return coo_from_grids(rows, np.zeros((), dtype=np.int64), gradient, (gradient.size, 1))

    def _second_order(
        self, x: FloatArray, cotangent: FloatArray, tangents: FloatArray
    ) -> FloatArray:
        # VJP(u) = u grad f(x); its derivative along t is u ∇²f t = u c t.
        return self._curvature(x.shape) * cotangent * tangents

    def curvature_blocks(self, in_shape: Shape, order: Order) -> IndexArray | None:
        """Return one group per element: the Hessian ``c I`` is diagonal."""
        return np.arange(layout.size_of(in_shape), dtype=np.int64)[:, np.newaxis]


@register
@dataclass(frozen=True, eq=False)
class SquaredNorm(_ScalarLoss):
    """``||x||^2 = sum x_i^2`` -> a scalar (shape ``()``); gradient ``2 x``."""

    name: ClassVar[str] = "squared_norm"

    def _forward(self, x: FloatArray) -> FloatArray:
        # np.sum(a) is np.add.reduce(a, axis=None) behind two Python wrappers (~1.5 µs)
        return np.asarray(np.add.reduce(np.square(x), axis=None), dtype=np.float64)

    def _gradient(self, x: FloatArray) -> FloatArray:
        return 2.0 * x

    def _curvature(self, in_shape: Shape) -> float:
        return 2.0


@register
@dataclass(frozen=True, eq=False)
class MeanSquaredError(_ScalarLoss):
    """``mean((x - target)^2)`` -> a scalar; gradient ``2 (x - target) / N``.

    Parameters
    ----------
    target : ndarray
        Same shape as the input.
    """

    name: ClassVar[str] = "mse"
    params: ClassVar[Mapping[str, str]] = MappingProxyType(
        {"target": "tensor of the input's shape"}
    )

    target: FloatArray

    def __post_init__(self) -> None:
        object.__setattr__(self, "target", frozen_array(self.target, "mse: target"))

    def out_shape(self, in_shape: Shape) -> Shape:
        """Return ``()`` if ``target`` has the input's shape."""
        if self.target.shape != in_shape:
            raise ShapeError(
                f"mse: target of shape {list(self.target.shape)} does not match the input shape "
                f"{list(in_shape)}"
            )
        return ()

    def _gradient(self, x: FloatArray) -> FloatArray:
        return 2.0 * (x - self.target) / x.size

    def _curvature(self, in_shape: Shape) -> float:
        return 2.0 / layout.size_of(in_shape)

    def _forward(self, x: FloatArray) -> FloatArray:
        return np.asarray(np.mean(np.square(x - self.target)), dtype=np.float64)
