"""Atomic training checkpoints and resume.

A checkpoint is a dict of tensors and plain values written with ``torch.save`` to a temporary file
in the same folder, fsynced, then renamed over the target: a crash or ``kill -9`` at any moment
leaves either the previous checkpoint or the new one, never a torn file. Loading uses
``weights_only=True`` (no arbitrary pickle execution).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

__all__ = ["save_checkpoint", "load_checkpoint"]


def save_checkpoint(state: dict[str, Any], path: str | os.PathLike) -> Path:
    """Write ``state`` atomically to ``path`` (parents created)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any] | None:
    """Load a checkpoint written by :func:`save_checkpoint`, or None if there is none."""
    path = Path(path)
    if not path.is_file():
        return None
    return torch.load(path, map_location=map_location, weights_only=True)
