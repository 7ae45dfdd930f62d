"""POST /v1/cross-correlation: the notes' worked example as an endpoint, as JSON or a picture."""

from typing import Annotated, cast

from fastapi import APIRouter, Depends, Request

from ...codec import decode_tensor, encode_tensor
from ...codec.sparse import CooJacobian, DenseJacobian, encode_jacobian
from ...config import Settings
from ...engine import estimates, xcorr
from ...engine.correlation import CorrelationLimits, CorrelationResult, check_sizes, correlate
from ...engine.layout import size_of
from ...engine.types import FloatArray
from ...pictures import PictureType, correlation_picture, spy_picture
from ..budget import RequestCost, check_request, coo_payload, float_payload
from ..deps import ComputeDep, SettingsDep, body_openapi, json_body
from ..negotiation import answer, check_accept, offer
from ..pictures import accepted_picture, picture_response, pictures
from ..problems import DEADLINE_RESPONSES, PROBLEM_RESPONSES, NotAcceptable
from ..representations import BINARY, npy, npz
from ..schemas.xcorr import CrossCorrelationRequest, CrossCorrelationResponse

router = APIRouter(
    prefix="/v1",
    tags=["cross-correlation"],
    responses={**PROBLEM_RESPONSES, **DEADLINE_RESPONSES},
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
    *pictures(
        "the spy plot of the one Jacobian asked for, or, with jacobian 'none', heatmaps of the "
        "input channels, the kernel and the output"
    ),
)

CrossCorrelationBody = Annotated[
    CrossCorrelationRequest, Depends(json_body(CrossCorrelationRequest))
]


def _limits(settings: Settings) -> CorrelationLimits:
    return CorrelationLimits(
        max_output_elements=settings.max_tensor_elements,
        max_nnz=settings.max_coo_nnz,
        max_dense_elements=settings.max_dense_jacobian_elements,
    )


def cross_correlation_cost(body: CrossCorrelationRequest, settings: Settings) -> RequestCost:
    """Estimate ``/v1/cross-correlation`` from shapes alone."""
    x_shape, k_shape = decode_tensor(body.x).shape, decode_tensor(body.kernel).shape
    geometry = body.geometry()
    out_shape = check_sizes(
        x_shape, k_shape, geometry, jacobian=body.jacobian, wrt=body.wrt, method=body.method,
        limits=_limits(settings),
    )  # fmt: skip
    out_size = size_of(out_shape)
    cost = estimates.correlation_cost(
        x_shape, k_shape, geometry, jacobian=body.jacobian, wrt=body.wrt, method=body.method
    )
    payload = float_payload(out_size, body.encoding)
    nnz = xcorr.nnz_x(x_shape, k_shape, geometry)
    facts: dict[str, object] = {
        "output_shape": list(out_shape),
        "padding": [list(pair) for pair in xcorr.padding_pairs(x_shape, k_shape, geometry)],
        "forward_method": "jacobian" if body.method == "jacobian"
        else xcorr.choose_method(x_shape, k_shape, geometry),
        "nnz_bound": nnz if body.jacobian != "none" else 0,
    }  # fmt: skip
    if body.jacobian != "none":
        for what in body.wrt:
            in_size = size_of(x_shape if what == "x" else k_shape)
            payload = payload + (
                coo_payload(nnz, in_size, out_size, body.encoding)
                if body.jacobian == "coo"
                else float_payload(in_size * out_size, body.encoding)
            )
    return RequestCost(cost, payload, facts)


def _correlate(
    body: CrossCorrelationRequest, x: FloatArray, kernel: FloatArray, settings: Settings
) -> CorrelationResult:
    check_request(cross_correlation_cost(body, settings), settings)
    return correlate(
        x,
        kernel,
        body.geometry(),
        jacobian=body.jacobian,
        wrt=body.wrt,
        order=body.order,
        layout=body.layout,
        method=body.method,
        limits=_limits(settings),
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
    # A picture is sent, not a list: the answer's arrays are costed as their raw bytes.
    body = body.model_copy(update={"encoding": "binary"})
    if body.jacobian == "none":
        output = _correlate(body, x, kernel, settings).output
        return correlation_picture(x, kernel, output, media_type)
    # A spy plot is drawn from the COO entries, whatever format the JSON answer would use.
    result = _correlate(body.model_copy(update={"jacobian": "coo"}), x, kernel, settings)
    (wrt,) = body.wrt
    jacobian = result.jacobian_x if wrt == "x" else result.jacobian_kernel
    assert jacobian is not None  # correlate returns every Jacobian in wrt
    return spy_picture("output", wrt, jacobian, media_type)


@router.post(
    "/cross-correlation",
    openapi_extra=body_openapi(CrossCorrelationRequest),
    summary="2-D multi-channel cross-correlation and its Jacobians",
)
async def cross_correlation(
    request: Request, body: CrossCorrelationBody, settings: SettingsDep, compute: ComputeDep
) -> CrossCorrelationResponse:
    """Cross-correlate x with the kernel; optionally return d out/d x and d out/d kernel."""
    picture = accepted_picture(request, "cross_correlation", body)
    if picture is None:
        return await answer(request, compute, _cross_correlation, body, settings)
    if body.jacobian != "none" and len(body.wrt) != 1:
        raise NotAcceptable(
            f"a picture shows one Jacobian, and wrt asks for {len(body.wrt)}: send wrt ['x'] "
            "or ['kernel'], or jacobian 'none' for the heatmaps of input, kernel and output"
        )
    content = await compute(_cross_correlation_picture, body, settings, picture)
    # FastAPI sends a Response as it is, whatever the route's declared model.
    return cast(CrossCorrelationResponse, picture_response(content, picture))
