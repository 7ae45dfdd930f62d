"""Parameter normalization shared by several operation modules (axes, pairs, pooling windows)."""

from collections.abc import Sequence
from typing import TypeVar

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from numpy.typing import NDArray

from ..errors import ParameterError, ShapeError
from ..types import Shape

T = TypeVar("T", bound=np.generic)


def int_tuple(value: int | Sequence[int], what: str) -> tuple[int, ...]:
    """Return ``value`` as a tuple of Python ints, refusing booleans and non-integers."""
    items = (value,) if isinstance(value, int | np.integer) else tuple(value)
    result = []
    for item in items:
        if isinstance(item, bool) or not isinstance(item, int | np.integer):
            raise ParameterError(f"{what} must hold integers, got {item!r}")
        result.append(int(item))
    return tuple(result)


def pair(value: int | Sequence[int], what: str) -> tuple[int, int]:
    """Return a positive ``(vertical, horizontal)`` pair; an int ``k`` means ``(k, k)``."""
    items = int_tuple(value, what)
    if len(items) == 1:
        items = items * 2
    if len(items) != 2 or min(items) < 1:
        raise ParameterError(f"{what} must be one or two integers >= 1, got {list(items)}")
    return items[0], items[1]


def normalize_axes(axes: tuple[int, ...] | None, in_shape: Shape, op_name: str) -> tuple[int, ...]:
    """Return the sorted non-negative axes that ``axes`` names in a tensor of ``in_shape``.

    ``None`` means every axis; negative axes count from the end, as in NumPy.

    Raises
    ------
    ShapeError
        If an axis is outside ``-ndim <= axis < ndim``.
    ParameterError
        If an axis is repeated.
    """
    ndim = len(in_shape)
    if axes is None:
        return tuple(range(ndim))
    normalized = []
    for axis in axes:
        if not -ndim <= axis < ndim:
            raise ShapeError(
                f"{op_name}: axis {axis} is out of range for input shape {list(in_shape)} "
                f"(rank {ndim})"
            )
        normalized.append(axis % ndim)
    if len(set(normalized)) != len(normalized):
        raise ParameterError(f"{op_name}: axes {list(axes)} name an axis twice")
    return tuple(sorted(normalized))


def normalize_axis(axis: int, in_shape: Shape, op_name: str) -> int:
    """Return the non-negative axis ``axis`` names in a tensor of ``in_shape``."""
    return normalize_axes((axis,), in_shape, op_name)[0]


def pooled_shape(
    in_shape: Shape, size: tuple[int, int], stride: tuple[int, int], op_name: str
) -> Shape:
    """Shape rule of 2-D pooling over the last two axes without padding.

    ``(..., H, W) -> (..., (H - k_H) // s_H + 1, (W - k_W) // s_W + 1)``.
    """
    if len(in_shape) < 2:
        raise ShapeError(
            f"{op_name} pools over the last two axes and needs rank >= 2, "
            f"got input shape {list(in_shape)}"
        )
    *lead, H, W = in_shape
    k_h, k_w = size
    if k_h > H or k_w > W:
        raise ShapeError(
            f"{op_name}: window {list(size)} does not fit the last two axes {[H, W]} "
            f"of input shape {list(in_shape)}"
        )
    return (*lead, (H - k_h) // stride[0] + 1, (W - k_w) // stride[1] + 1)


def windows(a: NDArray[T], size: tuple[int, int], stride: tuple[int, int]) -> NDArray[T]:
    """Return the pooling windows of ``a`` as a read-only view.

    ``(..., H, W) -> (..., H_out, W_out, k_H, k_W)``: window ``(i, j)`` starts at
    ``(s_H i, s_W j)``. ``sliding_window_view`` is safe (read-only), unlike ``as_strided``.
    """
    # (..., H, W) -> (..., H - k_H + 1, W - k_W + 1, k_H, k_W)
    view = sliding_window_view(a, size, axis=(-2, -1))
    # keep every s-th window start: -> (..., H_out, W_out, k_H, k_W)
    return view[..., :: stride[0], :: stride[1], :, :]


def fan_of_windows(size: tuple[int, int], stride: tuple[int, int], out_hw: Shape) -> int:
    """Bound how many windows cover one input element: ``ceil(k/s)`` per axis, at most the count."""
    per_axis = [min(-(-k // s), n) for k, s, n in zip(size, stride, out_hw, strict=True)]
    return per_axis[0] * per_axis[1]
