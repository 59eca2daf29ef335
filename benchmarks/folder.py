"""Folder throughput against the network's own limit (issue 19, item 4).

``colorgan colorize`` over a folder of 1 MP grey JPEGs with the ONNX backend, against the exported
network alone on batches of the same renders: the ratio says how much decoding, the colour maths
and encoding add (the target is a ratio of at least 0.6, i.e. at most 40 % added).

1. The shipped model is exported to ONNX (``colorgan export``) in a temporary folder.
2. ``--n`` photos are made from ``examples/`` (``common.make_photos``: 1152x864 = 1 MP crops and
   mirror images, no two files equal), saved as grey JPEGs of quality 90.
3. Network alone: the ONNX session on batches of ``--batch-size`` L maps of the photos' render
   shape (random values: the cost does not depend on them), ``--threads`` intra-op threads.
4. Folder: :func:`colorgan.cli.colorize_paths` (the core of ``colorgan colorize``: pipelined
   reading, inference and writing) over the folder, in this process after one warm-up photo,
   with the same backend, threads and batch size; outputs as JPEG (``--format same``).
5. PyTorch backend: the same folder run, for reference.

    python benchmarks/folder.py                # 80 photos, 2 threads, ~2 min
    python benchmarks/folder.py --n 200 --workers 2 --batch-size 4

Peak RSS (``ru_maxrss``) is printed after each run; for steady memory over 10,000 files see
``benchmarks/speed.py --many``. Numbers are printed, never asserted; run on an idle machine.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # common.py beside this file

from common import PHOTO_SIZE, make_photos, peak_rss_mb  # noqa: E402

from colorgan.cli import colorize_paths
from colorgan.export import export_onnx
from colorgan.models.hub import load_inference_model, resolve_weights
from colorgan.onnx_backend import OnnxModel
from colorgan.pipeline import Colorizer, render_shape



def network_alone(onnx_path: Path, threads: int, batch: int, shape: tuple[int, int], reps: int) -> float:
    """Photos per second of the ONNX network alone on batches of ``shape`` renders."""
    model = OnnxModel(onnx_path, threads=threads)
    x = torch.rand(batch, 1, *shape) * 2 - 1
    model(x)  # warm-up
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        model(x)
        times.append(time.perf_counter() - t)
    return batch / statistics.median(times)


def folder_run(colorizer: Colorizer, files: list[Path], out: Path, batch: int, workers: int) -> float:
    """Photos per second of ``colorize_paths`` over ``files`` (after a warm-up photo, not counted)."""
    colorize_paths([files[0]], out / "warmup", colorizer=colorizer, progress=False, batch_size=batch, workers=workers)
    t = time.perf_counter()
    summary = colorize_paths(list(files), out / "run", colorizer=colorizer, progress=False, batch_size=batch,
                             workers=workers, overwrite=True)
    seconds = time.perf_counter() - t
    if summary.failed:
        raise SystemExit(f"{summary.failed} photos failed")
    return len(files) / seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=80, help="photos in the folder (default 80)")
    ap.add_argument("--threads", type=int, default=2, help="intra-op threads of the network (default 2)")
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--workers", type=int, default=2, help="reader and writer threads (default 2)")
    ap.add_argument("--reps", type=int, default=15, help="timed batches of the network alone")
    ap.add_argument("--skip-torch", action="store_true", help="leave the PyTorch folder run out")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    shape = render_shape(PHOTO_SIZE[1], PHOTO_SIZE[0], 256, 32)
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        onnx_path = export_onnx(load_inference_model(resolve_weights("default")), tmp / "default.onnx")
        files = make_photos(tmp / "photos", args.n)
        print(f"{args.n} grey JPEGs of {PHOTO_SIZE[0]}x{PHOTO_SIZE[1]}, render {shape[1]}x{shape[0]}, batch {args.batch_size}, "
              f"{args.threads} network thread(s), {args.workers} reader/writer threads, torch {torch.__version__}")
        net = network_alone(onnx_path, args.threads, args.batch_size, shape, args.reps)
        print(f"ONNX network alone:        {net:6.2f} photos/s")
        for spinning in (True, False):
            onnx = Colorizer(OnnxModel(onnx_path, threads=args.threads, spinning=spinning), name="default.onnx")
            fol = folder_run(onnx, files, tmp / f"out-onnx-{spinning}", args.batch_size, args.workers)
            print(f"ONNX folder, spinning {'on ' if spinning else 'off'}: {fol:6.2f} photos/s   ratio to the network alone "
                  f"{fol / net:.2f}   peak RSS {peak_rss_mb():.0f} MiB")
        if not args.skip_torch:
            pt = Colorizer.from_pretrained("default")
            fpt = folder_run(pt, files, tmp / "out-torch", args.batch_size, args.workers)
            print(f"PyTorch folder (colorize): {fpt:6.2f} photos/s   peak RSS {peak_rss_mb():.0f} MiB")


if __name__ == "__main__":
    main()
