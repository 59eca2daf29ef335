"""Guided colourisation against the truth: colour points and reference photos, photo by photo.

For each colour photo (256 px protocol: short side 256, centre crop) and a guided model:

* ``auto``: no guidance;
* ``points10``: 10 points simulated from the truth (``colorgan evaluate --hints``'s points: 5 x 5
  patches of the true mean colour at random places seeded by the photo's name), with the median
  CIE76 dE between output and hint at the hinted pixels;
* ``own_ref``: the photo's own colour version, mirrored and shrunk to 80 %, as the reference;
* ``other_ref``: an unrelated photo of the set (the one half the set away in sorted order);
* ``reinhard_own`` / ``reinhard_other``: Reinhard et al. 2001 global colour transfer of the
  reference's a/b mean and spread onto the automatic output (the baseline).

Prints mean PSNR per mode and the paired difference to ``auto`` with a bootstrap 95 % interval,
and writes everything to ``--json``. A benchmark, never a test gate::

    python benchmarks/guided.py --weights W --data PHOTOS [--max-images N] [--json out.json]
        [--temperature T --low A --high B]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch


def main(argv: list[str] | None = None) -> int:
    from colorgan import color
    from colorgan import io as cio
    from colorgan.eval import metrics as M
    from colorgan.eval.report import _hint_delta_e, collect_files, ground_truth, simulated_hints
    from colorgan.pipeline import Colorizer, render_shape
    from colorgan.reference import ReferenceConfig, reference_guidance, reference_lab, reinhard_transfer

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--weights", required=True)
    p.add_argument("--data", required=True, action="append", type=Path)
    p.add_argument("--max-images", type=int, default=None)
    p.add_argument("--every", type=int, default=1, help="take every K-th photo in name order (a deterministic subsample)")
    p.add_argument("--points", type=int, default=10)
    p.add_argument("--temperature", type=float, default=ReferenceConfig.temperature)
    p.add_argument("--low", type=float, default=ReferenceConfig.low)
    p.add_argument("--high", type=float, default=ReferenceConfig.high)
    p.add_argument("--json", type=Path, default=None)
    p.add_argument("--only-reference", action="store_true", help="automatic and the two reference modes only (to tune the matcher)")
    p.add_argument("--only-points", action="store_true", help="automatic and the points mode only")
    args = p.parse_args(argv)
    rcfg = ReferenceConfig(temperature=args.temperature, low=args.low, high=args.high)

    cz = Colorizer.from_pretrained(args.weights)
    if not cz.takes_hints:
        print(f"{args.weights}: the model takes no guidance", file=sys.stderr)
        return 2
    photos = []
    for f in collect_files(args.data)[:: max(1, args.every)]:
        loaded = cio.load_image(f)
        if loaded.kind == "grey":
            continue
        photos.append((f, *ground_truth(loaded.rgb, "256")))
        if args.max_images and len(photos) >= args.max_images:
            break
    n = len(photos)
    modes = ["auto", "points10", "own_ref", "other_ref", "reinhard_own", "reinhard_other"]
    if args.only_reference:
        modes = ["auto", "own_ref", "other_ref"]
    elif args.only_points:
        modes = ["auto", "points10"]
    psnr: dict[str, list[float]] = {m: [] for m in modes}
    hint_de: list[float] = []
    t0 = time.time()
    for i, (f, lab_gt, gt_rt) in enumerate(photos):
        L = lab_gt[:, :1]
        render = render_shape(L.shape[-2], L.shape[-1], 256)
        small = color.normalize_l(L)

        def run(guide: torch.Tensor | None) -> torch.Tensor:
            return cz.colorize_tensor(L, 256, guide=guide).float()

        auto = run(None)
        psnr["auto"].append(M.psnr(auto[0], gt_rt[0]))
        if "points10" in psnr:
            g = simulated_hints(lab_gt, args.points, render, f)
            out = run(g)
            psnr["points10"].append(M.psnr(out[0], gt_rt[0]))
            hint_de.extend(_hint_delta_e(color.rgb_to_lab(out), g).tolist())
        lab_auto = color.rgb_to_lab(auto)
        for mode, (ref_file, ref_lab, ref_rgb) in (
            ("own", (f, lab_gt, gt_rt)),
            ("other", photos[(i + n // 2) % n]),
        ):
            if f"{mode}_ref" not in psnr:
                continue
            rgb = ref_rgb if mode == "other" else torch.nn.functional.interpolate(torch.flip(ref_rgb, dims=[3]), scale_factor=0.8, mode="area")
            ref_l, ref_ab = reference_lab(rgb)
            guide = reference_guidance(cz.model, small, ref_l, ref_ab, rcfg)
            psnr[f"{mode}_ref"].append(M.psnr(run(guide)[0], gt_rt[0]))
            if f"reinhard_{mode}" in psnr:
                ab = reinhard_transfer(lab_auto[:, 1:], color.rgb_to_lab(rgb)[:, 1:])
                psnr[f"reinhard_{mode}"].append(M.psnr(color.merge_luminance(L, ab)[0], gt_rt[0]))
    secs = time.time() - t0
    base = np.array(psnr["auto"])
    rows = {}
    print(f"{n} photos, {secs:.0f} s; reference: temperature {rcfg.temperature}, low {rcfg.low}, high {rcfg.high}")
    print(f"{'mode':16s} {'PSNR':>7s}   minus auto [95% CI]")
    for m in modes:
        v = np.array(psnr[m])
        d = v - base
        est, lo, hi = M.bootstrap_ci(d, n_boot=2000)
        rows[m] = {"psnr": float(v.mean()), "minus_auto": [float(est), float(lo), float(hi)]}
        print(f"{m:16s} {v.mean():7.2f}   {est:+.2f} [{lo:+.2f}, {hi:+.2f}]")
    de = float(np.median(hint_de)) if hint_de else float("nan")
    if hint_de:
        print(f"median CIE76 dE at the {len(hint_de)} hinted pixels ({args.points} points per photo): {de:.2f}")
    if args.json:
        args.json.write_text(json.dumps({"weights": str(args.weights), "data": [str(d) for d in args.data], "n": n,
                                         "reference": rcfg.__dict__, "modes": rows, "hint_de_median": de,
                                         "per_image": {m: psnr[m] for m in modes}, "seconds": secs}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
