"""Shared fixtures: a tiny, seeded generator (fresh, or saved through the hub; no pretrained
weights needed), and the one helper that writes small photos into temporary folders."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import numpy as np
import pytest
import torch

# Tiny models run fastest on one thread, and one thread does not fight other processes (a
# training run in the background, parallel CI jobs) in OpenMP barriers.
torch.set_num_threads(1)


def make_tiny_generator(seed: int = 0, guidance: bool = False):
    """The ``tiny`` preset, seeded, with a random (not zero) ab head, in eval mode; with
    ``guidance``, also a guidance branch whose zero convolutions are random, so hints matter.

    Every test that needs a tiny generator builds it here (through the fixtures below or, for
    another seed, by calling this); test_slices.py stores a slice of its output (seed 0), so a
    change to it, or to what the preset builds, shows there.
    """
    from colorgan.models.generator import GeneratorConfig, SAUNet

    import dataclasses

    torch.manual_seed(seed)
    g = SAUNet(GeneratorConfig.preset("tiny"))
    # A zero head would give grey output; random weights give real, input-dependent colour.
    torch.nn.init.normal_(g.head.weight, std=0.5)
    torch.nn.init.normal_(g.head.bias, std=0.2)
    if guidance:  # the same network with a branch, as the guidance stage builds it
        guided = SAUNet(dataclasses.replace(g.config, guidance=True))
        guided.load_state_dict(g.state_dict(), strict=False)
        gen = torch.Generator().manual_seed(seed + 100)
        for branch in guided.guidance.branches.values():
            branch[-1].weight.data.normal_(0.0, 2.0, generator=gen)
        g = guided
    return g.eval()


@pytest.fixture
def tiny_generator():
    """A fresh :func:`make_tiny_generator` (seed 0) that a test may change at will."""
    return make_tiny_generator()


@pytest.fixture(scope="session")
def tiny_guided_weights(tmp_path_factory) -> Path:
    """:func:`make_tiny_generator` with a guidance branch, saved through the hub."""
    from colorgan.models import hub

    path = tmp_path_factory.mktemp("weights") / "tiny-guided.safetensors"
    hub.save_model(make_tiny_generator(guidance=True), path)
    return path


@pytest.fixture(scope="session")
def tiny_weights(tmp_path_factory) -> Path:
    from colorgan.models import hub

    path = tmp_path_factory.mktemp("weights") / "tiny.safetensors"
    hub.save_model(make_tiny_generator(), path)
    return path


@pytest.fixture
def tiny_colorizer(tiny_weights):
    from colorgan.pipeline import Colorizer

    return Colorizer.from_pretrained(tiny_weights, device="cpu")


def write_photos(
    folder: Path,
    images: Iterable,
    name: str | Callable[[int], str] = "p{i}.png",
    *,
    mode: str | None = None,
    **save,
) -> list[Path]:
    """Write small test photos into ``folder`` (created, with any sub-folders the names hold).

    Args:
        images: numpy arrays ``(H, W)`` or ``(H, W, 3|4)`` (uint8 and uint16 as they are; float
            in [0, 1] times 255, truncated to uint8) or PIL images.
        name: each file's name (a path relative to ``folder``): a format string of the image's
            index ``i``, or a function of it.
        mode: a PIL mode to convert each image to before saving (e.g. ``"RGB"`` to store a grey
            photo as RGB).
        save: keyword arguments for ``PIL.Image.save`` (``quality=90``...).

    Returns:
        The files, in the order of ``images``.
    """
    from PIL import Image

    paths = []
    for i, img in enumerate(images):
        if isinstance(img, np.ndarray):
            if img.dtype.kind == "f":
                img = (img * 255).astype(np.uint8)
            img = Image.fromarray(img)
        if mode is not None:
            img = img.convert(mode)
        path = folder / (name(i) if callable(name) else name.format(i=i))
        path.parent.mkdir(parents=True, exist_ok=True)
        img.save(path, **save)
        paths.append(path)
    return paths


def write_tinted_photos(
    folder: Path,
    n: int,
    *,
    seed: int | np.random.Generator = 0,
    size: tuple[int, int] = (40, 48),
    tint: Sequence[float] | Callable[[int, np.random.Generator], Sequence[float]] = (1.1, 0.8, 0.5),
    sd: float = 0.15,
    name: str = "p{i}.png",
) -> list[Path]:
    """Write ``n`` PNG photos of grey-ish noise times an RGB ``tint`` into ``folder`` (created).

    Args:
        seed: a seed, or a generator to draw from (so several folders can share one stream).
        size: ``(height, width)``.
        tint: RGB multipliers, so the photos have a colour a model can be scored against; or a
            function ``(i, rng)`` giving photo ``i``'s tint (drawn before its noise).
        name: file names, as in :func:`write_photos`.

    Returns:
        The folder's files, sorted.
    """
    rng = np.random.default_rng(seed)

    def photo(i: int) -> np.ndarray:
        t = np.asarray(tint(i, rng) if callable(tint) else tint)
        return np.clip(rng.normal(0.5, sd, (*size, 3)) * t, 0, 1)

    write_photos(folder, (photo(i) for i in range(n)), name)
    return sorted(folder.iterdir())
