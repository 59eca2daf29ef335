"""The local web app: ``colorgan serve`` (FastAPI + uvicorn), a thin shell over :class:`~colorgan.pipeline.Colorizer`.

Importing this package is cheap: FastAPI, uvicorn and torch load only when :func:`create_app`
(or :class:`ServeSettings`) is first used. The extra is installed with ``pip install 'colorgan[web]'``.

Example:
    >>> from colorgan.web import ServeSettings, create_app  # doctest: +SKIP
    >>> app = create_app("weights.safetensors", settings=ServeSettings(workers=2))  # doctest: +SKIP
    >>> # uvicorn.run(app, host="127.0.0.1", port=8000)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__all__ = ["ServeSettings", "create_app"]

if TYPE_CHECKING:  # pragma: no cover
    from colorgan.web.app import create_app
    from colorgan.web.settings import ServeSettings


def __getattr__(name: str) -> Any:
    # Lazy: `import colorgan.web` must not import FastAPI (an optional extra) or torch.
    if name == "ServeSettings":
        from colorgan.web.settings import ServeSettings

        return ServeSettings
    if name == "create_app":
        from colorgan.web.app import create_app

        return create_app
    raise AttributeError(f"module 'colorgan.web' has no attribute {name!r}")
