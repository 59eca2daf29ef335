"""An Iizuka-style colouriser (Iizuka, Simo-Serra and Ishikawa, "Let there be Color!", SIGGRAPH 2016).

What makes it Iizuka's, kept here:

* two paths from shared low-level features: **mid-level (local) features** at stride 8 and a
  **global feature vector** (strided convolutions, then fully connected layers down to 256);
* a **fusion layer** that concatenates the global vector to the local features at every position
  and mixes them with a 1x1 convolution (256 channels);
* a **colourisation network** of convolutions and nearest-neighbour upsampling to half the input
  resolution, with a **sigmoid output regressing chroma**, trained with the **mean squared error**.

What differs, and why (also in docs/MODEL_CARD.md):

* The low-level network is the same ImageNet MobileNetV2 our generator uses (as for the CIC
  baseline: a from-scratch network learns no colour on this budget, and a shared backbone makes
  the comparison about the method). Its stride-16 features join the stride-8 ones on the way
  into the mid-level network, so that the local path sees MobileNetV2's deeper local features.
* Iizuka et al. compute the global path from a copy of the image resized to 224 x 224; here it is
  global average pooling of the stride-32 features, which is equally size-independent and needs
  no second encoder pass.
* Their joint scene-classification loss needs Places labels, which our data lack: it is left out
  (the paper reports it as a small gain).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from colorgan.models._config import config_from_dict
from colorgan.models.encoders import build_encoder
from colorgan.models.layers import check_l_input

__all__ = ["IizukaConfig", "IizukaModel"]


@dataclass(frozen=True)
class IizukaConfig:
    """Everything needed to rebuild an :class:`IizukaModel` (stored in its weights file).

    Attributes:
        encoder: ``mobilenet_v2`` | ``efficientnet_lite0`` | ``simple`` (tests).
        simple_channels: stage widths of the ``simple`` encoder.
        mid_channels: widths of the two mid-level convolutions (paper: 512, 256).
        global_channels: width of the global convolutions and first FC layers (paper: 512).
        fusion_channels: width of the global vector and of the fusion layer (paper: 256).
        colour_channels: widths of the colourisation network (paper: 128, 64, 64, 32).
    """

    encoder: str = "mobilenet_v2"
    simple_channels: tuple[int, ...] = (16, 24, 32, 48, 64)
    mid_channels: tuple[int, ...] = (256, 128)
    global_channels: int = 512
    fusion_channels: int = 256
    colour_channels: tuple[int, ...] = (128, 64, 64, 32)

    @classmethod
    def preset(cls, name: str) -> "IizukaConfig":
        """``default`` (MobileNetV2 encoder) or ``tiny`` (tests: small, no pretrained weights)."""
        if name == "default":
            return cls()
        if name == "tiny":
            return cls(encoder="simple", mid_channels=(32, 16), global_channels=32, fusion_channels=16, colour_channels=(16, 8, 8, 8))
        raise ValueError(f"unknown Iizuka preset {name!r} (default, tiny)")

    @classmethod
    def from_dict(cls, d: dict) -> "IizukaConfig":
        """Inverse of :meth:`to_dict` (unknown keys are an error)."""
        return config_from_dict(cls, d)

    def to_dict(self) -> dict:
        return asdict(self)


def _cbr(in_ch: int, out_ch: int, stride: int = 1) -> nn.Sequential:
    """3x3 conv -> BatchNorm -> ReLU (the paper's layers use batch normalisation)."""
    return nn.Sequential(nn.Conv2d(in_ch, out_ch, 3, stride=stride, padding=1, bias=False), nn.BatchNorm2d(out_ch), nn.ReLU(inplace=True))


class IizukaModel(nn.Module):
    """Global + local feature fusion, chroma regression.

    Args:
        config: the architecture.
        pretrained_encoder: load the encoder's ImageNet weights (offline).

    Shapes: ``(B, 1, H, W)`` L / 50 - 1 -> ``(B, 2, H, W)`` ab / 110 in (-1, 1), H and W multiples
    of 32. ``forward(l_norm, raw=True)`` gives the same at the network's own resolution H/2 x W/2.
    """

    stride = 32
    hub_kind = "iizuka"

    def __init__(self, config: IizukaConfig | None = None, *, pretrained_encoder: bool = False) -> None:
        super().__init__()
        self.config = config = config or IizukaConfig()
        self.encoder = build_encoder(config.encoder, pretrained=pretrained_encoder, simple_channels=config.simple_channels)
        _, _, c8, c16, c32 = self.encoder.channels
        m1, m2 = config.mid_channels
        g, f = config.global_channels, config.fusion_channels
        k1, k2, k3, k4 = config.colour_channels
        self.mid = nn.Sequential(_cbr(c8 + c16, m1), _cbr(m1, m2))
        self.global_conv = nn.Sequential(_cbr(c32, g, stride=2), _cbr(g, g))
        self.global_fc = nn.Sequential(nn.Linear(g, g), nn.ReLU(inplace=True), nn.Linear(g, f), nn.ReLU(inplace=True))
        self.fusion = nn.Sequential(nn.Conv2d(m2 + f, f, 1), nn.ReLU(inplace=True))
        up = nn.Upsample(scale_factor=2, mode="nearest")
        self.colour = nn.Sequential(_cbr(f, k1), up, _cbr(k1, k2), _cbr(k2, k3), nn.Upsample(scale_factor=2, mode="nearest"), _cbr(k3, k4))
        self.out = nn.Conv2d(k4, 2, 3, padding=1)

    def forward(self, l_norm: torch.Tensor, raw: bool = False) -> torch.Tensor:
        H, W = check_l_input(l_norm, self.stride)
        _, _, s8, s16, s32 = self.encoder(l_norm)
        local = self.mid(torch.cat([s8, F.interpolate(s16, size=s8.shape[-2:], mode="bilinear", align_corners=False)], 1))
        glob = self.global_fc(self.global_conv(s32).mean(dim=(2, 3)))
        fused = self.fusion(torch.cat([local, glob[:, :, None, None].expand(-1, -1, *local.shape[-2:])], 1))
        # Sigmoid output in [0, 1] as in the paper, mapped to normalised ab in (-1, 1).
        ab = 2 * torch.sigmoid(self.out(self.colour(fused))) - 1
        if raw:
            return ab
        return self.decode(ab, (H, W))

    def decode(self, raw: torch.Tensor, size: tuple[int, int] | None = None) -> torch.Tensor:
        """``(B, 2, h, w)`` network output -> ``(B, 2, H, W)`` ab / 110, bilinearly upsampled to ``size``."""
        if size is not None and tuple(raw.shape[-2:]) != tuple(size):
            return F.interpolate(raw, size=size, mode="bilinear", align_corners=False)
        return raw

    def loss(self, raw: torch.Tensor, ab_true_norm: torch.Tensor) -> torch.Tensor:
        """Mean squared error of chroma at the network's resolution (the truth averaged down to it).

        Args:
            raw: ``(B, 2, h, w)`` from ``forward(raw=True)``.
            ab_true_norm: ``(B, 2, H, W)`` true ab / 110.
        """
        t = ab_true_norm.float()
        if tuple(t.shape[-2:]) != tuple(raw.shape[-2:]):
            t = F.adaptive_avg_pool2d(t, raw.shape[-2:])
        return F.mse_loss(raw.float(), t)
