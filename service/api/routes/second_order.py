"""POST /v1/hvp and POST /v1/hessian: exact second derivatives of a scalar function."""

from typing import Annotated

import numpy as np
from fastapi import APIRouter, Depends, Request
from starlette.responses import Response

from ...codec import decode_tensor, encode_tensor
from ...codec.sparse import encode_jacobian
from ...config import Settings
from ...engine.chain import Chain
from ...engine.errors import ShapeError
from ...engine.functions import check_intermediates
from ...engine.hessian import hessian as compute_hessian
from ...engine.hessian import hvp as compute_hvp
from ...engine.jacobian import Jacobian
from ..deps import ComputeDep, SettingsDep, body_openapi, json_body
from ..negotiation import answer, check_accept, offer
from ..problems import PROBLEM_RESPONSES
from ..representations import BINARY, npz
from ..schemas.second_order import HessianRequest, HessianResponse, HvpRequest, HvpResponse
from .functions import _chain, _limits

router = APIRouter(
    prefix="/v1",
    tags=["second-order"],
    responses=PROBLEM_RESPONSES,
    dependencies=[Depends(check_accept)],
)
offer("hvp", BINARY)
offer("hessian", BINARY, npz("hessian"))

HvpBody = Annotated[HvpRequest, Depends(json_body(HvpRequest))]
HessianBody = Annotated[HessianRequest, Depends(json_body(HessianRequest))]


def _hvp(body: HvpRequest, settings: Settings) -> HvpResponse:
    x = decode_tensor(body.x)
    chain: Chain = _chain(body.function, x, body.order)
    if set(body.vectors) != {"x"}:
        raise ShapeError(
            "vectors must hold exactly the input 'x' in the op-list form, got "
            f"{sorted(body.vectors)}"
        )
    vector = decode_tensor(body.vectors["x"])
    if vector.shape != x.shape:
        raise ShapeError(f"vectors.x has shape {list(vector.shape)}, x has {list(x.shape)}")
    check_intermediates(chain, settings.max_tensor_elements)
    result = compute_hvp(chain, x, vector[np.newaxis])
    return HvpResponse(
        value=encode_tensor(result.value, body.encoding),
        hvp={"x": encode_tensor(result.products[0], body.encoding)},
    )


def _hessian(body: HessianRequest, settings: Settings) -> HessianResponse:
    x = decode_tensor(body.x)
    chain = _chain(body.function, x, body.order)
    result = compute_hessian(chain, x, order=body.order, fmt=body.format, limits=_limits(settings))
    matrix = Jacobian(result.matrix, x.shape, x.shape, "in_out", body.order)
    return HessianResponse(
        value=encode_tensor(result.value, body.encoding),
        hessian=encode_jacobian(matrix, body.encoding),
    )


@router.post(
    "/hvp",
    response_model=HvpResponse,
    openapi_extra=body_openapi(HvpRequest),
    summary="Exact Hessian-vector product of a scalar function (forward over reverse)",
)
async def hvp(
    request: Request, body: HvpBody, settings: SettingsDep, compute: ComputeDep
) -> HvpResponse:
    """Return f(x) and H v, without forming H; f must have exactly one element."""
    return await answer(request, compute, _hvp, body, settings)


@router.post(
    "/hessian",
    response_model=HessianResponse,
    openapi_extra=body_openapi(HessianRequest),
    summary="Hessian of a scalar function, sparse (COO) from its structure or dense",
)
async def hessian(body: HessianBody, settings: SettingsDep, compute: ComputeDep) -> Response:
    """Return f(x) and its Hessian; f must have exactly one element."""
    return await compute(_hessian, body, settings)
