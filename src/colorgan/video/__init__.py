"""Video colourisation: decode -> colourise with temporal stability -> encode, audio kept.

``colorgan video INPUT -o OUTPUT`` (see :mod:`colorgan.video.cli`) and, from Python::

    from colorgan import Colorizer
    from colorgan.video import VideoOptions, colorize_video

    colorize_video("film.mp4", "film-colour.mp4", colorizer=Colorizer.from_pretrained(),
                   options=VideoOptions(render_size=256, temporal=0.8), progress=True)

Modules: :mod:`~colorgan.video.media` (PyAV: probe, decode, encode segments, mux with audio),
:mod:`~colorgan.video.temporal` (optical flow, scene cuts, the stabiliser, the warping-error
metric), :mod:`~colorgan.video.core` (the resumable run), :mod:`~colorgan.video.cli` (the
subcommand). Needs the ``video`` extra: ``pip install 'colorgan[video]'`` (PyAV and OpenCV).
Importing this package is cheap: PyAV, OpenCV and torch load only when used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__all__ = [
    "colorize_video",
    "VideoOptions",
    "VideoResult",
    "FrameRecord",
    "TemporalConfig",
    "TemporalStabilizer",
    "warping_error",
    "probe",
    "add_video_parser",
]

if TYPE_CHECKING:  # pragma: no cover
    from .cli import add_video_parser
    from .core import FrameRecord, VideoOptions, VideoResult, colorize_video
    from .media import probe
    from .temporal import TemporalConfig, TemporalStabilizer, warping_error

_WHERE = {
    "colorize_video": "core", "VideoOptions": "core", "VideoResult": "core", "FrameRecord": "core",
    "TemporalConfig": "temporal", "TemporalStabilizer": "temporal", "warping_error": "temporal",
    "probe": "media", "add_video_parser": "cli",
}


def __getattr__(name: str) -> Any:
    # Lazy: `colorgan.video.cli` is imported by the main CLI's parser and must stay light.
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'colorgan.video' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(f"{__name__}.{module}"), name)
