"""Colours to suggest for one place of a grey photo, from a colour-distribution model.

Zhang et al. 2017 (*Real-Time User-Guided Image Colorization*) show a person the plausible
colours at the pixel they click, read off a network that predicts a distribution over ab: a
person picking a colour point chooses among the likely ones instead of guessing. Our CIC-style
baseline (:class:`colorgan.models.cic.CICModel`, shipped as ``cic``) predicts exactly such a
distribution over 261 ab bins, so it serves here: its probabilities at the place, bilinearly
interpolated from its stride-4 grid, are pooled over each bin's neighbours (a colour's mass
spreads over adjacent bins), and the strongest pooled modes at least ``min_distance`` apart are
returned, brightest first, each at the photo's own lightness there (so the swatch is the colour
the point will give).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from colorgan import color
from colorgan.hints import rgb_hex

__all__ = ["Suggestion", "colour_suggestions"]


@dataclass(frozen=True)
class Suggestion:
    """A colour for a place: ``color`` as ``#rrggbb`` (sRGB, at the photo's L there) and its
    pooled probability under the model (0-1)."""

    color: str
    probability: float


@torch.inference_mode()
def colour_suggestions(
    model: torch.nn.Module,
    L: torch.Tensor,
    x: int,
    y: int,
    *,
    k: int = 6,
    render_size: int = 256,
    min_probability: float = 0.03,
    min_distance: float = 20.0,
    radius: int = 2,
) -> list[Suggestion]:
    """The likely colours at pixel ``(x, y)`` of a grey photo.

    Args:
        model: a :class:`~colorgan.models.cic.CICModel` (``forward(l, raw=True)`` gives bin
            logits ``(B, Q, H/4, W/4)``; ``bins`` holds the ``(Q, 2)`` bin centres in Lab units).
        L: ``(1, 1, H, W)`` the photo's L in [0, 100] at full resolution.
        x, y: the place, in pixels of the photo (0 <= x < W, 0 <= y < H).
        k: at most this many suggestions.
        render_size: short side the model sees.
        min_probability: pooled modes below this are left out (at least one is always given).
        min_distance: ab distance (Lab units) two suggestions keep at least.
        radius: the lightness of a swatch is L averaged over ``(2 radius + 1)^2`` pixels there.

    Returns:
        Up to ``k`` suggestions, most likely first.

    Raises:
        ValueError: ``(x, y)`` outside the photo, or a model without a colour distribution.
    """
    from colorgan.pipeline import resize_to_render

    if not hasattr(model, "bins"):
        raise ValueError("colour suggestions need a model that predicts a colour distribution (the cic model)")
    H, W = L.shape[-2:]
    if not (0 <= x < W and 0 <= y < H):
        raise ValueError(f"({x}, {y}) is outside the {W}x{H} photo")
    device = next(model.parameters()).device
    small = resize_to_render(L.to(device, torch.float32), render_size, getattr(model, "stride", 32))
    logits = model(color.normalize_l(small.clamp(0, 100)), raw=True).float()
    prob = torch.softmax(logits, dim=1)
    # The place in grid_sample's [-1, 1] coordinates (align_corners=False: pixel centres).
    gx, gy = (2 * x + 1) / W - 1, (2 * y + 1) / H - 1
    grid = torch.tensor([[[[gx, gy]]]], dtype=prob.dtype, device=prob.device)
    p = F.grid_sample(prob, grid, mode="bilinear", align_corners=False).flatten()  # (Q,)
    bins = model.bins.float().to(p.device)
    near = torch.cdist(bins, bins) <= 15.0  # a bin and its 8 neighbours on the 10-unit grid
    pooled = near.float() @ p
    centre = (near.float() * p).div(pooled.clamp_min(1e-12)[:, None]) @ bins  # mass-weighted ab of each pool
    lightness = float(L[0, 0, max(0, y - radius) : y + radius + 1, max(0, x - radius) : x + radius + 1].float().mean())
    picked: list[int] = []
    for q in torch.argsort(pooled, descending=True).tolist():
        if len(picked) >= k or (picked and float(pooled[q]) < min_probability):
            break
        if all(float(torch.dist(centre[q], centre[j])) >= min_distance for j in picked):
            picked.append(q)
    lab = torch.stack([torch.tensor([lightness, float(centre[q, 0]), float(centre[q, 1])]) for q in picked], dim=1)
    rgb = color.lab_to_rgb(lab[:, :, None].double())[:, :, 0]  # (3, n) gamut-clipped at constant L
    return [Suggestion(rgb_hex(rgb[:, i].clamp(0, 1).tolist()), round(float(min(1.0, pooled[q])), 4)) for i, q in enumerate(picked)]
