"""Every registered operation against independent oracles, parametrized over the registry.

``EXAMPLES`` holds, per operation name, small examples inside the operation's domain (away from
kinks and ties) with an independent forward (NumPy/SciPy formulas or loops from ``oracles``). An
operation registered without an example fails ``test_every_registered_op_has_an_example`` and
its own parametrized cases, so a new operation is tested as soon as it is registered.

Derivatives are checked three ways: the JVP against central differences (oracles), the VJP
against the JVP by the dot-product test, and the COO local Jacobian against the dense basis
Jacobian and the finite-difference Jacobian, in both index orders.
"""

import math
from collections.abc import Callable
from dataclasses import FrozenInstanceError, dataclass, fields
from typing import Any, ClassVar

import numpy as np
import pytest
import scipy.special
from hypothesis import given
from hypothesis import strategies as st

from service.engine import layout
from service.engine.errors import (
    DomainError,
    ParameterError,
    ShapeError,
    UnknownOperation,
)
from service.engine.op import ElementwiseOp, Op, get_op, op_classes, op_names, register
from service.engine.sparse import RowMap, is_canonical, to_coo
from tests import oracles

Factory = Callable[[np.random.Generator], "Example"]


@dataclass(frozen=True)
class Example:
    """An operation at a point of its domain, with a forward computed independently."""

    op: Op
    x: np.ndarray
    reference: Callable[[np.ndarray], np.ndarray]
    # True where the local Jacobian and the basis-vector Jacobian evaluate the same expressions,
    # so they must agree bit for bit; otherwise they agree to the "exact" tolerance.
    bitwise: bool = True


def _signed_away_from_zero(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    # |x| in [0.2, 1.5]: no element within a finite-difference step of the kink at 0.
    return rng.choice([-1.0, 1.0], size=shape) * rng.uniform(0.2, 1.5, size=shape)


def _distinct(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    # Values at least 0.08 apart: every pooling window has a unique maximum, far beyond a step.
    return (
        rng.permutation(math.prod(shape)) * 0.1 + rng.uniform(0, 0.02, math.prod(shape))
    ).reshape(shape)


def _unary(name: str, f: Callable[[float], float], low: float = -1.5, high: float = 1.5) -> Factory:
    # The reference applies the math-module function element by element: a different code path.
    def make(rng: np.random.Generator) -> Example:
        return Example(get_op(name)(), rng.uniform(low, high, (2, 3, 2)), np.vectorize(f))

    return make


def _kinked(name: str, f: Callable[[float], float]) -> Factory:
    def make(rng: np.random.Generator) -> Example:
        return Example(get_op(name)(), _signed_away_from_zero(rng, (3, 4)), np.vectorize(f))

    return make


def _power(p: float, low: float, high: float) -> Factory:
    def make(rng: np.random.Generator) -> Example:
        return Example(
            get_op("power")(p=p), rng.uniform(low, high, (2, 3)), np.vectorize(lambda v: v**p)
        )

    return make


def _linear(order: str, bias: bool, output_shape: tuple[int, ...] | None) -> Factory:
    def make(rng: np.random.Generator) -> Example:
        x = rng.normal(size=(2, 3))
        weight = rng.normal(size=(4, 6))
        b = rng.normal(size=4) if bias else None
        out = output_shape or (4,)

        def reference(v: np.ndarray) -> np.ndarray:
            # y_o = sum_i W[o, i] v_i (+ b_o), indices flattened with the literal formula.
            y = np.zeros(4)
            for index in np.ndindex(*v.shape):
                i = oracles.flat(index, v.shape, order)
                for o in range(4):
                    y[o] += weight[o, i] * v[index]
            if b is not None:
                y += b
            result = np.zeros(out)
            for index in np.ndindex(*out):
                result[index] = y[oracles.flat(index, out, order)]
            return result

        op = get_op("linear")(weight=weight, bias=b, output_shape=output_shape, order=order)
        return Example(op, x, reference)

    return make


def _reshape(shape: tuple[int, ...], order: str) -> Factory:
    def make(rng: np.random.Generator) -> Example:
        x = rng.normal(size=(2, 3, 2))
        target = tuple(
            12 // math.prod(d for d in shape if d != -1) if d == -1 else d for d in shape
        )
        return Example(
            get_op("reshape")(shape=shape, order=order),
            x,
            lambda v: np.reshape(v, target, order=order),  # type: ignore[call-overload]
        )

    return make


def _transpose(axes: tuple[int, ...] | None) -> Factory:
    def make(rng: np.random.Generator) -> Example:
        return Example(
            get_op("transpose")(axes=axes),
            rng.normal(size=(2, 3, 4)),
            lambda v: np.transpose(v, axes),
        )

    return make


def _constant(name: str, constant_shape: tuple[int, ...]) -> Factory:
    def make(rng: np.random.Generator) -> Example:
        c = rng.normal(size=constant_shape)
        f = np.add if name == "add" else np.multiply
        return Example(get_op(name)(constant=c), rng.normal(size=(2, 3, 4)), lambda v: f(v, c))

    return make


def _reduction(name: str, axes: tuple[int, ...] | None, reference: Callable[..., Any]) -> Factory:
    def make(rng: np.random.Generator) -> Example:
        return Example(
            get_op(name)(axes=axes),
            rng.normal(size=(2, 3, 4)),
            lambda v: np.asarray(reference(v, axis=axes)),
            bitwise=name != "logsumexp",
        )

    return make


def _pool(name: str, size: tuple[int, int], stride: tuple[int, int] | None) -> Factory:
    reduce: Callable[[list[float]], float] = (
        max if name == "max_pool2d" else (lambda w: math.fsum(w) / len(w))
    )

    def make(rng: np.random.Generator) -> Example:
        x = _distinct(rng, (2, 5, 6))
        effective = stride or size
        return Example(
            get_op(name)(size=size, stride=stride),
            x,
            lambda v: oracles.pool2d_loops(v, size, effective, reduce),
        )

    return make


def _along_axis(name: str, axis: int, reference: Callable[..., Any]) -> Factory:
    def make(rng: np.random.Generator) -> Example:
        return Example(
            get_op(name)(axis=axis),
            rng.normal(size=(2, 3, 4)),
            lambda v: reference(v, axis=axis),
            bitwise=False,
        )

    return make


def _squared_norm(rng: np.random.Generator) -> Example:
    return Example(
        get_op("squared_norm")(),
        rng.normal(size=(3, 2)),
        lambda v: np.asarray(np.linalg.norm(v) ** 2),
    )


def _mse(rng: np.random.Generator) -> Example:
    target = rng.normal(size=(3, 2))
    return Example(
        get_op("mse")(target=target),
        rng.normal(size=(3, 2)),
        lambda v: np.asarray(math.fsum(((v - target) ** 2).flat) / v.size),
    )


def _xcorr(
    x_shape: tuple[int, ...],
    k_shape: tuple[int, ...],
    stride: tuple[int, int],
    padding: tuple[tuple[int, int], tuple[int, int]],
    dilation: tuple[int, int],
) -> Factory:
    def make(rng: np.random.Generator) -> Example:
        k = rng.normal(size=k_shape)
        op = get_op("xcorr2d")(kernel=k, stride=stride, padding=padding, dilation=dilation)
        return Example(
            op,
            rng.normal(size=x_shape),
            lambda v: oracles.xcorr_forward_loops(v, k, stride, padding, dilation),
        )

    return make


EXAMPLES: dict[str, list[Factory]] = {
    "square": [_unary("square", lambda v: v * v)],
    "power": [
        _power(2.5, 0.3, 2.0),
        _power(-1.5, 0.3, 2.0),
        _power(3.0, -2.0, 2.0),  # integer exponent: negative bases allowed
        _power(-2.0, 0.3, 2.0),
        _power(0.0, -2.0, 2.0),
    ],
    "exp": [_unary("exp", math.exp, -2.0, 2.0)],
    "log": [_unary("log", math.log, 0.2, 3.0)],
    "sqrt": [_unary("sqrt", math.sqrt, 0.2, 3.0)],
    "sin": [_unary("sin", math.sin)],
    "cos": [_unary("cos", math.cos)],
    "tanh": [_unary("tanh", math.tanh)],
    "sigmoid": [_unary("sigmoid", lambda v: 1.0 / (1.0 + math.exp(-v)), -4.0, 4.0)],
    "softplus": [_unary("softplus", lambda v: math.log1p(math.exp(v)), -4.0, 4.0)],
    "relu": [_kinked("relu", lambda v: max(v, 0.0))],
    "abs": [_kinked("abs", math.fabs)],
    "linear": [
        _linear("F", bias=False, output_shape=None),
        _linear("C", bias=True, output_shape=(2, 2)),
    ],
    "reshape": [_reshape((3, 4), "F"), _reshape((4, -1), "C"), _reshape((12,), "F")],
    "transpose": [_transpose(None), _transpose((1, 2, 0)), _transpose((-1, 0, 1))],
    "scale": [
        lambda rng: Example(
            get_op("scale")(factor=-1.75), rng.normal(size=(2, 3)), lambda v: -1.75 * v
        )
    ],
    "add": [_constant("add", (3, 1)), _constant("add", (2, 3, 4))],
    "multiply": [_constant("multiply", (4,)), _constant("multiply", (2, 1, 4))],
    "sum": [_reduction("sum", None, np.sum), _reduction("sum", (0, -1), np.sum)],
    "mean": [_reduction("mean", None, np.mean), _reduction("mean", (1,), np.mean)],
    "logsumexp": [
        _reduction("logsumexp", None, scipy.special.logsumexp),
        _reduction("logsumexp", (2, 0), scipy.special.logsumexp),
    ],
    "avg_pool2d": [_pool("avg_pool2d", (2, 2), None), _pool("avg_pool2d", (3, 2), (1, 2))],
    "max_pool2d": [_pool("max_pool2d", (2, 2), None), _pool("max_pool2d", (3, 3), (1, 2))],
    "softmax": [
        _along_axis("softmax", -1, scipy.special.softmax),
        _along_axis("softmax", 0, scipy.special.softmax),
    ],
    "log_softmax": [
        _along_axis("log_softmax", 1, scipy.special.log_softmax),
        _along_axis("log_softmax", -3, scipy.special.log_softmax),
    ],
    "xcorr2d": [
        _xcorr((2, 4, 5), (2, 2, 3), (1, 1), ((0, 0), (0, 0)), (1, 1)),  # the notes' case
        _xcorr((2, 3, 5, 6), (2, 3, 2, 2), (2, 1), ((1, 0), (0, 2)), (1, 2)),
    ],
    "squared_norm": [_squared_norm],
    "mse": [_mse],
}


def _cases() -> list[Any]:
    cases = []
    for name in op_names():
        factories = EXAMPLES.get(name)
        if not factories:
            cases.append(pytest.param(name, -1, id=f"{name}-MISSING"))
            continue
        cases.extend(pytest.param(name, i, id=f"{name}-{i}") for i in range(len(factories)))
    return cases


CASES = _cases()


def make_example(name: str, index: int, seed: int = 0) -> Example:
    if index < 0:
        pytest.fail(f"operation {name!r} is registered but has no example in EXAMPLES")
    return EXAMPLES[name][index](np.random.default_rng(seed + 1000 * index))


def _flat_batch(a: np.ndarray, order: str) -> np.ndarray:
    # (B, *shape) -> (B, size), each item flattened in `order` (test-side, independent of layout).
    return np.stack([np.reshape(item, -1, order=order) for item in a])  # type: ignore[call-overload]


FD = oracles.tolerance(np.float64, "fd")
EXACT = oracles.tolerance(np.float64, "exact")


# -- the registry ---------------------------------------------------------------------------------


def test_every_registered_op_has_an_example() -> None:
    assert set(op_names()) - set(EXAMPLES) == set(), "register an example for each new operation"
    assert set(EXAMPLES) - set(op_names()) == set(), "examples for operations that do not exist"


def test_registry_lists_sorted_unique_names() -> None:
    names = op_names()
    assert list(names) == sorted(set(names))
    assert dict(op_classes()).keys() == set(names)
    for name, cls in op_classes().items():
        assert get_op(name) is cls
        assert cls.name == name


def test_unknown_operation_is_a_domain_error_not_a_key_error() -> None:
    with pytest.raises(UnknownOperation, match="'no_such_op'.*known operations: .*relu"):
        get_op("no_such_op")


def test_registering_a_taken_name_raises_and_leaves_the_registry_alone() -> None:
    before = dict(op_classes())

    @dataclass(frozen=True, eq=False)
    class Impostor(ElementwiseOp):
        name: ClassVar[str] = "relu"

        def _forward(self, x: np.ndarray) -> np.ndarray:
            return x

        def derivative(self, x: np.ndarray) -> np.ndarray:
            return np.ones_like(x)

    with pytest.raises(ValueError, match="'relu' is registered twice"):
        register(Impostor)
    assert dict(op_classes()) == before


def test_registering_an_abstract_class_raises() -> None:
    @dataclass(frozen=True, eq=False)
    class Half(ElementwiseOp):
        name: ClassVar[str] = "half_done"

    with pytest.raises(TypeError, match="abstract"):
        register(Half)
    assert "half_done" not in op_names()


def test_the_registry_view_is_read_only() -> None:
    with pytest.raises(TypeError):
        op_classes()["relu"] = op_classes()["abs"]  # type: ignore[index]


@pytest.mark.parametrize("name", op_names())
def test_declared_params_are_the_dataclass_fields(name: str) -> None:
    cls = get_op(name)
    assert set(cls.params) == {f.name for f in fields(cls)}
    assert cls.note and isinstance(cls.linear, bool)


@pytest.mark.parametrize(("name", "index"), CASES)
def test_ops_are_immutable_and_hold_read_only_arrays(name: str, index: int) -> None:
    op = make_example(name, index).op
    for f in fields(op):
        value = getattr(op, f.name)
        if isinstance(value, np.ndarray):
            assert not value.flags.writeable, f"{name}.{f.name} is writeable"
            with pytest.raises(ValueError, match="read-only"):
                value[...] = 0
        with pytest.raises(FrozenInstanceError):
            setattr(op, f.name, value)


def test_array_fields_are_copies_of_the_callers_arrays() -> None:
    weight = np.ones((2, 3))
    op = get_op("linear")(weight=weight)
    weight[0, 0] = 5.0
    assert op.weight[0, 0] == 1.0


# -- values and derivatives -----------------------------------------------------------------------


@pytest.mark.parametrize(("name", "index"), CASES)
def test_forward_matches_an_independent_reference(name: str, index: int) -> None:
    ex = make_example(name, index)
    y = ex.op.forward(ex.x)
    expected = ex.reference(ex.x)
    assert y.shape == ex.op.out_shape(ex.x.shape) == np.shape(expected)
    np.testing.assert_allclose(y, expected, rtol=EXACT["rtol"], atol=EXACT["atol"])


@pytest.mark.parametrize(("name", "index"), CASES)
@pytest.mark.parametrize("order", ["F", "C"])
def test_jvp_matches_central_differences(name: str, index: int, order: str) -> None:
    ex = make_example(name, index)
    rng = np.random.default_rng(7)
    tangents = rng.normal(size=(3, *ex.x.shape))
    fd = oracles.central_difference_jacobian(ex.op.forward, ex.x, order)  # (in, out)
    # ten(J^T vec(v)) for each v, with J from differences: (B, in) @ (in, out) -> (B, out)
    expected = _flat_batch(tangents, order) @ fd
    got = _flat_batch(ex.op.jvp(ex.x, tangents), order)
    atol = oracles.scaled_atol(np.float64, "fd", expected)
    np.testing.assert_allclose(got, expected, rtol=FD["rtol"], atol=atol)


@pytest.mark.parametrize(("name", "index"), CASES)
def test_vjp_is_the_transpose_of_jvp(name: str, index: int) -> None:
    # <v, vjp(u)> = <jvp(v), u> for every pair of a tangent batch and a cotangent batch.
    ex = make_example(name, index)
    rng = np.random.default_rng(11)
    out_shape = ex.op.out_shape(ex.x.shape)
    v = rng.normal(size=(4, *ex.x.shape))
    u = rng.normal(size=(5, *out_shape))
    jv = ex.op.jvp(ex.x, v)
    vu = ex.op.vjp(ex.x, u)
    assert jv.shape == (4, *out_shape) and vu.shape == (5, *ex.x.shape)
    left = _flat_batch(v, "C") @ _flat_batch(vu, "C").T  # (4, 5)
    right = _flat_batch(jv, "C") @ _flat_batch(u, "C").T  # (4, 5)
    scale = np.abs(_flat_batch(v, "C")) @ np.abs(_flat_batch(vu, "C")).T
    np.testing.assert_allclose(left, right, rtol=0, atol=EXACT["atol"] * (1 + scale.max()))


@pytest.mark.parametrize(("name", "index"), CASES)
@pytest.mark.parametrize("order", ["F", "C"])
def test_local_jacobian_equals_dense_and_finite_differences(
    name: str, index: int, order: str
) -> None:
    ex = make_example(name, index)
    local = ex.op.local_jacobian(ex.x, order)
    n, m = ex.x.size, math.prod(ex.op.out_shape(ex.x.shape))
    assert local.shape == (n, m)
    assert is_canonical(local)
    dense = ex.op.dense_jacobian(ex.x, order)
    if ex.bitwise:
        np.testing.assert_array_equal(local.toarray(), dense)
    else:
        np.testing.assert_allclose(local.toarray(), dense, rtol=EXACT["rtol"], atol=EXACT["atol"])
    fd = oracles.central_difference_jacobian(ex.op.forward, ex.x, order)
    atol = oracles.scaled_atol(np.float64, "fd", fd)
    np.testing.assert_allclose(local.toarray(), fd, rtol=FD["rtol"], atol=atol)


@pytest.mark.parametrize(("name", "index"), CASES)
@pytest.mark.parametrize("order", ["F", "C"])
def test_local_factor_is_the_local_jacobian(name: str, index: int, order: str) -> None:
    # The chain rule multiplies factors: each must be the local Jacobian, entry for entry, and a
    # RowMap exactly when no input element reaches two output elements.
    ex = make_example(name, index)
    local = ex.op.local_jacobian(ex.x, order)
    factor = ex.op.local_factor(ex.x, order)
    same = to_coo(factor)
    assert same.shape == local.shape and is_canonical(same)
    np.testing.assert_array_equal(same.row, local.row)
    np.testing.assert_array_equal(same.col, local.col)
    np.testing.assert_array_equal(same.data, local.data)
    one_per_row = np.bincount(local.row, minlength=local.shape[0]).max(initial=0) <= 1
    assert isinstance(factor, RowMap) == one_per_row


@pytest.mark.parametrize(("name", "index"), CASES)
def test_orders_differ_by_the_index_permutation(name: str, index: int) -> None:
    ex = make_example(name, index)
    out_shape = ex.op.out_shape(ex.x.shape)
    f_matrix = ex.op.local_jacobian(ex.x, "F")
    c_matrix = ex.op.local_jacobian(ex.x, "C")
    rows = layout.reorder_flat(f_matrix.row.astype(np.int64), ex.x.shape, "F", "C")
    cols = layout.reorder_flat(f_matrix.col.astype(np.int64), out_shape, "F", "C")
    permuted = np.zeros(c_matrix.shape)
    permuted[rows, cols] = f_matrix.data
    np.testing.assert_array_equal(permuted, c_matrix.toarray())


@pytest.mark.parametrize(("name", "index"), CASES)
def test_sparsity_bounds_hold(name: str, index: int) -> None:
    ex = make_example(name, index)
    bound = ex.op.sparsity(ex.x.shape)
    local = ex.op.local_jacobian(ex.x)
    structure = local.toarray() != 0
    assert local.nnz <= bound.nnz
    assert structure.sum(axis=1).max(initial=0) <= bound.fan_out
    assert structure.sum(axis=0).max(initial=0) <= bound.fan_in


# -- documented choices at non-differentiable points ----------------------------------------------


def test_relu_and_abs_have_slope_zero_at_the_kink() -> None:
    x = np.array([-1.0, 0.0, 2.0])
    assert get_op("relu")().dense_jacobian(x).diagonal().tolist() == [0.0, 0.0, 1.0]
    assert get_op("abs")().dense_jacobian(x).diagonal().tolist() == [-1.0, 0.0, 1.0]
    assert get_op("relu")().local_jacobian(x).nnz == 1  # exact zeros are not stored


def test_max_pool_routes_a_tie_to_the_first_maximum_in_window_order() -> None:
    # One 2x2 window, maxima at (0, 1) and (1, 0): row-major order picks (0, 1).
    x = np.array([[0.0, 3.0], [3.0, 1.0]])
    op = get_op("max_pool2d")(size=2)
    expected = np.zeros((4, 1))
    expected[layout.flat(np.array([0, 1]), (2, 2), "F"), 0] = 1.0
    np.testing.assert_array_equal(op.local_jacobian(x, "F").toarray(), expected)
    np.testing.assert_array_equal(op.dense_jacobian(x, "F"), expected)
    # The JVP follows the same rule: each tangent entry moves the output only through (0, 1).
    tangents = np.eye(4).reshape(4, 2, 2)  # e_(0,0), e_(0,1), e_(1,0), e_(1,1) in C order
    assert op.jvp(x, tangents)[:, 0, 0].tolist() == [0.0, 1.0, 0.0, 0.0]
    assert "first maximum" in op.note


def test_power_zero_is_constant_with_zero_slope_at_zero() -> None:
    op = get_op("power")(p=0)
    x = np.array([0.0, -2.0, 3.0])
    assert op.forward(x).tolist() == [1.0, 1.0, 1.0]
    assert op.local_jacobian(x).nnz == 0


# -- shape rules and domains ----------------------------------------------------------------------

SHAPE_ERRORS: list[tuple[str, dict[str, Any], tuple[int, ...], type[Exception], str]] = [
    ("linear", {"weight": np.ones((4, 6))}, (5,), ShapeError, r"\[5\].*\[4, 6\]"),
    ("reshape", {"shape": (2, 3)}, (7,), ShapeError, r"\[7\].*\[2, 3\]"),
    ("reshape", {"shape": (4, -1)}, (7,), ShapeError, r"-1.*\[4, -1\].*\[7\]"),
    ("transpose", {"axes": (1, 0)}, (2, 3, 4), ShapeError, r"\[1, 0\].*\[2, 3, 4\]"),
    ("transpose", {"axes": (0, 0)}, (2, 3), ParameterError, r"not a permutation"),
    ("add", {"constant": np.ones(3)}, (2, 4), ShapeError, r"\[3\].*\[2, 4\]"),
    ("multiply", {"constant": np.ones((2, 1, 4))}, (1, 4), ShapeError, r"\[2, 1, 4\].*\[1, 4\]"),
    ("sum", {"axes": (2,)}, (2, 3), ShapeError, r"axis 2.*\[2, 3\]"),
    ("mean", {"axes": (0, -2)}, (2, 3), ParameterError, r"twice"),
    ("logsumexp", {"axes": (-3,)}, (2, 3), ShapeError, r"axis -3.*\[2, 3\]"),
    ("softmax", {"axis": 1}, (4,), ShapeError, r"axis 1.*\[4\]"),
    ("log_softmax", {"axis": 0}, (), ShapeError, r"axis 0.*\[\]"),
    ("avg_pool2d", {"size": 3}, (2, 2), ShapeError, r"\[3, 3\].*\[2, 2\]"),
    ("max_pool2d", {"size": 2}, (5,), ShapeError, r"rank >= 2.*\[5\]"),
    ("mse", {"target": np.zeros((2, 2))}, (4,), ShapeError, r"\[2, 2\].*\[4\]"),
]


@pytest.mark.parametrize(
    ("name", "params", "in_shape", "error", "message"),
    SHAPE_ERRORS,
    ids=[f"{case[0]}-{i}" for i, case in enumerate(SHAPE_ERRORS)],
)
def test_shape_rule_raises_the_specific_error(
    name: str,
    params: dict[str, Any],
    in_shape: tuple[int, ...],
    error: type[Exception],
    message: str,
) -> None:
    op = get_op(name)(**params)
    with pytest.raises(error, match=message):
        op.out_shape(in_shape)
    with pytest.raises(error, match=message):
        op.forward(np.zeros(in_shape))


PARAMETER_ERRORS: list[tuple[str, dict[str, Any], str]] = [
    ("linear", {"weight": np.ones((2, 2, 2))}, r"matrix"),
    ("linear", {"weight": np.ones((2, 3)), "bias": np.ones(3)}, r"bias.*\[2\]"),
    ("linear", {"weight": np.ones((2, 3)), "output_shape": (3,)}, r"\[3\].*2"),
    ("linear", {"weight": np.ones((2, 3)), "order": "X"}, r"order"),
    ("linear", {"weight": np.array([[np.nan]])}, r"finite"),
    ("reshape", {"shape": (-1, -1)}, r"at most one -1"),
    ("reshape", {"shape": (0, 3)}, r"dimensions >= 1"),
    ("avg_pool2d", {"size": 0}, r"size"),
    ("max_pool2d", {"size": 2, "stride": (1, 0)}, r"stride"),
    ("max_pool2d", {"size": (2, 2, 2)}, r"size"),
    ("power", {"p": float("inf")}, r"finite"),
    ("scale", {"factor": float("nan")}, r"finite"),
    ("softmax", {"axis": True}, r"integers"),
]


@pytest.mark.parametrize(
    ("name", "params", "message"),
    PARAMETER_ERRORS,
    ids=[f"{case[0]}-{i}" for i, case in enumerate(PARAMETER_ERRORS)],
)
def test_invalid_parameters_raise_at_construction(
    name: str, params: dict[str, Any], message: str
) -> None:
    with pytest.raises((ParameterError, ShapeError), match=message):
        get_op(name)(**params)


@given(
    h=st.integers(1, 5),
    w=st.integers(1, 5),
    extra=st.tuples(st.integers(0, 3), st.integers(0, 3)).filter(any),
    name=st.sampled_from(["avg_pool2d", "max_pool2d"]),
)
def test_a_window_larger_than_the_input_is_refused(
    h: int, w: int, extra: tuple[int, int], name: str
) -> None:
    op = get_op(name)(size=(h + extra[0], w + extra[1]))
    with pytest.raises(ShapeError, match=rf"{name}: window .*\[{h}, {w}\]"):
        op.out_shape((2, h, w))


@given(rank=st.integers(0, 4), data=st.data())
def test_out_of_range_axes_are_refused(rank: int, data: st.DataObject) -> None:
    axis = data.draw(st.one_of(st.integers(rank, rank + 3), st.integers(-rank - 3, -rank - 1)))
    name = data.draw(st.sampled_from(["sum", "mean", "logsumexp"]))
    with pytest.raises(ShapeError, match=rf"{name}: axis {axis} is out of range"):
        get_op(name)(axes=(axis,)).out_shape((2,) * rank)


def test_batches_of_the_wrong_shape_are_refused() -> None:
    op = get_op("sum")(axes=(0,))
    x = np.ones((2, 3))
    with pytest.raises(ShapeError, match=r"tangents must have shape \(B, \*input_shape\)"):
        op.jvp(x, np.ones((2, 3)))
    with pytest.raises(ShapeError, match=r"cotangents .*\(B, 3\).*\[1, 2\]"):
        op.vjp(x, np.ones((1, 2)))
    with pytest.raises(ShapeError, match=r"input shape \[2, 0\]"):
        op.forward(np.ones((2, 0)))


DOMAIN_ERRORS: list[tuple[str, dict[str, Any], list[float], bool, str]] = [
    ("log", {}, [1.0, 0.0], False, r"log needs x > 0.*0\.0"),
    ("log", {}, [-1.0], False, r"log needs x > 0"),
    ("sqrt", {}, [4.0, -1.0], False, r"sqrt needs x >=? 0.*-1\.0"),
    ("sqrt", {}, [0.0], True, r"sqrt needs x > 0 to differentiate"),
    ("power", {"p": 0.5}, [-2.0], False, r"power needs x >=? 0.*-2\.0"),
    ("power", {"p": 0.5}, [0.0], True, r"power needs x > 0 to differentiate"),
    ("power", {"p": -1.0}, [0.0], False, r"power needs x != 0"),
    ("power", {"p": -0.5}, [0.0], False, r"power needs x > 0"),
    ("exp", {}, [1000.0], False, r"exp needs x <= 709"),
]


@pytest.mark.parametrize(
    ("name", "params", "values", "derivative", "message"),
    DOMAIN_ERRORS,
    ids=[f"{case[0]}-{i}" for i, case in enumerate(DOMAIN_ERRORS)],
)
def test_inputs_outside_the_domain_raise_domain_error(
    name: str, params: dict[str, Any], values: list[float], derivative: bool, message: str
) -> None:
    op = get_op(name)(**params)
    x = np.array(values)
    calls: list[Callable[[], object]] = [
        lambda: op.jvp(x, x[np.newaxis]),
        lambda: op.vjp(x, x[np.newaxis]),
        lambda: op.local_jacobian(x),
    ]
    if not derivative:
        calls.append(lambda: op.forward(x))
    else:
        assert np.all(np.isfinite(op.forward(x)))  # the value exists, only the slope does not
    for call in calls:
        with pytest.raises(DomainError, match=message):
            call()
