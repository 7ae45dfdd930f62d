"""The non-JSON answers: binary bodies, ``.npz`` and ``.npy`` downloads.

Each renderer runs in the worker thread on an answer computed with ``encoding: "binary"``, whose
tensors hold their arrays (:class:`service.codec.binary.Segment`), so nothing is written as text.

* ``application/octet-stream`` (CONVENTIONS 3.1): the JSON header (its length in the
  ``Inference-Header-Content-Length`` response header), then one segment per binary tensor in
  header order; a COO Jacobian's ``row``, ``col`` (int64) and ``data`` (float64) are three. The
  segments are sent from the arrays themselves, never joined into one more copy; int32 indices
  are widened to int64 a chunk at a time while they are sent.
* ``application/x-npz``: a COO Jacobian is exactly what ``scipy.sparse.save_npz`` writes for the
  ``coo_array`` in the requested layout; a dense one is ``numpy.savez`` of ``jacobian``,
  ``in_shape``, ``out_shape``, ``layout`` and ``order``.
* ``application/x-npy``: one tensor of the answer as ``numpy.save`` writes it.
"""

import io
from collections.abc import Callable
from typing import Any

import numpy as np
import pydantic_core
import scipy.sparse as sp
from pydantic import BaseModel
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from ..codec.binary import HEADER_LENGTH, Segment, pad_header, split_segments
from ..codec.sparse import CooJacobian, DenseJacobian
from .negotiation import NPY, NPZ, OCTET_STREAM, Representation


class SegmentsResponse(Response):
    """A binary body sent as its JSON header and then each segment straight from its array."""

    media_type = OCTET_STREAM

    def __init__(self, header: bytes, segments: list[Segment]) -> None:
        self._header = header
        self._segments = segments
        length = len(header) + sum(segment.nbytes for segment in segments)
        super().__init__(
            header,
            headers={"content-length": str(length), HEADER_LENGTH: str(len(header))},
            media_type=OCTET_STREAM,
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Send the start, then the header and the segments' chunks as body parts."""
        await send(
            {"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers}
        )
        await send({"type": "http.response.body", "body": self._header, "more_body": True})
        for segment in self._segments:
            for chunk in segment.chunks():
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})


def render_binary(answer: BaseModel) -> Response:
    """Write an answer as a binary body (header, then segments in header order).

    The JSON header is padded with spaces (insignificant JSON whitespace) to a multiple of
    :data:`SEGMENT_ALIGNMENT` bytes, so that a client's ``numpy.frombuffer`` views of the
    float64 and int64 segments are aligned, as they are in the server's memory.
    """
    header, segments = split_segments(answer.model_dump(mode="python"))
    return SegmentsResponse(pad_header(pydantic_core.to_json(header)), segments)


def _array(tensor: Any) -> np.ndarray[Any, Any]:
    # A tensor of an answer computed with encoding "binary": a TensorOut or a binary_array dict.
    data = tensor["data"] if isinstance(tensor, dict) else tensor.data
    if not isinstance(data, Segment):
        raise TypeError("the answer was not computed with encoding 'binary'")
    return data.array.astype(data.dtype, copy=False)  # the wire dtype (int64 COO indices)


def jacobian_matrix(jacobian: CooJacobian | DenseJacobian) -> sp.coo_array | np.ndarray[Any, Any]:
    """Return the matrix of a Jacobian answered with ``encoding: "binary"``, as laid out."""
    if isinstance(jacobian, DenseJacobian):
        return _array(jacobian.data)
    row, col, data = _array(jacobian.row), _array(jacobian.col), _array(jacobian.data)
    return sp.coo_array((data, (row, col)), shape=tuple(jacobian.shape))


def _download(content: bytes, media_type: str, filename: str) -> Response:
    disposition = f'attachment; filename="{filename}"'
    return Response(content, media_type=media_type, headers={"content-disposition": disposition})


def _npz(jacobian: CooJacobian | DenseJacobian) -> Response:
    buffer = io.BytesIO()
    matrix = jacobian_matrix(jacobian)
    if isinstance(matrix, sp.coo_array):
        sp.save_npz(buffer, matrix)
    else:
        np.savez(
            buffer,
            jacobian=matrix,
            in_shape=np.asarray(jacobian.in_shape, dtype=np.int64),
            out_shape=np.asarray(jacobian.out_shape, dtype=np.int64),
            layout=np.asarray(jacobian.layout),
            order=np.asarray(jacobian.order),
        )
    return _download(buffer.getvalue(), NPZ, "jacobian.npz")


def _npy(array: np.ndarray[Any, Any], name: str) -> Response:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return _download(buffer.getvalue(), NPY, f"{name}.npy")


BINARY = Representation(
    OCTET_STREAM,
    "the binary body of CONVENTIONS 3.1: the JSON answer with each tensor as "
    '`{"encoding": "binary", "dtype", "shape", "binary_data_size"}` (its length in the '
    "`Inference-Header-Content-Length` header), then each tensor's little-endian C-order bytes "
    "in the order they appear in it; a COO Jacobian's `row`, `col` (int64) and `data` (float64) "
    'are three segments. Also chosen by the request\'s `encoding: "binary"`.',
    render_binary,
)


def npz(
    field: str | Callable[[Any], CooJacobian | DenseJacobian],
    applies: Callable[[Any], bool] = lambda body: True,
    when: str = "",
) -> Representation:
    """Offer the Jacobian in ``field`` of the answer (or the one ``field(answer)`` picks) as npz."""
    pick = field if callable(field) else (lambda answer: getattr(answer, field))
    return Representation(
        NPZ,
        "the Jacobian as a NumPy .npz: a COO Jacobian exactly as `scipy.sparse.save_npz` writes "
        "its `coo_array` in the requested layout (`scipy.sparse.load_npz` reads it); a dense one "
        "as `numpy.savez` with `jacobian`, `in_shape`, `out_shape`, `layout`, `order`." + when,
        lambda answer: _npz(pick(answer)),
        applies,
    )


def npy(
    field: str,
    what: str,
    applies: Callable[[Any], bool] = lambda body: True,
    pick: Callable[[Any], np.ndarray[Any, Any]] | None = None,
) -> Representation:
    """Offer one tensor of the answer, ``field`` (or what ``pick`` returns), as a ``.npy``."""
    take = pick or (lambda answer: _array(getattr(answer, field)))
    return Representation(
        NPY,
        f"{what} as a NumPy .npy (float64, its shape, `numpy.load` reads it).",
        lambda answer: _npy(take(answer), field),
        applies,
    )


def dense_jacobian(answer: Any) -> np.ndarray[Any, Any]:
    """Return the dense Jacobian of an answer (an npy ``pick``; offered for format dense)."""
    return _array(answer.jacobian.data)
