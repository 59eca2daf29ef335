"""benchmarks/peers.py: the rebuilt DeOldify and DDColor networks have the published sizes, run
at a tiny input with the right output shapes, and their pre/post-processing keeps the photo's
luminance. No timing is asserted (the benchmark prints numbers, it never gates on them)."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "peers.py"


def _load_peers():
    spec = importlib.util.spec_from_file_location("peers", BENCH)
    module = importlib.util.module_from_spec(spec)
    sys.modules["peers"] = module  # dataclasses look their module up here
    spec.loader.exec_module(module)
    return module


peers = _load_peers()
SMALL = ["deoldify-artistic", "ddcolor-tiny"]
LARGE = ["deoldify-stable", "ddcolor-large"]


@pytest.mark.parametrize("name", list(peers.PEERS))
def test_parameter_counts_match_published(name):
    """Built on the meta device (no memory, no time): total within 2% of the published figure where
    one is published, and the encoder exactly torchvision's classifier less its head."""
    spec = peers.PEERS[name]
    with torch.device("meta"):
        model = peers.build_peer(name)
    if spec.published_params is not None:
        assert abs(peers.count_params(model) / spec.published_params - 1) < 0.02
    assert model.classifier_equivalent_params() == spec.encoder_published


def test_stable_is_wider_than_artistic():
    """The one total DeOldify does not publish: stable (ResNet-101, decoder 512 * 2 wide) must come
    out far larger than artistic, with the 2048 -> 4096 -> 2048 middle convs that dominate it."""
    with torch.device("meta"):
        stable, artistic = peers.build_peer("deoldify-stable"), peers.build_peer("deoldify-artistic")
    assert peers.count_params(stable) > 3 * peers.count_params(artistic)
    assert peers.count_params(stable.middle_conv) > 150e6


def _forward(name: str, size: int = 64) -> torch.Tensor:
    model = peers.build_peer(name)
    with torch.inference_mode():
        return model(torch.rand(1, 3, size, size))


def _check_output(name: str, out: torch.Tensor, size: int = 64) -> None:
    channels = 3 if peers.PEERS[name].family == "deoldify" else 2
    assert out.shape == (1, channels, size, size)
    assert torch.isfinite(out).all()
    if channels == 3:  # SigmoidRange(-3, 3), not saturated: the spectral norms have converged
        assert out.abs().max() < 3.0 and out.std() > 0


@pytest.mark.parametrize("name", SMALL)
def test_forward_shape_small(name):
    _check_output(name, _forward(name))


@pytest.mark.slow
@pytest.mark.parametrize("name", LARGE)
def test_forward_shape_large(name):
    _check_output(name, _forward(name))


def _photo(w: int = 96, h: int = 64) -> Image.Image:
    rng = np.random.default_rng(0)
    grey = (np.linspace(0, 255, w)[None, :] * 0.7 + rng.integers(0, 60, (h, w))).clip(0, 255).astype(np.uint8)
    return Image.fromarray(grey).convert("RGB")


def test_deoldify_pipeline_keeps_y():
    """DeOldify's post-processing: the photo's size and its Y (YUV), whatever the network says."""
    import cv2

    photo = _photo()

    def net(x: torch.Tensor) -> torch.Tensor:  # any RGB, normalised
        return torch.randn(x.shape[0], 3, x.shape[2], x.shape[3])

    out = np.asarray(peers.deoldify_colorize(net, photo, 32, torch.device("cpu")))
    assert out.shape == (64, 96, 3) and out.dtype == np.uint8
    y_out = cv2.cvtColor(out, cv2.COLOR_BGR2YUV)[..., 0].astype(int)
    y_in = cv2.cvtColor(np.asarray(photo), cv2.COLOR_BGR2YUV)[..., 0].astype(int)
    # YUV -> RGB -> YUV in uint8, with the clipping of out-of-gamut U/V, moves Y a little.
    assert np.median(np.abs(y_out - y_in)) <= 2


def test_ddcolor_pipeline_keeps_l_and_size():
    """DDColor's post-processing: ab resized to the photo and joined with its own L (ab = 0: grey back)."""
    photo = _photo()
    bgr = np.ascontiguousarray(np.asarray(photo)[:, :, ::-1])
    seen = []

    def net(x: torch.Tensor) -> torch.Tensor:
        seen.append(tuple(x.shape))
        return torch.zeros(x.shape[0], 2, x.shape[2], x.shape[3])

    out = peers.ddcolor_colorize(net, bgr, 32, torch.device("cpu"))
    assert seen == [(1, 3, 32, 32)]
    assert out.shape == (64, 96, 3) and out.dtype == np.uint8
    assert np.abs(out.astype(int) - bgr.astype(int)).max() <= 1


def test_parse_args_quick_defaults():
    args = peers.parse_args(["--quick", "--only", "ddcolor-tiny"])
    assert args.repeats == 1 and args.size == (320, 200) and args.render_size == 64 and args.only == ["ddcolor-tiny"]
    args = peers.parse_args([])
    assert args.repeats == 5 and args.size == (1280, 800) and args.render_size == 256 and args.threads == 2


@pytest.mark.slow
@pytest.mark.integration
def test_quick_run(tmp_path):
    """The whole benchmark in --quick mode for one peer (each model in its own process)."""
    out = tmp_path / "peers.json"
    r = subprocess.run([sys.executable, str(BENCH), "--quick", "--threads", "1", "--only", "ddcolor-tiny",
                        "--json", str(out)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    import json

    results = {x["name"]: x for x in json.loads(out.read_text())["results"]}
    assert set(results) == {"colorgan", "ddcolor-tiny"}
    assert results["ddcolor-tiny"]["input"] == "64x64" and results["ddcolor-tiny"]["end_to_end_ms"] > 0
