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

from colorgan.hints import simulate_dense, simulate_points
from colorgan.train.checkpoint import load_checkpoint, save_checkpoint
from colorgan.train.config import GanConfig, GuidanceConfig, PretrainCConfig, PretrainGConfig, TrainConfig
from colorgan.train.data import StepBatches, holdout_split, mixed_fixed_batch, scan_images
from colorgan.train.losses import FeatureLoss, critic_loss, generator_adv_loss, pixel_loss, render_rgb
from colorgan.train.objectives import objective_for
from colorgan.train.monitor import CsvLog, Plateau, plot_curves, save_grid, val_scores

__all__ = [
    "Context",
    "Stage",
    "run_stage",
    "GeneratorPretraining",
    "CriticPretraining",
    "GanPhase",
    "GuidanceTraining",
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


# --------------------------------------------------------------------------- the stage runner


class Stage:
    """One stage of the recipe: what it trains and how one step goes; :func:`run_stage` does the rest.

    A stage names the objects its checkpoint holds (:meth:`parts`: modules, optimisers and
    trackers with ``state_dict``/``load_state_dict``) and any plain values (:meth:`extra_state`),
    yields its batches from a given step on, and computes one step's losses (pix2pix's
    ``optimize_parameters``, returning a dict instead of setting attributes). The runner owns
    resume, atomic checkpoints, Ctrl-C, the progress bar, the CSV log, the validation tick,
    the curves and the ``stop_after`` test hook, once for every stage.

    Attributes:
        title: the curves' title.
        columns: the CSV log's columns (``step`` first).
        curves: the columns plotted.
        progress: the columns shown beside the progress bar.
        steps: the stage's length in optimiser steps.
        checkpoint_every: steps between checkpoints (and always at the end).
        eval_every: steps between validations (and at the end), or 0 for none.
        batch_size: crops per step on each process.
    """

    title = ""
    columns: tuple[str, ...] = ("step",)
    curves: tuple[str, ...] = ()
    progress: tuple[str, ...] = ()
    steps = 0
    checkpoint_every = 1
    eval_every = 0
    batch_size = 1

    def __init__(self, ctx: Context, stage_dir: Path) -> None:
        self.ctx = ctx
        self.dir = stage_dir

    def parts(self) -> dict[str, Any]:
        """Checkpoint key -> object with ``state_dict()`` and ``load_state_dict()``."""
        return {}

    def extra_state(self) -> dict[str, Any]:
        """Plain values saved in the checkpoint beside the parts."""
        return {}

    def load_extra(self, state: dict[str, Any]) -> None:
        """Restore :meth:`extra_state` from a checkpoint."""

    def start(self, resumed: bool) -> None:
        """Before the first step of this process (``resumed``: from a checkpoint)."""

    def batches(self, start: int) -> Iterator[dict]:
        """The batches of steps ``start, start + 1, ..., steps - 1``."""
        raise NotImplementedError

    def step(self, batch: dict, step: int) -> dict[str, Any]:
        """One optimiser step on ``batch`` (step ``step``, counted from 0); returns losses to log."""
        raise NotImplementedError

    def validate(self, step: int) -> dict[str, Any]:
        """Scores after ``step`` steps, logged in the same row."""
        return {}

    @property
    def stop_reason(self) -> str | None:
        """Set by a stage that stops itself early (the GAN phase's inflection rule)."""
        return None

    def end(self, step: int) -> bool:
        """After the loop (also when nothing was left to do); True when the checkpoint must be saved again."""
        return False

    def result(self) -> dict[str, Any]:
        """What the stage reports to ``progress.json``."""
        return {}


def run_stage(stage: Stage, ctx: Context) -> dict[str, Any]:
    """Run (or resume) one stage to its end and return its result.

    Resumes from ``stage.dir / "checkpoint.pt"`` when it exists (parts, RNG state, step and the
    stage's own values), checkpoints atomically every ``checkpoint_every`` steps, at the end, when
    the stage stops itself and on Ctrl-C; logs a CSV row every 10 steps and at every validation.
    """
    ckpt = stage.dir / "checkpoint.pt"
    parts = stage.parts()
    state = _resume(ckpt, ctx, parts)
    step = int(state["step"]) if state else 0
    if state is not None:
        stage.load_extra(state)
    stage.start(resumed=state is not None)
    csv_log = CsvLog(stage.dir / "log.csv", list(stage.columns), after=step) if ctx.is_main else None

    def save() -> None:
        if ctx.is_main:
            save_checkpoint({**{k: obj.state_dict() for k, obj in parts.items()}, "rng": _rng_state(), "step": step, **stage.extra_state()}, ckpt)

    bar = _bar(ctx, stage.steps, step, stage.dir.name)
    t0, seen = time.time(), 0
    with _stage_guard(save, bar, csv_log):
        if stage.stop_reason is None and step < stage.steps:
            for batch in stage.batches(step):
                losses = stage.step(batch, step)
                step += 1
                seen += stage.batch_size * ctx.world_size
                bar.update(1)
                row: dict[str, Any] = {}
                if stage.eval_every and (step % stage.eval_every == 0 or step == stage.steps):
                    row = stage.validate(step)
                if ctx.is_main and (step % 10 == 0 or row or step == stage.steps):
                    # .item() only here: one device sync per logged step, not per step.
                    values = {k: v.item() if torch.is_tensor(v) else float(v) for k, v in losses.items()}
                    csv_log.write({"step": step, **values, "img_per_s": seen / max(1e-6, time.time() - t0), **row})
                    bar.set_postfix({k: f"{values[k]:.3f}" for k in stage.progress if k in values})
                if step % stage.checkpoint_every == 0 or step == stage.steps or stage.stop_reason:
                    save()
                _tick(ctx)
                if stage.stop_reason:
                    break
    if stage.end(step):
        save()
    ctx.barrier()
    result = stage.result()
    if ctx.is_main:
        plot_curves(stage.dir / "log.csv", stage.dir / "curves.png", list(stage.curves), stage.title)
    return result


# --------------------------------------------------------------------------- the stages


def _batch_tensors(batch: dict, ctx: Context) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return tuple(batch[k].to(ctx.device, non_blocking=True) for k in ("l_in", "l", "ab"))  # type: ignore[return-value]


def _critic_input(l_norm: torch.Tensor, ab_norm: torch.Tensor) -> torch.Tensor:
    return torch.cat([l_norm, ab_norm], dim=1)


def _accuracy(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> float:
    return 0.5 * ((real_logits > 0).float().mean().item() + (fake_logits < 0).float().mean().item())


def _critic_step(g: nn.Module, cw: nn.Module, opt_c: torch.optim.Optimizer, l_in: torch.Tensor, l: torch.Tensor, ab_true: torch.Tensor, ctx: Context) -> tuple[torch.Tensor, float]:
    """One critic update on reals and the generator's detached fakes; returns (loss, accuracy)."""
    with torch.no_grad(), ctx.autocast():
        ab_fake = g(l_in).float()
    with ctx.autocast():
        # Real and fake in one forward: DDP needs one forward per backward.
        logits = cw(torch.cat([_critic_input(l, ab_true), _critic_input(l, ab_fake)])).float()
    real, fake = logits.chunk(2)
    loss = critic_loss(real, fake)
    opt_c.zero_grad(set_to_none=True)
    loss.backward()
    opt_c.step()
    return loss, _accuracy(real, fake)


class GeneratorPretraining(Stage):
    """The generator alone, with its method's objective (:mod:`colorgan.train.objectives`); the
    encoder frozen for the first ``freeze_encoder_frac`` of the steps, then fine-tuned at a lower
    rate; progressive resizing over ``sizes``; cosine learning rate. Also the recipe's final
    fine-tuning (``stream="finetune"``: its own batches; ``fresh=False``: the model is trained
    already, so the objective's preparation, CIC's colour prior, is not redone)."""

    title = "generator pretraining"
    columns = ("step", "size", "loss", "l1", "feature", "cf", "chroma", "lr", "img_per_s", "skipped_files",
               "l1_ab", "chroma_ratio", "cf_ratio", "dcf", "hist_js", "score")
    progress = ("loss",)

    def __init__(
        self, generator: nn.Module, ctx: Context, stage_dir: Path, cfg: PretrainGConfig, *, stream: str = "pretrain_g", fresh: bool = True
    ) -> None:
        super().__init__(ctx, stage_dir)
        self.cfg, self.stream, self.fresh = cfg, stream, fresh
        self.steps, self.checkpoint_every, self.eval_every, self.batch_size = cfg.steps, cfg.checkpoint_every, cfg.eval_every, cfg.batch_size
        g = self.g = generator.to(ctx.device).train()
        if ctx.device.type == "cuda":
            g = self.g = g.to(memory_format=torch.channels_last)
        enc_ids = {id(p) for p in g.encoder.parameters()}
        dec = [p for p in g.parameters() if id(p) not in enc_ids]
        self.opt = torch.optim.Adam(
            [{"params": dec, "lr": cfg.lr}, {"params": list(g.encoder.parameters()), "lr": cfg.lr * cfg.encoder_lr_mult}],
            betas=(0.9, 0.99),
        )
        self.objective = objective_for(g, cfg, ctx.feature_loss)
        self.gw = _wrap(g, ctx)
        self.freeze_steps = int(cfg.freeze_encoder_frac * cfg.steps)
        self.bounds = [cfg.steps * (i + 1) // len(cfg.sizes) for i in range(len(cfg.sizes))]
        self.skipped = 0
        self.scores: dict[str, float] = {}
        self.curves = ("loss", "l1", "feature", *(("cf",) if cfg.cf_weight > 0 else ()), *(("chroma",) if cfg.chroma_weight > 0 else ()), "cf_ratio", "dcf", "score")

    def parts(self) -> dict[str, Any]:
        return {"generator": self.g, "opt_g": self.opt}

    def extra_state(self) -> dict[str, Any]:
        return {"scores": self.scores, "skipped": self.skipped}

    def load_extra(self, state: dict[str, Any]) -> None:
        self.scores, self.skipped = dict(state.get("scores", {})), int(state.get("skipped", 0))

    def start(self, resumed: bool) -> None:
        if not resumed and self.fresh:
            # Given weights, an earlier stage or a resumed checkpoint already hold what this measures.
            self.objective.prepare(self.g, lambda: _prior_batches(self.ctx))

    def _size(self, step: int) -> tuple[int, int]:
        phase = next(i for i, b in enumerate(self.bounds) if step < b)
        return self.cfg.sizes[phase], self.bounds[phase]

    def batches(self, start: int) -> Iterator[dict]:
        step = start
        while step < self.steps:
            size, end = self._size(step)
            for batch in self.ctx.loader(f"{self.stream}:{size}", size, self.cfg.batch_size, step, end):
                yield batch
                step += 1

    def step(self, batch: dict, step: int) -> dict[str, Any]:
        cfg, g, opt = self.cfg, self.g, self.opt
        frozen = step < self.freeze_steps
        # Frozen encoder: its learning rate is 0 and BatchNorm keeps ImageNet statistics.
        # (lr = 0 rather than requires_grad=False keeps DistributedDataParallel's hooks valid.)
        g.encoder.train(not frozen)
        fac = _lr_factor(step, cfg.steps)
        opt.param_groups[0]["lr"] = cfg.lr * fac
        opt.param_groups[1]["lr"] = 0.0 if frozen else cfg.lr * cfg.encoder_lr_mult * fac
        l_in, l, ab_true = _batch_tensors(batch, self.ctx)
        # Greyscale (and unreadable) files met while sampling: counted, logged, never trained on.
        self.skipped += int(batch["skipped"])
        losses = self.objective(self.gw, l_in, l, ab_true, autocast=self.ctx.autocast)
        opt.zero_grad(set_to_none=True)
        losses["loss"].backward()
        torch.nn.utils.clip_grad_norm_(g.parameters(), 5.0)
        opt.step()
        return {"size": self._size(step)[0], **losses, "lr": opt.param_groups[0]["lr"], "skipped_files": self.skipped}

    def validate(self, step: int) -> dict[str, Any]:
        self.scores, ab_val = evaluate(self.gw, self.ctx)
        if self.ctx.is_main:
            save_grid(self.ctx.val["l"], ab_val, self.ctx.val["ab"], self.dir / "grids" / f"step{step:06d}.png")
        return self.scores

    def result(self) -> dict[str, Any]:
        if self.ctx.is_main and self.skipped:
            log.info("%s: %d greyscale or unreadable files were skipped while sampling", self.dir.name, self.skipped)
        return {**self.scores, "skipped_files": self.skipped}


class CriticPretraining(Stage):
    """The critic alone, as a binary classifier: real photos vs the current generator's output."""

    title = "critic pretraining"
    columns = ("step", "loss_c", "critic_acc", "img_per_s")
    curves = ("loss_c", "critic_acc")
    progress = ("loss_c", "critic_acc")

    def __init__(self, generator: nn.Module, critic: nn.Module, ctx: Context, stage_dir: Path, cfg: PretrainCConfig, stream: str) -> None:
        super().__init__(ctx, stage_dir)
        self.cfg, self.stream = cfg, stream
        self.steps, self.checkpoint_every, self.batch_size = cfg.steps, cfg.checkpoint_every, cfg.batch_size
        self.g = generator.to(ctx.device).eval()
        self.c = critic.to(ctx.device).train()
        self.opt = torch.optim.Adam(self.c.parameters(), lr=cfg.lr, betas=(0.5, 0.99))
        self.cw = _wrap(self.c, ctx)
        self.accs: list[float] = []

    def parts(self) -> dict[str, Any]:
        return {"critic": self.c, "opt_c": self.opt}

    def extra_state(self) -> dict[str, Any]:
        return {"accs": self.accs}

    def load_extra(self, state: dict[str, Any]) -> None:
        self.accs = list(state.get("accs", []))

    def batches(self, start: int) -> Iterator[dict]:
        return self.ctx.loader(self.stream, self.cfg.size, self.cfg.batch_size, start, self.cfg.steps)

    def step(self, batch: dict, step: int) -> dict[str, Any]:
        loss, acc = _critic_step(_unwrap(self.g), self.cw, self.opt, *_batch_tensors(batch, self.ctx), self.ctx)
        self.accs = (self.accs + [acc])[-50:]
        return {"loss_c": loss, "critic_acc": sum(self.accs) / len(self.accs)}

    def result(self) -> dict[str, Any]:
        return {"critic_acc": sum(self.accs) / max(1, len(self.accs))}


class GanPhase(Stage):
    """The GAN phase with TTUR; stops by itself at the inflection point and keeps the best generator.

    Order of a step (pix2pix): the critic on detached fakes and reals, then the generator with the
    critic frozen. Generator loss = adv_weight * adversarial + l1_weight * L1 + feature_weight *
    feature.
    """

    title = "GAN phase"
    columns = ("step", "loss_c", "loss_g", "adv", "l1", "feature", "critic_acc", "img_per_s", "l1_ab", "chroma_ratio", "cf_ratio", "dcf", "hist_js", "score", "best")
    curves = ("loss_c", "adv", "l1", "critic_acc", "cf_ratio", "dcf", "score")
    progress = ("adv", "critic_acc")

    def __init__(self, generator: nn.Module, critic: nn.Module, ctx: Context, stage_dir: Path, cfg: GanConfig, stream: str) -> None:
        super().__init__(ctx, stage_dir)
        self.cfg, self.stream = cfg, stream
        self.steps, self.checkpoint_every, self.eval_every, self.batch_size = cfg.steps, cfg.checkpoint_every, cfg.eval_every, cfg.batch_size
        self.g = generator.to(ctx.device).train()
        self.c = critic.to(ctx.device).train()
        self.opt_g = torch.optim.Adam(self.g.parameters(), lr=cfg.lr_g, betas=tuple(cfg.betas))
        self.opt_c = torch.optim.Adam(self.c.parameters(), lr=cfg.lr_c, betas=tuple(cfg.betas))
        self.plateau = Plateau(cfg.patience, cfg.min_evals, cfg.critic_acc_high, cfg.critic_acc_low)
        self.gw, self.cw = _wrap(self.g, ctx), _wrap(self.c, ctx)
        self.feat_loss = ctx.feature_loss() if cfg.feature_weight > 0 else None
        self.best_path = stage_dir / "best_generator.pt"
        self._stop: str | None = None
        self.accs: list[float] = []
        self.scores: dict[str, float] = {}

    @property
    def stop_reason(self) -> str | None:
        return self._stop

    def parts(self) -> dict[str, Any]:
        return {"generator": self.g, "critic": self.c, "opt_g": self.opt_g, "opt_c": self.opt_c, "plateau": self.plateau}

    def extra_state(self) -> dict[str, Any]:
        return {"stop_reason": self._stop, "accs": self.accs}

    def load_extra(self, state: dict[str, Any]) -> None:
        self._stop, self.accs = state.get("stop_reason"), list(state.get("accs", []))

    def start(self, resumed: bool) -> None:
        if resumed or self.plateau.evals != 0:
            return
        # Score the starting point: the GAN phase must beat the generator it started from.
        scores, ab_val = evaluate(self.gw, self.ctx)
        self.plateau.update(0, scores["score"], 0.75)
        self.plateau.evals = 0  # the baseline does not count towards min_evals
        if self.ctx.is_main:
            save_checkpoint({"generator": self.g.state_dict()}, self.best_path)
            save_grid(self.ctx.val["l"], ab_val, self.ctx.val["ab"], self.dir / "grids" / "step000000.png")

    def batches(self, start: int) -> Iterator[dict]:
        return self.ctx.loader(self.stream, self.cfg.size, self.cfg.batch_size, start, self.cfg.steps)

    def step(self, batch: dict, step: int) -> dict[str, Any]:
        ctx, cfg, g, c = self.ctx, self.cfg, self.g, self.c
        l_in, l, ab_true = _batch_tensors(batch, ctx)
        # 1) critic on detached fakes and reals
        loss_c, acc = _critic_step(g, self.cw, self.opt_c, l_in, l, ab_true, ctx)
        self.accs = (self.accs + [acc])[-cfg.eval_every :]
        # 2) generator with the critic frozen (the unwrapped critic: no DDP hooks)
        c.requires_grad_(False)
        with ctx.autocast():
            ab = self.gw(l_in).float()
            adv = generator_adv_loss(c(_critic_input(l, ab)).float())
        l1 = pixel_loss(ab, ab_true)
        feat = self.feat_loss(render_rgb(l, ab), render_rgb(l, ab_true)) if self.feat_loss is not None else torch.zeros((), device=ctx.device)
        loss_g = cfg.adv_weight * adv + cfg.l1_weight * l1 + cfg.feature_weight * feat
        self.opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        self.opt_g.step()
        c.requires_grad_(True)
        return {"loss_c": loss_c, "loss_g": loss_g, "adv": adv, "l1": l1, "feature": feat, "critic_acc": sum(self.accs) / len(self.accs)}

    def validate(self, step: int) -> dict[str, Any]:
        self.scores, ab_val = evaluate(self.gw, self.ctx)
        acc = sum(self.accs) / max(1, len(self.accs))
        is_best, self._stop = self.plateau.update(step, self.scores["score"], acc)
        if self.ctx.is_main:
            if is_best:
                save_checkpoint({"generator": self.g.state_dict()}, self.best_path)
            save_grid(self.ctx.val["l"], ab_val, self.ctx.val["ab"], self.dir / "grids" / f"step{step:06d}.png")
        return {**self.scores, "best": int(is_best)}

    def end(self, step: int) -> bool:
        if self._stop is not None:
            return False
        self._stop = f"reached the step limit ({self.cfg.steps})"
        return True

    def result(self) -> dict[str, Any]:
        best = load_checkpoint(self.best_path, self.ctx.device)
        if best is not None:
            self.g.load_state_dict(best["generator"])  # the generator leaves holding the best weights
        if self.ctx.is_main:
            log.info("%s stopped: %s; keeping step %d (score %.4f)", self.dir.name, self._stop, self.plateau.best_step, self.plateau.best)
        return {"stop_reason": self._stop, "best_step": self.plateau.best_step, "best_score": self.plateau.best, "scores": self.scores}


def simulate_guidance(ab_norm: torch.Tensor, cfg: GuidanceConfig, generator: torch.Generator) -> torch.Tensor:
    """Guidance for a batch, simulated from its true ab: points for most images, dense for some.

    Returns:
        ``(B, 3, H, W)`` ``[a, b, confidence]`` (see :mod:`colorgan.hints`).
    """
    B = ab_norm.shape[0]
    dense = torch.rand(B, generator=generator) < cfg.p_dense
    # A geometric number of points with the given mean, at least one (the automatic output needs
    # no training: with no guidance the branch adds exactly zero).
    p = 1.0 / max(1.0, cfg.mean_points)
    u = torch.rand(B, generator=generator).clamp_min(1e-12)
    counts = (torch.floor(torch.log(u) / math.log(1 - p)) + 1 if p < 1 else torch.ones(B)).clamp(1, cfg.max_points).long().tolist()
    guide = simulate_points(ab_norm, [0 if d else n for d, n in zip(dense.tolist(), counts)], generator)
    if bool(dense.any()):
        idx = dense.nonzero().flatten()
        guide[idx] = simulate_dense(ab_norm[idx], generator)
    return guide


class GuidanceTraining(Stage):
    """The generator's guidance branch (and, with ``cfg.decoder``, its guided decoder, first copied
    from the automatic one), on guidance simulated from the truth.

    The automatic network is frozen and everything stays in eval mode (BatchNorm statistics and
    spectral norm's vectors do not move), so the automatic output of the result is bit for bit
    that of the network it started from. Loss: L1 on ab plus ``hint_weight`` x L1 on the guided pixels.
    Validation: the unguided scores (unchanged by construction) and L1 with 10 simulated points
    (``l1_10pts``) on the fixed validation batch.
    """

    title = "guidance"
    columns = ("step", "loss", "l1", "l1_hint", "lr", "img_per_s", "l1_0pts", "l1_10pts")
    curves = ("loss", "l1", "l1_hint", "l1_10pts")
    progress = ("loss", "l1_hint")

    def __init__(self, generator: nn.Module, ctx: Context, stage_dir: Path, cfg: GuidanceConfig) -> None:
        super().__init__(ctx, stage_dir)
        self.cfg = cfg
        self.steps, self.checkpoint_every, self.eval_every, self.batch_size = cfg.steps, cfg.checkpoint_every, cfg.eval_every, cfg.batch_size
        g = self.g = generator.to(ctx.device)
        params = g.guidance_parameters()
        if not params:
            raise ValueError("the guidance stage needs a generator with a guidance branch (GeneratorConfig.guidance)")
        decoder = g.guided_decoder_parameters()
        if cfg.decoder != bool(decoder):
            raise ValueError("guidance.decoder must match the generator's guided_decoder")
        if decoder and not bool(g.guided_ready):
            g.start_guided_decoder()  # a resumed stage then loads its own checkpoint over this
        trained = {id(q) for q in params + decoder}
        for q in g.parameters():
            q.requires_grad_(id(q) in trained)
        groups = [{"params": params, "lr": cfg.lr, "base_lr": cfg.lr}]
        if decoder:
            groups.append({"params": decoder, "lr": cfg.decoder_lr, "base_lr": cfg.decoder_lr})
        self.opt = torch.optim.Adam(groups, betas=(0.9, 0.99))
        self.gw = _wrap(g, ctx)
        self.scores: dict[str, float] = {}

    def parts(self) -> dict[str, Any]:
        return {"generator": self.g, "opt_guidance": self.opt}

    def extra_state(self) -> dict[str, Any]:
        return {"scores": self.scores}

    def load_extra(self, state: dict[str, Any]) -> None:
        self.scores = dict(state.get("scores", {}))

    def batches(self, start: int) -> Iterator[dict]:
        return self.ctx.loader(f"guidance:{self.cfg.size}", self.cfg.size, self.cfg.batch_size, start, self.cfg.steps)

    def step(self, batch: dict, step: int) -> dict[str, Any]:
        cfg, ctx = self.cfg, self.ctx
        self.g.eval()  # the frozen network keeps its statistics; the branch has no mode-dependent layer
        fac = _lr_factor(step, cfg.steps)
        for group in self.opt.param_groups:
            group["lr"] = group["base_lr"] * fac
        l_in, _, ab_true = _batch_tensors(batch, ctx)
        # The simulated guidance is a pure function of (seed, rank, step), like the batches.
        gen = torch.Generator().manual_seed(cfg_seed(ctx, "guidance", step))
        guide = simulate_guidance(ab_true.cpu(), cfg, gen).to(ctx.device)
        with ctx.autocast():
            ab = self.gw(l_in, guide).float()
        l1 = pixel_loss(ab, ab_true)
        conf = guide[:, 2:3]
        l1_hint = ((ab - ab_true).abs() * conf).sum() / (2 * conf.sum()).clamp_min(1.0)
        loss = l1 + cfg.hint_weight * l1_hint
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        return {"loss": loss, "l1": l1, "l1_hint": l1_hint, "lr": self.opt.param_groups[0]["lr"]}

    @torch.no_grad()
    def validate(self, step: int) -> dict[str, Any]:
        ctx, g = self.ctx, _unwrap(self.gw)
        l, ab_true = ctx.val["l"].to(ctx.device), ctx.val["ab"].to(ctx.device)
        guide = simulate_points(ab_true.cpu(), [10] * len(l), torch.Generator().manual_seed(ctx.cfg.seed + 4321)).to(ctx.device)
        with ctx.autocast():
            plain = torch.cat([g(l[i : i + 16]).float() for i in range(0, len(l), 16)])
            guided = torch.cat([g(l[i : i + 16], guide[i : i + 16]).float() for i in range(0, len(l), 16)])
        self.scores = {"l1_0pts": float(pixel_loss(plain, ab_true)), "l1_10pts": float(pixel_loss(guided, ab_true))}
        return self.scores

    def result(self) -> dict[str, Any]:
        for q in self.g.parameters():
            q.requires_grad_(True)
        return dict(self.scores)


def cfg_seed(ctx: Context, stream: str, step: int) -> int:
    """A seed that is a pure function of (recipe seed, stream, rank, step)."""
    import hashlib

    return int(hashlib.sha1(f"{ctx.cfg.seed}:{stream}:{ctx.rank}:{step}".encode()).hexdigest()[:15], 16)


def pretrain_generator(generator: nn.Module, ctx: Context, stage_dir: Path, cfg: PretrainGConfig) -> dict[str, float]:
    """Pretrain the generator alone (:class:`GeneratorPretraining`); returns the last validation scores."""
    return run_stage(GeneratorPretraining(generator, ctx, stage_dir, cfg), ctx)


def pretrain_critic(generator: nn.Module, critic: nn.Module, ctx: Context, stage_dir: Path, cfg: PretrainCConfig, stream: str) -> dict[str, float]:
    """Pretrain the critic (:class:`CriticPretraining`); returns ``{"critic_acc"}`` over the last 50 steps."""
    return run_stage(CriticPretraining(generator, critic, ctx, stage_dir, cfg, stream), ctx)


def train_gan(generator: nn.Module, critic: nn.Module, ctx: Context, stage_dir: Path, cfg: GanConfig, stream: str) -> dict[str, Any]:
    """The GAN phase (:class:`GanPhase`); returns ``{"stop_reason", "best_step", "best_score",
    "scores"}``, the generator left holding the best weights."""
    return run_stage(GanPhase(generator, critic, ctx, stage_dir, cfg, stream), ctx)


# --------------------------------------------------------------------------- the whole recipe


def plan_stages(cfg: TrainConfig) -> list[tuple[str, str, int]]:
    """``[(folder name, kind, cycle), ...]`` in order: pretrain_g, then cycles x (pretrain_c, gan),
    then finetune when ``finetune.steps > 0``.

    The baselines (``method`` cic or iizuka) have no adversarial stages: pretrain_g (and finetune) only.
    """
    plan = [("00_pretrain_g", "pretrain_g", 0)]
    if cfg.method == "nogan":
        for cyc in range(1, cfg.cycles + 1):
            plan.append((f"{2 * cyc - 1:02d}_pretrain_c_cycle{cyc}", "pretrain_c", cyc))
            plan.append((f"{2 * cyc:02d}_gan_cycle{cyc}", "gan", cyc))
    if cfg.finetune.steps > 0:
        plan.append((f"{len(plan):02d}_finetune", "finetune", 0))
    if cfg.guidance.steps > 0:
        plan.append((f"{len(plan):02d}_guidance", "guidance", 0))
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


#: Batches of 64 px crops a baseline's colour prior is measured on (16 x 100 = 1600 photos).
PRIOR_BATCHES = 100


def _prior_batches(ctx: Context) -> Iterator[torch.Tensor]:
    """The true ab of the training mix (its own sample stream, no degradation), for a model's colour prior."""
    cfg = ctx.cfg
    n_batches = max(1, min(PRIOR_BATCHES, cfg.pretrain_g.steps))
    log.info("measuring the colour prior on %d batches", n_batches)
    return (b["ab"] for b in ctx.loader("prior", 64, cfg.pretrain_g.batch_size, 0, n_batches, degrade=False))


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
        # The bare network: a calibration stored with it is not part of it (hub.load_model).
        init = hub.load_model(cfg.init_generator, expect_kind=hub.kind_of(generator))
        # A network without a guidance branch can start a recipe that adds one (the branch starts
        # at zero); anything else must be the recipe's architecture.
        same = init.config == gen_cfg or (
            hasattr(gen_cfg, "guidance")
            and replace(init.config, guidance=gen_cfg.guidance, guided_decoder=gen_cfg.guided_decoder) == gen_cfg
        )
        if not same:
            raise ValueError(f"{cfg.init_generator}: its architecture differs from the recipe's generator")
        missing, unexpected = generator.load_state_dict(init.state_dict(), strict=False)
        if unexpected or any(not k.startswith(("guidance.", "guided.", "guided_ready")) for k in missing):
            raise ValueError(f"{cfg.init_generator}: its weights do not fit the recipe's generator")
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
        stage: Stage | None
        if kind == "pretrain_g":
            stage = GeneratorPretraining(generator, ctx, stage_dir, cfg.pretrain_g, fresh=not cfg.init_generator) if cfg.pretrain_g.steps > 0 else None
        elif kind == "finetune":
            stage = GeneratorPretraining(generator, ctx, stage_dir, cfg.finetune, stream="finetune", fresh=False)
        elif kind == "guidance":
            stage = GuidanceTraining(generator, ctx, stage_dir, cfg.guidance)
        elif kind == "pretrain_c":
            stage = CriticPretraining(generator, critic, ctx, stage_dir, cfg.pretrain_c, stream=f"pretrain_c:{cycle}")
        else:
            stage = GanPhase(generator, critic, ctx, stage_dir, cfg.gan, stream=f"gan:{cycle}")
        result: dict[str, Any] = run_stage(stage, ctx) if stage is not None else {}
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

