"""GET /playground: one page that drives the public API from the browser.

The page, its script and its style sheet are files of this package (``service/playground/``):
no CDN, no build step, no third-party code. The page talks to the service only through the
public ``/v1`` endpoints, with the API key a user types (kept in ``sessionStorage``).
"""

from pathlib import Path

from fastapi import APIRouter
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import FileResponse

PAGE_DIR = Path(__file__).resolve().parents[2] / "playground"
# Only these files are served; a name is never joined onto the path unchecked.
FILES = {
    "index.html": "text/html; charset=utf-8",
    "playground.js": "text/javascript; charset=utf-8",
    "playground.css": "text/css; charset=utf-8",
}

router = APIRouter(include_in_schema=False)


@router.get("/playground")
async def playground() -> FileResponse:
    """Serve the playground page."""
    return FileResponse(PAGE_DIR / "index.html", media_type=FILES["index.html"])


@router.get("/playground/{name}")
async def playground_file(name: str) -> FileResponse:
    """Serve the page's script or style sheet."""
    if name not in FILES or name == "index.html":
        raise StarletteHTTPException(404)
    return FileResponse(PAGE_DIR / name, media_type=FILES[name])
