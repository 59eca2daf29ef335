"""The critic: a spectrally normalised patch classifier, real colour photo vs colourised.

It follows DeOldify's ``gan_critic``: strided 4x4 convolutions with LeakyReLU and dropout, one
SAGAN self-attention layer after the first downsampling block, and a final 4x4 convolution that
gives one logit per overlapping patch. Patch logits judge local colour plausibility everywhere in
the image rather than one global yes/no.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn

from colorgan.models._config import config_from_dict
from colorgan.models.layers import SelfAttention, conv_sn

__all__ = ["CriticConfig", "Critic"]


@dataclass(frozen=True)
class CriticConfig:
    """Everything needed to rebuild a critic.

    Attributes:
        in_channels: 3 (normalised Lab: L / 50 - 1, ab / 110).
        channels: width of the first layer; doubles at each downsampling block.
        n_blocks: downsampling blocks after the stem (each halves the size).
        attention: a self-attention layer after the first block.
        dropout: dropout probability inside blocks (the stem uses half).
    """

    in_channels: int = 3
    channels: int = 64
    n_blocks: int = 3
    attention: bool = True
    dropout: float = 0.15

    @classmethod
    def preset(cls, name: str) -> "CriticConfig":
        """``default`` or ``tiny`` (tests)."""
        if name == "default":
            return cls()
        if name == "tiny":
            return cls(channels=16, n_blocks=2)
        raise ValueError(f"unknown critic preset {name!r} (default, tiny)")

    @classmethod
    def from_dict(cls, d: dict) -> "CriticConfig":
        """Inverse of ``dataclasses.asdict`` (JSON turns tuples into lists); unknown keys rejected."""
        return config_from_dict(cls, d)


def _block(in_ch: int, out_ch: int, k: int, stride: int, padding: int | None = None) -> nn.Sequential:
    return nn.Sequential(conv_sn(in_ch, out_ch, k, stride, padding=padding), nn.LeakyReLU(0.2, inplace=True))


class Critic(nn.Module):
    """Patch critic: normalised Lab -> patch logits (positive = looks like a real photo).

    Shapes: ``(B, 3, H, W) -> (B, 1, h, w)`` with ``h = H / 2**(n_blocks + 1) - 3`` (H >= 64
    recommended for the default 3 blocks).
    """

    def __init__(self, config: CriticConfig | None = None) -> None:
        super().__init__()
        self.config = cfg = config or CriticConfig()
        nf = cfg.channels
        layers: list[nn.Module] = [
            _block(cfg.in_channels, nf, 4, 2, padding=1),
            nn.Dropout2d(cfg.dropout / 2),
            _block(nf, nf, 3, 1),
        ]
        for i in range(cfg.n_blocks):
            layers += [_block(nf, nf, 3, 1), nn.Dropout2d(cfg.dropout), _block(nf, nf * 2, 4, 2, padding=1)]
            nf *= 2
            if i == 0 and cfg.attention:
                layers.append(SelfAttention(nf))
        layers += [_block(nf, nf, 3, 1), conv_sn(nf, 1, 4, 1, padding=0, bias=False)]
        self.net = nn.Sequential(*layers)

    def forward(self, lab_norm: torch.Tensor) -> torch.Tensor:
        if lab_norm.dim() != 4 or lab_norm.shape[1] != self.config.in_channels:
            raise ValueError(f"expected (B, {self.config.in_channels}, H, W), got {tuple(lab_norm.shape)}")
        return self.net(lab_norm)
