"""Benchmark ``Chain.jacobian``: sparse (COO) chain-rule products and dense strategies.

What is timed (order ``"F"``, layout ``"in_out"``, float64, the service's default limits):

1. **COO cases** (strategy ``chain``; ``forward``/``reverse`` would visit 10^9-10^10 entries and
   are refused by the plan, which is checked):

   - ``xcorr2d (3,224,224) k3 -> tanh``: kernel (3, 3, 3), one output map (222, 222);
   - ``xcorr2d (16,128,128) k5 -> relu -> avg_pool2d 2``: kernel (16, 5, 5), output (62, 62).

   Baseline, measured interleaved in the same run: building the cross-correlation COO alone,
   ``xcorr.jacobian_x(k, x.shape, geometry, order="F", layout="in_out")``. Target: chain <= 2x.
   When a case misses the target, a cProfile breakdown of ``Chain.jacobian`` is printed: every
   function's own time is attributed to the project call site that led to it (``chain.py`` step
   -> project helper -> the library entry point it called), plus the hottest compiled kernels.

2. **Dense cases** (every strategy, ``fmt="dense"``): ``xcorr2d (3,16,16) k3 -> tanh`` and
   ``linear 256->64 -> tanh -> linear 64->10``; ratio to the fastest of our strategies.
   ``torch.func.jacrev`` (float64) is an extra row when ``import torch`` succeeds; it is never
   installed by this project, and its absence is noted in the output.

Timing: one untimed warm-up call of every variant, then ``--repeat`` repetitions (more for
sub-millisecond cases, up to a time budget); in each repetition every variant of the case runs
once, in a rotating order, after a ``gc.collect()``, so machine load hits all alike. Medians.

Correctness, checked outside the timers before anything is printed (the run aborts otherwise):

- against references built here from NumPy index arithmetic and ``scipy.sparse`` only (no
  ``service`` code): the cross-correlation matrix ``J_x[flat(c, i+h, j+w), flat(i, j)] =
  k[c, h, w]``, validated by ``J_x^T vec(x) == sum_c scipy.signal.correlate(x[c], k[c], "valid")``,
  then multiplied by ``diag(tanh'(y))`` / ``diag(relu'(y))`` / the pooling matrix with SciPy,
  where ``y`` comes from ``scipy.signal.correlate``; dense cases likewise (``W1^T diag(tanh'(.))
  W2^T`` for the MLP);
- COO: canonical structure (``row``, ``col``) identical to the reference and to every other
  strategy the plan admits (``auto``, which must resolve to ``chain``), values within
  ``1e-12 * max|reference|``; the baseline ``jacobian_x`` equals the reference ``J_x`` the
  same way;
- dense: every strategy (and torch, ``1e-10``) within ``1e-12 * max|reference|``, and the COO
  results of all four strategies structurally identical.

Run: ``.venv/bin/python benchmarks/jacobian.py [--repeat 7] [--profile]`` (any cwd; ~30-60 s;
``--profile`` prints the breakdown for every COO case, not only those above the target).
"""

from __future__ import annotations

# isort: off
import _service_kernels  # noqa: F401  (the service's BLAS kernels: before NumPy loads OpenBLAS)

# isort: on
import argparse
import cProfile
import gc
import os
import platform
import pstats
import statistics
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import scipy
import scipy.signal
import scipy.sparse as sp

# The service is not installed as a package: import it from this checkout.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from service.config import Settings  # noqa: E402
from service.engine import xcorr  # noqa: E402
from service.engine.chain import Chain  # noqa: E402
from service.engine.errors import LimitExceeded  # noqa: E402
from service.engine.jacobian import Format  # noqa: E402
from service.engine.op import Op, get_op  # noqa: E402
from service.engine.strategy import Strategy  # noqa: E402
from service.engine.types import Order  # noqa: E402

try:  # optional third-party comparison; never installed by this project
    import torch
    import torch.func
except ImportError as error:  # pragma: no cover - depends on the environment
    torch = None
    TORCH_MISSING = f"{type(error).__name__}: {error}"
else:
    TORCH_MISSING = ""

SEED = 0
ORDER: Order = "F"
TARGET = 2.0  # chain COO time / xcorr COO alone
RTOL = 1e-12  # values, relative to the reference's largest magnitude
TORCH_RTOL = 1e-10
DENSE_BUDGET_S = 2.0  # timed seconds per dense case; more repetitions when calls are short
MAX_REPEAT = 200
# The service's default limits (config.Settings), not the environment's overrides.
MAX_DENSE = Settings.model_fields["max_dense_jacobian_elements"].default
MAX_NNZ = Settings.model_fields["max_coo_nnz"].default
STRATEGIES: tuple[Strategy, ...] = ("chain", "reverse", "forward", "auto")

# -- timing ---------------------------------------------------------------------------------------


def interleaved_ms(
    variants: dict[str, Callable[[], object]], repeat: int, budget_s: float = 0.0
) -> dict[str, list[float]]:
    """Time each variant; every repetition runs all of them, in a rotating order.

    One untimed warm-up call each; ``budget_s`` raises the repetition count (up to MAX_REPEAT)
    for short calls. Returns the samples in ms, per variant.
    """
    names = list(variants)
    start = time.perf_counter()
    for name in names:
        variants[name]()
    per_round = time.perf_counter() - start
    count = max(repeat, min(MAX_REPEAT, int(budget_s / max(per_round, 1e-9))))
    samples: dict[str, list[float]] = {name: [] for name in names}
    for rep in range(count):
        gc.collect()
        shift = rep % len(names)
        for name in names[shift:] + names[:shift]:
            t0 = time.perf_counter()
            variants[name]()
            samples[name].append(time.perf_counter() - t0)
    return {name: [1e3 * t for t in values] for name, values in samples.items()}


# -- independent references (NumPy index arithmetic + SciPy only) ---------------------------------


def canonical(matrix: Any) -> sp.coo_array:
    """SciPy's own canonical form: sorted by (row, col), duplicates summed, zeros dropped."""
    csr = sp.csr_array(matrix)
    csr.sum_duplicates()
    csr.sort_indices()
    csr.eliminate_zeros()
    return csr.tocoo()


def ref_xcorr_jacobian(k: np.ndarray, x_shape: Sequence[int]) -> sp.csr_array:
    """``J[flat_F(c, i+h, j+w), flat_F(i, j)] = k[c, h, w]`` (valid, stride 1, one map)."""
    C, H, W = x_shape
    _, kh, kw = k.shape
    ho, wo = H - kh + 1, W - kw + 1
    c, h, w, i, j = np.ix_(np.arange(C), np.arange(kh), np.arange(kw), np.arange(ho), np.arange(wo))
    row = c + C * (i + h) + C * H * (j + w)  # flat_F over (C, H, W)
    col = i + ho * j  # flat_F over (ho, wo)
    row, col, data = np.broadcast_arrays(row, col, k[:, :, :, None, None])
    coo = sp.coo_array((data.ravel(), (row.ravel(), col.ravel())), shape=(C * H * W, ho * wo))
    return sp.csr_array(coo)


def ref_forward(x: np.ndarray, k: np.ndarray) -> np.ndarray:
    """``sum_c scipy.signal.correlate(x[c], k[c], 'valid')``."""
    maps = [scipy.signal.correlate(x[c], k[c], mode="valid") for c in range(len(x))]
    return np.sum(maps, axis=0)


def ref_pool_matrix(shape: tuple[int, int], size: int) -> sp.csr_array:
    """Average pooling, window = stride = ``size``, as an (H*W, ho*wo) matrix, order F."""
    H, W = shape
    ho, wo = H // size, W // size
    a, b = np.meshgrid(np.arange(ho * size), np.arange(wo * size), indexing="ij")
    row = (a + H * b).ravel()
    col = (a // size + ho * (b // size)).ravel()
    data = np.full(row.size, 1.0 / size**2)
    return sp.csr_array(sp.coo_array((data, (row, col)), shape=(H * W, ho * wo)))


def ref_tail(names: Sequence[str], y: np.ndarray) -> sp.csr_array:
    """Product of the local Jacobians of the ops after the correlation, evaluated at ``y``."""
    product: sp.csr_array | None = None
    value = y
    for name in names:
        v = value.ravel(order="F")
        if name == "tanh":
            factor = sp.diags_array(1.0 - np.tanh(v) ** 2).tocsr()
            value = np.tanh(value)
        elif name == "relu":
            factor = sp.diags_array((v > 0).astype(np.float64)).tocsr()
            value = np.maximum(value, 0.0)
        elif name == "avg_pool2d":
            factor = ref_pool_matrix(value.shape, 2)
            ho, wo = value.shape[0] // 2, value.shape[1] // 2
            value = value[: 2 * ho, : 2 * wo].reshape(ho, 2, wo, 2).mean(axis=(1, 3))
        else:
            raise ValueError(name)
        product = factor if product is None else product @ factor
    assert product is not None
    return product


def reference_xcorr_chain(
    x: np.ndarray, k: np.ndarray, tail: Sequence[str]
) -> tuple[sp.csr_array, sp.csr_array]:
    """Return ``(J_x, J_h)`` for ``h = tail ∘ xcorr``, checked against SciPy's forward."""
    j_x = ref_xcorr_jacobian(k, x.shape)
    y = ref_forward(x, k)
    via_matrix = j_x.T @ x.ravel(order="F")
    err = np.max(np.abs(via_matrix - y.ravel(order="F"))) / np.max(np.abs(y))
    if not err <= RTOL:
        raise AssertionError(f"reference J_x^T vec(x) != scipy.signal.correlate: {err:.2e}")
    return j_x, j_x @ ref_tail(tail, y)


# -- comparisons ----------------------------------------------------------------------------------


def value_error(got: np.ndarray, want: np.ndarray) -> float:
    """``max|got - want| / max|want|``."""
    scale = float(np.max(np.abs(want))) if want.size else 1.0
    return float(np.max(np.abs(got - want))) / scale if got.size else 0.0


def check_coo(what: str, got: sp.coo_array, want: Any) -> float:
    """Structure identical to canonical ``want`` and values within RTOL; return the error."""
    want = canonical(want)
    if got.shape != want.shape or got.nnz != want.nnz:
        raise AssertionError(
            f"{what}: shape/nnz {got.shape}/{got.nnz} != reference {want.shape}/{want.nnz}"
        )
    if not (np.array_equal(got.row, want.row) and np.array_equal(got.col, want.col)):
        raise AssertionError(f"{what}: COO structure differs from the reference")
    err = value_error(got.data, want.data)
    if not err <= RTOL:
        raise AssertionError(f"{what}: values differ by {err:.2e} (relative) > {RTOL:g}")
    return err


def check_dense(what: str, got: np.ndarray, want: np.ndarray, rtol: float = RTOL) -> float:
    """Same shape and values within ``rtol * max|want|``; return the error."""
    if got.shape != want.shape:
        raise AssertionError(f"{what}: shape {got.shape} != reference {want.shape}")
    err = value_error(got, want)
    if not err <= rtol:
        raise AssertionError(f"{what}: values differ by {err:.2e} (relative) > {rtol:g}")
    return err


# -- cases ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Row:
    case: str
    variant: str
    samples: list[float]  # ms
    nnz: int
    ratio: float
    note: str = ""

    @property
    def ms(self) -> float:
        return statistics.median(self.samples)


def build_ops(k: np.ndarray, tail: Sequence[str]) -> list[Op]:
    """``[xcorr2d(k), *tail]`` through the registry (avg_pool2d: window 2)."""
    params: dict[str, dict[str, Any]] = {"avg_pool2d": {"size": 2}}
    return [get_op("xcorr2d")(kernel=k)] + [get_op(n)(**params.get(n, {})) for n in tail]


def jac(chain: Chain, x: np.ndarray, strategy: Strategy, fmt: Format) -> Any:
    return chain.jacobian(
        x, order=ORDER, strategy=strategy, fmt=fmt, max_dense_elements=MAX_DENSE, max_nnz=MAX_NNZ
    ).matrix


def xcorr_case(
    rng: np.random.Generator, x_shape: tuple[int, int, int], kh: int
) -> tuple[np.ndarray, np.ndarray]:
    """Input and a (C, kh, kh) kernel scaled by 1/sqrt(fan-in), so that y ~ N(0, 1)."""
    x = rng.standard_normal(x_shape)
    k = rng.standard_normal((x_shape[0], kh, kh)) / np.sqrt(x_shape[0] * kh * kh)
    return x, k


COO_CASES = [
    # (label, x shape, kernel size, ops after the correlation)
    ("xcorr2d (3,224,224) k3 → tanh", (3, 224, 224), 3, ("tanh",)),
    ("xcorr2d (16,128,128) k5 → relu → avg_pool2d 2", (16, 128, 128), 5, ("relu", "avg_pool2d")),
]


def coo_case(
    rng: np.random.Generator,
    label: str,
    x_shape: tuple[int, int, int],
    kh: int,
    tail: Sequence[str],
    repeat: int,
    notes: list[str],
) -> tuple[list[Row], Callable[[], object]]:
    x, k = xcorr_case(rng, x_shape, kh)
    ops = build_ops(k, tail)
    chain = Chain(ops, x.shape)
    geometry = ops[0].geometry  # type: ignore[attr-defined]

    # Verification, outside the timers.
    ref_jx, ref_jh = reference_xcorr_chain(x, k, tail)
    base = xcorr.jacobian_x(k, x.shape, geometry, order=ORDER, layout="in_out")
    err_base = check_coo(f"{label}: jacobian_x", base, ref_jx)
    got = jac(chain, x, "chain", "coo")
    err_chain = check_coo(f"{label}: chain", got, ref_jh)
    plan = chain.plan(strategy="auto", fmt="coo", max_dense_elements=MAX_DENSE, max_nnz=MAX_NNZ)
    if plan.strategy != "chain":
        raise AssertionError(f"{label}: auto chose {plan.strategy}, expected chain")
    auto = jac(chain, x, "auto", "coo")
    check_coo(f"{label}: auto", auto, got)
    refused = []
    for strategy in ("forward", "reverse"):
        try:
            chain.plan(strategy=strategy, fmt="coo", max_dense_elements=MAX_DENSE, max_nnz=MAX_NNZ)
        except LimitExceeded:
            refused.append(strategy)
        else:
            check_coo(f"{label}: {strategy}", jac(chain, x, strategy, "coo"), got)
    verified = (
        f"{label}: chain COO == SciPy reference J_x·tail (structure identical, nnz {got.nnz:,},"
        f" max rel. error {err_chain:.1e}, indices {got.row.dtype}); jacobian_x == reference J_x"
        f" (error {err_base:.1e}, indices {base.row.dtype});"
        f" auto → chain, identical; {'/'.join(refused) or 'none'} refused by the plan"
        f" ({plan.dense_elements:,} entries to visit > max_dense_elements {MAX_DENSE:,})"
        + ("" if len(refused) == 2 else "; the others matched chain")
    )
    del ref_jx, ref_jh, auto

    def chain_call() -> object:
        return jac(chain, x, "chain", "coo")

    variants: dict[str, Callable[[], object]] = {
        "xcorr COO alone (jacobian_x)": lambda: xcorr.jacobian_x(
            k, x.shape, geometry, order=ORDER, layout="in_out"
        ),
        "chain": chain_call,
    }
    samples = interleaved_ms(variants, repeat)
    base_ms, chain_ms = (samples[n] for n in variants)
    ratio = statistics.median(chain_ms) / statistics.median(base_ms)
    rows = [
        Row(label, "xcorr COO alone (jacobian_x)", base_ms, base.nnz, 1.0, "baseline"),
        Row(
            label,
            "chain",
            chain_ms,
            got.nnz,
            ratio,
            "meets ≤2×" if ratio <= TARGET else "**misses ≤2×**",
        ),
    ]
    notes.append(f"{verified}; {len(chain_ms)} timed repetitions")
    return rows, chain_call


DENSE_CASES = ["xcorr2d (3,16,16) k3 → tanh", "linear 256→64 → tanh → linear 64→10"]


def dense_inputs(rng: np.random.Generator, label: str) -> tuple[Chain, np.ndarray, np.ndarray, Any]:
    """Chain, input, independent dense reference and an optional torch function."""
    if label.startswith("xcorr2d"):
        x, k = xcorr_case(rng, (3, 16, 16), 3)
        chain = Chain(build_ops(k, ("tanh",)), x.shape)
        _, ref_sparse = reference_xcorr_chain(x, k, ("tanh",))
        torch_fn: Callable[[Any], Any] | None = None
        if torch is not None:
            kt = torch.from_numpy(k)[None]  # (1, C, kh, kw)

            def conv_tanh(t: Any) -> Any:  # (C, H, W) -> (ho, wo)
                return torch.tanh(torch.nn.functional.conv2d(t[None], kt)[0, 0])

            torch_fn = conv_tanh
        return chain, x, ref_sparse.toarray(), torch_fn
    x = rng.standard_normal(256)
    w1, b1 = rng.standard_normal((64, 256)) / 16, rng.standard_normal(64)
    w2, b2 = rng.standard_normal((10, 64)) / 8, rng.standard_normal(10)
    linear = get_op("linear")
    chain = Chain(
        [linear(weight=w1, bias=b1), get_op("tanh")(), linear(weight=w2, bias=b2)], (256,)
    )
    ref = w1.T @ np.diag(1.0 - np.tanh(w1 @ x + b1) ** 2) @ w2.T  # (256, 10), in_out
    torch_fn = None
    if torch is not None:
        tw1, tb1, tw2, tb2 = (torch.from_numpy(a) for a in (w1, b1, w2, b2))

        def mlp(t: Any) -> Any:
            return tw2 @ torch.tanh(tw1 @ t + tb1) + tb2

        torch_fn = mlp

    return chain, x, ref, torch_fn


def torch_in_out(jacobian: Any, in_shape: tuple[int, ...], out_shape: tuple[int, ...]) -> Any:
    """jacrev's (*out_shape, *in_shape) -> our (in_size, out_size), both flattened in order F."""
    array = jacobian.numpy()
    n_out = len(out_shape)
    moved = np.moveaxis(array, tuple(range(n_out)), tuple(range(-n_out, 0)))
    return np.reshape(moved, (int(np.prod(in_shape)), int(np.prod(out_shape))), order="F")


def dense_case(rng: np.random.Generator, label: str, repeat: int, notes: list[str]) -> list[Row]:
    chain, x, ref, torch_fn = dense_inputs(rng, label)
    errors: dict[str, float] = {}
    coo = {s: jac(chain, x, s, "coo") for s in STRATEGIES}
    for s in STRATEGIES:
        errors[s] = check_dense(f"{label}: {s}", jac(chain, x, s, "dense"), ref)
        check_coo(f"{label}: {s} (coo)", coo[s], coo["chain"])
    plan = chain.plan(strategy="auto", fmt="dense", max_dense_elements=MAX_DENSE, max_nnz=MAX_NNZ)
    variants: dict[str, Callable[[], object]] = {
        s: (lambda s=s: jac(chain, x, s, "dense")) for s in STRATEGIES
    }
    if torch_fn is not None:
        xt = torch.from_numpy(x)
        jt = torch_in_out(torch.func.jacrev(torch_fn)(xt), chain.in_shape, chain.out_shape)
        errors["torch"] = check_dense(f"{label}: torch.func.jacrev", jt, ref, TORCH_RTOL)
        variants["torch.func.jacrev (f64)"] = lambda: torch.func.jacrev(torch_fn)(xt)
    samples = interleaved_ms(variants, repeat, DENSE_BUDGET_S)
    fastest = min(statistics.median(samples[s]) for s in STRATEGIES)
    nnz = int(np.count_nonzero(ref))
    rows = []
    for name, ms in samples.items():
        variant = f"auto (→ {plan.strategy})" if name == "auto" else name
        rows.append(Row(label, variant, ms, nnz, statistics.median(ms) / fastest))
    count = len(samples["chain"])
    worst = max(errors.values())
    notes.append(
        f"{label}: dense {chain.in_shape}→{chain.out_shape} = {ref.size:,} entries; all"
        f" {len(errors)} results == independent reference (max rel. error {worst:.1e}); COO"
        f" results of all 4 strategies structurally identical; {count} timed repetitions"
    )
    return rows


# -- where the time goes --------------------------------------------------------------------------

_PROJECT = str(Path(__file__).resolve().parents[1] / "service")
Key = tuple[str, int, str]


def _label(key: Key) -> str:
    """``chain.py:trace``, ``ops/xcorr.py:_local_jacobian``, ``sparse/_coo.py:tocsr``, ..."""
    file, _, name = key
    if file == "~":  # a built-in or compiled function
        return name.strip("<>").replace("built-in method ", "").replace("method ", "")
    path = Path(file)
    if file.startswith(_PROJECT):
        engine = Path(_PROJECT) / "engine"
        return f"{path.relative_to(engine if path.is_relative_to(engine) else _PROJECT)}:{name}"
    return f"{path.parent.name}/{path.name}:{name}"


def _attribute(stats: dict[Key, Any]) -> tuple[dict[str, float], dict[tuple[str, str], float]]:
    """Split every function's own time over its call sites (see :func:`breakdown`)."""
    sites: dict[str, float] = defaultdict(float)
    leaves: dict[tuple[str, str], float] = defaultdict(float)

    def walk(
        key: Key, t: float, path: tuple[str, ...], callee: str, seen: frozenset[Key], leaf: str
    ) -> None:
        is_top = key[0].endswith("chain.py") and key[2] == "jacobian"
        callers = {c: v[3] for c, v in stats[key][4].items() if c not in seen and c != key}
        if not is_top:
            if key[0].startswith(_PROJECT):
                if not path or path[0] != _label(key):  # collapse recursion
                    path = (_label(key), *path)
            elif not path:
                callee = _label(key)
        if is_top or not callers:
            site = " → ".join((*path, callee) if callee else path) or callee
            sites[site] += t
            leaves[(leaf, site)] += t
            return
        whole = sum(callers.values())
        for caller, share in callers.items():
            weight = share / whole if whole > 0 else 1.0 / len(callers)
            walk(caller, t * weight, path, callee, seen | {key}, leaf)

    for key, entry in stats.items():
        if entry[2] > 0:
            walk(key, entry[2], (), "", frozenset(), _label(key))
    return sites, leaves


def breakdown(
    fn: Callable[[], object], calls: int = 5
) -> tuple[float, list[tuple[str, float]], list[tuple[str, float, str]]]:
    """cProfile ``fn`` call by call; attribute every function's own time to its call site.

    The site of a function is the path of project frames above it, below ``Chain.jacobian``,
    ending with the first non-project function the innermost project frame called (the library
    entry point). Time reached through several callers is split by their cumulative shares.
    Each call is profiled on its own; the medians over the calls are returned (seconds): the
    total under the profiler, the sites, and the hottest functions with their main site.
    """
    fn()
    totals: list[float] = []
    per_site: dict[str, list[float]] = defaultdict(list)
    per_leaf: dict[tuple[str, str], list[float]] = defaultdict(list)
    for _ in range(calls):
        gc.collect()
        profile = cProfile.Profile()
        profile.enable()
        fn()
        profile.disable()
        stats: dict[Key, Any] = pstats.Stats(profile).stats  # type: ignore[attr-defined]
        totals.append(sum(entry[2] for entry in stats.values()))
        sites, leaves = _attribute(stats)
        for site, t in sites.items():
            per_site[site].append(t)
        for pair, t in leaves.items():
            per_leaf[pair].append(t)

    def median(values: list[float]) -> float:  # a site missing from a call counts as 0
        return statistics.median(values + [0.0] * (calls - len(values)))

    site_rows = sorted(((s, median(v)) for s, v in per_site.items()), key=lambda r: -r[1])
    by_leaf: dict[str, dict[str, float]] = defaultdict(dict)
    for (leaf, site), values in per_leaf.items():
        by_leaf[leaf][site] = median(values)
    kernel_rows = []
    for leaf, where in by_leaf.items():
        main = max(where, key=where.__getitem__)
        more = f" (+{len(where) - 1} more)" if len(where) > 1 else ""
        kernel_rows.append((leaf, sum(where.values()), main + more))
    kernel_rows.sort(key=lambda r: -r[1])
    return statistics.median(totals), site_rows, kernel_rows


def print_breakdown(label: str, fn: Callable[[], object], chain_ms: float) -> None:
    calls = 5
    total, sites, kernels = breakdown(fn, calls)
    print(
        f"\n#### Where the time goes: {label}\n\ncProfile, {calls} calls profiled one by one,"
        f" medians: {1e3 * total:.1f} ms/call under the profiler ({chain_ms:.1f} ms timed)."
        " Sites below 1% are omitted.\n"
    )
    print("| call site (project frames → library entry point) | ms/call | % |")
    print("|---|---:|---:|")
    for site, t in sites:
        if t >= 0.01 * total:
            print(f"| `{site}` | {1e3 * t:.1f} | {100 * t / total:.0f} |")
    print("\n| hottest functions (own time) | ms/call | % | main call site |")
    print("|---|---:|---:|---|")
    for leaf, t, site in kernels[:8]:
        print(f"| `{leaf}` | {1e3 * t:.1f} | {100 * t / total:.0f} | `{site}` |")


# -- report ---------------------------------------------------------------------------------------


def table(rows: list[Row], ratio_header: str, with_note: bool) -> str:
    header = f"| case | strategy | median ms | min–max ms | nnz | {ratio_header} |"
    lines = [
        header + (" target |" if with_note else ""),
        "|---|---|---:|---:|---:|---:|" + ("---|" if with_note else ""),
    ]
    for r in rows:
        spread = f"{min(r.samples):.2f}–{max(r.samples):.2f}"
        line = f"| {r.case} | {r.variant} | {r.ms:.2f} | {spread} | {r.nnz:,} | {r.ratio:.2f}× |"
        lines.append(line + (f" {r.note} |" if with_note else ""))
    return "\n".join(lines)


def machine_facts(load_before: tuple[float, ...], elapsed: float) -> str:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        blas = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
        blas_text = f"{blas.get('name')} {blas.get('version')}"
    except Exception:  # noqa: BLE001 - informational only
        blas_text = "unknown"
    load_after = os.getloadavg()
    threads = {
        v: os.environ[v]
        for v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "OPENBLAS_CORETYPE")
        if v in os.environ
    }
    return (
        f"- machine: {cpu}, os.cpu_count()={os.cpu_count()}, usable cpus="
        f"{len(os.sched_getaffinity(0))}, {platform.machine()} {platform.system()};"
        f" python {platform.python_version()}, numpy {np.__version__} ({blas_text}),"
        f" scipy {scipy.__version__}; thread env {threads or 'unset'};"
        f" 1-min load average {load_before[0]:.2f} before, {load_after[0]:.2f} after;"
        f" benchmark wall time {elapsed:.1f} s"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Chain.jacobian: COO chain rule and dense strategies."
    )
    parser.add_argument("--repeat", type=int, default=7, help="timed repetitions, >= 5 (default 7)")
    parser.add_argument(
        "--profile",
        action="store_true",
        help="print the cProfile breakdown for every COO case, not only misses",
    )
    args = parser.parse_args(argv)
    if args.repeat < 5:
        parser.error("--repeat must be >= 5")
    load_before = os.getloadavg()
    started = time.perf_counter()
    rng = np.random.default_rng(SEED)
    notes: list[str] = []
    coo_rows: list[Row] = []
    profiles = []
    for label, x_shape, kh, tail in COO_CASES:
        rows, call = coo_case(rng, label, x_shape, kh, tail, args.repeat, notes)
        coo_rows += rows
        if args.profile or rows[-1].ratio > TARGET:
            profiles.append((label, call, rows[-1].ms))
    dense_rows: list[Row] = []
    for label in DENSE_CASES:
        dense_rows += dense_case(rng, label, args.repeat, notes)
    print("### COO Jacobian by `chain` vs building the xcorr COO alone (same run)\n")
    print(table(coo_rows, "× xcorr COO alone", True))
    print("\n### Dense Jacobian by strategy\n")
    print(table(dense_rows, "× fastest strategy", False))
    if torch is None:
        print(f"\ntorch.func.jacrev column skipped: `import torch` failed ({TORCH_MISSING}).")
    print("\n### Verification (outside the timers)\n")
    for note in notes:
        print(f"- {note}")
    print(
        f"- order {ORDER}, layout in_out, float64; limits max_dense_elements={MAX_DENSE:,},"
        f" max_nnz={MAX_NNZ:,}; median of the timed repetitions after one warm-up, variants of a"
        " case interleaved (rotating order, gc.collect() before each round); data numpy"
        f" default_rng({SEED}), kernels scaled by 1/sqrt(C·kh·kw)"
    )
    for label, call, ms in profiles:  # after all timings, so profiling cannot disturb them
        print_breakdown(label, call, ms)
    print()
    print(machine_facts(load_before, time.perf_counter() - started))
    return 0


if __name__ == "__main__":
    sys.exit(main())
