"""``xcorr2d``: the seed notes' cross-correlation ``x * k`` as an operation of the image ``x``.

The kernel is a parameter, so the operation is linear in ``x`` (cross-correlation is bilinear in
``(x, k)``, JAX ``defbilinear``): the JVP is the forward applied to the tangent, the VJP is the
transpose computed by :func:`service.engine.xcorr.vjp_x`, and the local Jacobian is the notes'
matrix from :func:`service.engine.xcorr.jacobian_x`, whatever ``x`` is. All arithmetic lives in
:mod:`service.engine.xcorr`; this module only adapts it to the batched ``Op`` contract.
"""

import functools
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import ClassVar

import numpy as np
import scipy.sparse as sp

from .. import xcorr as correlation
from ..op import LinearOp, Sparsity, frozen_array, register
from ..sparse import Factor, factor_of
from ..types import FloatArray, Layout, Order, Shape


@register
@dataclass(frozen=True, eq=False)
class CrossCorrelate2D(LinearOp):
    """Cross-correlate the input image with a fixed kernel (seed notes, *Example*).

    ``y[n, kk, i, j] = sum_{c,h,w} x_p[n, c, s_h i + d_h h, s_w j + d_w w] k[kk, c, h, w]`` with
    ``x_p`` the zero-padded image; the ``n`` and ``kk`` axes exist only when ``x`` and ``k`` are
    4-D. At the defaults this is the notes' ``(x * k)[i, j]`` with output
    ``floor((H - H') / s_H + 1) x floor((W - W') / s_W + 1)``.

    Parameters
    ----------
    kernel : ndarray, shape (C, kh, kw) or (K, C, kh, kw)
    stride : (int, int)
        ``(s_H, s_W) >= 1``.
    padding : {"valid", "same", "full"} or ((int, int), (int, int))
        See :class:`service.engine.xcorr.XCorrGeometry`; ``"valid"`` is the notes'.
    dilation : (int, int)
        ``(d_H, d_W) >= 1``.

    Notes
    -----
    Input ``x``: (C, H, W) or (N, C, H, W). Output: ``xcorr.output_shape(x.shape, kernel.shape,
    geometry)``.
    """

    name: ClassVar[str] = "xcorr2d"
    note: ClassVar[str] = (
        "linear in the image (bilinear in image and kernel): differentiable everywhere, the "
        "Jacobian is the seed notes' matrix of kernel entries"
    )
    params: ClassVar[Mapping[str, str]] = MappingProxyType(
        {
            "kernel": "tensor k, shape (C, kh, kw) or (K, C, kh, kw)",
            "stride": "(s_H, s_W), each >= 1, or one int for both (default [1, 1])",
            "padding": "'valid' (default, the notes), 'same', 'full', or [[top, bottom], "
            "[left, right]]",
            "dilation": "(d_H, d_W), each >= 1, or one int for both (default [1, 1])",
        }
    )

    kernel: FloatArray
    stride: tuple[int, int] = (1, 1)
    padding: correlation.Padding = "valid"
    dilation: tuple[int, int] = (1, 1)

    def __post_init__(self) -> None:
        object.__setattr__(self, "kernel", frozen_array(self.kernel, "xcorr2d: kernel"))
        geometry = correlation.XCorrGeometry(self.stride, self.padding, self.dilation)
        # The geometry validated and normalized the parameters (lists -> tuples).
        object.__setattr__(self, "stride", geometry.stride)
        object.__setattr__(self, "padding", geometry.padding)
        object.__setattr__(self, "dilation", geometry.dilation)

    @functools.cached_property
    def geometry(self) -> correlation.XCorrGeometry:
        """Stride, padding and dilation as the kernel routines take them.

        Made once: every rule reads it, and building it validates the parameters again.
        """
        return correlation.XCorrGeometry(self.stride, self.padding, self.dilation)

    def out_shape(self, in_shape: Shape) -> Shape:
        """Return ``xcorr.output_shape(in_shape, kernel.shape, geometry)``."""
        return correlation.output_shape(in_shape, self.kernel.shape, self.geometry)

    def workspace_elements(self, in_shape: Shape) -> int:
        """Return the size of the zero-padded image the forward and the VJP materialize."""
        return correlation.workspace_elements(in_shape, self.kernel.shape, self.geometry)

    def sparsity(self, in_shape: Shape) -> Sparsity:
        """Bound the entries: an output reads ``C kh kw`` pixels; a pixel feeds ``K kh kw``."""
        out_shape = self.out_shape(in_shape)
        *_, channels, kh, kw = self.kernel.shape
        kernels = self.kernel.shape[0] if self.kernel.ndim == 4 else 1
        h_out, w_out = out_shape[-2:]
        # Each tap (h, w) puts a pixel under at most one window position per kernel.
        fan_out = kernels * min(kh, h_out) * min(kw, w_out)
        nnz = correlation.nnz_x(in_shape, self.kernel.shape, self.geometry)
        return Sparsity(nnz, fan_out, channels * kh * kw)

    def _images(self, batch: FloatArray) -> tuple[FloatArray, tuple[int, ...]]:
        # (B, C, H, W) is already a stack of images; (B, N, C, H, W) -> (B * N, C, H, W).
        if batch.ndim == 4:
            return batch, batch.shape[:1]
        return np.reshape(batch, (-1, *batch.shape[2:])), batch.shape[:2]

    def apply(self, t: FloatArray) -> FloatArray:
        """Cross-correlate each image of the batch: (B, *in_shape) -> (B, *out_shape)."""
        images, lead = self._images(t)
        y = correlation.cross_correlate(images, self.kernel, self.geometry)
        # (B [* N], [K,] h_out, w_out) -> (B, [N,] [K,] h_out, w_out)
        return np.reshape(y, (*lead, *y.shape[1:]))

    def _vjp(self, x: FloatArray, cotangents: FloatArray) -> FloatArray:
        # The transpose of the correlation in x (a full correlation with the flipped kernel,
        # scattered back through the padding); vjp_x derives and computes it. A batch of
        # cotangents is a batch of images' cotangents along the image axis n.
        batch = len(cotangents)
        if x.ndim == 3:
            return correlation.vjp_x(self.kernel, cotangents, (batch, *x.shape), self.geometry)
        # (B, N, ...) -> (B * N, ...) and back
        stacked = np.reshape(cotangents, (batch * x.shape[0], *cotangents.shape[2:]))
        shape = (batch * x.shape[0], *x.shape[1:])
        g = correlation.vjp_x(self.kernel, stacked, shape, self.geometry)
        return np.reshape(g, (batch, *x.shape))

    def _local_jacobian(self, x: FloatArray, order: Order) -> sp.coo_array:
        return correlation.jacobian_x(self.kernel, x.shape, self.geometry, order, "in_out")

    def _local_factor(self, x: FloatArray, order: Order) -> Factor:
        # The CSR arrays the matrix is built in, before their row indices are expanded to COO.
        jacobian = correlation.jacobian_x_csr(self.kernel, x.shape, self.geometry, order, "in_out")
        return factor_of(jacobian)

    def scaled_dense_jacobian(
        self, x: FloatArray, order: Order, layout: Layout, scale: FloatArray | None
    ) -> FloatArray:
        """Return ``J diag(scale)`` at ``x`` as a dense matrix (``chain_dense.DenseWriter``).

        Parameters
        ----------
        x : ndarray, shape ``in_shape``
        order : {"F", "C"}
        layout : {"in_out", "out_in"}
        scale : ndarray, shape (out_size,), or None
            A factor per output element, flat in ``order``.

        Returns
        -------
        ndarray, shape (in_size, out_size), or its transpose for ``out_in``
            Bit for bit the dense form of ``local_factor(x, order) @ diag(scale)``.

        Raises
        ------
        NonFiniteError
            If an entry is not finite (``"the Jacobian has non-finite entries (overflow)"``).
        """
        x = self._differentiable(x, order)
        return correlation.jacobian_x_dense(
            self.kernel, x.shape, self.geometry, order, layout, scale
        )
