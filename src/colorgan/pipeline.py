"""The one inference path: image in -> colour image out.

CLI, Python API, web app, video and evaluation all go through :class:`Colorizer`::

    RGB [0,1] -> L (full res) -> L at render size -> model -> ab (render size)
      -> ab upsampled to full res + original L -> gamut-clipped sRGB

The model only ever sees the render-size image, so its cost does not grow with the photo, and
the output's L is the input's L: every grain and edge of the original survives.
"""

from __future__ import annotations

import logging
import os
import warnings
from dataclasses import dataclass
from typing import Sequence, Union

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from colorgan import color
from colorgan.errors import OutOfMemoryError

__all__ = ["Colorizer", "render_shape", "resolve_device", "MIN_RENDER_SIZE", "MAX_RENDER_SIZE"]

log = logging.getLogger(__name__)

MIN_RENDER_SIZE = 64
MAX_RENDER_SIZE = 2048

PILOrArray = Union["PIL.Image.Image", np.ndarray]  # noqa: F821


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``"auto"``/None -> CUDA when available, else MPS, else CPU; otherwise as given.

    Raises:
        ValueError: an unknown device string, or a device that this machine lacks.
    """
    if device is None or str(device) == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        dev = torch.device(device)
    except RuntimeError as e:
        raise ValueError(f"unknown device {device!r}: {e}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} requested but CUDA is not available on this machine")
    if dev.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ValueError(f"device {device!r} requested but MPS is not available on this machine")
    return dev


def render_shape(height: int, width: int, render_size: int, multiple: int = 32) -> tuple[int, int]:
    """The (h, w) the model sees: short side ``render_size``, aspect kept, both multiples of ``multiple``.

    Args:
        height: original height in pixels.
        width: original width in pixels.
        render_size: target length of the short side.
        multiple: the model's total stride.

    Returns:
        ``(h, w)``, each at least ``multiple``.
    """
    short = max(multiple, int(round(render_size / multiple)) * multiple)
    scale = short / min(height, width)
    h = max(multiple, int(round(height * scale / multiple)) * multiple)
    w = max(multiple, int(round(width * scale / multiple)) * multiple)
    return h, w


def _is_oom(e: BaseException) -> bool:
    if isinstance(e, getattr(torch, "OutOfMemoryError", ())):
        return True
    msg = str(e).lower()
    return isinstance(e, RuntimeError) and ("out of memory" in msg or "can't allocate memory" in msg)


@dataclass
class _Prepared:
    L: torch.Tensor  # (1, 1, H, W) L in [0, 100], full resolution
    alpha: np.ndarray | None
    bit_depth: int
    kind: str


class Colorizer:
    """Colourise images with a generator that maps normalised L to normalised ab.

    Args:
        model: a module with ``forward(l_norm (B,1,h,w) in [-1,1]) -> ab_norm (B,2,h,w)`` and an
            optional ``stride`` attribute (h and w must be multiples of it; default 32).
        device: where to run (``"cpu"``, ``"cuda"``, ``"auto"``...).
        dtype: compute dtype of the model (float32 default; bfloat16/float16 on GPUs).
        name: a label for logs and reports.
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float32,
        name: str | None = None,
    ) -> None:
        self.device = resolve_device(device)
        self.dtype = dtype
        self.model = model.to(device=self.device, dtype=dtype).eval()
        self.stride = int(getattr(model, "stride", 32))
        self.name = name or type(model).__name__

    # ------------------------------------------------------------------ construction

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str | os.PathLike | None = None,
        *,
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float32,
    ) -> "Colorizer":
        """Load a shipped model by name (``None`` = ``"default"``) or a weights file by path.

        Raises:
            WeightsNotFoundError: the name is not installed or the path does not exist.
            ModelLoadError: the file is not ColorGAN weights or does not match its config.
        """
        from colorgan.models.hub import load_model, resolve_weights

        path = resolve_weights(name_or_path)
        model = load_model(path, device="cpu", dtype=torch.float32)
        label = str(name_or_path) if name_or_path is not None else "default"
        return cls(model, device=device, dtype=dtype, name=label)

    # ------------------------------------------------------------------ tensor core

    @torch.inference_mode()
    def predict_ab(self, L: torch.Tensor, render_size: int = 256) -> torch.Tensor:
        """Predict ab at render resolution.

        Args:
            L: ``(B, 1, H, W)`` L in [0, 100] (any H, W; all images of the batch the same size).
            render_size: short side the model sees (rounded to a multiple of the model's stride).

        Returns:
            ``(B, 2, h, w)`` ab in about [-110, 110] at render resolution, float32 on ``L``'s device.
        """
        h, w = render_shape(L.shape[-2], L.shape[-1], render_size, self.stride)
        x = L.to(self.device, torch.float32)
        # Antialiased downsampling: aliasing in L would become colour noise.
        x = F.interpolate(x, size=(h, w), mode="bilinear", align_corners=False, antialias=(h < L.shape[-2]))
        x = color.normalize_l(x.clamp(0, 100)).to(self.dtype)
        if self.device.type == "cpu" or self.dtype == torch.float32:
            ab = self.model(x)
        else:
            ab = self.model(x.contiguous(memory_format=torch.channels_last))
        return color.denormalize_ab(ab.float()).to(L.device)

    def _predict_ab_safe(self, L: torch.Tensor, render_size: int) -> tuple[torch.Tensor, int]:
        """predict_ab with an out-of-memory fallback to smaller render sizes (with a warning)."""
        size = render_size
        while True:
            try:
                return self.predict_ab(L, size), size
            except Exception as e:  # noqa: BLE001 - only OOM is handled; the rest re-raised
                if not _is_oom(e):
                    raise
                if self.device.type == "cuda":
                    torch.cuda.empty_cache()
                if size <= MIN_RENDER_SIZE:
                    raise OutOfMemoryError(
                        f"out of memory on {self.device} even at render size {size}; "
                        "try --device cpu or a smaller batch"
                    ) from None
                new = max(MIN_RENDER_SIZE, size // 2)
                msg = f"out of memory at render size {size} on {self.device}; retrying at {new}"
                warnings.warn(msg, RuntimeWarning, stacklevel=3)
                log.warning(msg)
                size = new

    @torch.inference_mode()
    def colorize_tensor(self, rgb: torch.Tensor, render_size: int = 256) -> torch.Tensor:
        """Colourise a batch given as sRGB (only its luminance is used).

        Args:
            rgb: ``(B, 3, H, W)`` sRGB in [0, 1] (grey, tinted or colour) or ``(B, 1, H, W)`` L in [0, 100].
            render_size: short side the model sees.

        Returns:
            ``(B, 3, H, W)`` float32 sRGB in [0, 1] whose L equals the input's.
        """
        _check_render_size(render_size)
        L = rgb.float() if rgb.shape[1] == 1 else color.rgb_to_l(rgb.float())
        ab, _ = self._predict_ab_safe(L, render_size)
        return color.merge_luminance(L, ab)

    # ------------------------------------------------------------------ arrays and images

    def _prepare(self, image: object) -> _Prepared:
        from colorgan import io as cio

        if isinstance(image, cio.LoadedImage):
            loaded = image  # the caller (CLI) reports colour inputs itself
        elif isinstance(image, np.ndarray):
            loaded = cio.from_array(image)
        else:
            try:
                from PIL import Image
            except ImportError:  # pragma: no cover - pillow is a dependency
                raise TypeError("image must be a numpy array") from None
            if not isinstance(image, Image.Image):
                raise TypeError(f"expected a PIL image, a numpy array or a LoadedImage, got {type(image).__name__}")
            loaded = cio.from_pil(image)
        if loaded.kind == "colour" and loaded is not image:
            log.warning("%s is already in colour; only its luminance is used", loaded.source or "input")
        rgb = torch.from_numpy(np.ascontiguousarray(loaded.rgb, dtype=np.float32)).permute(2, 0, 1)[None]
        L = color.rgb_to_l(rgb.to(self.device))
        return _Prepared(L=L, alpha=loaded.alpha, bit_depth=loaded.bit_depth, kind=loaded.kind)

    def colorize_array(self, rgb: np.ndarray, render_size: int = 256) -> np.ndarray:
        """Colourise a float image.

        Args:
            rgb: ``(H, W, 3)`` float sRGB in [0, 1] (or ``(H, W)`` grey).
            render_size: short side the model sees.

        Returns:
            ``(H, W, 3)`` float32 sRGB in [0, 1].
        """
        arr = np.asarray(rgb, dtype=np.float32)
        if arr.ndim == 2:
            arr = np.repeat(arr[..., None], 3, axis=2)
        if arr.ndim != 3 or arr.shape[2] != 3:
            raise ValueError(f"expected an (H, W, 3) or (H, W) array, got shape {arr.shape}")
        t = torch.from_numpy(np.ascontiguousarray(arr)).permute(2, 0, 1)[None].to(self.device)
        return self.colorize_tensor(t, render_size)[0].permute(1, 2, 0).cpu().numpy()

    def colorize_loaded(self, loaded: "object", render_size: int = 256) -> np.ndarray:
        """Colourise a :class:`colorgan.io.LoadedImage`; returns ``(H, W, 3)`` float32 sRGB in [0, 1]."""
        return self._colorize_prepared([self._prepare(loaded)], render_size)[0]

    @torch.inference_mode()
    def _colorize_prepared(self, items: list[_Prepared], render_size: int) -> list[np.ndarray]:
        _check_render_size(render_size)
        out: list[np.ndarray | None] = [None] * len(items)
        # Images with the same render shape share one forward pass.
        groups: dict[tuple[int, int], list[int]] = {}
        for i, it in enumerate(items):
            groups.setdefault(render_shape(it.L.shape[-2], it.L.shape[-1], render_size, self.stride), []).append(i)
        for (h, w), idx in groups.items():
            small = torch.cat(
                [
                    F.interpolate(
                        items[i].L, size=(h, w), mode="bilinear", align_corners=False, antialias=h < items[i].L.shape[-2]
                    )
                    for i in idx
                ]
            )
            ab, _ = self._predict_ab_safe(small, render_size)
            for j, i in enumerate(idx):
                rgb = color.merge_luminance(items[i].L, ab[j : j + 1].to(items[i].L.device))
                out[i] = rgb[0].permute(1, 2, 0).cpu().numpy()
        return out  # type: ignore[return-value]

    def colorize(self, image: PILOrArray, render_size: int = 256) -> PILOrArray:
        """Colourise one image.

        Args:
            image: a PIL image (any mode) or a numpy array ``(H, W)``, ``(H, W, 1|3|4)``, uint8,
                uint16 or float in [0, 1]. Colour or tinted input is reduced to its luminance.
            render_size: short side the model sees (64-2048; 256 is what the model is trained for).

        Returns:
            The same kind as the input: a PIL image (``RGB``, or ``RGBA`` when the input had
            alpha; 16-bit PIL inputs come back 8-bit, since PIL holds no 16-bit RGB), or an array
            ``(H, W, 3|4)`` of the input's dtype (uint8, uint16, or float32 in [0, 1]).
        """
        return self.colorize_batch([image], render_size=render_size)[0]

    def colorize_batch(
        self, images: Sequence[PILOrArray], render_size: int = 256, batch_size: int = 8
    ) -> list[PILOrArray]:
        """Colourise several images; those with the same render shape share forward passes.

        Args:
            images: PIL images and/or numpy arrays (see :meth:`colorize`).
            render_size: short side the model sees.
            batch_size: images prepared and run together (bounds memory).

        Returns:
            One result per input, in order, each of the input's kind.
        """
        results: list[PILOrArray] = []
        for start in range(0, len(images), max(1, batch_size)):
            chunk = list(images[start : start + batch_size])
            prepared = [self._prepare(im) for im in chunk]
            rgbs = self._colorize_prepared(prepared, render_size)
            for im, prep, rgb in zip(chunk, prepared, rgbs):
                results.append(_to_output(im, prep, rgb))
        return results


def _check_render_size(render_size: int) -> None:
    if not isinstance(render_size, (int, np.integer)) or not MIN_RENDER_SIZE <= render_size <= MAX_RENDER_SIZE:
        raise ValueError(f"render_size must be an integer in [{MIN_RENDER_SIZE}, {MAX_RENDER_SIZE}], got {render_size!r}")


def _to_output(original: object, prep: _Prepared, rgb: np.ndarray) -> PILOrArray:
    """Convert the float result back to the caller's kind, alpha re-attached unchanged."""
    alpha = prep.alpha
    if isinstance(original, np.ndarray):
        if original.dtype == np.uint16:
            out = np.round(np.clip(rgb, 0, 1) * 65535).astype(np.uint16)
            a = None if alpha is None else _alpha_to(alpha, np.uint16)
        elif original.dtype == np.uint8 or original.dtype == np.bool_:
            out = np.round(np.clip(rgb, 0, 1) * 255).astype(np.uint8)
            a = None if alpha is None else _alpha_to(alpha, np.uint8)
        else:
            out = rgb.astype(np.float32)
            a = None if alpha is None else _alpha_to(alpha, np.float32)
        return out if a is None else np.concatenate([out, a[..., None]], axis=2)
    from PIL import Image

    out8 = np.round(np.clip(rgb, 0, 1) * 255).astype(np.uint8)
    if alpha is None:
        return Image.fromarray(out8, "RGB")
    return Image.fromarray(np.concatenate([out8, _alpha_to(alpha, np.uint8)[..., None]], axis=2), "RGBA")


def _alpha_to(alpha: np.ndarray, dtype: type) -> np.ndarray:
    """Alpha in another depth (exact when depths agree; 16<->8 bit by the 257 factor)."""
    if alpha.dtype == dtype:
        return alpha
    if dtype is np.float32:
        scale = 65535.0 if alpha.dtype == np.uint16 else 255.0
        return alpha.astype(np.float32) / scale
    if alpha.dtype == np.uint16 and dtype is np.uint8:
        return np.round(alpha / 257.0).astype(np.uint8)
    if alpha.dtype == np.uint8 and dtype is np.uint16:
        return alpha.astype(np.uint16) * 257
    return np.round(np.clip(alpha.astype(np.float64), 0, 1) * (65535 if dtype is np.uint16 else 255)).astype(dtype)

