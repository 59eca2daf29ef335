"""Evaluation reports: run colourisers on ground-truth colour photos and compare them.

For every ground-truth colour image, each model is given only its luminance L, and its colour
output is compared with the ground truth:

* per image: PSNR and SSIM (RGB, against the ground truth round-tripped through Lab -> sRGB the
  same way predictions are rendered, so both went through the same gamut clipping), the
  colourfulness CF of the prediction and of the ground truth, and the AuC of the ab error;
* per model: the mean of each with a bootstrap 95% confidence interval, delta-CF (mean
  ``|CF_pred - CF_true|``), the CF ratio (mean CF_pred / mean CF_true; 1 = as colourful as the
  photos, 0 = grey), and FID (plus KID for sets under 2000 images) between the Inception features
  of the predictions and of the ground truths;
* between models: the first model minus each other one, photo by photo (PSNR, SSIM and per-image
  ``|CF_pred - CF_true|``), with a paired bootstrap interval.

Protocols: ``"256"`` (the literature's: short side resized to 256 and centre-cropped to 256 x 256
before anything else) or ``"full"`` (the photos at full resolution).

Memory is bounded: only per-image numbers, 2048-d features, ab histograms and a few thumbnails
are kept, never the images themselves.

Outputs in ``out_dir``: ``report.md``, ``results.json``, ``grid.png`` and ``ab_hist.png``.
"""

from __future__ import annotations

import json
import logging
import math
import os
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from colorgan import color
from colorgan import io as cio
from colorgan.errors import ColorGANError, ImageLoadError, ModelLoadError, WeightsNotFoundError
from colorgan.eval import metrics as M
from colorgan.pipeline import render_shape

__all__ = ["BASELINES", "EvalConfig", "EvaluationError", "collect_files", "evaluate_models", "load_eval_models"]

log = logging.getLogger(__name__)

#: Names :func:`load_eval_models` understands besides shipped models and weights files.
BASELINES = ("grey", "mean")

#: KID is computed for sets smaller than this (for larger ones FID is reliable and KID is slow).
KID_MAX_IMAGES = 2000
_KID_SUBSET = 1000
#: PSNR of an exactly predicted image is infinite; it enters the means as this many dB.
PSNR_INF_DB = 100.0

_PROTOCOL_SIZE = 256
_HIST_BINS = 89  # about 2.5 Lab units per bin over [-110, 110], with a = b = 0 at a bin centre
_HIST_RANGE = (-110.0, 110.0)
_FID_BATCH = 16
_GT = "ground truth"


class EvaluationError(ColorGANError):
    """An evaluation cannot run: no images, bad configuration."""


@dataclass
class EvalConfig:
    """Settings of :func:`evaluate_models`.

    Attributes:
        render_size: short side the models see (64-2048).
        protocol: ``"256"`` (short side 256 + centre crop 256 x 256, the literature's protocol)
            or ``"full"`` (full resolution).
        fid: compute FID/KID (needs the offline FID network; skipped with a note when missing).
        max_images: evaluate at most this many images (the first ones in sorted order).
        grid_images: images shown in ``grid.png``.
        n_boot: bootstrap resamples of the confidence intervals.
        skip_grey: leave out ground truths that are greyscale (nothing to compare colour with).
        grid_cell: side of one thumbnail in ``grid.png``, in pixels.
        device: where the FID network runs; None = the first model's device.
        hints: colour points simulated from the truth per photo (seeded by the photo's name;
            5 x 5 patches of the true mean colour at the render size, at random places) for the
            models that take hints; the others colour automatically. 0: none. With hints the
            report also gives each guided model's PSNR against the number of points
            (``hints_curve``) and the median CIE76 ΔE between output and hint at the hinted pixels.
        hints_curve: the numbers of points of that curve.
    """

    render_size: int = 256
    protocol: str = "256"
    fid: bool = True
    max_images: int | None = None
    grid_images: int = 8
    n_boot: int = 1000
    skip_grey: bool = True
    grid_cell: int = 128
    device: str | None = None
    hints: int = 0
    hints_curve: tuple[int, ...] = (0, 1, 2, 5, 10, 20, 50)

    def __post_init__(self) -> None:
        from colorgan.limits import MAX_RENDER_SIZE, MIN_RENDER_SIZE

        self.protocol = str(self.protocol)
        if self.protocol not in ("256", "full"):
            raise ValueError(f"protocol must be '256' or 'full', got {self.protocol!r}")
        if not MIN_RENDER_SIZE <= int(self.render_size) <= MAX_RENDER_SIZE:
            raise ValueError(f"render_size must be in [{MIN_RENDER_SIZE}, {MAX_RENDER_SIZE}], got {self.render_size}")
        if self.max_images is not None and self.max_images < 1:
            raise ValueError(f"max_images must be positive, got {self.max_images}")
        if self.grid_images < 0 or self.n_boot < 1 or self.grid_cell < 16:
            raise ValueError("grid_images must be >= 0, n_boot >= 1 and grid_cell >= 16")
        if self.hints < 0 or any(n < 0 for n in self.hints_curve):
            raise ValueError(f"hints must be 0 or more, got {self.hints}")


# ---------------------------------------------------------------------------------------------
# Models
# ---------------------------------------------------------------------------------------------


def load_eval_models(
    names: Sequence[str],
    device: str | torch.device = "cpu",
    *,
    mean_from: str | os.PathLike | Sequence[str | os.PathLike] | None = None,
    mean_n: int = 500,
) -> dict:
    """Build the colourisers to compare, by name.

    Args:
        names: ``"grey"`` (:class:`~colorgan.models.baselines.GreyModel`), ``"mean"``
            (:class:`~colorgan.models.baselines.MeanChromaModel` measured on ``mean_from``), a
            shipped model name (``"default"``) or a weights file path.
        device: where the models run.
        mean_from: folder(s) of colour photos (the training set) for ``"mean"``.
        mean_n: photos sampled from ``mean_from``.

    Returns:
        ``{label: Colorizer}`` in the order given; the label is the name, or a weights file's
        stem when that is unambiguous.

    Raises:
        ColorGANError: a name given twice, an unknown name, weights that do not load, or
            ``"mean"`` without ``mean_from`` / without colour photos there.
    """
    from colorgan.models.baselines import GreyModel, MeanChromaModel
    from colorgan.pipeline import Colorizer

    names = [str(n).strip() for n in names if str(n).strip()]
    if not names:
        raise EvaluationError("no models given")
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise EvaluationError(f"model {dupes[0]!r} given twice")
    stems = [Path(n).stem if _looks_like_path(n) else n for n in names]
    out: dict = {}
    for name, stem in zip(names, stems):
        label = stem if stems.count(stem) == 1 else name
        if name == "grey":
            out[label] = Colorizer(GreyModel(), device=device, name="grey")
        elif name == "mean":
            if mean_from is None:
                raise EvaluationError("the 'mean' baseline needs colour photos to average: pass --mean-from DIR (the training set)")
            try:
                model = MeanChromaModel.from_folder(mean_from, n=mean_n)
            except ValueError as e:
                raise EvaluationError(f"mean baseline: {e}") from None
            out[label] = Colorizer(model, device=device, name="mean")
        else:
            try:
                out[label] = Colorizer.from_pretrained(name, device=device)
            except WeightsNotFoundError as e:
                raise WeightsNotFoundError(f"{e}; built-in baselines: {', '.join(BASELINES)}") from None
    return out


def _looks_like_path(name: str) -> bool:
    return os.sep in name or "/" in name or name.endswith(".safetensors")


# ---------------------------------------------------------------------------------------------
# Accumulators
# ---------------------------------------------------------------------------------------------


class _FeatureBuffer:
    """Inception features of one set, extracted in batches as images arrive."""

    def __init__(self, net: "M.InceptionFeatures") -> None:
        self.net = net
        self.pending: list[torch.Tensor] = []
        self.chunks: list[np.ndarray] = []

    def add(self, rgb_chw: torch.Tensor) -> None:
        # Prepared (quantised, resized to 299) right away: the buffer never holds a full image.
        self.pending.append(self.net._prepare(rgb_chw, quantize=True))
        if len(self.pending) >= _FID_BATCH:
            self.flush()

    def flush(self) -> None:
        if self.pending:
            self.chunks.append(self.net.features(torch.cat(self.pending), quantize=False))
            self.pending = []

    def result(self) -> np.ndarray:
        self.flush()
        return np.concatenate(self.chunks) if self.chunks else np.zeros((0, M.FID_FEATURE_DIM))


@dataclass
class _ModelAcc:
    psnr: list
    ssim: list
    cf: list
    auc: list
    hist: np.ndarray
    feats: _FeatureBuffer | None
    hint_de: list = field(default_factory=list)  # CIE76 ΔE at the hinted pixels, every pixel of every photo
    curve: dict = field(default_factory=dict)  # points -> per-photo PSNR


def simulated_hints(lab_gt: torch.Tensor, n: int, render: tuple[int, int], file: str | os.PathLike) -> torch.Tensor:
    """``n`` colour points from a photo's truth at the render shape, seeded by the photo's name:
    ``(1, 3, h, w)`` guidance, 5 x 5 patches of the true mean ab (see :mod:`colorgan.hints`)."""
    import hashlib

    from colorgan.hints import simulate_points

    ab = lab_gt[:, 1:].float() / 110.0
    if tuple(ab.shape[-2:]) != tuple(render):
        ab = torch.nn.functional.interpolate(ab, size=render, mode="area")
    seed = int(hashlib.sha1(f"hints:{Path(file).name}".encode()).hexdigest()[:15], 16)
    return simulate_points(ab, [n], torch.Generator().manual_seed(seed), min_size=5, max_size=5)


def _hint_delta_e(lab_pred: torch.Tensor, guide: torch.Tensor) -> np.ndarray:
    """CIE76 ΔE between the output and the hints at the hinted pixels (L is the photo's in both)."""
    ab = lab_pred[:, 1:].float()
    if tuple(ab.shape[-2:]) != tuple(guide.shape[-2:]):
        ab = torch.nn.functional.interpolate(ab, size=guide.shape[-2:], mode="area")
    mask = guide[0, 2] > 0
    d = (ab[0] - guide[0, :2] * 110.0).square().sum(0).sqrt()
    return d[mask].numpy()


def _ab_hist(lab: torch.Tensor) -> np.ndarray:
    ab = lab[0, 1:].reshape(2, -1).double().numpy()
    h, _, _ = np.histogram2d(ab[0], ab[1], bins=_HIST_BINS, range=[_HIST_RANGE, _HIST_RANGE])
    return h


def _thumb(rgb_chw: torch.Tensor, cell: int) -> np.ndarray:
    from PIL import Image

    arr = np.round(rgb_chw.clamp(0, 1).permute(1, 2, 0).numpy() * 255).astype(np.uint8)
    img = Image.fromarray(np.ascontiguousarray(arr), "RGB")
    img.thumbnail((cell, cell), Image.LANCZOS)
    return np.asarray(img)


# ---------------------------------------------------------------------------------------------
# The evaluation
# ---------------------------------------------------------------------------------------------


def _within(path: str | os.PathLike, folder: str | os.PathLike) -> bool:
    try:
        Path(path).resolve().relative_to(Path(folder).resolve())
        return True
    except ValueError:
        return False


def collect_files(data: Sequence[str | os.PathLike], exclude: str | os.PathLike | None = None) -> list[Path]:
    """The image files of ``data`` (files and folders, walked recursively, sorted), each once.

    Args:
        data: files and folders.
        exclude: a folder whose files are left out (the report folder, so that a report written
            inside the data folder is not read back as ground truth), unless a ``data`` item is
            itself inside it.

    Raises:
        ImageLoadError: a named file or folder does not exist.
    """
    if isinstance(data, (str, os.PathLike)):
        data = [data]
    files: list[Path] = []
    seen: set[str] = set()
    for item in data:
        skip_excluded = exclude is not None and not _within(item, exclude)
        for file, _ in cio.iter_image_files([item]):
            key = os.path.realpath(file)
            if skip_excluded and _within(file, exclude):  # type: ignore[arg-type]
                continue
            if key not in seen:
                seen.add(key)
                files.append(file)
    return files


def ground_truth(rgb: np.ndarray, protocol: str = "256") -> tuple[torch.Tensor, torch.Tensor]:
    """A ground-truth photo as the protocol compares it.

    Args:
        rgb: ``(H, W, 3)`` float sRGB in [0, 1] (a loaded photo).
        protocol: ``"256"`` (short side 256, centre crop) or ``"full"``.

    Returns:
        ``(lab, rgb_rt)``: ``(1, 3, h, w)`` Lab, and the same rendered back to sRGB in [0, 1]
        through the gamut clipping the predictions get, so that only colour differences count.
    """
    if protocol == "256":
        rgb = M.center_crop_resize(rgb, _PROTOCOL_SIZE)
    gt = torch.from_numpy(np.ascontiguousarray(rgb, dtype=np.float32)).permute(2, 0, 1)[None]
    lab = color.rgb_to_lab(gt)
    return lab, color.lab_to_rgb(lab)


def evaluate_models(
    models: dict,
    data: Sequence[str | os.PathLike],
    out_dir: str | os.PathLike,
    cfg: EvalConfig | None = None,
    progress: bool = True,
    *,
    report: Callable[[str], None] | None = None,
) -> dict:
    """Evaluate colourisers on ground-truth colour photos and write the report.

    Args:
        models: ``{label: Colorizer}`` (see :func:`load_eval_models`).
        data: image files and/or folders of colour photos (folders walked recursively, sorted).
        out_dir: where ``report.md``, ``results.json``, ``grid.png`` and ``ab_hist.png`` go.
        cfg: the settings (default :class:`EvalConfig`).
        progress: show a progress bar over the images.
        report: receives warnings (unreadable images, FID unavailable); default: logging.

    Returns:
        The results, as written to ``results.json``, plus ``"outputs"``: the files written.

    Raises:
        EvaluationError: no models, or no usable image in ``data``.
        ImageLoadError: a named file or folder does not exist.
    """
    from tqdm import tqdm

    cfg = cfg or EvalConfig()
    say = report or log.warning
    if not models:
        raise EvaluationError("no models to evaluate")
    out_dir = Path(out_dir)
    data = [data] if isinstance(data, (str, os.PathLike)) else list(data)
    files = collect_files(data, exclude=out_dir)
    if not files:
        raise EvaluationError(f"no images found in {', '.join(str(d) for d in data)}")

    first = next(iter(models.values()))
    net = None
    fid_note: str | None = None
    if cfg.fid:
        try:
            net = M.InceptionFeatures(device=cfg.device or first.device)
        except (WeightsNotFoundError, ModelLoadError) as e:
            fid_note = f"FID/KID skipped: {e}"
            say(fid_note)
    else:
        fid_note = "FID/KID not computed (disabled)"

    accs = {
        name: _ModelAcc([], [], [], [], np.zeros((_HIST_BINS, _HIST_BINS)), _FeatureBuffer(net) if net else None)
        for name in models
    }
    gt_cf: list[float] = []
    gt_hist = np.zeros((_HIST_BINS, _HIST_BINS))
    gt_feats = _FeatureBuffer(net) if net else None
    images: list[dict] = []
    skipped: list[dict] = []
    grid_rows: list[list[np.ndarray]] = []

    limit = cfg.max_images or len(files)
    bar = tqdm(total=min(limit, len(files)), unit="img", disable=not progress, dynamic_ncols=True, desc="evaluating")
    try:
        for file in files:
            if len(images) >= limit:
                break
            try:
                loaded = cio.load_image(file)
            except ImageLoadError as e:
                skipped.append({"file": str(file), "reason": e.reason})
                say(f"skipped {e}")
                continue
            if cfg.skip_grey and loaded.kind == "grey":
                skipped.append({"file": str(file), "reason": "greyscale ground truth"})
                continue
            lab_gt, gt_rt = ground_truth(loaded.rgb, cfg.protocol)
            L = lab_gt[:, :1]  # all the models ever see
            gt_cf.append(M.colourfulness(gt_rt[0]))
            gt_hist += _ab_hist(lab_gt)
            if gt_feats is not None:
                gt_feats.add(gt_rt[0])
            row = [_thumb(color.l_to_grey_rgb(L)[0], cfg.grid_cell)] if len(grid_rows) < cfg.grid_images else None
            render = render_shape(L.shape[-2], L.shape[-1], cfg.render_size)
            for name, cz in models.items():
                guided = cfg.hints > 0 and getattr(cz, "takes_hints", False)
                guide = simulated_hints(lab_gt, cfg.hints, render, file) if guided else None
                pred = cz.colorize_tensor(L.to(cz.device), cfg.render_size, guide=guide).float().cpu()
                lab_pred = color.rgb_to_lab(pred)
                a = accs[name]
                if guided:
                    a.hint_de.extend(_hint_delta_e(lab_pred, guide).tolist())
                    for k in cfg.hints_curve:
                        cpred = pred if k == cfg.hints else cz.colorize_tensor(
                            L.to(cz.device), cfg.render_size, guide=simulated_hints(lab_gt, k, render, file) if k else None).float().cpu()
                        a.curve.setdefault(k, []).append(M.psnr(cpred[0], gt_rt[0]))
                a.psnr.append(M.psnr(pred[0], gt_rt[0]))
                a.ssim.append(M.ssim(pred[0], gt_rt[0]))
                a.cf.append(M.colourfulness(pred[0]))
                a.auc.append(M.auc_ab(lab_pred[0, 1:], lab_gt[0, 1:]))
                a.hist += _ab_hist(lab_pred)
                if a.feats is not None:
                    a.feats.add(pred[0])
                if row is not None:
                    row.append(_thumb(pred[0], cfg.grid_cell))
            if row is not None:
                row.append(_thumb(gt_rt[0], cfg.grid_cell))
                grid_rows.append(row)
            images.append({"file": str(file), "height": int(gt_rt.shape[-2]), "width": int(gt_rt.shape[-1])})
            bar.update(1)
    finally:
        bar.close()

    if not images:
        raise EvaluationError(
            f"no usable colour images in {', '.join(str(d) for d in data)} ({len(skipped)} skipped)"
        )

    n = len(images)
    results = _summarise(models, accs, gt_cf, gt_feats, cfg, n, fid_note, say)
    for name, a in accs.items():
        if a.curve:  # a guided model under --hints
            results["models"][name]["hints"] = {
                "points": cfg.hints,
                "delta_e_median": float(np.median(a.hint_de)) if a.hint_de else None,
                "hinted_pixels": len(a.hint_de),
                "curve": {str(k): _ci(v, cfg) for k, v in sorted(a.curve.items())},
            }
    results.update(
        {
            "colorgan_version": _version(),
            "date": datetime.now().astimezone().isoformat(timespec="seconds"),
            "protocol": cfg.protocol,
            "render_size": cfg.render_size,
            "n_images": n,
            "data": [str(d) for d in data],
            "config": asdict(cfg),
            "images": images,
            "skipped": skipped,
        }
    )
    for name, acc in accs.items():
        results["models"][name]["per_image"] = [
            {
                "file": img["file"],
                "psnr": _finite_or_none(acc.psnr[i]),
                "ssim": acc.ssim[i],
                "cf": acc.cf[i],
                "cf_true": gt_cf[i],
                "auc": acc.auc[i],
            }
            for i, img in enumerate(images)
        ]
    results["ground_truth"]["per_image"] = [{"file": img["file"], "cf": gt_cf[i]} for i, img in enumerate(images)]

    out_dir.mkdir(parents=True, exist_ok=True)
    outputs = {}
    outputs["grid"] = str(_write_grid(out_dir / "grid.png", grid_rows, list(models), cfg.grid_cell)) if grid_rows else None
    hist_path, hist_note = _write_ab_hist(out_dir / "ab_hist.png", {**{k: a.hist for k, a in accs.items()}, _GT: gt_hist})
    outputs["ab_hist"] = str(hist_path) if hist_path else None
    if hist_note:
        results["notes"].append(hist_note)
        say(hist_note)
    cio.atomic_write(out_dir / "results.json", (json.dumps(results, indent=1, allow_nan=False) + "\n").encode("utf-8"))
    outputs["results"] = str(out_dir / "results.json")
    cio.atomic_write(out_dir / "report.md", _markdown(results, outputs).encode("utf-8"))
    outputs["report"] = str(out_dir / "report.md")
    results["outputs"] = outputs
    return results


# ---------------------------------------------------------------------------------------------
# Summaries
# ---------------------------------------------------------------------------------------------


def _ci(values: Sequence[float], cfg: EvalConfig, **kw) -> dict:
    est, lo, hi = M.bootstrap_ci(values, n_boot=cfg.n_boot, **kw)
    return {"mean": _finite_or_none(est), "lo": _finite_or_none(lo), "hi": _finite_or_none(hi)}


def _ratio_ci(pred: Sequence[float], true: Sequence[float], cfg: EvalConfig) -> dict | None:
    """mean(pred) / mean(true) with a paired percentile-bootstrap CI (images resampled together)."""
    p = np.asarray(pred, dtype=np.float64)
    t = np.asarray(true, dtype=np.float64)
    if not t.sum() > 0:
        return None

    def stat(idx: np.ndarray) -> float:
        i = idx.astype(np.int64)
        denom = t[i].mean()
        return float(p[i].mean() / denom) if denom > 0 else math.inf

    # bootstrap_ci resamples the values it is given; resampling indices resamples pairs.
    return _ci(np.arange(p.size, dtype=np.float64), cfg, stat=stat)


def _summarise(models, accs, gt_cf, gt_feats, cfg, n, fid_note, say) -> dict:
    notes: list[str] = []
    if fid_note:
        notes.append(fid_note)
    gt_f = gt_feats.result() if gt_feats is not None else None
    if gt_f is not None and n < 2:
        notes.append("FID/KID need at least 2 images")
        gt_f = None
    if gt_f is not None:
        notes.append(f"FID is biased by set size: compare only values from the same {n} images")
        if n <= _KID_SUBSET:
            notes.append(f"KID uses all {n} images in each of its subsets (not more than {_KID_SUBSET}), so it has no spread")
    out_models: dict = {}
    for name, a in accs.items():
        m: dict = {
            "source": getattr(models[name], "name", name),
            "psnr": _ci(a.psnr, cfg, inf_value=PSNR_INF_DB),
            "ssim": _ci(a.ssim, cfg),
            "cf": _ci(a.cf, cfg),
            "delta_cf": _ci(np.abs(np.subtract(a.cf, gt_cf)), cfg),
            "cf_ratio": _ratio_ci(a.cf, gt_cf, cfg),
            "auc": _ci(a.auc, cfg),
            "fid": None,
            "kid": None,
        }
        if gt_f is not None and a.feats is not None:
            f = a.feats.result()
            m["fid"] = M.fid_from_features(f, gt_f)
            if n < KID_MAX_IMAGES:
                k_mean, k_std = M.kid_from_features(
                    f, gt_f, subsets=1 if n <= _KID_SUBSET else 100, subset_size=_KID_SUBSET
                )
                m["kid"] = {"mean": k_mean, "std": k_std}
        out_models[name] = m
    if any(not math.isfinite(v) for a in accs.values() for v in a.psnr):
        notes.append(f"some predictions equal their ground truth exactly (PSNR inf); they enter PSNR means as {PSNR_INF_DB:g} dB")
    return {"models": out_models, "ground_truth": {"cf": _ci(gt_cf, cfg)}, "paired": _paired(accs, gt_cf, cfg),
            "notes": notes}


def _paired(accs: dict, gt_cf: Sequence[float], cfg: EvalConfig) -> dict:
    """The first model minus each other one, photo by photo, with a paired bootstrap CI.

    Two models' intervals in the main table overlap far more than their difference's interval
    straddles 0, because most of each interval is which photos the set holds, and that is shared:
    resampling the photos with both models' values together answers "is A better than B on such
    photos" directly.

    Returns:
        ``{other: {"psnr" | "ssim" | "delta_cf": {"mean", "lo", "hi"}}}`` where each value is the
        mean over photos of (first model's value - other's); for ``delta_cf`` the per-photo value
        is ``|CF(pred) - CF(truth)|``, so a negative difference favours the first model. Empty
        with fewer than two models.
    """
    names = list(accs)
    if len(names) < 2:
        return {}
    t = np.asarray(gt_cf, dtype=np.float64)

    def per_image(a) -> dict[str, np.ndarray]:
        # inf PSNR (an exact prediction) is clipped as in the main table, so a difference stays finite.
        return {
            "psnr": np.clip(np.asarray(a.psnr, dtype=np.float64), -PSNR_INF_DB, PSNR_INF_DB),
            "ssim": np.asarray(a.ssim, dtype=np.float64),
            "delta_cf": np.abs(np.asarray(a.cf, dtype=np.float64) - t),
        }

    first = per_image(accs[names[0]])
    out: dict = {}
    for name in names[1:]:
        other = per_image(accs[name])
        out[name] = {k: _ci(first[k] - other[k], cfg) for k in first}
    return out


def _finite_or_none(v: float) -> float | None:
    v = float(v)
    return v if math.isfinite(v) else None


def _version() -> str:
    from colorgan import __version__

    return __version__


# ---------------------------------------------------------------------------------------------
# Writers
# ---------------------------------------------------------------------------------------------


def _fmt_ci(d: dict | None, digits: int) -> str:
    if not d or d.get("mean") is None:
        return "—"
    lo = "—" if d["lo"] is None else f"{d['lo']:.{digits}f}"
    hi = "—" if d["hi"] is None else f"{d['hi']:.{digits}f}"
    return f"{d['mean']:.{digits}f} [{lo}, {hi}]"


def _md_escape(text: str) -> str:
    return text.replace("|", "\\|")


def _markdown(results: dict, outputs: dict) -> str:
    lines = [
        "# ColorGAN evaluation report",
        "",
        f"- Date: {results['date']}",
        f"- ColorGAN: {results['colorgan_version']}",
        "- Protocol: "
        + (
            "256 (short side resized to 256, centre crop 256 x 256)"
            if results["protocol"] == "256"
            else "full (full-resolution photos)"
        ),
        f"- Render size (short side the models see): {results['render_size']}",
        f"- Images: {results['n_images']}" + (f" ({len(results['skipped'])} skipped)" if results["skipped"] else ""),
        "- Data: " + ", ".join(f"`{d}`" for d in results["data"]),
        "",
        "Each cell is the mean with its bootstrap 95% confidence interval "
        f"({results['config']['n_boot']} resamples of the images).",
        "",
        "| Model | PSNR (dB) ↑ | SSIM ↑ | CF | ΔCF ↓ | CF ratio (→1) | AuC ↑ | FID ↓ | KID ×10³ ↓ |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, m in results["models"].items():
        fid = "—" if m["fid"] is None else f"{m['fid']:.2f}"
        if m["kid"] is None:
            kid = "—"
        elif results["n_images"] <= _KID_SUBSET:  # every subset is the whole set: no spread to show
            kid = f"{1e3 * m['kid']['mean']:.2f}"
        else:
            kid = f"{1e3 * m['kid']['mean']:.2f} ± {1e3 * m['kid']['std']:.2f}"
        lines.append(
            f"| {_md_escape(name)} | {_fmt_ci(m['psnr'], 2)} | {_fmt_ci(m['ssim'], 4)} | {_fmt_ci(m['cf'], 2)} "
            f"| {_fmt_ci(m['delta_cf'], 2)} | {_fmt_ci(m['cf_ratio'], 3)} | {_fmt_ci(m['auc'], 4)} | {fid} | {kid} |"
        )
    lines.append(f"| *{_GT}* | — | — | {_fmt_ci(results['ground_truth']['cf'], 2)} | — | 1 | — | — | — |")
    paired = results.get("paired") or {}
    if paired:
        first = _md_escape(next(iter(results["models"])))
        lines += [
            "",
            f"Paired differences, {first} minus each other model, photo by photo (mean with a bootstrap "
            "95% interval that resamples the photos with both models' values together; an interval "
            "that holds 0 shows no significant difference at 95%). Positive PSNR and SSIM favour "
            f"{first}, negative ΔCF favours {first}:",
            "",
            "| Other model | PSNR (dB), + favours first | SSIM, + favours first | ΔCF, − favours first |",
            "|---|---|---|---|",
        ]
        for name, d in paired.items():
            lines.append(
                f"| {_md_escape(name)} | {_fmt_ci(d['psnr'], 2)} | {_fmt_ci(d['ssim'], 4)} | {_fmt_ci(d['delta_cf'], 2)} |"
            )
    lines += [
        "",
        "PSNR and SSIM are on sRGB against the ground truth rendered through Lab like the predictions. "
        "CF is the colourfulness of Hasler and Süsstrunk (0-255 scale); ΔCF the mean per-image "
        "|CF(prediction) − CF(ground truth)|; CF ratio the mean CF of the predictions over that of the "
        "ground truths. AuC is the area under the ab-error accuracy curve (thresholds 0-150) of Zhang et al. "
        "FID and KID compare the Inception-v3 features of the predictions with those of the ground truths.",
    ]
    guided = {name: m["hints"] for name, m in results["models"].items() if m.get("hints")}
    if guided:
        ks = list(next(iter(guided.values()))["curve"])
        lines += [
            "",
            f"Colour points simulated from the truth ({results['config']['hints']} per photo in the table above, for the "
            "models that take them; 5 x 5 patches of the true mean colour at the render size, at random places seeded by "
            "the photo's name). PSNR (dB) against the number of points, and the median CIE76 ΔE between output and hint "
            "at the hinted pixels:",
            "",
            "| Model | " + " | ".join(f"{k} pts" for k in ks) + " | median ΔE at the hints |",
            "|---|" + "---|" * (len(ks) + 1),
        ]
        for name, h in guided.items():
            de = "—" if h["delta_e_median"] is None else f"{h['delta_e_median']:.2f}"
            lines.append(f"| {_md_escape(name)} | " + " | ".join(f"{h['curve'][k]['mean']:.2f}" for k in ks) + f" | {de} |")
    if results["notes"]:
        lines += ["", "Notes:", ""] + [f"- {n}" for n in results["notes"]]
    files = [("results.json", "every number, per image too")]
    if outputs.get("grid"):
        files.append(("grid.png", "grey input | each model | ground truth"))
    if outputs.get("ab_hist"):
        files.append(("ab_hist.png", "2-D ab histograms (log scale)"))
    lines += ["", "Files:", ""] + [f"- [{f}]({f}): {what}" for f, what in files]
    if outputs.get("grid"):
        lines += ["", "![grid](grid.png)"]
    if outputs.get("ab_hist"):
        lines += ["", "![ab histograms](ab_hist.png)"]
    return "\n".join(lines) + "\n"


def _write_grid(path: Path, rows: list[list[np.ndarray]], names: list[str], cell: int) -> Path:
    """Rows of grey input | each model | ground truth, each thumbnail centred in a square cell."""
    from PIL import Image, ImageDraw, ImageFont

    labels = ["input (grey)"] + list(names) + [_GT]
    pad, head = 4, 18
    width = pad + len(labels) * (cell + pad)
    height = head + pad + len(rows) * (cell + pad)
    canvas = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default()
    for j, label in enumerate(labels):
        text = label
        while len(text) > 1 and draw.textlength(text, font=font) > cell:
            text = text[:-3] + ".." if len(text) > 3 else text[:-1]
        draw.text((pad + j * (cell + pad), 3), text, fill=(0, 0, 0), font=font)
    for i, row in enumerate(rows):
        for j, thumb in enumerate(row):
            h, w = thumb.shape[:2]
            x = pad + j * (cell + pad) + (cell - w) // 2
            y = head + pad + i * (cell + pad) + (cell - h) // 2
            canvas.paste(Image.fromarray(thumb, "RGB"), (x, y))
    return cio.save_image(path, np.asarray(canvas, dtype=np.float32) / 255.0)


def _write_ab_hist(path: Path, hists: dict[str, np.ndarray]) -> tuple[Path | None, str | None]:
    """One log-scaled 2-D ab histogram per model and for the ground truth (needs matplotlib)."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        return None, "ab_hist.png not written: matplotlib is not installed (pip install matplotlib)"
    k = len(hists)
    fig = Figure(figsize=(2.6 * k, 2.9), dpi=100)
    canvas = FigureCanvasAgg(fig)
    lo, hi = _HIST_RANGE
    for i, (name, h) in enumerate(hists.items()):
        ax = fig.add_subplot(1, k, i + 1)
        dens = h / max(h.sum(), 1.0)
        # Rows of h are a, columns b: transpose so that a runs along x and b along y.
        ax.imshow(np.log10(dens.T + 1e-6), origin="lower", extent=(lo, hi, lo, hi), cmap="magma", vmin=-6, vmax=-1)
        ax.axhline(0, color="white", lw=0.4, alpha=0.5)
        ax.axvline(0, color="white", lw=0.4, alpha=0.5)
        ax.set_title(name if len(name) <= 24 else name[:22] + "..", fontsize=9)
        ax.set_xlabel("a", fontsize=8)
        if i == 0:
            ax.set_ylabel("b", fontsize=8)
        ax.tick_params(labelsize=7)
    fig.tight_layout()
    canvas.draw()
    rgba = np.asarray(canvas.buffer_rgba())
    return cio.save_image(path, rgba[..., :3].astype(np.float32) / 255.0), None
