"""A model's whole recipe in one run folder: training, then calibration (``colorgan train``).

Training (:mod:`colorgan.train`) knows nothing of calibration, and calibration
(:mod:`colorgan.calibrate`) nothing of training's stages; this module runs one after the other
from one TOML file, so that ``colorgan train --config configs/default.toml --out RUN`` makes the
shipped weights file from the ImageNet encoder weights alone, and ``--resume`` continues it after
any stop::

    RUN/                         the training run (see colorgan.train.stages)
    RUN/generator.safetensors    the trained network (fp16), no calibration
    RUN/calibration.json         the calibration's curve, choice and rule
    RUN/final.safetensors        the network with its calibration: the file to ship

The TOML file is a training recipe plus an optional ``[calibrate]`` table
(:class:`CalibrateConfig`); ``--set calibrate.target=0.8`` overrides it like any other key.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from colorgan.train.config import TrainConfig

__all__ = ["CalibrateConfig", "Recipe", "load_recipe", "run_recipe", "FINAL_NAME"]

log = logging.getLogger(__name__)

#: The run folder's file to ship: the trained network with its calibration.
FINAL_NAME = "final.safetensors"


@dataclass(frozen=True)
class CalibrateConfig:
    """The calibration stage of a recipe (see ``colorgan calibrate``, which takes the same choices).

    Attributes:
        enabled: run it (off: the run ends with the bare ``generator.safetensors``).
        adaptive: fit a per-image gain first, on ``fit_images`` training photos of the recipe.
        fit_images: training photos for the per-image gain.
        fit_seed: which ones.
        heldout_per_folder: held-out photos per training folder for the global gain's curve (the
            first ones by name of what the recipe's hold-out rule holds out; ``--val`` folders,
            when given, are used whole instead).
        gains: candidate global gains.
        target: the CF ratio to reach.
        rule: ``target`` (the smallest gain reaching ``target``) or ``min_dcf`` (the lowest
            delta-CF with CF ratio in [target, 1.15] and PSNR >= ``min_psnr``).
        min_psnr: the PSNR floor of ``min_dcf``, in dB.
    """

    enabled: bool = False
    adaptive: bool = True
    fit_images: int = 1200
    fit_seed: int = 0
    heldout_per_folder: int = 40
    gains: tuple[float, ...] = (0.88, 0.92, 0.96, 1.0, 1.04, 1.08, 1.12, 1.16)
    target: float = 0.8
    rule: str = "target"
    min_psnr: float = 0.0

    def __post_init__(self) -> None:
        if self.rule not in ("target", "min_dcf"):
            raise ValueError(f"[calibrate] rule must be 'target' or 'min_dcf', got {self.rule!r}")
        if not self.gains or min(self.gains) <= 0:
            raise ValueError(f"[calibrate] gains must be positive numbers, got {list(self.gains)}")
        if self.fit_images < 4 or self.heldout_per_folder < 1:
            raise ValueError("[calibrate] fit_images must be >= 4 and heldout_per_folder >= 1")


@dataclass(frozen=True)
class Recipe:
    """A training recipe and its calibration stage."""

    train: TrainConfig
    calibrate: CalibrateConfig = field(default_factory=CalibrateConfig)


def load_recipe(path: str | os.PathLike | None = None, overrides: list[str] | None = None) -> Recipe:
    """Read a TOML recipe (defaults when ``path`` is None) with ``--set`` overrides.

    Raises:
        ValueError: unknown keys, wrong types, unreadable TOML (the message names the key).
    """
    from colorgan.train.config import build_dataclass, read_values

    values = read_values(path, overrides)
    cal = values.pop("calibrate", {})
    if not isinstance(cal, dict):
        raise ValueError("calibrate must be a table ([calibrate])")
    return Recipe(build_dataclass(TrainConfig, values), build_dataclass(CalibrateConfig, cal, "calibrate"))


def _write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=1))
    os.replace(tmp, path)


def run_recipe(
    recipe: Recipe,
    run_dir: str | os.PathLike,
    *,
    device: Any = "cpu",
    resume: bool = False,
    val_dirs: list[Path] | None = None,
    progress: bool = True,
    stop_after: int | None = None,
) -> Path:
    """Run (or resume) training and then, if enabled, calibration into ``run_dir``.

    ``stop_after`` is training's test hook (stop as if killed after that many steps).

    Returns:
        ``RUN/final.safetensors`` with calibration, else ``RUN/generator.safetensors``.
    """
    import torch

    from colorgan import calibrate
    from colorgan.calibrate import head
    from colorgan.models import hub
    from colorgan.train.stages import run_training

    run_dir = Path(run_dir)
    trained = run_training(recipe.train, run_dir, device=device, resume=resume, val_dirs=val_dirs, progress=progress, stop_after=stop_after)
    cal = recipe.calibrate
    if not cal.enabled or int(os.environ.get("RANK", "0")) != 0:
        return trained
    final, record_path = run_dir / FINAL_NAME, run_dir / "calibration.json"
    # What the calibration was made from (as JSON reads back: tuples are lists): the same inputs, no redo.
    wanted = json.loads(json.dumps({"config": asdict(cal), "trained": hub.read_metadata(trained).get("training", "")}))
    if final.exists() and record_path.exists() and json.loads(record_path.read_text()).get("inputs") == wanted:
        log.info("calibration already done: %s", final)
        return final
    if val_dirs:
        from colorgan.train.data import scan_images

        held = [f for d in val_dirs for f in scan_images(d)]
    else:
        held = head.heldout_files(recipe.train, cal.heldout_per_folder)
    fit_files = head.training_files(recipe.train, cal.fit_images, cal.fit_seed) if cal.adaptive else None
    log.info("calibrating on %d held-out photos%s", len(held), f" (per-image gain on {len(fit_files)} training photos)" if fit_files else "")
    net = hub.load_model(trained, expect_kind="generator")
    min_psnr = cal.min_psnr if cal.rule == "min_dcf" else None
    result = calibrate.calibrate(net, held, gains=cal.gains, target=cal.target, min_psnr=min_psnr, fit_files=fit_files, device=device)
    record = result.record(cal.target, min_psnr)
    log.info("calibration: gain %.2f (%s), CF ratio %.3f, dCF %.2f, PSNR %.2f dB", result.chosen.gain, result.rule,
             result.chosen.cf_ratio, result.chosen.delta_cf, result.chosen.psnr)
    extra = {k: v for k, v in hub.read_metadata(trained).items() if k == "training"}
    extra["calibration"] = json.dumps(record)
    hub.save_model(net, final, dtype=torch.float16, extra=extra, calibration=result.calibration)
    _write_json(record_path, {"inputs": wanted, **record, "calibration": asdict(result.calibration)})
    return final
