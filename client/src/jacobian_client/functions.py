"""Functions and inputs as the service reads them (CONVENTIONS sections 5 and 5.1).

A function is given as

* an **expression** string, e.g. ``"sum(tanh(x))"`` (a program; its names are inputs);
* an **op list**, applied first to last: each entry a name (``"tanh"``), a dict
  (``{"op": "scale", "factor": 2.0}``), a pair ``("scale", {"factor": 2.0})``, or
  ``op.scale(factor=2.0)``;
* a **graph** ``{"nodes": [...], "output": "z"}``.

Tensor parameters (``kernel``, ``constant``, ``target``, ``weight``, ``bias``, or any ndarray)
are sent as tensors in the client's encoding. Inputs are keyword arguments: ``x=...`` alone with
an op list is the classic ``x`` form; anything else is a program with ``inputs``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeAlias

import numpy as np

from .wire import as_tensor

OpLike: TypeAlias = str | Mapping[str, Any] | tuple[str, Mapping[str, Any]]
Function: TypeAlias = str | Sequence[OpLike] | Mapping[str, Any]
Wrt: TypeAlias = str | Sequence[str] | None

# Parameters that hold tensors in the service's op registry (GET /v1/ops).
TENSOR_PARAMS = frozenset({"kernel", "constant", "target", "weight", "bias"})


class _OpFactory:
    """``op.scale(factor=2.0)`` is ``{"op": "scale", "factor": 2.0}``; any op name works."""

    def __getattr__(self, name: str) -> Callable[..., dict[str, Any]]:
        if name.startswith("_"):
            raise AttributeError(name)

        def build(**params: Any) -> dict[str, Any]:
            return {"op": name, **params}

        build.__name__ = name
        return build

    def __call__(self, name: str, **params: Any) -> dict[str, Any]:
        """Return the operation ``name`` with ``params``: ``op("scale", factor=2.0)``."""
        return {"op": name, **params}


op = _OpFactory()


def _param(key: str, value: Any) -> Any:
    # A mapping is already a wire tensor ({"data": ...}); arrays and tensor parameters are sent
    # in the client's encoding; everything else (stride, axes, factor, ...) is plain JSON.
    if isinstance(value, Mapping):
        return value
    if key in TENSOR_PARAMS or isinstance(value, np.ndarray):
        return as_tensor(value)
    return value


def _params(entry: Mapping[str, Any]) -> dict[str, Any]:
    return {key: _param(key, value) for key, value in entry.items()}


def _op(entry: OpLike) -> dict[str, Any]:
    if isinstance(entry, str):
        return {"op": entry}
    if isinstance(entry, tuple):
        name, params = entry
        return _params({"op": name, **params})
    return _params(entry)


def function_wire(function: Function) -> Any:
    """Return the JSON form of a function, tensor parameters as wire markers.

    Parameters
    ----------
    function : str, sequence of ops, or mapping
        An expression, an op list, a graph (a mapping with ``nodes``) or one op (a mapping with
        ``op``).

    Returns
    -------
    str, list or dict
    """
    if isinstance(function, str):
        return function
    if isinstance(function, Mapping):
        if "nodes" in function:
            return {**function, "nodes": [_params(node) for node in function["nodes"]]}
        return [_op(function)]
    return [_op(entry) for entry in function]


def merge_inputs(
    x: Any, inputs: Mapping[str, Any] | None, named: Mapping[str, Any]
) -> dict[str, Any]:
    """Collect inputs given positionally (``x``), as a mapping and as keywords."""
    merged: dict[str, Any] = {} if x is None else {"x": x}
    for source in (inputs or {}, named):
        for name, value in source.items():
            if name in merged:
                raise TypeError(f"input {name!r} is given twice")
            merged[name] = value
    if not merged:
        raise TypeError("give the function's inputs, e.g. x=array or inputs={'x': array}")
    return merged


@dataclass(frozen=True)
class Program:
    """A function with its inputs, in the form the service reads.

    Attributes
    ----------
    fields : dict
        ``{"x": ..., "function": ...}`` (op-list form) or ``{"inputs": ..., "function": ...,
        <wrt_key>: [...]}`` (program form).
    names : list of str
        The inputs results are reported for (``wrt``).
    single : bool
        Whether the caller asked for one result (``wrt`` a name, or one input and no ``wrt``)
        rather than a dict name → result (``wrt`` a sequence, like JAX's tuple ``argnums``).
    classic : bool
        True for the op-list ``x`` form (results are not keyed by name on the wire).
    """

    fields: dict[str, Any]
    names: list[str]
    single: bool
    classic: bool

    def keyed(self, result: Any) -> Any:
        """Return one result of the op-list form as asked: itself, or ``{"x": result}``."""
        return result if self.single else {self.names[0]: result}

    def pick(self, per_name: Mapping[str, Any]) -> Any:
        """Return per-input results of the program form as asked: one of them, or the dict."""
        if self.single:
            return per_name[self.names[0]]
        return {name: per_name[name] for name in self.names}


def program(
    function: Function,
    inputs: Mapping[str, Any],
    wrt: Wrt,
    *,
    wrt_key: str = "wrt",
    x_key: str = "x",
) -> Program:
    """Build the request fields for ``function`` at ``inputs``, differentiated along ``wrt``.

    Parameters
    ----------
    function : Function
    inputs : mapping name → array_like
    wrt : str, sequence of str, or None
        None means every input (the service's default).
    wrt_key : str
        ``"wrt"``, or ``"variables"`` for gradient descent.
    x_key : str
        The field of the op-list form's input (``"x"``, or ``"x0"`` for gradient descent).

    Returns
    -------
    Program
    """
    wire_function = function_wire(function)
    names = [wrt] if isinstance(wrt, str) else list(inputs) if wrt is None else list(wrt)
    single = isinstance(wrt, str) or (wrt is None and len(inputs) == 1)
    unknown = [name for name in names if name not in inputs]
    if unknown:
        raise TypeError(f"wrt names {unknown} are not among the inputs {list(inputs)}")
    if isinstance(wire_function, list) and list(inputs) == ["x"]:
        return Program(
            {x_key: as_tensor(inputs["x"]), "function": wire_function}, names, single, classic=True
        )
    fields: dict[str, Any] = {
        "inputs": {name: as_tensor(value) for name, value in inputs.items()},
        "function": wire_function,
    }
    if wrt is not None:
        fields[wrt_key] = names
    return Program(fields, names, single, classic=False)
