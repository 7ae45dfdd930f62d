"""vec, ten, flat, unflat: the notes' operators as endpoints."""

from typing import Annotated

import numpy as np
from fastapi import APIRouter, Depends, Request

from ...codec import decode_tensor, encode_tensor
from ...engine import layout
from ...engine.errors import LimitExceeded, ShapeError
from ..deps import ComputeDep, body_openapi, json_body
from ..negotiation import answer, check_accept, offer
from ..problems import PROBLEM_RESPONSES
from ..representations import BINARY, npy
from ..schemas.tensors import (
    FlatRequest,
    FlatResponse,
    TenRequest,
    TenResponse,
    UnflatRequest,
    UnflatResponse,
    VecRequest,
    VecResponse,
)

router = APIRouter(
    prefix="/v1",
    tags=["operators"],
    responses=PROBLEM_RESPONSES,
    dependencies=[Depends(check_accept)],
)
offer("vec", BINARY, npy("vector", "vec(x)"))
offer("ten", BINARY, npy("tensor", "ten(vector)"))

VecBody = Annotated[VecRequest, Depends(json_body(VecRequest))]
TenBody = Annotated[TenRequest, Depends(json_body(TenRequest))]
FlatBody = Annotated[FlatRequest, Depends(json_body(FlatRequest))]
UnflatBody = Annotated[UnflatRequest, Depends(json_body(UnflatRequest))]


def _vec(body: VecRequest) -> VecResponse:
    x = decode_tensor(body.x)
    vector = layout.vec(x, body.order)
    return VecResponse(
        vector=encode_tensor(vector, body.encoding), in_shape=list(x.shape), order=body.order
    )


def _ten(body: TenRequest) -> TenResponse:
    vector = decode_tensor(body.vector)
    if vector.ndim != 1:
        raise ShapeError(f"ten expects a rank-1 vector, got a tensor of shape {list(vector.shape)}")
    tensor = layout.ten(vector, body.shape, body.order)
    return TenResponse(tensor=encode_tensor(tensor, body.encoding), order=body.order)


def _check_count(count: int, limit: int) -> None:
    if count > limit:
        raise LimitExceeded("indices in one request", count, limit)


def _flat(body: FlatRequest, max_index_count: int) -> FlatResponse:
    many = bool(body.index) and isinstance(body.index[0], list)
    _check_count(len(body.index) if many else 1, max_index_count)
    lengths = {len(i) if isinstance(i, list) else -1 for i in body.index} if many else set()
    if len(lengths) > 1:
        raise ShapeError(
            f"every index needs {len(body.dims)} components for dims {body.dims}, "
            f"got lengths {sorted(lengths)}"
        )
    result = layout.flat(np.asarray(body.index, dtype=np.int64), body.dims, body.order)
    return FlatResponse(flat=result.tolist(), dims=body.dims, order=body.order)


def _unflat(body: UnflatRequest, max_index_count: int) -> UnflatResponse:
    _check_count(len(body.flat) if isinstance(body.flat, list) else 1, max_index_count)
    result = layout.unflat(np.asarray(body.flat, dtype=np.int64), body.dims, body.order)
    return UnflatResponse(index=result.tolist(), dims=body.dims, order=body.order)


@router.post("/vec", openapi_extra=body_openapi(VecRequest), summary="vec: tensor to vector")
async def vec(request: Request, body: VecBody, compute: ComputeDep) -> VecResponse:
    """Flatten a tensor into a vector: v[flat(i)] = x[i] in the chosen order."""
    return await answer(request, compute.light, _vec, body)


@router.post("/ten", openapi_extra=body_openapi(TenRequest), summary="ten: vector to tensor")
async def ten(request: Request, body: TenBody, compute: ComputeDep) -> TenResponse:
    """Reshape a vector into a tensor of the given shape, the inverse of vec."""
    return await answer(request, compute.light, _ten, body)


@router.post("/flat", openapi_extra=body_openapi(FlatRequest), summary="flat: multi-index to flat")
async def flat(body: FlatBody, compute: ComputeDep) -> FlatResponse:
    """Map multi-indices of a dims tensor to flat indices (F: sum_j i_j prod_{k<j} d_k)."""
    return await compute.light(_flat, body, compute.settings.max_index_count)


@router.post(
    "/unflat", openapi_extra=body_openapi(UnflatRequest), summary="unflat: flat to multi-index"
)
async def unflat(body: UnflatBody, compute: ComputeDep) -> UnflatResponse:
    """Map flat indices of a dims tensor back to multi-indices, the inverse of flat."""
    return await compute.light(_unflat, body, compute.settings.max_index_count)
