"""``POST /v1/estimate`` and ``GET /v1/metadata``: what a request would cost, and the limits.

``client.estimate("jacobian", f, x=x, format="coo")`` builds exactly the request that
``client.jacobian(f, x=x, format="coo")`` would send and asks the service what it would cost
and whether it would be refused, without computing it. The estimated body is JSON, so its tensors
are written in base64 (or lists) whatever the client's encoding; the response ``encoding`` it
states is the client's, since the response size depends on it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from . import calls, runs, second_order
from .calls import Call
from .wire import Encoding, write_json

# The client methods whose requests can be estimated, by method name.
BUILDERS: dict[str, Callable[..., Call[Any]]] = {
    "cross_correlation": calls.cross_correlation,
    "evaluate": calls.evaluate,
    "jacobian": calls.jacobian,
    "jvp": calls.jvp,
    "vjp": calls.vjp,
    "chain_rule": calls.chain_rule,
    "gradient_descent": runs.gradient_descent,
    "minimize": runs.minimize,
    "hvp": second_order.hvp,
    "hessian": second_order.hessian,
}


def metadata() -> Call[dict[str, Any]]:
    """``GET /v1/metadata``: version, limits in force, encodings, operations."""
    return Call("GET", "/v1/metadata", None, lambda answer: dict(answer), encoded=False)


def estimate(encoding: Encoding, method: str, /, *args: Any, **kwargs: Any) -> Call[dict[str, Any]]:
    """``POST /v1/estimate`` for the request ``client.<method>(*args, **kwargs)`` would send.

    Parameters
    ----------
    encoding : {"binary", "base64", "list"}
        The client's encoding (the estimated response's).
    method : str
        A client method name, e.g. ``"jacobian"`` (see ``BUILDERS``).
    *args, **kwargs
        That method's arguments.

    Returns
    -------
    Call
        Answering the service's estimate as a dict: ``refused`` (and the ``problem`` it would
        get), ``work``, ``flops``, ``bytes_touched``, ``peak_bytes``, ``response_bytes``,
        ``facts`` and ``limits``.
    """
    if method not in BUILDERS:
        raise ValueError(f"cannot estimate {method!r}; one of {sorted(BUILDERS)}")
    call = BUILDERS[method](*args, **kwargs)
    assert call.body is not None  # every builder in BUILDERS posts a body
    inner = {**call.body, "encoding": encoding}
    body = {
        "path": call.path,
        "body": write_json(inner, "list" if encoding == "list" else "base64"),
    }
    return Call("POST", "/v1/estimate", body, lambda answer: dict(answer), encoded=False)
