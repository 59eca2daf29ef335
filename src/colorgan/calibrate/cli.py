"""The ``colorgan calibrate`` subcommand: fit a generator's chroma calibration and store it with its weights.

``colorgan calibrate --weights W --data HELDOUT [--adaptive --fit-config RECIPE] --out CALIBRATED``
prints the gain curve on the held-out photos, the chosen gain and the rule that chose it, and
writes a copy of ``W`` (the same network tensors) whose metadata holds the new calibration. A
calibration ``W`` already has is replaced, never stacked: the fit is always against the bare
network. Exit status: 0 done; 2 usage errors (bad options, unreadable weights or recipe).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

from colorgan.calibrate.gain import MAX_CF_RATIO
from colorgan.cli_args import add_device_argument, cli_error, int_range

__all__ = ["add_calibrate_parser"]


def add_calibrate_parser(sub) -> argparse.ArgumentParser:
    """Add the ``calibrate`` subcommand to an argparse subparsers object (``add_subparsers()``)."""
    p = sub.add_parser(
        "calibrate",
        help="fit a generator's chroma calibration on held-out photos",
        description="Fit the chroma calibration of a generator: optionally a per-image gain on training photos "
        "(--adaptive), then a global gain chosen on held-out colour photos (never the evaluation set). "
        "Prints the gain curve and the rule that chose the gain; --out writes the weights with it.",
    )
    p.add_argument("--weights", required=True, type=Path, metavar="PATH", help="generator weights (.safetensors)")
    p.add_argument("--data", action="append", type=Path, metavar="DIR",
                   help="held-out colour photos (never the eval set); repeatable; needed unless --same-as")
    p.add_argument("--same-as", type=Path, default=None, metavar="PATH",
                   help="take the calibration of these weights instead of fitting one (for a network whose automatic "
                        "output is theirs, e.g. the same network with a guidance branch); needs --out")
    p.add_argument("--target", type=float, default=0.95, help="CF ratio to reach (default 0.95)")
    p.add_argument("--min-psnr", type=float, default=None, metavar="DB",
                   help="choose instead the lowest delta-CF among gains whose CF ratio is in [target, "
                        f"{MAX_CF_RATIO}] and whose PSNR is at least DB")
    p.add_argument("--gains", default="1.0,1.1,1.2,1.3,1.4,1.5,1.6,1.7,1.8", help="comma-separated candidates (default 1.0,...,1.8)")
    p.add_argument("--out", type=Path, default=None, metavar="PATH", help="write the calibrated weights here (fp16)")
    p.add_argument("--json", type=Path, default=None, metavar="PATH", help="write the curve and the choice as JSON here")
    p.add_argument("--adaptive", action="store_true", help="first fit a per-image gain on training photos")
    p.add_argument("--fit-config", type=Path, default=None, metavar="RECIPE",
                   help="training recipe whose [[data]] folders and hold-out rule give the fit's photos (--adaptive)")
    p.add_argument("--fit-images", type=int_range(4, 1_000_000), default=None, metavar="N",
                   help="training photos for the fit (default 1200)")
    p.add_argument("--fit-seed", type=int, default=None, metavar="N", help="which training photos (default 0)")
    add_device_argument(p)
    p.set_defaults(func=_cmd_calibrate, _parser=p)
    return p


def _check(args: argparse.Namespace, p: argparse.ArgumentParser) -> list[float]:
    """Usage errors (exit 2 through the parser) before any work; returns the candidate gains."""
    if args.same_as is not None:
        if args.out is None or args.data or args.adaptive:
            p.error("--same-as copies a calibration: give --out, and no --data or --adaptive")
        return []
    if not args.data:
        p.error("--data is required (held-out colour photos), unless --same-as")
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
    return gains


def _cmd_calibrate(args: argparse.Namespace) -> int:
    import torch

    from colorgan import calibrate
    from colorgan import io as cio
    from colorgan.calibrate import head
    from colorgan.errors import ColorGANError
    from colorgan.models import hub
    from colorgan.pipeline import resolve_device

    gains = _check(args, args._parser)
    if args.same_as is not None:
        return _copy_calibration(args)
    fit_images = 1200 if args.fit_images is None else args.fit_images
    fit_seed = 0 if args.fit_seed is None else args.fit_seed
    try:
        device = resolve_device(args.device)
        net = hub.load_model(args.weights, expect_kind="generator")
        if not hub.read_calibration(args.weights).is_identity:
            print(f"note: {args.weights} is already calibrated; the new calibration replaces it", file=sys.stderr)
        files = [f for f, _ in cio.iter_image_files(args.data)]
        fit_files = None
        if args.adaptive:
            fit_files = head.training_files(args.fit_config, fit_images, fit_seed)
            print(f"fitting the per-image gain on {len(fit_files)} training photos ({args.fit_config})", file=sys.stderr)
        result = calibrate.calibrate(net, files, gains=gains, target=args.target, min_psnr=args.min_psnr,
                                     fit_files=fit_files, device=device)
    except (ColorGANError, ValueError, OSError) as e:
        return cli_error(str(e))
    if result.per_image:
        r = result.per_image
        print(f"gain head: ridge alpha {r['alpha']:g}; cross-validated MSE of log gain {r['cv_mse']:.4f} "
              f"(predicting the mean: {r['cv_mse_mean']:.4f})")
        result.per_image.update({"config": str(args.fit_config), "seed": fit_seed})
    print(f"{len(files)} photos")
    print("gain  CF ratio  dCF    PSNR")
    for pt in result.curve:
        print(f"{pt.gain:4.2f}  {pt.cf_ratio:8.3f}  {pt.delta_cf:5.2f}  {pt.psnr:6.2f}")
    best, rule = result.chosen, result.rule
    if args.min_psnr is not None and rule != "min_dcf":
        print(f"warning: no gain has CF ratio in [{args.target}, {MAX_CF_RATIO}] and PSNR >= {args.min_psnr} dB; "
              "falling back to the smallest gain reaching the target", file=sys.stderr)
    print(f"chosen gain {best.gain:.2f}: {calibrate.RULES(args.target, args.min_psnr)[rule]} "
          f"(CF ratio {best.cf_ratio:.3f}, dCF {best.delta_cf:.2f}, PSNR {best.psnr:.2f} dB)")
    if best.cf_ratio > MAX_CF_RATIO:
        print(f"warning: the chosen gain's CF ratio {best.cf_ratio:.3f} is above {MAX_CF_RATIO} (garish)", file=sys.stderr)
    record = result.record(args.target, args.min_psnr)
    try:
        if args.json:
            args.json.write_text(json.dumps({**record, "chosen": best.gain}, indent=1))
        if args.out:
            # Keep the training record and add the calibration's, so the file still says how it was made.
            extra = {k: v for k, v in hub.read_metadata(args.weights).items() if k == "training"}
            extra["calibration"] = json.dumps(record)
            hub.save_model(net, args.out, dtype=torch.float16, extra=extra, calibration=result.calibration)
            print(f"wrote {args.out} (global gain {result.calibration.gain:.3f}"
                  f"{', per-image gain' if result.calibration.per_image else ''})")
    except OSError as e:
        return cli_error(f"cannot write: {e}", code=1)
    return 0


def _copy_calibration(args: argparse.Namespace) -> int:
    """``--same-as``: the network of ``--weights`` with the calibration (and its record) of ``--same-as``."""
    import torch

    from colorgan.errors import ColorGANError
    from colorgan.models import hub
    from colorgan.models.calibration import with_calibration

    try:
        net = hub.load_model(args.weights, expect_kind="generator")
        cal = hub.read_calibration(args.same_as)
        with_calibration(net, cal)  # checks that a per-image gain fits this network's features
        meta = hub.read_metadata(args.weights)
        extra = {k: v for k, v in meta.items() if k == "training"}
        record = hub.read_metadata(args.same_as).get("calibration")
        if record:
            extra["calibration"] = record
        hub.save_model(net, args.out, dtype=torch.float16, extra=extra, calibration=cal)
    except (ColorGANError, ValueError) as e:
        return cli_error(str(e))
    except OSError as e:
        return cli_error(f"cannot write: {e}", code=1)
    print(f"wrote {args.out} (the calibration of {args.same_as}: global gain {cal.gain:.3f}"
          f"{', per-image gain' if cal.per_image else ''})")
    return 0

