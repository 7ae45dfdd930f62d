"""All routers of the service, in one place.

``create_app`` puts their routes straight into the app's own route list instead of including the
routers: FastAPI matches an included router by matching into it and then again while handling
it, a second pass over the routes on every request (with the two levels of includes this had,
a fifth of a small request's CPU time). Each route already carries its router's prefix, tags and
responses, so nothing else changes.
"""

from starlette.routing import BaseRoute

from .routes import descent, functions, health, minimize, second_order, tensors, xcorr

ROUTERS = (
    health.router,
    tensors.router,
    xcorr.router,
    functions.router,
    descent.router,
    second_order.router,
    minimize.router,
)
API_ROUTES: tuple[BaseRoute, ...] = tuple(route for router in ROUTERS for route in router.routes)
