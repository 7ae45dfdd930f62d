"""POST /v1/hvp and POST /v1/hessian: exact second derivatives of a scalar function."""

from typing import Annotated

import numpy as np
from fastapi import APIRouter, Depends, Request

from ...codec import decode_tensor, encode_tensor
from ...codec.sparse import encode_jacobian
from ...config import Settings
from ...engine.errors import ShapeError
from ...engine.functions import check_intermediates
from ...engine.graph.curvature import program_hessian
from ...engine.graph.hvp import program_hvp
from ...engine.graph.requests import as_chain, check_tensors
from ...engine.hessian import hessian as compute_hessian
from ...engine.hessian import hvp as compute_hvp
from ...engine.jacobian import Jacobian
from ...engine.layout import size_of
from ..budget import check_request
from ..costs import chain_of, function_limits, hessian_cost, hvp_cost
from ..deps import ComputeDep, SettingsDep, body_openapi, json_body
from ..negotiation import answer, check_accept, offer
from ..problems import DEADLINE_RESPONSES, PROBLEM_RESPONSES
from ..representations import BINARY, npz
from ..schemas.second_order import HessianRequest, HessianResponse, HvpRequest, HvpResponse
from .functions import _program

router = APIRouter(
    prefix="/v1",
    tags=["second-order"],
    responses={**PROBLEM_RESPONSES, **DEADLINE_RESPONSES},
    dependencies=[Depends(check_accept)],
)
offer("hvp", BINARY)
offer("hessian", BINARY, npz("hessian"))

HvpBody = Annotated[HvpRequest, Depends(json_body(HvpRequest))]
HessianBody = Annotated[HessianRequest, Depends(json_body(HessianRequest))]


def _hvp(body: HvpRequest, settings: Settings) -> HvpResponse:
    check_request(hvp_cost(body, settings), settings)
    if body.program:
        program, inputs = _program(body)
        check_tensors(program, settings.max_tensor_elements)
        vectors = {name: decode_tensor(t)[np.newaxis] for name, t in body.vectors.items()}
        found = program_hvp(program, inputs, vectors)
        return HvpResponse(
            value=encode_tensor(found.value, body.encoding),
            hvp={n: encode_tensor(p[0], body.encoding) for n, p in found.products.items()},
        )
    assert body.x is not None and isinstance(body.function, list)
    x = decode_tensor(body.x)
    chain = chain_of(body.function, x, body.order)
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
    check_request(hessian_cost(body, settings), settings)
    if body.program:
        program, inputs = _program(body)
        check_tensors(program, settings.max_tensor_elements)
        names = program.check_wrt(body.wrt)
        chain = as_chain(program)
        if chain is None or names != tuple(program.inputs):
            found = program_hessian(program, inputs, names, order=body.order, fmt=body.format,
                                    limits=function_limits(settings))  # fmt: skip
            size = sum(size_of(program.inputs[n]) for n in names)
            matrix = Jacobian(found.matrix, (size,), (size,), "in_out", body.order)
            return HessianResponse(
                value=encode_tensor(found.value, body.encoding),
                hessian=encode_jacobian(matrix, body.encoding),
            )
        (name,) = names
        x = inputs[name]
    else:
        assert body.x is not None and isinstance(body.function, list)
        x = decode_tensor(body.x)
        chain = chain_of(body.function, x, body.order)
    limits = function_limits(settings)
    result = compute_hessian(chain, x, order=body.order, fmt=body.format, limits=limits)
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
    """Return f and H v, without forming H; f must have exactly one element."""
    return await answer(request, compute, _hvp, body, settings)


@router.post(
    "/hessian",
    response_model=HessianResponse,
    openapi_extra=body_openapi(HessianRequest),
    summary="Hessian of a scalar function, sparse (COO) from its structure or dense",
)
async def hessian(
    request: Request, body: HessianBody, settings: SettingsDep, compute: ComputeDep
) -> HessianResponse:
    """Return f and its Hessian; f must have exactly one element."""
    return await answer(request, compute, _hessian, body, settings)
