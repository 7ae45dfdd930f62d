"""Work and peak transient memory of a computation, estimated from shapes alone (CONVENTIONS 7).

Sizes alone do not bound a computation: a 2 KB request can ask for a 3000 x 3000 padded image
times a 30 x 30 kernel, or for 63 products of 16e6 x 16e6 sparse matrices. Every request is
therefore costed before any arithmetic, in three numbers (:class:`Cost`):

``flops``
    Floating-point operations (a multiply-add counts 2). Bounds the arithmetic.
``bytes_touched``
    Bytes read or written by memory-bound passes: copies, padding, index arithmetic, sparse
    conversions (SciPy's CSR conversions touch ``rows + 1`` pointers whatever the non-zeros).
``peak_bytes``
    The largest amount of transient memory held at once: results, workspaces (padded images,
    index grids, SpGEMM accumulators, basis blocks) and buffers.

``work = flops + bytes_touched`` is bounded by ``SERVICE_MAX_WORK``; at the speeds measured on
the 2-core CI machines (0.3-3 ns per unit) the default of 10^10 is a few seconds of one core.
The constants below were measured with :mod:`tracemalloc` (``tests/engine/test_cost.py`` checks
that each estimate bounds the measured peak, within a stated factor); each rule names the code
whose allocations it follows. Operations without a rule of their own are costed from their
sparsity bound and workspace, which covers every registered operation (and new ones) safely.
"""

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from . import layout, xcorr
from .errors import LimitExceeded
from .op import Op
from .ops.xcorr import CrossCorrelate2D
from .types import Shape

# Which derivative passes a batch goes through: tangents pushed forward, cotangents pulled back,
# or either (the larger cost of the two).
Direction = Literal["jvp", "vjp", "both"]
FLOAT = 8
INDEX = 8
# A COO entry: int64 row and column, float64 value.
COO_ENTRY = 24
# Element operations per input or output element of an operation (transcendental functions,
# comparisons, masks); multiply-adds are counted from the sparsity bound on top.
ELEMENT_FLOPS = 16
# Arrays of the output's size alive at once inside one rule (result, masks, products).
TEMPORARIES = 4
# Fixed buffers of the kernels (im2col's 2 MiB column buffer, GEMM blocks, SciPy scratch).
BUFFERS = 8 << 20
# Copies of a sparse matrix alive at once while it is built or canonicalized (COO, CSR, sorted).
SPARSE_COPIES = 4
# Bytes per (output, tap) pair of the per-axis index grids of the sorted COO builder
# (xcorr._axis_pattern: int64 grid, mask, three coordinate arrays, a lexsort, two Python lists).
GRID_PAIR_BYTES = 160
# Peak bytes per entry of a cross-correlation Jacobian while it is built (xcorr._build: CSR with
# int32 indices and its COO view); measured 16.1-17.6 with tracemalloc, 10^6 to 5 x 10^7 entries.
XCORR_ENTRY_BYTES = 24
# Units of work per image row of the builder's Python loop over rows (about 1 us).
ROW_LOOP_WORK = 1_000


@dataclass(frozen=True)
class Cost:
    """What a computation costs: floating-point operations, bytes touched, peak bytes held."""

    flops: int = 0
    bytes_touched: int = 0
    peak_bytes: int = 0

    @property
    def work(self) -> int:
        """``flops + bytes_touched``: the quantity ``SERVICE_MAX_WORK`` bounds."""
        return self.flops + self.bytes_touched

    def then(self, other: "Cost") -> "Cost":
        """Return the cost of ``self`` followed by ``other`` (memory freed in between)."""
        return Cost(
            self.flops + other.flops,
            self.bytes_touched + other.bytes_touched,
            max(self.peak_bytes, other.peak_bytes),
        )

    def holding(self, held_bytes: int) -> "Cost":
        """Return this cost while ``held_bytes`` stay allocated throughout."""
        return Cost(self.flops, self.bytes_touched, self.peak_bytes + held_bytes)

    def times(self, count: int) -> "Cost":
        """Return the cost of running this ``count`` times in sequence."""
        return Cost(self.flops * count, self.bytes_touched * count, self.peak_bytes)


@dataclass(frozen=True)
class CostLimits:
    """Bounds from the service settings (the engine never reads settings)."""

    max_work: int
    max_memory_bytes: int


def check_cost(cost: Cost, limits: CostLimits, hint: str = "") -> None:
    """Raise :class:`LimitExceeded` if ``cost`` is over a bound, before anything is computed.

    Memory is checked first: a request that would not fit is refused as such, whatever its work.

    Parameters
    ----------
    cost : Cost
    limits : CostLimits
    hint : str, optional
        What the client can do instead.
    """
    if cost.peak_bytes > limits.max_memory_bytes:
        raise LimitExceeded(
            "peak transient memory bytes", cost.peak_bytes, limits.max_memory_bytes, hint,
            setting="max_request_memory_bytes",
        )  # fmt: skip
    if cost.work > limits.max_work:
        raise LimitExceeded(
            "work (floating-point operations + bytes touched)", cost.work, limits.max_work,
            hint, setting="max_work",
        )  # fmt: skip


# -- operations ----------------------------------------------------------------------------------


def rule_cost(n: int, m: int, workspace: int, multiply_adds: int, copied: int, batch: int) -> Cost:
    """Return the cost of one rule over ``n`` input and ``m`` output elements, per batch entry.

    ``workspace``: elements of its largest temporary; ``multiply_adds`` from the local Jacobian's
    non-zero bound; ``copied``: bytes copied on top (im2col's windows).
    """
    return Cost(
        flops=batch * (2 * multiply_adds + ELEMENT_FLOPS * (n + m)),
        bytes_touched=batch * (FLOAT * (n + m + 2 * workspace) + copied),
        peak_bytes=batch * FLOAT * (TEMPORARIES * (n + m) + 2 * workspace) + BUFFERS,
    )


def xcorr_forward_cost(
    x_shape: Shape,
    k_shape: Shape,
    geometry: xcorr.XCorrGeometry,
    batch: int = 1,
    direction: Direction = "both",
) -> Cost:
    """Return the cost of :func:`xcorr.cross_correlate` (any method but ``"jacobian"``) on a batch.

    Every method multiplies over the padded image, zeros included: ``N K C kh kw h_out w_out``
    multiply-adds per batch entry; im2col copies each window once (as many floats as
    multiply-adds over ``K``). On top, the scratch of the direction (:func:`xcorr_scratch`).
    """
    out_shape = xcorr.output_shape(x_shape, k_shape, geometry)
    out = layout.size_of(out_shape)
    multiply_adds = out * math.prod(k_shape[-3:])
    workspace = xcorr.workspace_elements(x_shape, k_shape, geometry)
    n = layout.size_of(x_shape)
    cost = rule_cost(n, out, workspace, multiply_adds, FLOAT * multiply_adds, batch)
    return cost.holding(FLOAT * xcorr_scratch(x_shape, k_shape, geometry, batch, direction))


def xcorr_scratch(
    x_shape: Shape, k_shape: Shape, geometry: xcorr.XCorrGeometry, batch: int, direction: Direction
) -> int:
    """Return the elements of a batch's cross-correlation scratch, beyond padding and results.

    ``"jvp"`` (and the forward): the batch's images go through one forward, whose method and
    blocks are chosen for the whole stack (``xcorr.scratch_elements`` of it): the shift methods'
    blocks of planes shrink as the stack grows, so they are not charged once per image. im2col's
    column buffer holds at least one output row's windows of every image: 26.8 GiB for a
    1 x 60000 kernel on one pixel with ``"full"`` padding. ``"vjp"``: the transposes hold, per
    image, ``C`` planes and the cotangent laid on the padded rows (``h_out x W_padded`` each;
    the kernel's: ``K`` of them), and a batch's kernel gradients.
    """
    images = batch * (x_shape[0] if len(x_shape) == 4 else 1)
    channels, kh, kw = k_shape[-3:]
    kernels = k_shape[0] if len(k_shape) == 4 else 1
    h_out, w_out = xcorr.output_shape(x_shape, k_shape, geometry)[-2:]
    jvp = max(
        xcorr.scratch_elements((images, *x_shape[-3:]), k_shape, geometry),
        xcorr.scratch_elements(x_shape, k_shape, geometry),  # a program's kernel JVP: per image
        images * w_out * channels * kh * kw,
    )
    (_, _), (left, right) = xcorr.padding_pairs(x_shape, k_shape, geometry)
    padded_width = x_shape[-1] + left + right
    # on the padded rows: the image's tap planes and cotangent (one kernel, stride 1), or the
    # kernel's cotangent pattern; per tap GEMM planes of C x h_out x w_out otherwise
    vjp = images * h_out * padded_width * (max(channels, kernels) + 1)
    vjp += batch * kernels * channels * kh * kw
    return {"jvp": jvp, "vjp": vjp, "both": max(jvp, vjp)}[direction]


def op_cost(
    op: Op, in_shape: Shape, batch: int = 1, forward: bool = False, direction: Direction = "both"
) -> Cost:
    """Return the cost of ``op`` (its forward, or one derivative rule) on a batch of inputs.

    Parameters
    ----------
    op : Op
    in_shape : tuple of int
        Shape of one input.
    batch : int
        Inputs pushed through at once (basis blocks, finite-difference directions).
    forward : bool
        The forward only: its workspace (``Op.forward_workspace_elements``), not the rules'.
    direction : {"jvp", "vjp", "both"}
        The rule's direction (the forward's scratch is a JVP's).

    Returns
    -------
    Cost
        Multiply-adds from the local Jacobian's non-zero bound (a cross-correlation's over its
        padded image), ``ELEMENT_FLOPS`` per element, and ``TEMPORARIES`` arrays of the output
        plus twice the workspace held at once.
    """
    if isinstance(op, CrossCorrelate2D):
        way = "jvp" if forward else direction
        return xcorr_forward_cost(in_shape, op.kernel.shape, op.geometry, batch, way)
    n = layout.size_of(in_shape)
    m = layout.size_of(op.out_shape(in_shape))
    workspace = (
        op.forward_workspace_elements(in_shape) if forward else op.workspace_elements(in_shape)
    )
    if not op.workspace_shared:
        return rule_cost(n, m, workspace, op.sparsity(in_shape).nnz, 0, batch)
    rule = rule_cost(n, m, 0, op.sparsity(in_shape).nnz, 0, batch)
    once = 2 * FLOAT * workspace
    return Cost(rule.flops, rule.bytes_touched + once, rule.peak_bytes + once)


def _sizes(shapes: Sequence[Shape]) -> list[int]:
    return [layout.size_of(shape) for shape in shapes]


def trace_cost(ops: Sequence[Op], shapes: Sequence[Shape], batch: int = 1) -> Cost:
    """Return the cost of evaluating a chain and keeping every intermediate (``Chain.trace``).

    Parameters
    ----------
    ops : sequence of Op
    shapes : sequence of tuple of int
        ``(in_shape, after op_1, ..., out_shape)``.
    batch : int

    Returns
    -------
    Cost
        The operations in sequence, with every intermediate held to the end.
    """
    total = Cost()
    for op, shape in zip(ops, shapes, strict=False):
        total = total.then(op_cost(op, shape, batch, forward=True))
    return total.holding(values_bytes(shapes, batch))


def values_bytes(shapes: Sequence[Shape], batch: int = 1) -> int:
    """Return the bytes of a chain's trace: every intermediate, as ``Chain.trace`` keeps them."""
    return batch * FLOAT * sum(_sizes(shapes))


def pass_cost(
    ops: Sequence[Op], shapes: Sequence[Shape], batch: int, direction: Direction = "both"
) -> Cost:
    """Return the cost of pushing (JVP) or pulling (VJP) a batch through every operation.

    Derivative rules cost at most what the forward does, twice (rule and its transpose's
    temporaries); the values of the trace are held by the caller. ``direction``: the pass's,
    or ``"both"`` when it is not known (a product of either kind, a check that does both).
    """
    total = Cost()
    for op, shape in zip(ops, shapes, strict=False):
        rule = op_cost(op, shape, batch, direction=direction)
        arrays = rule.peak_bytes - BUFFERS
        total = total.then(Cost(2 * rule.flops, 2 * rule.bytes_touched, 2 * arrays + BUFFERS))
    return total


def sparse_build_cost(nnz: int, rows: int, cols: int) -> Cost:
    """Return the cost of building and canonicalizing a sparse matrix of ``nnz`` entries.

    SciPy's conversions (COO -> CSR -> sorted COO) copy the entries a few times and allocate
    ``rows + 1`` row pointers, so a matrix with few entries but 16e6 rows is not free.
    """
    pointers = INDEX * (rows + cols + 2)
    return Cost(
        flops=2 * nnz,
        bytes_touched=SPARSE_COPIES * (COO_ENTRY * nnz + pointers),
        peak_bytes=SPARSE_COPIES * COO_ENTRY * nnz + 2 * pointers + BUFFERS,
    )


def spgemm_cost(
    rows: int, inner: int, cols: int, nnz_left: int, nnz_right: int, nnz_out: int
) -> Cost:
    """Return the cost of one sparse product ``(rows x inner) @ (inner x cols)``.

    SciPy's SMMP holds two accumulators of ``cols`` entries and the result's ``rows + 1``
    pointers; both operands are converted to CSR first.
    """
    pointers = INDEX * (rows + inner + 2)
    accumulators = 2 * FLOAT * cols
    entries = COO_ENTRY * (nnz_left + nnz_right + 2 * nnz_out)
    return Cost(
        flops=2 * nnz_out,
        bytes_touched=2 * (pointers + accumulators) + entries,
        peak_bytes=2 * pointers + accumulators + entries + BUFFERS,
    )


def dense_cost(rows: int, cols: int, copies: int = 2) -> Cost:
    """Return the cost of writing a dense ``rows x cols`` matrix (and ``copies`` of it held)."""
    size = FLOAT * rows * cols
    return Cost(flops=0, bytes_touched=copies * size, peak_bytes=copies * size)


# -- cross-correlation Jacobians -----------------------------------------------------------------


def xcorr_jacobian_cost(
    x_shape: Shape, k_shape: Shape, geometry: xcorr.XCorrGeometry, nnz: int
) -> Cost:
    """Return the cost of :func:`xcorr.jacobian_x` or :func:`xcorr.jacobian_kernel`.

    The sorted builder pairs every output row with every tap row on an ``h_out x kh`` grid (and
    ``w_out x kw`` for columns) before it drops the pairs outside the image: a 1 x 60000 kernel
    on a 1-pixel image with ``"full"`` padding makes a 3.6e9-pair grid for 60000 entries.
    """
    out = xcorr.output_shape(x_shape, k_shape, geometry)
    h_out, w_out = out[-2:]
    kh, kw = k_shape[-2:]
    height, width = x_shape[-2:]
    grid = GRID_PAIR_BYTES * (h_out * kh + w_out * kw)
    rows_loop = ROW_LOOP_WORK * (height + width + h_out + w_out + kh + kw)
    rows = layout.size_of(x_shape) + layout.size_of(k_shape)
    build = sparse_build_cost(nnz, rows, layout.size_of(out))
    # The builder writes CSR with 32-bit indices where they fit, once: its peak is per entry,
    # not SPARSE_COPIES COO copies (7x too much, measured on the shapes of test_cost).
    pointers = INDEX * (rows + layout.size_of(out) + 2)
    peak = XCORR_ENTRY_BYTES * nnz + 2 * pointers + BUFFERS
    return Cost(build.flops, build.bytes_touched + grid + rows_loop, peak + grid)
