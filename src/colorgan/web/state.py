"""What the app factory and every router share: the server's state, one per app (``app.state.colorgan``).

:mod:`colorgan.web.app` creates the :class:`ServerState` and stores it on the app; the routers
(:mod:`colorgan.web.api`, routers given as ``extra_routers``) read it back with :func:`get_state`.
Both import this module, and the routers never import the app module that includes them, so
there is no import loop. This module imports no FastAPI itself.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from colorgan.web.settings import ServeSettings
from colorgan.web.workqueue import WorkQueue

if TYPE_CHECKING:  # pragma: no cover
    from starlette.requests import Request

    from colorgan.pipeline import Colorizer

__all__ = ["ServerState", "get_state"]


@dataclass
class ServerState:
    """What every request handler shares (``app.state.colorgan``).

    Attributes:
        settings: the server's settings.
        queue: the bounded work queue all inference goes through.
        source: what to load the model from (see :func:`colorgan.web.app.create_app`'s ``model``).
        started: ``time.time()`` at app creation.
    """

    settings: ServeSettings
    queue: WorkQueue
    source: Any = None
    started: float = field(default_factory=time.time)
    _colorizer: Any = None
    _load_lock: threading.Lock = field(default_factory=threading.Lock)
    #: The colour-distribution model for suggestions: None until loaded, False when unavailable.
    _suggester: Any = None

    @property
    def loaded(self) -> bool:
        """Whether the model is loaded."""
        return self._colorizer is not None

    def colorizer(self) -> "Colorizer":
        """The shared Colorizer, loaded on first use (normally at start-up) exactly once.

        Raises:
            ModelLoadError: the weights cannot be loaded.
        """
        if self._colorizer is None:
            with self._load_lock:  # two first requests must not load two models
                if self._colorizer is None:
                    self._colorizer = _load_colorizer(self.source, self.settings.device)
        return self._colorizer


    def suggester(self) -> Any:
        """The colour-distribution model behind colour suggestions (the shipped ``cic`` model,
        :mod:`colorgan.suggest`), loaded on first use; None when it is not installed."""
        if self._suggester is None:
            with self._load_lock:
                if self._suggester is None:
                    from colorgan.errors import ColorGANError
                    from colorgan.models import hub
                    from colorgan.pipeline import resolve_device

                    try:
                        model = hub.load_model(hub.resolve_weights("cic"), expect_kind="cic")
                        self._suggester = model.to(resolve_device(self.settings.device)).eval()
                    except ColorGANError:
                        self._suggester = False
        return self._suggester or None


def _load_colorizer(source: Any, device: str) -> "Colorizer":
    from colorgan.pipeline import Colorizer, resolve_device

    if isinstance(source, Colorizer):
        return source
    if callable(source):
        made = source()
        if not isinstance(made, Colorizer):
            raise TypeError(f"the model factory returned {type(made).__name__}, not a Colorizer")
        return made
    return Colorizer.from_pretrained(source, device=resolve_device(device))


def get_state(request: Request) -> ServerState:
    """The :class:`ServerState` of the app serving ``request`` (for routers of other modules)."""
    state = getattr(request.app.state, "colorgan", None)
    if state is None:  # pragma: no cover - only for an app not made by create_app
        from fastapi import HTTPException

        raise HTTPException(503, "the server is not set up (no ColorGAN state)")
    return state
