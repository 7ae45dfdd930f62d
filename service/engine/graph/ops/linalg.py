"""Multilinear operations: ``einsum``, ``matmul`` (an einsum) and ``xcorr2d(image, kernel)``.

An einsum is linear in each operand, so its JVP in operand ``i`` is the same einsum with the
tangent in place of the operand, and its VJP contracts the cotangent with the other operands back
onto operand ``i``'s subscripts (JAX's ``_einsum_transpose_rule``). Its local Jacobian pairs every
combination of the labels of operand ``i`` and of the output: ``J_i[flat(a), flat(o)] =`` the
einsum of the other operands at the labels the pair fixes.
"""

import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import ClassVar

import numpy as np
import scipy.sparse as sp

from ... import layout
from ... import xcorr as correlation
from ...errors import ParameterError, ShapeError
from ...op import Sparsity, coo_from_grids
from ...ops.xcorr import CrossCorrelate2D
from ...sparse import Factor
from ...types import FloatArray, Order, Shape
from ..nary import NaryOp, Values, multilinear_second_order, register_nary

_LETTERS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"


def _parse(subscripts: str, count: int) -> tuple[list[str], str]:
    """Split ``"ij,jk->ik"`` into operand labels and output labels, checking them.

    A term may hold one ``...`` (NumPy's broadcast axes); it is kept, for :meth:`Einsum.labels`.
    """
    if not isinstance(subscripts, str) or "->" not in subscripts:
        raise ParameterError("einsum: subscripts must be a string with an explicit '->' output")
    left, out = subscripts.replace(" ", "").split("->", 1)
    operands = left.split(",")
    for term in (*operands, out):
        labels = term.replace("...", "", 1)
        if any(c not in _LETTERS for c in labels):
            raise ParameterError(f"einsum: subscripts {subscripts!r} may only use letters a-z, "
                                 "A-Z and one '...' per term")  # fmt: skip
        if len(set(labels)) != len(labels):
            raise ParameterError(
                f"einsum: a label repeats within {term!r}; traces and diagonals are not supported"
            )
    if len(operands) != count:
        raise ParameterError(f"einsum: subscripts {subscripts!r} name {len(operands)} operand(s), "
                             f"got {count}")  # fmt: skip
    missing = set(out) - set("".join(operands)) - {"."}
    if missing:
        raise ParameterError(f"einsum: output labels {sorted(missing)} appear in no operand")
    return operands, out


def _broadcast_labels(batches: Sequence[Shape], pool: str, name: str) -> tuple[list[str], str]:
    """Label batch axes as NumPy broadcasts them (aligned on the right); return theirs and the out.

    Each axis of the broadcast shape gets one label, shared by the operands whose axis there has
    the broadcast size. An operand whose axis is 1 against a larger size gets a label of its own
    (size 1): as it appears in no other operand nor in the output, the VJP of that operand sums
    over the broadcast axis and the JVP reads its one slice, as the rules of a broadcast argument
    must. An operand without the axis has no label for it.

    Raises
    ------
    ShapeError
        If two sizes of one axis differ and neither is 1, or the labels run out.
    """
    rank = max((len(b) for b in batches), default=0)
    labels = iter(pool)
    own = [""] * len(batches)
    out = ""
    for p in range(rank, 0, -1):
        dims = [b[-p] if len(b) >= p else None for b in batches]
        size = max(d for d in dims if d is not None)
        try:
            shared = next(labels)
            for q, d in enumerate(dims):
                if d is None:
                    continue
                if d != size and d != 1:
                    raise ShapeError(f"{name}: batch axes {[list(b) for b in batches]} do not "
                                     "broadcast together")  # fmt: skip
                own[q] += shared if d == size else next(labels)
        except StopIteration:
            raise ShapeError(f"{name}: too many batch axes {[list(b) for b in batches]}") from None
        out += shared
    return own, out


@dataclass(frozen=True, eq=False)
class _Contraction(NaryOp):
    """An einsum whose subscripts may depend on the operands' ranks."""

    linear: ClassVar[bool] = True
    note: ClassVar[str] = "multilinear: differentiable everywhere, each J_i is an einsum"

    def labels(self, shapes: Sequence[Shape]) -> tuple[list[str], str]:
        """Return the operand labels and the output labels for operands of ``shapes``."""
        raise NotImplementedError

    def _sizes(self, shapes: Sequence[Shape]) -> dict[str, int]:
        operands, _ = self.labels(shapes)
        sizes: dict[str, int] = {}
        for labels, shape in zip(operands, shapes, strict=True):
            if len(labels) != len(shape):
                raise ShapeError(f"{self.name}: subscripts {labels!r} need rank {len(labels)}, "
                                 f"got shape {list(shape)}")  # fmt: skip
            for label, dim in zip(labels, shape, strict=True):
                if sizes.setdefault(label, dim) != dim:
                    raise ShapeError(f"{self.name}: label {label!r} has sizes {sizes[label]} and "
                                     f"{dim} in shapes {[list(s) for s in shapes]}")  # fmt: skip
        return sizes

    def out_shape(self, shapes: Sequence[Shape]) -> Shape:
        """Return the output shape: the sizes of the output labels."""
        sizes = self._sizes(shapes)
        _, out = self.labels(shapes)
        return tuple(sizes[c] for c in out)

    def workspace_elements(self, shapes: Sequence[Shape]) -> int:
        """Return the combinations of all labels: the local Jacobian visits each once."""
        sizes = self._sizes(shapes)
        return int(np.prod(list(sizes.values()), dtype=object))

    def sparsity(self, shapes: Sequence[Shape], i: int) -> Sparsity:
        """Entries are the combinations of the labels of operand ``i`` and of the output."""
        sizes = self._sizes(shapes)
        operands, out = self.labels(shapes)
        own, outs = set(operands[i]), set(out)
        nnz = int(np.prod([sizes[c] for c in own | outs], dtype=object))
        fan_out = int(np.prod([sizes[c] for c in outs - own], dtype=object))
        fan_in = int(np.prod([sizes[c] for c in own - outs], dtype=object))
        return Sparsity(nnz, fan_out, fan_in)

    def _forward(self, values: Values) -> FloatArray:
        operands, out = self.labels([v.shape for v in values])
        spec = f"{','.join(operands)}->{out}"
        return np.asarray(np.einsum(spec, *values, optimize=len(values) > 2), dtype=np.float64)

    def _free_label(self, operands: Sequence[str], out: str) -> str:
        used = set("".join(operands)) | set(out)
        return next(c for c in _LETTERS if c not in used)

    def _jvp(self, values: Values, i: int, tangents: FloatArray) -> FloatArray:
        operands, out = self.labels([v.shape for v in values])
        batch = self._free_label(operands, out)
        labels = [batch + s if k == i else s for k, s in enumerate(operands)]
        arrays = [tangents if k == i else v for k, v in enumerate(values)]
        image: FloatArray = np.einsum(f"{','.join(labels)}->{batch}{out}", *arrays, optimize=True)
        return image

    def _vjp(self, values: Values, i: int, cotangents: FloatArray) -> FloatArray:
        operands, out = self.labels([v.shape for v in values])
        batch = self._free_label(operands, out)
        labels = [s for k, s in enumerate(operands) if k != i] + [batch + out]
        arrays = [v for k, v in enumerate(values) if k != i] + [cotangents]
        # Labels only operand i has were summed out: its derivative is 1 along them.
        for label, dim in zip(operands[i], values[i].shape, strict=True):
            if label not in "".join(labels):
                labels.append(label)
                arrays.append(np.ones(dim))
        spec = f"{','.join(labels)}->{batch}{operands[i]}"
        grad: FloatArray = np.einsum(spec, *arrays, optimize=True)
        return grad

    def _second_order(
        self,
        values: Values,
        i: int,
        cotangent: FloatArray,
        tangents: Sequence[FloatArray | None],
    ) -> FloatArray | None:
        return multilinear_second_order(self, values, i, cotangent, tangents)

    def _local_jacobian(self, values: Values, i: int, order: Order) -> sp.coo_array:
        shapes = [v.shape for v in values]
        operands, out = self.labels(shapes)
        sizes = self._sizes(shapes)
        own = operands[i]
        # U: every label of operand i or of the output; one entry per combination of U.
        union = own + "".join(c for c in out if c not in own)
        others = [(s, v) for k, (s, v) in enumerate(zip(operands, values, strict=True)) if k != i]
        present = "".join(c for c in union if any(c in s for s, _ in others))
        if others:
            spec = f"{','.join(s for s, _ in others)}->{present}"
            data = np.einsum(spec, *(v for _, v in others), optimize=True)
        else:
            data = np.ones(())
        data = np.reshape(data, [sizes[c] if c in present else 1 for c in union])

        def placed(labels: str) -> np.ndarray:
            shape = tuple(sizes[c] for c in labels)
            grid = layout.flat_grid(shape, order) if shape else np.zeros((), dtype=np.int64)
            # move the axes of ``labels`` to their positions in ``union``
            return np.reshape(
                np.transpose(grid, np.argsort([union.index(c) for c in labels])),
                [sizes[c] if c in labels else 1 for c in union],
            )

        size = (layout.size_of(values[i].shape), layout.size_of(tuple(sizes[c] for c in out)))
        return coo_from_grids(placed(own), placed(out), data, size)


@register_nary
@dataclass(frozen=True, eq=False)
class Einsum(_Contraction):
    """``numpy.einsum(subscripts, *operands)`` with an explicit output (no traces).

    ``...`` stands for the leading, trailing or middle axes a term does not name, broadcast
    across the operands as NumPy does; the output must then have ``...`` too, unless those axes
    are none (NumPy refuses to sum them away implicitly).
    """

    name: ClassVar[str] = "einsum"
    arg_names: ClassVar[tuple[str, ...]] = ("operands",)
    variadic: ClassVar[bool] = True
    params: ClassVar[Mapping[str, str]] = MappingProxyType(
        {
            "subscripts": "e.g. 'ij,jk->ik' or '...ij,...jk->...ik': letters and one '...' per "
            "term (NumPy broadcasting), explicit '->', no repeated label within one operand"
        }  # fmt: skip
    )

    subscripts: str

    def __post_init__(self) -> None:
        if not isinstance(self.subscripts, str) or len(self.subscripts) > 200:
            raise ParameterError("einsum: subscripts must be a string of at most 200 characters")
        _parse(self.subscripts, self.subscripts.split("->")[0].count(",") + 1)

    def labels(self, shapes: Sequence[Shape]) -> tuple[list[str], str]:
        """Return the parsed subscripts, each ``...`` spelled out as broadcast labels."""
        operands, out = _parse(self.subscripts, len(shapes))
        if "..." not in self.subscripts:
            return operands, out
        pool = "".join(c for c in _LETTERS if c not in self.subscripts)
        spans: list[tuple[int, int]] = []  # where each operand's '...' axes lie in its shape
        for term, shape in zip(operands, shapes, strict=True):
            named = len(term.replace("...", "", 1))
            if len(shape) < named:
                raise ShapeError(f"einsum: subscripts {term!r} need rank >= {named}, got shape "
                                 f"{list(shape)}")  # fmt: skip
            head = term.find("...")
            spans.append((head, head + len(shape) - named) if head >= 0 else (0, 0))
        batches = [tuple(shape[a:b]) for shape, (a, b) in zip(shapes, spans, strict=True)]
        own, lead = _broadcast_labels(batches, pool, "einsum")
        expanded = [t.replace("...", mine, 1) for t, mine in zip(operands, own, strict=True)]
        if "..." not in out and lead:
            raise ShapeError(f"einsum: the '...' axes {[list(b) for b in batches]} broadcast to "
                             f"{len(lead)} axes: the output {out!r} needs '...'")  # fmt: skip
        return expanded, out.replace("...", lead, 1)


@register_nary
@dataclass(frozen=True, eq=False)
class MatMul(_Contraction):
    """``a @ b`` (``numpy.matmul``): 1-D, 2-D and batched operands, batch axes broadcast.

    A 1-D ``a`` is a row and a 1-D ``b`` a column, their axis dropped from the result; the axes
    before the last two broadcast as NumPy's do (an operand may have fewer, or size 1).
    """

    name: ClassVar[str] = "matmul"
    arg_names: ClassVar[tuple[str, ...]] = ("a", "b")

    def labels(self, shapes: Sequence[Shape]) -> tuple[list[str], str]:
        """``ij,jk->ik`` behind broadcast batch labels; 1-D operands drop their axis."""
        a, b = shapes
        if not a or not b:
            raise ShapeError(f"matmul: operands must have rank >= 1, got {list(a)} and {list(b)}")
        pool = "".join(c for c in _LETTERS if c not in "ijk")
        (lead_a, lead_b), lead = _broadcast_labels([a[:-2], b[:-2]], pool, "matmul")
        left = lead_a + ("ij" if len(a) >= 2 else "j")
        right = lead_b + ("jk" if len(b) >= 2 else "j")
        out = lead + ("i" if len(a) >= 2 else "") + ("k" if len(b) >= 2 else "")
        return [left, right], out


@register_nary
@dataclass(frozen=True, eq=False)
class XCorr2D(NaryOp):
    """The seed notes' cross-correlation ``x * k`` of an image and a kernel, both differentiable.

    Bilinear: the rules in the image are those of the one-input ``xcorr2d`` with the kernel's
    current value, the rules in the kernel come from :func:`service.engine.xcorr.vjp_kernel` and
    :func:`~service.engine.xcorr.jacobian_kernel`, and the JVP in the kernel is the forward with
    the tangent kernel.
    """

    name: ClassVar[str] = "xcorr2d"
    arg_names: ClassVar[tuple[str, ...]] = ("image", "kernel")
    linear: ClassVar[bool] = True
    note: ClassVar[str] = "bilinear in image and kernel: differentiable everywhere"
    params: ClassVar[Mapping[str, str]] = MappingProxyType(
        {k: v for k, v in CrossCorrelate2D.params.items() if k != "kernel"}
    )

    stride: tuple[int, int] = (1, 1)
    padding: correlation.Padding = "valid"
    dilation: tuple[int, int] = (1, 1)

    def __post_init__(self) -> None:
        geometry = correlation.XCorrGeometry(self.stride, self.padding, self.dilation)
        object.__setattr__(self, "stride", geometry.stride)
        object.__setattr__(self, "padding", geometry.padding)
        object.__setattr__(self, "dilation", geometry.dilation)

    @functools.cached_property
    def geometry(self) -> correlation.XCorrGeometry:
        """Stride, padding and dilation as the kernel routines take them (made once)."""
        return correlation.XCorrGeometry(self.stride, self.padding, self.dilation)

    def _in_image(self, kernel: FloatArray) -> CrossCorrelate2D:
        # The op as a function of the image, with the kernel's current value as its parameter.
        return CrossCorrelate2D(kernel, self.stride, self.padding, self.dilation)

    def out_shape(self, shapes: Sequence[Shape]) -> Shape:
        """Return ``xcorr.output_shape(image, kernel, geometry)``."""
        return correlation.output_shape(shapes[0], shapes[1], self.geometry)

    def workspace_elements(self, shapes: Sequence[Shape]) -> int:
        """Return the size of the zero-padded image."""
        return correlation.workspace_elements(shapes[0], shapes[1], self.geometry)

    def sparsity(self, shapes: Sequence[Shape], i: int) -> Sparsity:
        """Bound J: the image's is the one-input op's; a kernel entry meets every position."""
        if i == 0:
            return self._in_image(np.zeros(shapes[1])).sparsity(shapes[0])
        out = self.out_shape(shapes)
        nnz = correlation.nnz_kernel(shapes[0], shapes[1], self.geometry)
        positions = layout.size_of(out) // (shapes[1][0] if len(shapes[1]) == 4 else 1)
        kernel_taps = layout.size_of(shapes[1][-3:])
        return Sparsity(nnz, positions, kernel_taps)

    def _forward(self, values: Values) -> FloatArray:
        return correlation.cross_correlate(values[0], values[1], self.geometry)

    def _jvp(self, values: Values, i: int, tangents: FloatArray) -> FloatArray:
        x, k = values
        if i == 0:
            return self._in_image(k).apply(tangents)
        if len(tangents) == 1:
            # one tangent kernel (an HVP's, a JVP request's): no stack to build
            return correlation.cross_correlate(x, tangents[0], self.geometry)[np.newaxis]
        return np.stack([correlation.cross_correlate(x, t, self.geometry) for t in tangents])

    def _second_order(
        self,
        values: Values,
        i: int,
        cotangent: FloatArray,
        tangents: Sequence[FloatArray | None],
    ) -> FloatArray | None:
        return multilinear_second_order(self, values, i, cotangent, tangents)

    def _vjp(self, values: Values, i: int, cotangents: FloatArray) -> FloatArray:
        x, k = values
        if i == 0:
            return self._in_image(k)._vjp(x, cotangents)
        return self._vjp_kernel(x, k.shape, cotangents)

    def _vjp_kernel(self, x: FloatArray, k_shape: Shape, cotangents: FloatArray) -> FloatArray:
        """(B, *out_shape) -> (B, *k_shape): the batch pulled back at once as B times K kernels.

        ``g[b, kk] = sum_{n,i,j} u[b, n, kk, i, j] x_p[n, :, s_h i + d_h h, s_w j + d_w w]`` is
        :func:`service.engine.xcorr.vjp_kernel` for the cotangents ``u[:, :, b, kk]`` of
        ``B K`` kernels.
        """
        x4 = x if x.ndim == 4 else x[np.newaxis]
        batch, images = len(cotangents), x4.shape[0]
        # (B, [N,] [K,] h, w) -> (B, N, K, h, w) -> (N, B, K, h, w) -> (N, B K, h, w)
        u = np.reshape(cotangents, (batch, images, -1, *cotangents.shape[-2:]))
        kernels = batch * u.shape[2]
        stacked = np.reshape(np.transpose(u, (1, 0, 2, 3, 4)), (images, kernels, *u.shape[-2:]))
        grad = correlation.vjp_kernel(x4, stacked, (kernels, *k_shape[-3:]), self.geometry)
        # (B K, C, kh, kw) -> (B, *k_shape)
        return np.reshape(grad, (batch, *k_shape))

    def _local_jacobian(self, values: Values, i: int, order: Order) -> sp.coo_array:
        x, k = values
        if i == 0:
            return self._in_image(k)._local_jacobian(x, order)
        return correlation.jacobian_kernel(x, k.shape, self.geometry, order, "in_out")

    def _local_factor(self, values: Values, i: int, order: Order) -> Factor:
        if i == 0:
            return self._in_image(values[1])._local_factor(values[0], order)
        return super()._local_factor(values, i, order)
