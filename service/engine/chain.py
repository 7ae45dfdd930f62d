"""Composition ``h = op_n ∘ ... ∘ op_1`` and its Jacobian by the seed notes' chain rule.

A :class:`Chain` checks every link's shape before any arithmetic, then evaluates, pushes tangents
forward (JVP), pulls cotangents back (VJP) and builds the whole Jacobian in one of three ways that
return the same matrix:

``"chain"``
    Multiply the local sparse Jacobians in application order, ``J_h = J_1 J_2 ... J_n`` (the notes'
    ``J_{f∘g} = J_g J_f`` generalized); the association order comes from a matrix-chain dynamic
    program on estimated cost. Each product takes the cheapest exact route
    (:func:`~service.engine.sparse.matmul`): a factor with one entry per row (elementwise,
    permutation, reduction, disjoint pooling) only scales and moves the other's entries; SciPy's
    sparse product does the rest.
``"forward"``
    Push the input basis through batched JVPs: each tangent ``e_i`` gives row ``i`` of ``J``.
``"reverse"``
    Pull the output basis back through batched VJPs: each cotangent ``e_j`` gives column ``j``.

``"auto"`` picks the cheapest by a cost estimate made from shapes alone (see :meth:`Chain.plan`).
Sizes are estimated, and limits enforced, before anything is allocated. Errors raised inside an
operation are re-raised with its position: ``"operation 2 (sum): ..."`` (0-based, as ``/ops/2``),
or with the :class:`~service.engine.errors.Place` given for it (a program's node: its label and
JSON pointer).
"""

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
import scipy.sparse as sp

from . import layout as index_layout
from .cancel import checkpoint
from .chain_dense import multiply, stencil_dense
from .errors import (
    DomainError,
    EngineError,
    LimitExceeded,
    NonFiniteError,
    ParameterError,
    Place,
    ShapeError,
)
from .jacobian import Format, Jacobian
from .op import Op, Sparsity, batch_of, check_order
from .sparse import Factor, canonicalize, coo_from_triplets, to_coo, to_dense
from .strategy import (
    BLOCK_ELEMENTS,
    NNZ_HINT,
    SPARSE_COST,
    STRATEGIES,
    JacobianPlan,
    Strategy,
    choose_strategy,
)
from .types import FloatArray, IndexArray, Layout, Order, Shape

__all__ = ["Chain"]

_Located = TypeVar("_Located", bound=EngineError)

_FORMATS: tuple[Format, ...] = ("coo", "dense")

# Plans kept per chain (one per strategy, format and limits asked for; a chain is immutable).
_PLANS_KEPT = 16

_DENSE_HINT = "ask for format 'coo', or use /v1/jvp or /v1/vjp"


def _require_finite(array: FloatArray, what: str) -> None:
    if not np.all(np.isfinite(array)):
        raise NonFiniteError(f"{what} has non-finite entries (overflow)")


@dataclass(frozen=True)
class _Bound:
    """Shape-only bounds on the product of the local Jacobians ``J_i ... J_j``."""

    rows: int
    cols: int
    nnz: int
    fan_out: int  # entries per row
    fan_in: int  # entries per column


class Chain:
    """The composition ``h = op_n ∘ ... ∘ op_1`` of operations applied in order.

    Parameters
    ----------
    ops : sequence of Op
        ``[op_1, ..., op_n]``, applied first to last; at least one.
    in_shape : sequence of int
        Shape of the input ``x``.
    places : sequence of Place, optional
        One per operation: how its errors name it. Default ``"operation i (name)"`` and no
        pointer, as the op list's messages always were; a program passes its nodes' places, so
        that its errors read the same whichever engine runs it.

    Raises
    ------
    ParameterError
        If ``ops`` is empty.
    ShapeError, ParameterError
        If a link does not fit; the message names the operation, e.g.
        ``"operation 2 (sum): axis 3 is out of range for input shape [2, 3] (rank 2)"``.

    Notes
    -----
    Every shape is computed here, before any arithmetic (JAX-style shape rules), so a request
    whose shapes do not compose fails without touching its data.
    """

    __slots__ = (
        "_association_memo",
        "_bounds",
        "_ops",
        "_places",
        "_plans",
        "_shapes",
        "_sparsity",
    )

    def __init__(
        self, ops: Sequence[Op], in_shape: Sequence[int], places: Sequence[Place] | None = None
    ) -> None:
        if not ops:
            raise ParameterError("a function needs at least one operation")
        self._ops = tuple(ops)
        if places is not None and len(places) != len(self._ops):
            raise ValueError(f"{len(places)} places for {len(self._ops)} operations")
        self._places = None if places is None else tuple(places)
        shape = index_layout.check_dims(in_shape, "input shape")
        shapes = [shape]
        sparsity = []
        for index, op in enumerate(self._ops):
            with self.blame(index):
                out_shape = index_layout.check_dims(op.out_shape(shape), "output shape")
                sparsity.append(op.sparsity(shape))
            shape = out_shape
            shapes.append(shape)
        self._shapes: tuple[Shape, ...] = tuple(shapes)
        self._sparsity: tuple[Sparsity, ...] = tuple(sparsity)
        self._bounds: dict[tuple[int, int], _Bound] = {}
        # Shapes decide both; a small dense Jacobian spent a sixth of its time re-planning.
        self._association_memo: tuple[dict[tuple[int, int], int], int, int] | None = None
        self._plans: dict[tuple[str, str, int, int], JacobianPlan] = {}

    @property
    def ops(self) -> tuple[Op, ...]:
        """The operations, in application order."""
        return self._ops

    def locate(self, index: int, error: _Located) -> _Located:
        """Return ``error`` again (same class) naming operation ``index``: label and pointer.

        The caller raises the result ``from error``.
        """
        if self._places is None:
            return type(error)(f"operation {index} ({self._ops[index].name}): {error}")
        return self._places[index].locate(error)

    @contextmanager
    def blame(self, index: int) -> Iterator[None]:
        """Re-raise an engine error (not a limit) inside operation ``index`` naming it."""
        try:
            yield
        except (ShapeError, ParameterError, DomainError, NonFiniteError) as error:
            raise self.locate(index, error) from error

    @property
    def shapes(self) -> tuple[Shape, ...]:
        """``(in_shape, shape after op_1, ..., out_shape)``: ``len(ops) + 1`` shapes."""
        return self._shapes

    @property
    def in_shape(self) -> Shape:
        """Shape of the input."""
        return self._shapes[0]

    @property
    def out_shape(self) -> Shape:
        """Shape of the output."""
        return self._shapes[-1]

    # -- evaluation ------------------------------------------------------------------------------

    def _input(self, x: FloatArray) -> FloatArray:
        x = np.asarray(x, dtype=np.float64)
        if x.shape != self.in_shape:
            raise ShapeError(
                f"input of shape {list(x.shape)} does not match the function's input shape "
                f"{list(self.in_shape)}"
            )
        return x

    def _batch(self, batch: FloatArray, side: Shape, what: str) -> FloatArray:
        return batch_of(batch, side, what, suffix=f" for the function's shape {list(side)}")

    def trace(self, x: FloatArray) -> tuple[FloatArray, ...]:
        """Evaluate and keep every intermediate: ``(x, op_1(x), ..., h(x))``.

        Parameters
        ----------
        x : ndarray, shape ``in_shape``

        Returns
        -------
        tuple of ndarray
            ``len(ops) + 1`` arrays with shapes :attr:`shapes`; the VJP needs them all.

        Raises
        ------
        ShapeError
            If ``x`` does not have shape ``in_shape``.
        DomainError, NonFiniteError
            If an operation refuses its input or overflows; the message names it.
        """
        values = [self._input(x)]
        for index, op in enumerate(self._ops):
            checkpoint()  # between operations: a cancelled or late computation stops here
            # An overflow is reported below as NonFiniteError, naming the operation.
            with self.blame(index), np.errstate(over="ignore"):
                y = op.forward(values[-1])
                _require_finite(y, "the result")
            values.append(y)
        return tuple(values)

    def forward(self, x: FloatArray) -> FloatArray:
        """Evaluate ``h(x)``.

        Parameters
        ----------
        x : ndarray, shape ``in_shape``

        Returns
        -------
        ndarray, shape ``out_shape``
        """
        return self.trace(x)[-1]

    def jvp(self, x: FloatArray, tangents: FloatArray) -> FloatArray:
        """Push tangents through the chain: ``ten(J_h^T vec(v))`` for each ``v``.

        Parameters
        ----------
        x : ndarray, shape ``in_shape``
        tangents : ndarray, shape (B, *in_shape)

        Returns
        -------
        ndarray, shape (B, *out_shape)

        Raises
        ------
        ShapeError
            If ``x`` or ``tangents`` do not fit ``in_shape``.
        DomainError, NonFiniteError
            From an operation, named by its index.
        """
        return self.jvp_to_last(x, tangents)[1]

    def jvp_to_last(self, x: FloatArray, tangents: FloatArray) -> tuple[FloatArray, FloatArray]:
        """:meth:`jvp`, and the input of the last operation that it evaluated on the way.

        :meth:`last` turns that input into ``h(x)``, so a caller that needs the value too (the
        request entry point) evaluates nothing twice.

        Returns
        -------
        value : ndarray, shape ``shapes[-2]``
            The last operation's input.
        tangents : ndarray, shape (B, *out_shape)
        """
        value = self._input(x)
        tangents = self._batch(tangents, self.in_shape, "tangents")
        for index, op in enumerate(self._ops):
            # An overflow (or inf * 0) is reported as NonFiniteError below, not as a warning.
            with self.blame(index), np.errstate(over="ignore", invalid="ignore"):
                if index + 1 < len(self._ops):
                    # The JVP's domain check first, as op.jvp would make it before the forward;
                    # then the rule gets the output it may be cheaper from (tanh' = 1 - y²).
                    op.check_domain(value, differentiating=True)
                    output = op.forward(value)
                    _require_finite(output, "the result")
                    tangents = op.jvp(value, tangents, output=output)
                    value = output
                else:
                    tangents = op.jvp(value, tangents)
        _require_finite(tangents, "the JVP")
        return value, tangents

    def last(self, value: FloatArray) -> FloatArray:
        """Apply the last operation to its input, as :meth:`trace` does: ``h(x)``.

        Parameters
        ----------
        value : ndarray, shape ``shapes[-2]``
            From :meth:`jvp_to_last`.
        """
        index = len(self._ops) - 1
        op = self._ops[index]
        with self.blame(index), np.errstate(over="ignore"):
            y = op.forward(value)
            _require_finite(y, "the result")
        return y

    def vjp(self, x: FloatArray, cotangents: FloatArray) -> FloatArray:
        """Pull cotangents back through the chain: ``ten(J_h vec(u))`` for each ``u``.

        Parameters
        ----------
        x : ndarray, shape ``in_shape``
        cotangents : ndarray, shape (B, *out_shape)

        Returns
        -------
        ndarray, shape (B, *in_shape)

        Raises
        ------
        ShapeError
            If ``x`` or ``cotangents`` do not fit the function's shapes.
        DomainError, NonFiniteError
            From an operation, named by its index.
        """
        return self.vjp_with_value(x, cotangents)[1]

    def vjp_with_value(
        self, x: FloatArray, cotangents: FloatArray
    ) -> tuple[FloatArray, FloatArray]:
        """:meth:`vjp` and ``h(x)``, from the one trace the VJP runs.

        Returns
        -------
        value : ndarray, shape ``out_shape``
        cotangents : ndarray, shape (B, *in_shape)
        """
        cotangents = self._batch(cotangents, self.out_shape, "cotangents")
        values = self.trace(x)
        return values[-1], self._pull(values, cotangents)

    def _push(self, values: tuple[FloatArray, ...], tangents: FloatArray) -> FloatArray:
        for index, op in enumerate(self._ops):
            checkpoint()
            with self.blame(index), np.errstate(over="ignore", invalid="ignore"):
                tangents = op.jvp(values[index], tangents)
        return tangents

    def _pull(self, values: tuple[FloatArray, ...], cotangents: FloatArray) -> FloatArray:
        for index in range(len(self._ops) - 1, -1, -1):
            op = self._ops[index]
            checkpoint()
            with self.blame(index), np.errstate(over="ignore", invalid="ignore"):
                cotangents = op.vjp(values[index], cotangents, output=values[index + 1])
        _require_finite(cotangents, "the VJP")
        return cotangents

    # -- planning (shapes only) -----------------------------------------------------------------

    def _bound(self, i: int, j: int) -> _Bound:
        """Bound ``J_i ... J_j`` (0-based, inclusive) from the operations' sparsity bounds."""
        key = (i, j)
        if key in self._bounds:
            return self._bounds[key]
        rows = index_layout.size_of(self._shapes[i])
        cols = index_layout.size_of(self._shapes[j + 1])
        if i == j:
            s = self._sparsity[i]
            fan_out, fan_in = min(cols, s.fan_out), min(rows, s.fan_in)
            nnz = min(s.nnz, rows * fan_out, cols * fan_in)
        else:
            head, tail = self._bound(i, i), self._bound(i + 1, j)
            # An input reaches at most fan_out(J_i) rows of the rest, each reaching fan_out(rest).
            fan_out = min(cols, head.fan_out * tail.fan_out)
            fan_in = min(rows, head.fan_in * tail.fan_in)
            nnz = min(rows * fan_out, cols * fan_in)
            for k in range(i, j):
                left, right = self._bound(i, k), self._bound(k + 1, j)
                nnz = min(nnz, left.nnz * right.fan_out, right.nnz * left.fan_in)
        bound = _Bound(rows, cols, nnz, fan_out, fan_in)
        self._bounds[key] = bound
        return bound

    def _association(self) -> tuple[dict[tuple[int, int], int], int, int]:
        """Matrix-chain dynamic program: split points, estimated multiply-adds, peak nnz bound.

        Multiplying ``A = J_i..J_k`` by ``B = J_{k+1}..J_j`` takes
        ``sum_t nnz(A[:, t]) nnz(B[t, :])`` multiply-adds, at most
        ``min(nnz(A) fan_out(B), nnz(B) fan_in(A))``. Computed once per chain.
        """
        if self._association_memo is None:
            self._association_memo = self._associate()
        return self._association_memo

    def _associate(self) -> tuple[dict[tuple[int, int], int], int, int]:
        n = len(self._ops)
        cost: dict[tuple[int, int], int] = {(i, i): 0 for i in range(n)}
        split: dict[tuple[int, int], int] = {}
        for length in range(2, n + 1):
            for i in range(n - length + 1):
                j = i + length - 1
                best: tuple[int, int] | None = None
                for k in range(i, j):
                    left, right = self._bound(i, k), self._bound(k + 1, j)
                    flops = min(left.nnz * right.fan_out, right.nnz * left.fan_in)
                    total = cost[(i, k)] + cost[(k + 1, j)] + flops
                    if best is None or total < best[0]:
                        best = (total, k)
                assert best is not None  # j > i, so the loop ran
                cost[(i, j)], split[(i, j)] = best

        return split, cost[(0, n - 1)], self._peak(split, 0, n - 1)

    def _peak(self, split: dict[tuple[int, int], int], i: int, j: int) -> int:
        """Return the largest nnz bound of a product formed while ``J_i..J_j`` is multiplied.

        A method, not a closure of :meth:`_associate`: a closure that calls itself is a reference
        cycle, which kept every planned chain, its operations and their parameters alive until
        the next garbage collection.
        """
        if i == j:
            return self._bound(i, i).nnz
        k = split[(i, j)]
        return max(self._bound(i, j).nnz, self._peak(split, i, k), self._peak(split, k + 1, j))

    def nnz_bound(self) -> int:
        """Return an upper bound on the Jacobian's non-zeros, from shapes alone."""
        return self._bound(0, len(self._ops) - 1).nnz

    def plan(
        self,
        *,
        strategy: Strategy = "auto",
        fmt: Format = "coo",
        max_dense_elements: int,
        max_nnz: int,
    ) -> JacobianPlan:
        """Decide how to compute the Jacobian, and check the limits, before allocating anything.

        Parameters
        ----------
        strategy : {"auto", "chain", "reverse", "forward"}
        fmt : {"coo", "dense"}
        max_dense_elements : int
            Bound on ``in_size * out_size`` for a dense result, and on the entries that the
            ``"forward"`` and ``"reverse"`` strategies visit (they evaluate every entry).
        max_nnz : int
            Bound on the non-zeros of a COO result and of every sparse matrix the ``"chain"``
            strategy holds.

        Returns
        -------
        JacobianPlan

        Raises
        ------
        ParameterError
            If ``strategy`` or ``fmt`` is unknown.
        LimitExceeded
            If the result, or every admissible strategy, would exceed a limit.

        Notes
        -----
        Costs, in dense element operations, with ``P = sum_i (nnz_i + in_i + out_i)`` the cost of
        pushing one vector through the chain (``nnz_i`` the bound on ``J_i``'s non-zeros):

        - ``forward``: ``in_size * P + in_size * out_size`` (one pass per input basis vector,
          plus reading each dense block of rows);
        - ``reverse``: ``out_size * P + in_size * out_size``;
        - ``chain``: ``8 * (sum_i nnz_i + multiply-adds of the best association + nnz bound)``,
          plus ``in_size * out_size`` when the result is dense.

        ``auto`` takes the cheapest admissible one, ties going to chain, then reverse, then
        forward. ``forward``/``reverse`` are admissible when ``in_size * out_size <=
        max_dense_elements``, ``chain`` when its peak matrix bound is ``<= max_nnz``.
        """
        key = (strategy, fmt, max_dense_elements, max_nnz)
        if key in self._plans:
            return self._plans[key]
        if strategy not in STRATEGIES:
            raise ParameterError(f"strategy must be one of {list(STRATEGIES)}, got {strategy!r}")
        if fmt not in _FORMATS:
            raise ParameterError(f"format must be 'coo' or 'dense', got {fmt!r}")
        n, m = index_layout.size_of(self.in_shape), index_layout.size_of(self.out_shape)
        dense_elements = n * m
        nnz_bound = self.nnz_bound()
        if fmt == "dense" and dense_elements > max_dense_elements:
            raise LimitExceeded(
                "dense Jacobian elements", dense_elements, max_dense_elements, hint=_DENSE_HINT,
                setting="max_dense_jacobian_elements",
            )  # fmt: skip
        if fmt == "coo" and nnz_bound > max_nnz:
            raise LimitExceeded(
                "Jacobian non-zeros (upper bound)", nnz_bound, max_nnz, hint=NNZ_HINT,
                setting="max_coo_nnz",
            )  # fmt: skip
        _, flops, peak = self._association()
        local_nnz = sum(self._bound(i, i).nnz for i in range(len(self._ops)))
        per_pass = sum(
            self._bound(i, i).nnz + self._bound(i, i).rows + self._bound(i, i).cols
            for i in range(len(self._ops))
        )
        densify = dense_elements if fmt == "dense" else 0
        costs = {
            "chain": SPARSE_COST * (local_nnz + flops + nnz_bound) + densify,
            "reverse": m * per_pass + dense_elements,
            "forward": n * per_pass + dense_elements,
        }
        chosen = choose_strategy(strategy, costs, peak, max_nnz, dense_elements, max_dense_elements)
        plan = JacobianPlan(chosen, costs, nnz_bound, peak, dense_elements)
        if len(self._plans) < _PLANS_KEPT:
            self._plans[key] = plan
        return plan

    # -- Jacobian --------------------------------------------------------------------------------

    def jacobian(
        self,
        x: FloatArray,
        *,
        order: Order = "F",
        strategy: Strategy = "auto",
        fmt: Format = "coo",
        layout: Layout = "in_out",
        max_dense_elements: int,
        max_nnz: int,
    ) -> Jacobian:
        """Return the Jacobian of ``h`` at ``x``.

        Parameters
        ----------
        x : ndarray, shape ``in_shape``
        order : {"F", "C"}
            Index order of the flattened rows and columns.
        strategy : {"auto", "chain", "reverse", "forward"}
            See the module docstring and :meth:`plan`; all give the same matrix up to rounding
            (COO: canonical, exact zeros dropped).
        fmt : {"coo", "dense"}
        layout : {"in_out", "out_in"}
            ``"in_out"`` (the notes): shape ``(in_size, out_size)``; ``"out_in"``: its transpose.
        max_dense_elements, max_nnz : int
            Limits, checked before allocating (see :meth:`plan`).

        Returns
        -------
        Jacobian
            ``matrix`` is a canonical ``scipy.sparse.coo_array`` (int32 or int64 indices) for
            ``fmt="coo"`` or a dense float64 array; ``J[flat(i), flat(o)] = d h_o / d x_i`` in
            layout ``in_out``.

        Raises
        ------
        ShapeError
            If ``x`` does not have shape ``in_shape``.
        ParameterError
            For an unknown order, strategy, format or layout.
        LimitExceeded
            Before any allocation, if the result or the strategy's work exceeds a limit.
        DomainError, NonFiniteError
            From an operation (the message names it) or a non-finite Jacobian.
        """
        check_order(order)
        if layout not in ("in_out", "out_in"):
            raise ParameterError(f"layout must be 'in_out' or 'out_in', got {layout!r}")
        x = self._input(x)
        plan = self.plan(
            strategy=strategy, fmt=fmt, max_dense_elements=max_dense_elements, max_nnz=max_nnz
        )
        values = self.trace(x)
        if plan.strategy == "chain" and fmt == "dense":
            written = self._dense_chain_rule(values, order, layout)
            if written is not None:
                return Jacobian(written, self.in_shape, self.out_shape, layout, order)
        if plan.strategy == "chain":
            coo = self._chain_rule(values, order)
        elif fmt == "dense":
            dense = self._by_basis(values, order, plan.strategy)
            _require_finite(dense, "the Jacobian")
            # -0.0 + 0.0 == +0.0: every strategy then writes zeros the same way.
            np.add(dense, 0.0, out=dense)
            oriented = index_layout.orient_dense(dense, layout)
            return Jacobian(oriented, self.in_shape, self.out_shape, layout, order)
        else:
            coo = self._by_basis_sparse(values, order, plan.strategy)
        _require_finite(coo.data, "the Jacobian")
        matrix: sp.coo_array | FloatArray
        if fmt == "dense":
            # The dense limit was checked by the plan, before anything was computed.
            matrix = index_layout.orient_dense(to_dense(coo), layout)
        elif layout == "in_out":
            matrix = coo
        else:
            # A transpose swaps row and col, so the (row, col) sort must be restored.
            matrix = canonicalize(index_layout.orient_coo(coo, layout))
        return Jacobian(matrix, self.in_shape, self.out_shape, layout, order)

    def _local(self, values: tuple[FloatArray, ...], order: Order) -> Callable[[int], Factor]:
        """Return ``t -> J_t``, the local factor of operation ``t`` (its errors name it)."""

        def local(index: int) -> Factor:
            op = self._ops[index]
            checkpoint()
            with self.blame(index):
                return op.local_factor(values[index], order)

        return local

    def _chain_rule(self, values: tuple[FloatArray, ...], order: Order) -> sp.coo_array:
        split, _, _ = self._association()
        # Every local factor first, in application order (an operation's error comes first),
        # then the product as the dynamic program decided.
        local = self._local(values, order)
        factors = [local(index) for index in range(len(self._ops))]
        return to_coo(multiply(factors.__getitem__, split, 0, len(self._ops) - 1))

    def _dense_chain_rule(
        self, values: tuple[FloatArray, ...], order: Order, layout: Layout
    ) -> FloatArray | None:
        # A stencil followed by elementwise operations writes its dense Jacobian (chain_dense).
        split, _, _ = self._association()
        found = stencil_dense(self._ops, split, self._local(values, order))
        if found is None:
            return None
        writer, scale = found
        # Not under blame: the writer checks its entries and reports a non-finite one as
        # "the Jacobian has non-finite entries", like the sparse route (x passed the trace).
        return writer.scaled_dense_jacobian(values[0], order, layout, scale)

    def _blocks(self, count: int) -> Iterator[tuple[int, int]]:
        # Basis vectors per block, so that a block and all its images fit in BLOCK_ELEMENTS.
        widest = max(index_layout.size_of(shape) for shape in self._shapes)
        step = max(1, BLOCK_ELEMENTS // widest)
        for start in range(0, count, step):
            yield start, min(count, start + step)

    def _images(
        self, values: tuple[FloatArray, ...], order: Order, direction: str
    ) -> Iterator[tuple[int, FloatArray]]:
        """Yield ``(start, block)``: rows (forward) or columns (reverse) of ``J`` per block.

        ``block[b]`` is row ``start + b`` of ``J`` (forward: ``J^T e_i`` of an input basis vector)
        or column ``start + b`` (reverse: ``J e_j`` of an output basis vector).
        """
        source = self.in_shape if direction == "forward" else self.out_shape
        size = index_layout.size_of(source)
        for start, stop in self._blocks(size):
            count = stop - start
            basis = np.zeros((count, size))  # (b, size): e_start, ..., e_{stop-1}
            basis[np.arange(count), np.arange(start, stop)] = 1.0
            batch = index_layout.ten_batch(basis, source, order)  # (b, *source)
            if direction == "forward":
                image = self._push(values, batch)  # (b, *out_shape)
            else:
                image = self._pull(values, batch)  # (b, *in_shape)
            yield start, index_layout.vec_batch(image, 1, order)  # (b, other side's size)

    def _by_basis(self, values: tuple[FloatArray, ...], order: Order, direction: str) -> FloatArray:
        n, m = index_layout.size_of(self.in_shape), index_layout.size_of(self.out_shape)
        dense = np.empty((n, m))
        for start, block in self._images(values, order, direction):
            if direction == "forward":
                dense[start : start + len(block)] = block  # rows of J
            else:
                dense[:, start : start + len(block)] = block.T  # columns of J
        return dense

    def _by_basis_sparse(
        self, values: tuple[FloatArray, ...], order: Order, direction: str
    ) -> sp.coo_array:
        n, m = index_layout.size_of(self.in_shape), index_layout.size_of(self.out_shape)
        rows: list[IndexArray] = []
        cols: list[IndexArray] = []
        data: list[FloatArray] = []
        for start, block in self._images(values, order, direction):
            b, k = np.nonzero(block)  # exact zeros are never stored
            rows.append(b + start if direction == "forward" else k)
            cols.append(k if direction == "forward" else b + start)
            data.append(block[b, k])
        return coo_from_triplets(
            np.concatenate(rows).astype(np.int64),
            np.concatenate(cols).astype(np.int64),
            np.concatenate(data),
            (n, m),
        )
