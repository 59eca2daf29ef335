"""Export a generator to ONNX (``colorgan export --format onnx``).

The exported graph computes exactly what the PyTorch generator computes, with a dynamic batch,
height and width (multiples of the model's stride, 32)::

    l_norm (B, 1, H, W) float32, L / 50 - 1 in [-1, 1]  ->  ab_norm (B, 2, H, W) float32, ab / 110

Pre- and post-processing (Lab conversion, resizing, the luminance merge) stay in
:class:`colorgan.pipeline.Colorizer`, so both backends share them and differ only in who runs
the network. Spectral normalisation is folded into plain convolution weights first
(:func:`plain_model`): in eval mode it is a fixed rescaling of each weight, and a graph with
plain weights is smaller and faster. After writing, the file is loaded with onnxruntime and
compared with PyTorch at two sizes and batch sizes different from the traced one
(:func:`check_onnx`); a difference above 1e-3 in ab units fails the export and leaves no file.

Two exporters are offered: ``dynamo`` (default; ``torch.export``-based, the one PyTorch
maintains, needs ``onnxscript``) and ``torchscript`` (the legacy tracer, deprecated by PyTorch
but some 50x quicker to run). Both give graphs that match PyTorch to about 1e-5 in ab.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import logging
import os
import sys
import tempfile
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Iterator, Sequence

from colorgan import __version__
from colorgan.errors import ColorGANError, ModelLoadError

if TYPE_CHECKING:  # torch is imported inside the functions: registering the CLI command stays light
    import torch
    import torch.nn as nn

__all__ = ["plain_model", "export_onnx", "check_onnx", "add_export_parser", "EXPORTERS", "DEFAULT_OPSET"]

log = logging.getLogger(__name__)

EXPORTERS = ("dynamo", "torchscript")
#: ONNX opset of exported graphs: supported by onnxruntime >= 1.14 and by both exporters.
DEFAULT_OPSET = 18
#: Largest exported agreement error accepted, in ab units (ab spans about [-110, 110]).
CHECK_TOLERANCE_AB = 1e-3
# Largest H or W (in multiples of the stride) the dynamic graph is declared for: 32 * 1024 px.
_MAX_SIDE_UNITS = 1024


def plain_model(model: "nn.Module") -> "nn.Module":
    """See :func:`colorgan.pipeline.plain_model` (spectral norm folded into plain weights)."""
    from colorgan.pipeline import plain_model as fold

    return fold(model)


@contextlib.contextmanager
def _quiet_exporter() -> Iterator[None]:
    """Silence the exporters' chatter (deprecation notes, torchvision-not-installed lines)."""
    loggers = [logging.getLogger(n) for n in ("torch.onnx", "torch.export", "torch._dynamo", "torch._export")]
    levels = [lg.level for lg in loggers]
    try:
        for lg in loggers:
            lg.setLevel(logging.ERROR)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def _sample_input(batch: int, h: int, w: int, seed: int = 0) -> "torch.Tensor":
    """A smooth, photo-like normalised L pattern in [-1, 1] (random noise would be atypical input)."""
    import torch

    g = torch.Generator().manual_seed(seed)
    yy = torch.linspace(0, 1, h).view(h, 1)
    xx = torch.linspace(0, 1, w).view(1, w)
    base = 0.6 * torch.sin(6.0 * xx + 3.0 * yy) * torch.cos(4.0 * yy)
    noise = 0.1 * torch.randn(batch, 1, h, w, generator=g)
    return (base + noise).clamp(-1.0, 1.0).to(torch.float32)


def _export_graph(model: "nn.Module", target: Path, *, stride: int, opset: int, exporter: str) -> None:
    import torch

    from colorgan.onnx_backend import INPUT_NAME, OUTPUT_NAME  # the names the backend runs by

    # Sample sizes differ from each other and from 1, so that no dimension gets specialised.
    sample = _sample_input(2, 4 * stride, 6 * stride)
    with _quiet_exporter(), torch.no_grad():
        if exporter == "dynamo":
            try:
                import onnxscript  # noqa: F401 - the dynamo exporter needs it
            except ImportError:
                raise ColorGANError(
                    "the dynamo ONNX exporter needs onnxscript: pip install 'colorgan[onnx]' "
                    "(or use --exporter torchscript)"
                ) from None
            batch = torch.export.Dim("batch", min=1, max=4096)
            h = torch.export.Dim("h_units", min=1, max=_MAX_SIDE_UNITS)
            w = torch.export.Dim("w_units", min=1, max=_MAX_SIDE_UNITS)
            torch.onnx.export(
                model,
                (sample,),
                str(target),
                dynamo=True,
                external_data=False,
                verbose=False,
                opset_version=opset,
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
                dynamic_shapes={INPUT_NAME: {0: batch, 2: stride * h, 3: stride * w}},
            )
        elif exporter == "torchscript":
            # H and W are multiples of the stride, so the generator's one shape-dependent branch
            # (aligning odd-sized upsampled features to their skip) is never taken and tracing
            # it as a constant is exact.
            dims = {0: "batch", 2: "height", 3: "width"}
            torch.onnx.export(
                model,
                (sample,),
                str(target),
                dynamo=False,
                opset_version=opset,
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
                dynamic_axes={INPUT_NAME: dims, OUTPUT_NAME: dims},
            )
        else:  # export_onnx checked the name before any work
            raise ValueError(f"unknown exporter {exporter!r}; choose one of {EXPORTERS}")


def _write_metadata(path: Path, meta: dict[str, str]) -> None:
    import onnx

    proto = onnx.load(str(path))
    del proto.metadata_props[:]
    for k, v in meta.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = k, v
    proto.doc_string = (
        "ColorGAN generator: l_norm (B,1,H,W) = L/50-1 -> ab_norm (B,2,H,W) = ab/110; "
        f"H, W multiples of {meta.get('stride', '32')}"
    )
    onnx.save(proto, str(path))


def check_onnx(
    path: str | os.PathLike,
    model: nn.Module,
    *,
    shapes: Sequence[tuple[int, int, int, int]] | None = None,
) -> float:
    """Largest difference in ab units between an ONNX file (onnxruntime) and ``model`` (PyTorch).

    Args:
        path: the ``.onnx`` file.
        model: the PyTorch model it was exported from.
        shapes: input shapes ``(B, 1, H, W)`` to compare at; default: two sizes and batch sizes
            that differ from the ones used for tracing, so a graph with a frozen size fails.

    Returns:
        ``max |ab_onnx - ab_torch|`` in ab units, over all shapes.
    """
    import torch

    from colorgan.onnx_backend import OnnxModel

    stride = int(getattr(model, "stride", 32))
    shapes = shapes or [(1, 1, 3 * stride, 5 * stride), (3, 1, 7 * stride, 4 * stride)]
    runner = OnnxModel(path, threads=max(1, torch.get_num_threads()), providers=["CPUExecutionProvider"])
    model = model.to("cpu", torch.float32).eval()
    worst = 0.0
    with torch.no_grad():
        for i, shape in enumerate(shapes):
            x = _sample_input(shape[0], shape[2], shape[3], seed=i + 1)
            ref = model(x)
            got = runner(x)
            if got.shape != ref.shape:
                raise ColorGANError(f"{path}: ONNX output shape {tuple(got.shape)} != PyTorch {tuple(ref.shape)} for input {shape}")
            worst = max(worst, float((got - ref).abs().max()) * 110.0)
    return worst


def export_onnx(
    model: "nn.Module",
    path: str | os.PathLike,
    *,
    opset: int = DEFAULT_OPSET,
    exporter: str = "dynamo",
    check: bool = True,
    metadata: dict[str, str] | None = None,
) -> Path:
    """Export a generator to an ONNX file with dynamic batch, height and width.

    Args:
        model: the generator (``forward(l_norm (B,1,H,W)) -> ab_norm (B,2,H,W)``); not modified.
        path: the ``.onnx`` file to write (atomically: a temporary file is renamed over it).
        opset: ONNX opset version.
        exporter: ``"dynamo"`` (default) or ``"torchscript"``, see the module docstring.
        check: compare the file with PyTorch through onnxruntime at two other sizes and batch
            sizes; above 1e-3 in ab the export fails and nothing is written.
        metadata: further string metadata to store (e.g. the source weights file).

    Returns:
        The path written.

    Raises:
        ColorGANError: the exporter is missing, the export fails, or the check fails.
    """
    import torch

    from colorgan.onnx_backend import ONNX_FORMAT

    if exporter not in EXPORTERS:
        raise ValueError(f"unknown exporter {exporter!r}; choose one of {EXPORTERS}")
    try:
        import onnx  # noqa: F401
    except ImportError:
        raise ColorGANError("ONNX export needs onnx: pip install 'colorgan[onnx]'") from None
    path = Path(path)
    stride = int(getattr(model, "stride", 32))
    plain = plain_model(model)
    calibration = getattr(model, "calibration", None)  # a CalibratedGenerator: record both parts
    config = getattr(getattr(model, "net", model), "config", None)
    meta = {
        "format": ONNX_FORMAT,
        "kind": "generator",
        "version": __version__,
        "stride": str(stride),
        "input": "l_norm (B,1,H,W) float32 = L/50-1",
        "output": "ab_norm (B,2,H,W) float32 = ab/110",
        "exporter": exporter,
        "opset": str(opset),
        "torch": torch.__version__,
    }
    if config is not None and dataclasses.is_dataclass(config):
        meta["config"] = json.dumps(dataclasses.asdict(config))
    if calibration is not None:
        meta["chroma_calibration"] = calibration.to_json()
    meta.update({k: str(v) for k, v in (metadata or {}).items()})
    path.parent.mkdir(parents=True, exist_ok=True)
    # Written beside the target, then renamed: a reader never sees half a file, and a failed
    # export or check leaves any previous file in place.
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        try:
            _export_graph(plain, tmp, stride=stride, opset=opset, exporter=exporter)
        except ColorGANError:
            raise
        except Exception as e:  # the exporters raise many types; the user needs one line
            hint = "; try --exporter torchscript" if exporter == "dynamo" else ""
            first = (str(e).splitlines() or [""])[0][:200]
            raise ColorGANError(f"ONNX export ({exporter}) failed: {type(e).__name__}: {first}{hint}") from None
        _write_metadata(tmp, meta)
        if check:
            worst = check_onnx(tmp, plain)
            if not worst <= CHECK_TOLERANCE_AB:  # also catches NaN
                raise ColorGANError(
                    f"exported ONNX model differs from PyTorch by {worst:.2g} in ab (limit {CHECK_TOLERANCE_AB}); not written"
                )
            log.info("ONNX check: max |ab difference| = %.2g", worst)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


# ------------------------------------------------------------------------------------ CLI


def add_export_parser(sub: "argparse._SubParsersAction") -> argparse.ArgumentParser:
    """Register ``colorgan export`` on the CLI's subparsers."""
    from colorgan.cli_args import add_model_arguments

    e = sub.add_parser(
        "export",
        help="export the generator to ONNX",
        description="Export a generator to ONNX with dynamic batch, height and width (multiples of 32). "
        "The file is checked against PyTorch with onnxruntime before it is kept. "
        "Use it with: colorgan colorize ... --backend onnx --weights FILE.onnx",
    )
    e.add_argument("--format", default="onnx", choices=["onnx"], help="export format (default onnx)")
    e.add_argument("-o", "--output", required=True, type=Path, metavar="FILE", help="the .onnx file to write")
    add_model_arguments(e)
    e.add_argument("--exporter", default="dynamo", choices=list(EXPORTERS), help="dynamo (default) or torchscript (legacy, faster)")
    e.add_argument("--opset", type=int, default=DEFAULT_OPSET, metavar="N", help=f"ONNX opset (default {DEFAULT_OPSET})")
    e.add_argument("--no-check", action="store_true", help="skip the onnxruntime-vs-PyTorch comparison")
    e.add_argument("--overwrite", action="store_true", help="replace an existing file")
    e.set_defaults(func=_cmd_export)
    return e


def _cmd_export(args: argparse.Namespace) -> int:
    import torch

    from colorgan.models.hub import load_inference_model, resolve_weights

    out: Path = args.output
    if out.suffix.lower() != ".onnx":
        print(f"colorgan: error: {out}: the output file must end in .onnx", file=sys.stderr)
        return 2
    if out.exists() and not args.overwrite:
        print(f"colorgan: error: {out}: already exists (use --overwrite to replace it)", file=sys.stderr)
        return 2
    try:
        source = resolve_weights(args.weights if args.weights else args.model)
        # The network with its chroma calibration: the graph computes what `colorize` shows.
        model = load_inference_model(source, device="cpu", dtype=torch.float32, expect_kind="generator")
    except ModelLoadError as e:
        print(f"colorgan: error: {e}", file=sys.stderr)
        return 2
    try:
        export_onnx(model, out, opset=args.opset, exporter=args.exporter, check=not args.no_check,
                    metadata={"source": Path(source).name})
    except ColorGANError as e:
        print(f"colorgan: error: {e}", file=sys.stderr)
        return 1
    print(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB); use it with: colorgan colorize ... --backend onnx --weights {out}",
          file=sys.stderr)
    return 0
