"""Fit a generator's per-image chroma gain (:class:`colorgan.models.generator.ChromaGainHead`).

A generator trained to regress colour paints every photo about equally colourful: on the
held-out photos v0.3's per-image colourfulness correlates only 0.29 with the truth's, and most of
its ΔCF sits in the most colourful photos. The head predicts, from the encoder's global
features of the grey photo, how much more (or less) colourful this photo should be than the
network paints it: ``log(CF(truth) / CF(output))``. It is fitted by ridge regression, in closed
form, on *training* photos; the network's weights do not change:

    python -m colorgan.eval.calibrate --weights W --data HELDOUT --adaptive \\
        --fit-config configs/default.toml --fit-images 1200 --gains 1.0 --out adaptive.safetensors

Photos follow the 256 px protocol of the evaluation (short side 256, centre crop) at render size
256, the default render size. The pooled features depend on the scale the encoder sees and, a
little, on the framing, so the gain is most faithful at that render size: on the six example
photos v0.5's head gives the full frame at render size 256 a gain that differs from that of its
256 px centre crop by up to 0.04, and from that of the full frame at render size 512 by up to
0.08 and at 1024 by up to 0.10 (the gains themselves span 0.91-1.14 there).
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import os
import random
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

__all__ = ["GainSamples", "collect_samples", "RidgeFit", "fit_ridge", "with_gain_head", "without_gain_head", "training_files"]

log = logging.getLogger(__name__)

# A CF below this (a nearly grey output or truth) would make the log ratio meaningless.
_CF_FLOOR = 1.0


@dataclasses.dataclass(frozen=True)
class GainSamples:
    """Per-photo data for the fit.

    Attributes:
        features: ``(N, D)`` float64, :meth:`ChromaGainHead.features` of each photo.
        cf_output: ``(N,)`` CF of the network's output at gain 1 (0-255 scale).
        cf_truth: ``(N,)`` CF of the photo.
        files: the N photos used (unreadable and greyscale ones are left out).
    """

    features: np.ndarray
    cf_output: np.ndarray
    cf_truth: np.ndarray
    files: list[str]

    @property
    def target(self) -> np.ndarray:
        """``(N,)`` log(CF(truth) / CF(output)): the log gain that would match each photo."""
        return np.log(np.maximum(self.cf_truth, _CF_FLOOR) / np.maximum(self.cf_output, _CF_FLOOR))


def without_gain_head(model: torch.nn.Module) -> torch.nn.Module:
    """A copy of the network with no gain head (the head is fitted against the plain network).

    Always a copy, so that running it (eval mode, another device, channels-last) leaves the
    caller's model as it was.
    """
    from colorgan.models.generator import SAUNet

    if not isinstance(model, SAUNet):
        raise ValueError("only the ColorGAN generator (SAUNet) has a chroma gain head")
    if not model.config.adaptive_gain:
        return copy.deepcopy(model).eval()
    plain = SAUNet(dataclasses.replace(model.config, adaptive_gain=False))
    plain.load_state_dict({k: v for k, v in model.state_dict().items() if not k.startswith("gain_head.")})
    return plain.eval()


def collect_samples(
    model: torch.nn.Module,
    files: Sequence[str | os.PathLike],
    *,
    size: int = 256,
    render_size: int = 256,
    device: str | torch.device = "cpu",
) -> GainSamples:
    """Run the plain network (no gain head, its own ``chroma_gain``) on colour photos.

    Args:
        model: a SAUNet; a gain head it has is ignored.
        files: colour photos (training photos for the fit; held-out ones to check it).
        size: protocol size (short side resized to it, then centre-cropped square).
        render_size: short side the network sees.
        device: where the network runs.
    """
    from colorgan import color
    from colorgan.eval.calibrate import protocol_predictions
    from colorgan.eval.metrics import colourfulness
    from colorgan.models.generator import ChromaGainHead
    from colorgan.pipeline import Colorizer

    plain = without_gain_head(model)
    colorizer = Colorizer(plain, device=device)
    seen: dict[str, torch.Tensor] = {}

    def grab(_module: torch.nn.Module, _inputs: object, out: tuple[torch.Tensor, ...]) -> None:
        # The encoder returns its maps at strides 2, 4, 8, 16 and 32; the head reads the last two.
        seen["f"] = ChromaGainHead.features(out[3], out[4]).detach().cpu().double()

    feats: list[np.ndarray] = []
    cf_out: list[float] = []
    cf_true: list[float] = []
    used: list[str] = []
    hook = plain.encoder.register_forward_hook(grab)
    try:
        # The hook has seen this photo's forward pass by the time its prediction is yielded.
        for p in protocol_predictions(colorizer, files, size=size, render_size=render_size):
            if "f" not in seen or seen["f"].shape[0] != 1:
                raise RuntimeError("the encoder was not run once per photo; cannot read its features")
            out = color.merge_luminance(p.L, p.ab)[0].permute(1, 2, 0).numpy()
            feats.append(seen.pop("f")[0].numpy())
            cf_out.append(colourfulness(out))
            cf_true.append(colourfulness(p.truth))
            used.append(p.file)
    finally:
        hook.remove()
    if not used:
        raise ValueError("no colour photos to fit the gain head on")
    return GainSamples(np.stack(feats), np.array(cf_out), np.array(cf_true), used)


@dataclasses.dataclass(frozen=True)
class RidgeFit:
    """A linear map on raw features: ``y = features @ weight + bias``.

    Attributes:
        weight: ``(D,)``; bias: scalar; alpha: the ridge strength chosen (on standardised
        features, per sample); cv_mse: its cross-validated mean squared error; cv_mse_mean: that
        of predicting the training mean (the baseline the fit must beat).
    """

    weight: np.ndarray
    bias: float
    alpha: float
    cv_mse: float
    cv_mse_mean: float

    def predict(self, features: np.ndarray) -> np.ndarray:
        return features @ self.weight + self.bias


def _ridge(Xs: np.ndarray, y: np.ndarray, alpha: float) -> tuple[np.ndarray, float]:
    """Ridge on standardised features (no penalty on the intercept)."""
    n, d = Xs.shape
    ym = float(y.mean())
    # The dual form when D > N: (X X^T + a n I)^-1 is N x N.
    if d > n:
        K = Xs @ Xs.T
        c = np.linalg.solve(K + alpha * n * np.eye(n), y - ym)
        return Xs.T @ c, ym
    w = np.linalg.solve(Xs.T @ Xs + alpha * n * np.eye(d), Xs.T @ (y - ym))
    return w, ym


def fit_ridge(
    features: np.ndarray,
    target: np.ndarray,
    alphas: Sequence[float] = (1e-3, 3e-3, 1e-2, 3e-2, 0.1, 0.3, 1.0, 3.0, 10.0, 30.0, 100.0, 300.0, 1000.0),
    folds: int = 5,
    seed: int = 0,
) -> RidgeFit:
    """Ridge regression with its strength chosen by k-fold cross-validation.

    Features are standardised with the training fold's mean and std (constant columns get std
    1); the chosen fit is refitted on all samples and folded back into weights on raw features.

    Args:
        features: ``(N, D)``.
        target: ``(N,)``.
        alphas: candidate strengths (penalty ``alpha * N * |w|^2``), all > 0. A choice at either
            end of the range is logged as a warning: the best strength may lie beyond it.
        folds: k, at least 2 (at most N are used).
        seed: the fold assignment's seed.
    """
    X = np.asarray(features, dtype=np.float64)
    y = np.asarray(target, dtype=np.float64)
    n = X.shape[0]
    if X.ndim != 2 or y.shape != (n,):
        raise ValueError(f"features must be (N, D) and target (N,); got {X.shape} and {y.shape}")
    if n < 4:
        raise ValueError(f"need at least 4 photos to fit a gain head, got {n}")
    if folds < 2:
        raise ValueError(f"cross-validation needs at least 2 folds, got {folds}")
    if not alphas or min(alphas) <= 0:
        raise ValueError(f"ridge strengths must be > 0, got {list(alphas)}")
    k = min(folds, n)
    fold = np.random.default_rng(seed).permutation(n) % k

    def standardise(fit_rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        mu = X[fit_rows].mean(0)
        sd = X[fit_rows].std(0)
        return mu, np.where(sd > 1e-12, sd, 1.0)

    errors = {a: 0.0 for a in alphas}
    err_mean = 0.0
    for i in range(k):
        tr, te = fold != i, fold == i
        mu, sd = standardise(tr)
        Xtr, Xte = (X[tr] - mu) / sd, (X[te] - mu) / sd
        err_mean += float(np.sum((y[te] - y[tr].mean()) ** 2))
        for a in alphas:
            w, b = _ridge(Xtr, y[tr], a)
            errors[a] += float(np.sum((y[te] - (Xte @ w + b)) ** 2))
    best = min(alphas, key=lambda a: errors[a])
    if len(alphas) > 1 and best in (min(alphas), max(alphas)):
        log.warning("gain head: the chosen ridge strength %g is at the end of the range searched", best)
    mu, sd = standardise(np.ones(n, dtype=bool))
    w, b = _ridge((X - mu) / sd, y, best)
    weight = w / sd
    return RidgeFit(weight=weight, bias=float(b - mu @ weight), alpha=float(best), cv_mse=errors[best] / n, cv_mse_mean=err_mean / n)


def with_gain_head(model: torch.nn.Module, fit: RidgeFit) -> torch.nn.Module:
    """A copy of ``model`` whose gain head applies ``fit`` (log gain, clamped to the head's range)."""
    from colorgan.models.generator import SAUNet

    plain = without_gain_head(model)
    out = SAUNet(dataclasses.replace(plain.config, adaptive_gain=True))
    state = plain.state_dict()
    assert out.gain_head is not None
    if fit.weight.shape != (out.gain_head.linear.in_features,):
        raise ValueError(f"the fit has {fit.weight.shape[0]} weights; this network's head takes {out.gain_head.linear.in_features}")
    state["gain_head.linear.weight"] = torch.from_numpy(fit.weight).float()[None]
    state["gain_head.linear.bias"] = torch.tensor([fit.bias], dtype=torch.float32)
    out.load_state_dict(state)
    return out.eval()


def training_files(config_path: str | os.PathLike | None, n: int, seed: int = 0) -> list[Path]:
    """About ``n`` training photos in the training mix's proportions, never a held-out one.

    The folders, weights and hold-out rule are the training config's (``[[data]]``,
    ``val.holdout_every``), so that these are photos the network was trained on and the
    held-out photos stay unseen.
    """
    from colorgan.train.config import load_config
    from colorgan.train.data import holdout_split, scan_images

    if config_path is not None and Path(config_path).is_dir():
        raise ValueError(f"{config_path}: a folder, not a training recipe (.toml)")
    cfg = load_config(config_path)
    if not cfg.data:
        raise ValueError(f"{config_path}: no [[data]] folders")
    total = sum(s.weight for s in cfg.data)
    rng = random.Random(seed)
    picked: list[Path] = []
    for src in cfg.data:
        try:
            files = scan_images(src.path)
        except (OSError, ValueError) as e:
            raise ValueError(f"{config_path}: {e}") from None
        train, _ = holdout_split(files, cfg.val.holdout_every)
        want = max(1, round(n * src.weight / total))
        if not train:
            log.warning("%s: no training photos", src.path)
            continue
        picked += rng.sample(train, min(want, len(train)))
    return picked
