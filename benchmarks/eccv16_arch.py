"""Zhang et al.'s ECCV16 colourisation network ("Colorful Image Colorization"), for timing only.

The layer layout follows the ``eccv16`` generator of the authors' PyTorch port
(github.com/richzhang/colorization, ``colorizers/eccv16.py``): eight VGG-style conv blocks
(the last three at 1/8 resolution with 512 channels, two of them dilated), a transposed-conv
upsampler to 1/4 resolution, a 313-bin colour classifier, a softmax and a 1x1 projection to ab,
upsampled 4x. Roughly 32 M parameters.

The weights here are random (``torch.manual_seed``): nothing is downloaded, and this module only
exists so that ``benchmarks/speed.py`` can time the network at a given render size, both
through ColorGAN's own pipeline (:class:`ECCV16ForColorizer`) and through the authors' released
demo pipeline (:func:`colorize_file_like_demo`). Its colours are meaningless.
"""

from __future__ import annotations

import torch
import torch.nn as nn

__all__ = ["ECCV16", "ECCV16ForColorizer", "colorize_file_like_demo"]


def _convs(cin: int, cout: int, n: int, *, last_stride: int = 1, dilation: int = 1) -> list[nn.Module]:
    layers: list[nn.Module] = []
    for i in range(n):
        stride = last_stride if i == n - 1 else 1
        layers += [
            nn.Conv2d(cin if i == 0 else cout, cout, 3, stride=stride, padding=dilation, dilation=dilation, bias=True),
            nn.ReLU(True),
        ]
    return layers


class ECCV16(nn.Module):
    """The ECCV16 generator: ``(B, 1, H, W)`` L in [0, 100] -> ``(B, 2, H, W)`` ab in about [-110, 110].

    H and W must be multiples of 8 (three stride-2 convolutions, one 2x transposed conv, 4x upsample).
    """

    def __init__(self) -> None:
        super().__init__()
        self.model1 = nn.Sequential(*_convs(1, 64, 2, last_stride=2), nn.BatchNorm2d(64))
        self.model2 = nn.Sequential(*_convs(64, 128, 2, last_stride=2), nn.BatchNorm2d(128))
        self.model3 = nn.Sequential(*_convs(128, 256, 3, last_stride=2), nn.BatchNorm2d(256))
        self.model4 = nn.Sequential(*_convs(256, 512, 3), nn.BatchNorm2d(512))
        self.model5 = nn.Sequential(*_convs(512, 512, 3, dilation=2), nn.BatchNorm2d(512))
        self.model6 = nn.Sequential(*_convs(512, 512, 3, dilation=2), nn.BatchNorm2d(512))
        self.model7 = nn.Sequential(*_convs(512, 512, 3), nn.BatchNorm2d(512))
        self.model8 = nn.Sequential(
            nn.ConvTranspose2d(512, 256, 4, stride=2, padding=1, bias=True),
            nn.ReLU(True),
            *_convs(256, 256, 2),
            nn.Conv2d(256, 313, 1, bias=True),
        )
        self.softmax = nn.Softmax(dim=1)
        self.model_out = nn.Conv2d(313, 2, 1, bias=False)
        self.upsample4 = nn.Upsample(scale_factor=4, mode="bilinear")

    def forward(self, L: torch.Tensor) -> torch.Tensor:
        x = (L - 50.0) / 100.0  # the authors' input normalisation
        for block in (self.model1, self.model2, self.model3, self.model4, self.model5, self.model6, self.model7):
            x = block(x)
        x = self.model_out(self.softmax(self.model8(x)))
        return self.upsample4(x) * 110.0  # the authors' ab unnormalisation


class ECCV16ForColorizer(nn.Module):
    """ECCV16 behind :class:`colorgan.pipeline.Colorizer`'s model interface.

    ``forward(l_norm (B,1,h,w) in [-1, 1]) -> ab_norm (B,2,h,w)``; h, w multiples of 32 (the
    Colorizer's render shapes), so the same render size gives the same input as ColorGAN's model.
    """

    stride = 32

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.net = ECCV16().eval()

    def forward(self, l_norm: torch.Tensor) -> torch.Tensor:
        return self.net((l_norm + 1.0) * 50.0) / 110.0


def colorize_file_like_demo(net: nn.Module, src: str, dst: str, size: int = 256) -> None:
    """One photo through the authors' released demo pipeline (``demo_release.py`` + ``colorizers/util.py``).

    Their steps, re-implemented here (their package downloads weights at import): load with PIL,
    resize the RGB image to ``size x size`` (bicubic, aspect not kept), ``skimage.color.rgb2lab``
    of the original and the resized image (float64), the network on the resized L, bilinear
    upsampling of ab to the original size, ``skimage.color.lab2rgb`` at full resolution, save.
    Used by ``benchmarks/speed.py`` to time their end-to-end path; needs scikit-image.

    Args:
        net: an :class:`ECCV16` (L in [0, 100] -> ab).
        src: input image path.
        dst: output image path (JPEG quality 95).
        size: their ``HW`` (256 in the demo).
    """
    import numpy as np
    import torch.nn.functional as F
    from PIL import Image
    from skimage import color as skcolor

    img = np.asarray(Image.open(src))
    if img.ndim == 2:
        img = np.tile(img[:, :, None], 3)
    img_rs = np.asarray(Image.fromarray(img).resize((size, size), resample=3))
    l_orig = torch.Tensor(skcolor.rgb2lab(img)[:, :, 0])[None, None]
    l_rs = torch.Tensor(skcolor.rgb2lab(img_rs)[:, :, 0])[None, None]
    with torch.no_grad():
        out_ab = net(l_rs)
    ab = F.interpolate(out_ab, size=l_orig.shape[2:], mode="bilinear")
    rgb = skcolor.lab2rgb(torch.cat((l_orig, ab), dim=1)[0].numpy().transpose((1, 2, 0)))
    Image.fromarray((np.clip(rgb, 0, 1) * 255).round().astype(np.uint8)).save(dst, quality=95)
