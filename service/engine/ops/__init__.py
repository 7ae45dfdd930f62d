"""The built-in operations; importing this package registers each of them exactly once.

One module per family: :mod:`.elementwise`, :mod:`.affine` (linear, scale, add, multiply),
:mod:`.rearrange` (reshape, transpose), :mod:`.reduce` (sum, mean, logsumexp, squared_norm, mse),
:mod:`.pool`, :mod:`.softmax`, :mod:`.xcorr` (xcorr2d). The registry itself lives in
:mod:`service.engine.op`.
"""

from ..op import ElementwiseOp, LinearOp, Op, Sparsity, get_op, op_classes, op_names, register
from . import affine, elementwise, pool, rearrange, reduce, softmax, xcorr

__all__ = [
    "ElementwiseOp",
    "LinearOp",
    "Op",
    "Sparsity",
    "affine",
    "elementwise",
    "get_op",
    "op_classes",
    "op_names",
    "pool",
    "rearrange",
    "reduce",
    "register",
    "softmax",
    "xcorr",
]
