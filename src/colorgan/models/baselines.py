"""Reference colourisers with the generator's interface, for evaluation reports.

Every model here maps normalised L ``(B, 1, H, W)`` in [-1, 1] to normalised ab ``(B, 2, H, W)``
(``ab / 110``), as :class:`colorgan.models.generator.SAUNet` does, so it runs through
:class:`colorgan.pipeline.Colorizer` and ``colorgan evaluate`` unchanged.

* :class:`GreyModel`: no colour at all (the floor every colouriser must beat on colourfulness).
* :class:`MeanChromaModel`: the training set's mean ab everywhere (the best constant guess
  under an L2 loss; a strong PSNR baseline that shows how much PSNR rewards desaturation).

The published CIC (Zhang et al. 2016) and Iizuka et al. (2016) baselines will be added to this
module later.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence, Union

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from colorgan import color

__all__ = ["GreyModel", "MeanChromaConfig", "MeanChromaModel"]

PathOrPaths = Union[str, os.PathLike, Sequence[Union[str, os.PathLike]]]

#: Images are reduced to at most this many pixels on their long side before their ab is averaged.
_MEAN_MAX_SIDE = 256


class GreyModel(nn.Module):
    """Predicts no colour: ab = 0 everywhere, so the output is the neutral grey of the input's L.

    Its colourfulness is 0 (up to the ~1e-5 rounding of the Lab -> sRGB matrices), and its
    PSNR/SSIM are what "do nothing" scores on a data set. Has no parameters.
    """

    stride = 32

    def forward(self, l_norm: torch.Tensor) -> torch.Tensor:
        """``(B, 1, H, W)`` normalised L -> ``(B, 2, H, W)`` zeros of the same dtype and device."""
        if l_norm.dim() != 4 or l_norm.shape[1] != 1:
            raise ValueError(f"expected L of shape (B, 1, H, W), got {tuple(l_norm.shape)}")
        b, _, h, w = l_norm.shape
        return l_norm.new_zeros((b, 2, h, w))


@dataclass
class MeanChromaConfig:
    """Configuration of :class:`MeanChromaModel`: the constant chroma, in Lab units (about [-110, 110])."""

    mean_a: float = 0.0
    mean_b: float = 0.0

    @classmethod
    def from_dict(cls, d: dict) -> "MeanChromaConfig":
        """Rebuild from :func:`dataclasses.asdict` output (unknown keys are an error)."""
        unknown = set(d) - {"mean_a", "mean_b"}
        if unknown:
            raise ValueError(f"unknown MeanChromaConfig keys: {sorted(unknown)}")
        return cls(**{k: float(v) for k, v in d.items()})

    def to_dict(self) -> dict:
        return asdict(self)


class MeanChromaModel(nn.Module):
    """Predicts one constant ab everywhere: the mean chroma of a set of colour photos.

    The mean ab is held normalised (``ab / 110``) in the buffer ``mean_ab`` of shape ``(2,)``;
    ``config`` holds the same values in Lab units so that :mod:`colorgan.models.hub` can save and
    rebuild the model (``hub_kind = "mean_chroma"``).

    Args:
        config: the chroma to predict; default ``(0, 0)``, i.e. the same as :class:`GreyModel`.

    Build one from photos with :meth:`from_folder`.
    """

    stride = 32
    hub_kind = "mean_chroma"

    def __init__(self, config: MeanChromaConfig | None = None) -> None:
        super().__init__()
        self.config = config = config or MeanChromaConfig()
        ab = torch.tensor([config.mean_a, config.mean_b], dtype=torch.float32)
        self.register_buffer("mean_ab", color.normalize_ab(ab))

    def forward(self, l_norm: torch.Tensor) -> torch.Tensor:
        """``(B, 1, H, W)`` normalised L -> ``(B, 2, H, W)``, ``mean_ab`` at every pixel."""
        if l_norm.dim() != 4 or l_norm.shape[1] != 1:
            raise ValueError(f"expected L of shape (B, 1, H, W), got {tuple(l_norm.shape)}")
        b, _, h, w = l_norm.shape
        ab = self.mean_ab.to(device=l_norm.device, dtype=l_norm.dtype).view(1, 2, 1, 1)
        return ab.expand(b, 2, h, w).clone()

    @classmethod
    def from_folder(cls, folder_or_files: PathOrPaths, n: int = 500, seed: int = 0) -> "MeanChromaModel":
        """Measure the mean ab of colour photos.

        Every image file under the given folders (walked recursively, sorted) or the given files
        is a candidate; when there are more than ``n``, a seeded random sample of ``n`` is used.
        Each is reduced to at most 256 px on its long side (antialiased), converted to Lab, and
        its ab summed over all pixels; the result is the mean over all pixels of all images.
        Greyscale files are skipped (they would pull the mean towards 0); files that fail to
        load are skipped too.

        Args:
            folder_or_files: a folder, a file, or a sequence of them.
            n: at most this many images are read.
            seed: seed of the sample when there are more than ``n`` files.

        Returns:
            The model, with ``config`` holding the mean in Lab units.

        Raises:
            ImageLoadError: a named folder or file does not exist.
            ValueError: ``n`` < 1, or no colour image could be read.
        """
        from colorgan import io as cio
        from colorgan.errors import ImageLoadError

        if n < 1:
            raise ValueError(f"n must be positive, got {n}")
        if isinstance(folder_or_files, (str, os.PathLike)):
            folder_or_files = [folder_or_files]
        files = [f for f, _ in cio.iter_image_files(list(folder_or_files))]
        if len(files) > n:
            pick = np.random.default_rng(seed).choice(len(files), n, replace=False)
            files = [files[i] for i in sorted(pick)]
        total = torch.zeros(2, dtype=torch.float64)
        pixels = 0
        for file in files:
            try:
                loaded = cio.load_image(file)
            except ImageLoadError:
                continue
            if loaded.kind == "grey":
                continue
            rgb = torch.from_numpy(np.ascontiguousarray(loaded.rgb, dtype=np.float32)).permute(2, 0, 1)[None]
            h, w = rgb.shape[-2:]
            scale = _MEAN_MAX_SIDE / max(h, w)
            if scale < 1:
                size = (max(1, round(h * scale)), max(1, round(w * scale)))
                rgb = F.interpolate(rgb, size=size, mode="bilinear", align_corners=False, antialias=True).clamp(0, 1)
            ab = color.rgb_to_lab(rgb)[0, 1:]
            total += ab.double().sum(dim=(1, 2))
            pixels += ab.shape[1] * ab.shape[2]
        if pixels == 0:
            shown = ", ".join(str(Path(p)) for p in folder_or_files)
            raise ValueError(f"no colour images found in {shown} to measure the mean chroma from")
        mean = total / pixels
        return cls(MeanChromaConfig(mean_a=float(mean[0]), mean_b=float(mean[1])))
