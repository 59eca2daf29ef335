"""One photo through ``Colorizer.colorize`` (PyTorch backend), stage by stage, and the merge per megapixel.

Issue 19's yardsticks on this machine: a 1280x800 photo end to end (<= 100 ms on 2 threads) and
the full-resolution join of L with the upsampled ab, gamut mapping included (<= 15 ms per
megapixel), against the reference conversion (``color.lab_to_rgb`` on the whole image, which is
what ``merge_luminance`` computed before the in-place kernel).

For each photo of ``examples/`` (resized to ``--size``, made grey as a scan is): the median of
``--reps`` interleaved rounds of

* ``prepare``: PIL image -> L (decoding is not timed: the image is already in memory);
* ``network``: ``predict_ab_batch`` (resize to render, the network, calibration);
* ``merge``: ``color.merge_luminance`` (upsampling ab, Lab -> sRGB, gamut clipping);
* ``reference merge``: ``color.lab_to_rgb`` on the upsampled Lab, and the largest difference;
* ``colorize``: the whole call, PIL in, PIL out.

    python benchmarks/latency.py                    # 2 threads, 1280x800, 15 rounds
    python benchmarks/latency.py --threads 1 --size 1920x1080

Numbers are printed, never asserted. Run it on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from colorgan import color
from colorgan.pipeline import Colorizer

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--size", default="1280x800", help="WxH the photos are resized to (default 1280x800)")
    ap.add_argument("--render-size", type=int, default=256)
    ap.add_argument("--reps", type=int, default=15)
    ap.add_argument("--weights", default="default")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    w, h = (int(v) for v in args.size.lower().split("x"))
    c = Colorizer.from_pretrained(args.weights)
    mp = w * h / 1e6
    print(f"torch {torch.__version__}, {args.threads} thread(s), {w}x{h} ({mp:.2f} MP), render {args.render_size}, "
          f"median of {args.reps} rounds (ms)")
    print(f"{'photo':<28} {'prepare':>8} {'network':>8} {'merge':>7} {'ms/MP':>6} {'ref merge':>9} {'max diff':>9} {'colorize':>9}")
    totals: dict[str, list[float]] = {}
    for path in sorted(p for p in EXAMPLES.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png")):
        img = Image.open(path).convert("L").resize((w, h), Image.BICUBIC)
        L = c.prepare(img).L
        ab = c.predict_ab_batch([L], args.render_size)[0]

        def reference() -> torch.Tensor:
            up = F.interpolate(ab, size=L.shape[-2:], mode="bilinear", align_corners=False)
            return color.lab_to_rgb(torch.cat([L, up], dim=1))

        stages = {
            "prepare": lambda: c.prepare(img),
            "network": lambda: c.predict_ab_batch([L], args.render_size),
            "merge": lambda: color.merge_luminance(L, ab),
            "ref merge": reference,
            "colorize": lambda: c.colorize(img, render_size=args.render_size),
        }
        times: dict[str, list[float]] = {k: [] for k in stages}
        with torch.inference_mode():
            for f in stages.values():
                f()  # warm-up
            for _ in range(args.reps):  # interleaved, so background load hits every stage alike
                for k, f in stages.items():
                    t0 = time.perf_counter()
                    f()
                    times[k].append((time.perf_counter() - t0) * 1000)
            diff = float((color.merge_luminance(L, ab) - reference()).abs().max()) * 255
        med = {k: statistics.median(v) for k, v in times.items()}
        for k, v in med.items():
            totals.setdefault(k, []).append(v)
        print(f"{path.name[:28]:<28} {med['prepare']:8.1f} {med['network']:8.1f} {med['merge']:7.1f} {med['merge'] / mp:6.1f} "
              f"{med['ref merge']:9.1f} {diff:7.3f}/255 {med['colorize']:9.1f}")
    mean = {k: float(np.mean(v)) for k, v in totals.items()}
    print(f"{'mean':<28} {mean['prepare']:8.1f} {mean['network']:8.1f} {mean['merge']:7.1f} {mean['merge'] / mp:6.1f} "
          f"{mean['ref merge']:9.1f} {'':>11} {mean['colorize']:9.1f}")


if __name__ == "__main__":
    main()
