"""Operations that only move entries: ``concatenate``, ``stack`` and ``slice`` (basic slicing).

Each output element is one input element, so every local Jacobian has one entry ``1`` per row of
the argument that reaches the output (a :class:`~service.engine.sparse.RowMap`): the JVP places the
tangent in its block, the VJP cuts the cotangent's block out (or scatters it back for ``slice``).
"""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, ClassVar

import numpy as np
import scipy.sparse as sp

from ... import layout
from ...errors import IndexOutOfRange, ParameterError, ShapeError
from ...op import Sparsity, coo_from_grids
from ...sparse import Factor, RowMap, index_dtype
from ...types import FloatArray, Order, Shape
from ..nary import NaryOp, Values, register_nary

_MOVES = "linear: moves entries, the Jacobian holds one 1 per row that reaches the output"


def _axis(value: object, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise ParameterError(f"{name}: axis must be an integer, got {value!r}")
    return int(value)


def _normal_axis(axis: int, rank: int, name: str) -> int:
    if not -rank <= axis < rank:
        raise ShapeError(f"{name}: axis {axis} is out of range for rank {rank}")
    return axis % rank


@dataclass(frozen=True, eq=False)
class _Joining(NaryOp):
    """Arguments laid side by side along one axis of the output."""

    arg_names: ClassVar[tuple[str, ...]] = ("arrays",)
    variadic: ClassVar[bool] = True
    linear: ClassVar[bool] = True
    note: ClassVar[str] = _MOVES

    axis: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "axis", _axis(self.axis, self.name))

    def _block(self, shapes: Sequence[Shape], i: int) -> tuple[int, tuple[slice, ...]]:
        """Return the output axis and the index of argument ``i``'s block in the output."""
        raise NotImplementedError

    def sparsity(self, shapes: Sequence[Shape], i: int) -> Sparsity:
        """One entry per element of the argument."""
        return Sparsity(layout.size_of(shapes[i]), 1, 1)

    def _jvp(self, values: Values, i: int, tangents: FloatArray) -> FloatArray:
        shapes = [v.shape for v in values]
        _, block = self._block(shapes, i)
        image = np.zeros((len(tangents), *self.out_shape(shapes)))
        image[(slice(None), *block)] = np.reshape(tangents, image[(slice(None), *block)].shape)
        return image

    def _second_order(
        self,
        values: Values,
        i: int,
        cotangent: FloatArray,
        tangents: Sequence[FloatArray | None],
    ) -> FloatArray | None:
        return None  # linear: the Jacobian does not depend on the arguments

    def curvature_fan(self, shapes: Sequence[Shape], i: int, j: int) -> int | None:
        """Return None: the Jacobians do not depend on any argument."""
        return None

    def _vjp(self, values: Values, i: int, cotangents: FloatArray) -> FloatArray:
        _, block = self._block([v.shape for v in values], i)
        piece = cotangents[(slice(None), *block)]
        return np.ascontiguousarray(np.reshape(piece, (len(cotangents), *values[i].shape)))

    def _local_jacobian(self, values: Values, i: int, order: Order) -> sp.coo_array:
        shapes = [v.shape for v in values]
        out_shape = self.out_shape(shapes)
        _, block = self._block(shapes, i)
        cols = np.reshape(layout.flat_grid(out_shape, order)[block], values[i].shape)
        rows = layout.flat_grid(values[i].shape, order)
        size = (layout.size_of(values[i].shape), layout.size_of(out_shape))
        return coo_from_grids(rows, cols, 1.0, size)


@register_nary
@dataclass(frozen=True, eq=False)
class Concatenate(_Joining):
    """``numpy.concatenate(arrays, axis)``."""

    name: ClassVar[str] = "concatenate"
    params: ClassVar[Mapping[str, str]] = MappingProxyType(
        {"axis": "the joining axis (int, negative from the end; default 0)"}
    )

    def out_shape(self, shapes: Sequence[Shape]) -> Shape:
        """Return the shared shape with the joining axis summed."""
        first = shapes[0]
        if not first:
            raise ShapeError("concatenate: arguments must have rank >= 1")
        axis = _normal_axis(self.axis, len(first), self.name)
        for shape in shapes[1:]:
            if len(shape) != len(first) or any(
                a != b for k, (a, b) in enumerate(zip(shape, first, strict=True)) if k != axis
            ):
                raise ShapeError(f"concatenate: shapes {[list(s) for s in shapes]} differ "
                                 f"outside axis {self.axis}")  # fmt: skip
        total = sum(shape[axis] for shape in shapes)
        return (*first[:axis], total, *first[axis + 1 :])

    def _block(self, shapes: Sequence[Shape], i: int) -> tuple[int, tuple[slice, ...]]:
        axis = _normal_axis(self.axis, len(shapes[0]), self.name)
        start = sum(shape[axis] for shape in shapes[:i])
        block = [slice(None)] * len(shapes[0])
        block[axis] = slice(start, start + shapes[i][axis])
        return axis, tuple(block)

    def _forward(self, values: Values) -> FloatArray:
        return np.concatenate(list(values), axis=self.axis)


@register_nary
@dataclass(frozen=True, eq=False)
class Stack(_Joining):
    """``numpy.stack(arrays, axis)``: a new axis of length ``len(arrays)``."""

    name: ClassVar[str] = "stack"
    params: ClassVar[Mapping[str, str]] = MappingProxyType(
        {"axis": "position of the new axis (int, negative from the end; default 0)"}
    )

    def out_shape(self, shapes: Sequence[Shape]) -> Shape:
        """Return the shared shape with the new axis inserted."""
        first = shapes[0]
        if any(shape != first for shape in shapes):
            raise ShapeError(f"stack: shapes {[list(s) for s in shapes]} must be equal")
        axis = _normal_axis(self.axis, len(first) + 1, self.name)
        return (*first[:axis], len(shapes), *first[axis:])

    def _block(self, shapes: Sequence[Shape], i: int) -> tuple[int, tuple[slice, ...]]:
        axis = _normal_axis(self.axis, len(shapes[0]) + 1, self.name)
        block = [slice(None)] * (len(shapes[0]) + 1)
        block[axis] = slice(i, i + 1)
        return axis, tuple(block)

    def _forward(self, values: Values) -> FloatArray:
        return np.stack(list(values), axis=self.axis)


def _item(value: Any, position: int) -> int | slice:
    if isinstance(value, int | np.integer) and not isinstance(value, bool):
        return int(value)
    if isinstance(value, list | tuple) and len(value) == 3:
        parts = []
        for part in value:
            if part is not None and (isinstance(part, bool) or not isinstance(part, int)):
                raise ParameterError(f"slice: index[{position}] holds {part!r}, not an int or null")
            parts.append(part)
        if parts[2] == 0:
            raise ParameterError(f"slice: index[{position}] has step 0")
        return slice(*parts)
    raise ParameterError(
        f"slice: index[{position}] must be an int or [start, stop, step] (null for a default), "
        f"got {value!r}"
    )


@register_nary
@dataclass(frozen=True, eq=False)
class Slice(NaryOp):
    """``x[index]`` with NumPy basic slicing: per leading axis an int or a ``start:stop:step``."""

    name: ClassVar[str] = "slice"
    linear: ClassVar[bool] = True
    note: ClassVar[str] = _MOVES
    params: ClassVar[Mapping[str, str]] = MappingProxyType(
        {
            "index": "one item per leading axis: an int (drops the axis) or [start, stop, step] "
            "with null for a default, as x[1:, ::2] = [[1, null, null], [null, null, 2]]"
        }
    )

    index: tuple[int | slice, ...]

    def __post_init__(self) -> None:
        if not isinstance(self.index, list | tuple) or len(self.index) > 32:
            raise ParameterError("slice: index must be a list of at most 32 items")
        items = tuple(
            item if isinstance(item, slice) else _item(item, k) for k, item in enumerate(self.index)
        )
        object.__setattr__(self, "index", items)

    def out_shape(self, shapes: Sequence[Shape]) -> Shape:
        """Return the shape of ``x[index]``; every kept axis must stay non-empty."""
        shape = shapes[0]
        if len(self.index) > len(shape):
            raise ShapeError(f"slice: {len(self.index)} indices for shape {list(shape)}")
        out: list[int] = []
        for axis, (item, dim) in enumerate(zip(self.index, shape, strict=False)):
            if isinstance(item, int):
                if not -dim <= item < dim:
                    raise IndexOutOfRange(f"slice: index {item} is out of range for axis {axis} "
                                          f"of length {dim}")  # fmt: skip
            else:
                length = len(range(*item.indices(dim)))
                if length < 1:
                    raise ShapeError(f"slice: axis {axis} of length {dim} sliced to nothing")
                out.append(length)
        return (*out, *shape[len(self.index) :])

    def sparsity(self, shapes: Sequence[Shape], i: int) -> Sparsity:
        """One entry per kept element."""
        return Sparsity(layout.size_of(self.out_shape(shapes)), 1, 1)

    def _forward(self, values: Values) -> FloatArray:
        return np.array(values[0][self.index], dtype=np.float64)

    def _jvp(self, values: Values, i: int, tangents: FloatArray) -> FloatArray:
        return np.ascontiguousarray(tangents[(slice(None), *self.index)])

    def _second_order(
        self,
        values: Values,
        i: int,
        cotangent: FloatArray,
        tangents: Sequence[FloatArray | None],
    ) -> FloatArray | None:
        return None  # linear: the Jacobian does not depend on the arguments

    def curvature_fan(self, shapes: Sequence[Shape], i: int, j: int) -> int | None:
        """Return None: the Jacobians do not depend on any argument."""
        return None

    def _vjp(self, values: Values, i: int, cotangents: FloatArray) -> FloatArray:
        # Basic slicing selects each element at most once: the transpose scatters without sums.
        grad = np.zeros((len(cotangents), *values[0].shape))
        grad[(slice(None), *self.index)] = cotangents
        return grad

    def _local_jacobian(self, values: Values, i: int, order: Order) -> sp.coo_array:
        shape = values[0].shape
        out_shape = self.out_shape([shape])
        rows = layout.flat_grid(shape, order)[self.index]
        cols = layout.flat_grid(out_shape, order) if out_shape else np.zeros((), dtype=np.int64)
        return coo_from_grids(rows, cols, 1.0, (layout.size_of(shape), layout.size_of(out_shape)))

    def _local_factor(self, values: Values, i: int, order: Order) -> Factor:
        # One 1 per kept element: the map ``row -> col`` itself, without sorting triplets.
        shape = values[0].shape
        out_shape = self.out_shape([shape])
        rows = layout.flat_grid(shape, order)[self.index]
        cols = layout.flat_grid(out_shape, order) if out_shape else np.zeros((), dtype=np.int64)
        size = (layout.size_of(shape), layout.size_of(out_shape))
        value = np.zeros(size[0])
        value[rows] = 1.0
        col = np.zeros(size[0], dtype=index_dtype(size, size[0]))
        col[rows] = cols
        return RowMap(size, value, col)
