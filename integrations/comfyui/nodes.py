"""ComfyUI nodes around :class:`colorgan.pipeline.Colorizer`.

ComfyUI's IMAGE is a float32 tensor ``(B, H, W, C)`` in [0, 1] on the CPU; a batch comes in and
the same batch, in order, goes out. Each image goes through ``Colorizer.colorize`` (as a float32
``(H, W, 3)`` array), so a node's output is the Python API's output. A 4-channel (RGBA) image is
colourised from its RGB; the alpha is dropped, as IMAGE has none. Only an image's luminance is
used: a colour image is colourised afresh.

Two nodes:

* ``ColorGANColorize``: automatic colour; a shipped model by name or a weights file by path;
* ``ColorGANColorizeGuided``: the same, plus colour points (a hints JSON string, the format of
  ``colorgan colorize --hints``) and a colour reference IMAGE, for a model trained with guidance
  (the shipped ``default`` is).

A loaded model is kept per (model, device) in this module (:data:`_CACHE`), so a workflow loads it
once. ``device``: ``cpu`` (the default), ``cuda`` where available, or ``auto``: ComfyUI's own
device (``comfy.model_management.get_torch_device()``) when ComfyUI is importable, else the CPU.
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import Any

import numpy as np
import torch

try:
    from colorgan.hints import ColourPoint, HintsError, parse_hints
    from colorgan.models.hub import SHIPPED
    from colorgan.pipeline import MAX_RENDER_SIZE, MIN_RENDER_SIZE, Colorizer, resolve_device
except ImportError as e:  # pragma: no cover - shown by ComfyUI when the pack fails to load
    raise ImportError(
        "the ColorGAN nodes need the colorgan package in ComfyUI's Python environment: "
        "pip install -r requirements.txt in this folder (or pip install the colorgan wheel)"
    ) from e

__all__ = [
    "ColorGANColorize",
    "ColorGANColorizeGuided",
    "NODE_CLASS_MAPPINGS",
    "NODE_DISPLAY_NAME_MAPPINGS",
    "MODELS",
    "device_choices",
    "load_colorizer",
    "clear_cache",
]

#: Shipped models, as ``Colorizer.from_pretrained`` takes them by name.
MODELS: tuple[str, ...] = tuple(SHIPPED)
#: Images handed to ``Colorizer.colorize_batch`` at a time (same-size images share a forward pass).
CHUNK = 4
CATEGORY = "ColorGAN"

_HINTS_FORMAT = '{"points": [{"x": 120, "y": 45, "color": "#a03020"}]}'

#: (weights: shipped name or absolute path, device) -> (file's mtime or None, Colorizer).
_CACHE: dict[tuple[str, str], tuple[int | None, Colorizer]] = {}
_LOCK = threading.Lock()


# ----------------------------------------------------------------------------- models and devices


def device_choices() -> list[str]:
    """The device menu: ``cpu`` (default), ``auto`` (ComfyUI's device), and ``cuda``/``mps`` where available."""
    out = ["cpu", "auto"]
    if torch.cuda.is_available():
        out.append("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        out.append("mps")
    return out


def _device(name: str) -> torch.device:
    if str(name) == "auto":
        try:
            import comfy.model_management as mm  # type: ignore[import-not-found]
        except ImportError:
            return torch.device("cpu")
        return torch.device(mm.get_torch_device())
    return resolve_device(name)  # ValueError: unknown, or CUDA/MPS not on this machine


def _weights_source(model: str, weights_path: str | None) -> str:
    """A shipped model's name, or the absolute path of ``weights_path`` when one is given."""
    path = (weights_path or "").strip().strip("\"'")
    if path:
        return str(Path(os.path.expanduser(path)).resolve())
    if model not in MODELS:
        raise ValueError(f"unknown model {model!r}: choose one of {list(MODELS)}, or give weights_path")
    return model


def _stamp(source: str) -> int | None:
    try:
        return os.stat(source).st_mtime_ns if source not in MODELS else None
    except OSError:
        return None


def load_colorizer(model: str = "default", weights_path: str | None = "", device: str = "cpu") -> Colorizer:
    """The Colorizer for a shipped model (or a weights file) on a device, loaded once and cached.

    A weights file that changed on disk since it was loaded is loaded again.

    Raises:
        ValueError: an unknown model name or device, or a device this machine lacks.
        colorgan.errors.ModelLoadError: a missing or foreign weights file.
    """
    source = _weights_source(model, weights_path)
    dev = _device(device)
    key, stamp = (source, str(dev)), _stamp(source)
    with _LOCK:
        hit = _CACHE.get(key)
        if hit is not None and hit[0] == stamp:
            return hit[1]
        colorizer = Colorizer.from_pretrained(source, device=dev)
        _CACHE[key] = (stamp, colorizer)
        return colorizer


def clear_cache() -> None:
    """Forget every loaded model (they are freed once nothing else holds them)."""
    with _LOCK:
        _CACHE.clear()


# ----------------------------------------------------------------------------- inputs


def _images(image: Any, what: str = "image") -> list[np.ndarray]:
    """A ComfyUI IMAGE as one float32 ``(H, W, 3)`` (or ``(H, W, 1)``) array in [0, 1] per image."""
    if not isinstance(image, torch.Tensor):
        raise ValueError(f"{what}: expected a ComfyUI IMAGE tensor (B, H, W, C), got {type(image).__name__}")
    shape = tuple(image.shape)
    if image.ndim != 4:
        raise ValueError(f"{what}: expected a ComfyUI IMAGE tensor of rank 4 (B, H, W, C), got rank {image.ndim}, shape {shape}")
    b, h, w, c = shape
    if c not in (1, 3, 4):
        raise ValueError(
            f"{what}: expected 3 channels (RGB) in the last dimension (or 4, RGBA, whose alpha is "
            f"ignored), got {c} channels, shape {shape}"
        )
    if b == 0 or h == 0 or w == 0:
        raise ValueError(f"{what}: an empty IMAGE, shape {shape}")
    if not image.is_floating_point():
        raise ValueError(f"{what}: expected float values in [0, 1] (a ComfyUI IMAGE), got dtype {image.dtype}")
    x = image.detach()[..., :3].to("cpu", torch.float32)
    if not bool(torch.isfinite(x).all()):
        raise ValueError(f"{what}: the IMAGE holds NaN or infinite values")
    x = x.clamp(0.0, 1.0)
    return [np.ascontiguousarray(x[i].numpy()) for i in range(b)]


def _hints_data(text: str | None) -> Any | None:
    """The decoded hints JSON, its structure checked; None for an empty string."""
    if text is None or not str(text).strip():
        return None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"hints: not valid JSON ({e.msg} at line {e.lineno}, column {e.colno}); expected {_HINTS_FORMAT}") from None
    try:
        parse_hints(data, source="hints")
    except HintsError as e:
        raise ValueError(str(e)) from None
    return data


def _points(data: Any | None, size: tuple[int, int]) -> list[ColourPoint] | None:
    """The hints' points, checked against an image of ``size = (height, width)``."""
    if data is None:
        return None
    try:
        points = parse_hints(data, source="hints", size=size)
    except HintsError as e:
        raise ValueError(str(e)) from None
    return points or None


def _references(reference: Any | None, n: int) -> list[np.ndarray] | None:
    if reference is None:
        return None
    refs = _images(reference, "reference")
    if len(refs) == 1:
        return refs * n
    if len(refs) != n:
        raise ValueError(f"reference: {len(refs)} images for a batch of {n}; give one reference, or one per image")
    return refs


# ----------------------------------------------------------------------------- running


def _comfy_hooks(total: int) -> tuple[Any, Any]:
    """ComfyUI's progress bar and interrupt check, or stand-ins outside ComfyUI."""
    try:
        import comfy.model_management as mm  # type: ignore[import-not-found]
        import comfy.utils  # type: ignore[import-not-found]
    except ImportError:
        return None, lambda: None
    return comfy.utils.ProgressBar(total), mm.throw_exception_if_processing_interrupted


def colorize_images(
    image: Any,
    *,
    model: str = "default",
    render_size: int = 256,
    device: str = "cpu",
    weights_path: str | None = "",
    hints: str | None = None,
    reference: Any | None = None,
) -> torch.Tensor:
    """Colourise a ComfyUI IMAGE batch; returns float32 ``(B, H, W, 3)`` in [0, 1] on the CPU.

    Args:
        image: ``(B, H, W, 3|4|1)`` float in [0, 1].
        model: a shipped model's name (``default``, ``cic``, ``iizuka``); ignored when
            ``weights_path`` is given.
        render_size: short side the model sees (64-2048).
        device: ``cpu``, ``cuda``, ``mps`` or ``auto``.
        weights_path: a ``.safetensors`` (or exported ``.onnx``) file, or empty.
        hints: colour points as JSON (``{"points": [{"x": .., "y": .., "color": "#rrggbb"}]}``,
            pixels of the image), used for every image of the batch; empty for none.
        reference: a colour reference IMAGE: one for the whole batch, or one per image.

    Raises:
        ValueError: a bad IMAGE (rank, channels, dtype, empty), bad hints (JSON, structure, a
            point outside the image), a reference batch that does not fit, guidance for a model
            that takes none, a bad render size or device.
    """
    images = _images(image)
    data = _hints_data(hints)
    refs = _references(reference, len(images))
    h, w = images[0].shape[:2]
    points = _points(data, (h, w))
    colorizer = load_colorizer(model, weights_path, device)
    if (points or refs) and not colorizer.takes_hints:
        what = "colour hints" if points else "a reference image"
        raise ValueError(f"the model {colorizer.name!r} takes no {what} (it was not trained with guidance); use 'default'")
    progress, check_interrupted = _comfy_hooks(len(images))
    out: list[np.ndarray] = []
    for start in range(0, len(images), CHUNK):
        check_interrupted()
        chunk = images[start : start + CHUNK]
        results = colorizer.colorize_batch(
            chunk,
            render_size=render_size,
            batch_size=CHUNK,
            hints=None if points is None else [points] * len(chunk),
            references=None if refs is None else refs[start : start + CHUNK],
        )
        out.extend(np.clip(r[..., :3], 0.0, 1.0) for r in results)
        if progress is not None:
            progress.update(len(chunk))
    return torch.from_numpy(np.stack(out).astype(np.float32, copy=False))


# ----------------------------------------------------------------------------- nodes


def _common_inputs() -> dict[str, Any]:
    return {
        "image": ("IMAGE", {"tooltip": "Black-and-white (or any) photos; only their luminance is used."}),
        "model": (list(MODELS), {"default": "default", "tooltip": "A model shipped with colorgan (ignored when weights_path is set)."}),
        "render_size": (
            "INT",
            {"default": 256, "min": MIN_RENDER_SIZE, "max": MAX_RENDER_SIZE, "step": 32,
             "tooltip": "Short side the model sees; the colour is joined with the full-size luminance. Trained at 128-256."},
        ),
        "device": (device_choices(), {"default": "cpu", "tooltip": "cpu, cuda, or auto: ComfyUI's device."}),
    }


_WEIGHTS_INPUT = ("STRING", {"default": "", "tooltip": "Optional: a ColorGAN .safetensors (or exported .onnx) file; overrides model."})


class ColorGANColorize:
    """Colourise black-and-white photos automatically."""

    DESCRIPTION = "Colourise black-and-white photos with ColorGAN (the output keeps every pixel's lightness)."
    RETURN_TYPES = ("IMAGE",)
    RETURN_NAMES = ("image",)
    OUTPUT_TOOLTIPS = ("The colour images, same batch and size.",)
    FUNCTION = "colorize"
    CATEGORY = CATEGORY

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": _common_inputs(), "optional": {"weights_path": _WEIGHTS_INPUT}}

    def colorize(
        self, image: torch.Tensor, model: str = "default", render_size: int = 256, device: str = "cpu", weights_path: str = ""
    ) -> tuple[torch.Tensor]:
        return (colorize_images(image, model=model, render_size=render_size, device=device, weights_path=weights_path),)


class ColorGANColorizeGuided:
    """Colourise with colour guidance: colour points (hints JSON) and/or a colour reference image."""

    DESCRIPTION = (
        "Colourise with guidance: colour points as JSON " + _HINTS_FORMAT + " (pixels of the image, origin "
        "top-left; optional radius) and/or a colour reference photo of a similar scene. Needs a model "
        "trained with guidance (the shipped default)."
    )
    RETURN_TYPES = ("IMAGE",)
    RETURN_NAMES = ("image",)
    OUTPUT_TOOLTIPS = ("The colour images, same batch and size.",)
    FUNCTION = "colorize"
    CATEGORY = CATEGORY

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": _common_inputs(),
            "optional": {
                "hints": ("STRING", {"default": "", "multiline": True,
                                     "tooltip": "Colour points for every image of the batch: " + _HINTS_FORMAT}),
                "reference": ("IMAGE", {"tooltip": "A colour photo of a similar scene: one, or one per image."}),
                "weights_path": _WEIGHTS_INPUT,
            },
        }

    def colorize(
        self,
        image: torch.Tensor,
        model: str = "default",
        render_size: int = 256,
        device: str = "cpu",
        hints: str = "",
        reference: torch.Tensor | None = None,
        weights_path: str = "",
    ) -> tuple[torch.Tensor]:
        return (colorize_images(image, model=model, render_size=render_size, device=device, weights_path=weights_path,
                                hints=hints, reference=reference),)


NODE_CLASS_MAPPINGS = {
    "ColorGANColorize": ColorGANColorize,
    "ColorGANColorizeGuided": ColorGANColorizeGuided,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "ColorGANColorize": "ColorGAN Colorize",
    "ColorGANColorizeGuided": "ColorGAN Colorize (points, reference)",
}
