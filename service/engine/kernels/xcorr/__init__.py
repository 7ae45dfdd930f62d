"""Cross-correlation: shape rule, forward, sparse Jacobians, VJPs and structural sizes.

This module owns the seed notes' example (``seed-notes.md``, *Chain rule -> Example*): the
cross-correlation of a ``C x H x W`` image ``x`` with a ``C x H' x W'`` kernel ``k`` and its
Jacobian with respect to ``x``. Inside the math kernels the notes' symbols are used: ``x``, ``k``,
``C, H, W``, ``kh, kw`` for ``H', W'``, ``s_h, s_w`` for the strides and ``h_out, w_out`` for the
output size. The notes' definition is generalized in four ways that all reduce to it at the
defaults (stride 1, ``"valid"`` padding, dilation 1, one image, one kernel):

* zero padding ``x_p`` of ``x`` by ``pad_top, pad_bottom, pad_left, pad_right``;
* dilation ``d_h, d_w`` of the kernel taps;
* ``K`` kernels, stacked as ``k`` of shape ``(K, C, kh, kw)``;
* ``N`` images, stacked as ``x`` of shape ``(N, C, H, W)``.

With all four, for ``0 <= i < h_out`` and ``0 <= j < w_out``::

    y[n, kk, i, j] = sum_{c, h, w} x_p[n, c, s_h i + d_h h, s_w j + d_w w] k[kk, c, h, w]
    h_out = floor((H + pad_top + pad_bottom - d_h (kh - 1) - 1) / s_h) + 1

Internally every tensor is handled in its 4-D form ``x4 (N, C, H, W)``, ``k4 (K, C, kh, kw)``,
``y4 (N, K, h_out, w_out)`` with ``N = 1`` or ``K = 1`` when the axis is absent; a size-1 axis
changes no flat index in either order, so the 4-D Jacobian is the requested one.

Modules, by concern:

* ``geometry``: :class:`XCorrGeometry` and the shape rule (the plan), padding;
* ``columns``: one-thread GEMM blocks and im2col columns shared by forward and transpose;
* ``forward``: the measured forward methods and the notes' ``ten(J^T vec(x))``;
* ``runs``, ``builder``, ``border`` and ``jacobian``: the sparse Jacobians w.r.t. ``x`` and
  ``k`` (axis pairings and runs; long-run blocks; border rows) and their sizes;
* ``dense``: the Jacobian w.r.t. ``x`` written densely (columns scaled), for small dense requests;
* ``transpose``: the VJPs.

Public surface (also :mod:`service.engine.xcorr`): :class:`XCorrGeometry`,
:func:`output_shape`, :func:`padding_pairs`, :func:`choose_method`, :func:`cross_correlate`,
:func:`forward_via_jacobian`, :func:`jacobian_x` (and :func:`jacobian_x_csr`, the same matrix as
CSR, and :func:`jacobian_x_dense`, dense with columns scaled), :func:`jacobian_kernel`,
:func:`nnz_x`, :func:`nnz_kernel`, :func:`vjp_x`,
:func:`vjp_kernel`, :func:`scratch_elements` (for the cost model).
The op is bilinear, so its JVP is the forward itself:
``jvp = cross_correlate(dx, k) + cross_correlate(x, dk)``.
"""

from .dense import jacobian_x_dense
from .forward import (
    FORWARD_METHODS,
    Method,
    choose_method,
    cross_correlate,
    forward_via_jacobian,
    scratch_elements,
)
from .geometry import (
    DEFAULT_GEOMETRY,
    PADDING_NAMES,
    Padding,
    PaddingName,
    PaddingPairs,
    XCorrGeometry,
    output_shape,
    padding_pairs,
    workspace_elements,
)
from .jacobian import jacobian_kernel, jacobian_x, jacobian_x_csr, nnz_kernel, nnz_x
from .transpose import vjp_kernel, vjp_x

__all__ = [
    "DEFAULT_GEOMETRY",
    "FORWARD_METHODS",
    "PADDING_NAMES",
    "Method",
    "Padding",
    "PaddingName",
    "PaddingPairs",
    "XCorrGeometry",
    "choose_method",
    "cross_correlate",
    "forward_via_jacobian",
    "jacobian_kernel",
    "jacobian_x",
    "jacobian_x_csr",
    "jacobian_x_dense",
    "nnz_kernel",
    "nnz_x",
    "output_shape",
    "padding_pairs",
    "scratch_elements",
    "vjp_kernel",
    "vjp_x",
    "workspace_elements",
]
