"""The dense chain rule of ``xcorr2d`` then elementwise ops, with its caches, used adversarially.

A :class:`Chain` caches its association and plans, and the dense writer caches the views of a
geometry: one chain used many times with different inputs and options, chains that differ only in
kernel values or stride, and many threads at once must each get the matrix of their own request.

Oracle: the seed notes' loops (``tests/oracles.py``). With ``relu`` after the cross-correlation
each entry of ``J`` is the kernel tap (where the output is positive) or nothing, so the loops give
the matrix bit for bit; with ``square`` the entry is ``tap * 2 y``, compared to the loops' ``y``
to rounding, and its zeros (none stored, never ``-0.0``) exactly.
"""

from concurrent.futures import ThreadPoolExecutor
from typing import NamedTuple

import numpy as np
import pytest

from service.engine.chain import Chain
from service.engine.errors import LimitExceeded
from service.engine.op import get_op
from tests import oracles

LIMITS = {"max_dense_elements": 10**7, "max_nnz": 10**7}


class Geometry(NamedTuple):
    stride: tuple[int, int]
    pairs: tuple[tuple[int, int], tuple[int, int]]
    dilation: tuple[int, int]


GEOMETRIES = [
    Geometry((1, 1), ((0, 0), (0, 0)), (1, 1)),  # no tap reaches the padding: one view
    Geometry((2, 1), ((1, 0), (2, 1)), (1, 2)),  # a view per tap
    Geometry((1, 3), ((2, 2), (2, 2)), (2, 1)),
    Geometry((2, 2), ((0, 0), (0, 0)), (1, 1)),
]


def xcorr(k: np.ndarray, geometry: Geometry):
    return get_op("xcorr2d")(
        kernel=k,
        stride=list(geometry.stride),
        padding=[list(p) for p in geometry.pairs],
        dilation=list(geometry.dilation),
    )


def relu_oracle(
    x: np.ndarray, k: np.ndarray, geometry: Geometry, order: str, layout: str
) -> np.ndarray:
    """J of relu(x * k) from the loops: the tap where the output is positive, else +0.0."""
    entries = oracles.xcorr_jacobian_loops(x.shape, k, *geometry[:1], geometry.pairs,
                                           geometry.dilation, order)  # fmt: skip
    y = oracles.xcorr_forward_loops(x, k, geometry.stride, geometry.pairs, geometry.dilation)
    slope = np.reshape(y, -1, order=order) > 0
    dense = np.zeros((x.size, y.size))
    for (row, col), value in entries.items():
        if slope[col] and value != 0:
            dense[row, col] = value
    return dense if layout == "in_out" else np.ascontiguousarray(dense.T)


def same_bits(actual: np.ndarray, expected: np.ndarray) -> bool:
    return actual.shape == expected.shape and bool(
        np.array_equal(actual.view(np.int64), expected.view(np.int64))
    )


def kernel(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    k = rng.standard_normal(shape)
    k.flat[::5] = 0.0
    k.flat[1::7] = -0.0
    return k


def test_one_chain_answers_every_call_with_its_own_input_and_options() -> None:
    rng = np.random.default_rng(41)
    geometry = GEOMETRIES[1]
    k = kernel(rng, (3, 2, 2, 3))
    chain = Chain([xcorr(k, geometry), get_op("relu")()], (2, 2, 5, 6))
    calls = 0
    for strategy in ("chain", "auto", "chain", "forward"):
        for order in ("F", "C"):
            for layout in ("in_out", "out_in"):
                x = rng.standard_normal((2, 2, 5, 6))
                x[0, 1] = -0.0
                got = chain.jacobian(
                    x, order=order, layout=layout, strategy=strategy, fmt="dense", **LIMITS
                ).matrix
                assert same_bits(got, relu_oracle(x, k, geometry, order, layout)), (
                    strategy, order, layout,
                )  # fmt: skip
                coo = chain.jacobian(x, order=order, layout=layout, fmt="coo", **LIMITS).matrix
                assert same_bits(coo.toarray(), got)
                calls += 2
    assert calls == 32


def test_chains_differing_only_in_kernel_values_or_geometry_keep_their_own_matrix() -> None:
    # Same shapes everywhere: only the kernel's values or the geometry tell them apart, in an
    # interleaved order that would expose a plan or view cached under too coarse a key.
    rng = np.random.default_rng(42)
    x_shape, k_shape = (2, 7, 7), (2, 2, 2)
    chains = []
    for geometry in GEOMETRIES:
        for _ in range(2):
            k = kernel(rng, k_shape)
            chains.append((Chain([xcorr(k, geometry), get_op("relu")()], x_shape), k, geometry))
    for round_ in range(3):
        for index in rng.permutation(len(chains)):
            chain, k, geometry = chains[index]
            order = ("F", "C")[(round_ + index) % 2]
            layout = ("in_out", "out_in")[round_ % 2]
            x = rng.standard_normal(x_shape)
            got = chain.jacobian(
                x, order=order, layout=layout, strategy="chain", fmt="dense", **LIMITS
            ).matrix
            assert same_bits(got, relu_oracle(x, k, geometry, order, layout)), (index, round_)


@pytest.mark.parametrize("layout", ["in_out", "out_in"])
def test_square_after_xcorr_is_tap_times_twice_the_output(layout: str) -> None:
    rng = np.random.default_rng(43)
    geometry = GEOMETRIES[2]
    x = rng.standard_normal((1, 2, 6, 7))
    x[0, 0, :, :3] = 0.0  # outputs that are exactly zero: 2 y = 0 stores nothing
    k = kernel(rng, (2, 2, 2, 2))
    chain = Chain([xcorr(k, geometry), get_op("square")()], x.shape)
    for order in ("F", "C"):
        got = chain.jacobian(x, order=order, layout=layout, fmt="dense", **LIMITS).matrix
        in_out = got if layout == "in_out" else got.T
        entries = oracles.xcorr_jacobian_loops(
            x.shape, k, geometry.stride, geometry.pairs, geometry.dilation, order
        )
        y = oracles.xcorr_forward_loops(x, k, geometry.stride, geometry.pairs, geometry.dilation)
        slope = 2.0 * np.reshape(y, -1, order=order)
        expected = np.zeros_like(in_out)
        for (row, col), value in entries.items():
            expected[row, col] = value * slope[col]
        np.testing.assert_allclose(in_out, expected, rtol=1e-12, atol=1e-300)
        assert not np.any(np.signbit(got[got == 0]))
        assert np.array_equal(in_out != 0, expected != 0)


def test_threads_computing_at_once_each_get_their_own_matrix() -> None:
    rng = np.random.default_rng(44)
    work = []
    for index, geometry in enumerate(GEOMETRIES):
        k = kernel(rng, (2, 1, 2, 2))
        x = rng.standard_normal((2, 1, 6, 6))
        order, layout = ("F", "C")[index % 2], ("in_out", "out_in")[index // 2 % 2]
        shared = Chain([xcorr(k, geometry), get_op("relu")()], x.shape)
        work.append((shared, k, x, geometry, order, layout))
    expected = [relu_oracle(x, k, g, order, layout) for _, k, x, g, order, layout in work]

    def run(task: int) -> bool:
        shared, k, x, geometry, order, layout = work[task % len(work)]
        # every other call builds its own chain: fresh caches beside a shared chain's
        chain = shared if task % 2 else Chain([xcorr(k, geometry), get_op("relu")()], x.shape)
        got = chain.jacobian(
            x, order=order, layout=layout, strategy="chain", fmt="dense", **LIMITS
        ).matrix
        return same_bits(got, expected[task % len(work)])

    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(run, range(96)))
    assert all(results), [i for i, ok in enumerate(results) if not ok]


def test_a_cached_plan_never_lifts_a_limit_of_a_later_call() -> None:
    # The same chain asked first within its limits, then over them: every call checks its own.
    rng = np.random.default_rng(45)
    k = kernel(rng, (1, 2, 2))
    x = rng.standard_normal((1, 4, 4))
    chain = Chain([xcorr(k, GEOMETRIES[0]), get_op("tanh")()], x.shape)
    size = x.size * 9  # in_size * out_size: 16 x 9
    small = {"max_dense_elements": size - 1, "max_nnz": 10**7}
    assert chain.jacobian(x, fmt="coo", **small).matrix.nnz > 0
    with pytest.raises(LimitExceeded):
        chain.jacobian(x, fmt="dense", **small)
    assert chain.jacobian(x, fmt="dense", **LIMITS).matrix.shape == (16, 9)
    with pytest.raises(LimitExceeded):
        chain.jacobian(x, fmt="dense", **small)
    with pytest.raises(LimitExceeded):
        chain.jacobian(x, fmt="coo", strategy="chain", max_dense_elements=10**7, max_nnz=3)
    assert chain.jacobian(x, fmt="coo", strategy="chain", **LIMITS).matrix.nnz > 3
