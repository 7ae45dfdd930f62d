"""Dependencies shared by the routes: settings, and the fast JSON body parser.

Request bodies are parsed by ``Model.model_validate_json`` on the raw bytes, in the thread pool:
pydantic-core's JSON parser is several times faster than FastAPI's ``json.loads`` path
(``shared/notes/ecosystem.md`` section 1), and a 10^6-element list must not stall the event loop.
Because FastAPI then no longer sees a body parameter, each route's request schema is added to the
OpenAPI document through :func:`body_openapi` and :data:`REQUEST_MODELS`.
"""

from collections.abc import Awaitable, Callable
from typing import Annotated, Any, TypeVar

from fastapi import Depends, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ValidationError
from starlette.concurrency import run_in_threadpool

from ..codec import DecodeLimits
from ..config import Settings, get_settings
from ..engine.errors import LimitExceeded

SettingsDep = Annotated[Settings, Depends(get_settings)]
RequestModel = TypeVar("RequestModel", bound=BaseModel)
# Every model parsed by json_body; main.py puts their schemas into components.schemas.
REQUEST_MODELS: list[type[BaseModel]] = []


def decode_limits(settings: Settings) -> DecodeLimits:
    """Return the tensor bounds that the codec applies while a body is validated."""
    return DecodeLimits(max_elements=settings.max_tensor_elements, max_rank=settings.max_rank)


def json_body(model: type[RequestModel]) -> Callable[..., Awaitable[RequestModel]]:
    """Return a dependency that reads the body and validates it as ``model``.

    Validation errors become :class:`RequestValidationError` (422 problem). Limit violations found
    while validating are raised only for an otherwise valid body (413 problem), so an invalid
    request always gets its 422 with every pointer.
    """
    REQUEST_MODELS.append(model)

    async def parse(request: Request, settings: SettingsDep) -> RequestModel:
        raw = await request.body()
        deferred: list[LimitExceeded] = []
        context = {"limits": decode_limits(settings), "deferred_limits": deferred}
        try:
            parsed = await run_in_threadpool(model.model_validate_json, raw, context=context)
        except ValidationError as error:
            raise RequestValidationError(error.errors(include_url=False), body=raw) from None
        if deferred:
            raise deferred[0]
        return parsed

    parse.__name__ = f"parse_{model.__name__}"
    return parse


def body_openapi(model: type[BaseModel]) -> dict[str, Any]:
    """Return the ``openapi_extra`` that documents ``model`` as the JSON request body."""
    return {
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": {"$ref": f"#/components/schemas/{model.__name__}"}}
            },
        }
    }
