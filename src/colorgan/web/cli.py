"""The ``colorgan serve`` subcommand: the local web app on uvicorn, one process, one loaded model.

Exit status: 0 after a normal stop (Ctrl-C); 2 for usage errors (bad option, no model, the port
is taken, the web extra is not installed), reported as one ``colorgan: error: ...`` line.
"""

from __future__ import annotations

import argparse
import importlib
import os
import socket
import sys
from pathlib import Path
from typing import Any

from colorgan.cli_args import add_device_argument, add_model_arguments, port, positive_float, positive_int, render_size
from colorgan.cli_args import cli_error as _error
from colorgan.errors import ColorGANError

__all__ = ["add_serve_parser", "run_server"]


def add_serve_parser(sub) -> None:
    """Add the ``serve`` subcommand to an argparse subparsers object (``add_subparsers()``)."""
    s = sub.add_parser(
        "serve",
        help="run the local web app (upload, compare slider, download)",
        description="Serve a page and an HTTP API (POST /api/colorize, GET /api/health, docs at /docs) that "
        "colourise uploaded photos with one shared model. Binds to 127.0.0.1 (this machine only) unless told "
        "otherwise. Nothing is written to disk unless --save-dir is given.",
    )
    s.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1; 0.0.0.0 exposes it to the network)")
    s.add_argument("--port", type=port, default=8000, help="TCP port (default 8000; 0 picks a free one)")
    s.add_argument(
        "--workers",
        type=positive_int,
        default=1,
        metavar="N",
        help="inference threads sharing the one model (default 1). Torch's own threads are split between "
        "them (CPU cores / N each) unless OMP_NUM_THREADS is set. This is not uvicorn's process count: "
        "the server is always one process, so the model is loaded once",
    )
    s.add_argument("--queue-size", type=positive_int, default=32, metavar="N", help="requests admitted at once, running or waiting; more get 503 + Retry-After (default 32)")
    s.add_argument("--max-upload-mb", type=positive_float, default=50.0, metavar="MB", help="largest upload (default 50); larger gets 413")
    s.add_argument(
        "--max-pixels",
        type=positive_int,
        default=25_000_000,
        metavar="N",
        help="largest width x height (default 25000000); larger gets 413. A job needs about 110 bytes a pixel at peak",
    )
    s.add_argument("--max-render-size", type=render_size, default=1024, metavar="N", help="largest render size a request may ask for (default 1024)")
    s.add_argument("--timeout", type=positive_float, default=120.0, metavar="S", help="seconds a request may wait for its result, queue included (default 120); then 504")
    s.add_argument("--save-dir", type=Path, default=None, metavar="DIR", help="keep each upload and its result in DIR under server-chosen names (default: keep nothing)")
    add_device_argument(s)
    add_model_arguments(s)
    s.add_argument("-q", "--quiet", action="store_true", help="no access log; warnings and errors only")
    s.set_defaults(func=_cmd_serve)


def _bind(host: str, port: int) -> socket.socket:
    """A bound socket for uvicorn: lets port 0 report its real port, and a taken port fail cleanly."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    family, _, _, _, address = infos[0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does: quick restarts
        sock.bind(address)
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


def run_server(
    app: Any,
    host: str,
    port: int,
    *,
    details: str,
    exposed: str,
    path: str = "/",
    quiet: bool = False,
    limit_concurrency: int | None = None,
) -> int:
    """Serve an ASGI app on uvicorn, in this process, until Ctrl-C (``colorgan serve`` and
    ``colorgan study serve`` both start their servers here).

    Binds first, so a taken port is one error line and port 0 prints the port it got; warns when
    the address is not loopback; prints one line with the URL; then serves.

    Args:
        app: the ASGI app.
        host: bind address.
        port: TCP port (0: a free one).
        details: what is served, shown in parentheses after the URL.
        exposed: why a non-loopback bind deserves a warning (who could then use the server).
        path: the page's path, appended to the URL shown.
        quiet: no access log; warnings and errors only.
        limit_concurrency: uvicorn's cap on connections at once (None: no cap).

    Returns:
        The exit status: 0 after a normal stop, 2 when the address cannot be bound.
    """
    import uvicorn

    from colorgan.web.settings import is_loopback

    try:
        sock = _bind(host, port)
    except OSError as e:
        return _error(f"cannot listen on {host}:{port}: {e.strerror or e}")
    bound_host, bound_port = sock.getsockname()[:2]
    shown = f"[{bound_host}]" if ":" in bound_host else bound_host

    if not is_loopback(host):
        print(f"colorgan: warning: listening on {host}: {exposed}", file=sys.stderr)
    print(f"colorgan: serving on http://{shown}:{bound_port}{path} ({details}; Ctrl-C stops)", file=sys.stderr, flush=True)
    config = uvicorn.Config(
        app,
        log_level="warning" if quiet else "info",
        access_log=not quiet,
        timeout_keep_alive=5,
        limit_concurrency=limit_concurrency,
        server_header=False,
    )
    server = uvicorn.Server(config)
    try:
        server.run(sockets=[sock])
    except KeyboardInterrupt:
        pass  # uvicorn re-raises Ctrl-C after its graceful shutdown; for a server it is the normal stop
    finally:
        sock.close()
    print("colorgan: server stopped", file=sys.stderr)
    return 0


def _return_freed_memory_to_os() -> None:
    """glibc only: serve big blocks (decoded images, tensors) with mmap, so that freeing them gives
    the memory back to the system.

    By default glibc raises its mmap threshold (up to 32 MB) the first time such a block is freed,
    and later image buffers then live in its heaps, whose pages it rarely returns: a long-running
    server's RSS would stay at its high-water mark. A fixed threshold also turns off that dynamic
    adjustment. Best effort: other C libraries are left alone.
    """
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-3, 256 * 1024)  # M_MMAP_THRESHOLD = -3 in <malloc.h>
    except (OSError, AttributeError):  # not glibc
        pass


def _cmd_serve(args: argparse.Namespace) -> int:
    try:
        importlib.import_module("uvicorn")  # run_server's; checked now, before the model loads
        from colorgan.web.app import create_app
        from colorgan.web.settings import ServeSettings
    except ImportError as e:
        return _error(f"{e}" if "colorgan[web]" in str(e) else f"the web app needs FastAPI and uvicorn ({e}); install them with: pip install 'colorgan[web]'")
    from colorgan.pipeline import Colorizer, resolve_device

    try:
        settings = ServeSettings(
            host=args.host,
            port=args.port,
            workers=args.workers,
            queue_size=max(args.queue_size, args.workers),
            max_upload_mb=args.max_upload_mb,
            max_pixels=args.max_pixels,
            max_render_size=args.max_render_size,
            default_render_size=min(256, args.max_render_size),
            request_timeout_s=args.timeout,
            save_dir=args.save_dir,
            device=args.device,
        )
        device = resolve_device(args.device)
    except ValueError as e:
        return _error(str(e))
    if args.save_dir is not None and args.save_dir.exists() and not args.save_dir.is_dir():
        return _error(f"{args.save_dir}: exists and is not a folder")

    _return_freed_memory_to_os()
    if "OMP_NUM_THREADS" not in os.environ and device.type == "cpu":
        import torch

        # N workers each running torch with all cores would oversubscribe the CPU; split them.
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // settings.workers))

    try:
        colorizer = Colorizer.from_pretrained(args.weights if args.weights else args.model, device=device)
    except ColorGANError as e:
        return _error(str(e))

    return run_server(
        create_app(colorizer, settings=settings),
        settings.host,
        settings.port,
        details=f"model {colorizer.name} on {colorizer.device}, {settings.workers} worker{'s' if settings.workers != 1 else ''}",
        exposed="anyone who can reach this machine can use this server; it has no authentication",
        quiet=args.quiet,
        # A backstop against connection floods: far above the queue, so normal clients never see it.
        limit_concurrency=max(64, 4 * settings.queue_size),
    )
