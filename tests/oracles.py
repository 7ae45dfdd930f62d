"""Independent oracles for the engine tests: naive loops, central differences, tolerances.

Nothing here imports the service; the math is transcribed from ``seed-notes.md`` and
``CONVENTIONS.md`` as literally as possible (cf. JAX ``lax_reference.py``, MyGrad's loop
oracles). Slow on purpose: keep the shapes tiny.
"""

from collections.abc import Callable, Iterator, Sequence
from typing import NamedTuple

import numpy as np

EPS = float(np.finfo(np.float64).eps)

# One dtype-keyed table (JAX public_test_util style). "exact": two evaluations of the same sums
# in a different order; "fd": central differences of a bilinear map, whose only error is
# rounding amplified by 1/h with h = eps**(1/3). Absolute tolerances are relative to the scale
# of the compared values (see `scaled_atol`).
TOLERANCE: dict[np.dtype, dict[str, dict[str, float]]] = {
    np.dtype(np.float64): {
        "exact": {"rtol": 1e-12, "atol": 1e-12},
        "fd": {"rtol": 1e-6, "atol": 1e-7},
    },
    np.dtype(np.float32): {
        "exact": {"rtol": 1e-5, "atol": 1e-5},
        "fd": {"rtol": 1e-2, "atol": 1e-2},
    },
}


def tolerance(dtype: np.dtype | type, kind: str) -> dict[str, float]:
    """Return ``{"rtol", "atol"}`` for comparisons of ``kind`` ("exact" or "fd") in ``dtype``."""
    return TOLERANCE[np.dtype(dtype)][kind]


def scaled_atol(dtype: np.dtype | type, kind: str, *arrays: np.ndarray) -> float:
    """Absolute tolerance scaled by the largest magnitude among ``arrays`` (at least 1)."""
    scale = max([1.0, *(float(np.max(np.abs(a))) for a in arrays if np.size(a))])
    return tolerance(dtype, kind)["atol"] * scale


# ------------------------------------------------------------------------------------------
# The notes' flat, written literally
# ------------------------------------------------------------------------------------------


def flat(index: Sequence[int], dims: Sequence[int], order: str) -> int:
    """``flat_{d_1..d_n}(i_1..i_n) = sum_j i_j prod_{k<j} d_k`` ("F"); "C" uses ``prod_{k>j}``."""
    total = 0
    for j in range(len(index)):
        weight = 1
        if order == "F":
            for k in range(j):
                weight *= dims[k]
        else:
            for k in range(j + 1, len(dims)):
                weight *= dims[k]
        total += index[j] * weight
    return total


def same_padding(size: int, taps: int, stride: int, dilation: int) -> tuple[int, int]:
    """TF/JAX SAME padding of one axis: out = ceil(size/stride), smaller half first."""
    out = -(-size // stride)
    total = max((out - 1) * stride + (taps - 1) * dilation + 1 - size, 0)
    return (total // 2, total - total // 2)


def _unpack(x_shape: Sequence[int], k_shape: Sequence[int]) -> tuple[bool, bool, int, int]:
    """(has N, has K, N, K) for x (C,H,W)/(N,C,H,W) and k (C,kh,kw)/(K,C,kh,kw)."""
    has_n, has_k = len(x_shape) == 4, len(k_shape) == 4
    return has_n, has_k, (x_shape[0] if has_n else 1), (k_shape[0] if has_k else 1)


def _out_size(size: int, pads: tuple[int, int], taps: int, stride: int, dilation: int) -> int:
    return (size + pads[0] + pads[1] - dilation * (taps - 1) - 1) // stride + 1


# ------------------------------------------------------------------------------------------
# (a) The notes' five loops, generalized
# ------------------------------------------------------------------------------------------


class _Term(NamedTuple):
    """One product of the notes' loops: output ``(n, kk, i, j)`` reads pixel ``(c, r, q)``
    through tap ``(c, h, w)`` of kernel ``kk``."""

    n: int
    kk: int
    i: int
    j: int
    c: int
    h: int
    w: int
    r: int
    q: int


def _xcorr_terms(
    x_shape: Sequence[int],
    k_shape: Sequence[int],
    stride: tuple[int, int],
    padding_pairs: tuple[tuple[int, int], tuple[int, int]],
    dilation: tuple[int, int],
) -> tuple[list[int], Iterator[_Term]]:
    """The output shape and every product of the notes' seven loops whose pixel is real.

    Generalized by zero padding (taps in the padding are skipped), dilation, ``K`` kernels
    (output axis kk) and ``N`` images (output axis n). Terms come output by output, in C order
    of ``(n, kk, i, j)``, then ``c, h, w``.
    """
    has_n, has_k, n_images, n_kernels = _unpack(x_shape, k_shape)
    C, H, W = x_shape[-3:]
    kh, kw = k_shape[-2:]
    (pt, pb), (pl, pr) = padding_pairs
    h_out = _out_size(H, (pt, pb), kh, stride[0], dilation[0])
    w_out = _out_size(W, (pl, pr), kw, stride[1], dilation[1])
    out_shape = [*([n_images] if has_n else []), *([n_kernels] if has_k else []), h_out, w_out]

    def terms() -> Iterator[_Term]:
        for n in range(n_images):
            for kk in range(n_kernels):
                for i in range(h_out):
                    for j in range(w_out):
                        for c in range(C):
                            for h in range(kh):
                                for w in range(kw):
                                    r = stride[0] * i + dilation[0] * h - pt
                                    q = stride[1] * j + dilation[1] * w - pl
                                    if 0 <= r < H and 0 <= q < W:
                                        yield _Term(n, kk, i, j, c, h, w, r, q)

    return out_shape, terms()


def _out_index(t: _Term, has_n: bool, has_k: bool) -> list[int]:
    return [*([t.n] if has_n else []), *([t.kk] if has_k else []), t.i, t.j]


def xcorr_jacobian_loops(
    x_shape: Sequence[int],
    k: np.ndarray,
    stride: tuple[int, int],
    padding_pairs: tuple[tuple[int, int], tuple[int, int]],
    dilation: tuple[int, int],
    order: str,
) -> dict[tuple[int, int], float]:
    """The notes' algorithm for d(x*k)/dx in the in_out layout, as ``{(row, col): value}``.

    Generalized as :func:`_xcorr_terms` says; block diagonal over ``N`` images. Zero values are
    kept, exactly as the notes' assignment does.
    """
    has_n, has_k, _, _ = _unpack(x_shape, k.shape)
    out_shape, terms = _xcorr_terms(x_shape, k.shape, stride, padding_pairs, dilation)
    J: dict[tuple[int, int], float] = {}
    for t in terms:
        col = flat(_out_index(t, has_n, has_k), out_shape, order)
        in_index = [*([t.n] if has_n else []), t.c, t.r, t.q]
        row = flat(in_index, list(x_shape), order)
        J[(row, col)] = float(k[t.kk, t.c, t.h, t.w] if has_k else k[t.c, t.h, t.w])
    return J


def xcorr_kernel_jacobian_loops(
    x: np.ndarray,
    k_shape: Sequence[int],
    stride: tuple[int, int],
    padding_pairs: tuple[tuple[int, int], tuple[int, int]],
    dilation: tuple[int, int],
    order: str,
) -> dict[tuple[int, int], float]:
    """The same loops for d(x*k)/dk: row ``flat_k(kk, c, h, w)``, value the pixel it reads."""
    has_n, has_k, _, _ = _unpack(x.shape, k_shape)
    out_shape, terms = _xcorr_terms(x.shape, k_shape, stride, padding_pairs, dilation)
    J: dict[tuple[int, int], float] = {}
    for t in terms:
        col = flat(_out_index(t, has_n, has_k), out_shape, order)
        k_index = [*([t.kk] if has_k else []), t.c, t.h, t.w]
        row = flat(k_index, list(k_shape), order)
        J[(row, col)] = float(x[t.n, t.c, t.r, t.q] if has_n else x[t.c, t.r, t.q])
    return J


# ------------------------------------------------------------------------------------------
# (b) The naive forward
# ------------------------------------------------------------------------------------------


def xcorr_forward_loops(
    x: np.ndarray,
    k: np.ndarray,
    stride: tuple[int, int],
    padding_pairs: tuple[tuple[int, int], tuple[int, int]],
    dilation: tuple[int, int],
) -> np.ndarray:
    """``y[n, kk, i, j] = sum_{c,h,w} x_p[n, c, s_h i + d_h h, s_w j + d_w w] k[kk, c, h, w]``."""
    has_n, has_k, n_images, n_kernels = _unpack(x.shape, k.shape)
    out_shape, terms = _xcorr_terms(x.shape, k.shape, stride, padding_pairs, dilation)
    y = np.zeros((n_images, n_kernels, *out_shape[-2:]))
    for t in terms:
        # Terms of one output come together and in (c, h, w) order: the naive sum's order.
        pixel = x[t.n, t.c, t.r, t.q] if has_n else x[t.c, t.r, t.q]
        tap = k[t.kk, t.c, t.h, t.w] if has_k else k[t.c, t.h, t.w]
        y[t.n, t.kk, t.i, t.j] += pixel * tap
    keep = (slice(None) if has_n else 0, slice(None) if has_k else 0)
    return y[keep]


# ------------------------------------------------------------------------------------------
# (c) Central differences, returned in the notes' orientation
# ------------------------------------------------------------------------------------------


def to_spec_orientation(out_by_in: np.ndarray) -> np.ndarray:
    """Turn an (outputs x inputs) Jacobian (SciPy/JAX/PyTorch) into the notes' (in x out)."""
    return np.ascontiguousarray(np.transpose(out_by_in))


def central_difference_jacobian(
    f: Callable[[np.ndarray], np.ndarray], x: np.ndarray, order: str
) -> np.ndarray:
    """Dense Jacobian of ``f`` at ``x`` by central differences, in the in_out layout.

    Step rule of SciPy ``optimize._numdiff`` ("3-point"): ``h = eps**(1/3) * max(1, |x_i|)``,
    with ``h`` replaced by ``(x_i + h) - x_i`` so the step is exactly representable. Rows and
    columns are flattened in ``order``.
    """
    x = np.asarray(x, dtype=np.float64)
    x_vec = np.reshape(x, -1, order=order)
    y0 = np.asarray(f(x))
    rows = []
    for m in range(x_vec.size):
        step = EPS ** (1 / 3) * max(1.0, abs(x_vec[m]))
        step = (x_vec[m] + step) - x_vec[m]
        plus, minus = x_vec.copy(), x_vec.copy()
        plus[m] += step
        minus[m] -= step
        f_plus = np.asarray(f(np.reshape(plus, x.shape, order=order)))
        f_minus = np.asarray(f(np.reshape(minus, x.shape, order=order)))
        rows.append(np.reshape((f_plus - f_minus) / (2 * step), -1, order=order))
    # (inputs, outputs) stacked per input -> (outputs, inputs) as SciPy returns it
    out_by_in = np.stack(rows, axis=1) if rows else np.zeros((y0.size, 0))
    return to_spec_orientation(out_by_in)


# ------------------------------------------------------------------------------------------
# (d) Pooling over the last two axes, as loops (appended for the operation tests)
# ------------------------------------------------------------------------------------------


def pool2d_loops(
    x: np.ndarray,
    size: tuple[int, int],
    stride: tuple[int, int],
    reduce: Callable[[list[float]], float],
) -> np.ndarray:
    """``y[..., i, j] = reduce(x[..., s_H i + p, s_W j + q] for p < k_H, q < k_W)``, no padding."""
    *lead, H, W = x.shape
    h_out = (H - size[0]) // stride[0] + 1
    w_out = (W - size[1]) // stride[1] + 1
    y = np.zeros((*lead, h_out, w_out))
    for index in np.ndindex(*lead):
        for i in range(h_out):
            for j in range(w_out):
                window = [
                    float(x[(*index, stride[0] * i + p, stride[1] * j + q)])
                    for p in range(size[0])
                    for q in range(size[1])
                ]
                y[(*index, i, j)] = reduce(window)
    return y


def central_difference_error(
    f: Callable[[np.ndarray], np.ndarray], x: np.ndarray, order: str
) -> np.ndarray:
    """Estimated error of :func:`central_difference_jacobian`, entry by entry (in_out layout).

    Richardson: with the step doubled, the ``h^2`` truncation term grows fourfold, so
    ``|D(h) - D(2h)| / 3`` estimates the error of ``D(h)`` (and bounds its rounding noise, which
    ``D(2h)`` carries at half the size). Tests add twice this to their tolerance, so a correct
    derivative of a function that differences resolve poorly (an oscillation after a large gain)
    is not mistaken for a wrong one.
    """
    x = np.asarray(x, dtype=np.float64)
    x_vec = np.reshape(x, -1, order=order)
    rows = []
    for m in range(x_vec.size):
        quotients = []
        for stretch in (1.0, 2.0):
            step = stretch * EPS ** (1 / 3) * max(1.0, abs(x_vec[m]))
            step = (x_vec[m] + step) - x_vec[m]
            plus, minus = x_vec.copy(), x_vec.copy()
            plus[m] += step
            minus[m] -= step
            f_plus = np.asarray(f(np.reshape(plus, x.shape, order=order)))
            f_minus = np.asarray(f(np.reshape(minus, x.shape, order=order)))
            quotients.append(np.reshape((f_plus - f_minus) / (2 * step), -1, order=order))
        rows.append(np.abs(quotients[0] - quotients[1]) / 3)
    return np.stack(rows) if rows else np.zeros((0, np.asarray(f(x)).size))
