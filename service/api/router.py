"""All routers of the service, in one place."""

from fastapi import APIRouter

from .routes import (
    descent,
    estimate,
    functions,
    health,
    minimize,
    playground,
    problem_pages,
    second_order,
    tensors,
    xcorr,
)

api_router = APIRouter()
api_router.include_router(health.router)
api_router.include_router(tensors.router)
api_router.include_router(xcorr.router)
api_router.include_router(functions.router)
api_router.include_router(descent.router)
api_router.include_router(second_order.router)
api_router.include_router(minimize.router)
api_router.include_router(estimate.router)
api_router.include_router(problem_pages.router)
api_router.include_router(playground.router)
