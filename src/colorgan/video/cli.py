"""The ``colorgan video`` subcommand: colourise a video file, with temporal stability, audio kept.

Exit status: 0 done (or the output existed already); 1 the input could not be colourised (not a
video, no video stream, corrupt, no frames in the range) or the output could not be written,
reported as one ``colorgan: error: FILE: reason`` line and with no output left behind; 2 usage
errors (bad option, no model, unknown output format, the video extra missing) before any work.
130 after Ctrl-C: the finished segments are kept and the same command continues from them.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from colorgan.cli_args import add_device_argument, add_model_arguments, add_render_size_argument, int_range, positive_int
from colorgan.cli_args import cli_error as _error
from colorgan.errors import ColorGANError
from colorgan.video.media import OUTPUT_FORMATS  # stdlib and numpy only at import: PyAV loads when used

__all__ = ["add_video_parser", "parse_time"]

#: The output suffixes, from the muxer table that colorize_video uses: ".mp4, .m4v, ...".
_SUFFIXES = ", ".join(OUTPUT_FORMATS)


def parse_time(text: str) -> float:
    """``SS``, ``SS.sss``, ``MM:SS(.sss)`` or ``HH:MM:SS(.sss)`` -> seconds.

    Raises:
        argparse.ArgumentTypeError: anything else, or a negative time.
    """
    m = re.fullmatch(r"\s*(?:(?:(\d+):)?(\d+):)?(\d+(?:\.\d*)?|\.\d+)\s*", text)
    if not m:
        raise argparse.ArgumentTypeError(f"not a time: {text!r} (use seconds or [HH:]MM:SS.sss)")
    h, mnt, s = m.groups()
    if mnt is not None and float(s) >= 60:
        raise argparse.ArgumentTypeError(f"not a time: {text!r} (seconds must be below 60)")
    return int(h or 0) * 3600 + int(mnt or 0) * 60 + float(s)


def _strength(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0.0 <= v < 1.0:
        raise argparse.ArgumentTypeError(f"must be in [0, 1), got {text}")
    return v


_threads = int_range(0, None, message="must be 0 (automatic) or more, got {v}")
_crf = int_range(0, 51)  # H.264's quality scale


def add_video_parser(sub) -> None:
    """Add the ``video`` subcommand to an argparse subparsers object (``add_subparsers()``)."""
    from colorgan.video.temporal import DEFAULT_STRENGTH

    v = sub.add_parser(
        "video",
        help="colourise a video file (temporal stability, audio kept, resumable)",
        description="Colourise a video. The output is H.264 at the input's size, pixel aspect and frame timing "
        f"(variable frame rate kept), in the container its suffix names ({_SUFFIXES}); audio is "
        "copied unchanged, metadata and rotation kept, and each frame's luminance is the input's. Colours are "
        "stabilised over time along the optical flow and reset at scene cuts. An interrupted run continues where "
        "it stopped when the same command is run again; the output appears only when complete.",
    )
    v.add_argument("input", type=Path, metavar="INPUT", help="a video file (MP4, MOV, MKV, AVI, ...)")
    v.add_argument("-o", "--output", required=True, type=Path, metavar="OUTPUT", help="the video file to write")
    add_render_size_argument(v)
    t = v.add_mutually_exclusive_group()
    t.add_argument(
        "--temporal",
        type=_strength,
        default=DEFAULT_STRENGTH,
        metavar="STRENGTH",
        help=f"temporal stabilisation in [0, 1): weight of the motion-compensated previous colour (default {DEFAULT_STRENGTH})",
    )
    t.add_argument("--no-temporal", dest="temporal", action="store_const", const=0.0, help="colourise each frame on its own")
    v.add_argument("--start", type=parse_time, default=None, metavar="T", help="first time to colourise (seconds or [HH:]MM:SS.sss)")
    v.add_argument("--end", type=parse_time, default=None, metavar="T", help="time to stop at (exclusive)")
    v.add_argument("--batch-size", type=positive_int, default=4, metavar="N", help="frames per forward pass (default 4)")
    v.add_argument(
        "--segment-frames",
        type=positive_int,
        default=240,
        metavar="N",
        help="frames per resumable segment (default 240); an interrupted run loses at most one segment",
    )
    v.add_argument("--crf", type=_crf, default=18, metavar="Q", help="H.264 quality: 0 lossless, 18 default, 23 smaller")
    v.add_argument(
        "--preset",
        default="medium",
        choices=["ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower", "veryslow"],
        metavar="P",
        help="H.264 speed/size trade-off: ultrafast ... medium (default) ... veryslow",
    )
    v.add_argument(
        "--encoder-threads",
        type=_threads,
        default=1,
        metavar="N",
        help="H.264 encoder threads: 1 (default) is reproducible, so a resumed run writes the same bytes; "
        "0 = automatic, faster where the encoder is the bottleneck (GPU)",
    )
    v.add_argument("--overwrite", action="store_true", help="redo OUTPUT if it exists (otherwise it is left alone)")
    add_device_argument(v)
    add_model_arguments(v)
    v.add_argument("--reference", type=Path, default=None, metavar="PATH",
                   help="a colour frame or photo for the clip (a model that takes guidance): its colours go to the matching parts")
    v.add_argument("--hints", type=Path, default=None, metavar="PATH",
                   help="colour points (a hints JSON file) for the clip's first frame, carried along its shot")
    v.add_argument("-q", "--quiet", action="store_true", help="no progress bar; errors and the summary only")
    v.set_defaults(func=_cmd_video)


def _cmd_video(args: argparse.Namespace) -> int:
    from colorgan.hints import HintsError

    if args.output.suffix.lower() not in OUTPUT_FORMATS:
        return _error(f"{args.output}: unknown video format {args.output.suffix!r}; use one of {_SUFFIXES}", 2)
    if args.start is not None and args.end is not None and args.end <= args.start:
        return _error(f"--end ({args.end:g} s) must be after --start ({args.start:g} s)", 2)
    try:
        from colorgan.video.core import VideoOptions, colorize_video, work_dir_for
        from colorgan.video.media import require_av
        from colorgan.video.temporal import require_cv2

        require_av()
        require_cv2()
    except ImportError as e:
        return _error(str(e), 2)
    from colorgan.pipeline import Colorizer, resolve_device

    try:
        device = resolve_device(args.device)
        colorizer = Colorizer.from_pretrained(args.weights if args.weights else args.model, device=device)
    except (ValueError, ColorGANError) as e:
        return _error(str(e), 2)
    for option, path in (("--reference", args.reference), ("--hints", args.hints)):
        if path is None:
            continue
        if not path.is_file():
            return _error(f"{path}: no such {option[2:]} file", 2)
        if not colorizer.takes_hints:
            return _error(f"{option}: the model {colorizer.name!r} takes no colour guidance (it was not trained with it)", 2)
    options = VideoOptions(
        render_size=args.render_size, temporal=args.temporal, start=args.start, end=args.end,
        batch_size=args.batch_size, segment_frames=args.segment_frames, crf=args.crf, preset=args.preset,
        encoder_threads=args.encoder_threads,
    )

    def report(msg: str) -> None:
        from tqdm import tqdm

        tqdm.write(f"colorgan: {msg}", file=sys.stderr)

    try:
        result = colorize_video(
            args.input, args.output, colorizer=colorizer, options=options, overwrite=args.overwrite,
            progress=not args.quiet and sys.stderr.isatty(), report=report, reference=args.reference, hints=args.hints,
        )
    except (ValueError, HintsError) as e:  # a greyscale reference, a bad hints file or point
        return _error(str(e), 2)
    except KeyboardInterrupt:
        print(
            f"colorgan: interrupted; finished segments are kept in {work_dir_for(args.output)}: "
            "run the same command again to continue",
            file=sys.stderr,
        )
        return 130
    except ColorGANError as e:
        return _error(str(e), 1)
    except MemoryError:
        return _error(f"{args.input}: not enough memory (try a smaller --batch-size or --render-size)", 1)
    if result.skipped:
        print(f"colorgan: {args.output} exists; skipped (use --overwrite to redo it)", file=sys.stderr)
        return 0
    extra = f", {result.resumed_frames} of them from an interrupted run" if result.resumed_frames else ""
    cuts = f"; {len(result.scene_cuts)} scene cut(s)" if result.scene_cuts else ""
    print(
        f"colorgan: {result.frames} frames colourised{extra} ({result.fps:.2f} frames/s){cuts}; output {result.output}",
        file=sys.stderr,
    )
    for note in result.streams:
        print(f"colorgan:   {note}", file=sys.stderr)
    return 0
