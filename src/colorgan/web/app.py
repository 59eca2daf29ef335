"""The app factory of ``colorgan serve``: one FastAPI app, one loaded model, a bounded work queue.

Routers (each in its own module, so others can be added without touching this one):

* :mod:`colorgan.web.api`: ``POST /api/colorize`` and ``GET /api/health``;
* :mod:`colorgan.web.ui`: the page at ``/`` and its assets under ``/static/``;
* ``/docs`` (Swagger UI) and ``/openapi.json``, with Swagger's assets served locally when the
  ``fastapi-offline`` package is installed;
* any ``extra_routers`` given to :func:`create_app` (the human-study mode, for example). Their
  handlers reach the shared model and queue with :func:`colorgan.web.state.get_state`.

Safety, in one place: the server binds to loopback by default; a Host header that is not one of
this server's names is refused (DNS rebinding); a cross-origin POST is refused (a web page in the
same browser cannot spend this machine's CPU); every response says ``nosniff`` and the page gets
a strict Content-Security-Policy (everything from this server, nothing inline).
"""

from __future__ import annotations

import logging
import os
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, AsyncIterator, Callable, Sequence, Union
from urllib.parse import urlsplit

try:
    from fastapi import APIRouter, FastAPI, HTTPException, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import HTMLResponse, JSONResponse, Response
except ImportError as _e:  # pragma: no cover - depends on the installed extras
    raise ImportError(
        f"the web app needs FastAPI, uvicorn and python-multipart ({_e}); install them with: pip install 'colorgan[web]'"
    ) from None

from colorgan import __version__
from colorgan.web.settings import ServeSettings
from colorgan.web.state import ServerState, get_state  # get_state: re-exported for routers written against this module
from colorgan.web.workqueue import WorkQueue

if TYPE_CHECKING:  # pragma: no cover
    from colorgan.pipeline import Colorizer

__all__ = ["ServeSettings", "ServerState", "create_app", "get_state"]

log = logging.getLogger("colorgan.web")

#: What :func:`create_app` accepts as the model: a loaded Colorizer (shared as is), a weights path
#: or shipped model name (None = the default model), or a zero-argument factory returning one.
ModelSource = Union["Colorizer", str, "os.PathLike[str]", Callable[[], "Colorizer"], None]

# The page's policy: scripts, styles and images only from this server (plus blob:/data: images
# the page makes from results), no inline code, no framing, no plugins.
_PAGE_CSP = (
    "default-src 'self'; img-src 'self' blob: data:; script-src 'self'; style-src 'self'; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
# Swagger UI needs one inline script (FastAPI's page) and, without fastapi-offline, a CDN.
_DOCS_PATHS = ("/docs", "/openapi.json")


def create_app(
    model: ModelSource = None,
    *,
    settings: ServeSettings | None = None,
    extra_routers: Sequence[APIRouter] = (),
) -> FastAPI:
    """Build the web app.

    Args:
        model: a :class:`~colorgan.pipeline.Colorizer` (shared as is; tests pass a tiny one), a
            weights path or shipped model name (None = the default model), or a factory. Paths,
            names and factories are loaded once, at start-up (the lifespan), before the first
            request is served; a request arriving earlier loads it under a lock, still once.
        settings: limits and scheduling (defaults: :class:`ServeSettings`).
        extra_routers: more routers to include, e.g. the human-study mode's.

    Returns:
        The FastAPI app; serve it with uvicorn in ONE process (the model lives in it).
    """
    from colorgan.web import api, ui

    settings = settings or ServeSettings()
    state = ServerState(settings=settings, queue=WorkQueue(settings.workers, settings.queue_size), source=model)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        import anyio.to_thread

        # Load in a thread: start-up stays responsive to signals while torch reads the weights.
        colorizer = await anyio.to_thread.run_sync(state.colorizer)
        log.info("model %s loaded on %s", colorizer.name, colorizer.device)
        try:
            yield
        finally:
            state.queue.close()

    app = FastAPI(
        title="ColorGAN",
        version=__version__,
        description="Colourise black-and-white photographs. `POST /api/colorize` with a multipart field "
        "`file`; the answer is the colour image (PNG, or JPEG with `format=jpeg`).",
        lifespan=lifespan,
        docs_url=None,  # our own /docs below, with local assets when available
        redoc_url=None,
    )
    app.state.colorgan = state
    app.add_middleware(_GuardMiddleware, allowed_hosts=settings.effective_allowed_hosts())
    _add_error_handlers(app)
    app.include_router(api.router)
    app.include_router(ui.router)
    _add_docs(app)
    for router in extra_routers:
        app.include_router(router)
    return app


# ------------------------------------------------------------------------------------ errors


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        # One readable line instead of FastAPI's list of dicts, e.g. "render_size: ...".
        parts = []
        for err in exc.errors():
            where = ".".join(str(p) for p in err.get("loc", ()) if p not in ("query", "body", "path"))
            parts.append(f"{where}: {err.get('msg', 'invalid')}" if where else str(err.get("msg", "invalid")))
        return JSONResponse({"detail": "; ".join(parts) or "invalid request"}, status_code=422)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        # Bad input never gets here (it is mapped to 4xx); this is a bug, so log it in full.
        log.exception("unexpected error in %s %s", request.method, request.url.path)
        return JSONResponse({"detail": f"internal server error ({type(exc).__name__}); see the server log"}, status_code=500)


# ------------------------------------------------------------------------------------ docs

_SWAGGER_ASSETS = {
    "swagger-ui-bundle.js": "application/javascript",
    "swagger-ui.css": "text/css",
    "favicon.png": "image/png",
}


def _swagger_asset_dir() -> "os.PathLike[str] | None":
    """Swagger UI's files from the ``fastapi-offline`` package, if installed (no CDN then)."""
    try:
        import fastapi_offline
    except ImportError:
        return None
    from pathlib import Path

    folder = Path(fastapi_offline.__file__).parent / "static"
    return folder if all((folder / name).is_file() for name in _SWAGGER_ASSETS) else None


def _add_docs(app: FastAPI) -> None:
    from fastapi.openapi.docs import get_swagger_ui_html

    folder = _swagger_asset_dir()
    cache: dict[str, bytes] = {}

    @app.get("/docs", include_in_schema=False)
    async def docs() -> HTMLResponse:
        if folder is None:
            # FastAPI's default page loads Swagger UI from a CDN: fine online, blank offline.
            return get_swagger_ui_html(openapi_url=app.openapi_url or "/openapi.json", title="ColorGAN API")
        return get_swagger_ui_html(
            openapi_url=app.openapi_url or "/openapi.json",
            title="ColorGAN API",
            swagger_js_url="/docs/assets/swagger-ui-bundle.js",
            swagger_css_url="/docs/assets/swagger-ui.css",
            swagger_favicon_url="/docs/assets/favicon.png",
        )

    @app.get("/docs/assets/{name}", include_in_schema=False)
    async def docs_asset(name: str) -> Response:
        # The client's name only selects from a fixed table; it never becomes a path.
        if folder is None or name not in _SWAGGER_ASSETS:
            raise HTTPException(404, "not found")
        if name not in cache:
            cache[name] = (folder / name).read_bytes()  # type: ignore[operator]
        return Response(cache[name], media_type=_SWAGGER_ASSETS[name], headers={"Cache-Control": "max-age=86400"})


# ------------------------------------------------------------------------------------ guard


def _host_only(value: str) -> str:
    """The host part of a Host header (``[::1]:8000`` -> ``::1``), lower case."""
    value = value.strip().lower()
    if value.startswith("["):
        return value[1 : value.find("]")] if "]" in value else value
    return value.rsplit(":", 1)[0] if value.count(":") == 1 else value


class _GuardMiddleware:
    """Pure ASGI middleware: Host allow-list, same-origin POSTs, security headers.

    Args:
        app: the ASGI app guarded.
        allowed_hosts: Host header values (lower case, no port) answered; None: any.
        csp: the Content-Security-Policy of every response outside ``/docs`` (another app, such
            as the human study's, passes its own page's policy).
    """

    def __init__(self, app: Any, allowed_hosts: frozenset[str] | None, csp: str = _PAGE_CSP) -> None:
        self.app = app
        self.allowed_hosts = allowed_hosts
        self.csp = csp.encode()

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        host_header = headers.get("host", "")
        if self.allowed_hosts is not None and _host_only(host_header) not in self.allowed_hosts:
            names = ", ".join(sorted(self.allowed_hosts))
            await _json(send, 400, f"Host {host_header!r} is not allowed; this server answers to {names}")
            return
        origin = headers.get("origin")
        if scope["method"] not in ("GET", "HEAD", "OPTIONS") and origin is not None:
            if urlsplit(origin).netloc.lower() != host_header.lower():
                await _json(send, 403, f"cross-origin request from {origin!r} refused")
                return
        page = not scope["path"].startswith(_DOCS_PATHS)

        async def send_with_headers(message: dict) -> None:
            if message["type"] == "http.response.start":
                extra = [
                    (b"x-content-type-options", b"nosniff"),
                    (b"referrer-policy", b"no-referrer"),
                    (b"x-frame-options", b"DENY"),
                    (b"cross-origin-resource-policy", b"same-origin"),
                ]
                if page:
                    extra.append((b"content-security-policy", self.csp))
                message = {**message, "headers": list(message.get("headers", [])) + extra}
            await send(message)

        await self.app(scope, receive, send_with_headers)


async def _json(send: Callable, status: int, detail: str) -> None:
    import json

    body = json.dumps({"detail": detail}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                        (b"x-content-type-options", b"nosniff")],
        }
    )
    await send({"type": "http.response.body", "body": body})
