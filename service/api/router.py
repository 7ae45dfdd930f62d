"""All routers of the service, in one place (in the order of the OpenAPI document)."""

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

# Included into the app one by one, not through one umbrella router: FastAPI matches an included
# router by asking each of its routers in turn, twice per level (once to find the route, once to
# hand it the request), so a level less is a few microseconds less on every request.
ROUTERS: tuple[APIRouter, ...] = (
    health.router,
    tensors.router,
    xcorr.router,
    functions.router,
    descent.router,
    second_order.router,
    minimize.router,
    estimate.router,
    problem_pages.router,
    playground.router,
)
