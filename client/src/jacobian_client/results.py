"""What the client returns: Jacobians that keep their conventions, and small result records.

A Jacobian from the service is a matrix in one of two layouts (CONVENTIONS section 2):
``"in_out"`` (the seed notes', rows index the input) or ``"out_in"`` (JAX/PyTorch/SciPy), with
rows and columns flattened in ``order`` ``"F"`` or ``"C"``. Every Jacobian object here keeps
``in_shape``, ``out_shape``, ``layout`` and ``order``, and ``as_tensor()`` gives the layout-free
form ``(*out_shape, *in_shape)`` that ``jax.jacobian`` returns.

* :class:`DenseJacobian` is a 2-D ``ndarray`` subclass.
* COO Jacobians are :class:`jacobian_client.sparse.SparseJacobian` (a ``scipy.sparse.coo_array``)
  when SciPy is installed, else the light :class:`CooJacobian` with ``.to_scipy()``.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple, TypeAlias

import numpy as np
import numpy.typing as npt

from .wire import decode_array, decode_tensor

FloatArray: TypeAlias = npt.NDArray[np.float64]
Layout: TypeAlias = Literal["in_out", "out_in"]
Order: TypeAlias = Literal["F", "C"]
HAVE_SCIPY = importlib.util.find_spec("scipy") is not None


@dataclass(frozen=True)
class JacobianMeta:
    """How a Jacobian matrix is laid out, and what came with it.

    Attributes
    ----------
    in_shape, out_shape : tuple of int
        Shapes of the input and of the function's value.
    layout : {"in_out", "out_in"}
    order : {"F", "C"}
    value : ndarray or None
        The function's value at the point (``/v1/jacobian`` only).
    strategy : str or None
        How the service computed it (``chain``, ``reverse`` or ``forward``).
    check : dict or None
        The finite-difference report when ``check=True`` was asked.
    """

    in_shape: tuple[int, ...]
    out_shape: tuple[int, ...]
    layout: Layout = "in_out"
    order: Order = "F"
    value: FloatArray | None = field(default=None, compare=False)
    strategy: str | None = None
    check: dict[str, Any] | None = field(default=None, compare=False)


def matrix_as_tensor(matrix: FloatArray, meta: JacobianMeta) -> FloatArray:
    """Return a dense Jacobian matrix as the tensor ``T[*out_index, *in_index]``.

    Parameters
    ----------
    matrix : ndarray, shape (rows, cols)
        In ``meta.layout``, flattened in ``meta.order``.
    meta : JacobianMeta

    Returns
    -------
    ndarray, shape (*out_shape, *in_shape)

    Notes
    -----
    In ``out_in`` layout entry ``[r, c]`` has ``r = flat(out_index)`` and ``c = flat(in_index)``.
    In C order the C-linear index of ``(*out_index, *in_index)`` is ``r * in_size + c``, and in
    F order its F-linear index is ``r + out_size * c``: both are where ``reshape`` in that same
    order reads ``[r, c]``, so one reshape in ``meta.order`` unflattens both sides.
    """
    out_in = matrix.T if meta.layout == "in_out" else matrix
    return out_in.reshape((*meta.out_shape, *meta.in_shape), order=meta.order)


class Labelled:
    """What every Jacobian class shares: labels read from ``meta``, and ``as_tensor``."""

    meta: JacobianMeta

    @property
    def in_shape(self) -> tuple[int, ...]:
        """Shape of the input."""
        return self.meta.in_shape

    @property
    def out_shape(self) -> tuple[int, ...]:
        """Shape of the function's value."""
        return self.meta.out_shape

    @property
    def layout(self) -> Layout:
        """``"in_out"`` (rows index the input) or ``"out_in"``."""
        return self.meta.layout

    @property
    def order(self) -> Order:
        """The flattening order of rows and columns."""
        return self.meta.order

    def _dense(self) -> FloatArray:
        raise NotImplementedError

    def as_tensor(self) -> FloatArray:
        """Return ``T[*out_index, *in_index]`` (dense), shape ``(*out_shape, *in_shape)``."""
        return matrix_as_tensor(self._dense(), self.meta)


class DenseJacobian(Labelled, np.ndarray[Any, np.dtype[np.float64]]):
    """A dense Jacobian: a 2-D float64 array with its :class:`JacobianMeta` as ``meta``."""

    meta: JacobianMeta

    def __new__(cls, matrix: npt.ArrayLike, meta: JacobianMeta) -> DenseJacobian:
        """Label ``matrix`` (2-D) with ``meta``."""
        obj = np.asarray(matrix, dtype=np.float64).view(cls)
        obj.meta = meta
        return obj

    def __array_finalize__(self, obj: Any) -> None:
        # Views and slices keep the labels; arithmetic results are plain arrays in practice.
        self.meta = getattr(obj, "meta", JacobianMeta((), ()))

    def toarray(self) -> FloatArray:
        """Return the matrix as a plain ndarray (as SciPy's ``toarray``)."""
        return np.asarray(self).copy()

    def _dense(self) -> FloatArray:
        return np.asarray(self)


@dataclass(frozen=True, eq=False)
class CooJacobian(Labelled):
    """A COO Jacobian without SciPy: canonical triplets and the :class:`JacobianMeta`.

    Attributes
    ----------
    row, col : ndarray of int64, shape (nnz,)
    data : ndarray of float64, shape (nnz,)
    shape : tuple of int
        (rows, cols) of the matrix in ``meta.layout``.
    meta : JacobianMeta
    """

    row: npt.NDArray[np.int64]
    col: npt.NDArray[np.int64]
    data: FloatArray
    shape: tuple[int, int]
    meta: JacobianMeta

    @property
    def nnz(self) -> int:
        """Number of stored entries."""
        return int(self.data.size)

    def toarray(self) -> FloatArray:
        """Return the dense matrix, shape ``shape``."""
        dense = np.zeros(self.shape)
        np.add.at(dense, (self.row, self.col), self.data)
        return dense

    def _dense(self) -> FloatArray:
        return self.toarray()

    def to_scipy(self) -> Any:
        """Return the :class:`jacobian_client.sparse.SparseJacobian` (needs SciPy)."""
        from .sparse import SparseJacobian

        return SparseJacobian.from_triplets(self.row, self.col, self.data, self.shape, self.meta)


Jacobian: TypeAlias = Any
"""A :class:`DenseJacobian`, a ``SparseJacobian`` (SciPy) or a :class:`CooJacobian`."""


def decode_jacobian(
    wire: dict[str, Any],
    value: FloatArray | None = None,
    strategy: str | None = None,
    check: dict[str, Any] | None = None,
) -> Jacobian:
    """Read a Jacobian object of a response (dense or COO, any encoding).

    Parameters
    ----------
    wire : dict
        ``{"format": "coo" | "dense", "shape", "in_shape", "out_shape", "layout", "order",
        ...}`` with binary segments already resolved.
    value, strategy, check
        Kept in the returned object's ``meta``.

    Returns
    -------
    DenseJacobian, SparseJacobian or CooJacobian
    """
    meta = JacobianMeta(
        in_shape=tuple(wire["in_shape"]),
        out_shape=tuple(wire["out_shape"]),
        layout=wire["layout"],
        order=wire["order"],
        value=value,
        strategy=strategy,
        check=check,
    )
    if wire.get("format") == "dense":
        return DenseJacobian(decode_tensor(wire["data"]), meta)
    rows, cols = (int(n) for n in wire["shape"])
    coo = CooJacobian(
        row=decode_array(wire["row"], "int64"),
        col=decode_array(wire["col"], "int64"),
        data=decode_array(wire["data"], "float64"),
        shape=(rows, cols),
        meta=meta,
    )
    return coo.to_scipy() if HAVE_SCIPY else coo


class CrossCorrelation(NamedTuple):
    """``/v1/cross-correlation``: the output map(s) and the Jacobians asked for (else None)."""

    output: FloatArray
    jacobian_x: Jacobian | None
    jacobian_kernel: Jacobian | None


class JvpResult(NamedTuple):
    """``/v1/jvp``: the value, the output tangent ten(Jᵀ vec(v)), the check report."""

    value: FloatArray
    tangent: FloatArray
    check: dict[str, Any] | None


class VjpResult(NamedTuple):
    """``/v1/vjp``: the value, the input cotangent(s) ten(J vec(u)), the check report.

    ``cotangent`` is one array when ``wrt`` was one name (or the op-list form), else a dict
    name → array.
    """

    value: FloatArray
    cotangent: FloatArray | dict[str, FloatArray]
    check: dict[str, Any] | None


@dataclass(frozen=True)
class DescentRecord:
    """One recorded step of a gradient descent.

    ``x`` is the iterate when ``record_x=True`` was asked (a dict name → array for programs);
    ``evaluations`` the counts of f, gradient and Hessian-vector products so far (minimize).
    """

    step: int
    f: float
    grad_norm: float
    learning_rate: float | None
    x: FloatArray | dict[str, FloatArray] | None = None
    evaluations: dict[str, int] | None = None


@dataclass(frozen=True)
class DescentResult:
    """The outcome of a gradient descent (``status`` and ``reason`` say why it stopped).

    ``x_final`` is the final iterate of the ``x0`` form; ``final`` maps each variable's name to
    its final value (for the ``x0`` form: ``{"x": x_final}``). ``method`` and ``evaluations``
    come with ``/v1/minimize``.
    """

    status: str
    reason: str
    steps: int
    final_step: int
    f_final: float
    grad_norm_final: float
    x_final: FloatArray | None
    final: dict[str, FloatArray]
    trajectory: list[DescentRecord]
    method: str | None = None
    evaluations: dict[str, int] | None = None
    raw: dict[str, Any] = field(repr=False, compare=False, default_factory=dict)


def _iterate(line: dict[str, Any]) -> FloatArray | dict[str, FloatArray] | None:
    # The x0 form records "x"; a program records "variables", name -> tensor.
    if line.get("x") is not None:
        return decode_tensor(line["x"])
    if line.get("variables") is not None:
        return {name: decode_tensor(item) for name, item in line["variables"].items()}
    return None


def decode_record(line: dict[str, Any]) -> DescentRecord:
    """Read one trajectory record (a JSON object or an NDJSON line)."""
    return DescentRecord(
        step=int(line["step"]),
        f=float(line["f"]),
        grad_norm=float(line["grad_norm"]),
        learning_rate=line.get("learning_rate"),
        x=_iterate(line),
        evaluations=line.get("evaluations"),
    )


def decode_descent(summary: dict[str, Any], trajectory: list[DescentRecord]) -> DescentResult:
    """Read the summary of a descent (the JSON response, or the stream's last line)."""
    x_final = decode_tensor(summary["x_final"]) if summary.get("x_final") is not None else None
    final_wire = summary.get("final")
    final = {name: decode_tensor(t) for name, t in final_wire.items()} if final_wire else {}
    if x_final is not None and not final:
        final = {"x": x_final}
    return DescentResult(
        status=summary["status"],
        reason=summary["reason"],
        steps=int(summary["steps"]),
        final_step=int(summary["final_step"]),
        f_final=float(summary["f_final"]),
        grad_norm_final=float(summary["grad_norm_final"]),
        x_final=x_final,
        final=final,
        trajectory=trajectory,
        method=summary.get("method"),
        evaluations=summary.get("evaluations"),
        raw=summary,
    )
