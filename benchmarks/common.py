"""What several benchmarks share: the example photos, a folder of 1 MP grey JPEGs made from them,
and the process's peak memory."""

from __future__ import annotations

import resource
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
PHOTO_SIZE = (1152, 864)  # 0.995 MP, 4:3


def peak_rss_mb() -> float:
    """This process's peak resident set size in MiB (Linux VmHWM: unlike getrusage's ru_maxrss it is
    not inherited from the parent process across fork and exec)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def make_photos(folder: Path, n: int) -> list[Path]:
    """n distinct grey 1 MP JPEGs cut from the public-domain examples (crops and mirror images)."""
    sources = sorted(EXAMPLES.glob("*.jpg"))
    if not sources:
        raise SystemExit(f"no example photos in {EXAMPLES}")
    bases = []
    for s in sources:
        im = ImageOps.exif_transpose(Image.open(s)).convert("L")
        scale = max(PHOTO_SIZE[0] / im.width, PHOTO_SIZE[1] / im.height) * 1.15
        bases.append(im.resize((round(im.width * scale), round(im.height * scale)), Image.BICUBIC))
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        im = bases[i % len(bases)]
        rng = np.random.default_rng(i)
        x = int(rng.integers(0, im.width - PHOTO_SIZE[0] + 1))
        y = int(rng.integers(0, im.height - PHOTO_SIZE[1] + 1))
        crop = im.crop((x, y, x + PHOTO_SIZE[0], y + PHOTO_SIZE[1]))
        if (i // len(bases)) % 2:
            crop = ImageOps.mirror(crop)
        p = folder / f"photo{i:04d}.jpg"
        crop.save(p, quality=90)
        paths.append(p)
    return paths
