"""Shared fixtures: a tiny, seeded generator saved through the hub (no pretrained weights needed),
and small tinted noise photos to run it on."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

# Tiny models run fastest on one thread, and one thread does not fight other processes (a
# training run in the background, parallel CI jobs) in OpenMP barriers.
torch.set_num_threads(1)


def make_tiny_generator(seed: int = 0):
    from colorgan.models.generator import GeneratorConfig, SAUNet

    torch.manual_seed(seed)
    g = SAUNet(GeneratorConfig.preset("tiny"))
    # A zero head would give grey output; random weights give real, input-dependent colour.
    torch.nn.init.normal_(g.head.weight, std=0.5)
    torch.nn.init.normal_(g.head.bias, std=0.2)
    return g.eval()


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


def write_tinted_photos(
    folder: Path, n: int, *, seed: int = 0, size: tuple[int, int] = (40, 48), tint=(1.1, 0.8, 0.5), sd: float = 0.15
) -> list[Path]:
    """Write ``n`` PNG photos of grey-ish noise times an RGB ``tint`` into ``folder`` (created).

    Args:
        size: ``(height, width)``.
        tint: RGB multipliers, so the photos have a colour a model can be scored against.

    Returns:
        The files, sorted.
    """
    import numpy as np
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        img = np.clip(rng.normal(0.5, sd, (*size, 3)) * np.asarray(tint), 0, 1)
        Image.fromarray((img * 255).astype(np.uint8)).save(folder / f"p{i}.png")
    return sorted(folder.iterdir())
