"""The NoGAN schedule: pretrain the generator, pretrain the critic, short TTUR GAN phases, cycles.

``run_training`` runs a whole recipe into a run folder::

    RUN/config.json                 the recipe (asdict)
    RUN/progress.json               stages finished so far (a finished stage never re-runs)
    RUN/state/generator.pt, critic.pt   the networks as the last finished stage left them
    RUN/stages/NN_name/             each stage: checkpoint.pt, log.csv, curves.png, grids/
    RUN/generator.safetensors       the exported generator (fp16), loadable by Colorizer

Every stage checkpoints atomically every N steps, including optimiser and RNG states; batches are
a pure function of (seed, stage, rank, step) (see :class:`~colorgan.train.data.StepBatches`), so
a run that was killed (even with ``kill -9``) and resumed ends in the same state as one that was
not, losing only the steps since the last checkpoint. Ctrl-C saves a checkpoint before exiting.

With ``torchrun``, every process trains on its own shard (by seed) under
DistributedDataParallel (gloo on CPU, nccl on GPUs); only rank 0 writes files.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
import torch.distributed as dist
import torch.nn as nn

from colorgan.train.checkpoint import load_checkpoint, save_checkpoint
from colorgan.train.config import GanConfig, PretrainCConfig, PretrainGConfig, TrainConfig
from colorgan.train.data import StepBatches, holdout_split, mixed_fixed_batch, scan_images
from colorgan.train.losses import FeatureLoss, chroma_loss, colourfulness_loss, critic_loss, generator_adv_loss, pixel_loss, render_rgb
from colorgan.train.monitor import CsvLog, Plateau, plot_curves, save_grid, val_scores

__all__ = [
    "Context",
    "plan_stages",
    "pretrain_generator",
    "pretrain_critic",
    "train_gan",
    "run_training",
    "build_context",
]

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------- context


@dataclass
class Context:
    """What every stage needs: recipe, folders, data, validation batch, device, process group."""

    cfg: TrainConfig
    run_dir: Path
    sources: list[tuple[list[Path], float]]
    val: dict[str, torch.Tensor]
    device: torch.device
    rank: int = 0
    world_size: int = 1
    progress: bool = True
    stop_after: int | None = None  # test hook: stop (as if killed) after this many steps in total
    _feature_loss: FeatureLoss | None = field(default=None, repr=False)
    steps_done: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def amp(self) -> bool:
        return self.device.type == "cuda"

    def autocast(self):
        # bf16 autocast on GPUs (no loss scaling needed); plain fp32 on CPU, where bf16 is slower.
        return torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.amp)

    def feature_loss(self) -> FeatureLoss:
        if self._feature_loss is None:
            self._feature_loss = FeatureLoss(self.cfg.feature_net).to(self.device)
        return self._feature_loss

    def loader(self, stream: str, size: int, batch_size: int, start: int, steps: int, degrade: bool = True) -> Iterator[dict]:
        ds = StepBatches(
            self.sources,
            size,
            batch_size,
            self.cfg.degrade if degrade else None,
            seed=self.cfg.seed,
            stream=stream,
            rank=self.rank,
            length=steps,
        )
        dl = torch.utils.data.DataLoader(
            torch.utils.data.Subset(ds, range(start, steps)),
            batch_size=None,
            num_workers=self.cfg.workers,
            pin_memory=self.device.type == "cuda",
            prefetch_factor=2 if self.cfg.workers > 0 else None,
            # Its own generator: creating a loader must not draw from the global RNG, or a resumed
            # run (which creates loaders at different points) would drift from an uninterrupted one.
            generator=torch.Generator().manual_seed(self.cfg.seed),
        )
        return iter(dl)

    def barrier(self) -> None:
        if self.world_size > 1:
            dist.barrier()


class _Interrupted(Exception):
    """Raised by the test hook ``stop_after`` to simulate a kill after a checkpoint."""


def _tick(ctx: Context) -> None:
    ctx.steps_done += 1
    if ctx.stop_after is not None and ctx.steps_done >= ctx.stop_after:
        raise _Interrupted()


def _unwrap(m: nn.Module) -> nn.Module:
    return m.module if isinstance(m, nn.parallel.DistributedDataParallel) else m


def _wrap(m: nn.Module, ctx: Context) -> nn.Module:
    if ctx.world_size <= 1:
        return m
    ids = [ctx.device.index] if ctx.device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(m, device_ids=ids)


def _rng_state() -> dict[str, Any]:
    s = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        s["cuda"] = torch.cuda.get_rng_state_all()
    return s


def _set_rng_state(s: dict[str, Any]) -> None:
    torch.set_rng_state(s["torch"])
    if "cuda" in s and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(s["cuda"])


@contextmanager
def _stage_guard(save: Callable[[], None], bar, csv_log: CsvLog | None) -> Iterator[None]:
    """Around a stage's loop: Ctrl-C saves a checkpoint first; the bar and the log always close."""
    try:
        yield
    except KeyboardInterrupt:
        save()
        raise
    finally:
        bar.close()
        if csv_log is not None:
            csv_log.close()


def _resume(ckpt: Path, ctx: Context, parts: dict[str, Any]) -> dict[str, Any] | None:
    """Load a stage checkpoint, if any, into ``parts`` (checkpoint key -> module, optimiser or
    tracker with ``load_state_dict``) and restore the RNG state. Returns the checkpoint, for the
    stage's own extra fields, or None."""
    state = load_checkpoint(ckpt, ctx.device)
    if state is not None:
        for key, obj in parts.items():
            obj.load_state_dict(state[key])
        _set_rng_state(state["rng"])
        log.info("resuming %s at step %d", ckpt.parent.name, int(state["step"]))
    return state


def _bar(ctx: Context, total: int, start: int, desc: str):
    from tqdm import tqdm

    return tqdm(total=total, initial=start, desc=desc, unit="step", disable=not (ctx.progress and ctx.is_main), dynamic_ncols=True)


def _lr_factor(step: int, total: int, warmup: int = 50) -> float:
    """Linear warm-up then cosine decay to 5% of the peak."""
    warmup = min(warmup, max(1, total // 10))
    if step < warmup:
        return (step + 1) / warmup
    t = (step - warmup) / max(1, total - warmup)
    return 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(1.0, t)))


@torch.no_grad()
def evaluate(generator: nn.Module, ctx: Context) -> tuple[dict[str, float], torch.Tensor]:
    """Critic-independent validation scores of the generator on the fixed batch."""
    g = _unwrap(generator)
    was = g.training
    g.eval()
    with ctx.autocast():
        ab = torch.cat([g(ctx.val["l"][i : i + 16].to(ctx.device)).float() for i in range(0, len(ctx.val["l"]), 16)])
    g.train(was)
    return val_scores(ab, ctx.val["ab"], ctx.val["l"]), ab.cpu()


# --------------------------------------------------------------------------- stage 1: generator


def pretrain_generator(generator: nn.Module, ctx: Context, stage_dir: Path, cfg: PretrainGConfig) -> dict[str, float]:
    """Pretrain the generator alone: L1 + feature loss; encoder frozen first, then fine-tuned.

    A model with a ``loss(raw_output, ab_true)`` method (the CIC and Iizuka baselines) is trained
    with that objective instead, on the same batches and schedule.

    Returns:
        The last validation scores.
    """
    g = generator.to(ctx.device).train()
    if ctx.device.type == "cuda":
        g = g.to(memory_format=torch.channels_last)
    enc_ids = {id(p) for p in g.encoder.parameters()}
    dec = [p for p in g.parameters() if id(p) not in enc_ids]
    opt = torch.optim.Adam(
        [{"params": dec, "lr": cfg.lr}, {"params": list(g.encoder.parameters()), "lr": cfg.lr * cfg.encoder_lr_mult}],
        betas=(0.9, 0.99),
    )
    ckpt = stage_dir / "checkpoint.pt"
    state = _resume(ckpt, ctx, {"generator": g, "opt_g": opt})
    if state is None and hasattr(g, "fit_prior") and not ctx.cfg.init_generator:
        # CIC's class rebalancing needs the colour prior before its first step; a resumed stage
        # has it in the checkpoint's buffers, and given weights bring their own.
        _fit_prior(g, ctx, ctx.cfg)
    step = int(state["step"]) if state else 0
    gw = _wrap(g, ctx)
    own_loss = getattr(g, "loss", None)  # the baselines' objectives; SAUNet has none
    feat_loss = ctx.feature_loss() if cfg.feature_weight > 0 and own_loss is None else None
    freeze_steps = int(cfg.freeze_encoder_frac * cfg.steps)
    csv_log = CsvLog(stage_dir / "log.csv", ["step", "size", "loss", "l1", "feature", "cf", "chroma", "lr", "img_per_s", "skipped_files", "l1_ab", "chroma_ratio", "cf_ratio", "dcf", "hist_js", "score"]) if ctx.is_main else None
    skipped = int(state.get("skipped", 0)) if state else 0
    scores: dict[str, float] = dict(state.get("scores", {})) if state else {}

    def save() -> None:
        if ctx.is_main:
            save_checkpoint({"generator": g.state_dict(), "opt_g": opt.state_dict(), "rng": _rng_state(), "step": step, "scores": scores, "skipped": skipped}, ckpt)

    n_sizes = len(cfg.sizes)
    bounds = [cfg.steps * (i + 1) // n_sizes for i in range(n_sizes)]
    bar = _bar(ctx, cfg.steps, step, stage_dir.name)
    t0, seen = time.time(), 0
    with _stage_guard(save, bar, csv_log):
        while step < cfg.steps:
            phase = next(i for i, b in enumerate(bounds) if step < b)
            size = cfg.sizes[phase]
            for batch in ctx.loader(f"pretrain_g:{size}", size, cfg.batch_size, step, bounds[phase]):
                frozen = step < freeze_steps
                # Frozen encoder: its learning rate is 0 and BatchNorm keeps ImageNet statistics.
                # (lr = 0 rather than requires_grad=False keeps DistributedDataParallel's hooks valid.)
                g.encoder.train(not frozen)
                fac = _lr_factor(step, cfg.steps)
                opt.param_groups[0]["lr"] = cfg.lr * fac
                opt.param_groups[1]["lr"] = 0.0 if frozen else cfg.lr * cfg.encoder_lr_mult * fac
                l_in, l, ab_true = (batch[k].to(ctx.device, non_blocking=True) for k in ("l_in", "l", "ab"))
                # Greyscale (and unreadable) files met while sampling: counted, logged, never trained on.
                skipped += int(batch["skipped"])
                feat = torch.zeros((), device=ctx.device)
                cf = torch.zeros((), device=ctx.device)
                chroma = torch.zeros((), device=ctx.device)
                if own_loss is not None:
                    # A baseline with its own objective (CIC: rebalanced cross-entropy; Iizuka:
                    # MSE); L1 is only logged, so that the curves compare with our generator's.
                    with ctx.autocast():
                        raw = gw(l_in, raw=True)
                    loss = own_loss(raw.float(), ab_true)
                    with torch.no_grad():
                        l1 = pixel_loss(g.decode(raw.detach().float(), l_in.shape[-2:]), ab_true)
                else:
                    with ctx.autocast():
                        ab = gw(l_in).float()
                    l1 = pixel_loss(ab, ab_true)
                    loss = cfg.l1_weight * l1
                    if cfg.chroma_weight > 0:
                        chroma = chroma_loss(ab, ab_true)
                        loss = loss + cfg.chroma_weight * chroma
                if own_loss is None and (feat_loss is not None or cfg.cf_weight > 0):
                    rgb_pred, rgb_true = render_rgb(l, ab), render_rgb(l, ab_true)
                    if feat_loss is not None:
                        feat = feat_loss(rgb_pred, rgb_true)
                        loss = loss + cfg.feature_weight * feat
                    if cfg.cf_weight > 0:
                        cf = colourfulness_loss(rgb_pred, rgb_true)
                        loss = loss + cfg.cf_weight * cf
                opt.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(g.parameters(), 5.0)
                opt.step()
                step += 1
                seen += l.shape[0] * ctx.world_size
                bar.update(1)
                row: dict[str, Any] = {}
                if step % cfg.eval_every == 0 or step == cfg.steps:
                    scores, ab_val = evaluate(gw, ctx)
                    row = scores
                    if ctx.is_main:
                        save_grid(ctx.val["l"], ab_val, ctx.val["ab"], stage_dir / "grids" / f"step{step:06d}.png")
                if ctx.is_main and (step % 10 == 0 or row):
                    rate = seen / max(1e-6, time.time() - t0)
                    csv_log.write({"step": step, "size": size, "loss": loss.item(), "l1": l1.item(), "feature": feat.item(), "cf": cf.item(), "chroma": chroma.item(),
                                   "lr": opt.param_groups[0]["lr"], "img_per_s": rate, "skipped_files": skipped, **row})
                    bar.set_postfix(loss=f"{loss.item():.3f}", img_s=f"{rate:.1f}")
                if step % cfg.checkpoint_every == 0 or step == cfg.steps:
                    save()
                _tick(ctx)
    if ctx.is_main:
        if skipped:
            log.info("%s: %d greyscale or unreadable files were skipped while sampling", stage_dir.name, skipped)
        plot_curves(stage_dir / "log.csv", stage_dir / "curves.png", ["loss", "l1", "feature", *(["cf"] if cfg.cf_weight > 0 else []), *(["chroma"] if cfg.chroma_weight > 0 else []), "cf_ratio", "dcf", "score"], "generator pretraining")
    return {**scores, "skipped_files": skipped}


# --------------------------------------------------------------------------- stage 2: critic


def _critic_input(l_norm: torch.Tensor, ab_norm: torch.Tensor) -> torch.Tensor:
    return torch.cat([l_norm, ab_norm], dim=1)


def _accuracy(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> float:
    return 0.5 * ((real_logits > 0).float().mean().item() + (fake_logits < 0).float().mean().item())


def pretrain_critic(generator: nn.Module, critic: nn.Module, ctx: Context, stage_dir: Path, cfg: PretrainCConfig, stream: str) -> dict[str, float]:
    """Train the critic alone as a binary classifier: real photos vs the current generator's output.

    Returns:
        ``{"critic_acc": ...}``: the accuracy over the last 50 steps.
    """
    g = generator.to(ctx.device).eval()
    c = critic.to(ctx.device).train()
    opt = torch.optim.Adam(c.parameters(), lr=cfg.lr, betas=(0.5, 0.99))
    ckpt = stage_dir / "checkpoint.pt"
    state = _resume(ckpt, ctx, {"critic": c, "opt_c": opt})
    step = int(state["step"]) if state else 0
    cw = _wrap(c, ctx)
    csv_log = CsvLog(stage_dir / "log.csv", ["step", "loss_c", "critic_acc", "img_per_s"]) if ctx.is_main else None
    accs: list[float] = list(state.get("accs", [])) if state else []

    def save() -> None:
        if ctx.is_main:
            save_checkpoint({"critic": c.state_dict(), "opt_c": opt.state_dict(), "rng": _rng_state(), "step": step, "accs": accs}, ckpt)

    bar = _bar(ctx, cfg.steps, step, stage_dir.name)
    t0, seen = time.time(), 0
    with _stage_guard(save, bar, csv_log):
        for batch in ctx.loader(stream, cfg.size, cfg.batch_size, step, cfg.steps):
            l_in, l, ab_true = (batch[k].to(ctx.device, non_blocking=True) for k in ("l_in", "l", "ab"))
            with torch.no_grad(), ctx.autocast():
                ab_fake = _unwrap(g)(l_in).float()
            with ctx.autocast():
                # Real and fake in one forward: DDP needs one forward per backward.
                logits = cw(torch.cat([_critic_input(l, ab_true), _critic_input(l, ab_fake)])).float()
            real, fake = logits.chunk(2)
            loss = critic_loss(real, fake)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            seen += l.shape[0] * ctx.world_size
            accs = (accs + [_accuracy(real, fake)])[-50:]
            bar.update(1)
            if ctx.is_main and (step % 10 == 0 or step == cfg.steps):
                acc = sum(accs) / len(accs)
                csv_log.write({"step": step, "loss_c": loss.item(), "critic_acc": acc, "img_per_s": seen / max(1e-6, time.time() - t0)})
                bar.set_postfix(loss=f"{loss.item():.3f}", acc=f"{acc:.3f}")
            if step % cfg.checkpoint_every == 0 or step == cfg.steps:
                save()
            _tick(ctx)
    if ctx.is_main:
        plot_curves(stage_dir / "log.csv", stage_dir / "curves.png", ["loss_c", "critic_acc"], "critic pretraining")
    return {"critic_acc": sum(accs) / max(1, len(accs))}


# --------------------------------------------------------------------------- stage 3: GAN


def train_gan(generator: nn.Module, critic: nn.Module, ctx: Context, stage_dir: Path, cfg: GanConfig, stream: str) -> dict[str, Any]:
    """The GAN phase with TTUR; stops by itself at the inflection point and keeps the best generator.

    Order of a step (pix2pix): the critic on detached fakes and reals, then the generator with the
    critic frozen. Generator loss = adv_weight * adversarial + l1_weight * L1 + feature_weight *
    feature.

    Returns:
        ``{"stop_reason", "best_step", "best_score", "scores"}``; the generator is left holding
        the best weights.
    """
    g = generator.to(ctx.device).train()
    c = critic.to(ctx.device).train()
    opt_g = torch.optim.Adam(g.parameters(), lr=cfg.lr_g, betas=tuple(cfg.betas))
    opt_c = torch.optim.Adam(c.parameters(), lr=cfg.lr_c, betas=tuple(cfg.betas))
    ckpt = stage_dir / "checkpoint.pt"
    best_path = stage_dir / "best_generator.pt"
    plateau = Plateau(cfg.patience, cfg.min_evals, cfg.critic_acc_high, cfg.critic_acc_low)
    state = _resume(ckpt, ctx, {"generator": g, "critic": c, "opt_g": opt_g, "opt_c": opt_c, "plateau": plateau})
    step = int(state["step"]) if state else 0
    stop_reason: str | None = state.get("stop_reason") if state else None
    accs: list[float] = list(state.get("accs", [])) if state else []
    gw, cw = _wrap(g, ctx), _wrap(c, ctx)
    feat_loss = ctx.feature_loss() if cfg.feature_weight > 0 else None
    cols = ["step", "loss_c", "loss_g", "adv", "l1", "feature", "critic_acc", "img_per_s", "l1_ab", "chroma_ratio", "cf_ratio", "dcf", "hist_js", "score", "best"]
    csv_log = CsvLog(stage_dir / "log.csv", cols) if ctx.is_main else None
    scores: dict[str, float] = {}

    def save() -> None:
        if ctx.is_main:
            save_checkpoint(
                {"generator": g.state_dict(), "critic": c.state_dict(), "opt_g": opt_g.state_dict(), "opt_c": opt_c.state_dict(),
                 "rng": _rng_state(), "plateau": plateau.state_dict(), "step": step, "stop_reason": stop_reason, "accs": accs},
                ckpt,
            )

    if plateau.evals == 0 and state is None:
        # Score the starting point: the GAN phase must beat the generator it started from.
        scores, ab_val = evaluate(gw, ctx)
        plateau.update(0, scores["score"], 0.75)
        plateau.evals = 0  # the baseline does not count towards min_evals
        if ctx.is_main:
            save_checkpoint({"generator": g.state_dict()}, best_path)
            save_grid(ctx.val["l"], ab_val, ctx.val["ab"], stage_dir / "grids" / "step000000.png")
    bar = _bar(ctx, cfg.steps, step, stage_dir.name)
    t0, seen = time.time(), 0
    with _stage_guard(save, bar, csv_log):
        if stop_reason is None and step < cfg.steps:
            for batch in ctx.loader(stream, cfg.size, cfg.batch_size, step, cfg.steps):
                l_in, l, ab_true = (batch[k].to(ctx.device, non_blocking=True) for k in ("l_in", "l", "ab"))
                # 1) critic on detached fakes and reals
                with torch.no_grad(), ctx.autocast():
                    ab_fake = g(l_in).float()
                with ctx.autocast():
                    logits = cw(torch.cat([_critic_input(l, ab_true), _critic_input(l, ab_fake)])).float()
                real, fake = logits.chunk(2)
                loss_c = critic_loss(real, fake)
                opt_c.zero_grad(set_to_none=True)
                loss_c.backward()
                opt_c.step()
                accs = (accs + [_accuracy(real, fake)])[-cfg.eval_every :]
                # 2) generator with the critic frozen (the unwrapped critic: no DDP hooks)
                c.requires_grad_(False)
                with ctx.autocast():
                    ab = gw(l_in).float()
                    adv = generator_adv_loss(c(_critic_input(l, ab)).float())
                l1 = pixel_loss(ab, ab_true)
                feat = feat_loss(render_rgb(l, ab), render_rgb(l, ab_true)) if feat_loss is not None else torch.zeros((), device=ctx.device)
                loss_g = cfg.adv_weight * adv + cfg.l1_weight * l1 + cfg.feature_weight * feat
                opt_g.zero_grad(set_to_none=True)
                loss_g.backward()
                opt_g.step()
                c.requires_grad_(True)
                step += 1
                seen += l.shape[0] * ctx.world_size
                bar.update(1)
                row: dict[str, Any] = {}
                if step % cfg.eval_every == 0 or step == cfg.steps:
                    scores, ab_val = evaluate(gw, ctx)
                    acc = sum(accs) / max(1, len(accs))
                    is_best, stop_reason = plateau.update(step, scores["score"], acc)
                    row = {**scores, "best": int(is_best)}
                    if ctx.is_main:
                        if is_best:
                            save_checkpoint({"generator": g.state_dict()}, best_path)
                        save_grid(ctx.val["l"], ab_val, ctx.val["ab"], stage_dir / "grids" / f"step{step:06d}.png")
                if ctx.is_main and (step % 10 == 0 or row):
                    csv_log.write({"step": step, "loss_c": loss_c.item(), "loss_g": loss_g.item(), "adv": adv.item(), "l1": l1.item(),
                                   "feature": feat.item(), "critic_acc": sum(accs) / len(accs),
                                   "img_per_s": seen / max(1e-6, time.time() - t0), **row})
                    bar.set_postfix(adv=f"{adv.item():.3f}", acc=f"{sum(accs) / len(accs):.2f}")
                if step % cfg.checkpoint_every == 0 or step == cfg.steps or stop_reason:
                    save()
                _tick(ctx)
                if stop_reason:
                    break
    if stop_reason is None:
        stop_reason = f"reached the step limit ({cfg.steps})"
        save()
    ctx.barrier()
    best = load_checkpoint(best_path, ctx.device)
    if best is not None:
        g.load_state_dict(best["generator"])
    result = {"stop_reason": stop_reason, "best_step": plateau.best_step, "best_score": plateau.best, "scores": scores}
    if ctx.is_main:
        log.info("%s stopped: %s; keeping step %d (score %.4f)", stage_dir.name, stop_reason, plateau.best_step, plateau.best)
        plot_curves(stage_dir / "log.csv", stage_dir / "curves.png", ["loss_c", "adv", "l1", "critic_acc", "cf_ratio", "dcf", "score"], "GAN phase")
    return result


# --------------------------------------------------------------------------- the whole recipe


def plan_stages(cfg: TrainConfig) -> list[tuple[str, str, int]]:
    """``[(folder name, kind, cycle), ...]`` in order: pretrain_g, then cycles x (pretrain_c, gan).

    The baselines (``method`` cic or iizuka) have no adversarial stages: pretrain_g only.
    """
    plan = [("00_pretrain_g", "pretrain_g", 0)]
    if cfg.method != "nogan":
        return plan
    for cyc in range(1, cfg.cycles + 1):
        plan.append((f"{2 * cyc - 1:02d}_pretrain_c_cycle{cyc}", "pretrain_c", cyc))
        plan.append((f"{2 * cyc:02d}_gan_cycle{cyc}", "gan", cyc))
    return plan


def _dist_from_env(device: torch.device) -> tuple[int, int, torch.device]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1, device
    rank = int(os.environ["RANK"])
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return rank, world, device


def build_context(cfg: TrainConfig, run_dir: Path, *, device: str | torch.device = "cpu", val_dirs: list[Path] | None = None, progress: bool = True) -> Context:
    """Scan the data, split off validation (unless ``val_dirs``), set up the process group."""
    rank, world, dev = _dist_from_env(torch.device(device))
    if not cfg.data:
        raise ValueError("no training data: give --data DIR (or [[data]] entries in the config)")
    sources, held_out = [], []
    for src in cfg.data:
        files = scan_images(src.path)
        if not files:
            raise ValueError(f"{src.path}: no images found")
        if val_dirs:
            train = files
        else:
            train, va = holdout_split(files, cfg.val.holdout_every)
            held_out.append((va, src.weight))  # validation keeps the training mix's weights
            if not train:  # tiny folders: keep training on everything rather than nothing
                train = files
        sources.append((train, src.weight))
    if val_dirs:
        held_out = [([f for d in val_dirs for f in scan_images(d)], 1.0)]
        if not held_out[0][0]:
            raise ValueError(f"no images in the validation folders: {', '.join(str(d) for d in val_dirs)}")
    val_from = "held-out"
    if not any(files for files, _ in held_out):
        held_out, val_from = sources, "training (folders too small to hold any out)"
    val = mixed_fixed_batch(held_out, cfg.val.size, cfg.val.images, seed=cfg.seed + 1234)
    n_val_files = sum(len(files) for files, _ in held_out)
    if rank == 0:
        log.info("training on %d files in %d folders; %d validation crops from %d %s files",
                 sum(len(f) for f, _ in sources), len(sources), len(val["l"]), n_val_files, val_from)
    return Context(cfg=cfg, run_dir=run_dir, sources=sources, val=val, device=dev, rank=rank, world_size=world, progress=progress)


def _read_progress(run_dir: Path) -> dict[str, Any]:
    p = run_dir / "progress.json"
    return json.loads(p.read_text()) if p.exists() else {"done": {}}


def _write_progress(run_dir: Path, progress: dict[str, Any]) -> None:
    tmp = run_dir / ".progress.json.tmp"
    tmp.write_text(json.dumps(progress, indent=2))
    os.replace(tmp, run_dir / "progress.json")


#: Batches of 64 px crops the CIC baseline's colour prior is measured on (16 x 100 = 1600 photos).
PRIOR_BATCHES = 100


def _fit_prior(model: nn.Module, ctx: Context, cfg: TrainConfig) -> None:
    """Measure CIC's empirical ab-bin prior on the training mix (its own sample stream, no degradation)."""
    n_batches = max(1, min(PRIOR_BATCHES, cfg.pretrain_g.steps))
    batches = (b["ab"] for b in ctx.loader("prior", 64, cfg.pretrain_g.batch_size, 0, n_batches, degrade=False))
    n = model.fit_prior(batches)  # type: ignore[operator]
    log.info("colour prior measured on %d pixels (%d batches)", n, n_batches)


def run_training(
    cfg: TrainConfig,
    run_dir: str | Path,
    *,
    device: str | torch.device = "cpu",
    resume: bool = False,
    val_dirs: list[Path] | None = None,
    progress: bool = True,
    stop_after: int | None = None,
    on_stage: Callable[[str, dict], None] | None = None,
) -> Path:
    """Run (or resume) a whole NoGAN recipe and export the generator.

    Args:
        cfg: the recipe.
        run_dir: the run folder (created; must be new or empty unless ``resume``).
        device: where to train (under torchrun, CUDA ranks use their LOCAL_RANK GPU).
        resume: continue a run in ``run_dir`` from its checkpoints.
        val_dirs: folders for validation (default: held out from the training folders).
        progress: show progress bars.
        stop_after: test hook: stop as if killed after this many steps in total.
        on_stage: called with (stage name, result) after each finished stage.

    Returns:
        The exported ``generator.safetensors``.
    """
    from colorgan.models import hub
    from colorgan.models.critic import Critic

    run_dir = Path(run_dir)
    torch.manual_seed(cfg.seed)
    ctx = build_context(cfg, run_dir, device=device, val_dirs=val_dirs, progress=progress)
    ctx.stop_after = stop_after
    cfg_json = cfg.to_json()
    if ctx.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        existing = run_dir / "config.json"
        if existing.exists():
            if not resume:
                raise FileExistsError(f"{run_dir} already holds a run; pass --resume to continue it, or choose another --out")
            if existing.read_text() != cfg_json:
                log.warning("the recipe differs from the one this run started with; continuing with the new one")
        existing.write_text(cfg_json)
    ctx.barrier()

    gen_cfg, crit_cfg = cfg.generator_config(), cfg.critic_config()
    torch.manual_seed(cfg.seed)
    generator = cfg.build_generator(pretrained=not cfg.init_generator)
    if cfg.init_generator:
        init = hub.load_model(cfg.init_generator, expect_kind=hub.kind_of(generator))
        init_cfg = init.config
        if getattr(init_cfg, "adaptive_gain", False) or getattr(init_cfg, "chroma_gain", 1.0) != 1.0:
            # Shipped weights are calibrated after training (global gain, gain head); training
            # goes on from the network itself, at gain 1, and is calibrated afresh afterwards.
            from colorgan.eval.gain_head import without_gain_head

            log.info("%s: calibrated weights; training starts from its network without the calibration", cfg.init_generator)
            init = without_gain_head(init)
            init_cfg = replace(init.config, chroma_gain=1.0)
        if init_cfg != gen_cfg:
            raise ValueError(f"{cfg.init_generator}: its architecture differs from the recipe's generator")
        generator.load_state_dict(init.state_dict())
    critic = Critic(crit_cfg)
    state_dir = run_dir / "state"
    progress_state = _read_progress(run_dir)
    if (state_dir / "generator.pt").exists():
        generator.load_state_dict(torch.load(state_dir / "generator.pt", map_location="cpu", weights_only=True))
    if (state_dir / "critic.pt").exists():
        critic.load_state_dict(torch.load(state_dir / "critic.pt", map_location="cpu", weights_only=True))

    for name, kind, cycle in plan_stages(cfg):
        if name in progress_state["done"]:
            continue
        stage_dir = run_dir / "stages" / name
        if ctx.is_main:
            stage_dir.mkdir(parents=True, exist_ok=True)
        ctx.barrier()
        t0 = time.time()
        if kind == "pretrain_g":
            result: dict[str, Any] = pretrain_generator(generator, ctx, stage_dir, cfg.pretrain_g) if cfg.pretrain_g.steps > 0 else {}
        elif kind == "pretrain_c":
            result = pretrain_critic(generator, critic, ctx, stage_dir, cfg.pretrain_c, stream=f"pretrain_c:{cycle}")
        else:
            result = train_gan(generator, critic, ctx, stage_dir, cfg.gan, stream=f"gan:{cycle}")
        result = {**result, "seconds": time.time() - t0}
        if ctx.is_main:
            save_checkpoint(_unwrap(generator).state_dict(), state_dir / "generator.pt")
            save_checkpoint(_unwrap(critic).state_dict(), state_dir / "critic.pt")
            progress_state["done"][name] = json.loads(json.dumps(result, default=float))
            _write_progress(run_dir, progress_state)
            log.info("finished %s: %s", name, result)
        ctx.barrier()
        if on_stage is not None:
            on_stage(name, result)

    out = run_dir / "generator.safetensors"
    if ctx.is_main:
        hub.save_model(
            _unwrap(generator).eval(),
            out,
            dtype=torch.float16,
            extra={"training": json.dumps({"recipe": json.loads(cfg_json), "stages": progress_state["done"]})},
        )
        log.info("exported %s", out)
    ctx.barrier()
    return out

