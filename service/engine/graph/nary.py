"""Operations of several arguments: the ``NaryOp`` contract, the one-argument adapter, the registry.

A program node applies one :class:`NaryOp` to named values. Every rule takes the tuple of argument
values and, for derivatives, the index ``i`` of the argument being differentiated: the op is seen
as a function of argument ``i`` with the others held fixed (a partial derivative), and the graph
sums over arguments and paths (CONVENTIONS section 5.1).

Orientation is the notes' (``in_out``), per argument: ``J_i`` is ``size(arg_i) x size(out)`` with
``J_i[flat(a), flat(o)] = d out_o / d arg_i[a]``; the JVP of a tangent ``v`` of argument ``i`` is
``ten(J_i^T vec(v))``, the VJP of a cotangent ``u`` is ``ten(J_i vec(u))``. Both are batched over a
leading axis, as for :class:`~service.engine.op.Op`.

Today's one-input operations (:mod:`service.engine.ops`) keep their class and registry; a program
uses them through :class:`Unary`, which calls their rules unchanged, so a path of them computes
exactly what a :class:`~service.engine.chain.Chain` computes.
"""

import abc
import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import MISSING, dataclass
from types import MappingProxyType
from typing import Any, ClassVar, TypeVar

import numpy as np
import scipy.sparse as sp

from .. import layout
from ..curvature import weighted_hessian
from ..errors import ParameterError, ShapeError, UnknownOperation
from ..op import Op, Sparsity, batch_of, check_order, get_op, op_classes
from ..sparse import Factor, RowMap, factor_of
from ..types import FloatArray, Order, Shape

__all__ = [
    "NaryOp",
    "Unary",
    "build_op",
    "multilinear_second_order",
    "nary_classes",
    "register_nary",
]

Values = Sequence[FloatArray]
# Elements of one batch of probe tangents' images when a curvature block is read off densely.
_PROBE_ELEMENTS = 1 << 21


@dataclass(frozen=True, eq=False)
class NaryOp(abc.ABC):
    """A differentiable function of one or more tensors, with per-argument derivative rules.

    Attributes
    ----------
    name : str
        The ``op`` of a graph node and the function name of an expression.
    arg_names : tuple of str
        The arguments' names (for ``GET /v1/ops``); a variadic op lists one, repeated.
    variadic : bool
        True when the op takes any number (>= 1) of arguments (``concatenate``, ``stack``).
    linear : bool
        True when the op is linear in each argument separately (its ``J_i`` does not depend on
        argument ``i``).
    note, params
        As for :class:`~service.engine.op.Op`.
    """

    name: ClassVar[str]
    arg_names: ClassVar[tuple[str, ...]] = ("x",)
    variadic: ClassVar[bool] = False
    linear: ClassVar[bool] = False
    note: ClassVar[str] = "differentiable everywhere"
    params: ClassVar[Mapping[str, str]] = MappingProxyType({})

    # -- contract -------------------------------------------------------------------------------

    @property
    def label(self) -> str:
        """The name messages use (a wrapped one-input op's own name)."""
        return self.name

    def check_arity(self, count: int) -> None:
        """Raise :class:`ParameterError` unless the op takes ``count`` arguments."""
        if self.variadic:
            if count < 1:
                raise ParameterError(f"{self.name} needs at least one argument")
        elif count != len(self.arg_names):
            raise ParameterError(
                f"{self.name} takes {len(self.arg_names)} argument(s) "
                f"({', '.join(self.arg_names)}), got {count}"
            )

    @abc.abstractmethod
    def out_shape(self, shapes: Sequence[Shape]) -> Shape:
        """Return the output shape for arguments of ``shapes`` (the shape rule).

        Raises
        ------
        ShapeError, ParameterError
            If the arguments do not fit together or the parameters do not fit them.
        """

    def workspace_elements(self, shapes: Sequence[Shape]) -> int:
        """Return the elements of the largest temporary beyond arguments and output (default 0)."""
        return 0

    def sparsity(self, shapes: Sequence[Shape], i: int) -> Sparsity:
        """Bound the non-zeros of ``J_i`` from shapes alone (default: dense)."""
        n = layout.size_of(shapes[i])
        m = layout.size_of(self.out_shape(shapes))
        return Sparsity(n * m, m, n)

    def check_domain(self, values: Values, *, differentiating: bool) -> None:
        """Raise :class:`DomainError` if the arguments lie outside the domain (default: none)."""
        return None

    @abc.abstractmethod
    def _forward(self, values: Values) -> FloatArray:
        """Arguments -> (out_shape), on validated arguments."""

    @abc.abstractmethod
    def _jvp(self, values: Values, i: int, tangents: FloatArray) -> FloatArray:
        """(B, *shape_i) -> (B, *out_shape): ``ten(J_i^T vec(v))`` for each ``v``."""

    @abc.abstractmethod
    def _vjp(self, values: Values, i: int, cotangents: FloatArray) -> FloatArray:
        """(B, *out_shape) -> (B, *shape_i): ``ten(J_i vec(u))`` for each ``u``."""

    @abc.abstractmethod
    def _local_jacobian(self, values: Values, i: int, order: Order) -> sp.coo_array:
        """Canonical COO ``J_i``, ``size_i x out_size``, flattened in ``order``."""

    def _local_factor(self, values: Values, i: int, order: Order) -> Factor:
        return factor_of(self._local_jacobian(values, i, order))

    # -- validated public surface ---------------------------------------------------------------

    def _validated(self, values: Values) -> tuple[tuple[FloatArray, ...], Shape]:
        arrays = tuple(np.asarray(v, dtype=np.float64) for v in values)
        self.check_arity(len(arrays))
        shapes = [layout.check_dims(a.shape, f"{self.name}: argument shape") for a in arrays]
        return arrays, self.out_shape(shapes)

    def _argument(self, arrays: Sequence[FloatArray], i: int) -> None:
        if not 0 <= i < len(arrays):
            raise ParameterError(f"{self.name}: argument index {i} out of range")

    def forward(self, values: Values) -> FloatArray:
        """Evaluate the op; ``values[i]`` is argument ``i``."""
        arrays, _ = self._validated(values)
        self.check_domain(arrays, differentiating=False)
        return self._forward(arrays)

    def jvp(self, values: Values, i: int, tangents: FloatArray) -> FloatArray:
        """Push tangents of argument ``i`` forward: (B, *shape_i) -> (B, *out_shape)."""
        arrays, _ = self._validated(values)
        self._argument(arrays, i)
        tangents = batch_of(tangents, arrays[i].shape, "tangents")
        self.check_domain(arrays, differentiating=True)
        return self._jvp(arrays, i, tangents)

    def vjp(self, values: Values, i: int, cotangents: FloatArray) -> FloatArray:
        """Pull cotangents back to argument ``i``: (B, *out_shape) -> (B, *shape_i)."""
        arrays, out_shape = self._validated(values)
        self._argument(arrays, i)
        cotangents = batch_of(cotangents, out_shape, "cotangents")
        self.check_domain(arrays, differentiating=True)
        return self._vjp(arrays, i, cotangents)

    def second_order(
        self,
        values: Values,
        i: int,
        cotangent: FloatArray,
        tangents: Sequence[FloatArray | None],
    ) -> FloatArray | None:
        """Differentiate the VJP of argument ``i`` along tangents of the arguments.

        Returns ``d/dε ten(J_i(values + ε t) vec(u))`` at ``ε = 0`` for each tangent of the batch:
        the second-order rule a forward-over-reverse Hessian-vector product adds at every node
        (:mod:`service.engine.hessian`). Linear operations give None (zero); multilinear ones the
        cross terms, the VJP with one other argument replaced by its tangent.

        Parameters
        ----------
        values : sequence of ndarray
        i : int
        cotangent : ndarray, shape ``out_shape``
            One cotangent, shared by the batch.
        tangents : sequence of (ndarray of shape (B, *shape_j)) or None
            One per argument; None for an argument held fixed.

        Returns
        -------
        ndarray of shape (B, *shape_i), or None when the term is zero.

        Raises
        ------
        ParameterError
            If the operation has no second-order rule.
        """
        arrays, out_shape = self._validated(values)
        self._argument(arrays, i)
        cotangent = np.asarray(cotangent, dtype=np.float64)
        if cotangent.shape != out_shape:
            raise ShapeError(f"{self.label}: the cotangent must have the output shape "
                             f"{list(out_shape)}, got {list(cotangent.shape)}")  # fmt: skip
        batches = [
            None if t is None else batch_of(t, arrays[j].shape, "tangents")
            for j, t in enumerate(tangents)
        ]
        self.check_domain(arrays, differentiating=True)
        return self._second_order(arrays, i, cotangent, batches)

    def _second_order(
        self,
        values: Values,
        i: int,
        cotangent: FloatArray,
        tangents: Sequence[FloatArray | None],
    ) -> FloatArray | None:
        # Not abstract: an operation without the rule still evaluates and differentiates once.
        raise ParameterError(f"{self.label} has no second-order rule (Hessians are unavailable)")

    def curvature_fan(self, shapes: Sequence[Shape], i: int, j: int) -> int | None:
        """Bound the entries of one row of ``D_ij`` from shapes alone; None when it is zero.

        ``D_ij`` (``size_i x size_j``) is the matrix of the second-order rule of argument ``i``
        along argument ``j`` for a fixed cotangent ``u``: the block ``(i, j)`` of the Hessian of
        ``<u, op(args)>``, so ``D_ji = D_ij^T``. Default: zero for ``i == j`` of an operation
        linear in each argument, a dense block otherwise.
        """
        if self.linear and i == j:
            return None
        return layout.size_of(shapes[j])

    def curvature(
        self, values: Values, i: int, j: int, cotangent: FloatArray, order: Order = "F"
    ) -> sp.csr_array:
        """Return ``D_ij`` at ``values`` for the cotangent ``u``, flattened in ``order``.

        Only the pairs whose :meth:`curvature_fan` is not None are asked for.

        Parameters
        ----------
        values : sequence of ndarray
        i, j : int
            Row and column arguments.
        cotangent : ndarray, shape ``out_shape``
        order : {"F", "C"}

        Returns
        -------
        scipy.sparse.csr_array, shape (size_i, size_j)
        """
        check_order(order)
        arrays, _ = self._validated(values)
        self._argument(arrays, i)
        self._argument(arrays, j)
        self.check_domain(arrays, differentiating=True)
        block = self._curvature(arrays, i, j, np.asarray(cotangent, dtype=np.float64), order)
        return block.to_csr() if isinstance(block, RowMap) else block

    def _curvature(
        self, values: Values, i: int, j: int, cotangent: FloatArray, order: Order
    ) -> Factor:
        # A dense block (the default fan): column c of D_ij is the second-order rule along the
        # c-th basis vector of argument j. The smaller argument is probed (D_ij = D_ji^T).
        sizes = [layout.size_of(v.shape) for v in values]
        row, probed = (i, j) if sizes[j] <= sizes[i] else (j, i)
        block = np.zeros((sizes[probed], sizes[row]))  # (probes, size of the row argument)
        step = max(1, _PROBE_ELEMENTS // max(1, sizes[row]))
        for start in range(0, sizes[probed], step):
            stop = min(sizes[probed], start + step)
            basis = np.zeros((stop - start, sizes[probed]))
            basis[np.arange(stop - start), np.arange(start, stop)] = 1.0
            tangents: list[FloatArray | None] = [None] * len(values)
            tangents[probed] = layout.ten_batch(basis, values[probed].shape, order)
            image = self._second_order(values, row, cotangent, tangents)
            if image is not None:
                block[start:stop] = layout.vec_batch(image, 1, order)
        # block[c, r] = D_{row, probed}[r, c]: D_ij itself when probed is j.
        return sp.csr_array(block.T if probed == j else block)

    def local_jacobian(self, values: Values, i: int, order: Order = "F") -> sp.coo_array:
        """Return ``J_i`` at ``values`` as a canonical COO array (``in_out``, ``order``)."""
        check_order(order)
        arrays, _ = self._validated(values)
        self._argument(arrays, i)
        self.check_domain(arrays, differentiating=True)
        return self._local_jacobian(arrays, i, order)

    def local_factor(self, values: Values, i: int, order: Order = "F") -> Factor:
        """Return ``J_i`` as a factor of the chain-rule product (RowMap or canonical CSR)."""
        check_order(order)
        arrays, _ = self._validated(values)
        self._argument(arrays, i)
        self.check_domain(arrays, differentiating=True)
        return self._local_factor(arrays, i, order)


# -- the one-argument adapter ----------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class Unary(NaryOp):
    """A registered one-input :class:`~service.engine.op.Op` as a one-argument node operation.

    Every rule is the wrapped op's own rule: the public methods of :class:`NaryOp` have already
    run the same shape rule and domain check that the op's public methods would, so the answers
    are the same bits as the op's.
    """

    op: Op

    name: ClassVar[str] = "unary"

    @property
    def label(self) -> str:
        """The wrapped op's name."""
        return self.op.name

    def out_shape(self, shapes: Sequence[Shape]) -> Shape:
        """Return the wrapped op's shape rule applied to the one argument."""
        return self.op.out_shape(shapes[0])

    def workspace_elements(self, shapes: Sequence[Shape]) -> int:
        """Return the wrapped op's workspace."""
        return self.op.workspace_elements(shapes[0])

    def sparsity(self, shapes: Sequence[Shape], i: int) -> Sparsity:
        """Return the wrapped op's bound."""
        return self.op.sparsity(shapes[0])

    def check_domain(self, values: Values, *, differentiating: bool) -> None:
        """Run the wrapped op's domain check."""
        self.op.check_domain(values[0], differentiating=differentiating)

    def _forward(self, values: Values) -> FloatArray:
        return self.op._forward(values[0])

    def _jvp(self, values: Values, i: int, tangents: FloatArray) -> FloatArray:
        return self.op._jvp(values[0], tangents)

    def _vjp(self, values: Values, i: int, cotangents: FloatArray) -> FloatArray:
        return self.op._vjp(values[0], cotangents)

    def _local_jacobian(self, values: Values, i: int, order: Order) -> sp.coo_array:
        return self.op._local_jacobian(values[0], order)

    def _local_factor(self, values: Values, i: int, order: Order) -> Factor:
        return self.op._local_factor(values[0], order)

    def _second_order(
        self,
        values: Values,
        i: int,
        cotangent: FloatArray,
        tangents: Sequence[FloatArray | None],
    ) -> FloatArray | None:
        if tangents[0] is None or self.op.linear:
            return None
        return self.op._second_order(values[0], cotangent, tangents[0])

    def curvature_fan(self, shapes: Sequence[Shape], i: int, j: int) -> int | None:
        """Return the wrapped op's curvature group size (None for a linear op)."""
        blocks = None if self.op.linear else self.op.curvature_blocks(shapes[0], "C")
        return None if blocks is None else int(blocks.shape[1])

    def _curvature(
        self, values: Values, i: int, j: int, cotangent: FloatArray, order: Order
    ) -> Factor:
        blocks = self.op.curvature_blocks(values[0].shape, order)
        assert blocks is not None, "asked only where curvature_fan is not None"
        return weighted_hessian(self.op, values[0], cotangent, order, blocks)


def multilinear_second_order(
    op: NaryOp,
    values: Values,
    i: int,
    cotangent: FloatArray,
    tangents: Sequence[FloatArray | None],
) -> FloatArray | None:
    """Return the second-order rule of an operation linear in each argument separately.

    ``J_i`` does not depend on argument ``i`` and is linear in every other one, so its derivative
    along the tangents is ``sum_{j != i} J_i(values with argument j replaced by t_j)``: the cross
    terms of a bilinear map (JAX's ``defbilinear``), computed with the op's own VJP.
    """
    total: FloatArray | None = None
    u = cotangent[np.newaxis]
    for j, batch in enumerate(tangents):
        if j == i or batch is None:
            continue
        # One VJP per tangent of the batch: the tangent takes argument j's place.
        term = np.stack([
            op._vjp([t if k == j else v for k, v in enumerate(values)], i, u)[0] for t in batch
        ])  # fmt: skip
        total = term if total is None else total + term
    return total


# -- registry ------------------------------------------------------------------------------------

_NARY: dict[str, type[NaryOp]] = {}
NaryClass = TypeVar("NaryClass", bound=type[NaryOp])


def register_nary(cls: NaryClass) -> NaryClass:
    """Register an n-ary operation class under its ``name`` (class decorator).

    Raises
    ------
    ValueError
        If the name is registered twice.
    """
    name = cls.__dict__["name"]
    if name in _NARY:
        raise ValueError(f"n-ary operation {name!r} is registered twice")
    _NARY[name] = cls
    return cls


def _load() -> None:
    from . import ops  # noqa: F401  (registers the n-ary operations)


def nary_classes() -> Mapping[str, type[NaryOp]]:
    """Return a read-only view ``name -> class`` of the n-ary registry, sorted by name."""
    _load()
    return MappingProxyType(dict(sorted(_NARY.items())))


def _takes(cls: type[NaryOp], count: int) -> bool:
    return count >= 1 if cls.variadic else count == len(cls.arg_names)


def build_op(
    name: str,
    count: int,
    params: Mapping[str, Any],
    unary: Callable[[type[Op], Mapping[str, Any]], Op],
) -> NaryOp:
    """Return the node operation ``name`` applied to ``count`` arguments with ``params``.

    An n-ary operation that takes ``count`` arguments wins; otherwise, with one argument, the
    registered one-input operation of that name (``add`` with a ``constant``, ``xcorr2d`` with a
    ``kernel``) wrapped in :class:`Unary`.

    Parameters
    ----------
    name : str
    count : int
        Number of arguments of the node.
    params : mapping
        The node's parameters, as JSON values.
    unary : callable
        Builds a one-input op from its class and the JSON parameters (the API decodes tensors).

    Raises
    ------
    UnknownOperation
        If no operation of that name exists.
    ParameterError
        If none of that name takes ``count`` arguments, or a parameter is invalid.
    """
    _load()
    cls = _NARY.get(name)
    if cls is not None and _takes(cls, count):
        # Checked before the call: its TypeError would name the class's __init__, not the request.
        fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
        unknown = sorted(set(params) - set(fields))
        if unknown:
            raise ParameterError(f"operation {name!r} has no parameter {unknown[0]!r}; its "
                                 f"parameters: {', '.join(fields) or 'none'}")  # fmt: skip
        for field_name, field in fields.items():
            required = field.default is MISSING and field.default_factory is MISSING
            if field_name not in params and required:
                raise ParameterError(f"operation {name!r} needs the parameter {field_name!r}")
        try:
            return cls(**params)
        except TypeError as error:
            raise ParameterError(f"{name}: {error}") from None
    if count == 1 and name in op_classes():
        return Unary(unary(get_op(name), params))
    if cls is None and name not in op_classes():
        known = sorted({*_NARY, *op_classes()})
        raise UnknownOperation(f"unknown operation {name!r}; known operations: {', '.join(known)}")
    arities = []
    if cls is not None:
        arities.append("any number of" if cls.variadic else str(len(cls.arg_names)))
    if name in op_classes():
        arities.append("1")
    raise ParameterError(f"{name} takes {' or '.join(arities)} argument(s), got {count}")
