"""Evaluation: image-quality and distribution metrics, reports, and the evaluate command.

The metric functions live in :mod:`colorgan.eval.metrics` and are re-exported here lazily, so
that building the command-line parser (which imports :mod:`colorgan.eval.cli`) does not load
torch. :class:`InceptionFeatures` reads its weights only when constructed.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "FID_INPUT_RANGE",
    "FID_INPUT_SIZE",
    "InceptionFeatures",
    "auc_ab",
    "bootstrap_ci",
    "center_crop_resize",
    "colourfulness",
    "delta_colourfulness",
    "fid_from_features",
    "frechet_distance",
    "kid_from_features",
    "psnr",
    "ssim",
]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from colorgan.eval import metrics

        return getattr(metrics, name)
    raise AttributeError(f"module 'colorgan.eval' has no attribute {name!r}")
