"""One request builder per endpoint, shared by :class:`Client` and :class:`AsyncClient`.

A builder turns NumPy-level arguments into a :class:`Call`: the method, the path, the body (with
tensors as :class:`~jacobian_client.wire.Wire` markers, encoded later in the client's encoding)
and the function that turns the decoded JSON answer into the result. Builders do no I/O, so the
synchronous and the asynchronous client run exactly the same requests.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, Literal, TypeVar

import numpy as np
import numpy.typing as npt

from .functions import Function, Program, Wrt, merge_inputs, program
from .results import (
    CrossCorrelation,
    FloatArray,
    Jacobian,
    JvpResult,
    Layout,
    Order,
    VjpResult,
    decode_jacobian,
)
from .wire import Wire, as_tensor, decode_tensor, real_array

T = TypeVar("T")
Format = Literal["auto", "coo", "dense"]
Strategy = Literal["auto", "chain", "reverse", "forward"]


@dataclass(frozen=True)
class Call(Generic[T]):
    """One request and how to read its answer.

    Attributes
    ----------
    method, path : str
    body : dict or None
        JSON values and tensor markers; None for GET.
    decode : callable
        Decoded answer (binary segments resolved) → result.
    encoded : bool
        Whether the body takes the response ``encoding`` field.
    """

    method: str
    path: str
    body: dict[str, Any] | None
    decode: Callable[[Any], T]
    encoded: bool = True


def _get(path: str) -> Call[dict[str, Any]]:
    return Call("GET", path, None, lambda answer: dict(answer), encoded=False)


def health() -> Call[dict[str, Any]]:
    """``GET /healthz``: liveness, ``{"status": "ok"}``."""
    return _get("/healthz")


def ready() -> Call[dict[str, Any]]:
    """``GET /readyz``: readiness, ``{"status": "ready"}``."""
    return _get("/readyz")


def ops() -> Call[list[dict[str, Any]]]:
    """``GET /v1/ops``: every operation with its parameters."""
    return Call("GET", "/v1/ops", None, lambda answer: list(answer["operations"]), encoded=False)


def vec(x: npt.ArrayLike, *, order: Order = "F") -> Call[FloatArray]:
    """``POST /v1/vec``: the tensor ``x`` as a vector in ``order``.

    Parameters
    ----------
    x : array_like, shape (d_1, ..., d_n)
    order : {"F", "C"}
        ``"F"``: the first index varies fastest (the seed notes' ``flat``).

    Returns
    -------
    ndarray, shape (d_1 * ... * d_n,)
    """
    body = {"x": as_tensor(x), "order": order}
    return Call("POST", "/v1/vec", body, lambda answer: decode_tensor(answer["vector"]))


def ten(vector: npt.ArrayLike, shape: Sequence[int], *, order: Order = "F") -> Call[FloatArray]:
    """``POST /v1/ten``: the inverse of ``vec``.

    Parameters
    ----------
    vector : array_like, shape (n,)
    shape : sequence of int
        Product ``n``.
    order : {"F", "C"}

    Returns
    -------
    ndarray, shape ``shape``
    """
    body = {"vector": as_tensor(vector), "shape": [int(n) for n in shape], "order": order}
    return Call("POST", "/v1/ten", body, lambda answer: decode_tensor(answer["tensor"]))


def flat(
    index: npt.ArrayLike, dims: Sequence[int], *, order: Order = "F"
) -> Call[int | npt.NDArray[np.int64]]:
    """``POST /v1/flat``: multi-index → flat index.

    Parameters
    ----------
    index : array_like of int, shape (ndim,) or (N, ndim)
    dims : sequence of int, length ndim
    order : {"F", "C"}

    Returns
    -------
    int, or ndarray of int64 of shape (N,)
    """
    body = {"index": np.asarray(index).tolist(), "dims": [int(n) for n in dims], "order": order}

    def decode(answer: Any) -> int | npt.NDArray[np.int64]:
        value = answer["flat"]
        return int(value) if isinstance(value, int) else np.asarray(value, dtype=np.int64)

    return Call("POST", "/v1/flat", body, decode, encoded=False)


def unflat(
    flat_index: npt.ArrayLike, dims: Sequence[int], *, order: Order = "F"
) -> Call[tuple[int, ...] | npt.NDArray[np.int64]]:
    """``POST /v1/unflat``: flat index → multi-index (the inverse of ``flat``).

    Parameters
    ----------
    flat_index : int or array_like of int, shape (N,)
    dims : sequence of int
    order : {"F", "C"}

    Returns
    -------
    tuple of int, or ndarray of int64 of shape (N, ndim)
    """
    body = {"flat": np.asarray(flat_index).tolist(), "dims": [int(n) for n in dims], "order": order}

    def decode(answer: Any) -> tuple[int, ...] | npt.NDArray[np.int64]:
        index = np.asarray(answer["index"], dtype=np.int64)
        return tuple(int(i) for i in index) if index.ndim == 1 else index

    return Call("POST", "/v1/unflat", body, decode, encoded=False)


def cross_correlation(
    x: npt.ArrayLike,
    kernel: npt.ArrayLike,
    *,
    stride: Sequence[int] = (1, 1),
    padding: str | Sequence[Sequence[int]] = "valid",
    dilation: Sequence[int] = (1, 1),
    jacobian: Literal["none", "coo", "dense"] = "none",
    wrt: str | Sequence[str] = ("x",),
    layout: Layout = "in_out",
    order: Order = "F",
    method: Literal["direct", "jacobian"] = "direct",
) -> Call[CrossCorrelation]:
    """``POST /v1/cross-correlation``: the seed notes' x * k and its Jacobians.

    Parameters
    ----------
    x : array_like, shape (C, H, W) or (N, C, H, W)
    kernel : array_like, shape (C, H', W') or (K, C, H', W')
    stride, padding, dilation
        As the service documents them (``padding``: ``"valid"``, ``"same"``, ``"full"`` or
        ``[[top, bottom], [left, right]]``).
    jacobian : {"none", "coo", "dense"}
    wrt : str or sequence of {"x", "kernel"}
        Which Jacobians; sent only with a ``jacobian``.
    layout : {"in_out", "out_in"}
    order : {"F", "C"}
    method : {"direct", "jacobian"}

    Returns
    -------
    CrossCorrelation
        ``output`` and ``jacobian_x`` / ``jacobian_kernel`` (None unless asked for).
    """
    body = {
        "x": as_tensor(x),
        "kernel": as_tensor(kernel),
        "stride": [int(s) for s in stride],
        "padding": padding if isinstance(padding, str) else [list(p) for p in padding],
        "dilation": [int(d) for d in dilation],
        "jacobian": jacobian,
        "layout": layout,
        "order": order,
        "method": method,
    }

    if jacobian != "none":  # the service refuses wrt without a Jacobian to choose (422)
        body["wrt"] = [wrt] if isinstance(wrt, str) else list(wrt)

    def decode(answer: Any) -> CrossCorrelation:
        jacobians = {
            name: None if answer.get(name) is None else decode_jacobian(answer[name])
            for name in ("jacobian_x", "jacobian_kernel")
        }
        return CrossCorrelation(decode_tensor(answer["output"]), **jacobians)

    return Call("POST", "/v1/cross-correlation", body, decode)


def evaluate(
    function: Function,
    x: npt.ArrayLike | None = None,
    /,
    *,
    inputs: Mapping[str, npt.ArrayLike] | None = None,
    order: Order = "F",
    **named: npt.ArrayLike,
) -> Call[FloatArray]:
    """``POST /v1/evaluate``: the function's value.

    Parameters
    ----------
    function : str, op list or graph
        See :mod:`jacobian_client.functions`.
    x : array_like, optional
        The input ``x`` (same as ``x=...``).
    inputs : mapping name → array_like, optional
        For input names that clash with keyword options.
    order : {"F", "C"}
    **named : array_like
        Inputs by name, e.g. ``x=img, k=kernel``.

    Returns
    -------
    ndarray
    """
    prog = program(function, merge_inputs(x, inputs, named), None)
    body = {**prog.fields, "order": order}
    return Call("POST", "/v1/evaluate", body, lambda answer: decode_tensor(answer["value"]))


def jacobian(
    function: Function,
    x: npt.ArrayLike | None = None,
    /,
    *,
    wrt: Wrt = None,
    inputs: Mapping[str, npt.ArrayLike] | None = None,
    format: Format = "auto",
    strategy: Strategy = "auto",
    layout: Layout = "in_out",
    order: Order = "F",
    check: bool = False,
    **named: npt.ArrayLike,
) -> Call[Jacobian | dict[str, Jacobian]]:
    """``POST /v1/jacobian``: the Jacobian(s) of the function at the inputs.

    Parameters
    ----------
    function : str, op list or graph
    x : array_like, optional
        The input ``x`` (same as ``x=...``).
    wrt : str, sequence of str, or None
        Like JAX's ``argnums``: a name gives that Jacobian, a sequence a dict name → Jacobian;
        None gives every input's (one Jacobian when there is one input).
    inputs : mapping name → array_like, optional
    format : {"auto", "coo", "dense"}
    strategy : {"auto", "chain", "reverse", "forward"}
    layout : {"in_out", "out_in"}
        ``"in_out"``: (input size, output size), the seed notes' orientation.
    order : {"F", "C"}
    check : bool
        Ask for a central-difference check (report in ``J.meta.check``).
    **named : array_like
        Inputs by name.

    Returns
    -------
    Jacobian or dict of str to Jacobian
        ``scipy.sparse.coo_array`` subclass (or :class:`CooJacobian` without SciPy) for COO,
        :class:`DenseJacobian` for dense; each keeps ``in_shape``, ``out_shape``, ``layout``,
        ``order``, and the value, strategy and check report in ``meta``.
    """
    prog = program(function, merge_inputs(x, inputs, named), wrt)
    body = {
        **prog.fields,
        "format": format,
        "strategy": strategy,
        "layout": layout,
        "order": order,
        "check": check,
    }

    def decode(answer: Any) -> Jacobian | dict[str, Jacobian]:
        extra = {
            "value": decode_tensor(answer["value"]),
            "strategy": answer.get("strategy"),
            "check": answer.get("check"),
        }
        if prog.classic:
            return prog.keyed(decode_jacobian(answer["jacobian"], **extra))
        per_name = {n: decode_jacobian(j, **extra) for n, j in answer["jacobians"].items()}
        return prog.pick(per_name)

    return Call("POST", "/v1/jacobian", body, decode)


def _directional(
    prog: Program, vectors: npt.ArrayLike | Mapping[str, npt.ArrayLike], field: str
) -> dict[str, Any]:
    # One vector for one input (the op-list form's field, or keyed by the wrt name), else a dict.
    if isinstance(vectors, Mapping):
        if prog.classic:
            (only,) = vectors.values()
            return {field: as_tensor(only)}
        return {f"{field}s": {name: as_tensor(v) for name, v in vectors.items()}}
    if prog.classic:
        return {field: as_tensor(vectors)}
    if len(prog.names) != 1:
        raise TypeError(f"give one {field} per input in wrt {prog.names} as a dict")
    return {f"{field}s": {prog.names[0]: as_tensor(vectors)}}


def jvp(
    function: Function,
    tangent: npt.ArrayLike | Mapping[str, npt.ArrayLike],
    x: npt.ArrayLike | None = None,
    /,
    *,
    wrt: Wrt = None,
    inputs: Mapping[str, npt.ArrayLike] | None = None,
    order: Order = "F",
    check: bool = False,
    **named: npt.ArrayLike,
) -> Call[JvpResult]:
    """``POST /v1/jvp``: push a tangent forward, ten(Jᵀ vec(v)), without forming J.

    Parameters
    ----------
    function : str, op list or graph
    tangent : array_like (shape of the input) or mapping name → array_like
        One tangent per ``wrt`` input; a mapping names them (and sets ``wrt`` to its keys).
    x : array_like, optional
    wrt : str, sequence of str, or None
    inputs : mapping, optional
    order : {"F", "C"}
    check : bool
    **named : array_like

    Returns
    -------
    JvpResult
        ``(value, tangent, check)``; the output tangent sums the contributions of the inputs.
    """
    if isinstance(tangent, Mapping) and wrt is None:
        wrt = list(tangent)
    prog = program(function, merge_inputs(x, inputs, named), wrt)
    body = {**prog.fields, **_directional(prog, tangent, "tangent"), "order": order, "check": check}

    def decode(answer: Any) -> JvpResult:
        return JvpResult(
            decode_tensor(answer["value"]), decode_tensor(answer["jvp"]), answer.get("check")
        )

    return Call("POST", "/v1/jvp", body, decode)


def vjp(
    function: Function,
    cotangent: npt.ArrayLike,
    x: npt.ArrayLike | None = None,
    /,
    *,
    wrt: Wrt = None,
    inputs: Mapping[str, npt.ArrayLike] | None = None,
    order: Order = "F",
    check: bool = False,
    **named: npt.ArrayLike,
) -> Call[VjpResult]:
    """``POST /v1/vjp``: pull a cotangent back, ten(J vec(u)), without forming J.

    Parameters
    ----------
    function : str, op list or graph
    cotangent : array_like, shape of the function's value
    x : array_like, optional
    wrt : str, sequence of str, or None
        A name gives one cotangent, a sequence a dict name → cotangent.
    inputs : mapping, optional
    order : {"F", "C"}
    check : bool
    **named : array_like

    Returns
    -------
    VjpResult
        ``(value, cotangent, check)``.
    """
    prog = program(function, merge_inputs(x, inputs, named), wrt)
    body = {**prog.fields, "cotangent": as_tensor(cotangent), "order": order, "check": check}

    def decode(answer: Any) -> VjpResult:
        if prog.classic:
            pulled = prog.keyed(decode_tensor(answer["vjp"]))
        else:
            pulled = prog.pick({n: decode_tensor(t) for n, t in answer["cotangents"].items()})
        return VjpResult(decode_tensor(answer["value"]), pulled, answer.get("check"))

    return Call("POST", "/v1/vjp", body, decode)


def _jacobian_wire(matrix: Any) -> dict[str, Any]:
    if isinstance(matrix, Mapping):
        return dict(matrix)
    labels: dict[str, Any] = {}
    meta = getattr(matrix, "meta", None)
    if meta is not None:
        labels = {"in_shape": list(meta.in_shape), "out_shape": list(meta.out_shape)}
    if hasattr(matrix, "row") and hasattr(matrix, "col"):
        coo = matrix.tocoo() if hasattr(matrix, "tocoo") else matrix
        return {
            "format": "coo",
            "shape": [int(n) for n in coo.shape],
            "row": Wire(np.asarray(coo.row, dtype=np.int64), "index"),
            "col": Wire(np.asarray(coo.col, dtype=np.int64), "index"),
            "data": Wire(real_array(coo.data).astype(np.float64, copy=False), "values"),
            **labels,
        }
    if hasattr(matrix, "tocoo"):  # any other SciPy sparse format
        return _jacobian_wire(matrix.tocoo())
    return {"format": "dense", "data": as_tensor(np.asarray(matrix)), **labels}


def chain_rule(
    jacobians: Sequence[Any],
    *,
    format: Format = "auto",
    layout: Layout = "in_out",
    order: Order = "F",
) -> Call[Jacobian]:
    """``POST /v1/chain-rule``: J_h = J_g · J_f (in_out) for given factors.

    Parameters
    ----------
    jacobians : sequence of matrices
        2-D arrays, SciPy sparse matrices, Jacobians returned by this client, or wire dicts;
        in the order of the composition (innermost function first).
    format : {"auto", "coo", "dense"}
    layout : {"in_out", "out_in"}
    order : {"F", "C"}

    Returns
    -------
    Jacobian
    """
    body = {
        "jacobians": [_jacobian_wire(m) for m in jacobians],
        "format": format,
        "layout": layout,
        "order": order,
    }
    return Call("POST", "/v1/chain-rule", body, lambda a: decode_jacobian(a["jacobian"]))


__all__ = [
    "Call",
    "chain_rule",
    "cross_correlation",
    "evaluate",
    "flat",
    "health",
    "jacobian",
    "jvp",
    "ops",
    "ready",
    "ten",
    "unflat",
    "vec",
    "vjp",
]
