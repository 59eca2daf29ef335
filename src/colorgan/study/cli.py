"""The ``colorgan study`` subcommand: ``prepare``, ``serve`` and ``results``.

* ``colorgan study prepare --data DIR --models default,PATH --out STUDYDIR``: pick photos and
  render each model's colourisation of them (exit 1 when some photos could not be read; the
  study is still made from the rest);
* ``colorgan study serve STUDYDIR [--mode real|natural]``: the participants' web page;
* ``colorgan study results STUDYDIR [--csv FILE] [--json]``: fooling rates / preferences with
  Wilson 95% intervals, and every answer as CSV.

Usage errors (missing folders, unknown models, a folder that already holds a study) are one
``colorgan: error: ...`` line and exit status 2, before any work starts.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from collections.abc import Callable
from pathlib import Path

from colorgan.cli_args import add_device_argument, add_render_size_argument, cli_warning, int_range, non_negative_int, port, positive_int
from colorgan.cli_args import cli_error as _error
from colorgan.errors import ColorGANError

__all__ = ["add_study_parser"]


def _size_limit(name: str) -> Callable[[], int]:
    """``MIN_SIZE`` or ``MAX_SIZE`` of :mod:`colorgan.study.prepare`, read at parse time (it imports numpy)."""

    def get() -> int:
        from colorgan.study import prepare

        return int(getattr(prepare, name))

    return get


_display_size = int_range(_size_limit("MIN_SIZE"), _size_limit("MAX_SIZE"))


def add_study_parser(sub) -> None:
    """Add the ``study`` subcommand (with ``prepare``, ``serve``, ``results``) to an argparse subparsers object."""
    s = sub.add_parser(
        "study",
        help="human study: which photo is real / looks more natural (a local web page)",
        description="A two-alternative forced-choice study of colourisations: 'prepare' a study folder from "
        "colour photos and models, 'serve' the participants' page, and read the 'results' (fooling rate or "
        "preference per model, with Wilson 95% confidence intervals, and a CSV of every answer).",
    )
    steps = s.add_subparsers(dest="study_command", metavar="STEP", parser_class=type(s))
    steps.required = True

    p = steps.add_parser(
        "prepare",
        help="pick photos and render each model's colourisation of them into a study folder",
        description="Draw N usable colour photos (plus practice photos) from --data in a seeded random order, "
        "resize and centre-crop each to SIZE x SIZE, give each model the luminance of that image, and write "
        "every image as a PNG with an opaque random name plus study.sqlite into STUDYDIR. Greyscale and "
        "toned photos are skipped. STUDYDIR must not hold a study already.",
    )
    p.add_argument("--data", action="append", required=True, type=Path, metavar="DIR", help="folder (or file) of colour photos; repeatable")
    p.add_argument(
        "--models",
        action="append",
        required=True,
        metavar="M1,M2,...",
        help="comma-separated, as for 'colorgan evaluate': a shipped model name (default), a .safetensors "
        "weights file, 'grey' or 'mean'; repeatable",
    )
    p.add_argument("--out", required=True, type=Path, metavar="STUDYDIR", help="the new study folder")
    p.add_argument("--n", type=positive_int, default=50, metavar="N", help="study photos, each shown once per session (default 50)")
    p.add_argument("--practice", type=non_negative_int, default=3, metavar="P", help="practice photos, shown first with feedback (default 3)")
    p.add_argument("--size", type=_display_size, default=256, metavar="PX", help="side of the square images shown (default 256)")
    add_render_size_argument(p, sees="the models see")
    p.add_argument("--seed", type=int, default=0, help="picks the photos (default 0)")
    p.add_argument("--mean-from", type=Path, default=None, metavar="DIR", help="colour photos (the training set) for the 'mean' baseline")
    add_device_argument(p)
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_prepare)

    v = steps.add_parser(
        "serve",
        help="run the participants' web page",
        description="Serve the study page and its API (needs 'colorgan[web]'). Each participant opens the page; "
        "a session is planned and stored when they press Start. Answers are saved as they are given, so the "
        "server can be stopped and restarted at any time.",
    )
    v.add_argument("study", type=Path, metavar="STUDYDIR", help="a folder made by 'colorgan study prepare'")
    v.add_argument(
        "--mode",
        choices=["real", "natural"],
        default="real",
        help="real: 'which photo is the real one?' (fooling rate; default); natural: 'which looks more natural?' (preference)",
    )
    v.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1: this machine only; 0.0.0.0 exposes it to the network)")
    v.add_argument("--port", type=port, default=8001, help="TCP port (default 8001; 0 picks a free one)")
    v.add_argument(
        "--exposure-ms",
        type=non_negative_int,
        default=0,
        metavar="MS",
        help="hide each pair after MS milliseconds (Zhang et al. 2016 used 1000); default 0: shown until answered",
    )
    v.add_argument("--hide-results", action="store_true", help="do not serve /api/study/results (participants cannot peek)")
    # Quiet by default, as before: the access log would print each participant's session URL.
    v.add_argument("-v", "--verbose", action="store_true", help="uvicorn's info and access log (shows session ids)")
    v.set_defaults(func=_cmd_serve)

    r = steps.add_parser(
        "results",
        help="fooling rates / preferences with 95%% confidence intervals; CSV of every answer",
        description="Summarise the answers (practice trials excluded): in 'real' sessions each model's fooling "
        "rate (how often its colourisation was taken for the real photo), in 'natural' sessions the preference "
        "within each pair shown and each candidate's win rate, all with Wilson 95% confidence intervals.",
    )
    r.add_argument("study", type=Path, metavar="STUDYDIR", help="the study folder")
    r.add_argument("--csv", type=Path, default=None, metavar="FILE", help="also write every answer (practice ones flagged) to FILE")
    r.add_argument("--json", action="store_true", help="print the results as JSON instead of a table")
    r.add_argument("--complete-only", action="store_true", help="count only sessions whose every trial was answered")
    r.set_defaults(func=_cmd_results)


def _cmd_prepare(args: argparse.Namespace) -> int:
    from colorgan.eval.report import collect_files, load_eval_models
    from colorgan.pipeline import resolve_device
    from colorgan.eval.cli import parse_model_args
    from colorgan.study.prepare import PrepareConfig, check_study_dir, prepare_study

    names = parse_model_args(args)  # the same --models / --data / --mean-from checks as 'colorgan evaluate'
    if isinstance(names, int):
        return names
    try:
        check_study_dir(args.out)
        # Walked once, here: an empty data set is refused before any model loads, and
        # prepare_study reuses the list.
        files = collect_files(args.data, exclude=args.out)
        if not files:
            return _error(f"no images found in {', '.join(str(d) for d in args.data)}")
        device = resolve_device(args.device)
    except (ColorGANError, ValueError) as e:
        return _error(str(e))
    try:
        models = load_eval_models(names, device, mean_from=args.mean_from)
    except ColorGANError as e:
        return _error(str(e))
    cfg = PrepareConfig(n=args.n, practice=args.practice, size=args.size, render_size=args.render_size, seed=args.seed)

    try:
        summary = prepare_study(
            models, args.data, args.out, cfg, files=files, progress=not args.quiet and sys.stderr.isatty(), report=cli_warning
        )
    except ColorGANError as e:
        return _error(str(e))
    print(
        f"study ready in {summary['study_dir']}: {summary['photos']} photos and {summary['practice']} practice photos, "
        f"models {', '.join(summary['models'])} ({summary['images']} images)",
        file=sys.stderr,
    )
    print(f"run it with: colorgan study serve {args.out}", file=sys.stderr)
    if summary["failed"]:
        print(f"colorgan: {summary['failed']} photo(s) could not be read and were skipped", file=sys.stderr)
        return 1
    return 0


def _cmd_serve(args: argparse.Namespace) -> int:
    try:
        importlib.import_module("uvicorn")  # run_server's; checked now, before anything starts
        from colorgan.web.cli import run_server
        from colorgan.web.study import create_study_app
    except ImportError as e:
        return _error(f"the study server needs FastAPI and uvicorn: pip install 'colorgan[web]' ({e})")
    from colorgan.study.db import StudyDB
    from colorgan.web.settings import LOOPBACK_HOSTS, is_loopback

    try:
        db = StudyDB(args.study)
        app = create_study_app(
            args.study,
            modes=(args.mode,),
            exposure_ms=args.exposure_ms,
            results_api=not args.hide_results,
            # As 'colorgan serve': bound to loopback, only loopback Host headers, so a web page
            # elsewhere cannot reach the study through DNS rebinding.
            allowed_hosts=LOOPBACK_HOSTS if is_loopback(args.host) else None,
        )
    except ColorGANError as e:
        return _error(str(e))
    # The same binding, warning, banner and Ctrl-C handling as 'colorgan serve'.
    return run_server(
        app,
        args.host,
        args.port,
        path="/study",
        details=f"{args.mode!r} study, {db.manifest.get('n_photos')} pairs + {db.manifest.get('n_practice')} practice",
        exposed="anyone who can reach this machine can take part in the study"
        + ("" if args.hide_results else " and read /api/study/results (--hide-results turns that off)")
        + "; it has no authentication",
        quiet=not args.verbose,
    )


def _cmd_results(args: argparse.Namespace) -> int:
    from colorgan.study.db import StudyDB
    from colorgan.study.scoring import format_summary, summarize, write_csv

    try:
        db = StudyDB(args.study)
        summary = summarize(db, complete_only=args.complete_only)
        if args.csv is not None:
            n = write_csv(db, args.csv)
    except ColorGANError as e:
        return _error(str(e))
    if args.json:
        print(json.dumps(summary, indent=1))
    else:
        sys.stdout.write(format_summary(summary))
    if args.csv is not None:
        print(f"wrote {n} answers to {args.csv}", file=sys.stderr)
    return 0
