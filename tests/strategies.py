"""Hypothesis strategies shared by the engine tests.

``op_chains`` builds valid chains by construction: Hypothesis draws the structure (input shape,
which operation comes next, its axes, window, shape...), and a seeded NumPy generator draws the
numbers (input, weights, constants). Numbers drawn that way are generic, so an input never sits
exactly on a kink (relu, abs) or a tie (max_pool2d) where central differences cannot agree with
the documented one-sided choice; Hypothesis still shrinks the structure.

Operations with a restricted domain are emitted behind a guard that maps into the domain
(``sigmoid`` before ``log``/``sqrt``/fractional ``power``, ``tanh`` before ``exp``), so every
drawn chain is defined and smooth at the drawn point.
"""

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from hypothesis import strategies as st

from service.engine.op import Op, get_op

Shape = tuple[int, ...]
Draw = Callable[[st.SearchStrategy], object]


def _size(shape: Shape) -> int:
    return math.prod(shape)


def _axes_subset(draw: Draw, rank: int) -> tuple[int, ...] | None:
    if rank == 0 or draw(st.booleans()):
        return None
    chosen = draw(st.lists(st.integers(0, rank - 1), unique=True, max_size=rank))
    # Negative spellings exercise the normalization.
    return tuple(a - rank if draw(st.booleans()) else a for a in chosen)


def _broadcastable(draw: Draw, shape: Shape) -> Shape:
    # Drop some leading axes, set some of the rest to 1: broadcasts to `shape` unchanged.
    keep = draw(st.integers(0, len(shape)))
    tail = shape[len(shape) - keep :]
    return tuple(1 if draw(st.booleans()) else d for d in tail)


@dataclass(frozen=True)
class _Builder:
    name: str
    length: int  # operations it emits
    applies: Callable[[Shape], bool]
    build: Callable[[Draw, np.random.Generator, Shape], list[Op]]


def _elementwise(name: str) -> _Builder:
    return _Builder(name, 1, lambda s: True, lambda d, r, s: [get_op(name)()])


def _guarded(guard: str, name: str, **params: object) -> _Builder:
    return _Builder(
        name, 2, lambda s: True, lambda d, r, s: [get_op(guard)(), get_op(name)(**params)]
    )


def _linear(draw: Draw, rng: np.random.Generator, shape: Shape) -> list[Op]:
    n = _size(shape)
    m = draw(st.integers(1, 6))
    out = draw(st.sampled_from([(m,), (1, m), (m, 1)]))
    bias = rng.normal(size=m) if draw(st.booleans()) else None
    # 1/sqrt(n) keeps the values of long chains in a moderate range.
    weight = rng.normal(size=(m, n)) / math.sqrt(n)
    order = draw(st.sampled_from(["F", "C"]))
    return [get_op("linear")(weight=weight, bias=bias, output_shape=out, order=order)]


def _reshape(draw: Draw, rng: np.random.Generator, shape: Shape) -> list[Op]:
    n = _size(shape)
    divisors = [d for d in range(1, n + 1) if n % d == 0]
    d = draw(st.sampled_from(divisors))
    target = draw(st.sampled_from([(n,), (d, n // d), (n // d, 1, d), (d, -1)]))
    return [get_op("reshape")(shape=target, order=draw(st.sampled_from(["F", "C"])))]


def _transpose(draw: Draw, rng: np.random.Generator, shape: Shape) -> list[Op]:
    if draw(st.booleans()):
        return [get_op("transpose")()]
    return [get_op("transpose")(axes=tuple(draw(st.permutations(range(len(shape))))))]


def _reduction(name: str) -> _Builder:
    return _Builder(
        name, 1, lambda s: True, lambda d, r, s: [get_op(name)(axes=_axes_subset(d, len(s)))]
    )


def _along_axis(name: str) -> _Builder:
    def build(draw: Draw, rng: np.random.Generator, shape: Shape) -> list[Op]:
        return [get_op(name)(axis=draw(st.integers(-len(shape), len(shape) - 1)))]

    return _Builder(name, 1, lambda s: len(s) >= 1, build)


def _pool(name: str) -> _Builder:
    def build(draw: Draw, rng: np.random.Generator, shape: Shape) -> list[Op]:
        size = (draw(st.integers(1, shape[-2])), draw(st.integers(1, shape[-1])))
        stride = draw(st.one_of(st.none(), st.tuples(st.integers(1, 2), st.integers(1, 2))))
        return [get_op(name)(size=size, stride=stride)]

    return _Builder(name, 1, lambda s: len(s) >= 2, build)


def _xcorr(draw: Draw, rng: np.random.Generator, shape: Shape) -> list[Op]:
    channels, height, width = shape[-3:]
    kh, kw = draw(st.integers(1, height)), draw(st.integers(1, width))
    kernel_shape = (channels, kh, kw)
    if draw(st.booleans()):
        kernel_shape = (draw(st.integers(1, 3)), *kernel_shape)
    padding = draw(st.sampled_from(["valid", "same", "full", ((1, 0), (0, 1))]))
    # A dilated kernel still fits when the padding grows with it.
    dilation = draw(st.sampled_from([(1, 1), (2, 1)])) if padding in ("same", "full") else (1, 1)
    kernel = rng.normal(size=kernel_shape) / math.sqrt(channels * kh * kw)
    stride = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    return [get_op("xcorr2d")(kernel=kernel, stride=stride, padding=padding, dilation=dilation)]


def _constant(name: str) -> _Builder:
    def build(draw: Draw, rng: np.random.Generator, shape: Shape) -> list[Op]:
        return [get_op(name)(constant=rng.uniform(-1.5, 1.5, size=_broadcastable(draw, shape)))]

    return _Builder(name, 1, lambda s: True, build)


# Hypothesis leans towards the first entries of a sampled list (they are "simpler" when it
# shrinks), so the operations with the most index arithmetic come first.
BUILDERS: tuple[_Builder, ...] = (
    _pool("max_pool2d"),
    _pool("avg_pool2d"),
    _Builder("xcorr2d", 1, lambda s: len(s) in (3, 4), _xcorr),
    _Builder("linear", 1, lambda s: True, _linear),
    _along_axis("softmax"),
    _along_axis("log_softmax"),
    _Builder("transpose", 1, lambda s: True, _transpose),
    _Builder("reshape", 1, lambda s: True, _reshape),
    _reduction("logsumexp"),
    _reduction("sum"),
    _reduction("mean"),
    _constant("multiply"),
    _constant("add"),
    *(_elementwise(n) for n in ("relu", "abs")),
    *(_elementwise(n) for n in ("tanh", "sin", "softplus", "sigmoid", "cos", "square")),
    _guarded("tanh", "exp"),
    _guarded("sigmoid", "log"),
    _guarded("sigmoid", "sqrt"),
    _guarded("sigmoid", "power", p=1.5),
    _guarded("sigmoid", "power", p=-0.5),
    _Builder(
        "power", 1, lambda s: True, lambda d, r, s: [get_op("power")(p=d(st.sampled_from([2, 3])))]
    ),
    _Builder(
        "scale", 1, lambda s: True, lambda d, r, s: [get_op("scale")(factor=r.uniform(-2, 2))]
    ),
    _elementwise("squared_norm"),
    _Builder(
        "mse",
        1,
        lambda s: True,
        lambda d, r, s: [get_op("mse")(target=r.uniform(-1, 1, size=s))],
    ),
)


class ChainCase:
    """A drawn chain: operations, the input shape and a point inside every domain."""

    __slots__ = ("in_shape", "ops", "x")

    def __init__(self, ops: tuple[Op, ...], in_shape: Shape, x: np.ndarray) -> None:
        self.ops = ops
        self.in_shape = in_shape
        self.x = x

    def __repr__(self) -> str:
        # What Hypothesis prints for a falsifying example (a plain class: its dataclass printer
        # would not show the operations).
        ops = ", ".join(repr(op) for op in self.ops)
        return f"ChainCase(ops=[{ops}], in_shape={self.in_shape})"


@st.composite
def op_chains(draw: Draw, min_ops: int = 1, max_ops: int = 5, max_dim: int = 4) -> ChainCase:
    """Draw a valid chain of ``min_ops..max_ops`` operations and an input point."""
    # Ranks 2-3 and dimensions 2-4 first: a scalar or a length-1 axis hides index bugs.
    rank = draw(st.sampled_from([3, 2, 1, 0]))
    dims = [d for d in (3, 2, 4, 1) if d <= max_dim]
    in_shape = tuple(draw(st.sampled_from(dims)) for _ in range(rank))
    count = draw(st.sampled_from([c for c in (3, 5, 2, 4, 1) if min_ops <= c <= max_ops]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    ops: list[Op] = []
    shape = in_shape
    while len(ops) < count:
        room = count - len(ops)
        fitting = [b for b in BUILDERS if b.length <= room and b.applies(shape)]
        builder = draw(st.sampled_from(fitting))
        for op in builder.build(draw, rng, shape):
            ops.append(op)
            shape = op.out_shape(shape)
    x = rng.uniform(-1.5, 1.5, size=in_shape)
    return ChainCase(tuple(ops), in_shape, x)
