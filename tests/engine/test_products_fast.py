"""Issue 12's cheaper JVP/VJP rules give the same floats as before, and the oracles still hold.

* ``tanh``, ``sigmoid`` and ``exp`` take their derivative from the stored output: bit for bit
  the formula in ``x`` (the old rule), and central differences at 1e-6; one vector is multiplied
  into that fresh derivative, leaving ``x``, the output and the vector alone.
* ``avg_pool2d`` with disjoint windows averages by tile adds and pulls back by one broadcast
  add: bit for bit ``np.mean`` over the window view (the old forward) and the naive loops of
  ``tests/oracles.py`` at 1e-12; the VJP is ``<J^T v, u> = <v, J u>`` against the forward.
* The JVP/VJP entry point evaluates every operation once: the value comes from the pass the
  product already made.
"""

from collections import Counter
from collections.abc import Iterator

import numpy as np
import pytest
from numpy.lib.stride_tricks import sliding_window_view

from service.engine import functions
from service.engine.chain import Chain
from service.engine.op import Op, get_op
from service.engine.ops.elementwise import _DerivativeOfOutput
from service.engine.ops.pool import AvgPool2d
from tests.oracles import pool2d_loops

LIMITS = functions.FunctionLimits(10**7, 10**7, 10**7)


def _points(rng: np.random.Generator) -> np.ndarray:
    x = np.concatenate(
        [rng.standard_normal(200) * 3, [0.0, -0.0, 1e-300, -1e-300, 20.0, -20.0, 700.0, -745.0]]
    )
    return x


@pytest.mark.parametrize("name", ["tanh", "sigmoid", "exp"])
def test_derivative_from_the_output_is_the_derivative_bit_for_bit(name: str) -> None:
    operation = get_op(name)()
    assert isinstance(operation, _DerivativeOfOutput)
    x = _points(np.random.default_rng(1))
    y = operation.forward(x)
    given = operation.derivative_given(x, y)
    assert given.tobytes() == operation.derivative(x).tobytes()
    # and it is the derivative: central differences where the function is not flat
    moderate = np.abs(x) < 5
    h = 1e-6
    slope = (operation.forward(x + h) - operation.forward(x - h)) / (2 * h)
    np.testing.assert_allclose(given[moderate], slope[moderate], rtol=1e-6, atol=1e-9)


def test_every_derivative_from_the_output_declares_whether_it_is_fresh() -> None:
    # The base class has no default (a new op must decide), and the test below covers each.
    found = {cls.name for cls in _DerivativeOfOutput.__subclasses__()}
    assert found == {"tanh", "sigmoid", "exp"}
    assert all(isinstance(get_op(name).fresh_derivative, bool) for name in found)


@pytest.mark.parametrize("name", ["tanh", "sigmoid", "exp"])
def test_a_derivative_declared_fresh_shares_no_memory(name: str) -> None:
    # The products overwrite a derivative declared fresh: it must not be x, y or a view of them.
    operation = get_op(name)()
    assert isinstance(operation, _DerivativeOfOutput)
    x = _points(np.random.default_rng(2)).reshape(13, 16)
    y = operation.forward(x)
    given = operation.derivative_given(x, y)
    shared = np.shares_memory(given, x) or np.shares_memory(given, y)
    assert operation.fresh_derivative == (not shared)
    assert operation.fresh_derivative == (name != "exp")


@pytest.mark.parametrize("name", ["tanh", "sigmoid", "exp"])
@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("shape", [(), (4, 5)])
def test_products_through_the_output_leave_their_inputs_alone(
    name: str, batch: int, shape: tuple[int, ...]
) -> None:
    # One vector is multiplied into the fresh derivative: neither x, nor the stored output
    # (exp's derivative is the output itself), nor the vectors change; each product is
    # g'(x) v_b, the old formula in x, bit for bit.
    operation = get_op(name)()
    rng = np.random.default_rng(2)
    x, vectors = rng.standard_normal(shape), rng.standard_normal((batch, *shape))
    y = operation.forward(x)
    kept = (x.copy(), y.copy(), vectors.copy())
    for result in (
        operation.vjp(x, vectors, output=y),
        operation.jvp(x, vectors, output=y),
    ):
        expected = np.stack([operation.derivative(x) * v for v in kept[2]])
        assert result.shape == (batch, *shape)
        assert result.tobytes() == expected.tobytes()
    # the programs' rules hand one unbatched vector (a 0-d one for a scalar)
    for vector in vectors:
        single = operation._vjp_given(x, y, vector)
        assert single.shape == shape
        assert single.tobytes() == (operation.derivative(x) * vector).tobytes()
    for before, after in zip(kept, (x, y, vectors), strict=True):
        assert before.tobytes() == after.tobytes()


def _window_mean(x: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    # the old forward: NumPy's mean over the sliding window view (stride = size)
    view = sliding_window_view(x, size, axis=(-2, -1))[..., :: size[0], :: size[1], :, :]
    return np.mean(view, axis=(-2, -1))


SHAPES = [
    ((3, 8, 8), (2, 2)),
    ((2, 10, 11), (2, 3)),
    ((4, 9, 7), (3, 1)),
    ((1, 2, 13, 14), (1, 7)),
    ((6, 7), (6, 3)),
    ((2, 5, 5), (2, 4)),  # one window per row: NumPy's own order (the old path)
    ((2, 4, 24), (2, 8)),  # 8 columns: NumPy sums pairwise (the old path)
]


@pytest.mark.parametrize(("shape", "size"), SHAPES)
def test_disjoint_average_pool_is_the_window_mean_bit_for_bit(
    shape: tuple[int, ...], size: tuple[int, int]
) -> None:
    rng = np.random.default_rng(7)
    x = rng.standard_normal(shape) * np.exp(rng.uniform(-30, 30, shape))
    x.flat[::5] = -0.0
    pool = AvgPool2d(size=size)
    y = pool.forward(x)
    assert y.tobytes() == _window_mean(x, size).tobytes()
    loops = pool2d_loops(x, size, size, lambda w: sum(w) / len(w))
    np.testing.assert_allclose(y, loops, rtol=1e-12, atol=0)


@pytest.mark.parametrize(("shape", "size"), SHAPES)
def test_disjoint_average_pool_vjp_spreads_each_share_over_its_tile(
    shape: tuple[int, ...], size: tuple[int, int]
) -> None:
    rng = np.random.default_rng(8)
    x = rng.standard_normal(shape)
    pool = AvgPool2d(size=size)
    out_shape = pool.out_shape(shape)
    u = rng.standard_normal((2, *out_shape))
    u.flat[::3] = -0.0
    g = pool.vjp(x, u)
    # naive adjoint: every input of tile (i, j) gets u[i, j] / k; inputs outside every tile 0
    k_h, k_w = size
    expected = np.zeros((2, *shape))
    for b in range(2):
        for index in np.ndindex(*out_shape):
            *lead, i, j = index
            tile = (b, *lead, slice(k_h * i, k_h * i + k_h), slice(k_w * j, k_w * j + k_w))
            expected[tile] += u[(b, *index)] / (k_h * k_w)
    assert g.tobytes() == expected.tobytes()  # 0 + share: no zero keeps a minus sign
    v = rng.standard_normal(shape)
    np.testing.assert_allclose(
        np.sum(pool.jvp(x, v[np.newaxis])[0] * u[0]), np.sum(v * g[0]), rtol=1e-12
    )


@pytest.fixture
def forward_calls(monkeypatch: pytest.MonkeyPatch) -> Iterator[Counter[str]]:
    calls: Counter[str] = Counter()
    original = Op.forward

    def counted(self: Op, x: np.ndarray) -> np.ndarray:
        calls[self.name] += 1
        return original(self, x)

    monkeypatch.setattr(Op, "forward", counted)
    yield calls


@pytest.mark.parametrize("direction", ["jvp", "vjp"])
def test_the_entry_point_evaluates_each_operation_once(
    forward_calls: Counter[str], direction: functions.Direction
) -> None:
    rng = np.random.default_rng(9)
    x = rng.standard_normal((2, 6, 6))
    ops = [
        get_op("xcorr2d")(kernel=rng.standard_normal((3, 2, 3, 3))),
        get_op("tanh")(),
        get_op("avg_pool2d")(size=2),
        get_op("sum")(),
    ]
    chain = Chain(ops, x.shape)
    vector = rng.standard_normal(x.shape) if direction == "jvp" else np.asarray(1.5)
    result = functions.product(chain, x, vector, direction=direction, check=False, limits=LIMITS)
    assert forward_calls == Counter({op.name: 1 for op in ops})
    forward_calls.clear()
    assert result.value.tobytes() == chain.forward(x).tobytes()
