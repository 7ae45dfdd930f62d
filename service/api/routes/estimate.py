"""POST /v1/estimate and GET /v1/metadata: what a request would cost, and the limits in force.

``/v1/estimate`` takes ``{"path": "/v1/jacobian", "body": {...}}``, validates the body exactly as
that route does, and runs the route's own estimate (the function the route calls before it
computes, so the two cannot disagree) without computing anything. A request the route would
refuse is answered 200 with ``refused: true`` and the problem it would get.
"""

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from ... import __version__
from ...blas import loaded_kernels
from ...config import Settings
from ...engine.errors import EngineError
from ...engine.graph.nary import nary_classes
from ...engine.op import op_names
from .. import costs
from ..budget import RequestCost, check_request
from ..deps import InvalidDocument, SettingsDep, body_openapi, json_body, validate_body
from ..negotiation import check_accept
from ..problems import PROBLEM_RESPONSES, Problem, RenderedValidationError, expected_problem
from ..schemas.common import ResponseModel, StrictModel
from ..schemas.descent import GradientDescentRequest
from ..schemas.functions import (
    ChainRuleRequest,
    EvaluateRequest,
    JacobianRequest,
    JvpRequest,
    VjpRequest,
)
from ..schemas.minimize import MinimizeRequest
from ..schemas.second_order import HessianRequest, HvpRequest
from ..schemas.xcorr import CrossCorrelationRequest
from . import xcorr

router = APIRouter(
    prefix="/v1",
    tags=["operations"],
    responses=PROBLEM_RESPONSES,
    dependencies=[Depends(check_accept)],
)


@dataclass(frozen=True)
class Estimator:
    """A computing route: its request model and the estimate it makes before computing."""

    model: type[BaseModel]
    estimate: Callable[[Any, Settings], RequestCost]


ESTIMATORS: dict[str, Estimator] = {
    "/v1/evaluate": Estimator(EvaluateRequest, costs.evaluate_cost),
    "/v1/jacobian": Estimator(JacobianRequest, costs.jacobian_cost),
    "/v1/jvp": Estimator(JvpRequest, costs.product_cost),
    "/v1/vjp": Estimator(VjpRequest, costs.product_cost),
    "/v1/chain-rule": Estimator(ChainRuleRequest, costs.chain_rule_cost),
    "/v1/cross-correlation": Estimator(CrossCorrelationRequest, xcorr.cross_correlation_cost),
    "/v1/gradient-descent": Estimator(GradientDescentRequest, costs.descent_cost),
    "/v1/minimize": Estimator(MinimizeRequest, costs.minimize_cost),
    "/v1/hvp": Estimator(HvpRequest, costs.hvp_cost),
    "/v1/hessian": Estimator(HessianRequest, costs.hessian_cost),
}
EstimablePath = Literal[
    "/v1/evaluate",
    "/v1/jacobian",
    "/v1/jvp",
    "/v1/vjp",
    "/v1/chain-rule",
    "/v1/cross-correlation",
    "/v1/gradient-descent",
    "/v1/minimize",
    "/v1/hvp",
    "/v1/hessian",
]


class EstimateRequest(StrictModel):
    """A request to cost: the path it would be sent to and its JSON body."""

    model_config = StrictModel.model_config | {
        "json_schema_extra": {
            "examples": [
                {
                    "path": "/v1/cross-correlation",
                    "body": {
                        "x": {"encoding": "base64", "shape": [1, 2, 2], "data": "A" * 43 + "="},
                        "kernel": {"data": [[[1.0]]]},
                    },
                }
            ]
        }
    }

    path: EstimablePath
    body: dict[str, Any] = Field(description="The request body, exactly as it would be sent.")


class EstimateResponse(ResponseModel):
    """What the request would cost, from shapes alone, and whether it would be refused."""

    path: str
    refused: bool = Field(description="Whether the route would refuse the request (413/422).")
    problem: Problem | None = Field(None, description="The problem it would answer, if refused.")
    work: int | None = Field(None, description="Estimated floating-point operations + bytes.")
    flops: int | None = None
    bytes_touched: int | None = None
    peak_bytes: int | None = Field(
        None, description="Estimated peak transient memory, response objects included."
    )
    response_bytes: int | None = Field(None, description="Estimated size of the JSON response.")
    facts: dict[str, Any] = Field(
        default_factory=dict,
        description="Shapes, non-zero bounds, dense bytes, and the strategy and format 'auto' "
        "picks, as far as the route knows them before computing.",
    )
    limits: dict[str, int] = Field(description="The limits the estimate was compared with.")


def _limits(settings: Settings) -> dict[str, int]:
    return {
        "max_work": settings.max_work,
        "max_request_memory_bytes": settings.max_request_memory_bytes,
        "max_response_bytes": settings.max_response_bytes,
    }


def _estimate(request: EstimateRequest, settings: Settings) -> EstimateResponse:
    estimator = ESTIMATORS[request.path]
    raw = json.dumps(request.body).encode()
    limits = _limits(settings)
    try:
        # A limit met while parsing (a tensor's declared size) is a refusal like the estimate's.
        body, _ = validate_body(estimator.model, raw, settings)  # JSON: no segments
        estimate = estimator.estimate(body, settings)
        check_request(estimate, settings)
    except InvalidDocument as invalid:
        error = invalid.render()
        # The pointers are into the inner body, which sits under /body here.
        rendered = [e.model_copy(update={"pointer": "/body" + e.pointer}) for e in error.rendered]
        raise RenderedValidationError(rendered, error.count) from None
    except EngineError as error:
        refused = expected_problem(error, request.path)
        return EstimateResponse(path=request.path, refused=True, problem=refused, limits=limits)
    total = estimate.total
    return EstimateResponse(
        path=request.path,
        refused=False,
        work=total.work,
        flops=total.flops,
        bytes_touched=total.bytes_touched,
        peak_bytes=total.peak_bytes,
        response_bytes=estimate.response.bytes,
        facts=estimate.facts,
        limits=limits,
    )


EstimateBody = Annotated[EstimateRequest, Depends(json_body(EstimateRequest))]


@router.post(
    "/estimate",
    openapi_extra=body_openapi(EstimateRequest),
    summary="Estimate what a request would cost, without computing it",
)
async def estimate(body: EstimateBody, settings: SettingsDep) -> EstimateResponse:
    """Validate a body as its route does and answer its cost and whether it would be refused."""
    return await run_in_threadpool(_estimate, body, settings)


class BlasLibrary(ResponseModel):
    """One OpenBLAS library loaded by the server (NumPy's, SciPy's) and the kernels it runs."""

    library: str = Field(description="File name of the shared library.")
    version: str | None
    architecture: str | None = Field(
        description="The kernel family in use: `Haswell` on every x86-64 host with AVX2 and FMA "
        "unless the operator set `OPENBLAS_CORETYPE` (README, Settings)."
    )
    threads: int = Field(
        description="Threads OpenBLAS splits a call among: 1 unless the operator set "
        "`OPENBLAS_NUM_THREADS` (README, Settings)."
    )


class Metadata(ResponseModel):
    """The service's version, the limits in force and what it reads and writes."""

    version: str
    limits: dict[str, float | int] = Field(description="Every SERVICE_* limit, by setting name.")
    encodings: list[str] = Field(description="Tensor encodings of requests and responses.")
    content_types: list[str] = Field(description="Request body types read.")
    content_encodings: list[str] = Field(description="Request Content-Encoding values read.")
    extensions: list[str]
    operations: list[str] = Field(description="The op registry's names (GET /v1/ops details).")
    program_operations: list[str] = Field(
        description="The n-ary operations of program forms (expressions and graphs)."
    )
    estimable_paths: list[str] = Field(description="Paths POST /v1/estimate accepts.")
    blas: list[BlasLibrary] = Field(
        description="The BLAS libraries answering: one kernel family on every host, so that "
        "answers do not depend on the CPU."
    )


LIMIT_PREFIXES = ("max_", "min_", "body_", "computation_", "descent_")


@router.get("/metadata", summary="Version, limits in force, encodings and operations")
async def metadata(settings: SettingsDep) -> Metadata:
    """Describe this server: version, every limit, encodings, extensions and op names."""
    limits = {
        name: value
        for name, value in settings.model_dump().items()
        if name.startswith(LIMIT_PREFIXES) and isinstance(value, int | float)
    }
    return Metadata(
        version=__version__,
        limits=dict(sorted(limits.items())),
        encodings=["list", "base64", "binary"],
        content_types=["application/json", "application/octet-stream"],
        content_encodings=["identity", "gzip"],
        extensions=["binary tensor extension (CONVENTIONS 3.1, Inference-Header-Content-Length)"],
        operations=list(op_names()),
        program_operations=list(nary_classes()),
        estimable_paths=list(ESTIMATORS),
        blas=[BlasLibrary(**library) for library in loaded_kernels()],
    )
