"""Chroma calibration: a fitted gain on the generator's ab, kept outside the network.

A generator trained to regress colour (L1, a feature loss, a short GAN phase) predicts the
conditional mean where colour is ambiguous, which is less colourful than any one plausible answer,
and paints every photo about equally colourful. Calibration corrects both after training without
touching the network's weights:

* a **global gain** ``g`` on ab, chosen on held-out photos so that the model is as colourful as
  real photos (CIC's annealed-mean temperature is the same kind of knob);
* an optional **per-image gain**: a linear map from the encoder's pooled features of the grey
  photo to a log gain, clamped to ``[-log(max_gain), log(max_gain)]``, fitted by ridge
  regression on training photos (a market scene may be more colourful than a foggy street).

``ab_out = ab_net * exp(clamp(w . features + b)) * g``.

A :class:`ChromaCalibration` is a frozen value stored as JSON in a weights file's metadata
(key ``chroma_calibration``; see :mod:`colorgan.models.hub`), never in the generator's config or
its state dict, so training code never sees it. :class:`CalibratedGenerator` applies it around a
network for inference and export. Fitting it is :mod:`colorgan.calibrate`'s job.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, replace
from typing import Any

import torch
import torch.nn as nn

__all__ = ["ChromaCalibration", "CalibratedGenerator", "gain_features", "near_guidance", "with_calibration", "MAX_GAIN"]

#: The per-image gain's bound: it lies in [1 / MAX_GAIN, MAX_GAIN].
MAX_GAIN = 2.0


def gain_features(s16: torch.Tensor, s32: torch.Tensor) -> torch.Tensor:
    """The per-image gain's input: ``(B, 2 * c32 + c16)`` float32 [mean s32, mean s16, std s32].

    Args:
        s16: ``(B, c16, h, w)`` the encoder's stride-16 map.
        s32: ``(B, c32, h', w')`` its stride-32 map.
    """
    s16, s32 = s16.float(), s32.float()
    m32 = s32.mean((2, 3))
    # The std as sqrt(E[x^2] - E[x]^2): plain reductions, which every ONNX runtime has.
    sd32 = (s32.square().mean((2, 3)) - m32.square()).clamp_min(0.0).sqrt()
    return torch.cat([m32, s16.mean((2, 3)), sd32], dim=1)


@dataclass(frozen=True)
class ChromaCalibration:
    """A fitted chroma gain, global and optionally per image.

    Attributes:
        gain: the global scale on ab (> 0); 1 is none.
        head_weight: weights of the per-image log gain on :func:`gain_features` (empty: no
            per-image gain).
        head_bias: its bias.
        max_gain: the per-image gain's bound.

    The pooled features depend on the scale the encoder sees, so a per-image gain is most
    faithful at the render size it was fitted at (256, the default).
    """

    gain: float = 1.0
    head_weight: tuple[float, ...] = ()
    head_bias: float = 0.0
    max_gain: float = MAX_GAIN

    def __post_init__(self) -> None:
        if not (math.isfinite(self.gain) and self.gain > 0):
            raise ValueError(f"chroma gain must be a positive finite number, got {self.gain}")
        if not (math.isfinite(self.max_gain) and self.max_gain >= 1):
            raise ValueError(f"max_gain must be a finite number >= 1, got {self.max_gain}")
        if not all(math.isfinite(v) for v in (*self.head_weight, self.head_bias)):
            raise ValueError("the per-image gain's weights must be finite")
        object.__setattr__(self, "head_weight", tuple(float(v) for v in self.head_weight))

    @property
    def per_image(self) -> bool:
        """Whether there is a per-image gain."""
        return len(self.head_weight) > 0

    @property
    def is_identity(self) -> bool:
        """True when applying it changes nothing (gain 1, no per-image gain)."""
        return self.gain == 1.0 and not self.per_image

    def with_gain(self, gain: float) -> "ChromaCalibration":
        """The same per-image gain with another global gain."""
        return replace(self, gain=float(gain))

    def to_json(self) -> str:
        """JSON for a weights file's metadata (floats written exactly)."""
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> "ChromaCalibration":
        """Inverse of :meth:`to_json`.

        Raises:
            ValueError: not valid calibration JSON.
        """
        try:
            d: dict[str, Any] = json.loads(text)
        except json.JSONDecodeError as e:
            raise ValueError(f"bad chroma calibration JSON: {e}") from None
        if not isinstance(d, dict):
            raise ValueError("bad chroma calibration JSON: not an object")
        unknown = set(d) - {"gain", "head_weight", "head_bias", "max_gain"}
        if unknown:
            raise ValueError(f"unknown chroma calibration keys: {sorted(unknown)}")
        try:
            return cls(**{k: tuple(v) if k == "head_weight" else float(v) for k, v in d.items()})
        except TypeError as e:
            raise ValueError(f"bad chroma calibration: {e}") from None


class CalibratedGenerator(nn.Module):
    """A generator with its chroma calibration applied: normalised L -> calibrated normalised ab.

    Args:
        net: the network (a :class:`~colorgan.models.generator.SAUNet` for a per-image gain,
            which reads its encoder features through ``forward_features``; any
            ``l_norm -> ab_norm`` module for a global gain).
        calibration: what to apply.

    Shapes: ``(B, 1, H, W)`` L / 50 - 1 -> ``(B, 2, H, W)`` ab / 110, the network's output times
    the per-image gain (float32, in [1 / max_gain, max_gain]) times the global gain.
    """

    def __init__(self, net: nn.Module, calibration: ChromaCalibration) -> None:
        super().__init__()
        self.net = net
        self.calibration = calibration
        self.stride = int(getattr(net, "stride", 32))
        if calibration.per_image:
            if not hasattr(net, "forward_features"):
                raise ValueError(f"a per-image chroma gain needs the generator's encoder features; a {type(net).__name__} has none")
            c16, c32 = net.encoder.channels[3], net.encoder.channels[4]
            if len(calibration.head_weight) != 2 * c32 + c16:
                raise ValueError(
                    f"the calibration's per-image gain has {len(calibration.head_weight)} weights; "
                    f"this network's features have {2 * c32 + c16}"
                )
        # Buffers, so that .to(device) moves them and ONNX export bakes them in.
        self.register_buffer("head_weight", torch.tensor([calibration.head_weight], dtype=torch.float32), persistent=False)
        self.register_buffer("head_bias", torch.tensor([calibration.head_bias], dtype=torch.float32), persistent=False)

    def per_image_gain(self, s16: torch.Tensor, s32: torch.Tensor) -> torch.Tensor:
        """``(B, 1, 1, 1)`` float32 gain in [1 / max_gain, max_gain] from the encoder maps."""
        bound = math.log(self.calibration.max_gain)
        # In float32 whatever the model's dtype (bf16/fp16 inference): a sum over hundreds of
        # pooled features is where half precision would drift.
        z = nn.functional.linear(gain_features(s16, s32), self.head_weight.float(), self.head_bias.float())
        return z.clamp(-bound, bound).exp()[:, :, None, None]

    def forward(self, l_norm: torch.Tensor, guide: torch.Tensor | None = None) -> torch.Tensor:
        """``l_norm (B, 1, H, W)`` -> calibrated ``ab_norm (B, 2, H, W)``; ``guide`` (B, 3, H, W)
        colour guidance for a network that takes it (see :meth:`SAUNet.forward_features`).

        With guidance the gain fades to 1 near what is given (:func:`near_guidance`): a colour a
        person asked for is not rescaled; far from it the calibrated automatic colour stands.
        """
        if guide is None:
            if self.calibration.per_image:
                ab, (s16, s32) = self.net.forward_features(l_norm)
                ab = ab * self.per_image_gain(s16, s32).to(ab.dtype)
            else:
                ab = self.net(l_norm)
            gain = self.calibration.gain
            return ab * gain if gain != 1.0 else ab
        if self.calibration.per_image:
            ab, (s16, s32) = self.net.forward_features(l_norm, guide)
            gain = self.per_image_gain(s16, s32) * self.calibration.gain
        else:
            ab = self.net(l_norm, guide)
            gain = torch.full((ab.shape[0], 1, 1, 1), self.calibration.gain, device=ab.device)
        near = near_guidance(guide[:, 2:3].float())
        return ab * (1.0 + (gain - 1.0) * (1.0 - near)).to(ab.dtype)


def near_guidance(confidence: torch.Tensor) -> torch.Tensor:
    """How near each pixel is to given colour, in [0, 1]: the confidence dilated and then smoothed
    over a square of about 1/8 of the image's short side.

    Args:
        confidence: ``(B, 1, H, W)`` in [0, 1].
    """
    k = 2 * max(1, round(min(confidence.shape[-2:]) / 16)) + 1
    # Both square filters are separable (a maximum of maxima; a mean of means over a window whose
    # clipped height depends on the row only and width on the column only), so they run as a
    # column then a row pass: O(k) per pixel instead of O(k^2) (a guided render at 512 px spent
    # 7 s here with the square kernels, measured).
    pool = nn.functional
    grown = pool.max_pool2d(pool.max_pool2d(confidence, (k, 1), stride=1, padding=(k // 2, 0)), (1, k), stride=1, padding=(0, k // 2))
    cols = pool.avg_pool2d(grown, (k, 1), stride=1, padding=(k // 2, 0), count_include_pad=False)
    return pool.avg_pool2d(cols, (1, k), stride=1, padding=(0, k // 2), count_include_pad=False).clamp(0.0, 1.0)


def with_calibration(net: nn.Module, calibration: ChromaCalibration | None) -> nn.Module:
    """``net`` itself when there is nothing to apply, else a :class:`CalibratedGenerator` around it."""
    if calibration is None or calibration.is_identity:
        return net
    return CalibratedGenerator(net, calibration)
