"""The ``colorgan`` command: thin shells over :class:`colorgan.pipeline.Colorizer`.

Exit status: 0 all good; 1 some inputs failed (each reported with its reason, the rest still
processed); 2 usage errors (bad options, no model) before any work starts.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from colorgan import __version__
from colorgan.cli_args import (  # cli_error, cli_warning and int_range stay importable from here, as before
    Parser,
    add_device_argument,
    add_model_arguments,
    add_render_size_argument,
    cli_error,
    cli_warning,
    int_range,
    positive_int,
)
from colorgan.errors import ColorGANError, OutputError

__all__ = ["main", "build_parser", "colorize_paths", "ColorizeSummary"]

log = logging.getLogger("colorgan")

_FORMAT_SUFFIX = {"png": ".png", "jpg": ".jpg", "jpeg": ".jpg", "tiff": ".tif", "tif": ".tif", "webp": ".webp", "bmp": ".bmp"}


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand."""
    p = Parser(prog="colorgan", description="Colourise black-and-white photographs.")
    p.add_argument("--version", action="version", version=f"colorgan {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    sub.required = True

    c = sub.add_parser(
        "colorize",
        help="colourise image files and folders",
        description="Colourise photos. Folders are walked recursively and their tree is kept under OUTDIR. "
        "Inputs are never modified; outputs that already exist are skipped unless --overwrite.",
    )
    c.add_argument("inputs", nargs="+", metavar="INPUT", type=Path, help="image files or folders")
    c.add_argument("-o", "--output", required=True, type=Path, metavar="OUTDIR", help="output folder")
    add_render_size_argument(c)
    c.add_argument("--compare", action="store_true", help="also write NAME_compare.EXT: original and colour side by side")
    c.add_argument("--overwrite", action="store_true", help="redo outputs that already exist")
    add_device_argument(c)
    add_model_arguments(c, weights_help="a .safetensors weights file, or an .onnx file from 'colorgan export'")
    c.add_argument("--backend", default="auto", choices=["auto", "torch", "onnx"],
                   help="who runs the network: torch, onnx (ONNX Runtime; needs --weights FILE.onnx), or auto "
                   "(default: onnx for .onnx files)")
    c.add_argument("--precision", default="fp32", choices=["fp32", "bf16"],
                   help="fp32 (default) or bf16 (PyTorch backend; faster on CPUs with native bf16 and on GPUs)")
    c.add_argument("--threads", type=positive_int, default=None, metavar="N",
                   help="threads of the network's operators (default: OMP_NUM_THREADS if set, else half the cores "
                   "when --workers > 0, leaving the rest to decoding and encoding)")
    c.add_argument("--batch-size", type=positive_int, default=4, metavar="N", help="images per forward pass (default 4)")
    c.add_argument("--workers", type=int_range(0, None, message="must be 0 or more, got {v}"), default=2, metavar="N",
                   help="decoding threads and as many encoding threads, overlapping the network (default 2; 0: one at a time)")
    c.add_argument("--shard", default=None, metavar="K/N",
                   help="do only part K of N of the sorted file list (0 <= K < N), for SLURM arrays or GNU parallel; "
                   "under torchrun, RANK/WORLD_SIZE set it")
    c.add_argument("-v", "--verbose", action="store_true", help="one line per finished file")
    c.add_argument(
        "--format",
        default="same",
        choices=["same", "png", "jpg", "tiff", "webp", "bmp"],
        help="output format (default: the input's; 16-bit input keeps 16 bits in PNG and TIFF)",
    )
    c.add_argument("--quality", type=int, default=95, metavar="Q", help="JPEG/WebP quality (default 95)")
    c.add_argument("--hints", type=Path, default=None, metavar="PATH",
                   help="colour points: a JSON file for every input, or a folder with <input stem>.json per input "
                        "(in the input tree's layout; inputs without one are colourised automatically)")
    c.add_argument("--reference", type=Path, default=None, metavar="PATH",
                   help="a colour photo of a similar scene whose colours go to the matching parts of every input, "
                        "or a folder with <input stem>.<ext> per input; points (--hints) win where given")
    c.add_argument("--max-pixels", type=positive_int, default=None, metavar="N", help="refuse images larger than N pixels")
    c.add_argument("-q", "--quiet", action="store_true", help="no progress bar; errors and the summary only")
    c.set_defaults(func=_cmd_colorize)

    t = sub.add_parser(
        "train",
        help="train a generator with the NoGAN recipe",
        description="Run a NoGAN recipe: pretrain the generator, then cycles of critic pretraining and a short "
        "GAN phase that stops by itself at the inflection point, an optional fine-tuning with the colour losses "
        "and, with a [calibrate] table, the chroma calibration (RUN/final.safetensors). Resumable; works under torchrun.",
    )
    t.add_argument("--config", type=Path, default=None, help="a TOML recipe (default: built-in defaults)")
    t.add_argument("--data", action="append", default=[], metavar="[NAME=]DIR[:WEIGHT]", help="a folder of colour photos (repeat to mix; weights optional)")
    t.add_argument("--val", action="append", default=[], type=Path, metavar="DIR", help="validation folder (default: held out from --data)")
    t.add_argument("--out", required=True, type=Path, metavar="RUNDIR", help="the run folder")
    t.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a recipe value, e.g. gan.lr_c=4e-4")
    t.add_argument("--resume", action="store_true", help="continue the run in RUNDIR")
    add_device_argument(t, choices="cpu, cuda or auto (default)")
    t.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    t.set_defaults(func=_cmd_train)

    from colorgan.calibrate.cli import add_calibrate_parser

    add_calibrate_parser(sub)
    from colorgan.eval.cli import add_evaluate_parser

    add_evaluate_parser(sub)
    from colorgan.video.cli import add_video_parser

    add_video_parser(sub)
    from colorgan.export import add_export_parser

    add_export_parser(sub)
    from colorgan.web.cli import add_serve_parser

    add_serve_parser(sub)
    from colorgan.study.cli import add_study_parser

    add_study_parser(sub)
    return p


@dataclass
class ColorizeSummary:
    """What a colourise run did."""

    done: int = 0
    skipped: int = 0
    failed: int = 0

    def line(self) -> str:
        return f"{self.done} colourised, {self.skipped} skipped (already done), {self.failed} failed"


def _output_path(outdir: Path, rel: Path, fmt: str) -> Path:
    out = outdir / rel
    if fmt != "same":
        out = out.with_suffix(_FORMAT_SUFFIX[fmt])
    return out


def _compare_path(out: Path) -> Path:
    return out.with_name(f"{out.stem}_compare{out.suffix}")


def _same_path(a: Path, b: Path) -> bool:
    return os.path.realpath(a) == os.path.realpath(b)


def _is_within(path: Path, folder: Path) -> bool:
    try:
        path.resolve().relative_to(folder.resolve())
        return True
    except ValueError:
        return False


def colorize_paths(
    inputs: Sequence[Path],
    outdir: Path,
    *,
    colorizer: "object",
    render_size: int = 256,
    compare: bool = False,
    overwrite: bool = False,
    fmt: str = "same",
    quality: int = 95,
    max_pixels: int | None = None,
    progress: bool = True,
    report=print,
    batch_size: int = 4,
    workers: int = 2,
    shard: tuple[int, int] | None = None,
    verbose: bool = False,
    hints: Path | None = None,
    reference: Path | None = None,
) -> ColorizeSummary:
    """Colourise every image in ``inputs`` into ``outdir`` (the core of ``colorgan colorize``).

    Decoding, inference and encoding overlap (:func:`colorgan.batch.run_jobs`). Each failure is
    reported through ``report(message)`` and counted; the rest goes on.

    Args:
        inputs: image files and folders (walked recursively, in sorted order).
        outdir: output folder; the input folders' trees are kept under it.
        colorizer: a :class:`colorgan.pipeline.Colorizer`.
        render_size: short side the network sees.
        compare: also write ``NAME_compare.EXT`` (original | colour).
        overwrite: redo outputs that exist (else they are skipped, so a re-run finishes only
            what is missing).
        fmt: ``same`` or an output format (``png``, ``jpg``, ...).
        quality: JPEG/WebP quality.
        max_pixels: refuse larger images.
        progress: show a progress bar.
        report: receives one line per error or warning.
        batch_size: images per forward pass.
        workers: decoding threads and as many encoding threads (0: one stage at a time).
        shard: ``(K, N)``: do only the files at positions ``i % N == K`` of the full list
            (before skipping finished ones, so every process agrees on the split); errors about
            the inputs themselves are reported by shard 0 only.
        verbose: report one line per finished file.
        hints: colour points (:mod:`colorgan.hints`): a JSON file used for every input, or a
            folder holding ``<input stem>.json`` for each input in the input tree's layout
            (inputs without one are colourised automatically).
        reference: a colour photo whose colours every input takes where its parts match, or a
            folder holding ``<input stem>.<ext>`` for each input in the input tree's layout.

    Raises:
        OutputError: an output would land on an input: ``outdir`` is one of the input folders,
            or an output (or its ``_compare`` image) would have the path of an input file.
            Nothing is written then. An ``outdir`` inside an input folder is allowed: that
            folder is left out of the walk, so outputs are never read back as inputs.
    """
    from tqdm import tqdm

    from colorgan import io as cio
    from colorgan.batch import FileJob, run_jobs, shard_of

    for inp in inputs:
        if Path(inp).is_dir() and _same_path(Path(inp), outdir):
            raise OutputError(outdir, "the output folder is an input folder: its photos would be overwritten; choose another -o")
    summary = ColorizeSummary()
    k, n = shard if shard is not None else (0, 1)
    planning_errors: list[str] = []
    jobs: list[FileJob] = []
    planned: dict[Path, Path] = {}
    input_files: set[str] = set()
    for inp in inputs:
        try:
            for file, rel in cio.iter_image_files([inp]):
                # Never read our own outputs back (OUTDIR inside an input folder).
                if _is_within(file, outdir) and not _is_within(inp, outdir):
                    continue
                input_files.add(os.path.realpath(file))  # every input, even one skipped below, is never written
                out = _output_path(outdir, rel, fmt)
                key = Path(os.path.abspath(out))
                if key in planned:
                    planning_errors.append(f"error: {file}: its output {out} would clash with that of {planned[key]}; skipped")
                    continue
                planned[key] = file
                jobs.append(FileJob(file, out, _compare_path(out) if compare else None, _hints_for(hints, rel), _reference_for(reference, rel)))
        except ColorGANError as e:
            planning_errors.append(f"error: {e}")
    for job in jobs:  # an explicitly named file can sit where another input's output goes
        for target in (job.output, job.compare):
            if target is not None and os.path.realpath(target) in input_files:
                raise OutputError(target, f"the output of {job.source} would overwrite this input; choose another -o or --format")
    if k == 0:  # one report of each input problem, not one per process
        for msg in planning_errors:
            summary.failed += 1
            report(msg)
    if not jobs and not planning_errors:
        if k == 0:
            report(f"error: no images found in {', '.join(str(i) for i in inputs)}")
            summary.failed += 1
        return summary

    todo: list[FileJob] = []
    for job in shard_of(jobs, k, n):
        targets = [job.output] + ([job.compare] if job.compare is not None else [])
        if not overwrite and all(t.exists() for t in targets):
            summary.skipped += 1
        else:
            todo.append(job)
    bar = tqdm(total=len(todo), unit="img", disable=not progress, dynamic_ncols=True, desc="colourising")
    tag = f"[shard {k}/{n}] " if n > 1 else ""

    def on_file(job: FileJob, ok: bool) -> None:
        bar.update(1)
        if ok and verbose:
            report(f"{tag}colourised {job.source} -> {job.output}")

    try:
        result = run_jobs(
            todo,
            colorizer,
            render_size=render_size,
            batch_size=batch_size,
            workers=workers,
            max_pixels=max_pixels,
            quality=quality,
            inputs=input_files,
            report=report,
            on_file=on_file,
        )
    finally:
        bar.close()
    summary.done += result.done
    summary.failed += result.failed
    return summary


def _hints_for(hints: Path | None, rel: Path) -> Path | None:
    """The hints file of the input at ``rel`` (its path under its input root): ``hints`` itself
    when it is a file, ``hints/<rel with .json>`` when that exists in a hints folder, else None."""
    if hints is None:
        return None
    if not hints.is_dir():
        return hints
    candidate = hints / rel.with_suffix(".json")
    return candidate if candidate.is_file() else None


def _reference_for(reference: Path | None, rel: Path) -> Path | None:
    """The reference photo of the input at ``rel``: ``reference`` itself when it is a file, else the
    image ``reference/<rel's folder>/<rel's stem>.<any image suffix>`` when there is one, else None."""
    if reference is None or not reference.is_dir():
        return reference
    from colorgan.io import IMAGE_SUFFIXES

    folder = reference / rel.parent
    for cand in sorted(folder.glob(f"{rel.stem}.*")) if folder.is_dir() else []:
        if cand.suffix.lower() in IMAGE_SUFFIXES and cand.is_file():
            return cand
    return None


def _local_device(device: "object") -> "object":
    """Under a launcher with several processes per machine, give each its own GPU (LOCAL_RANK)."""
    import torch

    local = os.environ.get("LOCAL_RANK")
    if local is None or getattr(device, "type", None) != "cuda" or getattr(device, "index", None) is not None:
        return device
    count = torch.cuda.device_count()
    return torch.device("cuda", int(local) % count) if count > 1 else device


def _cmd_colorize(args: argparse.Namespace) -> int:
    import torch

    from colorgan.batch import parse_shard, shard_from_env
    from colorgan.pipeline import Colorizer, resolve_device

    try:
        device = _local_device(resolve_device(args.device))
        shard = parse_shard(args.shard) if args.shard else shard_from_env()
    except ValueError as e:
        return cli_error(str(e))
    if args.threads:
        torch.set_num_threads(args.threads)
    elif args.workers > 0 and "OMP_NUM_THREADS" not in os.environ:
        # The decode/encode threads need cores too; a network that takes all of them makes
        # OpenMP spin against them (on a busy 2-core machine, 2 network threads made a forward
        # pass up to 20x and a folder up to 1.4x slower than 1; see benchmarks/speed.py).
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        torch.set_num_threads(max(1, cores // 2))
    dtype = torch.bfloat16 if args.precision == "bf16" else torch.float32
    try:
        colorizer = Colorizer.from_pretrained(
            args.weights if args.weights else args.model,
            device=device,
            dtype=dtype,
            backend=args.backend,
            threads=args.threads,
        )
    except (ColorGANError, ValueError) as e:
        print(f"colorgan: error: {e}", file=sys.stderr)
        return 2
    if args.output.exists() and not args.output.is_dir():
        print(f"colorgan: error: {args.output}: exists and is not a folder", file=sys.stderr)
        return 2
    for option, path in (("--hints", args.hints), ("--reference", args.reference)):
        if path is None:
            continue
        if not path.exists():
            return cli_error(f"{path}: no such {option[2:]} file or folder")
        if not colorizer.takes_hints:
            return cli_error(f"{option}: the model {colorizer.name!r} takes no colour guidance (it was not trained with it)")

    def report(msg: str) -> None:
        from tqdm import tqdm

        tqdm.write(msg, file=sys.stderr)  # keeps the progress bar intact

    try:
        summary = colorize_paths(
            args.inputs,
            args.output,
            colorizer=colorizer,
            render_size=args.render_size,
            compare=args.compare,
            overwrite=args.overwrite,
            fmt=args.format,
            quality=args.quality,
            max_pixels=args.max_pixels,
            progress=not args.quiet and sys.stderr.isatty(),
            report=report,
            batch_size=args.batch_size,
            workers=args.workers,
            shard=shard,
            verbose=args.verbose,
            hints=args.hints,
            reference=args.reference,
        )
    except OutputError as e:  # an output would land on an input: refused before anything is written
        return cli_error(str(e))
    tag = f"shard {shard[0]}/{shard[1]}: " if shard is not None and shard[1] > 1 else ""
    print(f"{tag}{summary.line()}; outputs in {args.output}", file=sys.stderr)
    return 1 if summary.failed else 0


def _cmd_train(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from colorgan.pipeline import resolve_device
    from colorgan.recipe import load_recipe
    from colorgan.train.config import SourceConfig, with_data
    from colorgan.train.data import parse_source

    try:
        recipe = load_recipe(args.config, args.set)
        if args.data:
            sources = [parse_source(d) for d in args.data]
            recipe = replace(recipe, train=with_data(recipe.train, [SourceConfig(str(s.path), s.weight, s.name) for s in sources]))
        cfg = recipe.train
        device = resolve_device(args.device)
    except (ValueError, TypeError) as e:
        print(f"colorgan: error: {e}", file=sys.stderr)
        return 2
    for src in cfg.data:
        if not Path(src.path).exists():
            print(f"colorgan: error: {src.path}: no such data folder", file=sys.stderr)
            return 2
    from colorgan.recipe import run_recipe

    logging.getLogger("colorgan").setLevel(logging.WARNING if args.quiet else logging.INFO)
    # A machine that shuts down, a batch scheduler or `kill` sends SIGTERM: treat it like Ctrl-C, so
    # the stage writes its checkpoint on the way out instead of losing the steps since the last one.
    on_main = threading.current_thread() is threading.main_thread()  # signal.signal works there alone
    previous = signal.signal(signal.SIGTERM, _raise_interrupt) if on_main else None
    try:
        out = run_recipe(recipe, args.out, device=device, resume=args.resume, val_dirs=args.val or None, progress=not args.quiet)
    except FileExistsError as e:
        print(f"colorgan: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("colorgan: interrupted; a checkpoint was saved, continue with --resume", file=sys.stderr)
        return 130
    except ValueError as e:
        print(f"colorgan: error: {e}", file=sys.stderr)
        return 2
    finally:
        if on_main:
            signal.signal(signal.SIGTERM, previous)
    if int(os.environ.get("RANK", "0")) == 0:
        print(f"trained {'and calibrated ' if out.name != 'generator.safetensors' else ''}generator: {out}", file=sys.stderr)
    return 0


def _raise_interrupt(signum: int, frame: object) -> None:
    """SIGTERM handler of `colorgan train`: unwind as Ctrl-C does (the stage saves a checkpoint)."""
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``colorgan`` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.ERROR if getattr(args, "quiet", False) else logging.WARNING,
        format="%(levelname)s: %(message)s",
    )
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        print("colorgan: interrupted", file=sys.stderr)
        return 130
    except ColorGANError as e:
        print(f"colorgan: error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
