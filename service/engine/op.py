"""Differentiable operations: the ``Op`` base classes and the registry that names them.

This module owns the contract every operation fulfils and the table ``name -> class`` that the API
lists and builds from. One operation is one small frozen dataclass whose fields are its parameters
(kernel, axes, ...); the differentiated tensor ``x`` is the only array argument of its rules.
Concrete operations live in :mod:`service.engine.ops`, one module per family, each registered with
:func:`register`.

Orientation (seed notes, "Jacobian"; CONVENTIONS section 2). For
``f: R^{in_shape} -> R^{out_shape}`` the Jacobian ``J`` is the ``in_size x out_size`` matrix whose
columns are the gradients of the output components (layout ``"in_out"``). Hence

- the JVP of a tangent ``v`` (shape ``in_shape``) is ``ten(J^T vec(v))`` (shape ``out_shape``);
- the VJP of a cotangent ``u`` (shape ``out_shape``) is ``ten(J vec(u))`` (shape ``in_shape``).

``jvp`` and ``vjp`` are batched over a leading axis so that a whole block of basis vectors goes
through in one vectorized call.
"""

import abc
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import ClassVar, NamedTuple, TypeVar

import numpy as np
import scipy.sparse as sp

from . import layout
from .errors import ParameterError, ShapeError, UnknownOperation
from .sparse import Factor, RowMap, coo_from_triplets, factor_of, to_coo
from .types import FloatArray, IndexArray, Order, Shape

__all__ = [
    "ElementwiseOp",
    "LinearOp",
    "Op",
    "Sparsity",
    "batch_of",
    "check_order",
    "coo_from_grids",
    "frozen_array",
    "get_op",
    "op_classes",
    "op_names",
    "register",
]


class Sparsity(NamedTuple):
    """Upper bounds on the non-zeros of a local Jacobian, known from shapes alone.

    Attributes
    ----------
    nnz : int
        Bound on the stored entries of the ``in_size x out_size`` matrix.
    fan_out : int
        Bound on the entries of one row: how many outputs one input element reaches.
    fan_in : int
        Bound on the entries of one column: how many inputs one output element reads.
    """

    nnz: int
    fan_out: int
    fan_in: int


@dataclass(frozen=True, eq=False)
class Op(abc.ABC):
    """A differentiable function ``f: R^{in_shape} -> R^{out_shape}`` with its derivative rules.

    The Jacobian is ``in_size x out_size`` (layout ``"in_out"``, the seed notes'): rows index the
    flattened input, columns the flattened output, ``J[flat(i), flat(o)] = d f_o / d x_i``.

    - JVP of a tangent ``v``: ``ten(J^T vec(v))``.
    - VJP of a cotangent ``u``: ``ten(J vec(u))``.

    Subclasses are frozen dataclasses (fields are parameters, arrays stored read-only) and
    implement :meth:`out_shape` plus the private rules ``_forward``, ``_jvp``, ``_vjp`` and
    ``_local_jacobian`` (``_local_factor`` may hand the chain rule the same matrix in a cheaper
    form). The public methods validate first: they run the shape rule and the domain check, so a
    rule never sees an input it was not written for.

    Attributes
    ----------
    name : str
        Registry key and the ``op`` tag on the wire; public API, never renamed.
    linear : bool
        True when the Jacobian does not depend on ``x`` (linear or affine operations).
    note : str
        The differentiability note: the one documented choice at points where the derivative does
        not exist (PyTorch's where it has one), or the domain.
    params : mapping of str to str
        Each dataclass field with a short description, for ``GET /v1/ops``.
    """

    name: ClassVar[str]
    linear: ClassVar[bool] = False
    note: ClassVar[str] = "differentiable everywhere"
    params: ClassVar[Mapping[str, str]] = MappingProxyType({})

    # -- contract -------------------------------------------------------------------------------

    @abc.abstractmethod
    def out_shape(self, in_shape: Shape) -> Shape:
        """Return the output shape for an input of ``in_shape``: the shape rule.

        Parameters
        ----------
        in_shape : tuple of int
            Every dimension >= 1 (checked by the caller).

        Returns
        -------
        tuple of int

        Raises
        ------
        ShapeError
            If the operation cannot take an input of this shape; the message prints the shapes.
        ParameterError
            If a parameter does not fit this input (e.g. a pooling window larger than the input).
        """

    def check_domain(self, x: FloatArray, *, differentiating: bool) -> None:
        """Raise :class:`DomainError` if ``x`` lies outside the domain; default: all reals.

        Parameters
        ----------
        x : ndarray, shape ``in_shape``
        differentiating : bool
            True when a derivative is asked for; some functions (``sqrt`` at 0) have a value but
            no finite derivative.
        """
        return None

    def workspace_elements(self, in_shape: Shape) -> int:
        """Return the elements of the largest temporary array beyond input and output.

        Checked against the tensor limit before anything runs; 0 (the default) for operations
        whose temporaries are no larger than their input or output.
        """
        return 0

    # True when the rules build their workspace once per call from ``x`` (max_pool2d's window
    # argmax), not once per tangent or cotangent of a batch: the cost model then charges it once.
    workspace_shared: ClassVar[bool] = False

    def forward_workspace_elements(self, in_shape: Shape) -> int:
        """Return the elements of the forward's largest temporary (default: the rules' bound).

        The cost model charges this to evaluation; an operation whose forward reduces over a
        strided view while its derivative rules copy that view says so here.
        """
        return self.workspace_elements(in_shape)

    def sparsity(self, in_shape: Shape) -> Sparsity:
        """Bound the local Jacobian's non-zeros from shapes alone (default: dense).

        Parameters
        ----------
        in_shape : tuple of int

        Returns
        -------
        Sparsity
        """
        n = layout.size_of(in_shape)
        m = layout.size_of(self.out_shape(in_shape))
        return Sparsity(n * m, m, n)

    @abc.abstractmethod
    def _forward(self, x: FloatArray) -> FloatArray:
        """(in_shape) -> (out_shape), on a validated input."""

    @abc.abstractmethod
    def _jvp(self, x: FloatArray, tangents: FloatArray) -> FloatArray:
        """(B, *in_shape) -> (B, *out_shape): ``ten(J^T vec(v))`` for each tangent ``v``."""

    @abc.abstractmethod
    def _vjp(self, x: FloatArray, cotangents: FloatArray) -> FloatArray:
        """(B, *out_shape) -> (B, *in_shape): ``ten(J vec(u))`` for each cotangent ``u``."""

    @abc.abstractmethod
    def _local_jacobian(self, x: FloatArray, order: Order) -> sp.coo_array:
        """Canonical COO, ``in_size x out_size``, rows and columns flattened in ``order``."""

    # -- validated public surface ---------------------------------------------------------------

    def forward(self, x: FloatArray) -> FloatArray:
        """Evaluate the operation.

        Parameters
        ----------
        x : ndarray, shape ``in_shape``

        Returns
        -------
        ndarray, shape ``out_shape(in_shape)``

        Raises
        ------
        ShapeError, ParameterError
            From the shape rule.
        DomainError
            If ``x`` lies outside the function's domain.
        """
        x, _ = self._validated(x)
        self.check_domain(x, differentiating=False)
        return self._forward(x)

    def jvp(
        self, x: FloatArray, tangents: FloatArray, *, output: FloatArray | None = None
    ) -> FloatArray:
        """Push tangents forward: ``ten(J^T vec(v))`` for each tangent ``v`` of the batch.

        Parameters
        ----------
        x : ndarray, shape ``in_shape``
            Where the Jacobian is taken.
        tangents : ndarray, shape (B, *in_shape)
        output : ndarray, shape ``out_shape``, optional
            ``forward(x)``, when the caller has it: some rules are cheaper from it (``tanh'`` is
            ``1 - y²``), with the same result bit for bit.

        Returns
        -------
        ndarray, shape (B, *out_shape)

        Raises
        ------
        ShapeError, ParameterError, DomainError
        """
        x, _ = self._validated(x)
        tangents = batch_of(tangents, x.shape, "tangents", prefix="(B, *input_shape) = ")
        self.check_domain(x, differentiating=True)
        if output is None:
            return self._jvp(x, tangents)
        return self._jvp_given(x, output, tangents)

    def vjp(
        self, x: FloatArray, cotangents: FloatArray, *, output: FloatArray | None = None
    ) -> FloatArray:
        """Pull cotangents back: ``ten(J vec(u))`` for each cotangent ``u`` of the batch.

        Parameters
        ----------
        x : ndarray, shape ``in_shape``
        cotangents : ndarray, shape (B, *out_shape)
        output : ndarray, shape ``out_shape``, optional
            ``forward(x)``, as for :meth:`jvp`.

        Returns
        -------
        ndarray, shape (B, *in_shape)

        Raises
        ------
        ShapeError, ParameterError, DomainError
        """
        x, out_shape = self._validated(x)
        cotangents = batch_of(cotangents, out_shape, "cotangents", prefix="(B, *output_shape) = ")
        self.check_domain(x, differentiating=True)
        if output is None:
            return self._vjp(x, cotangents)
        return self._vjp_given(x, output, cotangents)

    def _jvp_given(self, x: FloatArray, y: FloatArray, tangents: FloatArray) -> FloatArray:
        """``_jvp`` when ``y = forward(x)`` is known; by default ``y`` is not needed."""
        return self._jvp(x, tangents)

    def _vjp_given(self, x: FloatArray, y: FloatArray, cotangents: FloatArray) -> FloatArray:
        """``_vjp`` when ``y = forward(x)`` is known; by default ``y`` is not needed."""
        return self._vjp(x, cotangents)

    def local_jacobian(self, x: FloatArray, order: Order = "F") -> sp.coo_array:
        """Return the Jacobian at ``x`` as a canonical sparse matrix.

        Parameters
        ----------
        x : ndarray, shape ``in_shape``
        order : {"F", "C"}
            Index order of the flattened rows (input) and columns (output).

        Returns
        -------
        scipy.sparse.coo_array, shape (in_size, out_size)
            Layout ``in_out``; canonical (sorted by (row, col), no duplicates, no stored zeros).

        Raises
        ------
        ShapeError, ParameterError, DomainError
        """
        return self._local_jacobian(self._differentiable(x, order), order)

    def local_factor(self, x: FloatArray, order: Order = "F") -> Factor:
        """Return the Jacobian at ``x`` as a factor of the chain-rule product.

        The matrix of :meth:`local_jacobian`, in the form :func:`~service.engine.sparse.matmul`
        multiplies cheapest: a :class:`~service.engine.sparse.RowMap` when every input element
        reaches at most one output element, canonical CSR otherwise.

        Parameters
        ----------
        x : ndarray, shape ``in_shape``
        order : {"F", "C"}

        Returns
        -------
        RowMap or scipy.sparse.csr_array, shape (in_size, out_size)
            Layout ``in_out``.

        Raises
        ------
        ShapeError, ParameterError, DomainError
        """
        return self._local_factor(self._differentiable(x, order), order)

    def second_order(
        self, x: FloatArray, cotangent: FloatArray, tangents: FloatArray
    ) -> FloatArray:
        """Differentiate the VJP along tangents: the operation's second-order rule.

        For each tangent ``t`` return ``d/dε ten(J(x + ε t) vec(u))`` at ``ε = 0``, which is
        ``ten(sum_o u_o ∇²f_o(x) vec(t))``: the Hessians of the output components, weighted by
        the cotangent ``u``, applied to ``t``. A forward-over-reverse Hessian-vector product adds
        this term at every operation (:mod:`service.engine.hessian`). It is zero for linear
        operations, ``g''(x) u t`` for elementwise ones.

        Parameters
        ----------
        x : ndarray, shape ``in_shape``
        cotangent : ndarray, shape ``out_shape``
            One cotangent, shared by every tangent of the batch.
        tangents : ndarray, shape (B, *in_shape)

        Returns
        -------
        ndarray, shape (B, *in_shape)

        Raises
        ------
        ShapeError, ParameterError, DomainError
            ``ParameterError`` also when the operation has no second-order rule.
        """
        x, out_shape = self._validated(x)
        cotangent = np.asarray(cotangent, dtype=np.float64)
        if cotangent.shape != out_shape:
            raise ShapeError(
                f"{self.name}: the cotangent must have the output shape {list(out_shape)}, "
                f"got {list(cotangent.shape)}"
            )
        tangents = batch_of(tangents, x.shape, "tangents", prefix="(B, *input_shape) = ")
        self.check_domain(x, differentiating=True)
        return self._second_order(x, cotangent, tangents)

    def _second_order(
        self, x: FloatArray, cotangent: FloatArray, tangents: FloatArray
    ) -> FloatArray:
        # Not abstract: an operation without the rule still evaluates and differentiates once;
        # only second-order requests refuse it.
        raise ParameterError(f"{self.name} has no second-order rule (Hessians are unavailable)")

    def curvature_blocks(self, in_shape: Shape, order: Order) -> IndexArray | None:
        """Return the groups of input elements that the second-order rule couples.

        The weighted Hessian ``sum_o u_o ∇²f_o(x)`` (``in_size x in_size``) is block diagonal over
        these groups, whatever ``x`` and ``u``: an entry ``(i, j)`` can be non-zero only when ``i``
        and ``j`` lie in one group. Known from shapes alone (structural sparsity).

        Parameters
        ----------
        in_shape : tuple of int
        order : {"F", "C"}
            Order of the flat indices.

        Returns
        -------
        ndarray of int, shape (G, K), or None
            Row ``g`` lists the flat indices of group ``g``'s ``K`` elements; every element is in
            exactly one group. None when the rule is identically zero. Default: one group of all.
        """
        return np.arange(layout.size_of(in_shape), dtype=np.int64)[np.newaxis]

    def _local_factor(self, x: FloatArray, order: Order) -> Factor:
        # Read off the canonical COO of the rule, _local_jacobian. Override only to skip that
        # conversion, with the rule's own matrix (one routine building both): the "chain"
        # strategy multiplies factors, so fdcheck checks the rule through this.
        return factor_of(self._local_jacobian(x, order))

    def dense_jacobian(self, x: FloatArray, order: Order = "F") -> FloatArray:
        """Return the Jacobian at ``x`` as a dense matrix, through JVPs or VJPs of a basis.

        Pushes the ``in_size`` input basis vectors through :meth:`jvp` (each gives a row of ``J``)
        or pulls the ``out_size`` output basis vectors through :meth:`vjp` (each gives a column),
        whichever needs fewer passes. Meant for tests and small operations.

        Parameters
        ----------
        x : ndarray, shape ``in_shape``
        order : {"F", "C"}

        Returns
        -------
        ndarray, shape (in_size, out_size)
            Layout ``in_out``.
        """
        check_order(order)
        x, out_shape = self._validated(x)
        n, m = layout.size_of(x.shape), layout.size_of(out_shape)
        if n <= m:
            basis = layout.ten_batch(np.eye(n), x.shape, order)  # (n, *in_shape)
            rows: FloatArray = layout.vec_batch(self.jvp(x, basis), 1, order)  # (n, m)
            return rows
        basis = layout.ten_batch(np.eye(m), out_shape, order)  # (m, *out_shape)
        columns = layout.vec_batch(self.vjp(x, basis), 1, order)  # (m, n)
        return np.ascontiguousarray(columns.T)

    def _differentiable(self, x: FloatArray, order: Order) -> FloatArray:
        # What every derivative rule may assume: a known order, a shape that fits, x in the domain.
        check_order(order)
        x, _ = self._validated(x)
        self.check_domain(x, differentiating=True)
        return x

    def _validated(self, x: FloatArray) -> tuple[FloatArray, Shape]:
        x = np.asarray(x, dtype=np.float64)
        in_shape = layout.check_dims(x.shape, f"{self.name}: input shape")
        return x, self.out_shape(in_shape)


def batch_of(
    batch: FloatArray, shape: Shape, what: str, *, prefix: str = "", suffix: str = ""
) -> FloatArray:
    """Return ``batch`` as float64 if it stacks tensors of ``shape``: shape ``(B, *shape)``.

    Parameters
    ----------
    batch : array_like
    shape : tuple of int
    what : str
        The batch's name in the message (``"tangents"``).
    prefix, suffix : str
        Said before and after ``(B, *shape)`` in the message, to name whose shape it is.

    Returns
    -------
    ndarray of float64, shape (B, *shape)

    Raises
    ------
    ShapeError
        ``"<what> must have shape <prefix>(B, d_1, ..., d_n)<suffix>, got [...]"``.
    """
    batch = np.asarray(batch, dtype=np.float64)
    if batch.ndim != len(shape) + 1 or batch.shape[1:] != shape:
        raise ShapeError(
            f"{what} must have shape {prefix}(B, {', '.join(map(str, shape))}){suffix}, "
            f"got {list(batch.shape)}"
        )
    return batch


@dataclass(frozen=True, eq=False)
class LinearOp(Op):
    """An affine operation ``f(x) = A(x) + b`` whose JVP is the linear part ``A`` itself.

    Subclasses write :meth:`apply` (``A`` on a batch), ``_vjp`` (the transpose ``A^T``, with the
    adjoint derivation in a comment) and ``_local_jacobian`` (the matrix of ``A``, independent of
    ``x``); an affine one also overrides :meth:`offset`. ``forward(x) = apply(x) + offset`` and
    ``jvp(x, t) = apply(t)`` follow (autograd ``def_linear``, JAX ``deflinear``).
    """

    linear: ClassVar[bool] = True
    note: ClassVar[str] = "linear: differentiable everywhere, the Jacobian does not depend on x"

    @abc.abstractmethod
    def apply(self, t: FloatArray) -> FloatArray:
        """Apply the linear part to a batch.

        Parameters
        ----------
        t : ndarray, shape (B, *in_shape)

        Returns
        -------
        ndarray, shape (B, *out_shape)
        """

    def offset(self) -> FloatArray | None:
        """Return the constant part ``b`` (broadcastable to ``out_shape``), or None if linear."""
        return None

    def _forward(self, x: FloatArray) -> FloatArray:
        y = self.apply(x[np.newaxis])[0]
        b = self.offset()
        result: FloatArray = y if b is None else y + b
        return result

    def _jvp(self, x: FloatArray, tangents: FloatArray) -> FloatArray:
        return self.apply(tangents)

    def _second_order(
        self, x: FloatArray, cotangent: FloatArray, tangents: FloatArray
    ) -> FloatArray:
        # The Jacobian does not depend on x: its derivative along any tangent is zero.
        return np.zeros_like(tangents)

    def curvature_blocks(self, in_shape: Shape, order: Order) -> IndexArray | None:
        """Return None: a linear operation has no curvature."""
        return None


@dataclass(frozen=True, eq=False)
class ElementwiseOp(Op):
    """``y_i = g(x_i)``: a diagonal Jacobian ``J = diag(vec(g'(x)))``.

    Subclasses write ``_forward`` (any shape, so it also serves batches) and :meth:`derivative`;
    JVP and VJP are both the product with ``g'(x)`` because a diagonal matrix is its own transpose.
    """

    @abc.abstractmethod
    def derivative(self, x: FloatArray) -> FloatArray:
        """Return ``g'(x)`` elementwise.

        Parameters
        ----------
        x : ndarray, shape ``in_shape``

        Returns
        -------
        ndarray, shape ``in_shape``
        """

    def out_shape(self, in_shape: Shape) -> Shape:
        """Return ``in_shape``: an elementwise function keeps the shape."""
        return in_shape

    def second_derivative(self, x: FloatArray) -> FloatArray:
        """Return ``g''(x)`` elementwise (shape ``in_shape``); every built-in operation has one.

        Raises
        ------
        ParameterError
            For an operation written without it (the default).
        """
        raise ParameterError(f"{self.name} has no second-order rule (Hessians are unavailable)")

    def _second_order(
        self, x: FloatArray, cotangent: FloatArray, tangents: FloatArray
    ) -> FloatArray:
        # d/dε g'(x + ε t) u = g''(x) t u: (in) * (in) * (B, *in) -> (B, *in)
        return self.second_derivative(x) * cotangent * tangents

    def curvature_blocks(self, in_shape: Shape, order: Order) -> IndexArray | None:
        """Return one group per element: the weighted Hessian is diagonal."""
        return np.arange(layout.size_of(in_shape), dtype=np.int64)[:, np.newaxis]

    def sparsity(self, in_shape: Shape) -> Sparsity:
        """Return the bounds of a diagonal: one entry per row and per column."""
        return Sparsity(layout.size_of(in_shape), 1, 1)

    def _jvp(self, x: FloatArray, tangents: FloatArray) -> FloatArray:
        # (in_shape) * (B, *in_shape) -> (B, *in_shape)
        return self.derivative(x) * tangents

    def _vjp(self, x: FloatArray, cotangents: FloatArray) -> FloatArray:
        return self.derivative(x) * cotangents

    def _local_jacobian(self, x: FloatArray, order: Order) -> sp.coo_array:
        # diag(vec(g'(x))) needs no index arithmetic: the row of entry i is i.
        return to_coo(self._diagonal(x, order))

    def _local_factor(self, x: FloatArray, order: Order) -> Factor:
        if type(self)._local_jacobian is not ElementwiseOp._local_jacobian:
            return super()._local_factor(x, order)  # the subclass's own rule, read off
        # The diagonal factor_of would read off that COO, without the COO.
        return self._diagonal(x, order)

    def _diagonal(self, x: FloatArray, order: Order) -> RowMap:
        # A zero derivative is no entry of the COO and a +0.0 in the RowMap (-0.0 + 0.0 = +0.0);
        # every other value is kept.
        n = layout.size_of(x.shape)
        return RowMap((n, n), np.add(layout.vec(self.derivative(x), order), 0.0))


def coo_from_grids(
    rows: IndexArray, cols: IndexArray, data: FloatArray | float, shape: tuple[int, int]
) -> sp.coo_array:
    """Build a canonical COO matrix from broadcastable index grids.

    Parameters
    ----------
    rows, cols : ndarray of int
        Flat row (input) and column (output) indices, broadcastable against each other and
        ``data``; usually cut out of :func:`layout.flat_grid` with views and ``np.expand_dims``.
    data : ndarray of float or float
    shape : (int, int)
        ``(in_size, out_size)``.

    Returns
    -------
    scipy.sparse.coo_array, canonical.
    """
    row, col, value = layout.broadcast_entries(rows, cols, np.asarray(data, dtype=np.float64))
    return coo_from_triplets(
        np.asarray(row, dtype=np.int64),
        np.asarray(col, dtype=np.int64),
        np.asarray(value, dtype=np.float64),
        shape,
    )


def frozen_array(value: object, what: str) -> FloatArray:
    """Return a read-only float64 copy of ``value`` for an op's field (never aliases the caller's).

    Raises
    ------
    ParameterError
        If ``value`` holds NaN or infinity; ``what`` names the field in the message.
    """
    array = np.array(value, dtype=np.float64, copy=True)
    if not np.all(np.isfinite(array)):
        raise ParameterError(f"{what} must be finite")
    array.setflags(write=False)
    return array


def check_order(order: str) -> None:
    """Raise :class:`ParameterError` unless ``order`` is ``"F"`` or ``"C"``."""
    if order not in layout.ORDERS:
        raise ParameterError(f"order must be 'F' or 'C', got {order!r}")


# -- registry ------------------------------------------------------------------------------------

_REGISTRY: dict[str, type[Op]] = {}

OpClass = TypeVar("OpClass", bound=type[Op])


def register(cls: OpClass) -> OpClass:
    """Register an operation class under its ``name`` (class decorator).

    Parameters
    ----------
    cls : type
        A concrete :class:`Op` subclass defining ``name`` in its own body.

    Returns
    -------
    type
        ``cls`` unchanged.

    Raises
    ------
    TypeError
        If ``cls`` is abstract or does not define its own ``name``.
    ValueError
        If the name is taken: two registrations of one name are a programming error and fail at
        import time.
    """
    name = cls.__dict__.get("name")
    if not isinstance(name, str) or not name:
        raise TypeError(f"{cls.__qualname__} must define a non-empty class attribute 'name'")
    if getattr(cls, "__abstractmethods__", None):
        missing = sorted(cls.__abstractmethods__)
        raise TypeError(f"{cls.__qualname__} ({name!r}) is abstract; missing {missing}")
    if name in _REGISTRY:
        raise ValueError(
            f"operation name {name!r} is registered twice: "
            f"{_REGISTRY[name].__qualname__} and {cls.__qualname__}"
        )
    _REGISTRY[name] = cls
    return cls


def _load_builtin_ops() -> None:
    # Importing the package runs every @register once; a no-op after the first call.
    from . import ops  # noqa: F401


def get_op(name: str) -> type[Op]:
    """Return the operation class registered as ``name``.

    Parameters
    ----------
    name : str

    Returns
    -------
    type
        The :class:`Op` subclass; instantiate it with its parameters.

    Raises
    ------
    UnknownOperation
        If no operation has that name (never a bare ``KeyError``).
    """
    _load_builtin_ops()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise UnknownOperation(
            f"unknown operation {name!r}; known operations: {', '.join(op_names())}"
        ) from None


def op_names() -> tuple[str, ...]:
    """Return the registered operation names, sorted."""
    _load_builtin_ops()
    return tuple(sorted(_REGISTRY))


def op_classes() -> Mapping[str, type[Op]]:
    """Return a read-only view ``name -> class`` of the registry, sorted by name."""
    _load_builtin_ops()
    return MappingProxyType(dict(sorted(_REGISTRY.items())))
