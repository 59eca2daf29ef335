"""Training data: folders of colour photos -> (degraded L, clean L, ab) crops.

Pairs come from colour photos alone: L is what an old photo would give, ab is the target. The
degradations of old photos (grain, noise, blur, JPEG, fading, gamma, scratches, dust, vignetting)
are applied to the *input* L only, so the model learns to colour what real archives hold while its
targets stay clean.

Sampling mixes several folders with weights (LFW's faces are 83% of the training files; without
weights they would swamp scenes) and is seeded: the same seed and worker layout give the same
stream of crops.
"""

from __future__ import annotations

import io as _io
import logging
import math
import os
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from colorgan import color

__all__ = [
    "IMAGE_SUFFIXES",
    "DegradeConfig",
    "DataSource",
    "scan_images",
    "parse_source",
    "degrade_l",
    "load_crop",
    "StepBatches",
    "make_sample",
    "is_greyscale",
    "fixed_batch",
    "mixed_fixed_batch",
    "holdout_split",
]

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".tif", ".tiff", ".webp", ".bmp"})


@dataclass(frozen=True)
class DegradeConfig:
    """Probabilities (0-1) and strengths of the old-photo degradations applied to input L.

    Each ``p_*`` is the chance that a sample gets that degradation; strengths are drawn uniformly
    up to the given maximum. All zero means clean input.
    """

    p_grain: float = 0.3
    grain_max: float = 6.0  # std of film grain in L units, spatially correlated
    p_noise: float = 0.2
    noise_max: float = 4.0  # Gaussian (and Poisson-like) noise std in L units
    p_blur: float = 0.2
    blur_max: float = 1.5  # Gaussian sigma in pixels
    p_jpeg: float = 0.2
    jpeg_min_quality: int = 30
    p_fade: float = 0.3
    fade_max: float = 0.35  # contrast reduction towards mid-grey (and lifted blacks)
    p_gamma: float = 0.3
    gamma_range: float = 0.3  # gamma in [1 - r, 1 + r]
    p_scratches: float = 0.15
    p_dust: float = 0.15
    p_vignette: float = 0.2
    vignette_max: float = 0.4

    @classmethod
    def none(cls) -> "DegradeConfig":
        """No degradation at all (validation)."""
        return cls(**{k: 0.0 for k in cls.__dataclass_fields__ if k.startswith("p_")})


@dataclass(frozen=True)
class DataSource:
    """A folder of colour photos and its sampling weight."""

    path: Path
    weight: float = 1.0
    name: str = ""


def parse_source(text: str) -> DataSource:
    """Parse ``DIR``, ``DIR:WEIGHT`` or ``NAME=DIR:WEIGHT`` (the ``--data`` syntax)."""
    name = ""
    if "=" in text and not os.path.exists(text):
        name, text = text.split("=", 1)
    weight = 1.0
    head, sep, tail = text.rpartition(":")
    if sep and head and not os.path.exists(text):
        try:
            weight = float(tail)
            text = head
        except ValueError:
            pass
    if weight <= 0:
        raise ValueError(f"data weight must be positive: {text}:{weight}")
    p = Path(text)
    return DataSource(p, weight, name or p.name)


def scan_images(folder: str | os.PathLike) -> list[Path]:
    """Every image file under ``folder`` (recursive, sorted, hidden entries skipped)."""
    root = Path(folder)
    if root.is_file():
        return [root]
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: no such folder")
    out: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for f in sorted(filenames):
            if not f.startswith(".") and Path(f).suffix.lower() in IMAGE_SUFFIXES:
                out.append(Path(dirpath) / f)
    return out


def is_greyscale(rgb: np.ndarray, tol: float = 2.0 / 255.0, frac: float = 0.99) -> bool:
    """True when at least ``frac`` of pixels have all channels within ``tol`` (the data README's rule).

    Args:
        rgb: ``(H, W, 3)`` float in [0, 1].
    """
    spread = rgb.max(axis=2) - rgb.min(axis=2)
    return bool((spread <= tol + 1e-6).mean() >= frac)


# --------------------------------------------------------------------------- degradations


def _gauss_kernel(sigma: float) -> torch.Tensor:
    r = max(1, int(math.ceil(3 * sigma)))
    x = torch.arange(-r, r + 1, dtype=torch.float32)
    k = torch.exp(-(x**2) / (2 * sigma**2))
    return k / k.sum()


def _blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    # x: (1, H, W); separable Gaussian, reflect padding.
    k = _gauss_kernel(sigma)
    r = (k.numel() - 1) // 2
    y = x[None]
    y = F.conv2d(F.pad(y, (r, r, 0, 0), mode="reflect"), k.view(1, 1, 1, -1))
    y = F.conv2d(F.pad(y, (0, 0, r, r), mode="reflect"), k.view(1, 1, -1, 1))
    return y[0]


def degrade_l(L: torch.Tensor, cfg: DegradeConfig, rng: random.Random) -> torch.Tensor:
    """Make a clean L look like an old photo's.

    Args:
        L: ``(1, H, W)`` L in [0, 100].
        cfg: probabilities and strengths.
        rng: the random source (seeded by the caller).

    Returns:
        ``(1, H, W)`` degraded L in [0, 100].
    """
    H, W = L.shape[-2:]
    gen = torch.Generator().manual_seed(rng.getrandbits(62))
    x = L.clone()
    if rng.random() < cfg.p_fade:
        f = rng.uniform(0.05, cfg.fade_max)
        x = x * (1 - f) + 50.0 * f * rng.uniform(0.6, 1.4)
    if rng.random() < cfg.p_gamma:
        g = rng.uniform(1 - cfg.gamma_range, 1 + cfg.gamma_range)
        x = 100.0 * (x.clamp(0, 100) / 100.0) ** g
    if rng.random() < cfg.p_blur:
        x = _blur(x, rng.uniform(0.4, cfg.blur_max))
    if rng.random() < cfg.p_vignette:
        yy, xx = torch.meshgrid(torch.linspace(-1, 1, H), torch.linspace(-1, 1, W), indexing="ij")
        r2 = (xx**2 + yy**2) / 2
        x = x * (1 - rng.uniform(0.05, cfg.vignette_max) * r2)[None]
    if rng.random() < cfg.p_grain:
        # Film grain: noise blurred to a grain size of ~1-2 px, stronger in mid-tones.
        n = torch.randn(1, H, W, generator=gen)
        n = _blur(n, rng.uniform(0.5, 1.2))
        n = n / (n.std() + 1e-6)
        mid = 1 - ((x - 50) / 50).square() * 0.6
        x = x + n * rng.uniform(1.0, cfg.grain_max) * mid
    if rng.random() < cfg.p_noise:
        s = rng.uniform(0.5, cfg.noise_max)
        if rng.random() < 0.5:
            x = x + torch.randn(1, H, W, generator=gen) * s
        else:  # Poisson-like: variance grows with brightness
            x = x + torch.randn(1, H, W, generator=gen) * s * (x.clamp(0, 100) / 50).sqrt()
    if rng.random() < cfg.p_scratches:
        for _ in range(rng.randint(1, 4)):
            # Thin, mostly vertical, bright or dark lines (film scratches, print cracks).
            x0 = rng.uniform(0, W)
            slope = rng.uniform(-0.15, 0.15)
            width = rng.uniform(0.5, 1.5)
            val = rng.choice([rng.uniform(85, 100), rng.uniform(0, 15)])
            yy = torch.arange(H, dtype=torch.float32)[:, None]
            xx = torch.arange(W, dtype=torch.float32)[None, :]
            d = (xx - (x0 + slope * yy)).abs()
            y0, y1 = sorted(rng.uniform(0, H) for _ in range(2))
            mask = ((d < width) & (yy >= y0) & (yy <= max(y1, y0 + H / 4))).float()[None]
            x = x * (1 - mask) + val * mask
    if rng.random() < cfg.p_dust:
        n_spots = rng.randint(3, 30)
        ys = torch.randint(0, H, (n_spots,), generator=gen)
        xs = torch.randint(0, W, (n_spots,), generator=gen)
        vals = torch.where(torch.rand(n_spots, generator=gen) < 0.5, torch.tensor(95.0), torch.tensor(8.0))
        x[0, ys, xs] = vals
    if rng.random() < cfg.p_jpeg:
        q = rng.randint(cfg.jpeg_min_quality, 90)
        grey = (color.l_to_grey_rgb(x.clamp(0, 100)[None])[0, 0] * 255).round().byte().numpy()
        buf = _io.BytesIO()
        Image.fromarray(grey, "L").save(buf, "JPEG", quality=q)
        back = np.asarray(Image.open(_io.BytesIO(buf.getvalue())).convert("L"), dtype=np.float32) / 255.0
        t = torch.from_numpy(back)[None, None].expand(1, 3, H, W)
        x = color.rgb_to_l(t)[0]
    return x.clamp(0, 100)


# --------------------------------------------------------------------------- crops


def load_crop(path: Path, size: int, rng: random.Random, scale: tuple[float, float] = (1.0, 1.6)) -> np.ndarray | None:
    """Load a photo and cut a random ``size x size`` crop, randomly flipped.

    The short side is first resized to ``size * s`` with ``s`` drawn from ``scale``, so crops
    cover between the whole short side and a zoomed part of it.

    Returns:
        ``(size, size, 3)`` float32 sRGB in [0, 1], or None if the file cannot be read or is grey.
    """
    try:
        with Image.open(path) as im:
            im.draft("RGB", (size * 2, size * 2))  # JPEG: decode at reduced size when possible
            im = im.convert("RGB")
            w, h = im.size
            s = size * rng.uniform(*scale) / min(w, h)
            nw, nh = max(size, round(w * s)), max(size, round(h * s))
            im = im.resize((nw, nh), Image.BICUBIC, reducing_gap=2.0)
            x0, y0 = rng.randint(0, nw - size), rng.randint(0, nh - size)
            im = im.crop((x0, y0, x0 + size, y0 + size))
            if rng.random() < 0.5:
                im = im.transpose(Image.FLIP_LEFT_RIGHT)
            arr = np.asarray(im, dtype=np.float32) / 255.0
    except (OSError, ValueError, Image.DecompressionBombError) as e:
        log.warning("skipping %s: %s", path, e)
        return None
    if is_greyscale(arr):
        return None
    return arr


class StepBatches(torch.utils.data.Dataset):
    """Training batches indexed by step: batch ``s`` depends only on (seed, stage, rank, s).

    Making each batch a pure function of its step is what lets a run that was killed and resumed
    from a checkpoint see exactly the batches an uninterrupted run would have seen, whatever the
    number of DataLoader workers. Folders are mixed by weight; each distributed rank draws its
    own batches (sharding by seed: no file lists to split, no duplicates between ranks).

    Each item is a dict of tensors:
        ``l_in``: ``(B, 1, S, S)`` degraded L, normalised to [-1, 1] (the generator's input);
        ``l``: ``(B, 1, S, S)`` clean L normalised; ``ab``: ``(B, 2, S, S)`` ab / 110;
        ``skipped``: ``()`` int64, files drawn for this batch but skipped as greyscale or unreadable.

    Args:
        sources: (files, weight) per folder.
        size: crop size (a multiple of 32).
        batch_size: crops per batch.
        degrade: degradations for ``l_in`` (None: clean).
        seed: base seed.
        stream: a name that separates the stages' streams.
        rank: distributed rank.
        length: number of steps (the dataset's length).
    """

    def __init__(
        self,
        sources: Sequence[tuple[Sequence[Path], float]],
        size: int,
        batch_size: int,
        degrade: DegradeConfig | None = None,
        seed: int = 0,
        stream: str = "",
        rank: int = 0,
        length: int = 10**9,
    ) -> None:
        super().__init__()
        self.sources = [(list(files), float(w)) for files, w in sources if len(files) > 0]
        if not self.sources:
            raise ValueError("no training images found in the data folders")
        self.size = size
        self.batch_size = batch_size
        self.degrade = degrade
        self.seed = seed
        self.stream = stream
        self.rank = rank
        self.length = length

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, step: int) -> dict[str, torch.Tensor]:
        # str seeds are hashed with SHA-512 by random.Random: stable across processes and runs.
        rng = random.Random(f"{self.seed}:{self.stream}:{self.rank}:{step}")
        weights = [w for _, w in self.sources]
        items = []
        attempts = 0
        while len(items) < self.batch_size:
            attempts += 1
            if attempts > 50 * self.batch_size:
                raise RuntimeError("too many unreadable or greyscale files in the training folders")
            files, _ = rng.choices(self.sources, weights=weights)[0]
            arr = load_crop(files[rng.randrange(len(files))], self.size, rng)
            if arr is not None:
                items.append(make_sample(arr, self.degrade, rng))
        batch = {k: torch.stack([it[k] for it in items]) for k in items[0]}
        batch["skipped"] = torch.tensor(attempts - len(items))
        return batch


def make_sample(arr: np.ndarray, degrade: DegradeConfig | None, rng: random.Random) -> dict[str, torch.Tensor]:
    """``(S, S, 3)`` float RGB -> ``{"l_in": (1,S,S), "l": (1,S,S), "ab": (2,S,S)}`` normalised."""
    rgb = torch.from_numpy(np.ascontiguousarray(arr)).permute(2, 0, 1)
    lab = color.rgb_to_lab(rgb)
    L, ab = lab[:1], lab[1:]
    L_in = degrade_l(L, degrade, rng) if degrade is not None else L
    return {"l_in": color.normalize_l(L_in), "l": color.normalize_l(L), "ab": color.normalize_ab(ab)}


def fixed_batch(files: Sequence[Path], size: int, n: int, seed: int = 1234) -> dict[str, torch.Tensor]:
    """A fixed, clean (undegraded) validation batch of ``n`` centre-ish crops, the same every call."""
    rng = random.Random(seed)
    items = []
    order = list(files)
    rng.shuffle(order)
    for p in order:
        arr = load_crop(p, size, rng, scale=(1.0, 1.0))
        if arr is not None:
            items.append(make_sample(arr, None, rng))
        if len(items) == n:
            break
    if not items:
        raise ValueError("no usable validation images")
    return {k: torch.stack([it[k] for it in items]) for k in items[0]}


def mixed_fixed_batch(groups: Sequence[tuple[Sequence[Path], float]], size: int, n: int, seed: int = 1234) -> dict[str, torch.Tensor]:
    """A fixed validation batch of ``n`` crops drawn from several folders in proportion to weights.

    Validation must mirror the training mix, not the folders' file counts: LFW is 83% of the
    training files but 20% of the sampled crops, and a batch drawn from all held-out files alike
    was four-fifths faces. On such a batch the monitor read CF ratio 0.92 for a generator that
    scored 0.67 on a batch drawn in the mix's proportions (the same checkpoint, 50 GAN steps
    after v0.1).

    Args:
        groups: ``(files, weight)`` per folder; folders without files or weight are skipped.
        size: crop side in pixels.
        n: crops in all, shared by largest remainder of the weights, at least one a folder
            (with fewer crops than folders, the heaviest folders get one each); a folder with
            fewer usable files than its share leaves the difference to the heaviest others.
            Fewer than ``n`` only when all the folders together have fewer usable files.
        seed: fixes the choice of files and crops.

    Returns:
        As :func:`fixed_batch`: the folders' crops interleaved in a fixed order.
    """
    live = [(list(f), float(w)) for f, w in groups if len(f) > 0 and w > 0]
    if not live:
        raise ValueError("no usable validation images")
    live.sort(key=lambda g: -g[1])
    live = live[:n]  # fewer crops than folders: the heaviest folders
    total = sum(w for _, w in live)
    # Shares by largest remainder of the weights; a folder left with none takes one crop from
    # the folder with the most.
    exact = [n * w / total for _, w in live]
    quota = [int(e) for e in exact]
    for i in sorted(range(len(live)), key=lambda i: int(exact[i]) - exact[i])[: n - sum(quota)]:
        quota[i] += 1
    for i in range(len(live)):
        if quota[i] == 0:
            quota[max(range(len(live)), key=lambda j: quota[j])] -= 1
            quota[i] = 1
    parts: list[dict[str, torch.Tensor] | None] = []
    for (files, _), q in zip(live, quota):
        try:
            parts.append(fixed_batch(files, size, q, seed=seed))
        except ValueError:  # a folder of unreadable or grey files: the others still validate
            parts.append(None)
    short = n - sum(len(p["l"]) for p in parts if p is not None)
    for i, (files, _) in enumerate(live):
        # Folders with fewer usable files than their share: the heaviest others make up the
        # difference (fixed_batch is a prefix-stable draw, so their first crops stay the same).
        part = parts[i]
        if short <= 0:
            break
        if part is None or len(part["l"]) < quota[i] or len(files) <= quota[i]:
            continue
        bigger = fixed_batch(files, size, quota[i] + short, seed=seed)
        short -= len(bigger["l"]) - len(part["l"])
        parts[i] = bigger
    parts = [p for p in parts if p is not None]
    if not parts:
        raise ValueError("no usable validation images")
    out = {k: torch.cat([p[k] for p in parts]) for k in parts[0]}
    # Interleave the folders (a fixed shuffle), so that a grid of the first crops shows them all.
    order = torch.randperm(len(out["l"]), generator=torch.Generator().manual_seed(seed))
    return {k: v[order] for k, v in out.items()}


def _group_key(path: Path) -> str:
    # LFW files are Person_Name_0001.jpg: hold out whole people, never one photo of a person
    # whose other photos are trained on.
    stem = path.stem
    head, sep, tail = stem.rpartition("_")
    return head if sep and tail.isdigit() and len(tail) == 4 else stem


def holdout_split(files: Sequence[Path], every: int = 20, salt: str = "colorgan-val") -> tuple[list[Path], list[Path]]:
    """Deterministically split files into (train, validation), about 1 in ``every`` held out.

    The split is by a hash of the file's group (the person for LFW-style names, else the file
    name), so it is stable across machines and runs and never splits one person across sides.
    """
    import hashlib

    train, valid = [], []
    for p in files:
        h = int(hashlib.sha1(f"{salt}:{_group_key(p)}".encode()).hexdigest()[:8], 16)
        (valid if h % every == 0 else train).append(p)
    return train, valid
