"""What a generator is trained to minimise, one object per method.

The stage runner (:mod:`colorgan.train.stages`) does not know which model it trains: it asks the
method's objective for the loss of a batch. ColorGAN's generator is trained with reconstruction
terms on its ab (L1, chroma) and on the rendered sRGB (feature loss, colourfulness loss); the
paper's baselines bring their own objectives as a ``loss(raw_output, ab_true)`` method of the
model (CIC: class-rebalanced cross-entropy over ab bins; Iizuka: MSE), trained on the same
batches and schedule.
"""

from __future__ import annotations

from contextlib import nullcontext
from typing import Callable, ContextManager, Iterable, Protocol

import torch
import torch.nn as nn

from colorgan.train.config import PretrainGConfig
from colorgan.train.losses import FeatureLoss, chroma_loss, colourfulness_loss, pixel_loss, render_rgb

__all__ = ["Objective", "Reconstruction", "ModelObjective", "objective_for", "OBJECTIVE_COLUMNS"]

#: What every objective logs (zeros where a term is off), so that curves compare across methods.
OBJECTIVE_COLUMNS = ("loss", "l1", "feature", "cf", "chroma")


class Objective(Protocol):
    """The loss of one batch for the model being trained."""

    def __call__(
        self, model: nn.Module, l_in: torch.Tensor, l: torch.Tensor, ab_true: torch.Tensor,
        autocast: Callable[[], ContextManager] = nullcontext,
    ) -> dict[str, torch.Tensor]:
        """Args: the (possibly DDP-wrapped) model, degraded input L, clean L (both normalised,
        ``(B, 1, H, W)``), the true normalised ab ``(B, 2, H, W)``, and the context the model's
        forward runs in (bf16 autocast on GPUs).

        Returns:
            ``{"loss": scalar to minimise, **terms}`` with every key of :data:`OBJECTIVE_COLUMNS`.
        """
        ...

    def prepare(self, model: nn.Module, ab_batches: Callable[[], Iterable[torch.Tensor]]) -> None:
        """Called once before a fresh model's first step (not on resume, not for given weights)."""
        ...


class Reconstruction:
    """ColorGAN's generator: ``l1_weight * L1 + chroma_weight * chroma + feature_weight * feature
    + cf_weight * colourfulness``, the last two on the rendered sRGB."""

    def __init__(self, cfg: PretrainGConfig, feature_loss: Callable[[], FeatureLoss]) -> None:
        self.cfg = cfg
        self.feature_loss = feature_loss() if cfg.feature_weight > 0 else None

    def __call__(
        self, model: nn.Module, l_in: torch.Tensor, l: torch.Tensor, ab_true: torch.Tensor,
        autocast: Callable[[], ContextManager] = nullcontext,
    ) -> dict[str, torch.Tensor]:
        cfg = self.cfg
        zero = torch.zeros((), device=ab_true.device)
        with autocast():
            ab = model(l_in).float()
        l1 = pixel_loss(ab, ab_true)
        terms = {"l1": l1, "feature": zero, "cf": zero, "chroma": zero}
        loss = cfg.l1_weight * l1
        if cfg.chroma_weight > 0:
            terms["chroma"] = chroma_loss(ab, ab_true)
            loss = loss + cfg.chroma_weight * terms["chroma"]
        if self.feature_loss is not None or cfg.cf_weight > 0:
            rgb_pred, rgb_true = render_rgb(l, ab), render_rgb(l, ab_true)
            if self.feature_loss is not None:
                terms["feature"] = self.feature_loss(rgb_pred, rgb_true)
                loss = loss + cfg.feature_weight * terms["feature"]
            if cfg.cf_weight > 0:
                terms["cf"] = colourfulness_loss(rgb_pred, rgb_true)
                loss = loss + cfg.cf_weight * terms["cf"]
        return {"loss": loss, **terms}

    def prepare(self, model: nn.Module, ab_batches: Callable[[], Iterable[torch.Tensor]]) -> None:
        pass


class ModelObjective:
    """A model that brings its own objective: ``model.loss(model(l, raw=True), ab_true)``.

    L1 of its decoded output is logged (not trained on), so its curves compare with our
    generator's. A model with a ``fit_prior(ab_batches)`` method (CIC's class rebalancing needs
    the training mix's colour prior) has it measured before its first step.
    """

    def __call__(
        self, model: nn.Module, l_in: torch.Tensor, l: torch.Tensor, ab_true: torch.Tensor,
        autocast: Callable[[], ContextManager] = nullcontext,
    ) -> dict[str, torch.Tensor]:
        bare = model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model
        with autocast():
            raw = model(l_in, raw=True)
        loss = bare.loss(raw.float(), ab_true)
        with torch.no_grad():
            l1 = pixel_loss(bare.decode(raw.detach().float(), l_in.shape[-2:]), ab_true)
        zero = torch.zeros((), device=ab_true.device)
        return {"loss": loss, "l1": l1, "feature": zero, "cf": zero, "chroma": zero}

    def prepare(self, model: nn.Module, ab_batches: Callable[[], Iterable[torch.Tensor]]) -> None:
        fit_prior = getattr(model, "fit_prior", None)
        if fit_prior is not None:
            fit_prior(ab_batches())


def objective_for(model: nn.Module, cfg: PretrainGConfig, feature_loss: Callable[[], FeatureLoss]) -> Reconstruction | ModelObjective:
    """The objective of the method ``model`` belongs to (the feature network is built only when used)."""
    if callable(getattr(model, "loss", None)):
        return ModelObjective()
    return Reconstruction(cfg, feature_loss)
