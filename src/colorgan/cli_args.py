"""What every ``colorgan`` subcommand's parser shares: argument types, the common options, one-line errors.

:mod:`colorgan.cli` and each command's own module (``colorgan.web.cli``, ``colorgan.video.cli``,
``colorgan.study.cli``, ``colorgan.eval.cli``, :func:`colorgan.export.add_export_parser`) build
their parsers from these, so that an option means and reads the same in every command.

This module imports only the standard library and :mod:`colorgan.limits`: building the whole
command line (``colorgan --help``) loads neither torch nor numpy.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path
from typing import Callable

from colorgan.limits import MAX_RENDER_SIZE, MIN_RENDER_SIZE

__all__ = [
    "Parser",
    "int_range",
    "render_size",
    "positive_int",
    "non_negative_int",
    "positive_float",
    "port",
    "add_render_size_argument",
    "add_device_argument",
    "add_model_arguments",
    "cli_error",
    "cli_warning",
]


class Parser(argparse.ArgumentParser):
    """An :class:`argparse.ArgumentParser` whose usage errors are one line (and exit 2, as argparse's).

    Pass it as ``parser_class`` to ``add_subparsers`` so that subcommands behave the same.
    """

    def error(self, message: str) -> None:  # type: ignore[override]
        # One line and exit 2, as argparse does, but without dumping the whole usage block.
        self.print_usage(sys.stderr)
        self.exit(2, f"{self.prog}: error: {message}\n")


def int_range(
    lo: int | Callable[[], int] | None,
    hi: int | Callable[[], int] | None,
    *,
    what: str = "an integer",
    message: str | None = None,
    parse: Callable[[str], int] = int,
) -> Callable[[str], int]:
    """An argparse ``type=`` function for a whole number in ``[lo, hi]`` (either end may be open).

    Args:
        lo: the smallest value allowed, None for no lower bound, or a function returning it
            (read at parse time, so a limit that lives in a heavy module is imported only then).
        hi: the largest value allowed, likewise.
        what: how the unparsable-text error names the expected kind: ``not {what}: 'TEXT'``.
        message: the out-of-range error, a format string with ``{lo}``, ``{hi}`` and ``{v}``;
            default ``must be between {lo} and {hi}, got {v}`` (both bounds) or
            ``must be {lo} or more, got {v}`` / ``must be {hi} or less, got {v}`` (one bound).
        parse: text -> int; a ValueError from it is reported as not ``what``.

    Returns:
        ``f(text) -> int`` raising :class:`argparse.ArgumentTypeError` with a one-line message.
    """

    def check(text: str) -> int:
        try:
            v = parse(text)
        except (ValueError, OverflowError):  # int(float("inf")) overflows
            raise argparse.ArgumentTypeError(f"not {what}: {text!r}") from None
        low = lo() if callable(lo) else lo
        high = hi() if callable(hi) else hi
        if (low is not None and v < low) or (high is not None and v > high):
            if message is not None:
                fmt = message
            elif low is not None and high is not None:
                fmt = "must be between {lo} and {hi}, got {v}"
            else:
                fmt = "must be {lo} or more, got {v}" if low is not None else "must be {hi} or less, got {v}"
            raise argparse.ArgumentTypeError(fmt.format(lo=low, hi=high, v=v))
        return v

    return check


#: A render size (short side the network sees): a whole number in [MIN_RENDER_SIZE, MAX_RENDER_SIZE].
render_size = int_range(MIN_RENDER_SIZE, MAX_RENDER_SIZE)
#: A count of 1 or more; ``int(float(text))``, so that "1e6" works for --max-pixels and the like.
positive_int = int_range(1, None, what="a number", message="must be positive, got {v}", parse=lambda text: int(float(text)))
#: A count of 0 or more.
non_negative_int = int_range(0, None)
#: A TCP port; 0 lets the system pick a free one.
port = int_range(0, 65535)


def positive_float(text: str) -> float:
    """An argparse ``type=`` function for a finite number above 0 (a size in MB, a time in seconds)."""
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not (v > 0 and math.isfinite(v)):
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return v


def add_render_size_argument(parser: argparse.ArgumentParser, *, sees: str = "the model sees") -> None:
    """Add ``--render-size N`` (default 256); its help reads ``short side {sees} (default 256)``."""
    parser.add_argument("--render-size", type=render_size, default=256, metavar="N", help=f"short side {sees} (default 256)")


def add_device_argument(parser: argparse.ArgumentParser, *, choices: str = "cpu, cuda, cuda:1, mps or auto (default)") -> None:
    """Add ``--device`` (default ``auto``: CUDA when available, else MPS, else CPU)."""
    parser.add_argument("--device", default="auto", help=choices)


def add_model_arguments(parser: argparse.ArgumentParser, *, weights_help: str = "a .safetensors weights file") -> None:
    """Add the model to use: ``--weights PATH`` or ``--model NAME`` (one of them; neither: the shipped default).

    Both land in ``args.weights`` (a :class:`~pathlib.Path` or None) and ``args.model`` (a name or
    None); ``args.weights if args.weights else args.model`` is what ``Colorizer.from_pretrained`` takes.
    """
    g = parser.add_mutually_exclusive_group()
    g.add_argument("--weights", type=Path, metavar="PATH", help=weights_help)
    g.add_argument("--model", default=None, metavar="NAME", help="a shipped model by name (default: 'default')")


def cli_error(msg: str, code: int = 2) -> int:
    """Print ``colorgan: error: MSG`` to stderr and return ``code`` (default 2, a usage error) as the exit status."""
    print(f"colorgan: error: {msg}", file=sys.stderr)
    return code


def cli_warning(msg: str) -> None:
    """Print ``colorgan: warning: MSG`` to stderr without breaking a running progress bar."""
    from tqdm import tqdm

    tqdm.write(f"colorgan: warning: {msg}", file=sys.stderr)
