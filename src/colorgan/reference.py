"""Reference photos: colour carried from a colour photo of a similar scene to the matching parts of a grey one.

The correspondence is found in the generator's own encoder (He et al. 2018 use VGG-19; our encoder
was trained on grey photos, so it describes the grey target and the reference's luminance alike):
at stride 8, each place of the target attends to the places of the reference whose features are
most similar (cosine similarity, softmax with a temperature), and takes their mean ab. The
confidence of that colour is how similar its best match is, mapped from ``[low, high]`` to [0, 1]:
a part of the photo that matches nothing in the reference gets no colour from it, so an unrelated
reference cannot paint the photo wholesale. The result is dense guidance for the guided
generator (:class:`colorgan.models.generator.GuidanceBranch`), which was trained on such coarse
colour maps with random confidence.

:func:`reinhard_transfer` is the classic global alternative (Reinhard et al. 2001): the automatic
colours shifted and scaled so that their a and b have the reference's mean and spread.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from colorgan import color

__all__ = ["ReferenceConfig", "reference_guidance", "reinhard_transfer"]


@dataclass(frozen=True)
class ReferenceConfig:
    """How a reference's colour is matched.

    Attributes:
        temperature: softmax temperature on cosine similarities (smaller: the best match only).
        low, high: best-match similarity at and below which the confidence is 0, at and above
            which it is 1 (linear in between).
        stride: the feature stride the match is made at (8 or 16).
    """

    temperature: float = 0.02
    low: float = 0.55
    high: float = 0.85
    stride: int = 8


def _features(net: nn.Module, l_norm: torch.Tensor, stride: int) -> torch.Tensor:
    """``(B, C, h/stride, w/stride)`` unit-length features: the encoder's maps at ``stride`` and the
    next coarser one (upsampled), each normalised, then concatenated and normalised again."""
    maps = net.encoder(l_norm)  # strides 2, 4, 8, 16, 32
    i = {8: 2, 16: 3}[stride]
    fine, coarse = maps[i].float(), maps[i + 1].float()
    coarse = F.interpolate(coarse, size=fine.shape[-2:], mode="bilinear", align_corners=False)
    f = torch.cat([F.normalize(fine, dim=1), F.normalize(coarse, dim=1)], dim=1)
    return F.normalize(f, dim=1)


@torch.inference_mode()
def reference_guidance(
    net: nn.Module, l_norm: torch.Tensor, ref_l_norm: torch.Tensor, ref_ab: torch.Tensor, cfg: ReferenceConfig | None = None
) -> torch.Tensor:
    """Dense guidance for a grey photo from a colour reference.

    Args:
        net: the generator (a SAUNet, or a wrapper with ``.net``): its encoder gives the features.
        l_norm: ``(1, 1, h, w)`` the target's L / 50 - 1 at its render shape.
        ref_l_norm: ``(1, 1, h', w')`` the reference's L / 50 - 1 at its render shape.
        ref_ab: ``(1, 2, h', w')`` the reference's ab / 110 at the same shape.
        cfg: the matching settings.

    Returns:
        ``(1, 3, h, w)`` float32 ``[a / 110, b / 110, confidence]`` on ``l_norm``'s device.
    """
    cfg = cfg or ReferenceConfig()
    net = getattr(net, "net", net)
    dtype = next(net.parameters()).dtype
    ft = _features(net, l_norm.to(dtype), cfg.stride)  # (1, C, ht, wt)
    fr = _features(net, ref_l_norm.to(dtype), cfg.stride)  # (1, C, hr, wr)
    ht, wt = ft.shape[-2:]
    abr = F.adaptive_avg_pool2d(ref_ab.float(), fr.shape[-2:]).flatten(2)[0]  # (2, Nr)
    sim = ft.flatten(2)[0].T @ fr.flatten(2)[0]  # (Nt, Nr) cosine similarities
    att = torch.softmax(sim / cfg.temperature, dim=1)
    ab = (att @ abr.T).T.reshape(1, 2, ht, wt)
    best = sim.max(dim=1).values.reshape(1, 1, ht, wt)
    conf = ((best - cfg.low) / max(1e-6, cfg.high - cfg.low)).clamp(0.0, 1.0)
    guide = torch.cat([ab * (conf > 0), conf], dim=1)
    return F.interpolate(guide, size=l_norm.shape[-2:], mode="bilinear", align_corners=False)


def reinhard_transfer(ab: torch.Tensor, ref_ab: torch.Tensor, eps: float = 1e-3) -> torch.Tensor:
    """Reinhard et al. (2001) on the chroma: ``ab`` shifted and scaled per channel to the mean and
    standard deviation of ``ref_ab`` (L is left alone, so the photo's luminance stays).

    Args:
        ab: ``(B, 2, H, W)`` ab to change (the automatic colours).
        ref_ab: ``(B, 2, H', W')`` the reference's ab.
    """
    mu, sd = ab.mean((2, 3), keepdim=True), ab.std((2, 3), keepdim=True)
    mu_r, sd_r = ref_ab.mean((2, 3), keepdim=True), ref_ab.std((2, 3), keepdim=True)
    return (ab - mu) / (sd + eps) * sd_r + mu_r


def reference_lab(rgb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(1, 3, H, W)`` sRGB in [0, 1] -> (L / 50 - 1, ab / 110), each ``(1, 1|2, H, W)``."""
    lab = color.rgb_to_lab(rgb.float())
    return color.normalize_l(lab[:, :1]), color.normalize_ab(lab[:, 1:])
