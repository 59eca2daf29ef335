"""Build a study folder: ground-truth photos and each model's colourisation of them.

Protocol (what a participant compares):

1. Photos are drawn in a seeded random order from the data folders; unreadable files are
   reported and skipped, and greyscale or toned (sepia...) ones are skipped, since a "real" photo
   must be in colour. The first ``n`` usable photos are the study photos, the next ``practice``
   ones the practice photos (so changing ``practice`` does not change the study photos).
2. Each photo is resized (short side ``size``) and centre-cropped to ``size x size`` (the
   evaluation protocol's geometry) and quantised to 8 bits: that is the displayed real photo.
3. Each model is given the luminance of *that displayed image* and renders its colourisation at
   the same size. The two images of a trial therefore have the same L (up to gamut clipping and
   8-bit rounding), the same size and the same encoding: they differ only in colour.
4. Every image is written as ``images/<random id>.png`` without metadata; the id says nothing
   about the image. ``study.sqlite`` records what each id is.
"""

from __future__ import annotations

import logging
import os
import random
import secrets
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from colorgan.errors import ImageLoadError
from colorgan.study.db import DB_NAME, IMAGES_DIR, REAL_LABEL, StudyError, create_database, new_item_id

__all__ = ["PrepareConfig", "check_study_dir", "prepare_study"]

log = logging.getLogger(__name__)

MIN_SIZE = 32
MAX_SIZE = 2048


@dataclass
class PrepareConfig:
    """Settings of :func:`prepare_study`.

    Attributes:
        n: study photos (each shown once per session).
        practice: practice photos (shown first, with feedback, never scored).
        size: side of the square images shown, in pixels (32-2048).
        render_size: short side the models see (64-2048).
        seed: picks the photos; the same data and seed pick the same photos.
    """

    n: int = 50
    practice: int = 3
    size: int = 256
    render_size: int = 256
    seed: int = 0

    def __post_init__(self) -> None:
        from colorgan.limits import MAX_RENDER_SIZE, MIN_RENDER_SIZE

        if self.n < 1:
            raise ValueError(f"n must be at least 1, got {self.n}")
        if self.practice < 0:
            raise ValueError(f"practice must be >= 0, got {self.practice}")
        if not MIN_SIZE <= self.size <= MAX_SIZE:
            raise ValueError(f"size must be in [{MIN_SIZE}, {MAX_SIZE}], got {self.size}")
        if not MIN_RENDER_SIZE <= self.render_size <= MAX_RENDER_SIZE:
            raise ValueError(f"render_size must be in [{MIN_RENDER_SIZE}, {MAX_RENDER_SIZE}], got {self.render_size}")


def check_study_dir(study_dir: str | os.PathLike) -> None:
    """Refuse a folder that cannot become a new study (a study is never overwritten).

    Raises:
        StudyError: ``study_dir`` is a file, already holds ``study.sqlite``, or has a non-empty
            ``images/``.
    """
    study_dir = Path(study_dir)
    if study_dir.exists() and not study_dir.is_dir():
        raise StudyError(f"{study_dir}: exists and is not a folder")
    if (study_dir / DB_NAME).exists():
        # Never touch a study that may hold answers.
        raise StudyError(f"{study_dir}: already holds a study ({DB_NAME}); prepare a new one in another folder")
    images = study_dir / IMAGES_DIR
    if images.exists() and (not images.is_dir() or any(images.iterdir())):
        raise StudyError(f"{images}: exists and is not empty; prepare the study in a new folder")


def prepare_study(
    models: Mapping[str, Any],
    data: str | os.PathLike | Sequence[str | os.PathLike],
    study_dir: str | os.PathLike,
    cfg: PrepareConfig | None = None,
    *,
    files: Sequence[Path] | None = None,
    progress: bool = True,
    report: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Pick photos, render every model's colourisation and write the study folder.

    Args:
        models: ``{label: Colorizer}`` (see :func:`colorgan.eval.report.load_eval_models`).
        data: image files and/or folders of colour photos (walked recursively).
        study_dir: the new study folder (missing or without a study in it).
        cfg: the settings (default :class:`PrepareConfig`).
        files: the image files of ``data``, if the caller has already listed them with
            ``collect_files(data, exclude=study_dir)`` (the CLI does, to refuse an empty data set
            before loading any model): the folders are then not walked again. None: listed here.
        progress: show a progress bar.
        report: receives warnings (unreadable or skipped photos, too few photos); default: logging.

    Returns:
        ``{"study_dir", "database", "models", "photos", "practice", "images", "skipped",
        "failed"}``: counts, and ``skipped`` as ``[{"file", "reason"}]`` (``failed`` counts the
        unreadable ones among them).

    Raises:
        StudyError: no models, a model labelled like the ground truth, a bad study folder, or
            no usable colour photo.
        ImageLoadError: a named data file or folder does not exist.
    """
    import torch
    from tqdm import tqdm

    from colorgan import io as cio
    from colorgan.eval.metrics import center_crop_resize
    from colorgan.eval.report import collect_files

    cfg = cfg or PrepareConfig()
    say = report or log.warning
    if not models:
        raise StudyError("no models given")
    for label in models:
        if not str(label).strip() or str(label) == REAL_LABEL:
            raise StudyError(f"invalid model label {label!r}")
    study_dir = Path(study_dir)
    check_study_dir(study_dir)
    data = [data] if isinstance(data, (str, os.PathLike)) else list(data)
    if files is None:
        files = collect_files(data, exclude=study_dir)
    if not files:
        raise StudyError(f"no images found in {', '.join(str(d) for d in data)}")
    order = list(files)
    random.Random(cfg.seed).shuffle(order)

    images_dir = study_dir / IMAGES_DIR
    need = cfg.n + cfg.practice
    photos: list[tuple[int, str, bool]] = []
    items: list[tuple[str, int, str, str]] = []
    written: list[Path] = []
    skipped: list[dict[str, str]] = []
    failed = 0
    created_dir = not study_dir.exists()
    tmp_db = study_dir / f".{DB_NAME}.tmp"
    bar = tqdm(total=need, unit="photo", disable=not progress, dynamic_ncols=True, desc="preparing")
    try:
        images_dir.mkdir(parents=True, exist_ok=True)
        for file in order:
            if len(photos) >= need:
                break
            try:
                loaded = cio.load_image(file)
            except ImageLoadError as e:
                failed += 1
                skipped.append({"file": str(file), "reason": e.reason})
                say(f"skipped {e}")
                continue
            if loaded.kind != "colour":
                what = "greyscale" if loaded.kind == "grey" else "toned monochrome (sepia or similar)"
                skipped.append({"file": str(file), "reason": f"not a colour photo ({what})"})
                continue
            photo_id = len(photos) + 1
            # The displayed real photo, exactly as it will be stored (8-bit).
            rgb = center_crop_resize(loaded.rgb, cfg.size)
            rgb = (np.round(rgb * 255.0) / 255.0).astype(np.float32)
            rendered = {REAL_LABEL: rgb}
            t = torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1)[None]
            for label, cz in models.items():
                pred = cz.colorize_tensor(t.to(cz.device), cfg.render_size)
                rendered[label] = pred[0].float().permute(1, 2, 0).cpu().numpy()
            for label, img in rendered.items():
                item_id = new_item_id()
                name = f"{item_id}.png"
                cio.save_image(images_dir / name, img, format="PNG", overwrite=False)
                written.append(images_dir / name)
                items.append((item_id, photo_id, label, name))
            photos.append((photo_id, str(file), len(photos) >= cfg.n))
            bar.update(1)
        bar.close()
        n_main = sum(1 for p in photos if not p[2])
        n_practice = len(photos) - n_main
        if n_main == 0:
            raise StudyError(
                f"no usable colour photos in {', '.join(str(d) for d in data)} ({len(skipped)} skipped)"
            )
        if len(photos) < need:
            say(
                f"only {len(photos)} usable colour photos (asked for {cfg.n} + {cfg.practice} practice): "
                f"the study has {n_main} photos and {n_practice} practice photos"
            )
        manifest = {
            # Names this study in the page's local storage (to resume a session after a reload).
            "study_id": secrets.token_hex(8),
            "colorgan_version": _version(),
            "created": datetime.now().astimezone().isoformat(timespec="seconds"),
            "models": list(models),
            "model_specs": {label: str(getattr(cz, "name", label)) for label, cz in models.items()},
            "data": [str(d) for d in data],
            "config": asdict(cfg),
            "n_photos": n_main,
            "n_practice": n_practice,
            "protocol": f"short side resized to {cfg.size} px and centre-cropped to {cfg.size} x {cfg.size}, "
            f"8-bit; the models colourise the luminance of the displayed photo at render size {cfg.render_size}",
        }
        if tmp_db.exists():
            tmp_db.unlink()  # left by an earlier run that was killed: it never became a study
        create_database(tmp_db, manifest, photos, items)
        # The study exists only once complete: a crash above leaves no half-made study.sqlite.
        os.replace(tmp_db, study_dir / DB_NAME)
    except BaseException:
        bar.close()
        _cleanup(written, tmp_db, images_dir, study_dir if created_dir else None)
        raise
    return {
        "study_dir": str(study_dir),
        "database": str(study_dir / DB_NAME),
        "models": list(models),
        "photos": n_main,
        "practice": n_practice,
        "images": len(items),
        "skipped": skipped,
        "failed": failed,
    }


def _cleanup(written: list[Path], tmp_db: Path, images_dir: Path, created_dir: Path | None) -> None:
    """Remove what a failed :func:`prepare_study` wrote (only that)."""
    for p in [*written, tmp_db, Path(f"{tmp_db}-wal"), Path(f"{tmp_db}-shm")]:
        try:
            p.unlink()
        except OSError:
            pass
    for d in [images_dir, created_dir]:
        if d is not None:
            try:
                d.rmdir()  # only when empty
            except OSError:
                pass


def _version() -> str:
    from colorgan import __version__

    return __version__
