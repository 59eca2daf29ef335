"""Video colourisation measured against true colour on DAVIS sequences (a benchmark, not a test).

    python benchmarks/video_davis.py --weights default --data ../shared/data/eval_video/davis [--json out.json]

For each sequence folder: automatic, and with the first true frame as the clip's reference photo
(for a model that takes guidance); PSNR, CDC and warping error (see colorgan.video.evaluate).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    from colorgan.pipeline import Colorizer
    from colorgan.video.evaluate import evaluate_sequences

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--weights", default="default")
    p.add_argument("--data", required=True, type=Path)
    p.add_argument("--render-size", type=int, default=256)
    p.add_argument("--temporal", type=float, default=0.8)
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)
    cz = Colorizer.from_pretrained(args.weights)
    modes = ["none", "first"] if cz.takes_hints else ["none"]
    results = {}
    for mode in modes:
        t0 = time.time()
        results[mode] = evaluate_sequences(cz, args.data, render_size=args.render_size, temporal=args.temporal, reference=mode)
        results[mode]["seconds"] = time.time() - t0
    names = list(results["none"]["sequences"])
    print(f"{'sequence':20s} " + " ".join(f"{m + ' PSNR':>11s} {m + ' CDC':>10s} {m + ' WE':>8s}" for m in modes))
    for n in names + ["mean"]:
        row = []
        for m in modes:
            r = results[m]["mean"] if n == "mean" else results[m]["sequences"][n]
            row.append(f"{r['psnr']:11.2f} {r['cdc']:10.5f} {r['warping_error']:8.3f}")
        print(f"{n:20s} " + " ".join(row))
    for m in modes:
        print(f"{m}: {results[m]['seconds']:.0f} s")
    if args.json:
        args.json.write_text(json.dumps({"weights": args.weights, "data": str(args.data), "render_size": args.render_size,
                                         "temporal": args.temporal, "results": results}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
