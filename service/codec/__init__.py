"""JSON <-> NumPy: the wire format of CONVENTIONS section 3. Knows pydantic, never FastAPI."""

from .errors import CodecError
from .tensors import (
    DecodeLimits,
    Encoding,
    NestedNumbers,
    Tensor,
    TensorOut,
    decode_tensor,
    encode_tensor,
)

__all__ = [
    "CodecError",
    "DecodeLimits",
    "Encoding",
    "NestedNumbers",
    "Tensor",
    "TensorOut",
    "decode_tensor",
    "encode_tensor",
]
