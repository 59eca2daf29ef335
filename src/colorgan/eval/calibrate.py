"""Calibrate a generator's chroma gain on held-out photos, so its colours are as vivid as real ones.

A colouriser trained to regress ab (L1, MSE, even with a feature loss and a short GAN phase)
predicts the conditional mean where colour is ambiguous, which is less colourful than any single
plausible answer. CIC corrects this at decoding time with its annealed-mean temperature; we do the
equivalent for our regression generator with one scale on ab, ``GeneratorConfig.chroma_gain``,
fitted on photos held out from the *training* folders (never on the evaluation set):

    python -m colorgan.eval.calibrate --weights runs/x/generator.safetensors --data HELDOUT_DIR \\
        --target 0.95 --out calibrated.safetensors

For each photo (256 px protocol: short side 256, centre crop) the model predicts ab once; then for
each candidate gain g the output ``Lab(L, g * ab)`` is rendered (gamut-clipped as always) and
compared with the truth. The chosen gain is the smallest whose mean colourfulness (Hasler and
Suesstrunk) reaches ``target`` times the truth's, the same ratio the evaluation report shows.
With ``--min-psnr DB`` it is instead the gain with the lowest mean |CF(output) - CF(truth)| among
those whose CF ratio is between ``target`` and 1.15 and whose PSNR is at least DB.

With ``--adaptive`` a per-image gain head is first fitted on *training* photos
(:mod:`colorgan.eval.gain_head`), and the curve is that of global gains on top of it.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import os
import sys
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from colorgan import color

__all__ = ["GainPoint", "ProtocolPrediction", "protocol_predictions", "chroma_gain_curve", "choose_gain", "pick_gain", "main"]

log = logging.getLogger(__name__)

# The upper end of the CF ratio a colouriser should land in (the default model's acceptance band
# is 0.80-1.15 of the truth's mean colourfulness): above it colours read as garish.
MAX_CF_RATIO = 1.15


@dataclasses.dataclass(frozen=True)
class GainPoint:
    """Scores of one candidate gain over the calibration photos."""

    gain: float
    cf_ratio: float  # mean CF of the outputs / mean CF of the truths
    delta_cf: float  # mean |CF(output) - CF(truth)|
    psnr: float  # mean PSNR (dB) against the truth rendered through Lab


@dataclasses.dataclass(frozen=True)
class ProtocolPrediction:
    """One colour photo under the 256 px protocol and the model's ab for it.

    Attributes:
        file: the photo.
        L: ``(1, 1, size, size)`` L in [0, 100].
        truth: ``(size, size, 3)`` sRGB in [0, 1], the photo rendered through Lab like the outputs.
        ab: ``(1, 2, h, w)`` predicted ab (about [-110, 110]) at render resolution.
    """

    file: str
    L: torch.Tensor
    truth: np.ndarray
    ab: torch.Tensor


def protocol_predictions(colorizer: "object", files: Sequence[str | os.PathLike], *, size: int = 256, render_size: int = 256):
    """Yield a :class:`ProtocolPrediction` per readable colour photo, one forward pass each.

    As the evaluation report does, unreadable and greyscale truths are left out (a grey truth's
    CF of 0 would pull a colourfulness target down); unreadable ones are logged.
    """
    from colorgan import io as cio
    from colorgan.errors import ImageLoadError
    from colorgan.eval.metrics import center_crop_resize
    from colorgan.eval.report import ground_truth

    for f in files:
        try:
            loaded = cio.load_image(f)
        except ImageLoadError as e:
            log.warning("skipped %s", e)
            continue
        if loaded.kind == "grey":
            continue
        lab, truth_t = ground_truth(center_crop_resize(loaded.rgb, size), protocol="full")
        L = lab[:, :1]
        ab = colorizer.predict_ab(L, render_size)  # type: ignore[attr-defined]
        yield ProtocolPrediction(str(f), L, truth_t[0].permute(1, 2, 0).numpy(), ab)


def chroma_gain_curve(
    colorizer: "object",
    files: Sequence[str | os.PathLike],
    gains: Sequence[float],
    *,
    size: int = 256,
    render_size: int = 256,
) -> list[GainPoint]:
    """Score each gain on colour photos (see the module docstring).

    Args:
        colorizer: a :class:`colorgan.pipeline.Colorizer` whose model's own gain is 1 (or what
            the curve is relative to).
        files: colour photos held out from training.
        gains: candidate gains (> 0).
        size: protocol size (short side resized to it, then centre-cropped square).
        render_size: short side the model sees.

    Returns:
        One :class:`GainPoint` per gain, in the order given.
    """
    from colorgan.eval.metrics import colourfulness, psnr

    cf_true: list[float] = []
    cf_pred: dict[float, list[float]] = {g: [] for g in gains}
    psnrs: dict[float, list[float]] = {g: [] for g in gains}
    for p in protocol_predictions(colorizer, files, size=size, render_size=render_size):
        cf_true.append(colourfulness(p.truth))
        for g in gains:
            out = color.merge_luminance(p.L, p.ab * g)[0].permute(1, 2, 0).numpy()
            cf_pred[g].append(colourfulness(out))
            psnrs[g].append(psnr(out, p.truth))
    if not cf_true:
        raise ValueError("no photos to calibrate on")
    mean_true = float(np.mean(cf_true))
    return [
        GainPoint(
            gain=float(g),
            cf_ratio=float(np.mean(cf_pred[g])) / mean_true,
            delta_cf=float(np.mean(np.abs(np.array(cf_pred[g]) - np.array(cf_true)))),
            psnr=float(np.mean(psnrs[g])),
        )
        for g in gains
    ]


def choose_gain(
    curve: Sequence[GainPoint], target: float, *, min_psnr: float | None = None, max_ratio: float = MAX_CF_RATIO
) -> tuple[GainPoint, str]:
    """Choose a gain from a calibration curve, and say which rule chose it.

    Without ``min_psnr``: the point with the smallest gain whose CF ratio reaches ``target``
    (rule ``"target"``), i.e. as little extra colour as reaches the target; the largest gain if
    none does (``"unreached"``).

    With ``min_psnr``: the point with the lowest delta-CF among those whose CF ratio lies in
    ``[target, max_ratio]`` and whose PSNR is at least ``min_psnr`` dB (``"min_dcf"``), i.e. the
    gain that best matches each photo's colourfulness without giving up more than the PSNR floor
    allows. If no point qualifies, the rule above decides.

    Raises:
        ValueError: an empty curve.
    """
    if not curve:
        raise ValueError("the calibration curve is empty")
    ordered = sorted(curve, key=lambda p: p.gain)
    if min_psnr is not None:
        ok = [p for p in ordered if target <= p.cf_ratio <= max_ratio and p.psnr >= min_psnr]
        if ok:
            return min(ok, key=lambda p: p.delta_cf), "min_dcf"
    for p in ordered:
        if p.cf_ratio >= target:
            return p, "target"
    return ordered[-1], "unreached"


def pick_gain(
    curve: Sequence[GainPoint], target: float, *, min_psnr: float | None = None, max_ratio: float = MAX_CF_RATIO
) -> GainPoint:
    """The point :func:`choose_gain` chooses."""
    return choose_gain(curve, target, min_psnr=min_psnr, max_ratio=max_ratio)[0]


def _fit_head(model: torch.nn.Module, args: argparse.Namespace) -> tuple[torch.nn.Module, dict[str, object]]:
    """Fit the per-image gain head on training photos; print and return what was fitted."""
    from colorgan.eval import gain_head

    fit_files = gain_head.training_files(args.fit_config, args.fit_images, args.fit_seed)
    print(f"fitting the gain head on {len(fit_files)} training photos ({args.fit_config})", file=sys.stderr)
    samples = gain_head.collect_samples(model, fit_files)
    fit = gain_head.fit_ridge(samples.features, samples.target)
    record = {"photos": len(samples.files), "config": str(args.fit_config), "seed": args.fit_seed,
              "alpha": fit.alpha, "cv_mse": fit.cv_mse, "cv_mse_mean": fit.cv_mse_mean}
    print(f"gain head: ridge alpha {fit.alpha:g}; cross-validated MSE of log gain {fit.cv_mse:.4f} "
          f"(predicting the mean: {fit.cv_mse_mean:.4f})")
    return gain_head.with_gain_head(model, fit), record


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m colorgan.eval.calibrate``: print the gain curve and write the calibrated weights."""
    from colorgan import io as cio
    from colorgan.cli import cli_error, int_range
    from colorgan.errors import ColorGANError
    from colorgan.models import hub
    from colorgan.pipeline import Colorizer

    p = argparse.ArgumentParser(prog="python -m colorgan.eval.calibrate", description=__doc__.split("\n\n")[0])
    p.add_argument("--weights", required=True, type=Path, help="generator weights (.safetensors) trained with gain 1")
    p.add_argument("--data", required=True, action="append", type=Path, help="held-out colour photos (never the eval set)")
    p.add_argument("--target", type=float, default=0.95, help="CF ratio to reach (default 0.95)")
    p.add_argument("--min-psnr", type=float, default=None, metavar="DB",
                   help="choose instead the lowest delta-CF among gains whose CF ratio is in [target, "
                        f"{MAX_CF_RATIO}] and whose PSNR is at least DB")
    p.add_argument("--gains", default="1.0,1.1,1.2,1.3,1.4,1.5,1.6,1.7,1.8", help="comma-separated candidates")
    p.add_argument("--out", type=Path, default=None, help="write the calibrated weights here (fp16)")
    p.add_argument("--json", type=Path, default=None, help="write the curve as JSON here")
    p.add_argument("--adaptive", action="store_true", help="first fit a per-image gain head on training photos")
    p.add_argument("--fit-config", type=Path, default=None, help="training recipe whose [[data]] folders and hold-out rule give the fit's photos (--adaptive)")
    p.add_argument("--fit-images", type=int_range(4, 1_000_000), default=None, help="training photos for the fit (default 1200)")
    p.add_argument("--fit-seed", type=int, default=None, help="which training photos (default 0)")
    args = p.parse_args(argv)
    if args.adaptive and args.fit_config is None:
        p.error("--adaptive needs --fit-config (the training recipe: its photos, never the held-out ones)")
    if not args.adaptive and (args.fit_config, args.fit_images, args.fit_seed) != (None, None, None):
        p.error("--fit-config, --fit-images and --fit-seed only apply with --adaptive")
    if args.min_psnr is not None and not math.isfinite(args.min_psnr):
        p.error(f"--min-psnr must be a finite number of dB, got {args.min_psnr}")
    if args.min_psnr is not None and args.target > MAX_CF_RATIO:
        p.error(f"with --min-psnr the band is [--target, {MAX_CF_RATIO}]: --target {args.target} leaves it empty")
    try:
        gains = [float(g) for g in args.gains.split(",")]
    except ValueError:
        p.error(f"--gains must be comma-separated numbers, got {args.gains!r}")
    if not all(math.isfinite(g) and g > 0 for g in gains):
        p.error(f"--gains must be positive finite numbers, got {args.gains!r}")
    args.fit_images = 1200 if args.fit_images is None else args.fit_images
    args.fit_seed = 0 if args.fit_seed is None else args.fit_seed
    try:
        model = hub.load_model(args.weights, expect_kind="generator")
        if model.config.chroma_gain != 1.0:
            print(f"note: {args.weights} already has chroma_gain {model.config.chroma_gain}; gains are relative to it", file=sys.stderr)
        files = [f for f, _ in cio.iter_image_files(args.data)]
        fit_record: dict[str, object] = {}
        if args.adaptive:
            model, fit_record = _fit_head(model, args)
        elif getattr(model.config, "adaptive_gain", False):
            print(f"note: {args.weights} has a per-image gain head; the curve is on top of it", file=sys.stderr)
        colorizer = Colorizer(model, device="cpu", name=args.weights.stem)
        curve = chroma_gain_curve(colorizer, files, gains)
    except (ColorGANError, ValueError, OSError) as e:
        return cli_error(str(e))
    print(f"{len(files)} photos")
    print("gain  CF ratio  dCF    PSNR")
    for pt in curve:
        print(f"{pt.gain:4.2f}  {pt.cf_ratio:8.3f}  {pt.delta_cf:5.2f}  {pt.psnr:6.2f}")
    best, rule = choose_gain(curve, args.target, min_psnr=args.min_psnr)
    if args.min_psnr is not None and rule != "min_dcf":
        print(f"warning: no gain has CF ratio in [{args.target}, {MAX_CF_RATIO}] and PSNR >= {args.min_psnr} dB; "
              "falling back to the smallest gain reaching the target", file=sys.stderr)
    why = {
        "min_dcf": f"the lowest dCF with CF ratio in [{args.target}, {MAX_CF_RATIO}] and PSNR >= {args.min_psnr} dB",
        "target": f"the smallest gain reaching CF ratio {args.target}",
        "unreached": f"no gain reaches CF ratio {args.target}, so the largest",
    }[rule]
    print(f"chosen gain {best.gain:.2f}: {why} (CF ratio {best.cf_ratio:.3f}, dCF {best.delta_cf:.2f}, "
          f"PSNR {best.psnr:.2f} dB)")
    if best.cf_ratio > MAX_CF_RATIO:
        print(f"warning: the chosen gain's CF ratio {best.cf_ratio:.3f} is above {MAX_CF_RATIO} (garish)", file=sys.stderr)

    def record(**choice: float) -> dict[str, object]:
        # What the run found, for the JSON file and the weights' metadata alike.
        floor = {} if args.min_psnr is None else {"min_psnr": args.min_psnr, "max_ratio": MAX_CF_RATIO}
        return {"photos": len(files), "target": args.target, **floor, "rule": rule, **choice,
                "curve": [dataclasses.asdict(c) for c in curve], **({"gain_head": fit_record} if fit_record else {})}

    if args.json:
        args.json.write_text(json.dumps(record(chosen=best.gain), indent=1))
    if args.out:
        gain = model.config.chroma_gain * best.gain
        calibrated = type(model)(dataclasses.replace(model.config, chroma_gain=gain))
        calibrated.load_state_dict(model.state_dict())
        # Keep the training record and add the calibration's, so the file still says how it was made.
        extra = {k: v for k, v in hub.read_metadata(args.weights).items() if k == "training"}
        extra["calibration"] = json.dumps(record(gain=gain))
        hub.save_model(calibrated.eval(), args.out, dtype=torch.float16, extra=extra)
        print(f"wrote {args.out} (chroma_gain {gain:.3f})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
