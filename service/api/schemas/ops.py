"""One request model per registered operation, joined in a discriminated union on ``"op"``.

A function on the wire is a list of these (CONVENTIONS section 5): ``[op_1, ..., op_n]`` means
``h = op_n ∘ ... ∘ op_1``. Operations with parameters have a model written out here; the
parameterless ones (``square``, ``tanh``, ...) get theirs generated from the registry, since they
would be identical but for the tag. A test checks that the tags equal ``engine.op.op_names()``.
"""

import dataclasses
from typing import TYPE_CHECKING, Annotated, Any, Literal, Union

from pydantic import Field, create_model

from ...codec import Tensor, decode_tensor
from ...engine.op import Op, get_op, op_classes
from ...engine.types import Order
from .common import StrictModel
from .xcorr import ExplicitPadding, PairOrOne

Axes = Annotated[list[Annotated[int, Field(ge=-32, le=31)]], Field(max_length=32)]
FiniteFloat = Annotated[float, Field(allow_inf_nan=False)]


# The index order is a request-wide option, never a per-operation parameter on the wire.
REQUEST_WIDE = frozenset({"order"})


def _engine_value(value: Any) -> Any:
    # Wire values become the engine's: tensors decoded, lists frozen into tuples.
    if isinstance(value, Tensor):
        return decode_tensor(value)
    if isinstance(value, list):
        return tuple(_engine_value(item) for item in value)
    return value


class OpSpec(StrictModel):
    """Base of every operation model: builds the engine operation it describes."""

    op: str

    def to_engine(self, order: Order) -> Op:
        """Return the engine operation; ``order`` is the request's index order.

        Operations whose meaning depends on the index order (``reshape``, ``linear``) receive
        the request's ``order``, so one request uses one order throughout.
        """
        cls = get_op(self.op)
        arguments: dict[str, Any] = {
            name: _engine_value(getattr(self, name)) for name in type(self).model_fields
        }
        del arguments["op"]
        if "order" in {field.name for field in dataclasses.fields(cls)}:
            arguments["order"] = order  # see REQUEST_WIDE
        return cls(**arguments)


class Xcorr2dSpec(OpSpec):
    """Cross-correlation with a fixed kernel, differentiated with respect to the image."""

    op: Literal["xcorr2d"]
    kernel: Tensor = Field(description="(C, H', W') or (K, C, H', W').")
    stride: PairOrOne = Field([1, 1], description="(s_H, s_W), or one int for both.")
    padding: Literal["valid", "same", "full"] | ExplicitPadding = "valid"
    dilation: PairOrOne = Field([1, 1], description="(d_H, d_W), or one int for both.")


class LinearSpec(OpSpec):
    """``y = ten(W vec(x) + b)`` in the request's order."""

    op: Literal["linear"]
    weight: Tensor = Field(description="W, shape (out_size, in_size).")
    bias: Tensor | None = Field(None, description="b, shape (out_size,).")
    output_shape: Annotated[list[Annotated[int, Field(ge=1)]], Field(max_length=32)] | None = Field(
        None, description="Shape of y (default (out_size,))."
    )


class ReshapeSpec(OpSpec):
    """``ten_shape(vec(x))`` in the request's order; one dimension may be -1."""

    op: Literal["reshape"]
    shape: Annotated[list[Annotated[int, Field(ge=-1)]], Field(max_length=32)]


class TransposeSpec(OpSpec):
    """Permute the axes (default: reverse them)."""

    op: Literal["transpose"]
    axes: Axes | None = None


class ScaleSpec(OpSpec):
    """Multiply by a scalar."""

    op: Literal["scale"]
    factor: FiniteFloat


class _ConstantSpec(OpSpec):
    constant: Tensor = Field(description="Broadcasts to x's shape without changing it.")


class AddSpec(_ConstantSpec):
    """Add a constant tensor (NumPy broadcasting)."""

    op: Literal["add"]


class MultiplySpec(_ConstantSpec):
    """Multiply by a constant tensor elementwise (NumPy broadcasting)."""

    op: Literal["multiply"]


class _AxesSpec(OpSpec):
    axes: Axes | None = Field(None, description="Axes to reduce (default: all).")


class SumSpec(_AxesSpec):
    """Sum over axes."""

    op: Literal["sum"]


class MeanSpec(_AxesSpec):
    """Mean over axes."""

    op: Literal["mean"]


class LogsumexpSpec(_AxesSpec):
    """``log(sum(exp(x)))`` over axes, computed stably."""

    op: Literal["logsumexp"]


class _PoolSpec(OpSpec):
    size: PairOrOne = Field(
        description="Window (height, width) over the last two axes, or one int for both."
    )
    stride: PairOrOne | None = Field(
        None, description="(s_H, s_W), or one int for both; default: the window size."
    )


class AvgPool2dSpec(_PoolSpec):
    """Average pooling over the last two axes."""

    op: Literal["avg_pool2d"]


class MaxPool2dSpec(_PoolSpec):
    """Max pooling over the last two axes."""

    op: Literal["max_pool2d"]


class PowerSpec(OpSpec):
    """``x ** p`` elementwise."""

    op: Literal["power"]
    p: FiniteFloat


class _AxisSpec(OpSpec):
    axis: Annotated[int, Field(ge=-32, le=31)] = -1


class SoftmaxSpec(_AxisSpec):
    """Softmax along an axis."""

    op: Literal["softmax"]


class LogSoftmaxSpec(_AxisSpec):
    """Log-softmax along an axis."""

    op: Literal["log_softmax"]


class MseSpec(OpSpec):
    """Mean squared error against a target of x's shape (a scalar)."""

    op: Literal["mse"]
    target: Tensor


_WRITTEN: list[type[OpSpec]] = [
    Xcorr2dSpec, LinearSpec, ReshapeSpec, TransposeSpec, ScaleSpec, AddSpec, MultiplySpec,
    SumSpec, MeanSpec, LogsumexpSpec, AvgPool2dSpec, MaxPool2dSpec, PowerSpec, SoftmaxSpec,
    LogSoftmaxSpec, MseSpec,
]  # fmt: skip


def _tag(spec: type[OpSpec]) -> str:
    tag: str = spec.model_fields["op"].annotation.__args__[0]  # type: ignore[union-attr]
    return tag


def _generated_specs() -> list[type[OpSpec]]:
    """Models for the registered operations without parameters: only their tag."""
    written = {_tag(spec) for spec in _WRITTEN}
    specs = []
    for name, cls in op_classes().items():
        if name in written or cls.params:
            continue
        title = "".join(part.title() for part in name.split("_"))
        specs.append(
            create_model(
                f"{title}Spec",
                __base__=OpSpec,
                __doc__=(cls.__doc__ or name).strip().splitlines()[0],
                op=(Literal[name], ...),  # type: ignore[arg-type]
            )
        )
    return specs


OP_SPECS: tuple[type[OpSpec], ...] = (*_WRITTEN, *_generated_specs())

if TYPE_CHECKING:
    OperationSpec = OpSpec
else:
    OperationSpec = Annotated[Union[OP_SPECS], Field(discriminator="op")]  # noqa: UP007

Function = Annotated[
    list[OperationSpec],
    Field(
        min_length=1,
        max_length=64,
        description="Operations applied first to last: [op_1, ..., op_n] is "
        "h = op_n ∘ ... ∘ op_1. GET /v1/ops lists them.",
    ),
]


def spec_tags() -> set[str]:
    """Return the ``op`` tags of every specification model."""
    return {_tag(spec) for spec in OP_SPECS}
