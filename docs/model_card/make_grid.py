"""Rebuild historical_public_domain.jpg: each examples/ photo, original beside colour, stacked.

    python docs/model_card/make_grid.py [--weights W]   # default: the shipped default model

Runs `colorgan colorize examples --compare` into a temporary folder and stacks the comparison
images at 1000 px wide (JPEG quality 85), so the model card's grid always shows what the model
named does to the bundled public-domain photos.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

from PIL import Image

from colorgan.cli import int_range

ROOT = Path(__file__).resolve().parents[2]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--weights", help="a .safetensors file (default: the shipped default model)")
    ap.add_argument("--out", default=str(Path(__file__).with_name("historical_public_domain.jpg")))
    ap.add_argument("--width", type=int_range(64, 8000), default=1000, help="sheet width in pixels")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "colorgan", "colorize", str(ROOT / "examples"), "-o", tmp, "--compare", "-q"]
        if args.weights:
            cmd += ["--weights", args.weights]
        subprocess.run(cmd, check=True)
        rows = []
        for p in sorted(Path(tmp).glob("*_compare.*")):
            im = Image.open(p).convert("RGB")
            rows.append(im.resize((args.width, round(im.height * args.width / im.width)), Image.LANCZOS))
        if not rows:
            print("no comparison images were written", file=sys.stderr)
            return 1
        sheet = Image.new("RGB", (args.width, sum(r.height for r in rows) + 8 * (len(rows) - 1)), "white")
        y = 0
        for r in rows:
            sheet.paste(r, (0, y))
            y += r.height + 8
        sheet.save(args.out, quality=85)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
