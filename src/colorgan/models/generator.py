"""The generator: a self-attention U-Net (SAUNet) that predicts ab from L.

Encoder: an ImageNet-pretrained MobileNetV2 (default) or EfficientNet-lite0, or a small plain
encoder for tests. Decoder: U-Net blocks that upsample with PixelShuffle (ICNR init + blur),
concatenate the encoder's skip features, and refine them with spectrally normalised convolutions;
a SAGAN self-attention layer sits in the decoder at 1/16 resolution (configurable), where global
context (sky on top, skin near faces) is cheap to gather. The head is bounded (tanh) so
predictions stay inside the ab range.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.nn as nn

from colorgan.models.encoders import ENCODERS, build_encoder
from colorgan.models._config import config_from_dict
from colorgan.models.layers import ConvBlock, PixelShuffleICNR, SelfAttention, cat_channels, check_l_input

__all__ = ["GeneratorConfig", "SAUNet"]


@dataclass(frozen=True)
class GeneratorConfig:
    """Everything needed to rebuild a generator (stored in every weights file).

    Attributes:
        encoder: ``mobilenet_v2`` | ``efficientnet_lite0`` | ``efficientnet_lite2`` | ``simple``.
        middle_channels: width of the bottleneck at stride 32.
        decoder_channels: widths of the decoder outputs at strides 16, 8, 4, 2 and 1.
        attention_strides: decoder strides that get a self-attention layer (from 16, 8, 4, 2).
        simple_channels: stage widths of the ``simple`` encoder (ignored otherwise).
        spectral_norm: spectral normalisation on decoder convolutions.
        blur: blur after each PixelShuffle (against checkerboards).
        ab_bound: the head outputs ``ab_bound * tanh(x)`` in normalised ab units (ab / 110).
        guidance: the network also takes colour guidance (:class:`GuidanceBranch`): an ab map
            with a confidence channel at the render size, from colour points a person gives, a
            reference photo or a keyframe. Without guidance the branch adds exactly nothing,
            so a guided network colours automatically as the network it was trained from.
        guidance_channels: width of the guidance branch's small convolutions.
        guided_decoder: (with ``guidance``) the guided path has its own copy of the decoder after
            the bottleneck (U-Net blocks, final upsampling, refinement, head), started from the
            automatic decoder and trained with guidance, so that a few colour points can move
            whole regions; the automatic path keeps the original decoder, so automatic output is
            unchanged bit for bit. Without it the branch's features pass the frozen decoder.
    """

    encoder: str = "mobilenet_v2"
    middle_channels: int = 384
    decoder_channels: tuple[int, ...] = (256, 128, 96, 64, 32)
    attention_strides: tuple[int, ...] = (16,)
    simple_channels: tuple[int, ...] = (16, 24, 32, 48, 64)
    spectral_norm: bool = True
    blur: bool = True
    ab_bound: float = 1.0
    guidance: bool = False
    guidance_channels: int = 32
    guided_decoder: bool = False

    def __post_init__(self) -> None:
        if self.encoder not in ENCODERS:
            raise ValueError(f"unknown encoder {self.encoder!r}; choose one of {ENCODERS}")
        if len(self.decoder_channels) != 5:
            raise ValueError("decoder_channels needs 5 widths (strides 16, 8, 4, 2, 1)")
        bad = [s for s in self.attention_strides if s not in (16, 8, 4, 2)]
        if bad:
            raise ValueError(f"attention_strides must be among 16, 8, 4, 2; got {bad}")
        if self.guided_decoder and not self.guidance:
            raise ValueError("guided_decoder needs guidance=True")

    @classmethod
    def preset(cls, name: str) -> "GeneratorConfig":
        """Named configurations: ``default``, ``efficientnet`` (lite0), ``efficientnet_lite2``, ``wide``
        (1.5x decoder), ``tiny`` (tests, no pretrained weights)."""
        if name == "default":
            return cls()
        if name == "efficientnet":
            return cls(encoder="efficientnet_lite0")
        if name == "efficientnet_lite2":
            return cls(encoder="efficientnet_lite2")
        if name == "wide":
            # The default encoder with a decoder and bottleneck 1.5x as wide.
            return cls(middle_channels=576, decoder_channels=(384, 192, 144, 96, 48))
        if name == "tiny":
            return cls(
                encoder="simple",
                middle_channels=32,
                decoder_channels=(32, 24, 16, 16, 16),
                simple_channels=(8, 16, 16, 24, 32),
            )
        raise ValueError(f"unknown generator preset {name!r} (default, efficientnet, efficientnet_lite2, wide, tiny)")

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
        x = cat_channels([x, self.skip_norm(skip)])
        return self.attn(self.conv2(self.conv1(x)))


#: Decoder strides that guidance features join (the bottleneck, each block's output, full resolution).
GUIDANCE_STRIDES = (32, 16, 8, 4, 2, 1)


class GuidanceBranch(nn.Module):
    """Colour guidance -> features added to the decoder at strides 32, 16, 8, 4, 2 and 1.

    The guidance ``(B, 3, H, W)`` is ``[a / 110, b / 110, confidence]`` at the render size
    (confidence in [0, 1], 0 where nothing is known). At each stride it is pooled with the
    confidence as weight (a hint keeps its colour however small it becomes), passed through two
    bias-free 3x3 convolutions with ReLU and a zero-initialised 1x1 convolution (ControlNet's zero
    convolution): a new branch starts by adding nothing, and no guidance (all zero) adds exactly
    zero at any time, since bias-free convolutions and ReLU map zero to zero.

    Shapes: ``guide (B, 3, H, W) -> {stride: (B, C_stride, H / stride, W / stride)}``.
    """

    def __init__(self, widths: dict[int, int], channels: int = 32) -> None:
        super().__init__()
        self.branches = nn.ModuleDict()
        for stride, width in widths.items():
            zero = nn.Conv2d(channels, width, 1, bias=False)
            nn.init.zeros_(zero.weight)
            self.branches[str(stride)] = nn.Sequential(
                nn.Conv2d(3, channels, 3, padding=1, bias=False), nn.ReLU(inplace=True),
                nn.Conv2d(channels, channels, 3, padding=1, bias=False), nn.ReLU(inplace=True),
                zero,
            )

    @staticmethod
    def pool(guide: torch.Tensor, stride: int) -> torch.Tensor:
        """Confidence-weighted average of the guidance over ``stride x stride`` cells."""
        if stride == 1:
            return guide
        conf = guide[:, 2:3]
        c = nn.functional.avg_pool2d(conf, stride)
        ab = nn.functional.avg_pool2d(guide[:, :2] * conf, stride) / c.clamp_min(1e-6)
        return torch.cat([ab, c], dim=1)

    def forward(self, guide: torch.Tensor) -> dict[int, torch.Tensor]:
        return {int(k): branch(self.pool(guide, int(k))) for k, branch in self.branches.items()}


class SAUNet(nn.Module):
    """Self-attention U-Net generator: normalised L -> normalised ab.

    Args:
        config: the architecture.
        pretrained_encoder: load the encoder's ImageNet weights (offline; raises
            :class:`~colorgan.errors.WeightsNotFoundError` when they are not installed).
        encoder_weights: an explicit path to the encoder's weights file.

    Shapes: ``(B, 1, H, W)`` L / 50 - 1 in [-1, 1] -> ``(B, 2, H, W)`` ab / 110 in
    [-ab_bound, ab_bound]. H and W must be multiples of 32 (the encoder's stride). The chroma
    calibration fitted after training is not part of the network: see
    :mod:`colorgan.models.calibration`.
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
        c32 = self.encoder.channels[-1]
        d16, d8, d4, d2, d1 = config.decoder_channels
        sn, m = config.spectral_norm, config.middle_channels
        self.middle = nn.Sequential(ConvBlock(c32, m, spectral=sn), ConvBlock(m, m, spectral=sn))
        for name, part in self._decoder_parts(config, self.encoder.channels).items():
            setattr(self, name, part)
        # Built last, so that the other layers' initialisation does not depend on it.
        widths = dict(zip(GUIDANCE_STRIDES, (m, d16, d8, d4, d2, d1)))
        self.guidance = GuidanceBranch(widths, config.guidance_channels) if config.guidance else None
        self.guided: nn.ModuleDict | None = None
        if config.guided_decoder:
            self.guided = nn.ModuleDict(self._decoder_parts(config, self.encoder.channels))
            # 0 until the guided decoder has been started from the automatic one (a weights file
            # records it, so a continued guidance stage does not start it again).
            self.register_buffer("guided_ready", torch.zeros(1))

    @staticmethod
    def _decoder_parts(config: GeneratorConfig, enc_channels: tuple[int, ...]) -> dict[str, nn.Module]:
        """The decoder after the bottleneck: U-Net blocks, final upsampling, refinement and head."""
        c2, c4, c8, c16, c32 = enc_channels
        d16, d8, d4, d2, d1 = config.decoder_channels
        sn, blur = config.spectral_norm, config.blur
        m = config.middle_channels
        att = set(config.attention_strides)
        blocks = nn.ModuleList(
            [
                _UnetBlock(m, c16, d16, 16 in att, sn, blur),
                _UnetBlock(d16, c8, d8, 8 in att, sn, blur),
                _UnetBlock(d8, c4, d4, 4 in att, sn, blur),
                _UnetBlock(d4, c2, d2, 2 in att, sn, blur),
            ]
        )
        final_up = PixelShuffleICNR(d2, d1, blur=blur, spectral=sn)
        # The input L joins at full resolution: fine edges for where colour changes.
        refine = nn.Sequential(ConvBlock(d1 + 1, d1, spectral=sn), ConvBlock(d1, d1, spectral=sn))
        head = nn.Conv2d(d1, 2, 1)
        nn.init.zeros_(head.weight)  # start from "no colour": a neutral, stable first output
        nn.init.zeros_(head.bias)
        return {"blocks": blocks, "final_up": final_up, "refine": refine, "head": head}

    @torch.no_grad()
    def start_guided_decoder(self) -> None:
        """Copy the automatic decoder into the guided one (the guidance stage's starting point)."""
        if self.guided is None:
            raise ValueError("this generator has no guided decoder (GeneratorConfig.guided_decoder)")
        for name, part in self.guided.items():
            part.load_state_dict(getattr(self, name).state_dict())
        self.guided_ready.fill_(1.0)

    def encoder_parameters(self) -> list[nn.Parameter]:
        """Parameters of the pretrained encoder (frozen first, then fine-tuned at a lower rate)."""
        return list(self.encoder.parameters())

    def decoder_parameters(self) -> list[nn.Parameter]:
        """Every parameter that is not the encoder's."""
        enc = {id(p) for p in self.encoder.parameters()}
        return [p for p in self.parameters() if id(p) not in enc]

    def guidance_parameters(self) -> list[nn.Parameter]:
        """The guidance branch's parameters (empty without one)."""
        return [] if self.guidance is None else list(self.guidance.parameters())

    def guided_decoder_parameters(self) -> list[nn.Parameter]:
        """The guided decoder's parameters (empty without one)."""
        return [] if self.guided is None else list(self.guided.parameters())

    def forward(self, l_norm: torch.Tensor, guide: torch.Tensor | None = None) -> torch.Tensor:
        """``l_norm (B, 1, H, W) -> ab_norm (B, 2, H, W)``; ``guide`` see :meth:`forward_features`."""
        return self.forward_features(l_norm, guide)[0]

    def forward_features(
        self, l_norm: torch.Tensor, guide: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """The forward pass that also returns the encoder's stride-16 and stride-32 maps,
        ``(ab_norm, (s16, s32))``, which the per-image chroma calibration reads. (A method, not a
        flag of ``forward``: the TorchScript exporter passes every argument positionally.)

        Args:
            l_norm: ``(B, 1, H, W)`` L / 50 - 1.
            guide: ``(B, 3, H, W)`` [a / 110, b / 110, confidence in [0, 1]] at the same size, or
                None (automatic). Only a network built with ``guidance=True`` takes it.
        """
        H, W = check_l_input(l_norm, self.stride)
        given: torch.Tensor | None = None
        if guide is not None:
            if self.guidance is None:
                raise ValueError("this generator takes no colour guidance (it was not trained with it)")
            if guide.shape[0] != l_norm.shape[0] or guide.shape[1] != 3 or guide.shape[-2:] != l_norm.shape[-2:]:
                raise ValueError(f"guidance must be (B, 3, H, W) like L {tuple(l_norm.shape)}, got {tuple(guide.shape)}")
            if self.guided is not None:
                # An image with no guidance at all takes the automatic path (exactly the automatic
                # output); with a separate guided decoder that is a choice per image.
                has = guide[:, 2].flatten(1).amax(1) > 0
                if not bool(has.any()):
                    guide = None
                elif not bool(has.all()):
                    given = has.nonzero().flatten()
        skips = self.encoder(l_norm)  # s2, s4, s8, s16, s32
        x = self.middle(skips[4])
        if given is None:
            ab = self._decode(l_norm, skips, x, guide)
        else:  # a mixed batch: one encoder pass, both decoders
            ab = self._decode(l_norm, skips, x, None)
            ab_g = self._decode(l_norm[given], [s[given] for s in skips], x[given], guide[given])
            ab = ab.index_put((given,), ab_g)
        return ab, (skips[3], skips[4])

    def _decode(
        self, l_norm: torch.Tensor, skips: "tuple[torch.Tensor, ...] | list[torch.Tensor]", x: torch.Tensor, guide: torch.Tensor | None
    ) -> torch.Tensor:
        """The decoder from the bottleneck ``x`` (``middle``'s output) and the encoder's ``skips``:
        the automatic one without ``guide``, else the guidance added and (where there is one) the
        guided decoder."""
        add: dict[int, torch.Tensor] = {} if guide is None else self.guidance(guide.to(l_norm.dtype))
        dec = self.guided if (add and self.guided is not None) else None
        blocks = self.blocks if dec is None else dec["blocks"]
        final_up = self.final_up if dec is None else dec["final_up"]
        refine = self.refine if dec is None else dec["refine"]
        head = self.head if dec is None else dec["head"]
        s2, s4, s8, s16, _ = skips
        if add:
            x = x + add[32]
        for block, skip, stride in zip(blocks, (s16, s8, s4, s2), (16, 8, 4, 2)):
            x = block(x, skip)
            if add:
                x = x + add[stride]
        x = final_up(x)
        if add:
            x = x + add[1]
        x = refine(cat_channels([x, l_norm.to(x.dtype)]))
        return self.config.ab_bound * torch.tanh(head(x))
