"""Cross-correlation engine against the independent oracles in ``tests/oracles.py``.

Shapes, strides, paddings (all four kinds), dilations, orders and layouts are drawn by
Hypothesis, valid by construction; every check compares against a loop oracle, SciPy or central
differences, never against a value the engine produced earlier.
"""

import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import scipy.signal
import scipy.sparse as sp
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from service.engine import xcorr
from service.engine.errors import ParameterError, ShapeError
from service.engine.kernels.xcorr import builder as xcorr_builder
from service.engine.kernels.xcorr import columns as xcorr_columns
from service.engine.kernels.xcorr import forward as xcorr_forward
from service.engine.kernels.xcorr import runs as xcorr_runs
from service.engine.kernels.xcorr import transpose as xcorr_transpose
from tests import oracles

FLOAT = np.float64
EXACT = oracles.tolerance(FLOAT, "exact")
FD = oracles.tolerance(FLOAT, "fd")
METHODS = list(xcorr.FORWARD_METHODS)


# ------------------------------------------------------------------------------------------
# Strategies
# ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    """One valid configuration, with the padding pairs worked out independently of the engine."""

    x_shape: tuple[int, ...]
    k_shape: tuple[int, ...]
    geometry: xcorr.XCorrGeometry
    stride: tuple[int, int]
    dilation: tuple[int, int]
    pairs: tuple[tuple[int, int], tuple[int, int]]


@st.composite
def cases(
    draw: st.DrawFn,
    max_side: int = 5,
    max_stride: int = 3,
    kernel_counts: tuple[int | None, ...] = (None, 1, 3),
) -> Case:
    kh, kw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    stride = (draw(st.integers(1, max_stride)), draw(st.integers(1, max_stride)))
    dilation = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    kind = draw(st.sampled_from(["valid", "same", "full", "explicit"]))
    extent = (dilation[0] * (kh - 1) + 1, dilation[1] * (kw - 1) + 1)
    if kind == "explicit":
        pads = tuple(draw(st.integers(0, 2)) for _ in range(4))
        drawn_pairs = ((pads[0], pads[1]), (pads[2], pads[3]))
    else:
        drawn_pairs = ((0, 0), (0, 0))
    # smallest image the dilated kernel fits in, padding included ("same"/"full" always fit)
    low = [
        max(1, extent[a] - sum(drawn_pairs[a])) if kind in ("valid", "explicit") else 1
        for a in range(2)
    ]
    H = draw(st.integers(low[0], low[0] + max_side - 1))
    W = draw(st.integers(low[1], low[1] + max_side - 1))
    C = draw(st.integers(1, 3))
    n_images = draw(st.sampled_from([None, 1, 2]))
    n_kernels = draw(st.sampled_from(kernel_counts))
    x_shape = ((n_images,) if n_images else ()) + (C, H, W)
    k_shape = ((n_kernels,) if n_kernels else ()) + (C, kh, kw)
    if kind == "same":
        pairs = (
            oracles.same_padding(H, kh, stride[0], dilation[0]),
            oracles.same_padding(W, kw, stride[1], dilation[1]),
        )
    elif kind == "full":
        pairs = (
            ((kh - 1) * dilation[0], (kh - 1) * dilation[0]),
            ((kw - 1) * dilation[1], (kw - 1) * dilation[1]),
        )
    else:
        pairs = drawn_pairs
    padding = drawn_pairs if kind == "explicit" else kind
    geometry = xcorr.XCorrGeometry(stride=stride, padding=padding, dilation=dilation)
    return Case(x_shape, k_shape, geometry, stride, dilation, pairs)


def tensors(shape: tuple[int, ...]) -> st.SearchStrategy[np.ndarray]:
    """Bounded float64 tensors; zeros are frequent, so the zero-dropping paths are exercised."""
    return arrays(
        FLOAT,
        shape,
        elements=st.floats(-10, 10, allow_nan=False, allow_infinity=False, width=64),
    )


orders = st.sampled_from(["F", "C"])
layouts = st.sampled_from(["in_out", "out_in"])


# ------------------------------------------------------------------------------------------
# Helpers
# ------------------------------------------------------------------------------------------


def coo_dict(matrix: sp.coo_array) -> dict[tuple[int, int], float]:
    return {
        (int(r), int(c)): float(v)
        for r, c, v in zip(matrix.row, matrix.col, matrix.data, strict=True)
    }


def nonzero(entries: dict[tuple[int, int], float]) -> dict[tuple[int, int], float]:
    return {key: value for key, value in entries.items() if value != 0}


def transposed(entries: dict[tuple[int, int], float]) -> dict[tuple[int, int], float]:
    return {(col, row): value for (row, col), value in entries.items()}


def assert_canonical(matrix: sp.coo_array) -> None:
    """CONVENTIONS section 4: sorted by (row, col), no duplicates, no stored zeros."""
    assert isinstance(matrix, sp.coo_array)
    assert matrix.has_canonical_format
    keys = [(int(r), int(c)) for r, c in zip(matrix.row, matrix.col, strict=True)]
    assert all(a < b for a, b in zip(keys, keys[1:], strict=False))
    assert np.all(matrix.data != 0)


def magnitude(x: np.ndarray, k: np.ndarray, case: Case) -> float:
    """Largest sum of |x||k| over an output: the scale of the rounding errors of any route."""
    bound = oracles.xcorr_forward_loops(
        np.abs(x), np.abs(k), case.stride, case.pairs, case.dilation
    )
    return float(np.max(bound, initial=0.0))


def permutation_f_to_c(shape: tuple[int, ...]) -> np.ndarray:
    """``p[c] = f``: the F-order flat index of the element whose C-order flat index is ``c``."""
    return np.reshape(np.reshape(np.arange(int(np.prod(shape))), shape, order="F"), -1)


# ------------------------------------------------------------------------------------------
# Jacobians against the notes' loops, exactly
# ------------------------------------------------------------------------------------------


def test_conventions_worked_example() -> None:
    """CONVENTIONS section 2: x (1, 2, 3), k [[[1, 2]]], order F, layout in_out."""
    expected = np.array(
        [[1, 0, 0, 0], [0, 1, 0, 0], [2, 0, 1, 0], [0, 2, 0, 1], [0, 0, 2, 0], [0, 0, 0, 2]],
        dtype=FLOAT,
    )
    jacobian = xcorr.jacobian_x(np.array([[[1.0, 2.0]]]), (1, 2, 3))
    assert jacobian.shape == (6, 4)
    assert_canonical(jacobian)
    np.testing.assert_array_equal(jacobian.toarray(), expected)
    assert xcorr.output_shape((1, 2, 3), (1, 1, 2)) == (2, 2)


@given(case=cases(), data=st.data(), order=orders, layout=layouts)
def test_jacobian_x_equals_the_notes_loops(
    case: Case, data: st.DataObject, order: str, layout: str
) -> None:
    k = data.draw(tensors(case.k_shape), label="k")
    expected = nonzero(
        oracles.xcorr_jacobian_loops(case.x_shape, k, case.stride, case.pairs, case.dilation, order)
    )
    jacobian = xcorr.jacobian_x(k, case.x_shape, case.geometry, order=order, layout=layout)
    assert_canonical(jacobian)
    size_x = int(np.prod(case.x_shape))
    size_y = int(np.prod(xcorr.output_shape(case.x_shape, case.k_shape, case.geometry)))
    if layout == "in_out":
        assert jacobian.shape == (size_x, size_y)
        assert coo_dict(jacobian) == expected
    else:
        assert jacobian.shape == (size_y, size_x)
        assert coo_dict(jacobian) == transposed(expected)


@given(case=cases(), data=st.data(), order=orders, layout=layouts)
def test_jacobian_kernel_equals_the_loops(
    case: Case, data: st.DataObject, order: str, layout: str
) -> None:
    x = data.draw(tensors(case.x_shape), label="x")
    expected = nonzero(
        oracles.xcorr_kernel_jacobian_loops(
            x, case.k_shape, case.stride, case.pairs, case.dilation, order
        )
    )
    jacobian = xcorr.jacobian_kernel(x, case.k_shape, case.geometry, order=order, layout=layout)
    assert_canonical(jacobian)
    assert coo_dict(jacobian) == (expected if layout == "in_out" else transposed(expected))


@given(case=cases(), data=st.data(), order=orders, long_run=st.sampled_from([1, 2, 2**62]))
def test_blocks_and_border_pass_equal_the_notes_loops(
    case: Case, data: st.DataObject, order: str, long_run: int
) -> None:
    """Runs of LONG_RUN rows or more are written as strided blocks, the other rows by the border
    pass: 1 writes every run as blocks, 2**62 every row by the border pass."""
    k = data.draw(tensors(case.k_shape), label="k")
    x = data.draw(tensors(case.x_shape), label="x")
    expected_x = nonzero(
        oracles.xcorr_jacobian_loops(case.x_shape, k, case.stride, case.pairs, case.dilation, order)
    )
    expected_k = nonzero(
        oracles.xcorr_kernel_jacobian_loops(
            x, case.k_shape, case.stride, case.pairs, case.dilation, order
        )
    )
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(xcorr_builder, "LONG_RUN", long_run)
        jacobian_x = xcorr.jacobian_x(k, case.x_shape, case.geometry, order=order)
        jacobian_k = xcorr.jacobian_kernel(x, case.k_shape, case.geometry, order=order)
    for jacobian, expected in ((jacobian_x, expected_x), (jacobian_k, expected_k)):
        assert_canonical(jacobian)
        # int32 indices wherever the shape allows (SciPy would convert int64 on every product)
        assert jacobian.row.dtype == jacobian.col.dtype == np.int32
        assert coo_dict(jacobian) == expected


@pytest.mark.parametrize("order", ["F", "C"])
@pytest.mark.parametrize("layout", ["in_out", "out_in"])
@pytest.mark.parametrize("cached_pointers", [True, False])
def test_long_run_blocks_and_border_rows_together_equal_the_loops(
    order: str, layout: str, cached_pointers: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An image large enough for long runs on both axes, with borders of every kind around them.

    Two images and two kernels, stride (1, 2), dilation (2, 1) and uneven padding: each axis has
    interior runs (one per stride residue) next to short border runs, so one matrix holds strided
    blocks and border-pass rows side by side. Row pointers come from the per-geometry cache or
    are computed afresh.
    """
    if not cached_pointers:
        monkeypatch.setattr(xcorr_runs, "INDPTR_CACHE_ROWS", 0)
    rng = np.random.default_rng(12)
    x_shape, k = (2, 3, 14, 17), rng.uniform(0.5, 1.5, (2, 3, 3, 2))
    x = rng.uniform(0.5, 1.5, x_shape)
    stride, pairs, dilation = (1, 2), ((2, 1), (0, 3)), (2, 1)
    geometry = xcorr.XCorrGeometry(stride=stride, padding=pairs, dilation=dilation)
    expected_x = oracles.xcorr_jacobian_loops(x_shape, k, stride, pairs, dilation, order)
    expected_k = oracles.xcorr_kernel_jacobian_loops(x, k.shape, stride, pairs, dilation, order)
    jacobian_x = xcorr.jacobian_x(k, x_shape, geometry, order=order, layout=layout)
    jacobian_k = xcorr.jacobian_kernel(x, k.shape, geometry, order=order, layout=layout)
    for jacobian, expected in ((jacobian_x, expected_x), (jacobian_k, expected_k)):
        assert_canonical(jacobian)
        assert coo_dict(jacobian) == (expected if layout == "in_out" else transposed(expected))


@pytest.mark.parametrize("blocks", ["one", "many"])
@pytest.mark.parametrize(
    ("stride", "dilation", "pairs"),
    [
        ((2, 2), (1, 1), ((0, 0), (0, 0))),
        ((3, 2), (2, 1), ((1, 2), (0, 3))),
        ((2, 3), (1, 3), ((0, 0), (2, 2))),
    ],
)
def test_phase_shift_equals_the_loops(
    stride: tuple[int, int],
    dilation: tuple[int, int],
    pairs: tuple[tuple[int, int], tuple[int, int]],
    blocks: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Images split into stride phases (sizes not multiples of the stride, padding, dilation),
    the positions in one block or in many (a tiny column buffer)."""
    if blocks == "many":
        monkeypatch.setattr(xcorr_forward, "COLUMN_BUFFER", 0)
    rng = np.random.default_rng(7)
    x, k = rng.standard_normal((2, 3, 23, 19)), rng.standard_normal((2, 3, 3, 2))
    geometry = xcorr.XCorrGeometry(stride=stride, padding=pairs, dilation=dilation)
    expected = oracles.xcorr_forward_loops(x, k, stride, pairs, dilation)
    actual = xcorr.cross_correlate(x, k, geometry, method="phase_shift")
    scale = float(
        np.max(oracles.xcorr_forward_loops(np.abs(x), np.abs(k), stride, pairs, dilation))
    )
    np.testing.assert_allclose(actual, expected, rtol=EXACT["rtol"], atol=EXACT["atol"] * scale)


@given(case=cases(), data=st.data(), gathered=st.booleans())
def test_im2col_gathered_or_copied_by_blocks_equals_the_loops(
    case: Case, data: st.DataObject, gathered: bool
) -> None:
    """Small images gather their columns by a cached index, larger ones copy them by blocks."""
    x = data.draw(tensors(case.x_shape), label="x")
    k = data.draw(tensors(case.k_shape), label="k")
    expected = oracles.xcorr_forward_loops(x, k, case.stride, case.pairs, case.dilation)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(xcorr_columns, "GATHER_COLUMNS", 2**62 if gathered else 0)
        actual = xcorr.cross_correlate(x, k, case.geometry, method="im2col")
    np.testing.assert_allclose(
        actual, expected, rtol=EXACT["rtol"], atol=EXACT["atol"] * max(1, magnitude(x, k, case))
    )


@given(case=cases(), data=st.data())
def test_out_in_is_the_transpose_and_c_a_permutation_of_f(case: Case, data: st.DataObject) -> None:
    """CONVENTIONS sections 1-2, checked on the engine's own four variants."""
    k = data.draw(tensors(case.k_shape), label="k")
    y_shape = xcorr.output_shape(case.x_shape, case.k_shape, case.geometry)
    dense = {
        (order, layout): xcorr.jacobian_x(
            k, case.x_shape, case.geometry, order=order, layout=layout
        ).toarray()
        for order in ("F", "C")
        for layout in ("in_out", "out_in")
    }
    for order in ("F", "C"):
        np.testing.assert_array_equal(
            dense[(order, "out_in")], np.transpose(dense[(order, "in_out")])
        )
    in_perm, out_perm = permutation_f_to_c(case.x_shape), permutation_f_to_c(y_shape)
    np.testing.assert_array_equal(
        dense[("C", "in_out")], dense[("F", "in_out")][np.ix_(in_perm, out_perm)]
    )


def test_issue_acceptance_size() -> None:
    """(3, 224, 224) with a (3, 3, 3) kernel: nnz = 3*3*3*222*222, canonical, right entries."""
    k = np.arange(1.0, 28.0).reshape(3, 3, 3)
    jacobian = xcorr.jacobian_x(k, (3, 224, 224))
    assert jacobian.nnz == 3 * 3 * 3 * 222 * 222 == xcorr.nnz_x((3, 224, 224), (3, 3, 3))
    assert jacobian.shape == (3 * 224 * 224, 222 * 222)
    assert jacobian.has_canonical_format
    row, col = np.asarray(jacobian.row, np.int64), np.asarray(jacobian.col, np.int64)
    assert np.all(np.diff(row * jacobian.shape[1] + col) > 0)
    # a few entries, by the notes' formula: row flat_F(c, i + h, j + w), col flat_F(i, j)
    rng = np.random.default_rng(0)
    for _ in range(20):
        c, h, w = rng.integers(0, 3, 3)
        i, j = rng.integers(0, 222, 2)
        r = oracles.flat([c, i + h, j + w], [3, 224, 224], "F")
        q = oracles.flat([i, j], [222, 222], "F")
        position = np.searchsorted(row * jacobian.shape[1] + col, r * jacobian.shape[1] + q)
        assert (row[position], col[position]) == (r, q)
        assert jacobian.data[position] == k[c, h, w]


@given(case=cases())
def test_nnz_counts_match_the_matrices(case: Case) -> None:
    k = np.ones(case.k_shape)  # no zero taps
    x = np.ones(case.x_shape)  # no zero pixels
    expected = len(
        oracles.xcorr_jacobian_loops(case.x_shape, k, case.stride, case.pairs, case.dilation, "F")
    )
    assert xcorr.nnz_x(case.x_shape, case.k_shape, case.geometry) == expected
    assert xcorr.nnz_kernel(case.x_shape, case.k_shape, case.geometry) == expected
    assert xcorr.jacobian_x(k, case.x_shape, case.geometry).nnz == expected
    assert xcorr.jacobian_kernel(x, case.k_shape, case.geometry).nnz == expected


# ------------------------------------------------------------------------------------------
# Forward
# ------------------------------------------------------------------------------------------


@given(case=cases(), data=st.data(), method=st.sampled_from(METHODS))
def test_forward_equals_the_six_loops(case: Case, data: st.DataObject, method: str) -> None:
    x = data.draw(tensors(case.x_shape), label="x")
    k = data.draw(tensors(case.k_shape), label="k")
    expected = oracles.xcorr_forward_loops(x, k, case.stride, case.pairs, case.dilation)
    actual = xcorr.cross_correlate(x, k, case.geometry, method=method)
    assert actual.shape == expected.shape == xcorr.output_shape(x.shape, k.shape, case.geometry)
    assert actual.dtype == FLOAT
    np.testing.assert_allclose(
        actual, expected, rtol=EXACT["rtol"], atol=EXACT["atol"] * max(1, magnitude(x, k, case))
    )


@given(data=st.data())
def test_forward_matches_scipy_for_stride_1_valid(data: st.DataObject) -> None:
    """The notes' case, second opinion: per-channel scipy.signal.correlate summed over C."""
    C, H, W = (
        data.draw(st.integers(1, 3)),
        data.draw(st.integers(1, 6)),
        data.draw(st.integers(1, 6)),
    )
    kh, kw = data.draw(st.integers(1, H)), data.draw(st.integers(1, W))
    x = data.draw(tensors((C, H, W)), label="x")
    k = data.draw(tensors((C, kh, kw)), label="k")
    expected = sum(scipy.signal.correlate(x[c], k[c], mode="valid") for c in range(C))
    scale = max(1.0, float(np.sum(np.abs(x)) * np.max(np.abs(k))))
    np.testing.assert_allclose(
        xcorr.cross_correlate(x, k), expected, rtol=EXACT["rtol"], atol=EXACT["atol"] * scale
    )


@given(case=cases(), data=st.data(), order=orders)
def test_forward_via_the_jacobian_equals_the_direct_route(
    case: Case, data: st.DataObject, order: str
) -> None:
    """The notes: x * k = ten(J^T vec(x)), to 1e-12 relative."""
    x = data.draw(tensors(case.x_shape), label="x")
    k = data.draw(tensors(case.k_shape), label="k")
    direct = xcorr.cross_correlate(x, k, case.geometry)
    via_jacobian = xcorr.forward_via_jacobian(x, k, case.geometry, order=order)
    np.testing.assert_allclose(
        via_jacobian, direct, rtol=1e-12, atol=1e-12 * max(1, magnitude(x, k, case))
    )


def test_inputs_are_computed_in_float64() -> None:
    x = np.arange(12, dtype=np.float32).reshape(1, 3, 4)
    k = np.ones((1, 2, 2), dtype=np.int64)
    y = xcorr.cross_correlate(x, k)
    assert y.dtype == FLOAT
    np.testing.assert_array_equal(y, [[10.0, 14.0, 18.0], [26.0, 30.0, 34.0]])


# ------------------------------------------------------------------------------------------
# Derivatives: central differences, dot-product test, VJP = J vec(u)
# ------------------------------------------------------------------------------------------


@given(case=cases(max_side=4), data=st.data(), order=orders)
def test_jacobians_match_central_differences(case: Case, data: st.DataObject, order: str) -> None:
    x = data.draw(tensors(case.x_shape), label="x")
    k = data.draw(tensors(case.k_shape), label="k")
    atol = FD["atol"] * max(1, magnitude(x, k, case))

    def of_x(v: np.ndarray) -> np.ndarray:
        return xcorr.cross_correlate(v, k, case.geometry)

    def of_k(v: np.ndarray) -> np.ndarray:
        return xcorr.cross_correlate(x, v, case.geometry)

    fd_x = oracles.central_difference_jacobian(of_x, x, order)
    fd_k = oracles.central_difference_jacobian(of_k, k, order)
    jac_x = xcorr.jacobian_x(k, case.x_shape, case.geometry, order=order).toarray()
    jac_k = xcorr.jacobian_kernel(x, case.k_shape, case.geometry, order=order).toarray()
    np.testing.assert_allclose(jac_x, fd_x, rtol=FD["rtol"], atol=atol)
    np.testing.assert_allclose(jac_k, fd_k, rtol=FD["rtol"], atol=atol)


@given(case=cases(), data=st.data())
def test_vjp_dot_product(case: Case, data: st.DataObject) -> None:
    """<v, vjp(u)> == <jvp(v), u> for both arguments; the JVP is the bilinear forward."""
    y_shape = xcorr.output_shape(case.x_shape, case.k_shape, case.geometry)
    x = data.draw(tensors(case.x_shape), label="x")
    k = data.draw(tensors(case.k_shape), label="k")
    u = data.draw(tensors(y_shape), label="u")
    v_x = data.draw(tensors(case.x_shape), label="v_x")
    v_k = data.draw(tensors(case.k_shape), label="v_k")
    scale = max(1, magnitude(np.abs(v_x) + np.abs(x), np.abs(k) + np.abs(v_k), case))
    atol = EXACT["atol"] * scale * max(1, float(np.max(np.abs(u))))

    lhs_x = np.vdot(v_x, xcorr.vjp_x(k, u, case.x_shape, case.geometry))
    rhs_x = np.vdot(xcorr.cross_correlate(v_x, k, case.geometry), u)
    lhs_k = np.vdot(v_k, xcorr.vjp_kernel(x, u, case.k_shape, case.geometry))
    rhs_k = np.vdot(xcorr.cross_correlate(x, v_k, case.geometry), u)
    np.testing.assert_allclose(lhs_x, rhs_x, rtol=EXACT["rtol"], atol=atol * u.size)
    np.testing.assert_allclose(lhs_k, rhs_k, rtol=EXACT["rtol"], atol=atol * u.size)


@given(case=cases(), data=st.data(), order=orders)
def test_vjp_is_the_jacobian_times_the_cotangent(
    case: Case, data: st.DataObject, order: str
) -> None:
    """CONVENTIONS section 2: a VJP is ten(J vec(u)) with J in the in_out layout."""
    y_shape = xcorr.output_shape(case.x_shape, case.k_shape, case.geometry)
    x = data.draw(tensors(case.x_shape), label="x")
    k = data.draw(tensors(case.k_shape), label="k")
    u = data.draw(tensors(y_shape), label="u")
    u_vec = np.reshape(u, -1, order=order)
    jac_x = xcorr.jacobian_x(k, case.x_shape, case.geometry, order=order).toarray()
    jac_k = xcorr.jacobian_kernel(x, case.k_shape, case.geometry, order=order).toarray()
    expected_x = np.reshape(jac_x @ u_vec, case.x_shape, order=order)
    expected_k = np.reshape(jac_k @ u_vec, case.k_shape, order=order)
    scale = max(1.0, float(np.max(np.abs(u), initial=0.0))) * max(
        1.0, float(np.sum(np.abs(x))), float(np.sum(np.abs(k)))
    )
    atol = EXACT["atol"] * scale * u.size
    np.testing.assert_allclose(
        xcorr.vjp_x(k, u, case.x_shape, case.geometry), expected_x, rtol=EXACT["rtol"], atol=atol
    )
    np.testing.assert_allclose(
        xcorr.vjp_kernel(x, u, case.k_shape, case.geometry),
        expected_k,
        rtol=EXACT["rtol"],
        atol=atol,
    )


# ------------------------------------------------------------------------------------------
# Shape rule, geometry and domain errors
# ------------------------------------------------------------------------------------------


@given(
    size=st.integers(1, 12),
    taps=st.integers(1, 4),
    stride=st.integers(1, 4),
    dilation=st.integers(1, 3),
)
def test_same_and_full_padding(size: int, taps: int, stride: int, dilation: int) -> None:
    x_shape, k_shape = (1, size, size + 1), (1, taps, taps)
    same = xcorr.XCorrGeometry(stride=(stride, stride), padding="same", dilation=(dilation,) * 2)
    assert xcorr.output_shape(x_shape, k_shape, same) == (
        -(-size // stride),
        -(-(size + 1) // stride),
    )
    assert xcorr.padding_pairs(x_shape, k_shape, same) == (
        oracles.same_padding(size, taps, stride, dilation),
        oracles.same_padding(size + 1, taps, stride, dilation),
    )
    full = xcorr.XCorrGeometry(stride=(stride, stride), padding="full", dilation=(dilation,) * 2)
    span = (taps - 1) * dilation
    assert xcorr.padding_pairs(x_shape, k_shape, full) == ((span, span), (span, span))
    assert xcorr.output_shape(x_shape, k_shape, full)[0] == (size + span - 1) // stride + 1


@given(
    H=st.integers(1, 9),
    W=st.integers(1, 9),
    kh=st.integers(1, 9),
    kw=st.integers(1, 9),
    s_h=st.integers(1, 4),
    s_w=st.integers(1, 4),
)
def test_defaults_reduce_to_the_notes_output_size(
    H: int, W: int, kh: int, kw: int, s_h: int, s_w: int
) -> None:
    """floor((H - H') / s_H + 1) x floor((W - W') / s_W + 1), or a ShapeError if H' > H."""
    geometry = xcorr.XCorrGeometry(stride=(s_h, s_w))
    if kh > H or kw > W:
        with pytest.raises(ShapeError):
            xcorr.output_shape((2, H, W), (2, kh, kw), geometry)
    else:
        assert xcorr.output_shape((2, H, W), (2, kh, kw), geometry) == (
            (H - kh) // s_h + 1,
            (W - kw) // s_w + 1,
        )


@pytest.mark.parametrize(
    ("x_shape", "k_shape", "output"),
    [
        ((3, 7, 7), (3, 2, 2), (6, 6)),
        ((3, 7, 7), (5, 3, 2, 2), (5, 6, 6)),
        ((4, 3, 7, 7), (5, 3, 2, 2), (4, 5, 6, 6)),
        ((4, 3, 7, 7), (3, 2, 2), (4, 6, 6)),
    ],
)
def test_supported_rank_combinations(
    x_shape: tuple[int, ...], k_shape: tuple[int, ...], output: tuple[int, ...]
) -> None:
    assert xcorr.output_shape(x_shape, k_shape) == output
    y = xcorr.cross_correlate(np.ones(x_shape), np.ones(k_shape))
    np.testing.assert_array_equal(y, np.full(output, 3 * 2 * 2))


@pytest.mark.parametrize(
    ("x_shape", "k_shape", "geometry", "needles"),
    [
        ((3, 5, 5), (2, 3, 3), xcorr.XCorrGeometry(), ["[3, 5, 5]", "[2, 3, 3]", "channels"]),
        ((2, 3, 5, 5), (4, 2, 3, 3), xcorr.XCorrGeometry(), ["[2, 3, 5, 5]", "[4, 2, 3, 3]"]),
        ((1, 3, 3), (1, 4, 4), xcorr.XCorrGeometry(), ["[1, 3, 3]", "[1, 4, 4]"]),
        ((1, 5, 5), (1, 3, 3), xcorr.XCorrGeometry(dilation=(3, 1)), ["[1, 5, 5]", "7x3"]),
        (
            (1, 2, 2),
            (1, 4, 4),
            xcorr.XCorrGeometry(padding=((1, 0), (1, 1))),
            ["[1, 2, 2]", "[1, 4, 4]", "3x4"],
        ),
        ((5, 5), (1, 3, 3), xcorr.XCorrGeometry(), ["[5, 5]", "[1, 3, 3]"]),
        ((1, 1, 1, 5, 5), (1, 3, 3), xcorr.XCorrGeometry(), ["[1, 1, 1, 5, 5]"]),
        ((1, 0, 5), (1, 1, 1), xcorr.XCorrGeometry(), ["[1, 0, 5]"]),
    ],
)
def test_shape_errors_print_the_shapes(
    x_shape: tuple[int, ...],
    k_shape: tuple[int, ...],
    geometry: xcorr.XCorrGeometry,
    needles: list[str],
) -> None:
    for call in (xcorr.output_shape, xcorr.nnz_x, xcorr.nnz_kernel):
        with pytest.raises(ShapeError) as caught:
            call(x_shape, k_shape, geometry)
        for needle in needles:
            assert needle in str(caught.value)
    if 0 not in x_shape and len(x_shape) in (3, 4):
        with pytest.raises(ShapeError):
            xcorr.cross_correlate(np.ones(x_shape), np.ones(k_shape), geometry)
        with pytest.raises(ShapeError):
            xcorr.jacobian_x(np.ones(k_shape), x_shape, geometry)


@pytest.mark.parametrize(
    ("arguments", "needle"),
    [
        ({"stride": (0, 1)}, "[0, 1]"),
        ({"stride": (1, -2)}, "[1, -2]"),
        ({"dilation": (1, 0)}, "[1, 0]"),
        ({"padding": ((0, -1), (0, 0))}, "[0, -1]"),
        ({"padding": ((0, 0), (-3, 0))}, "[-3, 0]"),
        ({"padding": "SAME"}, "'SAME'"),
        ({"padding": ((1, 1),)}, "((1, 1),)"),
        ({"stride": (1.5, 1)}, "(1.5, 1)"),
        ({"stride": (True, 1)}, "(True, 1)"),
        ({"stride": 2}, "2"),
    ],
)
def test_parameter_errors_print_the_values(arguments: dict[str, object], needle: str) -> None:
    with pytest.raises(ParameterError) as caught:
        xcorr.XCorrGeometry(**arguments)  # type: ignore[arg-type]
    assert needle in str(caught.value)


def test_order_layout_method_and_cotangent_are_checked() -> None:
    k, x = np.ones((1, 2, 2)), np.ones((1, 3, 3))
    with pytest.raises(ParameterError, match="'A'"):
        xcorr.jacobian_x(k, (1, 3, 3), order="A")  # type: ignore[arg-type]
    with pytest.raises(ParameterError, match="'rows'"):
        xcorr.jacobian_kernel(x, (1, 2, 2), layout="rows")  # type: ignore[arg-type]
    with pytest.raises(ParameterError, match="'fft'"):
        xcorr.cross_correlate(x, k, method="fft")  # type: ignore[arg-type]
    with pytest.raises(ShapeError, match=r"\[3, 3\].*\[2, 2\]"):
        xcorr.vjp_x(k, np.ones((3, 3)), (1, 3, 3))
    with pytest.raises(ShapeError, match=r"\[2, 3\].*\[2, 2\]"):
        xcorr.vjp_kernel(x, np.ones((2, 3)), (1, 2, 2))


def test_choose_method_names_a_forward_method() -> None:
    assert xcorr.choose_method((3, 224, 224), (3, 3, 3)) == "gemm_shift"
    strided = xcorr.XCorrGeometry(stride=(2, 2))
    assert xcorr.choose_method((3, 224, 224), (3, 3, 3), strided) == "phase_shift"
    assert xcorr.choose_method((16, 64, 64), (8, 16, 3, 3), strided) == "im2col"
    assert xcorr.choose_method((1, 224, 224), (1, 3, 3), strided) == "im2col"
    assert xcorr.choose_method((3, 16, 16), (3, 3, 3), strided) == "im2col"  # gathered
    stride3 = xcorr.XCorrGeometry(stride=(3, 3))  # one tap per phase
    assert xcorr.choose_method((3, 224, 224), (3, 3, 3), stride3) == "im2col"
    assert xcorr.choose_method((3, 224, 224), (3, 5, 5), stride3) == "phase_shift"
    assert xcorr.choose_method((16, 64, 64), (8, 16, 3, 3)) == "tap_gemm"
    assert xcorr.choose_method((16, 64, 64), (16, 16, 3, 3)) == "im2col"


def test_engine_module_never_flattens_by_hand() -> None:
    """STYLE 3.1: only engine/layout.py reshapes a tensor to 1-D (every module of the kernel)."""
    package = Path(xcorr_columns.__file__).parent
    sources = [Path(xcorr.__file__), *sorted(package.glob("*.py"))]
    assert len(sources) > 2
    for path in sources:
        assert not re.search(r"\.ravel\(|\.flatten\(|reshape\(\s*-1\s*\)", path.read_text())


@given(case=cases(), data=st.data(), tiny=st.integers(1, 7))
def test_kernel_vjp_in_blocks_is_the_loops_jacobian_times_the_cotangent(
    case: Case, data: st.DataObject, tiny: int
) -> None:
    """At stride 1 the kernel VJP runs tap by tap over blocks of positions; tiny blocks here."""
    y_shape = xcorr.output_shape(case.x_shape, case.k_shape, case.geometry)
    x = data.draw(tensors(case.x_shape), label="x")
    u = data.draw(tensors(y_shape), label="u")
    jac_k = oracles.xcorr_kernel_jacobian_loops(
        x, case.k_shape, case.stride, case.pairs, case.dilation, "C"
    )
    expected = np.zeros(math.prod(case.k_shape))
    u_vec = np.reshape(u, -1)
    for (row, col), value in jac_k.items():
        expected[row] += value * u_vec[col]
    with pytest.MonkeyPatch.context() as patch:
        # blocks of a few positions (one kernel: tiny * 3 // C; several: tiny * 9 // (C K))
        patch.setattr(xcorr_transpose, "COLUMN_BUFFER", tiny * 3)
        patch.setattr(xcorr_transpose, "GEMM_BLOCK", tiny * 9)
        actual = xcorr.vjp_kernel(x, u, case.k_shape, case.geometry)
    atol = EXACT["atol"] * max(1.0, float(np.sum(np.abs(x)))) * max(1.0, float(np.abs(u).max()))
    np.testing.assert_allclose(np.reshape(actual, -1), expected, rtol=EXACT["rtol"], atol=atol)


@given(case=cases(max_side=8, max_stride=1, kernel_counts=(None, 1)), data=st.data())
def test_one_kernel_image_vjp_is_the_tap_by_tap_sum_bit_for_bit(
    case: Case, data: st.DataObject
) -> None:
    """One kernel at stride 1 (the flat-row path): the sums keep their order, so their bits.

    Each pixel adds the products k[c, h, w] u[n, i, j] tap after tap from +0, the order of the
    GEMM-per-tap route; signs of zeros included.
    """
    y_shape = xcorr.output_shape(case.x_shape, case.k_shape, case.geometry)
    k = data.draw(tensors(case.k_shape), label="k")
    u = data.draw(tensors(y_shape), label="u")
    signs = data.draw(arrays(np.bool_, y_shape), label="negative zeros")
    u = np.where(signs & (u == 0), -0.0, u)
    (top, _), (left, _) = case.pairs
    x_shape = case.x_shape if len(case.x_shape) == 4 else (1, *case.x_shape)
    N, C, H, W = x_shape
    k3 = np.reshape(k, k.shape[-3:])
    u3 = np.reshape(u, (N, *y_shape[-2:]))
    h_out, w_out = y_shape[-2:]
    kh, kw = k3.shape[-2:]
    padded = np.zeros((N, C, H + sum(case.pairs[0]), W + sum(case.pairs[1])))
    for h in range(kh):
        for w in range(kw):
            r, q = case.dilation[0] * h, case.dilation[1] * w
            for n in range(N):
                for c in range(C):
                    padded[n, c, r : r + h_out, q : q + w_out] += k3[c, h, w] * u3[n]
    expected = np.reshape(padded[:, :, top : top + H, left : left + W], case.x_shape)
    actual = xcorr.vjp_x(k, u, case.x_shape, case.geometry)
    assert actual.shape == expected.shape
    assert actual.tobytes() == np.ascontiguousarray(expected).tobytes()
