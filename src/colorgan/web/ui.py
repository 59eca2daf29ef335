"""The page: ``GET /`` and its hand-written assets under ``/static/`` (no build step, no CDN).

Assets are read from the package once and served from memory. A client's path only selects
an entry of a fixed table, so no request can name a file on the server.
"""

from __future__ import annotations

from importlib import resources

from fastapi import APIRouter, HTTPException
from fastapi.responses import HTMLResponse, Response

__all__ = ["router", "STATIC_FILES"]

router = APIRouter(include_in_schema=False)

#: Every file the page may load, with its media type.
STATIC_FILES: dict[str, str] = {
    "app.js": "text/javascript; charset=utf-8",
    "zip.js": "text/javascript; charset=utf-8",
    "app.css": "text/css; charset=utf-8",
    "favicon.svg": "image/svg+xml",
}

_cache: dict[str, bytes] = {}


def _asset(name: str) -> bytes:
    if name not in _cache:
        _cache[name] = resources.files("colorgan.web").joinpath("static", name).read_bytes()
    return _cache[name]


# "no-cache" = revalidate each time: a new version of the package is picked up on reload.
_HEADERS = {"Cache-Control": "no-cache"}


@router.get("/", response_class=HTMLResponse)
async def index() -> HTMLResponse:
    """The upload page."""
    return HTMLResponse(_asset("index.html"), headers=_HEADERS)


@router.get("/favicon.ico")
async def favicon() -> Response:
    """Browsers ask for this path on their own; answer with the SVG icon."""
    return Response(_asset("favicon.svg"), media_type=STATIC_FILES["favicon.svg"], headers=_HEADERS)


@router.get("/static/{name}")
async def static(name: str) -> Response:
    """One of :data:`STATIC_FILES`."""
    media_type = STATIC_FILES.get(name)
    if media_type is None:
        raise HTTPException(404, "not found")
    return Response(_asset(name), media_type=media_type, headers=_HEADERS)
