"""The one inference path: image in -> colour image out.

CLI, Python API, web app, video and evaluation all go through :class:`Colorizer`::

    RGB [0,1] -> L (full res) -> L at render size -> model -> ab (render size)
      -> ab upsampled to full res + original L -> gamut-clipped sRGB

The model only ever sees the render-size image, so its cost does not grow with the photo, and
the output's L is the input's L: every grain and edge of the original survives.

Who runs the network is the model's business: a PyTorch generator (run in channels_last, with
spectral norm folded into plain weights when the Colorizer loads it), or
:class:`colorgan.onnx_backend.OnnxModel` for ONNX Runtime. The stages are public
(:meth:`Colorizer.prepare`, :meth:`Colorizer.predict_ab_batch`, :meth:`Colorizer.merge`) so that
:mod:`colorgan.batch` can run them in different threads with the same results.
"""

from __future__ import annotations

import functools
import logging
import os
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, Sequence, Union

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from colorgan import color
from colorgan.errors import OutOfMemoryError
from colorgan.models.fold import fuse_batchnorm, plain_model
from colorgan.limits import MAX_RENDER_SIZE, MIN_RENDER_SIZE

if TYPE_CHECKING:
    from colorgan.hints import ColourPoint

__all__ = [
    "Colorizer",
    "PreparedImage",
    "render_shape",
    "resize_to_render",
    "resize_guide",
    "is_out_of_memory",
    "resolve_device",
    "MIN_RENDER_SIZE",
    "MAX_RENDER_SIZE",
    "BACKENDS",
    "plain_model",
]

log = logging.getLogger(__name__)

#: Who runs the network: PyTorch, or ONNX Runtime on an exported ``.onnx`` file.
BACKENDS = ("auto", "torch", "onnx")

PILOrArray = Union["PIL.Image.Image", np.ndarray]  # noqa: F821
#: Colour points as colorize takes them: ColourPoints, dicts, a {"points": [...]} object or a JSON file.
HintsLike = Union[Sequence["ColourPoint"], Sequence[dict], dict, str, os.PathLike]  # noqa: F821


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


def resize_to_render(L: torch.Tensor, render_size: int, multiple: int = 32) -> torch.Tensor:
    """L at the render shape the model sees: the one place L is resized for the network.

    Antialiased when shrinking (aliasing in L would become colour noise), bilinear otherwise.
    Idempotent: L already at its render shape comes back unchanged, so a caller (video) may
    resize once and use the result twice (network and optical flow).

    Args:
        L: ``(B, 1, H, W)`` L in [0, 100].
        render_size: target short side (see :func:`render_shape`).
        multiple: the model's total stride.

    Returns:
        ``(B, 1, h, w)`` float32 L on ``L``'s device.
    """
    H, W = L.shape[-2:]
    h, w = render_shape(H, W, render_size, multiple)
    x = L.float()
    if (h, w) != (H, W):
        x = F.interpolate(x, size=(h, w), mode="bilinear", align_corners=False, antialias=h < H)
    return x


def resize_guide(guide: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Colour guidance ``(B, 3, h, w)`` at another render shape, no hint lost when shrinking:
    ab averaged with the confidence as weight, confidence by its maximum over each cell."""
    if tuple(guide.shape[-2:]) == tuple(size):
        return guide
    conf = guide[:, 2:3]
    if size[0] >= guide.shape[-2]:
        return F.interpolate(guide, size=size, mode="nearest")
    c_mean = F.adaptive_avg_pool2d(conf, size)
    ab = F.adaptive_avg_pool2d(guide[:, :2] * conf, size) / c_mean.clamp_min(1e-6)
    return torch.cat([ab, F.adaptive_max_pool2d(conf, size)], dim=1)


def is_out_of_memory(e: BaseException) -> bool:
    """Whether an exception is a device (or host) running out of memory."""
    if isinstance(e, getattr(torch, "OutOfMemoryError", ())):
        return True
    msg = str(e).lower()
    return isinstance(e, RuntimeError) and ("out of memory" in msg or "can't allocate memory" in msg)


@dataclass
class PreparedImage:
    """An image reduced to what colourising it needs.

    Attributes:
        L: ``(1, 1, H, W)`` float32 L in [0, 100] at full resolution, on the colorizer's device.
        alpha: ``(H, W)`` alpha in its original dtype, or None.
        bit_depth: 8 or 16, the precision of the source.
        kind: ``'grey'``, ``'tinted'`` or ``'colour'`` (see :func:`colorgan.io.classify_tone`).
    """

    L: torch.Tensor
    alpha: np.ndarray | None
    bit_depth: int
    kind: str



# Exact L of every 8-bit and 16-bit grey level, computed once by color.rgb_to_l itself.
_L_LUTS: dict[int, np.ndarray] = {}


def _grey_lut(bit_depth: int) -> np.ndarray:
    lut = _L_LUTS.get(bit_depth)
    if lut is None:
        levels = 255 if bit_depth == 8 else 65535
        grey = torch.arange(levels + 1, dtype=torch.float32) / np.float32(levels)
        lut = color.rgb_to_l(grey.view(1, 1, -1).expand(3, 1, -1).contiguous()).view(-1).numpy()
        _L_LUTS[bit_depth] = lut  # a race computes the same table twice: harmless
    return lut


@functools.lru_cache(maxsize=1)
def _linear_lut8() -> np.ndarray:
    """Linear RGB of the 256 8-bit sRGB levels."""
    return color._srgb_to_linear(torch.arange(256, dtype=torch.float32) / np.float32(255.0)).numpy()


def _rgb8_luminance(samples: np.ndarray) -> torch.Tensor:
    """``color.rgb_to_l`` of 8-bit RGB samples ``(H, W, 3)``, the sRGB decoding by table look-up
    (the three pow() per pixel were most of its cost). Returns ``(1, 1, H, W)`` float32 L."""
    lin = torch.from_numpy(_linear_lut8().take(samples)).permute(2, 0, 1)  # (3, H, W) view
    w = color._RGB_TO_XYZ[1]
    y = lin[0] * w[0]
    y.add_(lin[1], alpha=w[1]).add_(lin[2], alpha=w[2])
    return (116.0 * color._f(y) - 16.0)[None, None]


def _grey_luminance(rgb: np.ndarray, bit_depth: int) -> torch.Tensor | None:
    """L of an exactly grey 8/16-bit image by table look-up, or None when it does not apply.

    ``color.rgb_to_l`` costs three pow() per pixel (about 40 ms per megapixel on one core); a
    decoded black-and-white photo has three equal channels holding ``k / 255`` (or ``/ 65535``),
    so its L is a table look-up. The table is made by ``color.rgb_to_l`` itself, so the values
    agree to float rounding (the tests check it). Anything else (colour, tinted, float input
    that is not an exact integer level) returns None and takes the general path.

    Returns:
        ``(1, 1, H, W)`` float32 L in [0, 100] on the CPU, or None.
    """
    if bit_depth not in (8, 16) or rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.float32:
        return None
    ch = rgb[..., 0]
    if not (np.array_equal(ch, rgb[..., 1]) and np.array_equal(ch, rgb[..., 2])):
        return None
    scale = np.float32(255.0 if bit_depth == 8 else 65535.0)
    q = np.rint(ch * scale)
    if q.size == 0 or q.min() < 0 or q.max() > scale or not np.array_equal(q.astype(np.float32) / scale, ch):
        return None
    L = _grey_lut(bit_depth).take(q.astype(np.intp))
    return torch.from_numpy(L)[None, None]


class Colorizer:
    """Colourise images with a generator that maps normalised L to normalised ab.

    Args:
        model: a module with ``forward(l_norm (B,1,h,w) in [-1,1]) -> ab_norm (B,2,h,w)`` and an
            optional ``stride`` attribute (h and w must be multiples of it; default 32): a
            PyTorch generator, or :class:`colorgan.onnx_backend.OnnxModel` for ONNX Runtime.
        device: where to run (``"cpu"``, ``"cuda"``, ``"auto"``...).
        dtype: compute dtype of the model: float32 (default); bfloat16 on CPUs with native bf16
            (about 1.8x faster here, ab within about 2 units of float32) or on GPUs; float16 on
            GPUs. The ONNX backend computes in float32 only.
        name: a label for logs and reports.

    On CPU and CUDA the model runs in the channels_last memory format (measured about 1.25x
    faster on CPU, same results to 1e-4 in ab; see ``benchmarks/speed.py``).
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
        #: True when the network runs in ONNX Runtime (an exported file), not in PyTorch.
        self.is_onnx = hasattr(model, "session")
        if self.is_onnx and dtype != torch.float32:
            raise ValueError("the ONNX backend computes in float32 (bf16 and fp16 are for the PyTorch backend)")
        model = model.to(device=self.device, dtype=dtype).eval()
        # channels_last lets oneDNN (CPU) and cuDNN pick their fastest convolution layouts.
        self._channels_last = not self.is_onnx and self.device.type in ("cpu", "cuda")
        if self._channels_last:
            model = model.to(memory_format=torch.channels_last)
        self.model = model
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
        backend: str = "auto",
        threads: int | None = None,
    ) -> "Colorizer":
        """Load a shipped model by name (``None`` = ``"default"``) or a weights file by path.

        Args:
            name_or_path: a shipped model's name, a ``.safetensors`` weights file, or an
                ``.onnx`` file written by ``colorgan export``.
            device: where to run.
            dtype: compute dtype (see the class).
            backend: ``"torch"``, ``"onnx"``, or ``"auto"`` (default: ONNX Runtime for
                ``.onnx`` files, PyTorch otherwise).
            threads: intra-op threads of the ONNX Runtime session (None: follow
                ``torch.get_num_threads()``); PyTorch's own are set with ``torch.set_num_threads``.

        Raises:
            WeightsNotFoundError: the name is not installed or the path does not exist.
            ModelLoadError: the file is not ColorGAN weights (or a ColorGAN ONNX export), does
                not match its config, or the backend does not fit the file.
            ValueError: an unknown backend.
        """
        from colorgan.errors import ModelLoadError
        from colorgan.models.hub import load_inference_model, resolve_weights

        if backend not in BACKENDS:
            raise ValueError(f"unknown backend {backend!r}; choose one of {BACKENDS}")
        path = resolve_weights(name_or_path)
        is_onnx_file = path.suffix.lower() == ".onnx"
        label = str(name_or_path) if name_or_path is not None else "default"
        if backend == "onnx" or (backend == "auto" and is_onnx_file):
            if not is_onnx_file:
                raise ModelLoadError(
                    f"{path}: the ONNX backend needs an .onnx file; export one with "
                    f"'colorgan export --format onnx --weights {path} -o model.onnx'"
                )
            from colorgan.onnx_backend import OnnxModel

            return cls(OnnxModel(path, threads=threads), device=device, dtype=dtype, name=label)
        if is_onnx_file:
            raise ModelLoadError(f"{path}: an ONNX file needs the ONNX backend (--backend onnx)")
        # The colorizer owns this model, so it runs the folded copy: spectral norm's per-call
        # W / sigma is fixed in eval mode, and recomputing it costs about 2x in bf16 on CPU;
        # eval-mode BatchNorm is folded into the convolutions before it, too.
        # Its chroma calibration, if the file has one, is applied around the network.
        model = fuse_batchnorm(plain_model(load_inference_model(path, device="cpu", dtype=torch.float32)))
        return cls(model, device=device, dtype=dtype, name=label)

    # ------------------------------------------------------------------ tensor core

    @property
    def takes_hints(self) -> bool:
        """Whether the model takes colour guidance (points, a reference): a generator trained with it."""
        net = getattr(self.model, "net", self.model)
        return bool(getattr(getattr(net, "config", None), "guidance", False))

    def _check_guide(self, guide: torch.Tensor | None) -> None:
        if guide is not None and not self.takes_hints:
            raise ValueError(f"the model {self.name!r} takes no colour hints (it was not trained with guidance)")
        if guide is not None and self.is_onnx:
            raise ValueError("the ONNX backend takes no colour hints; use the PyTorch backend")

    @torch.inference_mode()
    def predict_ab(self, L: torch.Tensor, render_size: int = 256, guide: torch.Tensor | None = None) -> torch.Tensor:
        """Predict ab at render resolution.

        Args:
            L: ``(B, 1, H, W)`` L in [0, 100] (any H, W; all images of the batch the same size).
            render_size: short side the model sees (rounded to a multiple of the model's stride).
            guide: ``(B, 3, h, w)`` colour guidance at the render shape (:mod:`colorgan.hints`),
                resized to it if it differs, or None (automatic).

        Returns:
            ``(B, 2, h, w)`` ab in about [-110, 110] at render resolution, float32 on ``L``'s device.
        """
        self._check_guide(guide)
        x = resize_to_render(L.to(self.device, torch.float32), render_size, self.stride)
        x = color.normalize_l(x.clamp(0, 100)).to(self.dtype)
        if self._channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        if guide is None:
            ab = self.model(x)
        else:
            g = resize_guide(guide.to(self.device, torch.float32), tuple(x.shape[-2:])).to(self.dtype)
            if self._channels_last:
                g = g.contiguous(memory_format=torch.channels_last)
            ab = self.model(x, g)
        return color.denormalize_ab(ab.float()).contiguous().to(L.device)

    def predict_ab_safe(self, L: torch.Tensor, render_size: int = 256, guide: torch.Tensor | None = None) -> torch.Tensor:
        """:meth:`predict_ab` with the one out-of-memory policy of every caller (photos, folders, video).

        When the device runs out of memory, a batch is split in halves first (same results,
        less memory); a single image is then retried at half the render size, with a warning,
        down to :data:`MIN_RENDER_SIZE` (never a silent grey image).

        Returns:
            ``(B, 2, h, w)`` ab as :meth:`predict_ab` gives it, at the render size that fitted.

        Raises:
            OutOfMemoryError: one image does not fit even at the smallest render size.
        """
        try:
            return self.predict_ab(L, render_size, guide)
        except Exception as e:  # noqa: BLE001 - only OOM is handled; the rest re-raised
            if not is_out_of_memory(e):
                raise
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
        if L.shape[0] > 1:
            half = L.shape[0] // 2
            g0, g1 = (None, None) if guide is None else (guide[:half], guide[half:])
            parts = [self.predict_ab_safe(L[:half], render_size, g0), self.predict_ab_safe(L[half:], render_size, g1)]
            if parts[0].shape[-2:] != parts[1].shape[-2:]:  # one half fell back to a smaller size
                parts = [F.interpolate(p, size=parts[0].shape[-2:], mode="bilinear", align_corners=False) for p in parts]
            return torch.cat(parts)
        if render_size <= MIN_RENDER_SIZE:
            raise OutOfMemoryError(
                f"out of memory on {self.device} even at render size {render_size}; "
                "try --device cpu or a smaller batch"
            ) from None
        new = max(MIN_RENDER_SIZE, render_size // 2)
        msg = f"out of memory at render size {render_size} on {self.device}; retrying at {new}"
        warnings.warn(msg, RuntimeWarning, stacklevel=2)
        log.warning(msg)
        return self.predict_ab_safe(L, new, guide)

    @torch.inference_mode()
    def colorize_tensor(self, rgb: torch.Tensor, render_size: int = 256, guide: torch.Tensor | None = None) -> torch.Tensor:
        """Colourise a batch given as sRGB (only its luminance is used).

        Args:
            rgb: ``(B, 3, H, W)`` sRGB in [0, 1] (grey, tinted or colour) or ``(B, 1, H, W)`` L in [0, 100].
            render_size: short side the model sees.
            guide: ``(B, 3, h, w)`` colour guidance at the render shape, or None.

        Returns:
            ``(B, 3, H, W)`` float32 sRGB in [0, 1] whose L equals the input's.
        """
        _check_render_size(render_size)
        L = rgb.float() if rgb.shape[1] == 1 else color.rgb_to_l(rgb.float())
        return color.merge_luminance(L, self.predict_ab_safe(L, render_size, guide))

    # ------------------------------------------------------------------ arrays and images

    def prepare(self, image: object) -> PreparedImage:
        """Reduce an image to its full-resolution L (on this colorizer's device) and what the output keeps.

        Args:
            image: a :class:`colorgan.io.LoadedImage`, a PIL image or a numpy array (see
                :meth:`colorize`). Colour input is reduced to its luminance (with a warning, except
                for a LoadedImage, whose caller reports it).

        Returns:
            The prepared image: ``L`` is ``(1, 1, H, W)`` float32 in [0, 100].
        """
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
        # Only a 'grey' image can have three exactly equal channels (classify_tone): colour and
        # tinted ones skip the look-up's full-size equality checks.
        if loaded.levels is not None and loaded.levels.ndim == 2 and loaded.bit_depth in (8, 16):
            L = torch.from_numpy(_grey_lut(loaded.bit_depth).take(loaded.levels))[None, None]
        elif loaded.levels is not None and loaded.bit_depth == 8:
            L = _rgb8_luminance(loaded.levels)
        else:
            L = _grey_luminance(loaded.rgb, loaded.bit_depth) if loaded.kind == "grey" else None
        if L is not None:
            L = L.to(self.device)
        else:
            rgb = torch.from_numpy(np.ascontiguousarray(loaded.rgb, dtype=np.float32)).permute(2, 0, 1)[None]
            L = color.rgb_to_l(rgb.to(self.device))
        return PreparedImage(L=L, alpha=loaded.alpha, bit_depth=loaded.bit_depth, kind=loaded.kind)


    @torch.inference_mode()
    def predict_ab_batch(
        self,
        Ls: Sequence[torch.Tensor],
        render_size: int = 256,
        hints: "Sequence[Sequence[ColourPoint] | None] | None" = None,
        references: "Sequence[torch.Tensor | None] | None" = None,
    ) -> list[torch.Tensor]:
        """Predict ab for several images of any sizes; those with the same render shape share a forward pass.

        Args:
            Ls: each ``(1, 1, H_i, W_i)`` L in [0, 100] at full resolution.
            render_size: short side the model sees (64-2048).
            hints: per image, colour points in its pixels (:class:`colorgan.hints.ColourPoint`)
                or None; images without are colourised automatically.
            references: per image, a colour reference photo ``(1, 3, H', W')`` sRGB in [0, 1]
                (:meth:`prepare_reference`) or None; its colours are carried to the matching
                parts of the image (:mod:`colorgan.reference`); points, where given, win.

        Returns:
            One ``(1, 2, h_i, w_i)`` float32 ab (about [-110, 110]) at render resolution per input,
            in order, on the input's device. A device out of memory lowers the render size with
            a warning (see :meth:`colorize`).
        """
        _check_render_size(render_size)
        out: list[torch.Tensor | None] = [None] * len(Ls)
        groups: dict[tuple[int, int], list[int]] = {}
        for i, L in enumerate(Ls):
            groups.setdefault(render_shape(L.shape[-2], L.shape[-1], render_size, self.stride), []).append(i)
        for (h, w), idx in groups.items():
            small = torch.cat([resize_to_render(Ls[i].to(self.device), render_size, self.stride) for i in idx])
            guide = None
            if (hints is not None and any(hints[i] for i in idx)) or (references is not None and any(references[i] is not None for i in idx)):
                guide = torch.cat([self.guidance(small[j : j + 1], Ls[i], render_size, hints[i] if hints else None,
                                               references[i] if references else None) for j, i in enumerate(idx)])
            ab = self.predict_ab_safe(small, render_size, guide)
            for j, i in enumerate(idx):
                out[i] = ab[j : j + 1].to(Ls[i].device)
        return out  # type: ignore[return-value]

    @torch.inference_mode()
    def merge(self, L: torch.Tensor, ab: torch.Tensor) -> np.ndarray:
        """Join full-resolution L with render-resolution ab into an sRGB image.

        Args:
            L: ``(1, 1, H, W)`` L in [0, 100].
            ab: ``(1, 2, h, w)`` ab in about [-110, 110] (upsampled to ``H, W``).

        Returns:
            ``(H, W, 3)`` float32 sRGB in [0, 1], gamut-clipped at constant L.
        """
        rgb = color.merge_luminance(L, ab.to(L.device))
        return rgb[0].permute(1, 2, 0).cpu().numpy()

    def colorize_array(self, rgb: np.ndarray, render_size: int = 256) -> np.ndarray:
        """Colourise a float image.

        Args:
            rgb: ``(H, W, 3)`` float sRGB in [0, 1] (or ``(H, W)`` grey).
            render_size: short side the model sees.

        Returns:
            ``(H, W, 3)`` float32 sRGB in [0, 1].
        """
        from colorgan import io as cio

        arr = np.asarray(rgb, dtype=np.float32)
        if arr.ndim != 2 and not (arr.ndim == 3 and arr.shape[2] == 3):
            raise ValueError(f"expected an (H, W, 3) or (H, W) array, got shape {arr.shape}")
        # The same path as every other input: prepare (L, grey look-up), predict, merge.
        return self.colorize_loaded(cio.from_array(arr), render_size)

    def colorize_loaded(
        self, loaded: "object", render_size: int = 256, hints: "HintsLike | None" = None, reference: "object | None" = None
    ) -> np.ndarray:
        """Colourise a :class:`colorgan.io.LoadedImage`; returns ``(H, W, 3)`` float32 sRGB in [0, 1]."""
        prep = self.prepare(loaded)
        ref = None if reference is None else [self.prepare_reference(reference)]
        return self._colorize_prepared([prep], render_size, [self._points(hints, prep)], ref)[0]

    def guidance(
        self, small: torch.Tensor, L: torch.Tensor, render_size: int, points: "Sequence[ColourPoint] | None", reference: torch.Tensor | None
    ) -> torch.Tensor:
        """One image's guidance ``(1, 3, h, w)`` at its render shape: the reference's colours, then the points over them.

        Args:
            small: ``(1, 1, h, w)`` its L in [0, 100] at the render shape.
            L: ``(1, 1, H, W)`` its L at full size (the points' pixels are of that size).
            render_size: the render size (the reference is resized to it).
            points: colour points, or None.
            reference: ``(1, 3, H', W')`` a reference photo (:meth:`prepare_reference`), or None.
        """
        from colorgan.hints import rasterize_points

        h, w = small.shape[-2:]
        guide = torch.zeros(1, 3, h, w, device=self.device)
        if reference is not None:
            from colorgan.reference import reference_guidance, reference_lab

            self._check_guide(guide)
            ref = resize_to_render(reference.to(self.device, torch.float32), render_size, self.stride)
            ref_l, ref_ab = reference_lab(ref.clamp(0, 1))
            guide = reference_guidance(self.model, color.normalize_l(small.clamp(0, 100)), ref_l, ref_ab).float()
        if points:
            pts = rasterize_points(points, tuple(L.shape[-2:]), (h, w), device=self.device)
            given = pts[:, 2:3] > 0
            guide = torch.where(given, pts, guide)
        return guide

    def prepare_reference(self, reference: "object") -> torch.Tensor:
        """A colour reference photo (PIL image, array, LoadedImage or file path) as ``(1, 3, H, W)`` sRGB in [0, 1].

        Raises:
            ValueError: the reference is greyscale (it has no colour to give) or the model takes no guidance.
            ImageLoadError: an unreadable file.
        """
        from colorgan import io as cio

        if not self.takes_hints:
            raise ValueError(f"the model {self.name!r} takes no reference photo (it was not trained with guidance)")
        if isinstance(reference, (str, os.PathLike)):
            loaded = cio.load_image(reference)
        elif isinstance(reference, cio.LoadedImage):
            loaded = reference
        elif isinstance(reference, np.ndarray):
            loaded = cio.from_array(reference)
        else:
            loaded = cio.from_pil(reference)  # type: ignore[arg-type]
        if loaded.kind == "grey":
            raise ValueError(f"{loaded.source or 'the reference'}: a greyscale photo has no colour to give as a reference")
        return torch.from_numpy(np.ascontiguousarray(loaded.rgb, dtype=np.float32)).permute(2, 0, 1)[None]

    def _points(self, hints: "HintsLike | None", prep: PreparedImage) -> "list[ColourPoint] | None":
        """Colour points given in any accepted form, checked against the image (None: no hints)."""
        if hints is None:
            return None
        from colorgan.hints import ColourPoint, check_points, load_hints, parse_hints

        size = tuple(prep.L.shape[-2:])
        if isinstance(hints, (str, os.PathLike)):
            points = load_hints(hints, size=size)  # type: ignore[arg-type]
        elif isinstance(hints, (list, tuple)) and all(isinstance(p, ColourPoint) for p in hints):
            points = check_points(hints, size)  # type: ignore[arg-type]
        else:
            points = parse_hints(hints, size=size)  # type: ignore[arg-type]
        if points and not self.takes_hints:
            raise ValueError(f"the model {self.name!r} takes no colour hints (it was not trained with guidance)")
        return points or None

    @torch.inference_mode()
    def _colorize_prepared(
        self, items: list[PreparedImage], render_size: int, hints: "list | None" = None, references: "list | None" = None
    ) -> list[np.ndarray]:
        abs_ = self.predict_ab_batch([it.L for it in items], render_size, hints, references)
        return [self.merge(it.L, ab) for it, ab in zip(items, abs_)]

    def colorize(
        self, image: PILOrArray, render_size: int = 256, hints: "HintsLike | None" = None, reference: "object | None" = None
    ) -> PILOrArray:
        """Colourise one image.

        Args:
            image: a PIL image (any mode) or a numpy array ``(H, W)``, ``(H, W, 1|3|4)``, uint8,
                uint16 or float in [0, 1]. Colour or tinted input is reduced to its luminance.
            render_size: short side the model sees (64-2048; 256 is what the model is trained for).
            hints: colour points for a model that takes them (:attr:`takes_hints`): a list of
                ``{"x": .., "y": .., "color": "#rrggbb", "radius": ..}`` dicts or
                :class:`colorgan.hints.ColourPoint`, a ``{"points": [...]}`` object, or the path
                of a hints JSON file; x and y in pixels of the image as shown.
            reference: a colour photo of a similar scene (PIL image, array or file path): its
                colours are carried to the matching parts of the image; points win where given.

        Raises:
            colorgan.hints.HintsError: a bad point (outside the image, a bad colour...).
            ValueError: hints for a model that takes none.

        Returns:
            The same kind as the input: a PIL image (``RGB``, or ``RGBA`` when the input had
            alpha; 16-bit PIL inputs come back 8-bit, since PIL holds no 16-bit RGB), or an array
            ``(H, W, 3|4)`` of the input's dtype (uint8, uint16, or float32 in [0, 1]).
        """
        return self.colorize_batch([image], render_size=render_size, hints=None if hints is None else [hints],
                                   references=None if reference is None else [reference])[0]

    def colorize_batch(
        self,
        images: Sequence[PILOrArray],
        render_size: int = 256,
        batch_size: int = 8,
        hints: "Sequence[HintsLike | None] | None" = None,
        references: "Sequence[object | None] | None" = None,
    ) -> list[PILOrArray]:
        """Colourise several images; those with the same render shape share forward passes.

        Args:
            images: PIL images and/or numpy arrays (see :meth:`colorize`).
            render_size: short side the model sees.
            batch_size: images prepared and run together (bounds memory).
            hints: per image, its colour points (see :meth:`colorize`) or None.
            references: per image, its colour reference photo (see :meth:`colorize`) or None.

        Returns:
            One result per input, in order, each of the input's kind.
        """
        results: list[PILOrArray] = []
        for start in range(0, len(images), max(1, batch_size)):
            chunk = list(images[start : start + batch_size])
            prepared = [self.prepare(im) for im in chunk]
            points = None if hints is None else [self._points(h, p) for h, p in zip(hints[start : start + batch_size], prepared)]
            refs = None if references is None else [None if r is None else self.prepare_reference(r) for r in references[start : start + batch_size]]
            rgbs = self._colorize_prepared(prepared, render_size, points, refs)
            for im, prep, rgb in zip(chunk, prepared, rgbs):
                results.append(_to_output(im, prep, rgb))
        return results


def _check_render_size(render_size: int) -> None:
    if not isinstance(render_size, (int, np.integer)) or not MIN_RENDER_SIZE <= render_size <= MAX_RENDER_SIZE:
        raise ValueError(f"render_size must be an integer in [{MIN_RENDER_SIZE}, {MAX_RENDER_SIZE}], got {render_size!r}")


def _to_output(original: object, prep: PreparedImage, rgb: np.ndarray) -> PILOrArray:
    """Convert the float result back to the caller's kind, alpha re-attached unchanged."""
    from colorgan.io import _quantise  # the image writer's rounding

    alpha = prep.alpha
    if isinstance(original, np.ndarray):
        if original.dtype == np.uint16:
            out = _quantise(rgb, 16)
            a = None if alpha is None else _alpha_to(alpha, np.uint16)
        elif original.dtype == np.uint8 or original.dtype == np.bool_:
            out = _quantise(rgb, 8)
            a = None if alpha is None else _alpha_to(alpha, np.uint8)
        else:
            out = rgb.astype(np.float32)
            a = None if alpha is None else _alpha_to(alpha, np.float32)
        return out if a is None else np.concatenate([out, a[..., None]], axis=2)
    from PIL import Image

    out8 = _quantise(rgb, 8)
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

