"""Shared fixtures: a tiny, seeded generator saved through the hub (no pretrained weights needed)."""

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
