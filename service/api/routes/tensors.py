"""vec, ten, flat, unflat: the notes' operators as endpoints."""

from typing import Annotated

import numpy as np
from fastapi import APIRouter, Depends, Request

from ...codec import decode_tensor, encode_tensor
from ...config import Settings
from ...engine import layout
from ...engine.cost import Cost
from ...engine.errors import LimitExceeded, ShapeError
from ...engine.layout import size_of
from ..budget import BodyCounts, RequestCost, check_request, float_payload, index_payload
from ..deps import BodyItems, ComputeDep, body_openapi, deferred_body
from ..negotiation import DeferredBody, answer, check_accept, offer
from ..problems import DEADLINE_RESPONSES, PROBLEM_RESPONSES
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
    responses={**PROBLEM_RESPONSES, **DEADLINE_RESPONSES},
    dependencies=[Depends(check_accept)],
)
offer("vec", BINARY, npy("vector", "vec(x)"))
offer("ten", BINARY, npy("tensor", "ten(vector)"))


def _flat_indices(counts: BodyCounts) -> int:
    # {"index": [[...], ..., [...]], "dims": [...]}: one "[" per index, two more around them
    return counts.brackets - 2


def _unflat_indices(counts: BodyCounts) -> int:
    # {"flat": [...], "dims": [...]}: commas = (indices - 1) + (dims - 1) + fields - 1, and
    # dims has at most 32 entries
    return counts.commas - 33


_INDICES = "indices in one request"
# The operators do nothing with a body but compute with it: a large one is validated in the same
# worker-thread call as the computation (deferred_body).
VecBody = Annotated[VecRequest | DeferredBody[VecRequest], Depends(deferred_body(VecRequest))]
TenBody = Annotated[TenRequest | DeferredBody[TenRequest], Depends(deferred_body(TenRequest))]
FlatBody = Annotated[
    FlatRequest | DeferredBody[FlatRequest],
    Depends(deferred_body(FlatRequest, BodyItems(_flat_indices, _INDICES, "max_index_count"))),
]
UnflatBody = Annotated[
    UnflatRequest | DeferredBody[UnflatRequest],
    Depends(deferred_body(UnflatRequest, BodyItems(_unflat_indices, _INDICES, "max_index_count"))),
]


def _copy_cost(size: int, body: VecRequest | TenRequest) -> RequestCost:
    # vec and ten copy at most once; the response is what costs
    return RequestCost(Cost(0, 16 * size, 16 * size), float_payload(size, body.encoding))


def _vec(body: VecRequest, settings: Settings) -> VecResponse:
    x = decode_tensor(body.x)
    check_request(_copy_cost(x.size, body), settings)
    vector = layout.vec(x, body.order)
    return VecResponse(
        vector=encode_tensor(vector, body.encoding), in_shape=list(x.shape), order=body.order
    )


def _ten(body: TenRequest, settings: Settings) -> TenResponse:
    vector = decode_tensor(body.vector)
    check_request(_copy_cost(vector.size, body), settings)
    if vector.ndim != 1:
        raise ShapeError(f"ten expects a rank-1 vector, got a tensor of shape {list(vector.shape)}")
    tensor = layout.ten(vector, body.shape, body.order)
    return TenResponse(tensor=encode_tensor(tensor, body.encoding), order=body.order)


def _check_count(count: int, limit: int) -> None:
    if count > limit:
        raise LimitExceeded(_INDICES, count, limit, setting="max_index_count")


def _flat(body: FlatRequest, settings: Settings) -> FlatResponse:
    many = bool(body.index) and isinstance(body.index[0], list)
    count = len(body.index) if many else 1
    _check_count(count, settings.max_index_count)
    largest = size_of(body.dims)
    check_request(RequestCost(Cost(), index_payload(count, largest, "list")), settings)
    lengths = {len(i) if isinstance(i, list) else -1 for i in body.index} if many else set()
    if len(lengths) > 1:
        raise ShapeError(
            f"every index needs {len(body.dims)} components for dims {body.dims}, "
            f"got lengths {sorted(lengths)}"
        )
    result = layout.flat(np.asarray(body.index, dtype=np.int64), body.dims, body.order)
    return FlatResponse(flat=result.tolist(), dims=body.dims, order=body.order)


def _unflat(body: UnflatRequest, settings: Settings) -> UnflatResponse:
    count = len(body.flat) if isinstance(body.flat, list) else 1
    _check_count(count, settings.max_index_count)
    largest = max(body.dims, default=1)
    check_request(
        RequestCost(Cost(), index_payload(count * len(body.dims), largest, "list")), settings
    )
    result = layout.unflat(np.asarray(body.flat, dtype=np.int64), body.dims, body.order)
    return UnflatResponse(index=result.tolist(), dims=body.dims, order=body.order)


@router.post("/vec", openapi_extra=body_openapi(VecRequest), summary="vec: tensor to vector")
async def vec(request: Request, body: VecBody, compute: ComputeDep) -> VecResponse:
    """Flatten a tensor into a vector: v[flat(i)] = x[i] in the chosen order."""
    return await answer(request, compute.light, _vec, body, compute.settings)


@router.post("/ten", openapi_extra=body_openapi(TenRequest), summary="ten: vector to tensor")
async def ten(request: Request, body: TenBody, compute: ComputeDep) -> TenResponse:
    """Reshape a vector into a tensor of the given shape, the inverse of vec."""
    return await answer(request, compute.light, _ten, body, compute.settings)


@router.post("/flat", openapi_extra=body_openapi(FlatRequest), summary="flat: multi-index to flat")
async def flat(request: Request, body: FlatBody, compute: ComputeDep) -> FlatResponse:
    """Map multi-indices of a dims tensor to flat indices (F: sum_j i_j prod_{k<j} d_k)."""
    return await answer(request, compute.light, _flat, body, compute.settings)


@router.post(
    "/unflat", openapi_extra=body_openapi(UnflatRequest), summary="unflat: flat to multi-index"
)
async def unflat(request: Request, body: UnflatBody, compute: ComputeDep) -> UnflatResponse:
    """Map flat indices of a dims tensor back to multi-indices, the inverse of flat."""
    return await answer(request, compute.light, _unflat, body, compute.settings)
