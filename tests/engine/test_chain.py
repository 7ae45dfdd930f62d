"""Chains of operations: the three Jacobian strategies agree, obey the chain rule, match
central differences; shapes are checked first and limits refuse work before allocating it.

Chains are drawn valid by construction (``tests/strategies.op_chains``). Comparisons between
strategies use the "exact" tolerance scaled by ``|J_1| |J_2| ... |J_n|``, the sum of the absolute
terms of the chain-rule product: entries that cancel to (almost) zero may come out as an exact
zero in one strategy and as rounding noise in another, and that noise is bounded by that scale.
"""

import gc
import math
import re
import weakref
from collections.abc import Callable
from unittest import mock

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given, note, settings
from hypothesis import strategies as st

from service.engine import chain as chain_module
from service.engine import layout
from service.engine.chain import Chain
from service.engine.errors import (
    DomainError,
    LimitExceeded,
    NonFiniteError,
    ParameterError,
    Place,
    ShapeError,
)
from service.engine.op import get_op
from service.engine.sparse import is_canonical
from tests import oracles
from tests.strategies import ChainCase, op_chains

BIG = 10**12
STRATEGIES = ("chain", "reverse", "forward")
EXACT = oracles.tolerance(np.float64, "exact")
FD = oracles.tolerance(np.float64, "fd")


def jacobian(chain: Chain, x: np.ndarray, **options: object) -> sp.coo_array | np.ndarray:
    options = {"max_dense_elements": BIG, "max_nnz": BIG, **options}
    return chain.jacobian(x, **options).matrix  # type: ignore[arg-type]


def absolute_terms(chain: Chain, x: np.ndarray, order: str) -> np.ndarray:
    """``|J_1| |J_2| ... |J_n|``: bounds the rounding noise of any way of forming ``J``."""
    values = chain.trace(x)
    product = None
    for op, value in zip(chain.ops, values, strict=False):
        local = abs(op.local_jacobian(value, order))  # type: ignore[arg-type]
        product = local if product is None else product @ local
    assert product is not None
    return product.toarray()


def assert_same_jacobian(a: sp.coo_array, b: sp.coo_array, terms: np.ndarray) -> None:
    assert a.shape == b.shape
    assert is_canonical(a) and is_canonical(b)
    atol = EXACT["atol"] * max(1.0, float(terms.max(initial=0.0)))
    dense_a, dense_b = a.toarray(), b.toarray()
    np.testing.assert_allclose(dense_a, dense_b, rtol=EXACT["rtol"], atol=atol)
    # Identical structure, except where one side holds an exact zero and the other rounding noise.
    differ = (dense_a != 0) ^ (dense_b != 0)
    assert np.all(np.maximum(np.abs(dense_a), np.abs(dense_b))[differ] <= atol)


def assert_matches_central_differences(
    jacobian_matrix: np.ndarray, chain: Chain, x: np.ndarray, order: str
) -> None:
    # The "fd" tolerance plus twice the differences' own estimated error (oracles).
    fd = oracles.central_difference_jacobian(chain.forward, x, order)
    slack = 2 * oracles.central_difference_error(chain.forward, x, order)
    allowed = FD["rtol"] * np.abs(fd) + oracles.scaled_atol(np.float64, "fd", fd) + slack
    excess = np.abs(jacobian_matrix - fd) - allowed
    assert np.all(excess <= 0), f"off by {np.abs(jacobian_matrix - fd).max():.3g}"


def small_blocks(enabled: bool) -> "mock._patch[int]":
    # Tiny basis blocks force several blocks per Jacobian, exercising the block boundaries.
    return mock.patch.object(
        chain_module, "BLOCK_ELEMENTS", 5 if enabled else chain_module.BLOCK_ELEMENTS
    )


# -- strategies agree with each other and with central differences --------------------------------


@given(case=op_chains(), tiny_blocks=st.booleans())
@settings(max_examples=100)
def test_strategies_agree_and_match_central_differences(case: ChainCase, tiny_blocks: bool) -> None:
    note(repr(case))
    chain = Chain(case.ops, case.in_shape)
    for order in ("F", "C"):
        with small_blocks(tiny_blocks):
            results = {s: jacobian(chain, case.x, order=order, strategy=s) for s in STRATEGIES}
            dense = jacobian(chain, case.x, order=order, strategy="forward", fmt="dense")
        terms = absolute_terms(chain, case.x, order)
        for strategy in ("reverse", "forward"):
            assert_same_jacobian(results["chain"], results[strategy], terms)
        np.testing.assert_array_equal(dense, results["forward"].toarray())
        assert_matches_central_differences(results["chain"].toarray(), chain, case.x, order)


@given(case=op_chains())
@settings(max_examples=40)
def test_auto_and_dense_formats_return_the_same_matrix(case: ChainCase) -> None:
    chain = Chain(case.ops, case.in_shape)
    coo = jacobian(chain, case.x)
    terms = absolute_terms(chain, case.x, "F")
    assert_same_jacobian(coo, jacobian(chain, case.x, strategy="chain"), terms)
    for strategy in STRATEGIES:
        dense = jacobian(chain, case.x, strategy=strategy, fmt="dense")
        assert isinstance(dense, np.ndarray) and dense.shape == coo.shape
        assert_same_jacobian(coo, sp.coo_array(dense), terms)
        assert not np.any(np.signbit(dense) & (dense == 0)), "a -0.0 leaked into a dense result"


@given(case=op_chains(min_ops=2))
@settings(max_examples=40)
def test_chain_rule_holds_at_every_split(case: ChainCase) -> None:
    # J_{f∘g} = J_g J_f: the Jacobian of the first k operations times that of the rest.
    chain = Chain(case.ops, case.in_shape)
    values = chain.trace(case.x)
    whole = jacobian(chain, case.x)
    terms = absolute_terms(chain, case.x, "F")
    for k in range(1, len(case.ops)):
        front = Chain(case.ops[:k], case.in_shape)
        back = Chain(case.ops[k:], chain.shapes[k])
        product = sp.coo_array(jacobian(front, case.x) @ jacobian(back, values[k]))
        product.sum_duplicates()
        product.eliminate_zeros()
        assert_same_jacobian(whole, sp.coo_array(product.tocsr().tocoo()), terms)


@given(case=op_chains())
@settings(max_examples=40)
def test_out_in_layout_and_c_order_are_the_transpose_and_permutation(case: ChainCase) -> None:
    chain = Chain(case.ops, case.in_shape)
    default = jacobian(chain, case.x, strategy="chain")
    for order in ("F", "C"):
        for layout_name in ("in_out", "out_in"):
            got = jacobian(chain, case.x, strategy="chain", order=order, layout=layout_name)
            rows = layout.reorder_flat(default.row.astype(np.int64), chain.in_shape, "F", order)
            cols = layout.reorder_flat(default.col.astype(np.int64), chain.out_shape, "F", order)
            expected = sp.coo_array((default.data, (rows, cols)), shape=default.shape)
            expected = layout.orient_coo(expected, layout_name)  # type: ignore[arg-type]
            assert got.shape == expected.shape
            terms = absolute_terms(chain, case.x, order)
            if layout_name == "out_in":
                terms = terms.T
            assert_same_jacobian(got, sp.coo_array(expected.tocsr().tocoo()), terms)


@given(case=op_chains())
@settings(max_examples=40)
def test_jvp_and_vjp_of_a_chain(case: ChainCase) -> None:
    chain = Chain(case.ops, case.in_shape)
    rng = np.random.default_rng(3)
    n, m = case.x.size, math.prod(chain.out_shape)
    v = rng.normal(size=(3, *chain.in_shape))
    u = rng.normal(size=(2, *chain.out_shape))
    jv = chain.jvp(case.x, v)
    vu = chain.vjp(case.x, u)
    assert jv.shape == (3, *chain.out_shape) and vu.shape == (2, *chain.in_shape)
    fd = oracles.central_difference_jacobian(chain.forward, case.x, "C")  # (n, m)
    fd_error = oracles.central_difference_error(chain.forward, case.x, "C")  # (n, m)
    flat_v = np.reshape(v, (3, n))
    expected = flat_v @ fd  # J^T v from differences: (3, n) @ (n, m)
    # The "fd" tolerance and the differences' own error, both carried through the sum over n.
    allowed = np.abs(flat_v) @ (
        FD["rtol"] * np.abs(fd) + oracles.scaled_atol(np.float64, "fd", fd) + 2 * fd_error
    )
    assert np.all(np.abs(np.reshape(jv, (3, m)) - expected) <= allowed)
    # <v, vjp(u)> = <jvp(v), u>
    left = np.reshape(v, (3, n)) @ np.reshape(vu, (2, n)).T
    right = np.reshape(jv, (3, m)) @ np.reshape(u, (2, m)).T
    scale = np.abs(np.reshape(v, (3, n))) @ np.abs(np.reshape(vu, (2, n))).T
    np.testing.assert_allclose(left, right, rtol=0, atol=EXACT["atol"] * (1 + scale.max()))


def test_the_worked_example_of_the_conventions() -> None:
    # CONVENTIONS section 2 test vector, through the sparse product: x (1, 2, 3), k [[[1, 2]]]
    # spelled as linear over windows, then compared with the published rows. Here the image is
    # (2, 3) with the kernel along the last axis: y[i, j] = x[i, j] + 2 x[i, j + 1].
    weight = np.zeros((4, 6))
    for i in range(2):
        for j in range(2):
            out = oracles.flat((i, j), (2, 2), "F")
            weight[out, oracles.flat((i, j), (2, 3), "F")] = 1.0
            weight[out, oracles.flat((i, j + 1), (2, 3), "F")] = 2.0
    chain = Chain([get_op("linear")(weight=weight, output_shape=(2, 2))], (2, 3))
    expected = np.array(
        [[1, 0, 0, 0], [0, 1, 0, 0], [2, 0, 1, 0], [0, 2, 0, 1], [0, 0, 2, 0], [0, 0, 0, 2]]
    )
    for strategy in STRATEGIES:
        got = jacobian(chain, np.zeros((2, 3)), strategy=strategy, fmt="dense")
        np.testing.assert_array_equal(got, expected)


# -- shapes first, errors name the operation ------------------------------------------------------


def test_shapes_are_computed_for_the_whole_chain() -> None:
    chain = Chain(
        [get_op("reshape")(shape=(6, 2)), get_op("sum")(axes=(0,)), get_op("softmax")()], (3, 4)
    )
    assert chain.shapes == ((3, 4), (6, 2), (2,), (2,))
    assert chain.in_shape == (3, 4) and chain.out_shape == (2,)


def test_a_bad_link_is_named_by_its_index_before_any_arithmetic() -> None:
    ops = [get_op("square")(), get_op("reshape")(shape=(6,)), get_op("sum")(axes=(1,))]
    with mock.patch.object(type(ops[0]), "_forward", side_effect=AssertionError("computed")):
        with pytest.raises(ShapeError, match=r"^operation 2 \(sum\): .*axis 1 .*\[6\]"):
            Chain(ops, (2, 3))


@given(case=op_chains(max_ops=4), data=st.data())
@settings(max_examples=30)
def test_an_appended_misfit_is_named_by_its_index(case: ChainCase, data: st.DataObject) -> None:
    shape = Chain(case.ops, case.in_shape).out_shape
    size = math.prod(shape)
    misfit = data.draw(
        st.sampled_from(
            [
                get_op("reshape")(shape=(size + 1,)),
                get_op("linear")(weight=np.ones((2, size + 1))),
                get_op("transpose")(axes=tuple(range(len(shape) + 1))),
                get_op("sum")(axes=(len(shape),)),
                get_op("mse")(target=np.zeros((*shape, 2))),
            ]
        )
    )
    index = len(case.ops)
    pattern = rf"^operation {index} \({misfit.name}\): .*{re.escape(str(list(shape)))}"
    with pytest.raises(ShapeError, match=pattern):
        Chain([*case.ops, misfit], case.in_shape)


def test_batches_are_checked_against_the_chain_not_blamed_on_an_operation() -> None:
    chain = Chain([get_op("sum")(axes=(0,)), get_op("exp")()], (2, 3))
    x = np.zeros((2, 3))
    with pytest.raises(ShapeError, match=r"^tangents must have shape \(B, 2, 3\).*\[2, 3\]"):
        chain.jvp(x, np.zeros((4, 3, 2)))
    with pytest.raises(ShapeError, match=r"^cotangents must have shape \(B, 3\).*\[3\]"):
        chain.vjp(x, np.zeros((3,)))


def test_a_chain_needs_an_operation_and_an_input_of_its_shape() -> None:
    with pytest.raises(ParameterError, match="at least one operation"):
        Chain([], (2,))
    chain = Chain([get_op("exp")()], (2, 3))
    with pytest.raises(ShapeError, match=r"\[3, 2\].*\[2, 3\]"):
        chain.forward(np.zeros((3, 2)))
    with pytest.raises(ShapeError, match=r"input shape \[2, 0\]"):
        Chain([get_op("exp")()], (2, 0))


def _every_pass(chain: Chain, x: np.ndarray) -> list[Callable[[], object]]:
    """Forward, JVP, VJP and Jacobian of ``chain`` at ``x``, each to be called."""
    return [
        lambda: chain.forward(x),
        lambda: chain.jvp(x, x[np.newaxis]),
        lambda: chain.vjp(x, x[np.newaxis]),
        lambda: chain.jacobian(x, max_dense_elements=BIG, max_nnz=BIG),
    ]


def test_domain_and_overflow_errors_name_the_operation() -> None:
    chain = Chain([get_op("scale")(factor=-1.0), get_op("log")()], (2,))
    for call in _every_pass(chain, np.array([1.0, 2.0])):
        with pytest.raises(DomainError, match=r"^operation 1 \(log\): log needs x > 0"):
            call()
    overflow = Chain([get_op("tanh")(), get_op("square")(), get_op("power")(p=3)], (1,))
    with pytest.raises(NonFiniteError, match=r"^operation 0 \(square\): .*non-finite"):
        Chain([get_op("square")()], (1,)).forward(np.array([1e200]))
    assert np.isfinite(overflow.forward(np.array([1e200])))


def test_errors_name_the_places_given_for_the_operations() -> None:
    # A program's path graph runs as a chain; its errors must read as the program's nodes.
    places = [Place("node 'a' (scale)", "/function/nodes/0"), Place("node 'b' (log)", None)]
    chain = Chain([get_op("scale")(factor=-1.0), get_op("log")()], (2,), places)
    for call in _every_pass(chain, np.array([1.0, 2.0])):
        with pytest.raises(DomainError, match=r"^node 'b' \(log\): log needs x > 0") as caught:
            call()
        assert caught.value.pointer is None
    square = Chain([get_op("square")()], (1,), [Place("expression character 0 (square)", "/f")])
    with pytest.raises(NonFiniteError, match=r"^expression character 0 \(square\): ") as caught:
        square.forward(np.array([1e200]))
    assert caught.value.pointer == "/f"
    with pytest.raises(ValueError, match="1 places for 2 operations"):
        Chain([get_op("exp")(), get_op("log")()], (2,), places[:1])


# -- limits are checked before anything is allocated ----------------------------------------------


def _no_arithmetic() -> "mock._patch[object]":
    return mock.patch.object(Chain, "trace", side_effect=AssertionError("computed before limits"))


def test_a_dense_result_over_the_limit_is_refused_before_any_work() -> None:
    chain = Chain([get_op("exp")(), get_op("sum")(axes=(0,))], (30, 40))
    with _no_arithmetic(), pytest.raises(LimitExceeded) as caught:
        chain.jacobian(np.zeros((30, 40)), fmt="dense", max_dense_elements=100, max_nnz=BIG)
    error = caught.value
    assert (error.quantity, error.estimate, error.limit) == ("dense Jacobian elements", 48000, 100)
    assert "ask for format 'coo', or use /v1/jvp or /v1/vjp" in str(error)


def test_a_sparse_result_over_the_limit_is_refused_by_its_upper_bound() -> None:
    chain = Chain([get_op("softmax")(axis=1)], (3, 50))
    with _no_arithmetic(), pytest.raises(LimitExceeded) as caught:
        chain.jacobian(np.zeros((3, 50)), max_dense_elements=BIG, max_nnz=7499)
    assert caught.value.estimate == 3 * 50 * 50
    assert "use /v1/jvp or /v1/vjp" in str(caught.value)
    assert chain.jacobian(np.zeros((3, 50)), max_dense_elements=BIG, max_nnz=7500).nnz == 7500


def test_huge_requests_are_planned_and_refused_from_shapes_alone() -> None:
    # 10^12 dense entries: only the plan could ever look at this.
    chain = Chain([get_op("relu")(), get_op("avg_pool2d")(size=2)], (3, 1000, 1000))
    with pytest.raises(LimitExceeded, match="dense Jacobian elements"):
        chain.plan(fmt="dense", max_dense_elements=10**8, max_nnz=10**8)
    plan = chain.plan(fmt="coo", max_dense_elements=10**8, max_nnz=10**8)
    assert plan.strategy == "chain" and plan.nnz_bound == 3 * 10**6
    with pytest.raises(LimitExceeded, match="visited by strategy 'forward'"):
        chain.plan(strategy="forward", max_dense_elements=10**8, max_nnz=10**8)
    # The result is a column (50 entries) but J_1 alone holds 5000: the product is refused,
    # auto takes the reverse pass instead.
    wide = Chain([get_op("linear")(weight=np.ones((100, 50))), get_op("sum")()], (50,))
    with pytest.raises(LimitExceeded, match="chain-rule product.*5000.*1000"):
        wide.plan(strategy="chain", max_dense_elements=10**8, max_nnz=1000)
    assert wide.plan(max_dense_elements=10**8, max_nnz=1000).strategy == "reverse"


def test_auto_falls_back_to_the_sparse_product_when_dense_work_is_over_the_limit() -> None:
    chain = Chain([get_op("sin")()], (40, 50))
    x = np.random.default_rng(0).normal(size=(40, 50))
    result = chain.jacobian(x, max_dense_elements=2000 * 2000 - 1, max_nnz=2000)
    np.testing.assert_array_equal(result.matrix.diagonal(), layout.vec(np.cos(x), "F"))


def test_auto_picks_by_estimated_cost() -> None:
    rng = np.random.default_rng(0)
    limits = {"max_dense_elements": BIG, "max_nnz": BIG}
    # A dense map to a scalar: one reverse pass beats n forward passes and a dense sparse product.
    dense_to_scalar = Chain(
        [get_op("linear")(weight=rng.normal(size=(50, 60))), get_op("squared_norm")()], (60,)
    )
    assert dense_to_scalar.plan(**limits).strategy == "reverse"
    # A scalar to a vector: one forward pass.
    scalar_to_dense = Chain(
        [get_op("linear")(weight=rng.normal(size=(60, 1))), get_op("tanh")()], ()
    )
    assert scalar_to_dense.plan(**limits).strategy == "forward"
    # Elementwise and pooling on a large input: the sparse product never visits the zeros.
    sparse = Chain([get_op("tanh")(), get_op("avg_pool2d")(size=2)], (3, 64, 64))
    assert sparse.plan(**limits).strategy == "chain"
    for chain in (dense_to_scalar, scalar_to_dense, sparse):
        plan = chain.plan(**limits)
        assert plan.costs[plan.strategy] == min(plan.costs.values())


def test_unknown_options_are_parameter_errors() -> None:
    chain = Chain([get_op("exp")()], (2,))
    x = np.zeros(2)
    for options, message in (
        ({"strategy": "sideways"}, "strategy"),
        ({"fmt": "csr"}, "format"),
        ({"order": "K"}, "order"),
        ({"layout": "diagonal"}, "layout"),
    ):
        with pytest.raises(ParameterError, match=message):
            jacobian(chain, x, **options)


def test_the_association_order_avoids_a_large_intermediate() -> None:
    # (n x n) (n x n) (n x 1): right-to-left keeps every partial product a vector.
    n = 300
    chain = Chain(
        [
            get_op("linear")(weight=np.ones((n, n))),
            get_op("linear")(weight=np.ones((n, n))),
            get_op("sum")(),
        ],
        (n,),
    )
    split, _, peak = chain._association()
    assert split[(0, 2)] == 0  # J_1 (J_2 J_3)
    assert peak == n * n


def test_a_plan_is_kept_per_request_and_a_refusal_is_never_kept() -> None:
    # Plans are a function of the shapes and the arguments: kept once made; a refusal is made
    # again each time (nothing is remembered of it), and other limits get their own plan.
    chain = Chain([get_op("tanh")(), get_op("sum")(axes=(1,))], (4, 5))
    first = chain.plan(fmt="dense", max_dense_elements=100, max_nnz=100)
    assert chain.plan(fmt="dense", max_dense_elements=100, max_nnz=100) is first
    assert first.dense_elements == 20 * 4 and first.strategy in ("chain", "reverse", "forward")
    other = chain.plan(strategy="forward", fmt="dense", max_dense_elements=100, max_nnz=100)
    assert other.strategy == "forward"
    for _ in range(2):
        with pytest.raises(LimitExceeded):
            chain.plan(fmt="dense", max_dense_elements=79, max_nnz=100)
    assert chain.plan(fmt="dense", max_dense_elements=80, max_nnz=100).dense_elements == 80


def test_a_planned_chain_is_freed_by_reference_counting() -> None:
    # A reference cycle through the chain would keep its operations and their parameters (views
    # of a large binary request body, say) alive until the next garbage collection.
    op = get_op("linear")(weight=np.ones((4, 6)), output_shape=(2, 2))
    freed = weakref.ref(op)
    gc.disable()
    try:
        chain = Chain([op, get_op("square")(), get_op("sum")()], (2, 3))
        chain.plan(strategy="auto", fmt="coo", max_dense_elements=BIG, max_nnz=BIG)
        del chain, op
        assert freed() is None
    finally:
        gc.enable()
