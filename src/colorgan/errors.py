"""The few exception types that the CLI turns into one-line messages.

Every error a user can cause (a bad file, a bad weights file, a bad option) is one of these,
so that the command line never shows a traceback for them.
"""

from __future__ import annotations

from pathlib import Path


class ColorGANError(Exception):
    """Base class of every error that ColorGAN reports to a user as one line."""


class ImageLoadError(ColorGANError):
    """An input image could not be read: missing, empty, truncated, corrupt, too large, not an image."""

    def __init__(self, source: str | Path | None, reason: str) -> None:
        self.source = source
        self.reason = reason
        where = str(source) if source is not None else "<image>"
        super().__init__(f"{where}: {reason}")


class OutputError(ColorGANError):
    """An output could not be written, or writing it would touch an input."""

    def __init__(self, target: str | Path | None, reason: str) -> None:
        self.target = target
        self.reason = reason
        where = str(target) if target is not None else "<output>"
        super().__init__(f"{where}: {reason}")


class ModelLoadError(ColorGANError):
    """A weights file is missing, foreign, corrupt or does not match its configuration."""


class WeightsNotFoundError(ModelLoadError):
    """Pretrained weights (an encoder's or the shipped model's) are not installed."""


class OutOfMemoryError(ColorGANError):
    """The device ran out of memory even at the smallest allowed render size."""
