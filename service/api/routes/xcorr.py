"""POST /v1/cross-correlation: the notes' worked example as an endpoint."""

from typing import Annotated

from fastapi import APIRouter, Depends, Request

from ...codec import decode_tensor, encode_tensor
from ...codec.sparse import CooJacobian, DenseJacobian, encode_jacobian
from ...config import Settings
from ...engine.correlation import CorrelationLimits, correlate
from ..deps import ComputeDep, SettingsDep, body_openapi, json_body
from ..negotiation import answer, check_accept, offer
from ..problems import PROBLEM_RESPONSES
from ..representations import BINARY, npy, npz
from ..schemas.xcorr import CrossCorrelationRequest, CrossCorrelationResponse

router = APIRouter(
    prefix="/v1",
    tags=["cross-correlation"],
    responses=PROBLEM_RESPONSES,
    dependencies=[Depends(check_accept)],
)


def _one_jacobian(body: CrossCorrelationRequest) -> bool:
    return body.jacobian != "none" and len(body.wrt) == 1


def _the_jacobian(answer: CrossCorrelationResponse) -> CooJacobian | DenseJacobian:
    jacobian = answer.jacobian_x or answer.jacobian_kernel
    assert jacobian is not None  # _one_jacobian admitted the request
    return jacobian


offer(
    "cross_correlation",
    BINARY,
    npz(_the_jacobian, _one_jacobian, " Offered when exactly one Jacobian is requested."),
    npy("output", "the correlation output"),
)

CrossCorrelationBody = Annotated[
    CrossCorrelationRequest, Depends(json_body(CrossCorrelationRequest))
]


def _cross_correlation(
    body: CrossCorrelationRequest, settings: Settings
) -> CrossCorrelationResponse:
    result = correlate(
        decode_tensor(body.x),
        decode_tensor(body.kernel),
        body.geometry(),
        jacobian=body.jacobian,
        wrt=body.wrt,
        order=body.order,
        layout=body.layout,
        method=body.method,
        limits=CorrelationLimits(
            max_output_elements=settings.max_tensor_elements,
            max_nnz=settings.max_coo_nnz,
            max_dense_elements=settings.max_dense_jacobian_elements,
        ),
    )
    return CrossCorrelationResponse(
        output=encode_tensor(result.output, body.encoding),
        jacobian_x=encode_jacobian(result.jacobian_x, body.encoding) if result.jacobian_x else None,
        jacobian_kernel=(
            encode_jacobian(result.jacobian_kernel, body.encoding)
            if result.jacobian_kernel
            else None
        ),
    )


@router.post(
    "/cross-correlation",
    openapi_extra=body_openapi(CrossCorrelationRequest),
    summary="2-D multi-channel cross-correlation and its Jacobians",
)
async def cross_correlation(
    request: Request, body: CrossCorrelationBody, settings: SettingsDep, compute: ComputeDep
) -> CrossCorrelationResponse:
    """Cross-correlate x with the kernel; optionally return d out/d x and d out/d kernel."""
    return await answer(request, compute, _cross_correlation, body, settings)
