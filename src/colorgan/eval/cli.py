"""The ``colorgan evaluate`` subcommand: compare colourisers on ground-truth colour photos.

``colorgan evaluate --models default,grey,PATH --data DIR --out REPORTDIR`` writes
``report.md``, ``results.json``, ``grid.png`` and ``ab_hist.png`` (see
:mod:`colorgan.eval.report`). Exit status: 0 done; 1 done, but some images could not be read
(listed in the report); 2 usage errors (unknown model, missing folder, no images), reported as
one ``colorgan: error: ...`` line before any work starts.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from colorgan.cli_args import add_device_argument, add_render_size_argument, cli_warning, non_negative_int, positive_int
from colorgan.cli_args import cli_error as _error
from colorgan.errors import ColorGANError

__all__ = ["add_evaluate_parser", "parse_model_args"]


def add_evaluate_parser(sub) -> None:
    """Add the ``evaluate`` subcommand to an argparse subparsers object (``add_subparsers()``)."""
    e = sub.add_parser(
        "evaluate",
        help="compare colourisers on colour photos (PSNR, SSIM, colourfulness, AuC, FID)",
        description="Give each model the luminance of ground-truth colour photos and compare its colours with "
        "the truth. Writes report.md (a table with bootstrap 95% confidence intervals, then the first model "
        "minus each other one with paired intervals), results.json (every number, per image too), grid.png "
        "and ab_hist.png into REPORTDIR.",
    )
    e.add_argument(
        "--models",
        action="append",
        required=True,
        metavar="M1,M2,...",
        help="comma-separated: a shipped model name (default), a .safetensors weights file, "
        "'grey' (no colour) or 'mean' (the mean chroma of --mean-from); repeatable. The first is compared "
        "with each other one in the paired table",
    )
    e.add_argument("--data", action="append", required=True, type=Path, metavar="DIR", help="folder (or file) of ground-truth colour photos; repeatable")
    e.add_argument("--out", required=True, type=Path, metavar="REPORTDIR", help="the report folder")
    e.add_argument(
        "--protocol",
        choices=["256", "full"],
        default="256",
        help="256: short side 256 and centre crop 256 x 256, as in the literature (default); full: full resolution",
    )
    add_render_size_argument(e, sees="the models see")
    e.add_argument("--no-fid", action="store_true", help="skip FID and KID (they need the offline Inception network)")
    e.add_argument("--max-images", type=positive_int, default=None, metavar="N", help="evaluate only the first N images")
    e.add_argument("--hints", type=non_negative_int, default=0, metavar="N",
                   help="simulate N colour points from the truth per photo (seeded) for the models that take them, "
                        "and report PSNR against the number of points (0, 1, 2, 5, 10, 20, 50) and the error at the hints")
    e.add_argument("--mean-from", type=Path, default=None, metavar="DIR", help="colour photos (the training set) for the 'mean' baseline")
    add_device_argument(e)
    e.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    e.set_defaults(func=_cmd_evaluate)


def parse_model_args(args: argparse.Namespace) -> list[str] | int:
    """The model names of ``--models``, after checking them and the folders of ``--data`` and ``--mean-from``.

    Shared by ``colorgan evaluate`` and ``colorgan study prepare``, which take the same options.

    Args:
        args: parsed options with ``models`` (a list of comma-separated groups), ``data`` (a list
            of paths) and ``mean_from`` (a path or None).

    Returns:
        The non-empty list of model names in order, or exit status 2 after printing one
        ``colorgan: error: ...`` line (no names given, a missing data or --mean-from folder).
    """
    names = [n.strip() for group in args.models for n in group.split(",") if n.strip()]
    if not names:
        return _error("--models: no model names given")
    for d in args.data:
        if not d.exists():
            return _error(f"{d}: no such data folder")
    if args.mean_from is not None and not args.mean_from.exists():
        return _error(f"{args.mean_from}: no such folder (--mean-from)")
    return names


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from colorgan.eval.report import EvalConfig, collect_files, evaluate_models, load_eval_models
    from colorgan.pipeline import resolve_device

    names = parse_model_args(args)
    if isinstance(names, int):
        return names
    if args.out.exists() and not args.out.is_dir():
        return _error(f"{args.out}: exists and is not a folder")
    try:
        device = resolve_device(args.device)
    except ValueError as e:
        return _error(str(e))
    try:
        if not collect_files(args.data, exclude=args.out):
            return _error(f"no images found in {', '.join(str(d) for d in args.data)}")
    except ColorGANError as e:
        return _error(str(e))
    try:
        models = load_eval_models(names, device, mean_from=args.mean_from)
    except ColorGANError as e:
        return _error(str(e))
    cfg = EvalConfig(render_size=args.render_size, protocol=args.protocol, fid=not args.no_fid, max_images=args.max_images, hints=args.hints)
    if args.hints and not any(getattr(m, "takes_hints", False) for m in models.values()):
        cli_warning(f"--hints {args.hints}: none of the models takes colour hints; all colour automatically")

    try:
        results = evaluate_models(models, args.data, args.out, cfg, progress=not args.quiet and sys.stderr.isatty(), report=cli_warning)
    except ColorGANError as e:  # EvaluationError, or OutputError writing the report
        return _error(str(e))
    print(results["outputs"]["report"])
    failed = [s for s in results["skipped"] if s["reason"] != "greyscale ground truth"]
    if failed:
        print(f"colorgan: {len(failed)} image(s) could not be read; see the report", file=sys.stderr)
        return 1
    return 0
