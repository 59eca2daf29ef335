"""Settings of the web server: a frozen dataclass. Importing this module imports nothing heavy."""

from __future__ import annotations

import ipaddress
import math
from dataclasses import dataclass
from pathlib import Path

from colorgan.limits import MAX_RENDER_SIZE, MIN_RENDER_SIZE

__all__ = ["ServeSettings", "LOOPBACK_HOSTS", "is_loopback"]

#: Host names (without port) a loopback-bound server answers to by default. Anything else in the
#: Host header is refused, which defeats DNS-rebinding attacks from web pages in the same browser.
LOOPBACK_HOSTS: tuple[str, ...] = ("127.0.0.1", "localhost", "::1")


def is_loopback(host: str) -> bool:
    """Whether a bind address only accepts connections from this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class ServeSettings:
    """How ``colorgan serve`` binds, limits and schedules work.

    Attributes:
        host: bind address. The default, loopback, keeps the server private to this machine.
        port: TCP port (0 picks a free one).
        workers: inference threads sharing the one loaded model. Each request is decoded,
            colourised and encoded on one of them; the event loop only moves bytes.
        queue_size: requests admitted at once (running + waiting + still uploading). One more
            gets ``503`` with ``Retry-After`` before its body is read, so buffered uploads never
            exceed ``queue_size * max_upload_mb``.
        max_upload_mb: largest accepted upload in MB (10**6 bytes); larger gets ``413`` from
            ``Content-Length`` before reading, or as soon as the streamed count passes it.
        max_pixels: largest accepted width * height, checked from the image header before any
            pixel is decoded (``413``). It bounds a job's memory: about 110 bytes a pixel at
            peak (measured: +1.1 GB for a 10-megapixel photo), so 25 MP is about 2.8 GB a worker.
        default_render_size: render size when a request names none.
        max_render_size: largest render size a request may ask for (the model's activations
            grow with its square).
        request_timeout_s: the most a request waits for its result once uploaded (queue wait +
            processing); then ``504``. A torch call already running cannot be interrupted: it
            finishes in the background, its result is dropped, and it keeps its queue slot until
            then so the bound on work in flight holds.
        upload_timeout_s: the most the upload itself may take (slow or stalled clients): ``408``.
        jpeg_quality: quality of JPEG responses (``format=jpeg``).
        save_dir: if set, keep a copy of each upload and its result there under server-chosen
            names (never the client's file name). None (default): nothing is ever written to disk.
        allowed_hosts: Host header values (without port) to answer; None derives them from
            ``host``: the loopback names for a loopback bind, anything otherwise.
        device: where the model runs when the app loads it itself ("auto", "cpu", "cuda"...).
    """

    host: str = "127.0.0.1"
    port: int = 8000
    workers: int = 1
    queue_size: int = 32
    max_upload_mb: float = 50.0
    max_pixels: int = 25_000_000
    default_render_size: int = 256
    max_render_size: int = 1024
    request_timeout_s: float = 120.0
    upload_timeout_s: float = 60.0
    jpeg_quality: int = 92
    save_dir: Path | None = None
    allowed_hosts: tuple[str, ...] | None = None
    device: str = "auto"

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port must be in [0, 65535], got {self.port}")
        if self.workers < 1:
            raise ValueError(f"workers must be at least 1, got {self.workers}")
        if self.queue_size < self.workers:
            raise ValueError(f"queue_size ({self.queue_size}) must be at least workers ({self.workers})")
        if not (math.isfinite(self.max_upload_mb) and self.max_upload_mb > 0):
            raise ValueError(f"max_upload_mb must be positive, got {self.max_upload_mb}")
        if self.max_pixels < 1:
            raise ValueError(f"max_pixels must be positive, got {self.max_pixels}")
        if not MIN_RENDER_SIZE <= self.max_render_size <= MAX_RENDER_SIZE:
            raise ValueError(f"max_render_size must be in [{MIN_RENDER_SIZE}, {MAX_RENDER_SIZE}], got {self.max_render_size}")
        if not MIN_RENDER_SIZE <= self.default_render_size <= self.max_render_size:
            raise ValueError(
                f"default_render_size must be in [{MIN_RENDER_SIZE}, {self.max_render_size}], got {self.default_render_size}"
            )
        if not self.request_timeout_s > 0 or not self.upload_timeout_s > 0:
            raise ValueError("timeouts must be positive")
        if not 1 <= self.jpeg_quality <= 100:
            raise ValueError(f"jpeg_quality must be in [1, 100], got {self.jpeg_quality}")

    @property
    def max_upload_bytes(self) -> int:
        """``max_upload_mb`` in bytes."""
        return int(self.max_upload_mb * 1_000_000)

    def effective_allowed_hosts(self) -> frozenset[str] | None:
        """The Host values to answer (lower case, no port), or None for any."""
        if self.allowed_hosts is not None:
            return frozenset(h.lower().strip("[]") for h in self.allowed_hosts)
        if is_loopback(self.host):
            return frozenset(LOOPBACK_HOSTS)
        return None
