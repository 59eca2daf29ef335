"""Limits shared by every entry point, in a module that imports nothing (no torch, no numpy).

The command-line parsers check their options against these before any heavy module loads;
:mod:`colorgan.pipeline` enforces the same numbers at run time (it re-exports them).
"""

from __future__ import annotations

__all__ = ["MIN_RENDER_SIZE", "MAX_RENDER_SIZE"]

#: The smallest render size (short side the network sees, in pixels); the out-of-memory fallback stops here.
MIN_RENDER_SIZE = 64
#: The largest render size accepted.
MAX_RENDER_SIZE = 2048
