"""The per-image chroma gain: fitted by ridge regression on training photos.

A generator trained to regress colour paints every photo about equally colourful: on the
held-out photos v0.3's per-image colourfulness correlates only 0.29 with the truth's, and most of
its ΔCF sits in the most colourful photos. The per-image gain predicts, from the encoder's pooled
features of the grey photo (:func:`colorgan.models.calibration.gain_features`), how much more (or
less) colourful this photo should be than the network paints it: ``log(CF(truth) / CF(output))``.
It is fitted in closed form on *training* photos; the network's weights do not change.

Photos follow the 256 px protocol of the evaluation (short side 256, centre crop) at render size
256, the default render size. The pooled features depend on the scale the encoder sees and, a
little, on the framing, so the gain is most faithful at that render size: on the six example
photos v0.5's head gives the full frame at render size 256 a gain that differs from that of its
256 px centre crop by up to 0.04, and from that of the full frame at render size 512 by up to
0.08 and at 1024 by up to 0.10 (the gains themselves span 0.91-1.14 there).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import random
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np
import torch

from colorgan.models.calibration import MAX_GAIN, ChromaCalibration

if TYPE_CHECKING:
    from colorgan.train.config import TrainConfig

__all__ = ["GainSamples", "collect_samples", "RidgeFit", "fit_ridge", "head_calibration", "training_files", "heldout_files"]

log = logging.getLogger(__name__)

# A CF below this (a nearly grey output or truth) would make the log ratio meaningless.
_CF_FLOOR = 1.0


@dataclasses.dataclass(frozen=True)
class GainSamples:
    """Per-photo data for the fit.

    Attributes:
        features: ``(N, D)`` float64, :func:`~colorgan.models.calibration.gain_features` of each photo.
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


@torch.inference_mode()
def collect_samples(
    model: torch.nn.Module,
    files: Sequence[str | os.PathLike],
    *,
    size: int = 256,
    render_size: int = 256,
    device: str | torch.device = "cpu",
) -> GainSamples:
    """Run the bare network on colour photos: its features and the CF of its output and truth.

    Args:
        model: a SAUNet (the bare network: a calibration is never part of it; the network of a
            :class:`~colorgan.models.calibration.CalibratedGenerator` is used without its gain).
        files: colour photos (training photos for the fit; held-out ones to check it).
        size: protocol size (short side resized to it, then centre-cropped square).
        render_size: short side the network sees.
        device: where the network runs.
    """
    from colorgan import color
    from colorgan.calibrate.gain import protocol_photos
    from colorgan.eval.metrics import colourfulness
    from colorgan.models.calibration import gain_features
    from colorgan.models.fold import plain_model
    from colorgan.pipeline import resize_to_render

    net = plain_model(getattr(model, "net", model)).to(device)
    if not hasattr(net, "forward_features"):
        raise ValueError(f"a per-image chroma gain needs the generator's encoder features; a {type(net).__name__} has none")
    feats: list[np.ndarray] = []
    cf_out: list[float] = []
    cf_true: list[float] = []
    used: list[str] = []
    for p in protocol_photos(files, size=size):
        x = color.normalize_l(resize_to_render(p.L.to(device), render_size, net.stride).clamp(0, 100))
        ab_norm, (s16, s32) = net.forward_features(x)
        out = color.merge_luminance(p.L, color.denormalize_ab(ab_norm.float()).cpu())[0].permute(1, 2, 0).numpy()
        feats.append(gain_features(s16, s32)[0].cpu().double().numpy())
        cf_out.append(colourfulness(out))
        cf_true.append(colourfulness(p.truth))
        used.append(p.file)
    if not used:
        raise ValueError("no colour photos to fit the per-image gain on")
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


def head_calibration(fit: RidgeFit, gain: float = 1.0) -> ChromaCalibration:
    """The calibration that applies ``fit`` as the per-image log gain (clamped to +-log MAX_GAIN), times ``gain``."""
    return ChromaCalibration(gain=gain, head_weight=tuple(float(v) for v in fit.weight), head_bias=float(fit.bias), max_gain=MAX_GAIN)


def _recipe(config: "TrainConfig | str | os.PathLike | None") -> "tuple[TrainConfig, str]":
    """A training recipe given as a TrainConfig or a TOML path, and how to name it in errors."""
    from colorgan.train.config import TrainConfig, build_dataclass, read_values

    if isinstance(config, TrainConfig):
        where = "the recipe"
        cfg = config
    else:
        if config is not None and Path(config).is_dir():
            raise ValueError(f"{config}: a folder, not a training recipe (.toml)")
        where = str(config)
        values = read_values(config)
        values.pop("calibrate", None)  # a whole recipe's calibration table: this package's, not training's
        cfg = build_dataclass(TrainConfig, values)
    if not cfg.data:
        raise ValueError(f"{where}: no [[data]] folders")
    return cfg, where


def _split_folders(config: "TrainConfig | str | os.PathLike | None") -> "list[tuple[str, float, list[Path], list[Path]]]":
    """``(folder, weight, training files, held-out files)`` of each ``[[data]]`` folder of a recipe,
    split by the recipe's own hold-out rule (``val.holdout_every``, LFW by person)."""
    from colorgan.train.data import holdout_split, scan_images

    cfg, where = _recipe(config)
    out = []
    for src in cfg.data:
        try:
            files = scan_images(src.path)
        except (OSError, ValueError) as e:
            raise ValueError(f"{where}: {e}") from None
        train, held = holdout_split(files, cfg.val.holdout_every)
        out.append((src.path, src.weight, train, held))
    return out


def training_files(config: "TrainConfig | str | os.PathLike | None", n: int, seed: int = 0) -> list[Path]:
    """About ``n`` training photos in the training mix's proportions, never a held-out one.

    The folders, weights and hold-out rule are the training recipe's (``[[data]]``,
    ``val.holdout_every``), so that these are photos the network was trained on and the
    held-out photos stay unseen.

    Args:
        config: the recipe, or the path of its TOML file.
        n: about how many photos.
        seed: which ones.
    """
    folders = _split_folders(config)
    total = sum(w for _, w, _, _ in folders)
    rng = random.Random(seed)
    picked: list[Path] = []
    for path, weight, train, _ in folders:
        want = max(1, round(n * weight / total))
        if not train:
            log.warning("%s: no training photos", path)
            continue
        picked += rng.sample(train, min(want, len(train)))
    return picked


def heldout_files(config: "TrainConfig | str | os.PathLike | None", per_folder: int | None = None) -> list[Path]:
    """The photos a recipe holds out of its training folders: the first ``per_folder`` of each
    folder by file name (None: all), so that a large folder (faces) does not swamp the rest."""
    picked: list[Path] = []
    for _, _, _, held in _split_folders(config):
        picked += sorted(held)[:per_folder] if per_folder is not None else sorted(held)
    return picked
