"""One cross-correlation request: the forward and the Jacobians asked for, limits checked first.

The API calls :func:`correlate` once per request (KServe's data-plane pattern): every size is
estimated from the shapes before any array is allocated, so an over-limit request is refused at
the cost of a few integer products.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import scipy.sparse as sp

from . import xcorr
from .errors import LimitExceeded
from .jacobian import Jacobian, present
from .layout import size_of
from .sparse import check_dense, check_nnz
from .types import FloatArray, Layout, Order, Shape

JacobianRequest = Literal["none", "coo", "dense"]
Wrt = Literal["x", "kernel"]


@dataclass(frozen=True)
class CorrelationLimits:
    """Bounds from the service settings; the engine receives numbers, never settings."""

    max_output_elements: int
    max_nnz: int
    max_dense_elements: int


@dataclass(frozen=True, eq=False)
class CorrelationResult:
    """The correlation ``x * k`` and the Jacobians that were asked for."""

    output: FloatArray
    jacobian_x: Jacobian | None
    jacobian_kernel: Jacobian | None


def _check_jacobian_size(
    what: Wrt, rows: int, cols: int, nnz: int, fmt: JacobianRequest, limits: CorrelationLimits
) -> None:
    if fmt == "dense":
        check_dense(rows, cols, limits.max_dense_elements)
    else:
        check_nnz(nnz, limits.max_nnz, f"COO non-zeros of the Jacobian with respect to {what}")


def correlate(
    x: FloatArray,
    k: FloatArray,
    geometry: xcorr.XCorrGeometry,
    *,
    jacobian: JacobianRequest,
    wrt: Sequence[Wrt],
    order: Order,
    layout: Layout,
    method: Literal["direct", "jacobian"],
    limits: CorrelationLimits,
) -> CorrelationResult:
    """Cross-correlate and build the requested Jacobians.

    Parameters
    ----------
    x : ndarray, shape (C, H, W) or (N, C, H, W)
    k : ndarray, shape (C, kh, kw) or (K, C, kh, kw)
    geometry : XCorrGeometry
    jacobian : {"none", "coo", "dense"}
    wrt : sequence of {"x", "kernel"}
    order : {"F", "C"}
    layout : {"in_out", "out_in"}
    method : {"direct", "jacobian"}
        ``"jacobian"`` computes the output as ``ten(J^T vec(x))`` (the notes' identity).
    limits : CorrelationLimits

    Returns
    -------
    CorrelationResult

    Raises
    ------
    ShapeError, ParameterError
        From the shape rule, before any arithmetic.
    LimitExceeded
        If the output, a COO Jacobian or a dense Jacobian would exceed its bound.
    """
    out_shape = check_sizes(
        x.shape, k.shape, geometry, jacobian=jacobian, wrt=wrt, method=method, limits=limits
    )
    wanted = [] if jacobian == "none" else list(wrt)
    if method == "jacobian":
        output = xcorr.forward_via_jacobian(x, k, geometry, order)
    else:
        output = xcorr.cross_correlate(x, k, geometry)
    fmt: Literal["coo", "dense"] = "dense" if jacobian == "dense" else "coo"

    def presented(coo: sp.coo_array, in_shape: Shape) -> Jacobian:
        return present(
            coo,
            in_shape,
            out_shape,
            layout=layout,
            order=order,
            fmt=fmt,
            max_dense_elements=limits.max_dense_elements,
        )

    jacobian_x = jacobian_kernel = None
    if "x" in wanted:
        coo = xcorr.jacobian_x(k, x.shape, geometry, order=order, layout=layout)
        jacobian_x = presented(coo, x.shape)
    if "kernel" in wanted:
        coo = xcorr.jacobian_kernel(x, k.shape, geometry, order=order, layout=layout)
        jacobian_kernel = presented(coo, k.shape)
    return CorrelationResult(output, jacobian_x, jacobian_kernel)


def check_sizes(
    x_shape: Shape,
    k_shape: Shape,
    geometry: xcorr.XCorrGeometry,
    *,
    jacobian: JacobianRequest,
    wrt: Sequence[Wrt],
    method: Literal["direct", "jacobian"],
    limits: CorrelationLimits,
) -> Shape:
    """Check every size of a correlation against its limit; return the output shape.

    Parameters
    ----------
    x_shape, k_shape : tuple of int
    geometry : XCorrGeometry
    jacobian, wrt, method, limits
        As in :func:`correlate`.

    Returns
    -------
    tuple of int

    Raises
    ------
    ShapeError, ParameterError
        From the shape rule.
    LimitExceeded
        If the output, the padded image, a COO Jacobian or a dense Jacobian would exceed its
        bound.
    """
    out_shape = xcorr.output_shape(x_shape, k_shape, geometry)
    out_size = size_of(out_shape)
    if out_size > limits.max_output_elements:
        raise LimitExceeded(
            "output elements", out_size, limits.max_output_elements, setting="max_tensor_elements"
        )
    workspace = xcorr.workspace_elements(x_shape, k_shape, geometry)
    if workspace > limits.max_output_elements:
        raise LimitExceeded(
            "elements of the padded image",
            workspace,
            limits.max_output_elements,
            setting="max_tensor_elements",
        )
    wanted = [] if jacobian == "none" else list(wrt)
    nnz = {
        "x": xcorr.nnz_x(x_shape, k_shape, geometry),
        "kernel": xcorr.nnz_kernel(x_shape, k_shape, geometry),
    }
    in_sizes = {"x": size_of(x_shape), "kernel": size_of(k_shape)}
    for what in wanted:
        _check_jacobian_size(what, in_sizes[what], out_size, nnz[what], jacobian, limits)
    if method == "jacobian":
        # The identity route builds J_x whatever the client asked to receive.
        check_nnz(nnz["x"], limits.max_nnz, "COO non-zeros of the Jacobian with respect to x")
    return out_shape
