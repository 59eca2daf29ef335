"""A CIC-style colouriser (Zhang, Isola and Efros, "Colorful Image Colorization", ECCV 2016).

What makes CIC CIC, kept here:

* ab is predicted as a **distribution over quantised ab bins** (grid 10, in-gamut cells only),
  at 1/4 of the input resolution, trained with a **multinomial cross-entropy against a
  soft-encoded target** (the 5 nearest bins, Gaussian weights, sigma 5);
* **class rebalancing**: each pixel's loss is weighted by ``1 / ((1 - lambda) p~ + lambda / Q)``
  of its true bin, ``p~`` the empirical bin prior of the training photos smoothed by a Gaussian
  (sigma 5), ``lambda = 0.5``, normalised so the expected weight is 1 (rare, saturated colours
  count more; this is CIC's answer to desaturation);
* **annealed-mean decoding**: ``ab = sum_q softmax(logits / T)_q * q`` with ``T = 0.38``, between
  the mean (T = 1, desaturated) and the mode (T -> 0, patchy);
* the network keeps a stride-8 feature map with dilated convolutions (large receptive field
  without further downsampling) and upsamples once to stride 4, as CIC's conv5-conv8 do.

What differs, and why (also in docs/MODEL_CARD.md):

* **The feature extractor** is the same ImageNet MobileNetV2 our generator uses, not CIC's VGG-
  style network trained from scratch for days on 1.3 M images: on this project's budget a net
  trained from scratch learns no colour at all, and sharing the encoder makes the comparison
  measure the paper's contribution (decoder, attention, losses, GAN) rather than the backbone.
  Its stride-16 and stride-32 features are projected and summed into the stride-8 map, the
  equivalent of CIC's deep stride-8 trunk.
* **The bins**: Zhang et al. keep 313 bins from their gamut file (``pts_in_hull.npy``), which is
  not available offline. :func:`ab_bins` recomputes the set as the grid cells that some sRGB
  colour falls into; it spans the same ranges (a in [-90, 100], b in [-110, 90]) and has
  261 bins (their hull also counts cells that sRGB only grazes).
"""

from __future__ import annotations

import functools
from dataclasses import asdict, dataclass
from typing import Iterable

import torch
import torch.nn as nn
import torch.nn.functional as F

from colorgan import color
from colorgan.models._config import config_from_dict
from colorgan.models.encoders import build_encoder
from colorgan.models.layers import check_l_input

__all__ = ["CICConfig", "CICModel", "ab_bins"]

#: Grid step of the ab quantisation, in Lab units.
GRID = 10.0


@functools.lru_cache(maxsize=1)
def ab_bins() -> torch.Tensor:
    """The in-gamut quantised ab bins: ``(Q, 2)`` float32 bin centres in Lab units (multiples of 10).

    A bin is kept when some sRGB colour (a 129^3 grid over the RGB cube) rounds to it. Sorted by
    a, then b. Q is 261 (see the module docstring for how that relates to CIC's 313).
    """
    v = torch.linspace(0, 1, 129)
    r, g, b = torch.meshgrid(v, v, v, indexing="ij")
    lab = color.rgb_to_lab(torch.stack([r, g, b]).reshape(3, -1, 1))
    ab = torch.stack([lab[1].flatten(), lab[2].flatten()], dim=1)
    centres = torch.unique(torch.round(ab / GRID) * GRID, dim=0)  # unique() sorts lexicographically
    return centres.float()


@dataclass(frozen=True)
class CICConfig:
    """Everything needed to rebuild a :class:`CICModel` (stored in its weights file).

    Attributes:
        encoder: ``mobilenet_v2`` | ``efficientnet_lite0`` | ``simple`` (tests).
        simple_channels: stage widths of the ``simple`` encoder.
        width: channels of the stride-8 trunk.
        n_bins: number of ab bins (Q); must equal ``len(ab_bins())`` for a new model.
        temperature: annealed-mean temperature T (CIC: 0.38).
        rebalance_lambda: mix of the smoothed prior with the uniform distribution (CIC: 0.5).
        sigma: Gaussian width, in ab units, of the soft encoding and of the prior smoothing (CIC: 5).
        neighbours: bins of the soft encoding (CIC: 5).
    """

    encoder: str = "mobilenet_v2"
    simple_channels: tuple[int, ...] = (16, 24, 32, 48, 64)
    width: int = 256
    n_bins: int = 261
    temperature: float = 0.38
    rebalance_lambda: float = 0.5
    sigma: float = 5.0
    neighbours: int = 5

    @classmethod
    def preset(cls, name: str) -> "CICConfig":
        """``default`` (MobileNetV2 encoder) or ``tiny`` (tests: small, no pretrained weights)."""
        if name == "default":
            return cls()
        if name == "tiny":
            return cls(encoder="simple", width=32)
        raise ValueError(f"unknown CIC preset {name!r} (default, tiny)")

    @classmethod
    def from_dict(cls, d: dict) -> "CICConfig":
        """Inverse of :meth:`to_dict` (unknown keys are an error)."""
        return config_from_dict(cls, d)

    def to_dict(self) -> dict:
        return asdict(self)


def _cbr(in_ch: int, out_ch: int, k: int = 3, dilation: int = 1) -> nn.Sequential:
    """conv -> BatchNorm -> ReLU, "same" padding (CIC uses BatchNorm after each conv block)."""
    return nn.Sequential(
        nn.Conv2d(in_ch, out_ch, k, padding=dilation * (k // 2), dilation=dilation, bias=False),
        nn.BatchNorm2d(out_ch),
        nn.ReLU(inplace=True),
    )


class CICModel(nn.Module):
    """CIC-style classifier over ab bins with annealed-mean decoding.

    Args:
        config: the architecture and loss constants.
        pretrained_encoder: load the encoder's ImageNet weights (offline).
        compute_bins: fill ``bins`` from :func:`ab_bins` (a new model); False leaves zeros for a
            state dict to fill (loading saved weights).

    Shapes: ``forward(l_norm)``: ``(B, 1, H, W)`` L / 50 - 1 -> ``(B, 2, H, W)`` ab / 110, H and W
    multiples of 32. ``forward(l_norm, raw=True)``: ``(B, Q, H/4, W/4)`` bin logits.

    Buffers (saved with the weights): ``bins (Q, 2)`` bin centres in Lab units; ``prior (Q,)`` the
    empirical bin distribution of the training photos; ``class_weights (Q,)`` the rebalancing
    weights derived from it (all ones until :meth:`fit_prior` is called).
    """

    stride = 32
    hub_kind = "cic"

    def __init__(self, config: CICConfig | None = None, *, pretrained_encoder: bool = False, compute_bins: bool = True) -> None:
        super().__init__()
        self.config = config = config or CICConfig()
        self.encoder = build_encoder(config.encoder, pretrained=pretrained_encoder, simple_channels=config.simple_channels)
        _, _, c8, c16, c32 = self.encoder.channels
        w = config.width
        self.lat8 = nn.Conv2d(c8, w, 1)
        self.lat16 = nn.Conv2d(c16, w, 1)
        self.lat32 = nn.Conv2d(c32, w, 1)
        # CIC conv5/conv6: dilation 2 at stride 8; conv7: plain.
        self.trunk = nn.Sequential(_cbr(w, w, dilation=2), _cbr(w, w, dilation=2), _cbr(w, w))
        # CIC conv8: one deconvolution to stride 4, then the 1x1 classifier.
        self.up = nn.Sequential(nn.ConvTranspose2d(w, w, 4, stride=2, padding=1), nn.ReLU(inplace=True), _cbr(w, w))
        self.classifier = nn.Conv2d(w, config.n_bins, 1)
        # compute_bins=False when the weights file will supply them (hub.load_model): ab_bins()
        # costs about 2 s, and a file from a build whose bin rule differed must win anyway.
        bins = ab_bins() if compute_bins else torch.zeros(config.n_bins, 2)
        if len(bins) != config.n_bins:
            raise ValueError(f"this build finds {len(bins)} in-gamut bins, the config says {config.n_bins}")
        self.register_buffer("bins", bins.clone())
        self.register_buffer("prior", torch.full((config.n_bins,), 1.0 / config.n_bins))
        self.register_buffer("class_weights", torch.ones(config.n_bins))

    # ------------------------------------------------------------------ network

    def forward(self, l_norm: torch.Tensor, raw: bool = False) -> torch.Tensor:
        H, W = check_l_input(l_norm, self.stride)
        _, _, s8, s16, s32 = self.encoder(l_norm)
        size = s8.shape[-2:]
        x = (
            self.lat8(s8)
            + F.interpolate(self.lat16(s16), size=size, mode="bilinear", align_corners=False)
            + F.interpolate(self.lat32(s32), size=size, mode="bilinear", align_corners=False)
        )
        logits = self.classifier(self.up(self.trunk(x)))
        if raw:
            return logits
        return self.decode(logits, (H, W))

    def decode(self, logits: torch.Tensor, size: tuple[int, int] | None = None) -> torch.Tensor:
        """Annealed mean of the bin distribution, upsampled to ``size``.

        Args:
            logits: ``(B, Q, h, w)``.
            size: output ``(H, W)``; None keeps ``(h, w)``.

        Returns:
            ``(B, 2, H, W)`` ab / 110.
        """
        # exp(log p / T) renormalised equals softmax(logits / T): the log-partition cancels.
        p = torch.softmax(logits.float() / self.config.temperature, dim=1)
        ab = torch.einsum("bqhw,qc->bchw", p, self.bins.float())
        if size is not None and tuple(ab.shape[-2:]) != tuple(size):
            ab = F.interpolate(ab, size=size, mode="bilinear", align_corners=False)
        return color.normalize_ab(ab).to(logits.dtype)

    # ------------------------------------------------------------------ training

    def _target_ab(self, ab_true_norm: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """Ground-truth ab in Lab units averaged down to the logits' resolution: ``(B, 2, h, w)``."""
        ab = color.denormalize_ab(ab_true_norm.float())
        return F.adaptive_avg_pool2d(ab, size) if tuple(ab.shape[-2:]) != tuple(size) else ab

    def _sq_dist(self, ab: torch.Tensor) -> torch.Tensor:
        """Squared distances of every pixel's ab to every bin: ``(B, 2, h, w) -> (B, Q, h, w)``.

        Computed as ``|x|^2 - 2 x.q + |q|^2``, accumulated in place into the one ``(B, Q, h, w)``
        result; the direct ``(x - q)^2`` broadcast would first build a ``(B, Q, 2, h, w)`` tensor.
        The cross term is two broadcast multiply-adds rather than an einsum: a matmul could run
        in TF32 or under autocast in bf16, whose rounding (about 1e-3 relative of terms up to
        2 * 110^2) would scramble the ranking. In float32 the expansion's cancellation leaves an
        error of a few 1e-3 Lab units squared (clamped at 0): enough to *rank* bins (only bins
        that near a tie can swap, and they are then equally near); :meth:`loss` recomputes the
        few distances it weights exactly (:meth:`_near_sq_dist`).
        """
        ab = ab.float()
        bins = self.bins.float()
        q = -2.0 * bins.view(1, -1, 2, 1, 1)  # (1, Q, 2, 1, 1)
        d2 = ab[:, 0:1] * q[:, :, 0]  # (B, Q, h, w): the only full-size allocation
        d2.addcmul_(ab[:, 1:2], q[:, :, 1])
        d2.add_(ab.square().sum(1, keepdim=True)).add_(bins.square().sum(1).view(1, -1, 1, 1))
        return d2.clamp_min_(0.0)

    def _near_sq_dist(self, ab: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        """Exact squared distances of each pixel's ab to chosen bins.

        Args:
            ab: ``(B, 2, h, w)`` ab in Lab units.
            idx: ``(B, k, h, w)`` bin indices.

        Returns:
            ``(B, k, h, w)`` float32 ``|ab - bins[idx]|^2`` (k is small: a ``(B, k, 2, h, w)``
            intermediate is cheap).
        """
        near = self.bins.float()[idx]  # (B, k, h, w, 2)
        return (ab.unsqueeze(1) - near.permute(0, 1, 4, 2, 3)).square().sum(2)

    def loss(self, logits: torch.Tensor, ab_true_norm: torch.Tensor) -> torch.Tensor:
        """Class-rebalanced cross-entropy against the soft-encoded truth (CIC's eq. 2 and 3).

        Args:
            logits: ``(B, Q, h, w)`` from ``forward(raw=True)``.
            ab_true_norm: ``(B, 2, H, W)`` true ab / 110 (averaged down to ``(h, w)``).

        Returns:
            A scalar loss.
        """
        ab = self._target_ab(ab_true_norm, logits.shape[-2:])
        k = self.config.neighbours
        near_idx = self._sq_dist(ab).topk(k, dim=1, largest=False).indices
        # The Gaussian weights from exact distances (the expanded square is only for ranking).
        near_d2 = self._near_sq_dist(ab, near_idx)
        soft = torch.softmax(-near_d2 / (2 * self.config.sigma**2), dim=1)  # Gaussian weights, normalised
        logp = torch.log_softmax(logits.float(), dim=1).gather(1, near_idx)
        ce = -(soft * logp).sum(1)  # (B, h, w)
        w = self.class_weights[near_idx[:, 0]]  # weight of the closest bin
        return (w * ce).mean()

    @torch.no_grad()
    def fit_prior(self, ab_batches: Iterable[torch.Tensor]) -> int:
        """Set ``prior`` and ``class_weights`` from training photos.

        Args:
            ab_batches: tensors ``(B, 2, H, W)`` of true ab / 110 (each pixel counted at 1/4
                resolution, as the loss sees it).

        Returns:
            The number of pixels counted.
        """
        counts = torch.zeros(self.config.n_bins, dtype=torch.float64)
        n = 0
        for ab_norm in ab_batches:
            h, w = ab_norm.shape[-2:]
            ab = self._target_ab(ab_norm.to(self.bins.device), (max(1, h // 4), max(1, w // 4)))
            idx = self._sq_dist(ab).argmin(1).flatten().cpu()
            counts += torch.bincount(idx, minlength=self.config.n_bins).double()
            n += idx.numel()
        if n == 0:
            raise ValueError("no pixels to fit the colour prior on")
        self.set_prior(counts / n)
        return n

    @torch.no_grad()
    def set_prior(self, prior: torch.Tensor) -> None:
        """Set the bin prior ``(Q,)`` (sums to 1) and derive CIC's rebalancing weights from it."""
        prior = prior.double().cpu()
        prior = prior / prior.sum()
        bins = self.bins.double().cpu()
        d2 = (bins[:, None, :] - bins[None, :, :]).square().sum(-1)
        kernel = torch.exp(-d2 / (2 * self.config.sigma**2))
        smooth = kernel @ prior
        smooth = smooth / smooth.sum()
        lam, q = self.config.rebalance_lambda, self.config.n_bins
        w = 1.0 / ((1 - lam) * smooth + lam / q)
        w = w / (smooth * w).sum()  # E_p~[w] = 1
        self.prior.copy_(prior.to(self.prior))
        self.class_weights.copy_(w.to(self.class_weights))
