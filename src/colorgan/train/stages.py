"""Training stages of the NoGAN schedule.

This module holds the generator pretraining stage: L1 on ab plus a feature loss, with the
pretrained encoder frozen for the first steps (so the random decoder cannot wreck its ImageNet
features) and then fine-tuned at a lower learning rate. Every stage is resumable from its last
atomic checkpoint and never re-run once finished.
"""

from __future__ import annotations

import csv
import logging
import math
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterator

import torch
import torch.nn as nn

from colorgan.train.checkpoint import load_checkpoint, save_checkpoint
from colorgan.train.data import DegradeConfig, MixedCrops
from colorgan.train.losses import FeatureLoss, pixel_loss, render_rgb

__all__ = ["PretrainGConfig", "pretrain_generator", "chroma_stats"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PretrainGConfig:
    """Generator pretraining: L1 + feature loss.

    Attributes:
        steps: optimiser steps in the stage.
        batch_size: images per step.
        sizes: progressive crop sizes, each used for an equal share of the steps.
        lr: peak learning rate of the decoder (cosine decay after a short warm-up).
        encoder_lr_mult: encoder learning rate = lr * this, once unfrozen.
        freeze_encoder_frac: share of the steps with the encoder frozen.
        l1_weight, feature_weight: loss weights.
        feature_net: ``mobilenet_v2`` or ``vgg19``.
        checkpoint_every: steps between checkpoints.
        eval_every: steps between validation scores.
        workers: DataLoader worker processes.
        seed: base seed.
    """

    steps: int = 1000
    batch_size: int = 16
    sizes: tuple[int, ...] = (128,)
    lr: float = 1e-3
    encoder_lr_mult: float = 0.1
    freeze_encoder_frac: float = 0.25
    l1_weight: float = 1.0
    feature_weight: float = 1.0
    feature_net: str = "mobilenet_v2"
    checkpoint_every: int = 100
    eval_every: int = 200
    workers: int = 1
    seed: int = 0
    degrade: DegradeConfig = field(default_factory=DegradeConfig)


def chroma_stats(ab_norm: torch.Tensor) -> torch.Tensor:
    """Mean chroma (sqrt(a^2 + b^2), in ab units) per image: ``(B, 2, H, W) -> (B,)``."""
    ab = ab_norm.float() * 110.0
    return ab.square().sum(1).sqrt().mean(dim=(1, 2))


def _size_at(cfg: PretrainGConfig, step: int) -> int:
    i = min(len(cfg.sizes) - 1, step * len(cfg.sizes) // max(1, cfg.steps))
    return cfg.sizes[i]


def _lr_factor(step: int, total: int, warmup: int = 50) -> float:
    if step < warmup:
        return (step + 1) / warmup
    t = (step - warmup) / max(1, total - warmup)
    return 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(1.0, t)))


def _loader(sources, size: int, cfg: PretrainGConfig, seed: int) -> Iterator[dict[str, torch.Tensor]]:
    ds = MixedCrops(sources, size, cfg.degrade, seed=seed)
    dl = torch.utils.data.DataLoader(
        ds, batch_size=cfg.batch_size, num_workers=cfg.workers, persistent_workers=cfg.workers > 0
    )
    return iter(dl)


@torch.no_grad()
def evaluate_generator(generator: nn.Module, val: dict[str, torch.Tensor], device: torch.device) -> dict[str, float]:
    """L1 in ab and colourfulness ratio (predicted / true mean chroma) on a fixed batch."""
    was_training = generator.training
    generator.eval()
    ab = generator(val["l"].to(device)).float().cpu()
    generator.train(was_training)
    true_c = chroma_stats(val["ab"]).mean().item()
    pred_c = chroma_stats(ab).mean().item()
    return {
        "val_l1_ab": pixel_loss(ab, val["ab"]).item() * 110.0,
        "val_chroma_ratio": pred_c / max(true_c, 1e-6),
    }


def pretrain_generator(
    generator: nn.Module,
    sources,
    out_dir: str | Path,
    cfg: PretrainGConfig,
    *,
    device: str | torch.device = "cpu",
    val: dict[str, torch.Tensor] | None = None,
    feature_loss: FeatureLoss | None = None,
) -> dict[str, float]:
    """Pretrain the generator alone; resumes from ``out_dir/pretrain_g.pt`` if present.

    Args:
        generator: a SAUNet (its ``encoder`` is frozen for the first part of the stage).
        sources: ``[(files, weight), ...]`` of colour photos.
        out_dir: the stage's folder (checkpoint, CSV log).
        cfg: the stage's settings.
        device: where to train.
        val: a fixed validation batch (see :func:`colorgan.train.data.fixed_batch`).
        feature_loss: a prepared feature loss (built from ``cfg.feature_net`` when None).

    Returns:
        The last validation scores (empty without ``val``).
    """
    device = torch.device(device)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    ckpt_path = out_dir / "pretrain_g.pt"
    generator.to(device).train()
    if cfg.feature_weight > 0 and feature_loss is None:
        feature_loss = FeatureLoss(cfg.feature_net)
    if feature_loss is not None:
        feature_loss.to(device)
    enc_params = list(generator.encoder.parameters())
    enc_ids = {id(p) for p in enc_params}
    dec_params = [p for p in generator.parameters() if id(p) not in enc_ids]
    opt = torch.optim.Adam(
        [{"params": dec_params, "lr": cfg.lr}, {"params": enc_params, "lr": cfg.lr * cfg.encoder_lr_mult}],
        betas=(0.9, 0.99),
    )
    base_lrs = [cfg.lr, cfg.lr * cfg.encoder_lr_mult]
    step = 0
    state = load_checkpoint(ckpt_path)
    if state is not None:
        generator.load_state_dict(state["generator"])
        opt.load_state_dict(state["optimizer"])
        step = int(state["step"])
        log.info("resumed generator pretraining at step %d", step)
    if step >= cfg.steps:
        return dict(state.get("scores", {})) if state else {}

    freeze_steps = int(cfg.freeze_encoder_frac * cfg.steps)
    size = _size_at(cfg, step)
    it = _loader(sources, size, cfg, cfg.seed + step)
    log_path = out_dir / "pretrain_g.csv"
    new_log = not log_path.exists()
    scores: dict[str, float] = {}
    t0, seen = time.time(), 0
    with open(log_path, "a", newline="") as f:
        writer = csv.writer(f)
        if new_log:
            writer.writerow(["step", "size", "loss", "l1", "feature", "lr", "img_per_s", "val_l1_ab", "val_chroma_ratio"])
        while step < cfg.steps:
            if _size_at(cfg, step) != size:
                size = _size_at(cfg, step)
                it = _loader(sources, size, cfg, cfg.seed + step)
            frozen = step < freeze_steps
            generator.encoder.requires_grad_(not frozen)
            generator.encoder.train(not frozen)  # frozen: keep ImageNet BatchNorm statistics
            batch = next(it)
            l_in, l, ab_true = (batch[k].to(device, non_blocking=True) for k in ("l_in", "l", "ab"))
            fac = _lr_factor(step, cfg.steps)
            for g, base in zip(opt.param_groups, base_lrs):
                g["lr"] = base * fac
            ab = generator(l_in)
            l1 = pixel_loss(ab, ab_true)
            loss = cfg.l1_weight * l1
            feat = torch.zeros(())
            if feature_loss is not None and cfg.feature_weight > 0:
                feat = feature_loss(render_rgb(l, ab), render_rgb(l, ab_true))
                loss = loss + cfg.feature_weight * feat
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(generator.parameters(), 5.0)
            opt.step()
            step += 1
            seen += l.shape[0]
            row_scores = {}
            if val is not None and (step % cfg.eval_every == 0 or step == cfg.steps):
                scores = evaluate_generator(generator, val, device)
                row_scores = scores
            if step % 10 == 0 or row_scores:
                rate = seen / max(1e-6, time.time() - t0)
                writer.writerow(
                    [step, size, f"{loss.item():.5f}", f"{l1.item():.5f}", f"{feat.item():.5f}", f"{opt.param_groups[0]['lr']:.2e}", f"{rate:.2f}",
                     f"{row_scores.get('val_l1_ab', float('nan')):.4f}", f"{row_scores.get('val_chroma_ratio', float('nan')):.4f}"]
                )
                f.flush()
                log.info("step %d/%d size %d loss %.4f (l1 %.4f feat %.4f) %.1f img/s %s", step, cfg.steps, size,
                         loss.item(), l1.item(), feat.item(), rate, row_scores or "")
            if step % cfg.checkpoint_every == 0 or step == cfg.steps:
                save_checkpoint(
                    {"generator": generator.state_dict(), "optimizer": opt.state_dict(), "step": step,
                     "scores": scores, "config": repr(asdict(cfg))},
                    ckpt_path,
                )
    return scores
