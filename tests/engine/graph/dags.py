"""A Hypothesis strategy for random programs: DAGs of 1-8 nodes over 1-3 inputs, with reuse.

Every value has one shape ``S`` or a broadcastable piece of it, so any value can be an argument of
any node; a node takes its arguments among all earlier values (inputs and nodes), so a value often
feeds several nodes (reuse) and the graph branches and joins. The same draw is written both as an
expression and as the graph form that the expression compiles to.
"""

from dataclasses import dataclass

import numpy as np
from hypothesis import strategies as st

# (name, arity, expression template). Smooth operations only, and the domains are safe
# everywhere (no log/sqrt/divide): central differences then agree at any drawn point.
UNARY = [("sin", "sin({0})"), ("cos", "cos({0})"), ("tanh", "tanh({0})"),
         ("square", "square({0})"), ("softplus", "softplus({0})"),
         ("scale", "({0} * 0.5)")]  # fmt: skip
BINARY = [("add", "({0} + {1})"), ("subtract", "({0} - {1})"), ("multiply", "({0} * {1})")]
REDUCE = ["sum", "mean"]


@dataclass(frozen=True)
class DagCase:
    """Inputs (name -> array), the expression, and how many nodes it has."""

    inputs: dict[str, np.ndarray]
    expression: str
    nodes: int

    def __repr__(self) -> str:
        shapes = {n: list(v.shape) for n, v in self.inputs.items()}
        return f"DagCase({self.expression!r}, inputs={shapes})"


@st.composite
def dags(draw: st.DrawFn, max_nodes: int = 8) -> DagCase:
    """Draw a random program and a point."""
    shape = draw(st.sampled_from([(2, 3), (3,), (2, 2, 2), ()]))
    count = draw(st.integers(1, 3))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    names = ["x", "k", "y"][:count]
    inputs = {}
    for name in names:
        # Some inputs are broadcast pieces of S: their Jacobians sum over broadcast axes.
        piece = shape[draw(st.integers(0, len(shape))) :] if name != "x" else shape
        inputs[name] = rng.uniform(-1.2, 1.2, size=piece)
    exprs = list(names)
    nodes = draw(st.integers(1, max_nodes))
    for _ in range(nodes - 1):
        kind = draw(st.sampled_from(["unary", "binary", "binary"]))
        if kind == "unary":
            _, template = draw(st.sampled_from(UNARY))
            exprs.append(template.format(draw(st.sampled_from(exprs))))
        else:
            _, template = draw(st.sampled_from(BINARY))
            a, b = draw(st.sampled_from(exprs)), draw(st.sampled_from(exprs))
            exprs.append(template.format(a, b))
    # The last node joins the newest value with an earlier one, then maybe reduces.
    last = exprs[-1]
    if draw(st.booleans()):
        last = f"{draw(st.sampled_from(REDUCE))}({last})"
    used = [n for n in names if n in last]
    if not used:
        last = f"({last} + {names[0]})"
    return DagCase(inputs, last, nodes)
