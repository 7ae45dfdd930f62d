"""Models of ``POST /v1/cross-correlation``."""

from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field, ValidationInfo, WithJsonSchema, field_validator

from ...codec import Tensor, TensorOut
from ...codec.sparse import JacobianOut
from ...engine.xcorr import Padding, XCorrGeometry
from .common import Layout, Order, ResponseEncoding, ResponseModel, StrictModel

Positive = Annotated[int, Field(ge=1, le=1_000_000)]
NonNegative = Annotated[int, Field(ge=0, le=1_000_000)]
Pair = Annotated[list[Positive], Field(min_length=2, max_length=2)]


def _both(value: Any) -> Any:
    # One int stands for both axes; bool is left alone so that strict validation refuses it.
    if isinstance(value, int) and not isinstance(value, bool):
        return [value, value]
    return value


# Strides, dilations and windows: (height, width), or one int for both, everywhere.
PairOrOne = Annotated[
    Pair,
    BeforeValidator(_both),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "array", "items": {"type": "integer", "minimum": 1, "maximum": 1_000_000},
                 "minItems": 2, "maxItems": 2},
                {"type": "integer", "minimum": 1, "maximum": 1_000_000},
            ]
        }
    ),
]  # fmt: skip
PadPair = Annotated[list[NonNegative], Field(min_length=2, max_length=2)]
ExplicitPadding = Annotated[
    list[PadPair],
    Field(min_length=2, max_length=2, description="[[top, bottom], [left, right]] zeros."),
]


class CrossCorrelationRequest(StrictModel):
    """2-D multi-channel cross-correlation of an image with a kernel, and its Jacobians.

    Shapes: x (C, H, W) with kernel (C, H', W') -> (H_out, W_out) exactly as the notes;
    kernel (K, C, H', W') -> (K, H_out, W_out); x (N, C, H, W) -> (N, ...) for a batch.
    H_out = floor((H + pads - d_H (H' - 1) - 1) / s_H) + 1; the notes' floor((H - H')/s_H + 1)
    at the defaults.
    """

    model_config = StrictModel.model_config | {
        "json_schema_extra": {
            "examples": [
                {
                    "x": {"data": [[[1, 2, 3], [4, 5, 6]]]},
                    "kernel": {"data": [[[1, 2]]]},
                    "jacobian": "dense",
                }
            ]
        }
    }

    x: Tensor = Field(description="Image (C, H, W) or batch (N, C, H, W).")
    kernel: Tensor = Field(description="Kernel (C, H', W') or bank (K, C, H', W').")
    stride: PairOrOne = Field([1, 1], description="(s_H, s_W), each >= 1, or one int for both.")
    padding: Literal["valid", "same", "full"] | ExplicitPadding = Field(
        "valid",
        description="'valid' (default, the notes), 'same' (TF/JAX SAME, also with stride > 1), "
        "'full', or explicit [[top, bottom], [left, right]] zeros.",
    )
    dilation: PairOrOne = Field([1, 1], description="(d_H, d_W), each >= 1, or one int for both.")
    jacobian: Literal["none", "coo", "dense"] = Field(
        "none", description="Also return Jacobians, as canonical COO or dense."
    )
    wrt: Annotated[list[Literal["x", "kernel"]], Field(min_length=1, max_length=2)] = Field(
        ["x"],
        description="Which Jacobians: of the output with respect to x, kernel, or both. Needs "
        "`jacobian` 'coo' or 'dense' (with 'none' it is a 422: nothing would be returned).",
    )
    order: Order = "F"
    layout: Layout = "in_out"
    encoding: ResponseEncoding = "list"
    method: Literal["direct", "jacobian"] = Field(
        "direct",
        description="'direct': the fast vectorized forward. 'jacobian': the notes' identity "
        "output = ten(J^T vec(x)) through the sparse Jacobian.",
    )

    def geometry(self) -> XCorrGeometry:
        """Return the engine's geometry for this request's stride, padding and dilation."""
        (s_h, s_w), (d_h, d_w) = self.stride, self.dilation
        padding: Padding = (
            self.padding
            if isinstance(self.padding, str)
            else (
                (self.padding[0][0], self.padding[0][1]),
                (self.padding[1][0], self.padding[1][1]),
            )
        )
        return XCorrGeometry(stride=(s_h, s_w), padding=padding, dilation=(d_h, d_w))

    @field_validator("wrt")
    @classmethod
    def _distinct_wrt(cls, wrt: list[str], info: ValidationInfo) -> list[str]:
        if info.data.get("jacobian") == "none":
            raise ValueError(
                "wrt chooses which Jacobians to return, but jacobian is 'none': add "
                '"jacobian": "coo" (or "dense"), or drop wrt'
            )
        if len(set(wrt)) != len(wrt):
            raise ValueError(f"wrt lists {wrt}: each of 'x' and 'kernel' at most once")
        return wrt


class CrossCorrelationResponse(ResponseModel):
    """The correlation and the Jacobians that were asked for."""

    output: TensorOut
    jacobian_x: JacobianOut | None = Field(
        None, description="d output / d x: rows index x, columns the output (in_out)."
    )
    jacobian_kernel: JacobianOut | None = Field(
        None, description="d output / d kernel: rows index the kernel, columns the output (in_out)."
    )
