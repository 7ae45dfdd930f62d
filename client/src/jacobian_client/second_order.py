"""Request builders of ``/v1/hvp`` and ``/v1/hessian``: second derivatives of a scalar function."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

import numpy.typing as npt

from .calls import Call, Format
from .functions import Function, merge_inputs, program
from .results import FloatArray, Jacobian, Order, decode_jacobian
from .wire import as_tensor, decode_tensor


class HvpResult(NamedTuple):
    """``/v1/hvp``: the value and H v (one array, or a dict name → array for a dict of v)."""

    value: FloatArray
    hvp: FloatArray | dict[str, FloatArray]


def hvp(
    function: Function,
    vector: npt.ArrayLike | Mapping[str, npt.ArrayLike],
    x: npt.ArrayLike | None = None,
    /,
    *,
    inputs: Mapping[str, npt.ArrayLike] | None = None,
    order: Order = "F",
    **named: npt.ArrayLike,
) -> Call[HvpResult]:
    """``POST /v1/hvp``: the exact Hessian-vector product H v, without forming H.

    Parameters
    ----------
    function : str, op list or graph
        A scalar function.
    vector : array_like (the input's shape) or mapping name → array_like
        v; a mapping gives one per input and the answer is keyed the same way.
    x : array_like, optional
        The point (same as ``x=...``).
    inputs : mapping, optional
    order : {"F", "C"}
    **named : array_like

    Returns
    -------
    HvpResult
        ``(value, hvp)``.
    """
    point = merge_inputs(x, inputs, named)
    keyed = isinstance(vector, Mapping)
    vectors = dict(vector) if isinstance(vector, Mapping) else {next(iter(point)): vector}
    prog = program(function, point, list(vectors))
    fields = dict(prog.fields)
    fields.pop("wrt", None)  # the keys of `vectors` say which inputs
    body = {**fields, "vectors": {name: as_tensor(v) for name, v in vectors.items()},
            "order": order}  # fmt: skip

    def decode(answer: Any) -> HvpResult:
        products = {name: decode_tensor(t) for name, t in answer["hvp"].items()}
        return HvpResult(
            decode_tensor(answer["value"]), products if keyed else next(iter(products.values()))
        )

    return Call("POST", "/v1/hvp", body, decode)


def hessian(
    function: Function,
    x: npt.ArrayLike | None = None,
    /,
    *,
    inputs: Mapping[str, npt.ArrayLike] | None = None,
    format: Format = "auto",
    order: Order = "F",
    **named: npt.ArrayLike,
) -> Call[Jacobian]:
    """``POST /v1/hessian``: the Hessian of a scalar function, from its structural sparsity.

    Parameters
    ----------
    function : str, op list or graph
        A scalar function.
    x : array_like, optional
        The point (same as ``x=...``).
    inputs : mapping, optional
    format : {"auto", "coo", "dense"}
    order : {"F", "C"}
    **named : array_like

    Returns
    -------
    Jacobian
        The Jacobian of the gradient (``in_shape`` = ``out_shape`` = x's shape, symmetric), with
        the function's value in ``meta.value``.
    """
    prog = program(function, merge_inputs(x, inputs, named), None)
    body = {**prog.fields, "format": format, "order": order}

    def decode(answer: Any) -> Jacobian:
        return decode_jacobian(answer["hessian"], value=decode_tensor(answer["value"]))

    return Call("POST", "/v1/hessian", body, decode)
