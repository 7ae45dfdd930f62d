"""POST /v1/cross-correlation: the notes' worked example as an endpoint, as JSON or a picture."""

from typing import Annotated

from fastapi import APIRouter, Depends, Request
from starlette.responses import Response

from ...codec import decode_tensor, encode_tensor
from ...codec.sparse import encode_jacobian
from ...config import Settings
from ...engine.correlation import CorrelationLimits, CorrelationResult, correlate
from ...engine.types import FloatArray
from ...pictures import PictureType, correlation_picture, spy_picture
from ..deps import ComputeDep, SettingsDep, body_openapi, json_body
from ..pictures import PictureNotAvailable, accepted_picture, picture_openapi, picture_response
from ..problems import PROBLEM_RESPONSES
from ..schemas.xcorr import CrossCorrelationRequest, CrossCorrelationResponse

router = APIRouter(prefix="/v1", tags=["cross-correlation"], responses=PROBLEM_RESPONSES)

CrossCorrelationBody = Annotated[
    CrossCorrelationRequest, Depends(json_body(CrossCorrelationRequest))
]


def _correlate(
    body: CrossCorrelationRequest, x: FloatArray, kernel: FloatArray, settings: Settings
) -> CorrelationResult:
    return correlate(
        x,
        kernel,
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


def _cross_correlation(
    body: CrossCorrelationRequest, settings: Settings
) -> CrossCorrelationResponse:
    result = _correlate(body, decode_tensor(body.x), decode_tensor(body.kernel), settings)
    return CrossCorrelationResponse(
        output=encode_tensor(result.output, body.encoding),
        jacobian_x=encode_jacobian(result.jacobian_x, body.encoding) if result.jacobian_x else None,
        jacobian_kernel=(
            encode_jacobian(result.jacobian_kernel, body.encoding)
            if result.jacobian_kernel
            else None
        ),
    )


def _cross_correlation_picture(
    body: CrossCorrelationRequest, settings: Settings, media_type: PictureType
) -> bytes:
    x, kernel = decode_tensor(body.x), decode_tensor(body.kernel)
    if body.jacobian == "none":
        output = _correlate(body, x, kernel, settings).output
        return correlation_picture(x, kernel, output, media_type)
    # A spy plot is drawn from the COO entries, whatever format the JSON answer would use.
    result = _correlate(body.model_copy(update={"jacobian": "coo"}), x, kernel, settings)
    (wrt,) = body.wrt
    jacobian = result.jacobian_x if wrt == "x" else result.jacobian_kernel
    assert jacobian is not None  # correlate returns every Jacobian in wrt
    return spy_picture(f"∂output/∂{wrt}", jacobian, media_type)


@router.post(
    "/cross-correlation",
    response_model=CrossCorrelationResponse,
    openapi_extra=body_openapi(CrossCorrelationRequest),
    summary="2-D multi-channel cross-correlation and its Jacobians",
    responses=picture_openapi(
        "The correlation and the Jacobians asked for; with `Accept: image/png` (or "
        "`image/svg+xml`) a picture instead: the spy plot of the one Jacobian asked for, or, "
        'with `jacobian: "none"`, heatmaps of the input channels, the kernel and the output.'
    ),
)
async def cross_correlation(
    request: Request, body: CrossCorrelationBody, settings: SettingsDep, compute: ComputeDep
) -> CrossCorrelationResponse | Response:
    """Cross-correlate x with the kernel; optionally return d out/d x and d out/d kernel."""
    picture = accepted_picture(request)
    if picture is None:
        return await compute(_cross_correlation, body, settings)
    if body.jacobian != "none" and len(body.wrt) != 1:
        raise PictureNotAvailable(
            f"a picture shows one Jacobian, and wrt asks for {len(body.wrt)}: send wrt ['x'] "
            "or ['kernel'], or jacobian 'none' for the heatmaps of input, kernel and output"
        )
    content = await compute(_cross_correlation_picture, body, settings, picture)
    return picture_response(content, picture)
