"""The colourisers people actually use, rebuilt for timing only, beside ColorGAN, on one photo.

Users who colourise old photos choose between DeOldify and DDColor. This benchmark rebuilds their
networks layer for layer from the published code, with random weights, and times each one end to
end as its own inference code runs it on one photo, next to ``colorgan.pipeline.Colorizer.colorize``
on the same photo. Nothing is downloaded: the cost of a forward pass does not depend on the
weights, and the peers' colours are meaningless. The weights are PyTorch's default initialisation,
with two changes that keep the activations of a random network in a trained one's range at no
cost: every spectral norm's power iteration is run to convergence first (a checkpoint stores
converged ``u`` and ``v``; fresh ones make ``W / sigma`` blow up), and the last batch norm of each
ResNet block scales by 0.2.

The peers and where each piece comes from (read from the public repositories):

* **DeOldify artistic** (``jantic/DeOldify``): ``deoldify/generators.py`` (``gen_inference_deep``:
  ResNet-34 body, ``nf_factor=1.5``, blur, spectral norm, self-attention, ``y_range=(-3, 3)``),
  ``deoldify/unet.py`` (``DynamicUnetDeep``, ``UnetBlockDeep``, ``CustomPixelShuffle_ICNR``),
  ``deoldify/layers.py`` (``custom_conv_layer`` with ``extra_bn``), and fastai v1's
  ``fastai/layers.py`` (``SelfAttention``, ``PixelShuffle_ICNR``, ``res_block``, ``MergeLayer``,
  ``SigmoidRange``, ``batchnorm_2d``; DeOldify pins fastai 1.0.51). Input: render factor 35 x
  ``render_base`` 16 = a 560 x 560 square (``deoldify/visualize.py``,
  ``get_artistic_image_colorizer``; ``deoldify/filters.py``, ``ColorizerFilter``).
* **DeOldify stable**: the same files; ``gen_inference_wide``: ResNet-101 body, ``DynamicUnetWide``
  (``UnetBlockWide``, decoder width ``512 * nf_factor``, ``nf_factor=2``), render factor 35 (560 px,
  ``get_stable_image_colorizer``).
* **DDColor tiny / large** (``piddnad/DDColor``): ``basicsr/archs/ddcolor_arch.py`` (``DDColor``,
  ``Decoder`` = the pixel decoder, ``MultiScaleColorDecoder`` = the colour decoder with its
  learnable queries), ``basicsr/archs/ddcolor_arch_utils/convnext.py`` (the ConvNeXt encoder with
  its four extra output norms), ``.../unet.py`` (``UnetBlockWide``, ``CustomPixelShuffle_ICNR``,
  ``custom_conv_layer``), ``.../transformer_utils.py`` (``SelfAttentionLayer``,
  ``CrossAttentionLayer``, ``FFNLayer``, ``MLP``) and ``.../position_encoding.py``
  (``PositionEmbeddingSine``); configuration and pre/post-processing from
  ``inference/colorization_pipeline.py`` and ``ddcolor/pipeline.py`` (``num_queries=100``,
  ``num_scales=3``, ``dec_layers=9``, ``last_norm='Spectral'``, two output channels, 512 px input).
* The encoders, which torchvision would normally supply (it does not import beside this CPU build
  of torch), are rebuilt from ``pytorch/vision`` ``torchvision/models/resnet.py`` (ResNet-34 and
  ResNet-101 as fastai's ``create_body`` cuts them: everything before the pooling and the
  classifier) and DDColor's ConvNeXt file above (Meta's ConvNeXt, as its header says).

Parameter counts are checked against published figures: the totals in the DDColor paper (Kang et
al., ICCV 2023, arXiv:2212.11613, its comparison table: DeOldify 63.6 M, DDColor-tiny 55.0 M,
DDColor 227.9 M; DeOldify-stable's total is not published anywhere we found), and each encoder
against torchvision's ``num_params`` for the ImageNet classifier it is cut from (ResNet-34
21,797,672; ResNet-101 44,549,160; ConvNeXt-T 28,589,128; ConvNeXt-L 197,767,336; in
``torchvision/models/resnet.py`` and ``convnext.py``), less its classifier.

End to end means what each project's inference code does for one decoded photo:

* DeOldify (``deoldify/filters.py``): PIL bilinear stretch to the square, ``convert('LA')`` and back
  to RGB, ImageNet normalisation, the network, denormalisation, uint8, PIL bilinear resize back to
  the photo's size, and the merge in YUV with OpenCV: the photo's Y, the prediction's U and V.
* DDColor (``ddcolor/pipeline.py``): float BGR, the photo's L (OpenCV Lab), OpenCV resize to the
  square, its L as grey RGB, the network (ab at 512), ``F.interpolate`` of ab to the photo's size
  (nearest, the default), the merge with the original L and OpenCV Lab -> BGR, uint8.
* ColorGAN: ``Colorizer.from_pretrained("default").colorize(photo)`` (render size 256).

Decoding the file is not timed for anyone: each starts from the decoded photo in the form its code
receives it (a PIL RGB image for DeOldify, a BGR uint8 array as ``cv2.imread`` gives for DDColor,
the PIL image for ColorGAN). Each model runs in its own process (peak memory is that process's
peak RSS, or peak CUDA memory on a GPU); network-only and end-to-end runs alternate after the
warm-up, and the medians are reported. torch and OpenCV get ``--threads`` threads each.

    python benchmarks/peers.py                      # the full table (several minutes on 2 cores)
    python benchmarks/peers.py --quick              # smoke run: tiny inputs, one repetition
    python benchmarks/peers.py --only ddcolor-tiny --repeats 3 --json peers.json

Numbers are printed, never asserted: they depend on the machine and on what else runs on it.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from enum import Enum
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image, ImageOps

sys.path.insert(0, str(Path(__file__).resolve().parent))  # common.py beside this file

from common import peak_rss_mb  # noqa: E402

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
DEFAULT_PHOTO = EXAMPLES / "buffalo-bank-1908.jpg"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
OURS = "colorgan"

# ============================================================================ fastai v1 layers


class NormType(Enum):
    """fastai's ``NormType`` (``fastai/layers.py``)."""

    Batch = 1
    BatchZero = 2
    Weight = 3
    Spectral = 4


def _normed(conv: nn.Module, norm_type: NormType | None) -> nn.Module:
    """Wrap ``conv`` in weight or spectral normalisation as fastai does (the per-call W / sigma or
    g * v / |v| is part of the cost: these repositories run the wrapped layers at inference)."""
    if norm_type == NormType.Weight:
        return nn.utils.parametrizations.weight_norm(conv)
    if norm_type == NormType.Spectral:
        return nn.utils.spectral_norm(conv)
    return conv


def custom_conv_layer(
    ni: int,
    nf: int,
    ks: int = 3,
    stride: int = 1,
    norm_type: NormType | None = NormType.Batch,
    use_activ: bool = True,
    self_attention: bool = False,
    extra_bn: bool = False,
    is_1d: bool = False,
) -> nn.Sequential:
    """DeOldify's ``custom_conv_layer`` (``deoldify/layers.py``; DDColor's copy in
    ``ddcolor_arch_utils/unet.py`` is the same): conv (bias only without batch norm), ReLU, batch
    norm when ``norm_type`` is a batch norm or ``extra_bn``, then optional self-attention.

    fastai's plain ``conv_layer`` is this with ``extra_bn=False``.
    """
    bn = norm_type in (NormType.Batch, NormType.BatchZero) or extra_bn
    conv_cls = nn.Conv1d if is_1d else nn.Conv2d
    conv = conv_cls(ni, nf, kernel_size=ks, stride=stride, padding=(ks - 1) // 2, bias=not bn)
    layers: list[nn.Module] = [_normed(conv, norm_type)]
    if use_activ:
        layers.append(nn.ReLU(True))
    if bn:
        layers.append((nn.BatchNorm1d if is_1d else nn.BatchNorm2d)(nf))
    if self_attention:
        layers.append(SelfAttention(nf))
    return nn.Sequential(*layers)


def batchnorm_2d(nf: int) -> nn.BatchNorm2d:
    """fastai's ``batchnorm_2d``: a BatchNorm2d with bias 1e-3."""
    bn = nn.BatchNorm2d(nf)
    with torch.no_grad():
        bn.bias.fill_(1e-3)
    return bn


def _sn_conv1d(ni: int, no: int) -> nn.Module:
    """fastai's ``conv1d``: a 1x1 Conv1d without bias, spectrally normalised."""
    return nn.utils.spectral_norm(nn.Conv1d(ni, no, 1, bias=False))


class SelfAttention(nn.Module):
    """fastai v1's ``SelfAttention`` (SAGAN): full attention over all ``H * W`` positions."""

    def __init__(self, n_channels: int) -> None:
        super().__init__()
        self.query = _sn_conv1d(n_channels, n_channels // 8)
        self.key = _sn_conv1d(n_channels, n_channels // 8)
        self.value = _sn_conv1d(n_channels, n_channels)
        self.gamma = nn.Parameter(torch.tensor([0.0]))  # as fastai initialises it; the cost is the same

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.size()
        x = x.view(*size[:2], -1)
        f, g, h = self.query(x), self.key(x), self.value(x)
        beta = F.softmax(torch.bmm(f.permute(0, 2, 1).contiguous(), g), dim=1)
        o = self.gamma * torch.bmm(h, beta) + x
        return o.view(*size).contiguous()


class PixelShuffleICNR(nn.Module):
    """DeOldify's ``CustomPixelShuffle_ICNR`` / fastai's ``PixelShuffle_ICNR`` (and DDColor's copy):
    1x1 conv to ``nf * scale**2``, ReLU, pixel shuffle, then the blur (replication pad + 2x2 average
    pool, stride 1).

    In fastai 1.0.51 and DeOldify the blur runs whatever the ``blur`` argument (``forward`` tests
    the ``self.blur`` module, which is always truthy); DDColor's copy honours ``blur`` (its
    ``do_blur``), and DDColor passes ``blur=True``. So every instance here blurs when ``blur``.
    """

    def __init__(self, ni: int, nf: int, scale: int = 2, blur: bool = True,
                 norm_type: NormType | None = NormType.Weight, extra_bn: bool = False) -> None:
        super().__init__()
        self.conv = custom_conv_layer(ni, nf * scale**2, ks=1, use_activ=False, norm_type=norm_type, extra_bn=extra_bn)
        self.shuf = nn.PixelShuffle(scale)
        self.do_blur = blur
        self.pad = nn.ReplicationPad2d((1, 0, 1, 0))
        self.blur = nn.AvgPool2d(2, stride=1)
        self.relu = nn.ReLU(True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.shuf(self.relu(self.conv(x)))
        return self.blur(self.pad(x)) if self.do_blur else x


class ResBlock(nn.Module):
    """fastai's ``res_block(nf, norm_type=Spectral)``: two spectrally normalised 3x3 conv + ReLU
    layers (bias, no batch norm) and the identity added (``MergeLayer(dense=False)``)."""

    def __init__(self, nf: int, norm_type: NormType = NormType.Spectral) -> None:
        super().__init__()
        self.convs = nn.Sequential(custom_conv_layer(nf, nf, norm_type=norm_type),
                                   custom_conv_layer(nf, nf, norm_type=norm_type))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.convs(x)


# ============================================================================ ResNet (torchvision)


class BasicBlock(nn.Module):
    """torchvision's ResNet ``BasicBlock`` (two 3x3 convs)."""

    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    """torchvision's ResNet ``Bottleneck`` (1x1, strided 3x3, 1x1 x4)."""

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


RESNET_LAYERS: dict[int, tuple[type[BasicBlock] | type[Bottleneck], tuple[int, int, int, int]]] = {
    34: (BasicBlock, (3, 4, 6, 3)),
    101: (Bottleneck, (3, 4, 23, 3)),
}
#: torchvision's published ``num_params`` of the ImageNet classifiers (``torchvision/models/resnet.py``).
RESNET_PUBLISHED = {34: 21_797_672, 101: 44_549_160}


def resnet_body(depth: int) -> nn.Sequential:
    """A torchvision ResNet as fastai's ``create_body`` cuts it (``children()[:-2]``): conv1, bn1,
    relu, maxpool, layer1..layer4 (no pooling, no classifier), as an ``nn.Sequential`` of 8."""
    block, counts = RESNET_LAYERS[depth]
    inplanes = 64
    layers: list[nn.Module] = [nn.Conv2d(3, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64), nn.ReLU(inplace=True),
                               nn.MaxPool2d(3, 2, 1)]
    for i, (planes, n) in enumerate(zip((64, 128, 256, 512), counts)):
        stride = 1 if i == 0 else 2
        down = None
        if stride != 1 or inplanes != planes * block.expansion:
            down = nn.Sequential(nn.Conv2d(inplanes, planes * block.expansion, 1, stride, bias=False),
                                 nn.BatchNorm2d(planes * block.expansion))
        blocks: list[nn.Module] = [block(inplanes, planes, stride, down)]
        inplanes = planes * block.expansion
        blocks += [block(inplanes, planes) for _ in range(1, n)]
        layers.append(nn.Sequential(*blocks))
    # Random residual branches make activations grow block after block (trained ones do not);
    # a smaller last-BN scale keeps them in range. The cost is the same.
    for m in nn.Sequential(*layers).modules():
        if isinstance(m, (BasicBlock, Bottleneck)):
            last = m.bn2 if isinstance(m, BasicBlock) else m.bn3
            nn.init.constant_(last.weight, 0.2)
    return nn.Sequential(*layers)


# ============================================================================ DeOldify


class UnetBlockDeep(nn.Module):
    """DeOldify's ``UnetBlockDeep`` (``deoldify/unet.py``): upsample by pixel shuffle to half the
    channels, concat with the batch-normed skip, ReLU, two 3x3 convs of ``nf_factor`` x width."""

    def __init__(self, up_in_c: int, x_in_c: int, final_div: bool, self_attention: bool, nf_factor: float) -> None:
        super().__init__()
        self.shuf = PixelShuffleICNR(up_in_c, up_in_c // 2, norm_type=NormType.Spectral, extra_bn=True)
        self.bn = batchnorm_2d(x_in_c)
        ni = up_in_c // 2 + x_in_c
        nf = int((ni if final_div else ni // 2) * nf_factor)
        self.conv1 = custom_conv_layer(ni, nf, norm_type=NormType.Spectral, extra_bn=True)
        self.conv2 = custom_conv_layer(nf, nf, norm_type=NormType.Spectral, extra_bn=True, self_attention=self_attention)
        self.relu = nn.ReLU()
        self.out_channels = nf

    def forward(self, up_in: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        up_out = self.shuf(up_in)
        if s.shape[-2:] != up_out.shape[-2:]:
            up_out = F.interpolate(up_out, s.shape[-2:], mode="nearest")
        cat_x = self.relu(torch.cat([up_out, self.bn(s)], dim=1))
        return self.conv2(self.conv1(cat_x))


class UnetBlockWide(nn.Module):
    """DeOldify's ``UnetBlockWide`` (``deoldify/unet.py``): pixel shuffle to ``n_out // 2``, concat
    with the batch-normed skip, ReLU, one 3x3 conv to ``n_out // 2``.

    DDColor's ``UnetBlockWide`` (``ddcolor_arch_utils/unet.py``) is the same block with
    ``up_out = x_out = n_out`` (``ddcolor=True``).
    """

    def __init__(self, up_in_c: int, x_in_c: int, n_out: int, self_attention: bool = False, ddcolor: bool = False) -> None:
        super().__init__()
        up_out = x_out = n_out if ddcolor else n_out // 2
        self.shuf = PixelShuffleICNR(up_in_c, up_out, norm_type=NormType.Spectral, extra_bn=True)
        self.bn = batchnorm_2d(x_in_c)
        self.conv = custom_conv_layer(up_out + x_in_c, x_out, norm_type=NormType.Spectral, extra_bn=True,
                                      self_attention=self_attention)
        self.relu = nn.ReLU()
        self.ddcolor = ddcolor
        self.out_channels = x_out

    def forward(self, up_in: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        up_out = self.shuf(up_in)
        if not self.ddcolor and s.shape[-2:] != up_out.shape[-2:]:
            up_out = F.interpolate(up_out, s.shape[-2:], mode="nearest")
        cat_x = self.relu(torch.cat([up_out, self.bn(s)], dim=1))
        return self.conv(cat_x)


class DeOldifyGenerator(nn.Module):
    """DeOldify's generator: fastai's ``DynamicUnetDeep`` (artistic) or ``DynamicUnetWide`` (stable /
    video) on a ResNet body, with ``norm_type=Spectral`` (hence ``extra_bn``), ``blur=True``,
    ``self_attention=True``, ``last_cross=True``, ``bottle=False``, ``y_range=(-3, 3)`` and 3 outputs.

    Its input and output are ImageNet-normalised RGB ``(B, 3, H, W)``.
    """

    def __init__(self, depth: int, wide: bool, nf_factor: float) -> None:
        super().__init__()
        self.depth, self.wide = depth, wide
        self.encoder = resnet_body(depth)
        # fastai's model_sizes + _get_sfs_idxs: the layers after which the resolution changes
        # (found with a small dummy pass: at any size the same layers halve it).
        with torch.no_grad():
            sizes, channels, x = [], [], torch.zeros(1, 3, 64, 64)
            for layer in self.encoder.eval():
                x = layer(x)
                sizes.append(x.shape[-1])
                channels.append(x.shape[1])
        idxs = [i for i in range(len(sizes) - 1) if sizes[i] != sizes[i + 1]]
        if sizes[0] != sizes[1]:
            idxs = [0] + idxs
        self.sfs_idxs = list(reversed(idxs))
        ni = channels[-1]
        self.bn = batchnorm_2d(ni)
        self.middle_conv = nn.Sequential(custom_conv_layer(ni, ni * 2, norm_type=NormType.Spectral, extra_bn=True),
                                         custom_conv_layer(ni * 2, ni, norm_type=NormType.Spectral, extra_bn=True))
        blocks: list[nn.Module] = []
        up_in_c = ni
        nf = int(512 * nf_factor)
        for i, idx in enumerate(self.sfs_idxs):
            not_final = i != len(self.sfs_idxs) - 1
            sa = i == len(self.sfs_idxs) - 3
            if wide:
                block: UnetBlockDeep | UnetBlockWide = UnetBlockWide(up_in_c, channels[idx], nf if not_final else nf // 2,
                                                                     self_attention=sa)
            else:
                block = UnetBlockDeep(up_in_c, channels[idx], final_div=not_final, self_attention=sa, nf_factor=nf_factor)
            blocks.append(block)
            up_in_c = block.out_channels
        self.blocks = nn.ModuleList(blocks)
        # The first hooked size (1/2) is not the input size: one more 2x PixelShuffle_ICNR (fastai's
        # default weight norm, since DynamicUnet passes no norm_type to it).
        self.final_shuf = PixelShuffleICNR(up_in_c, up_in_c, norm_type=NormType.Weight)
        self.res = ResBlock(up_in_c + 3)
        self.head = custom_conv_layer(up_in_c + 3, 3, ks=1, use_activ=False, norm_type=NormType.Spectral)

    def forward(self, inp: torch.Tensor) -> torch.Tensor:
        skips: dict[int, torch.Tensor] = {}
        x = inp
        for i, layer in enumerate(self.encoder):
            x = layer(x)
            if i in self.sfs_idxs:
                skips[i] = x
        x = self.middle_conv(F.relu(self.bn(x)))
        for block, idx in zip(self.blocks, self.sfs_idxs):
            x = block(x, skips[idx])
        x = self.final_shuf(x)
        x = self.res(torch.cat([x, inp], dim=1))  # MergeLayer(dense=True) with the input, res_block
        x = self.head(x)
        return torch.sigmoid(x) * 6.0 - 3.0  # SigmoidRange(-3, 3)

    def classifier_equivalent_params(self) -> int:
        """The encoder's parameters plus the classifier fastai cut off (``fc``): torchvision's count."""
        return count_params(self.encoder) + 512 * (1 if self.depth == 34 else 4) * 1000 + 1000


# ============================================================================ DDColor


class ConvNeXtLayerNorm(nn.Module):
    """ConvNeXt's ``LayerNorm`` (channels_last: ``F.layer_norm``; channels_first: by hand)."""

    def __init__(self, dim: int, eps: float = 1e-6, channels_first: bool = False) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.bias = nn.Parameter(torch.zeros(dim))
        self.eps, self.channels_first, self.shape = eps, channels_first, (dim,)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.channels_first:
            return F.layer_norm(x, self.shape, self.weight, self.bias, self.eps)
        u = x.mean(1, keepdim=True)
        s = (x - u).pow(2).mean(1, keepdim=True)
        x = (x - u) / torch.sqrt(s + self.eps)
        return self.weight[:, None, None] * x + self.bias[:, None, None]


class ConvNeXtBlock(nn.Module):
    """ConvNeXt block: 7x7 depthwise conv, LayerNorm (channels last), Linear x4, GELU, Linear, layer scale."""

    def __init__(self, dim: int, layer_scale: float = 1e-6) -> None:
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, kernel_size=7, padding=3, groups=dim)
        self.norm = ConvNeXtLayerNorm(dim)
        self.pwconv1 = nn.Linear(dim, 4 * dim)
        self.act = nn.GELU()
        self.pwconv2 = nn.Linear(4 * dim, dim)
        self.gamma = nn.Parameter(layer_scale * torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.dwconv(x).permute(0, 2, 3, 1)
        y = self.pwconv2(self.act(self.pwconv1(self.norm(y))))
        return x + (self.gamma * y).permute(0, 3, 1, 2)


#: ConvNeXt variants: depths, dims, torchvision's published ``num_params`` (``torchvision/models/convnext.py``).
CONVNEXT = {
    "t": ((3, 3, 9, 3), (96, 192, 384, 768), 28_589_128),
    "l": ((3, 3, 27, 3), (192, 384, 768, 1536), 197_767_336),
}


class ConvNeXt(nn.Module):
    """DDColor's ConvNeXt (``ddcolor_arch_utils/convnext.py``): stem, 3 downsamplers, 4 stages, an
    extra channels-first LayerNorm per stage (``norm0``..``norm3``, whose outputs DDColor hooks) and
    the final pooled LayerNorm (computed, unused). Returns the four normed stage outputs."""

    def __init__(self, size: str) -> None:
        super().__init__()
        depths, dims, _ = CONVNEXT[size]
        self.size, self.dims = size, dims
        self.downsample_layers = nn.ModuleList([nn.Sequential(nn.Conv2d(3, dims[0], 4, 4),
                                                              ConvNeXtLayerNorm(dims[0], channels_first=True))])
        for i in range(3):
            self.downsample_layers.append(nn.Sequential(ConvNeXtLayerNorm(dims[i], channels_first=True),
                                                        nn.Conv2d(dims[i], dims[i + 1], 2, 2)))
        self.stages = nn.ModuleList(nn.Sequential(*[ConvNeXtBlock(d) for _ in range(n)]) for d, n in zip(dims, depths))
        self.out_norms = nn.ModuleList(ConvNeXtLayerNorm(d, channels_first=True) for d in dims)
        self.norm = nn.LayerNorm(dims[-1], eps=1e-6)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        feats = []
        for down, stage, norm in zip(self.downsample_layers, self.stages, self.out_norms):
            x = stage(down(x))
            feats.append(norm(x))
        self.norm(x.mean([-2, -1]))  # forward_features' pooled head norm: computed and discarded, as there
        return feats

    def classifier_equivalent_params(self) -> int:
        """Parameters of torchvision's ConvNeXt classifier: this encoder without ``norm0..3``, plus the Linear head."""
        extra = sum(2 * d for d in self.dims)
        return count_params(self) - extra + self.dims[-1] * 1000 + 1000


class PositionEmbeddingSine(nn.Module):
    """DETR's sine position embedding (DDColor's ``position_encoding.py``), normalised."""

    def __init__(self, num_pos_feats: int = 128, temperature: float = 10000.0) -> None:
        super().__init__()
        self.num_pos_feats, self.temperature, self.scale = num_pos_feats, temperature, 2 * math.pi

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        not_mask = torch.ones((x.size(0), x.size(2), x.size(3)), device=x.device, dtype=torch.bool)
        y_embed = not_mask.cumsum(1, dtype=torch.float32)
        x_embed = not_mask.cumsum(2, dtype=torch.float32)
        eps = 1e-6
        y_embed = y_embed / (y_embed[:, -1:, :] + eps) * self.scale
        x_embed = x_embed / (x_embed[:, :, -1:] + eps) * self.scale
        dim_t = torch.arange(self.num_pos_feats, dtype=torch.float32, device=x.device)
        dim_t = self.temperature ** (2 * (dim_t // 2) / self.num_pos_feats)
        pos_x = x_embed[:, :, :, None] / dim_t
        pos_y = y_embed[:, :, :, None] / dim_t
        pos_x = torch.stack((pos_x[:, :, :, 0::2].sin(), pos_x[:, :, :, 1::2].cos()), dim=4).flatten(3)
        pos_y = torch.stack((pos_y[:, :, :, 0::2].sin(), pos_y[:, :, :, 1::2].cos()), dim=4).flatten(3)
        return torch.cat((pos_y, pos_x), dim=3).permute(0, 3, 1, 2)


class AttentionLayer(nn.Module):
    """DDColor's ``CrossAttentionLayer`` / ``SelfAttentionLayer`` (post-norm): multi-head attention
    with position embeddings added to queries and keys, residual, LayerNorm."""

    def __init__(self, d_model: int, nhead: int) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(d_model, nhead, dropout=0.0)
        self.norm = nn.LayerNorm(d_model)

    def forward(self, tgt: torch.Tensor, memory: torch.Tensor | None, pos: torch.Tensor | None,
                query_pos: torch.Tensor) -> torch.Tensor:
        q = tgt + query_pos
        if memory is None:  # self-attention
            out = self.attn(q, q, value=tgt)[0]
        else:
            out = self.attn(q, memory if pos is None else memory + pos, value=memory)[0]
        return self.norm(tgt + out)


class FFNLayer(nn.Module):
    """DDColor's ``FFNLayer`` (post-norm): Linear, ReLU, Linear, residual, LayerNorm."""

    def __init__(self, d_model: int, dim_feedforward: int) -> None:
        super().__init__()
        self.linear1 = nn.Linear(d_model, dim_feedforward)
        self.linear2 = nn.Linear(dim_feedforward, d_model)
        self.norm = nn.LayerNorm(d_model)

    def forward(self, tgt: torch.Tensor) -> torch.Tensor:
        return self.norm(tgt + self.linear2(F.relu(self.linear1(tgt))))


class MultiScaleColorDecoder(nn.Module):
    """DDColor's colour decoder: ``num_queries`` learnable colour queries refined by ``dec_layers``
    rounds of cross-attention (to the pixel decoder's 1/16, 1/8 and 1/4 features in turn),
    self-attention and FFN; an MLP turns them into colour embeddings, and each output channel is
    a query's embedding dotted with the full-resolution image features."""

    def __init__(self, in_channels: tuple[int, ...], hidden_dim: int = 256, num_queries: int = 100, nheads: int = 8,
                 dim_feedforward: int = 2048, dec_layers: int = 9, color_embed_dim: int = 256) -> None:
        super().__init__()
        self.pe_layer = PositionEmbeddingSine(hidden_dim // 2)
        self.num_layers, self.num_levels = dec_layers, len(in_channels)
        self.cross = nn.ModuleList(AttentionLayer(hidden_dim, nheads) for _ in range(dec_layers))
        self.self_attn = nn.ModuleList(AttentionLayer(hidden_dim, nheads) for _ in range(dec_layers))
        self.ffn = nn.ModuleList(FFNLayer(hidden_dim, dim_feedforward) for _ in range(dec_layers))
        self.decoder_norm = nn.LayerNorm(hidden_dim)
        self.query_feat = nn.Embedding(num_queries, hidden_dim)
        self.query_embed = nn.Embedding(num_queries, hidden_dim)
        self.level_embed = nn.Embedding(self.num_levels, hidden_dim)
        self.input_proj = nn.ModuleList(nn.Conv2d(c, hidden_dim, 1) for c in in_channels)
        dims = [hidden_dim, hidden_dim, hidden_dim, color_embed_dim]
        self.color_embed = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:]))  # MLP, 3 layers

    def forward(self, x: list[torch.Tensor], img_features: torch.Tensor) -> torch.Tensor:
        src, pos = [], []
        for i, feat in enumerate(x):
            pos.append(self.pe_layer(feat).flatten(2).permute(2, 0, 1))
            src.append((self.input_proj[i](feat).flatten(2) + self.level_embed.weight[i][None, :, None]).permute(2, 0, 1))
        bs = src[0].shape[1]
        query_embed = self.query_embed.weight.unsqueeze(1).repeat(1, bs, 1)
        output = self.query_feat.weight.unsqueeze(1).repeat(1, bs, 1)
        for i in range(self.num_layers):
            level = i % self.num_levels
            output = self.cross[i](output, src[level], pos[level], query_embed)
            output = self.self_attn[i](output, None, None, query_embed)
            output = self.ffn[i](output)
        emb = self.decoder_norm(output).transpose(0, 1)
        for j, layer in enumerate(self.color_embed):
            emb = F.relu(layer(emb)) if j < len(self.color_embed) - 1 else layer(emb)
        return torch.einsum("bqc,bchw->bqhw", emb, img_features)


class DDColor(nn.Module):
    """DDColor as its inference pipeline builds it: ConvNeXt encoder, pixel decoder (three
    ``UnetBlockWide`` to 1/4, then a 4x pixel shuffle to full resolution, 256 channels), the
    multi-scale colour decoder (100 queries, 9 layers), and the 1x1 refine conv on
    ``[colour maps, normalised input]`` to ab.

    Input: grey RGB ``(B, 3, H, W)`` in [0, 1] (normalised inside); output: ab ``(B, 2, H, W)``.
    """

    def __init__(self, encoder: str = "l", nf: int = 512, num_queries: int = 100, num_output_channels: int = 2) -> None:
        super().__init__()
        self.encoder = ConvNeXt(encoder)
        dims = self.encoder.dims
        layers, in_c, out_c = [], dims[-1], nf
        for k, feature_c in enumerate(reversed(dims[:-1])):  # norm2, norm1, norm0
            if k == len(dims) - 2:
                out_c //= 2
            layers.append(UnetBlockWide(in_c, feature_c, out_c, ddcolor=True))
            in_c = out_c
        self.layers = nn.ModuleList(layers)
        embed_dim = nf // 2
        self.last_shuf = PixelShuffleICNR(embed_dim, embed_dim, scale=4, norm_type=NormType.Spectral)  # last_norm='Spectral'
        self.color_decoder = MultiScaleColorDecoder((nf, nf, nf // 2), num_queries=num_queries)
        self.refine_net = custom_conv_layer(num_queries + 3, num_output_channels, ks=1, use_activ=False,
                                            norm_type=NormType.Spectral)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = (x - self.mean) / self.std
        feats = self.encoder(x)
        out0 = self.layers[0](feats[3], feats[2])
        out1 = self.layers[1](out0, feats[1])
        out2 = self.layers[2](out1, feats[0])
        out3 = self.last_shuf(out2)
        out = self.color_decoder([out0, out1, out2], out3)
        return self.refine_net(torch.cat([out, x], dim=1))

    def classifier_equivalent_params(self) -> int:
        """See :meth:`ConvNeXt.classifier_equivalent_params`."""
        return self.encoder.classifier_equivalent_params()


# ============================================================================ registry


def count_params(model: nn.Module) -> int:
    """Number of parameters (weight-normed layers count g and v, as their checkpoints store them)."""
    return sum(p.numel() for p in model.parameters())


@dataclass(frozen=True)
class Peer:
    """One rebuilt colouriser: how to build it, what it is fed, what was published about it."""

    name: str
    title: str
    family: str  # "deoldify" or "ddcolor": which pre/post-processing its code does
    input_size: int  # the square side its inference code feeds the network at its defaults
    quick_size: int
    build: Callable[[], nn.Module]
    published_params: float | None  # total, as published
    published_source: str
    encoder_name: str
    encoder_published: int  # torchvision's num_params of the classifier the encoder comes from
    encoder_source: str
    arch_source: str


_PAPER = "DDColor paper (Kang et al., ICCV 2023, arXiv:2212.11613), comparison table"
_TV_RESNET = "pytorch/vision torchvision/models/resnet.py (num_params)"
_TV_CONVNEXT = "pytorch/vision torchvision/models/convnext.py (num_params)"
_DEOLDIFY_SRC = "jantic/DeOldify deoldify/{generators,unet,layers,filters}.py + fastai v1 fastai/layers.py"
_DDCOLOR_SRC = ("piddnad/DDColor basicsr/archs/ddcolor_arch.py, ddcolor_arch_utils/{convnext,unet,transformer_utils,"
                "position_encoding}.py, ddcolor/pipeline.py")

PEERS: dict[str, Peer] = {
    p.name: p
    for p in (
        Peer("deoldify-artistic", "DeOldify artistic (ResNet-34, deep decoder)", "deoldify", 35 * 16, 64,
             lambda: DeOldifyGenerator(34, wide=False, nf_factor=1.5), 63.6e6, _PAPER + " ('DeOldify')",
             "ResNet-34", RESNET_PUBLISHED[34], _TV_RESNET, _DEOLDIFY_SRC),
        Peer("deoldify-stable", "DeOldify stable (ResNet-101, wide decoder)", "deoldify", 35 * 16, 64,
             lambda: DeOldifyGenerator(101, wide=True, nf_factor=2), None, "no total published",
             "ResNet-101", RESNET_PUBLISHED[101], _TV_RESNET, _DEOLDIFY_SRC),
        Peer("ddcolor-tiny", "DDColor tiny (ConvNeXt-T)", "ddcolor", 512, 64, lambda: DDColor("t"), 55.0e6,
             _PAPER + " ('DDColor-tiny')", "ConvNeXt-T", CONVNEXT["t"][2], _TV_CONVNEXT, _DDCOLOR_SRC),
        Peer("ddcolor-large", "DDColor large (ConvNeXt-L)", "ddcolor", 512, 64, lambda: DDColor("l"), 227.9e6,
             _PAPER + " ('DDColor')", "ConvNeXt-L", CONVNEXT["l"][2], _TV_CONVNEXT, _DDCOLOR_SRC),
    )
}


def converge_spectral_norms(model: nn.Module, iterations: int = 15) -> None:
    """Run the power iteration of every (hook-based) spectral norm ``iterations`` times.

    In eval mode a spectrally normalised layer divides its weight by ``u^T W v`` with the stored
    ``u`` and ``v``; in a trained checkpoint they have converged to the top singular vectors, but
    freshly initialised they are random, the estimate is far too small and the weights blow up.
    This makes the random network's activations look like a trained one's (the cost is the same).
    """
    from torch.nn.utils.spectral_norm import SpectralNorm

    with torch.no_grad():
        for module in model.modules():
            for hook in module._forward_pre_hooks.values():
                if isinstance(hook, SpectralNorm):
                    n, hook.n_power_iterations = hook.n_power_iterations, iterations
                    hook.compute_weight(module, do_power_iteration=True)  # updates u and v in place
                    hook.n_power_iterations = n


def build_peer(name: str, seed: int = 0) -> nn.Module:
    """Build a peer with seeded random weights, in eval mode (on ``torch.device("meta")`` it costs
    nothing, for counting parameters)."""
    torch.manual_seed(seed)
    model = PEERS[name].build()
    if not next(model.parameters()).is_meta:
        converge_spectral_norms(model)
    return model.eval()


# ============================================================================ the pipelines


def deoldify_colorize(model: Callable[[torch.Tensor], torch.Tensor], orig: Image.Image, size: int,
                      device: torch.device) -> Image.Image:
    """DeOldify's ``ColorizerFilter.filter`` on a PIL RGB photo (``deoldify/filters.py``).

    ``_scale_to_square`` (PIL bilinear stretch), ``_transform`` (``LA`` and back to RGB),
    ``pil2tensor`` / 255, ImageNet normalisation, the network (``pred_batch``: denormalised and
    clamped to [0, 1] by fastai's ``reconstruct``), uint8, ``_unsquare`` (PIL bilinear to the photo's
    size) and ``_post_process``: Y from the photo, U and V from the prediction (OpenCV, on the
    arrays as RGB-in-BGR-order, as the original does).
    """
    import cv2

    out = model(deoldify_input(orig, size).to(device))[0].cpu()
    out = (out * torch.tensor(IMAGENET_STD).view(3, 1, 1) + torch.tensor(IMAGENET_MEAN).view(3, 1, 1)).clamp(0, 1)
    raw = Image.fromarray((out * 255).permute(1, 2, 0).numpy().astype(np.uint8))
    raw = raw.resize(orig.size, resample=Image.BILINEAR)
    color_yuv = cv2.cvtColor(np.asarray(raw), cv2.COLOR_BGR2YUV)
    hires = cv2.cvtColor(np.asarray(orig), cv2.COLOR_BGR2YUV)
    hires[:, :, 1:3] = color_yuv[:, :, 1:3]
    return Image.fromarray(cv2.cvtColor(hires, cv2.COLOR_YUV2BGR))


def deoldify_input(orig: Image.Image, size: int) -> torch.Tensor:
    """DeOldify's pre-processing (``_get_model_ready_image``, ``pil2tensor``, ``norm``): what its
    network sees for this photo, ``(1, 3, size, size)`` ImageNet-normalised grey RGB."""
    model_image = orig.resize((size, size), resample=Image.BILINEAR).convert("LA").convert("RGB")
    x = torch.from_numpy(np.asarray(model_image).transpose(2, 0, 1).astype(np.float32)).div_(255)
    return ((x - torch.tensor(IMAGENET_MEAN).view(3, 1, 1)) / torch.tensor(IMAGENET_STD).view(3, 1, 1))[None]


def ddcolor_input(img_bgr: np.ndarray, size: int) -> tuple[np.ndarray, torch.Tensor]:
    """DDColor's pre-processing: (the photo's L ``(H, W, 1)``, grey RGB ``(1, 3, size, size)``)."""
    import cv2

    img = (img_bgr / 255.0).astype(np.float32)
    orig_l = cv2.cvtColor(img, cv2.COLOR_BGR2Lab)[:, :, :1]
    img_resized = cv2.resize(img, (size, size))
    img_l = cv2.cvtColor(img_resized, cv2.COLOR_BGR2Lab)[:, :, :1]
    img_gray_lab = np.concatenate((img_l, np.zeros_like(img_l), np.zeros_like(img_l)), axis=-1)
    img_gray_rgb = cv2.cvtColor(img_gray_lab, cv2.COLOR_LAB2RGB)
    return orig_l, torch.from_numpy(img_gray_rgb.transpose((2, 0, 1))).float().unsqueeze(0)


def ddcolor_colorize(model: Callable[[torch.Tensor], torch.Tensor], img_bgr: np.ndarray, size: int,
                     device: torch.device) -> np.ndarray:
    """DDColor's ``ColorizationPipeline.process`` on a BGR uint8 photo (``ddcolor/pipeline.py``):
    the photo's L, the square grey input, ab at ``size``, ab resized to the photo
    (``F.interpolate``, nearest) and joined with its L, Lab -> BGR, uint8."""
    import cv2

    height, width = img_bgr.shape[:2]
    orig_l, x = ddcolor_input(img_bgr, size)
    output_ab = model(x.to(device)).cpu()
    ab = F.interpolate(output_ab, size=(height, width))[0].float().numpy().transpose(1, 2, 0)
    output_bgr = cv2.cvtColor(np.concatenate((orig_l, ab), axis=-1), cv2.COLOR_LAB2BGR)
    return (output_bgr * 255.0).round().astype(np.uint8)


# ============================================================================ timing (one process per model)


@dataclass
class Result:
    """One model's measurements (times in ms, medians over the repeats; memory in MiB)."""

    name: str
    title: str
    params: int
    published_params: float | None
    published_source: str
    input: str
    network_ms: float
    end_to_end_ms: float
    network_runs_ms: list[float] = field(default_factory=list)
    end_to_end_runs_ms: list[float] = field(default_factory=list)
    peak_mib: float = 0.0
    memory_kind: str = "peak RSS"
    encoder: str = ""
    encoder_params_as_classifier: int = 0
    encoder_published: int = 0
    encoder_source: str = ""
    arch_source: str = ""


def load_photo(path: Path, size: tuple[int, int]) -> Image.Image:
    """The benchmark photo: ``path`` (EXIF orientation applied) as RGB, cover-resized and centre-cropped
    to ``size`` = (width, height) with Lanczos. Done once, before any timing."""
    im = ImageOps.exif_transpose(Image.open(path)).convert("RGB")
    return ImageOps.fit(im, size, method=Image.LANCZOS)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(fn: Callable[[], object], device: torch.device) -> float:
    """Wall time of one call in ms (CUDA work finished before the clock stops)."""
    _sync(device)
    t = time.perf_counter()
    fn()
    _sync(device)
    return (time.perf_counter() - t) * 1e3


def measure(name: str, photo: Image.Image, quick: bool, repeats: int, warmup: int, device: torch.device,
            render_size: int) -> Result:
    """Build one model (a peer or ColorGAN), then time its network alone and its whole pipeline on
    ``photo``: ``warmup`` untimed rounds, then ``repeats`` rounds of (end to end, network alone)."""
    torch.manual_seed(0)
    if name == OURS:
        from colorgan import color
        from colorgan.pipeline import Colorizer, resize_to_render

        colorizer = Colorizer.from_pretrained("default", device=str(device))
        L = colorizer.prepare(photo).L
        x = color.normalize_l(resize_to_render(L, render_size, colorizer.stride))
        if device.type in ("cpu", "cuda"):
            x = x.contiguous(memory_format=torch.channels_last)
        model = colorizer.model
        params = count_params(model)
        e2e: Callable[[], object] = lambda: colorizer.colorize(photo, render_size=render_size)  # noqa: E731
        net: Callable[[], object] = lambda: model(x)  # noqa: E731
        spec = None
        shape = f"{x.shape[-1]}x{x.shape[-2]}"
    else:
        spec = PEERS[name]
        size = spec.quick_size if quick else spec.input_size
        model = build_peer(name).to(device)
        params = count_params(model)
        if spec.family == "deoldify":
            x = deoldify_input(photo, size).to(device)
            e2e = lambda: deoldify_colorize(model, photo, size, device)  # noqa: E731
        else:
            bgr = np.ascontiguousarray(np.asarray(photo)[:, :, ::-1])  # what cv2.imread gives
            x = ddcolor_input(bgr, size)[1].to(device)
            e2e = lambda: ddcolor_colorize(model, bgr, size, device)  # noqa: E731
        net = lambda: model(x)  # noqa: E731
        shape = f"{size}x{size}"
    net_ms, e2e_ms = [], []
    with torch.inference_mode():
        for _ in range(warmup):
            e2e()
            net()
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        for _ in range(repeats):
            e2e_ms.append(_timed(e2e, device))
            net_ms.append(_timed(net, device))
    if device.type == "cuda":
        peak, kind = torch.cuda.max_memory_allocated(device) / 2**20, "peak CUDA allocated"
    else:
        peak, kind = peak_rss_mb(), "peak RSS"
    res = Result(name=name, title="ColorGAN (shipped default model)" if spec is None else spec.title, params=params,
                 published_params=None if spec is None else spec.published_params,
                 published_source="" if spec is None else spec.published_source, input=shape,
                 network_ms=statistics.median(net_ms), end_to_end_ms=statistics.median(e2e_ms),
                 network_runs_ms=net_ms, end_to_end_runs_ms=e2e_ms, peak_mib=peak, memory_kind=kind)
    if spec is not None:
        res.encoder, res.encoder_published, res.encoder_source = spec.encoder_name, spec.encoder_published, spec.encoder_source
        res.encoder_params_as_classifier = model.classifier_equivalent_params()  # type: ignore[operator]
        res.arch_source = spec.arch_source
    return res


def child(args: argparse.Namespace) -> None:
    """Measure one model in this process and print its :class:`Result` as one JSON line."""
    import cv2

    torch.set_num_threads(args.threads)
    cv2.setNumThreads(args.threads)
    photo = load_photo(Path(args.photo), args.size)
    res = measure(args.child, photo, args.quick, args.repeats, args.warmup, torch.device(args.device), args.render_size)
    print("RESULT " + json.dumps(asdict(res)), flush=True)


def run_child(name: str, args: argparse.Namespace) -> Result:
    """Run :func:`child` for ``name`` in a fresh interpreter and parse its result."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", name, "--threads", str(args.threads),
           "--repeats", str(args.repeats), "--warmup", str(args.warmup), "--photo", str(args.photo),
           "--size", f"{args.size[0]}x{args.size[1]}", "--device", args.device, "--render-size", str(args.render_size)]
    if args.quick:
        cmd.append("--quick")
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))
    r = subprocess.run(cmd, capture_output=True, text=True, env=env)
    line = next((ln for ln in r.stdout.splitlines() if ln.startswith("RESULT ")), None)
    if r.returncode != 0 or line is None:
        raise SystemExit(f"{name} failed (exit {r.returncode}):\n{r.stderr[-4000:]}")
    return Result(**json.loads(line[len("RESULT "):]))


# ============================================================================ report


def param_check_lines(results: list[Result]) -> list[str]:
    """Each rebuilt peer's parameter count against the published ones (total and encoder)."""
    lines = [f"{'model':<26}{'rebuilt':>14}{'published':>14}{'diff':>8}  source"]
    for r in results:
        if r.name == OURS:
            lines.append(f"{r.name:<26}{r.params:>14,}{'':>14}{'':>8}  the shipped weights")
            continue
        if r.published_params:
            d = 100 * (r.params / r.published_params - 1)
            lines.append(f"{r.name:<26}{r.params:>14,}{r.published_params / 1e6:>13.1f}M{d:>+7.2f}%  {r.published_source}")
        else:
            lines.append(f"{r.name:<26}{r.params:>14,}{'n/a':>14}{'':>8}  {r.published_source}")
        d = 100 * (r.encoder_params_as_classifier / r.encoder_published - 1)
        lines.append(f"{'  encoder ' + r.encoder + ' + head':<26}{r.encoder_params_as_classifier:>14,}"
                     f"{r.encoder_published:>14,}{d:>+7.2f}%  {r.encoder_source}")
        lines.append(f"{'':<26}architecture from: {r.arch_source}")
    return lines


def table_lines(results: list[Result]) -> list[str]:
    """The timing table; the ratio column is each model's end-to-end time over ColorGAN's."""
    ours = next((r for r in results if r.name == OURS), None)
    mem = results[0].memory_kind if results else "peak RSS"
    head = (f"{'model':<20}{'params':>9}{'input':>10}{'network ms':>12}{'end-to-end ms':>15}"
            f"{mem + ' MiB':>16}{'x ours (e2e)':>14}{'x ours (net)':>14}")
    lines = [head]
    for r in results:
        e2e_ratio = f"{r.end_to_end_ms / ours.end_to_end_ms:.1f}" if ours else "-"
        net_ratio = f"{r.network_ms / ours.network_ms:.1f}" if ours else "-"
        lines.append(f"{r.name:<20}{r.params / 1e6:>8.1f}M{r.input:>10}{r.network_ms:>12.0f}{r.end_to_end_ms:>15.0f}"
                     f"{r.peak_mib:>16.0f}{e2e_ratio:>14}{net_ratio:>14}")
    return lines


def _size(s: str) -> tuple[int, int]:
    w, h = s.lower().split("x")
    return int(w), int(h)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line (see the module docstring)."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    names = [OURS, *PEERS]
    ap.add_argument("--threads", type=int, default=2, help="torch and OpenCV threads (default 2)")
    ap.add_argument("--repeats", type=int, default=None, help="timed rounds per model (default 5; --quick: 1)")
    ap.add_argument("--warmup", type=int, default=1, help="untimed rounds per model first (default 1)")
    ap.add_argument("--only", action="append", choices=names, metavar="NAME",
                    help=f"time only these (repeatable; one of {', '.join(names)}); ColorGAN is always timed, for the ratio")
    ap.add_argument("--photo", type=Path, default=DEFAULT_PHOTO, help=f"the photo (default {DEFAULT_PHOTO.name} from examples/)")
    ap.add_argument("--size", type=_size, default=None, help="photo size WxH it is resized to (default 1280x800; --quick: 320x200)")
    ap.add_argument("--render-size", type=int, default=None, help="ColorGAN's render size (default 256; --quick: 64)")
    ap.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    ap.add_argument("--json", type=Path, default=None, metavar="OUT", help="also write the results to this JSON file")
    ap.add_argument("--quick", action="store_true",
                    help="smoke run: peers at 64 px, a 320x200 photo, ColorGAN at render 64, one timed round")
    ap.add_argument("--child", choices=names, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.repeats is None:
        args.repeats = 1 if args.quick else 5
    if args.size is None:
        args.size = (320, 200) if args.quick else (1280, 800)
    if args.render_size is None:
        args.render_size = 64 if args.quick else 256
    return args


def main(argv: list[str] | None = None) -> None:
    """Measure every model (each in its own process), print the parameter checks and the table."""
    args = parse_args(argv)
    if args.child:
        child(args)
        return
    names = [OURS] + [n for n in PEERS if not args.only or n in args.only]
    load = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, load average {load[0]:.1f}; "
          f"torch {torch.__version__}, device {args.device}, {args.threads} threads")
    print(f"photo: {args.photo.name} resized to {args.size[0]}x{args.size[1]}; {args.warmup} warm-up + "
          f"{args.repeats} timed rounds per model, each model in its own process"
          + ("; QUICK: tiny inputs, not the defaults" if args.quick else ""))
    results = []
    for name in names:
        t = time.perf_counter()
        results.append(run_child(name, args))
        print(f"  {name}: done in {time.perf_counter() - t:.0f} s", flush=True)
    print("\n== parameters: rebuilt vs published ==")
    print("\n".join(param_check_lines(results)))
    print(f"\n== latency on one {args.size[0]}x{args.size[1]} photo (medians; end to end = the project's own "
          f"pre/post-processing + network) ==")
    print("\n".join(table_lines(results)))
    cmd = "python benchmarks/peers.py " + " ".join(sys.argv[1:] if argv is None else argv)
    print(f"\ncommand: {cmd.strip()}")
    if args.json:
        payload = {"command": cmd.strip(), "device": args.device, "threads": args.threads, "repeats": args.repeats,
                   "warmup": args.warmup, "photo": str(args.photo), "size": list(args.size), "quick": args.quick,
                   "results": [asdict(r) for r in results]}
        args.json.write_text(json.dumps(payload, indent=2) + "\n")
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
