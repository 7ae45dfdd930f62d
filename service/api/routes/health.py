"""Liveness and readiness probes."""

from typing import Literal

import numpy as np
from fastapi import APIRouter

from ..schemas.common import ResponseModel

router = APIRouter(tags=["health"])


class Health(ResponseModel):
    """Probe answer."""

    status: Literal["ok", "ready"]


# HEAD is answered too (some balancers probe with it); kept out of the schema so that each
# operation id names one operation.
@router.head("/healthz", include_in_schema=False)
@router.get("/healthz", summary="Liveness probe")
async def healthz() -> Health:
    """Answer while the process serves requests."""
    return Health(status="ok")


@router.head("/readyz", include_in_schema=False)
@router.get("/readyz", summary="Readiness probe")
async def readyz() -> Health:
    """Answer once the numeric stack computes correctly."""
    # A 2x2 product through BLAS: an import or BLAS failure shows up here, not on a user request.
    identity = np.eye(2) @ np.eye(2)
    if not np.array_equal(identity, np.eye(2)):
        raise RuntimeError("BLAS self-check failed")
    return Health(status="ready")
