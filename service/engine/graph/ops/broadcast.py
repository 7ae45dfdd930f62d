"""Elementwise operations of two tensors with NumPy broadcasting, ``where`` and two-input ``mse``.

For ``out = g(a, b)`` broadcast to ``S = broadcast(shape(a), shape(b))`` each output element reads
one element of each argument, so ``J_a`` has one entry per column: ``J_a[flat(a-index of o),
flat(o)] = dg/da`` at ``o``. An argument that was broadcast feeds several outputs, so its row holds
several entries and its VJP **sums over the broadcast axes** (:func:`unbroadcast`), as in
autograd/JAX (``unbroadcast`` / ``_unbroadcast``).
"""

import abc
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import ClassVar

import numpy as np
import scipy.sparse as sp

from ... import layout
from ...errors import DomainError, ParameterError, ShapeError
from ...op import Sparsity, coo_from_grids
from ...sparse import Factor, RowMap, factor_of
from ...types import FloatArray, IndexArray, Order, Shape
from ..nary import NaryOp, Values, register_nary

__all__ = ["broadcast_shape", "lift", "unbroadcast"]


def broadcast_shape(shapes: Sequence[Shape], name: str) -> Shape:
    """Return NumPy's broadcast of ``shapes``; :class:`ShapeError` naming ``name`` if none."""
    try:
        return tuple(int(d) for d in np.broadcast_shapes(*shapes))
    except ValueError:
        listed = " and ".join(str(list(s)) for s in shapes)
        raise ShapeError(f"{name}: shapes {listed} do not broadcast together") from None


def lift(batch: FloatArray, shape: Shape, out_shape: Shape) -> FloatArray:
    """(B, *shape) -> (B, 1, ..., 1, *shape) with the rank of ``out_shape``, ready to broadcast."""
    ones = (1,) * (len(out_shape) - len(shape))
    return np.reshape(batch, (batch.shape[0], *ones, *shape))


def unbroadcast(batch: FloatArray, shape: Shape) -> FloatArray:
    """Sum (B, *S) over the axes that broadcasting added to ``shape``: -> (B, *shape)."""
    lead = batch.ndim - 1 - len(shape)
    if lead:
        batch = batch.sum(axis=tuple(range(1, 1 + lead)))
    axes = tuple(1 + k for k, d in enumerate(shape) if d == 1 and batch.shape[1 + k] != 1)
    if axes:
        batch = batch.sum(axis=axes, keepdims=True)
    return np.ascontiguousarray(batch)


def broadcast_rows(shape: Shape, out_shape: Shape, order: Order) -> IndexArray:
    """For each element of ``out_shape``, the flat index of the ``shape`` element it reads."""
    grid = layout.flat_grid(shape, order) if shape else np.zeros((), dtype=np.int64)
    lifted = np.reshape(grid, (1,) * (len(out_shape) - len(shape)) + shape)
    return np.broadcast_to(lifted, out_shape)


def _columns(out_shape: Shape, order: Order) -> IndexArray:
    return layout.flat_grid(out_shape, order) if out_shape else np.zeros((), dtype=np.int64)


def _pairs_per_row(shapes: Sequence[Shape], out_shape: Shape, i: int, j: int) -> int:
    # Outputs that read one element of argument i, each reading one element of argument j.
    size_i, size_j = layout.size_of(shapes[i]), layout.size_of(shapes[j])
    return min(size_j, max(1, layout.size_of(out_shape) // size_i))


def _elementwise_pairs(
    values: Values, i: int, j: int, weights: FloatArray | float, order: Order
) -> sp.csr_array:
    """Return ``D_ij`` of an elementwise function of broadcast arguments.

    Output ``o`` adds its weight ``u_o d² out_o / d arg_i d arg_j`` (``weights``, broadcastable to
    the output) at (the element of ``i`` it reads, the element of ``j`` it reads).
    """
    shape_i, shape_j = values[i].shape, values[j].shape
    out_shape = np.broadcast_shapes(np.shape(weights), shape_i, shape_j)
    rows = broadcast_rows(shape_i, out_shape, order)
    cols = broadcast_rows(shape_j, out_shape, order)
    data = np.broadcast_to(np.asarray(weights, dtype=np.float64), out_shape)
    size = (layout.size_of(shape_i), layout.size_of(shape_j))
    return sp.csr_array(coo_from_grids(rows, cols, data, size))


@dataclass(frozen=True, eq=False)
class _Broadcasting(NaryOp):
    """``out = g(a, b)`` elementwise over the broadcast shape; subclasses give ``partial``."""

    arg_names: ClassVar[tuple[str, ...]] = ("a", "b")
    # The argument pairs (i, j) whose second partial is not identically zero.
    couples: ClassVar[frozenset[tuple[int, int]]] = frozenset()

    def _extra_shapes(self) -> tuple[Shape, ...]:
        return ()

    def out_shape(self, shapes: Sequence[Shape]) -> Shape:
        """Return the broadcast shape of the arguments."""
        return broadcast_shape([*shapes, *self._extra_shapes()], self.name)

    def sparsity(self, shapes: Sequence[Shape], i: int) -> Sparsity:
        """One entry per output; an element of a broadcast argument feeds ``m / n`` outputs."""
        m = layout.size_of(self.out_shape(shapes))
        n = layout.size_of(shapes[i])
        return Sparsity(m, max(1, m // n), 1)

    @abc.abstractmethod
    def partial(self, values: Values, i: int) -> FloatArray | float:
        """Return ``d out / d arg_i`` elementwise, broadcastable to the output shape."""

    def _jvp(self, values: Values, i: int, tangents: FloatArray) -> FloatArray:
        shapes = [v.shape for v in values]
        out_shape = self.out_shape(shapes)
        # (B, 1.., *shape_i) * (out_shape) -> (B, *out_shape)
        image = np.multiply(lift(tangents, values[i].shape, out_shape), self.partial(values, i))
        target = (len(tangents), *out_shape)
        return image if image.shape == target else np.broadcast_to(image, target).copy()

    def _vjp(self, values: Values, i: int, cotangents: FloatArray) -> FloatArray:
        # (B, *out_shape) * partial -> (B, *out_shape), summed over broadcast axes -> (B, *shape_i)
        partial = self.partial(values, i)
        if isinstance(partial, float) and abs(partial) == 1.0:
            # u * 1 is u and u * -1 is -u, bit for bit: one pass over the output spared (add,
            # subtract: a residual's whole pullback)
            scaled = cotangents if partial > 0 else np.negative(cotangents)
        else:
            scaled = np.multiply(cotangents, partial)
        return unbroadcast(scaled, values[i].shape)

    def second_partial(self, values: Values, i: int, j: int) -> FloatArray | float | None:
        """Return ``d² out / d arg_i d arg_j`` elementwise (broadcastable), None where it is 0.

        None exactly for the pairs outside :attr:`couples`.
        """
        return None

    def curvature_fan(self, shapes: Sequence[Shape], i: int, j: int) -> int | None:
        """Bound a row by the outputs one element of ``i`` meets, each reading one of ``j``."""
        if (i, j) not in self.couples:
            return None
        return _pairs_per_row(shapes, self.out_shape(shapes), i, j)

    def _curvature(
        self, values: Values, i: int, j: int, cotangent: FloatArray, order: Order
    ) -> sp.csr_array:
        second = self.second_partial(values, i, j)
        assert second is not None, "asked only for the pairs of couples"
        return _elementwise_pairs(values, i, j, np.multiply(second, cotangent), order)

    def _second_order(
        self,
        values: Values,
        i: int,
        cotangent: FloatArray,
        tangents: Sequence[FloatArray | None],
    ) -> FloatArray | None:
        # VJP_i(u) = unbroadcast(u * partial_i); along t, partial_i moves by
        # sum_j (d partial_i / d arg_j) t_j, and u is fixed.
        out_shape = cotangent.shape
        moved: FloatArray | None = None
        for j, batch in enumerate(tangents):
            second = None if batch is None else self.second_partial(values, i, j)
            if second is None:
                continue
            assert batch is not None
            term = np.multiply(lift(batch, values[j].shape, out_shape), second)
            moved = term if moved is None else moved + term
        if moved is None:
            return None
        # (B, *S) * (S) -> (B, *S), summed over the axes broadcasting added to argument i
        return unbroadcast(np.broadcast_to(moved * cotangent, (len(moved), *out_shape)),
                           values[i].shape)  # fmt: skip

    def _local_jacobian(self, values: Values, i: int, order: Order) -> sp.coo_array:
        out_shape = self.out_shape([v.shape for v in values])
        data = np.broadcast_to(np.asarray(self.partial(values, i), dtype=np.float64), out_shape)
        rows = broadcast_rows(values[i].shape, out_shape, order)
        size = (layout.size_of(values[i].shape), layout.size_of(out_shape))
        return coo_from_grids(rows, _columns(out_shape, order), data, size)

    def _local_factor(self, values: Values, i: int, order: Order) -> Factor:
        out_shape = self.out_shape([v.shape for v in values])
        if values[i].shape != out_shape:
            return factor_of(self._local_jacobian(values, i, order))
        # Not broadcast: the diagonal of the partial, as a map, without sorting triplets.
        partial = np.broadcast_to(np.asarray(self.partial(values, i), dtype=np.float64), out_shape)
        size = layout.size_of(out_shape)
        return RowMap((size, size), layout.vec(partial, order))


_BILINEAR = "bilinear: differentiable everywhere; broadcast arguments sum over broadcast axes"


@register_nary
@dataclass(frozen=True, eq=False)
class Add(_Broadcasting):
    """``a + b`` with NumPy broadcasting."""

    name: ClassVar[str] = "add"
    linear: ClassVar[bool] = True
    note: ClassVar[str] = "linear; broadcast arguments sum over broadcast axes"

    def _forward(self, values: Values) -> FloatArray:
        return np.add(values[0], values[1])

    def partial(self, values: Values, i: int) -> float:
        """Return 1 for both arguments."""
        return 1.0


@register_nary
@dataclass(frozen=True, eq=False)
class Subtract(_Broadcasting):
    """``a - b`` with NumPy broadcasting."""

    name: ClassVar[str] = "subtract"
    linear: ClassVar[bool] = True
    note: ClassVar[str] = Add.note

    def _forward(self, values: Values) -> FloatArray:
        return np.subtract(values[0], values[1])

    def partial(self, values: Values, i: int) -> float:
        """Return 1 for ``a``, -1 for ``b``."""
        return 1.0 if i == 0 else -1.0


@register_nary
@dataclass(frozen=True, eq=False)
class Multiply(_Broadcasting):
    """``a * b`` elementwise with NumPy broadcasting."""

    name: ClassVar[str] = "multiply"
    linear: ClassVar[bool] = True
    note: ClassVar[str] = _BILINEAR
    couples: ClassVar[frozenset[tuple[int, int]]] = frozenset({(0, 1), (1, 0)})

    def _forward(self, values: Values) -> FloatArray:
        return np.multiply(values[0], values[1])

    def partial(self, values: Values, i: int) -> FloatArray:
        """Return ``b`` for ``a`` and ``a`` for ``b``."""
        return values[1 - i]

    def second_partial(self, values: Values, i: int, j: int) -> float | None:
        """Return 1 across the arguments, 0 (None) for one argument twice: bilinear."""
        return 1.0 if i != j else None


@register_nary
@dataclass(frozen=True, eq=False)
class Divide(_Broadcasting):
    """``a / b`` elementwise with NumPy broadcasting; ``b`` must have no zero."""

    name: ClassVar[str] = "divide"
    note: ClassVar[str] = "differentiable where b != 0 (b = 0 is refused)"
    couples: ClassVar[frozenset[tuple[int, int]]] = frozenset({(0, 1), (1, 0), (1, 1)})

    def check_domain(self, values: Values, *, differentiating: bool) -> None:
        """Refuse a zero divisor."""
        if np.any(values[1] == 0):
            raise DomainError("divide needs b != 0 everywhere")

    def _forward(self, values: Values) -> FloatArray:
        return np.divide(values[0], values[1])

    def partial(self, values: Values, i: int) -> FloatArray:
        """Return ``1 / b`` for ``a`` and ``-a / b**2`` for ``b``."""
        a, b = values
        return 1.0 / b if i == 0 else -a / (b * b)

    def second_partial(self, values: Values, i: int, j: int) -> FloatArray | None:
        """Return 0 (None) for ``a, a``, ``-1 / b²`` across, ``2 a / b³`` for ``b, b``."""
        a, b = values
        if i == j == 0:
            return None
        if i != j:
            return -1.0 / (b * b)
        return 2.0 * a / (b * b * b)


@dataclass(frozen=True, eq=False)
class _Extremum(_Broadcasting):
    note: ClassVar[str] = "at ties a == b the derivative is shared: 1/2 to each argument (PyTorch)"

    def partial(self, values: Values, i: int) -> FloatArray:
        """Return 1 where argument ``i`` is chosen, 1/2 at ties, 0 elsewhere."""
        own, other = values[i], values[1 - i]
        wins = other < own if self.name == "maximum" else own < other
        return np.where(wins, 1.0, np.where(own == other, 0.5, 0.0))


@register_nary
@dataclass(frozen=True, eq=False)
class Maximum(_Extremum):
    """``maximum(a, b)`` elementwise with NumPy broadcasting."""

    name: ClassVar[str] = "maximum"

    def _forward(self, values: Values) -> FloatArray:
        return np.maximum(values[0], values[1])


@register_nary
@dataclass(frozen=True, eq=False)
class Minimum(_Extremum):
    """``minimum(a, b)`` elementwise with NumPy broadcasting."""

    name: ClassVar[str] = "minimum"

    def _forward(self, values: Values) -> FloatArray:
        return np.minimum(values[0], values[1])


@register_nary
@dataclass(frozen=True, eq=False)
class Power(_Broadcasting):
    """``a ** b`` elementwise with a tensor exponent; ``a > 0``."""

    name: ClassVar[str] = "power"
    couples: ClassVar[frozenset[tuple[int, int]]] = frozenset({(0, 0), (0, 1), (1, 0), (1, 1)})
    note: ClassVar[str] = (
        "a > 0 (so that a ** b and log(a) are real): d/da = b a^(b-1), d/db = a^b log(a); "
        "for a constant exponent use power(x, p=...)"
    )

    def check_domain(self, values: Values, *, differentiating: bool) -> None:
        """Refuse a non-positive base."""
        if np.any(values[0] <= 0):
            raise DomainError("power with a tensor exponent needs a > 0 everywhere")

    def _forward(self, values: Values) -> FloatArray:
        return np.power(values[0], values[1])

    def partial(self, values: Values, i: int) -> FloatArray:
        """Return ``b a^(b-1)`` for ``a`` and ``a^b log(a)`` for ``b``."""
        a, b = values
        if i == 0:
            return b * np.power(a, b - 1.0)
        return np.power(a, b) * np.log(a)

    def second_partial(self, values: Values, i: int, j: int) -> FloatArray:
        """``b (b-1) a^(b-2)``; ``a^(b-1) (1 + b log a)`` across; ``a^b log(a)²`` for ``b, b``."""
        a, b = values
        if i == j == 0:
            return b * (b - 1.0) * np.power(a, b - 2.0)
        if i != j:
            return np.power(a, b - 1.0) * (1.0 + b * np.log(a))
        result: FloatArray = np.power(a, b) * np.square(np.log(a))
        return result


def _mask(value: object) -> np.ndarray:
    array = np.asarray(value)
    if array.dtype == np.bool_:
        mask = array
    elif array.dtype.kind in "iuf" and np.all((array == 0) | (array == 1)):
        mask = array.astype(bool)
    else:
        raise ParameterError("where: mask must hold booleans (or 0/1)")
    if array.ndim > 32 or any(d < 1 for d in array.shape):
        raise ParameterError(f"where: mask has an invalid shape {list(array.shape)}")
    mask = np.array(mask, copy=True)
    mask.setflags(write=False)
    return mask


@register_nary
@dataclass(frozen=True, eq=False)
class Where(_Broadcasting):
    """``where(a, b, mask)``: ``a`` where the constant ``mask`` is true, ``b`` elsewhere."""

    name: ClassVar[str] = "where"
    linear: ClassVar[bool] = True
    note: ClassVar[str] = "linear in a and b; the mask is a constant (never differentiated)"
    params: ClassVar[Mapping[str, str]] = MappingProxyType(
        {"mask": "boolean tensor (nested lists of true/false or 0/1), broadcast with a and b"}
    )

    mask: np.ndarray

    def __post_init__(self) -> None:
        object.__setattr__(self, "mask", _mask(self.mask))

    def _extra_shapes(self) -> tuple[Shape, ...]:
        return (tuple(self.mask.shape),)

    def _forward(self, values: Values) -> FloatArray:
        return np.where(self.mask, values[0], values[1]).astype(np.float64)

    def partial(self, values: Values, i: int) -> FloatArray:
        """Return the mask (as 0/1) for ``a`` and its complement for ``b``."""
        return (self.mask if i == 0 else ~self.mask).astype(np.float64)


@register_nary
@dataclass(frozen=True, eq=False)
class MeanSquaredError(NaryOp):
    """``mean((a - b) ** 2)`` over the broadcast shape of ``a`` and ``b``: a scalar."""

    name: ClassVar[str] = "mse"
    arg_names: ClassVar[tuple[str, ...]] = ("prediction", "target")

    def _shape(self, shapes: Sequence[Shape]) -> Shape:
        return broadcast_shape(shapes, self.name)

    def out_shape(self, shapes: Sequence[Shape]) -> Shape:
        """Return ``()``, after checking that the arguments broadcast."""
        self._shape(shapes)
        return ()

    def sparsity(self, shapes: Sequence[Shape], i: int) -> Sparsity:
        """Bound a dense column: every element of each argument reaches the one output."""
        n = layout.size_of(shapes[i])
        return Sparsity(n, 1, n)

    def _residual(self, values: Values) -> FloatArray:
        return np.subtract(values[0], values[1])

    def _partial(self, values: Values, i: int) -> FloatArray:
        # d/da mean((a - b)^2) = 2 (a - b) / N over the broadcast shape; d/db is its negative.
        residual = self._residual(values)
        scale = (2.0 if i == 0 else -2.0) / residual.size
        return residual * scale

    def _forward(self, values: Values) -> FloatArray:
        residual = self._residual(values)
        # sum of squares in one pass (BLAS), then the mean
        return np.asarray(np.vdot(residual, residual) / residual.size)

    def _jvp(self, values: Values, i: int, tangents: FloatArray) -> FloatArray:
        partial = self._partial(values, i)
        lifted = lift(tangents, values[i].shape, partial.shape)
        # (B, *S) -> (B,): sum over every axis but the batch
        product = np.multiply(lifted, partial)
        image: FloatArray = product.reshape(len(tangents), -1).sum(axis=1)
        return image

    def _vjp(self, values: Values, i: int, cotangents: FloatArray) -> FloatArray:
        partial = self._partial(values, i)
        # (B,) -> (B, 1, ..., 1) * (S) -> (B, *S) -> (B, *shape_i)
        scaled = np.reshape(cotangents, (-1,) + (1,) * partial.ndim) * partial
        return unbroadcast(scaled, values[i].shape)

    def _second_order(
        self,
        values: Values,
        i: int,
        cotangent: FloatArray,
        tangents: Sequence[FloatArray | None],
    ) -> FloatArray | None:
        # VJP_i(u) = u (±2 / N)(a - b): along t it moves by u (±2 / N)(t_a - t_b).
        shape = self._shape([v.shape for v in values])
        moved: FloatArray | None = None
        for j, batch in enumerate(tangents):
            if batch is None:
                continue
            term = lift(batch, values[j].shape, shape) * (1.0 if j == 0 else -1.0)
            moved = term if moved is None else moved + term
        if moved is None:
            return None
        scale = (2.0 if i == 0 else -2.0) / layout.size_of(shape) * cotangent
        return unbroadcast(np.broadcast_to(moved * scale, (len(moved), *shape)), values[i].shape)

    def curvature_fan(self, shapes: Sequence[Shape], i: int, j: int) -> int | None:
        """As for a broadcast elementwise function: every pair of arguments couples."""
        return _pairs_per_row(shapes, self._shape(shapes), i, j)

    def _curvature(
        self, values: Values, i: int, j: int, cotangent: FloatArray, order: Order
    ) -> sp.csr_array:
        # d² / d arg_i d arg_j of u mean((a - b)²) = u (±2 / N)(±1), for every output position.
        shape = self._shape([v.shape for v in values])
        sign = 1.0 if i == j else -1.0
        weight = np.broadcast_to(sign * 2.0 / layout.size_of(shape) * cotangent, shape)
        return _elementwise_pairs(values, i, j, weight, order)

    def _local_jacobian(self, values: Values, i: int, order: Order) -> sp.coo_array:
        partial = self._partial(values, i)
        rows = broadcast_rows(values[i].shape, partial.shape, order)
        return coo_from_grids(rows, np.zeros((), dtype=np.int64), partial,
                              (layout.size_of(values[i].shape), 1))  # fmt: skip
