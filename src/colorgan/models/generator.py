"""The generator: a self-attention U-Net (SAUNet) that predicts ab from L.

Encoder: an ImageNet-pretrained MobileNetV2 (default) or EfficientNet-lite0, or a small plain
encoder for tests. Decoder: U-Net blocks that upsample with PixelShuffle (ICNR init + blur),
concatenate the encoder's skip features, and refine them with spectrally normalised convolutions;
a SAGAN self-attention layer sits in the decoder at 1/16 resolution (configurable), where global
context (sky on top, skin near faces) is cheap to gather. The head is bounded (tanh) so
predictions stay inside the ab range.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import torch
import torch.nn as nn

from colorgan.models.encoders import ENCODERS, build_encoder
from colorgan.models._config import config_from_dict
from colorgan.models.layers import ConvBlock, PixelShuffleICNR, SelfAttention, check_l_input

__all__ = ["ChromaGainHead", "GeneratorConfig", "SAUNet"]


@dataclass(frozen=True)
class GeneratorConfig:
    """Everything needed to rebuild a generator (stored in every weights file).

    Attributes:
        encoder: ``mobilenet_v2`` | ``efficientnet_lite0`` | ``simple``.
        middle_channels: width of the bottleneck at stride 32.
        decoder_channels: widths of the decoder outputs at strides 16, 8, 4, 2 and 1.
        attention_strides: decoder strides that get a self-attention layer (from 16, 8, 4, 2).
        simple_channels: stage widths of the ``simple`` encoder (ignored otherwise).
        spectral_norm: spectral normalisation on decoder convolutions.
        blur: blur after each PixelShuffle (against checkerboards).
        ab_bound: the head outputs ``ab_bound * tanh(x)`` in normalised ab units (ab / 110).
        chroma_gain: a fixed scale on the predicted ab, set after training by calibration on
            held-out photos (``python -m colorgan.eval.calibrate``) so that the model is as
            colourful as real photos on average; 1 during training. Regression toward the mean
            leaves every L1-trained colouriser desaturated; CIC's annealed-mean temperature is
            the same kind of calibrated knob.
        adaptive_gain: a per-image chroma gain from the encoder's global features
            (:class:`ChromaGainHead`), fitted after training by ridge regression
            (``python -m colorgan.eval.calibrate --adaptive``): a regression generator paints
            every photo about equally colourful, and this lets a market scene be more colourful
            than a foggy street. Multiplies with ``chroma_gain``.
    """

    encoder: str = "mobilenet_v2"
    middle_channels: int = 384
    decoder_channels: tuple[int, ...] = (256, 128, 96, 64, 32)
    attention_strides: tuple[int, ...] = (16,)
    simple_channels: tuple[int, ...] = (16, 24, 32, 48, 64)
    spectral_norm: bool = True
    blur: bool = True
    ab_bound: float = 1.0
    chroma_gain: float = 1.0
    adaptive_gain: bool = False

    def __post_init__(self) -> None:
        if self.encoder not in ENCODERS:
            raise ValueError(f"unknown encoder {self.encoder!r}; choose one of {ENCODERS}")
        if len(self.decoder_channels) != 5:
            raise ValueError("decoder_channels needs 5 widths (strides 16, 8, 4, 2, 1)")
        bad = [s for s in self.attention_strides if s not in (16, 8, 4, 2)]
        if bad:
            raise ValueError(f"attention_strides must be among 16, 8, 4, 2; got {bad}")

    @classmethod
    def preset(cls, name: str) -> "GeneratorConfig":
        """Named configurations: ``default``, ``efficientnet``, ``tiny`` (tests, no pretrained weights)."""
        if name == "default":
            return cls()
        if name == "efficientnet":
            return cls(encoder="efficientnet_lite0")
        if name == "tiny":
            return cls(
                encoder="simple",
                middle_channels=32,
                decoder_channels=(32, 24, 16, 16, 16),
                simple_channels=(8, 16, 16, 24, 32),
            )
        raise ValueError(f"unknown generator preset {name!r} (default, efficientnet, tiny)")

    @classmethod
    def from_dict(cls, d: dict) -> "GeneratorConfig":
        """Inverse of ``dataclasses.asdict`` (JSON turns tuples into lists); unknown keys rejected."""
        return config_from_dict(cls, d)


class _UnetBlock(nn.Module):
    """Upsample x2, join the encoder skip, two 3x3 convs, optional self-attention.

    Shapes: ``x (B, in_ch, h, w), skip (B, skip_ch, 2h, 2w) -> (B, out_ch, 2h, 2w)``.
    """

    def __init__(self, in_ch: int, skip_ch: int, out_ch: int, attention: bool, sn: bool, blur: bool) -> None:
        super().__init__()
        up_ch = max(in_ch // 2, 8)
        self.up = PixelShuffleICNR(in_ch, up_ch, blur=blur, spectral=sn)
        self.skip_norm = nn.BatchNorm2d(skip_ch)
        self.conv1 = ConvBlock(up_ch + skip_ch, out_ch, spectral=sn)
        self.conv2 = ConvBlock(out_ch, out_ch, spectral=sn)
        self.attn = SelfAttention(out_ch, spectral=sn) if attention else nn.Identity()

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        x = self.up(x)
        if x.shape[-2:] != skip.shape[-2:]:  # odd sizes: align to the skip
            x = nn.functional.interpolate(x, size=skip.shape[-2:], mode="nearest")
        x = torch.cat([x, self.skip_norm(skip)], dim=1)
        return self.attn(self.conv2(self.conv1(x)))


class ChromaGainHead(nn.Module):
    """A per-image chroma gain predicted from the encoder's global features.

    Features: the spatial means of the stride-32 and stride-16 encoder maps and the spatial
    standard deviation of the stride-32 map; a linear layer maps them to a log gain, clamped to
    [-log(max_gain), log(max_gain)]. Zero-initialised: gain 1, the plain network.

    Shapes: ``s16 (B, c16, h, w), s32 (B, c32, h', w') -> (B, 1, 1, 1)`` float32 gain in
    [1 / max_gain, max_gain].

    The pooled features depend on the scale the encoder sees, so the head is fitted at one
    render size (256, the default and recommended one) and is most faithful there.
    """

    max_gain = 2.0

    def __init__(self, c16: int, c32: int) -> None:
        super().__init__()
        self.linear = nn.Linear(2 * c32 + c16, 1)
        nn.init.zeros_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)

    @staticmethod
    def features(s16: torch.Tensor, s32: torch.Tensor) -> torch.Tensor:
        """``(B, 2 * c32 + c16)`` float32: [mean s32, mean s16, std s32] over space."""
        s16, s32 = s16.float(), s32.float()
        m32 = s32.mean((2, 3))
        # The std as sqrt(E[x^2] - E[x]^2): plain reductions, which every ONNX runtime has.
        sd32 = (s32.square().mean((2, 3)) - m32.square()).clamp_min(0.0).sqrt()
        return torch.cat([m32, s16.mean((2, 3)), sd32], dim=1)

    def forward(self, s16: torch.Tensor, s32: torch.Tensor) -> torch.Tensor:
        bound = math.log(self.max_gain)
        # In float32 whatever the model's dtype (bf16/fp16 inference): 737 weights cost nothing,
        # and a sum over hundreds of pooled features is where half precision would drift.
        w, b = self.linear.weight.float(), self.linear.bias.float()
        z = nn.functional.linear(self.features(s16, s32), w, b).clamp(-bound, bound)
        return z.exp()[:, :, None, None]


class SAUNet(nn.Module):
    """Self-attention U-Net generator: normalised L -> normalised ab.

    Args:
        config: the architecture.
        pretrained_encoder: load the encoder's ImageNet weights (offline; raises
            :class:`~colorgan.errors.WeightsNotFoundError` when they are not installed).
        encoder_weights: an explicit path to the encoder's weights file.

    Shapes: ``(B, 1, H, W)`` L / 50 - 1 in [-1, 1] -> ``(B, 2, H, W)`` ab / 110 in
    [-ab_bound, ab_bound], times the per-image gain of the gain head when there is one (0.5-2),
    times ``chroma_gain``. H and W must be multiples of 32 (the encoder's stride).
    """

    stride = 32

    def __init__(
        self,
        config: GeneratorConfig | None = None,
        *,
        pretrained_encoder: bool = False,
        encoder_weights: str | os.PathLike | None = None,
    ) -> None:
        super().__init__()
        self.config = config = config or GeneratorConfig()
        self.encoder = build_encoder(
            config.encoder,
            pretrained=pretrained_encoder,
            weights_path=encoder_weights,
            simple_channels=config.simple_channels,
        )
        c2, c4, c8, c16, c32 = self.encoder.channels
        d16, d8, d4, d2, d1 = config.decoder_channels
        sn, blur = config.spectral_norm, config.blur
        m = config.middle_channels
        self.middle = nn.Sequential(ConvBlock(c32, m, spectral=sn), ConvBlock(m, m, spectral=sn))
        att = set(config.attention_strides)
        self.blocks = nn.ModuleList(
            [
                _UnetBlock(m, c16, d16, 16 in att, sn, blur),
                _UnetBlock(d16, c8, d8, 8 in att, sn, blur),
                _UnetBlock(d8, c4, d4, 4 in att, sn, blur),
                _UnetBlock(d4, c2, d2, 2 in att, sn, blur),
            ]
        )
        self.final_up = PixelShuffleICNR(d2, d1, blur=blur, spectral=sn)
        # The input L joins at full resolution: fine edges for where colour changes.
        self.refine = nn.Sequential(ConvBlock(d1 + 1, d1, spectral=sn), ConvBlock(d1, d1, spectral=sn))
        self.head = nn.Conv2d(d1, 2, 1)
        nn.init.zeros_(self.head.weight)  # start from "no colour": a neutral, stable first output
        nn.init.zeros_(self.head.bias)
        self.gain_head = ChromaGainHead(c16, c32) if config.adaptive_gain else None

    def encoder_parameters(self) -> list[nn.Parameter]:
        """Parameters of the pretrained encoder (frozen first, then fine-tuned at a lower rate)."""
        return list(self.encoder.parameters())

    def decoder_parameters(self) -> list[nn.Parameter]:
        """Every parameter that is not the encoder's."""
        enc = {id(p) for p in self.encoder.parameters()}
        return [p for p in self.parameters() if id(p) not in enc]

    def forward(self, l_norm: torch.Tensor) -> torch.Tensor:
        H, W = check_l_input(l_norm, self.stride)
        s2, s4, s8, s16, s32 = self.encoder(l_norm)
        x = self.middle(s32)
        for block, skip in zip(self.blocks, (s16, s8, s4, s2)):
            x = block(x, skip)
        x = self.final_up(x)
        x = self.refine(torch.cat([x, l_norm.to(x.dtype)], dim=1))
        ab = self.config.ab_bound * torch.tanh(self.head(x))
        if self.gain_head is not None:
            ab = ab * self.gain_head(s16, s32).to(ab.dtype)
        return ab * self.config.chroma_gain if self.config.chroma_gain != 1.0 else ab
