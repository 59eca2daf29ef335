"""Rebuilding a model's frozen config dataclass from the JSON stored in a weights file."""

from __future__ import annotations

from dataclasses import fields
from typing import Any, TypeVar

T = TypeVar("T")

__all__ = ["config_from_dict"]


def config_from_dict(cls: type[T], d: dict[str, Any]) -> T:
    """Inverse of ``dataclasses.asdict`` for flat configs: JSON lists become tuples again.

    Raises:
        ValueError: keys that ``cls`` does not have (a file from another version or model).
    """
    unknown = set(d) - {f.name for f in fields(cls)}  # type: ignore[arg-type]
    if unknown:
        raise ValueError(f"unknown {cls.__name__} keys: {sorted(unknown)}")
    return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})
