"""ColorGAN: colourise black-and-white photographs and film.

Importing the package is cheap: the heavy modules (torch models, training) load only when used.

Example:
    >>> from colorgan import Colorizer  # doctest: +SKIP
    >>> colorizer = Colorizer.from_pretrained(device="cpu")  # doctest: +SKIP
    >>> colour = colorizer.colorize(pil_image, render_size=256)  # doctest: +SKIP
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = ["Colorizer", "__version__"]

if TYPE_CHECKING:  # pragma: no cover
    from colorgan.pipeline import Colorizer


def __getattr__(name: str) -> Any:
    # Lazy import keeps `import colorgan` light (no torch at import time).
    if name == "Colorizer":
        from colorgan.pipeline import Colorizer

        return Colorizer
    raise AttributeError(f"module 'colorgan' has no attribute {name!r}")
