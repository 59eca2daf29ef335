"""Evaluation: image-quality and distribution metrics for colourisation results.

Everything lives in :mod:`colorgan.eval.metrics`; the names are re-exported here. Importing this
package loads no network: :class:`InceptionFeatures` reads its weights only when constructed.
"""

from __future__ import annotations

from colorgan.eval.metrics import (
    FID_INPUT_RANGE,
    FID_INPUT_SIZE,
    InceptionFeatures,
    auc_ab,
    bootstrap_ci,
    center_crop_resize,
    colourfulness,
    delta_colourfulness,
    fid_from_features,
    frechet_distance,
    kid_from_features,
    psnr,
    ssim,
)

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
