"""The ComfyUI nodes (integrations/comfyui), called directly on tensors: ComfyUI itself is not needed.

The node pack is imported by path, as ComfyUI imports a folder of ``custom_nodes/``: a package
whose ``__init__.py`` exports NODE_CLASS_MAPPINGS and NODE_DISPLAY_NAME_MAPPINGS.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

PACK = Path(__file__).resolve().parents[1] / "integrations" / "comfyui"
TOL = 1 / 255


@pytest.fixture(scope="module")
def pack():
    name = "colorgan_comfyui_pack"
    spec = importlib.util.spec_from_file_location(name, PACK / "__init__.py", submodule_search_locations=[str(PACK)])
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        for key in [k for k in sys.modules if k == name or k.startswith(name + ".")]:
            sys.modules[key].__dict__.get("clear_cache", lambda: None)()
            del sys.modules[key]


@pytest.fixture
def nodes(pack):
    return sys.modules[pack.__name__ + ".nodes"]


def _photo(seed: int = 0, size: tuple[int, int] = (40, 56), channels: int = 3) -> torch.Tensor:
    """A (1, H, W, C) ComfyUI IMAGE: smooth grey structure plus noise (grey in all three channels)."""
    rng = np.random.default_rng(seed)
    h, w = size
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
    grey = np.clip(0.5 + 0.3 * np.sin(6 * xx + 3 * seed) * np.cos(4 * yy) + rng.normal(0, 0.05, (h, w)), 0, 1)
    img = np.repeat(grey[..., None], 3, axis=2).astype(np.float32)
    if channels == 4:
        img = np.concatenate([img, rng.uniform(0, 1, (h, w, 1)).astype(np.float32)], axis=2)
    elif channels == 1:
        img = img[..., :1]
    return torch.from_numpy(img)[None]


def _run(node_cls, image, weights, **kw):
    kw.setdefault("render_size", 64)
    (out,) = getattr(node_cls(), node_cls.FUNCTION)(image, weights_path=str(weights), **kw)
    return out


# ------------------------------------------------------------------------------- the contract


def test_pack_exports_mappings_and_follows_comfyui_conventions(pack):
    assert set(pack.NODE_CLASS_MAPPINGS) == set(pack.NODE_DISPLAY_NAME_MAPPINGS) == {"ColorGANColorize", "ColorGANColorizeGuided"}
    for key, cls in pack.NODE_CLASS_MAPPINGS.items():
        types = cls.INPUT_TYPES()
        assert types["required"]["image"][0] == "IMAGE"
        assert types["required"]["model"][0][:3] == ["default", "cic", "iizuka"]
        size = types["required"]["render_size"]
        assert size[0] == "INT" and size[1]["default"] == 256 and (size[1]["min"], size[1]["max"]) == (64, 2048)
        device = types["required"]["device"]
        assert device[1]["default"] == "cpu" and device[0][0] == "cpu" and "auto" in device[0]
        assert ("cuda" in device[0]) == torch.cuda.is_available()
        assert types["optional"]["weights_path"][0] == "STRING"
        assert cls.RETURN_TYPES == ("IMAGE",)
        assert callable(getattr(cls, cls.FUNCTION))
        assert isinstance(cls.CATEGORY, str) and cls.CATEGORY
        assert isinstance(pack.NODE_DISPLAY_NAME_MAPPINGS[key], str)
    guided = pack.NODE_CLASS_MAPPINGS["ColorGANColorizeGuided"].INPUT_TYPES()["optional"]
    assert guided["hints"][0] == "STRING" and guided["hints"][1]["multiline"]
    assert guided["reference"][0] == "IMAGE"


def test_requirements_declare_colorgan():
    lines = [ln.strip() for ln in (PACK / "requirements.txt").read_text().splitlines()]
    reqs = [ln for ln in lines if ln and not ln.startswith("#")]
    assert any(r.split(">")[0].split("=")[0].strip() == "colorgan" for r in reqs)
    assert not any(r.startswith("torch") for r in reqs)  # ComfyUI brings its own torch


def test_output_shape_dtype_range(pack, tiny_weights):
    image = _photo(size=(37, 61))
    out = _run(pack.NODE_CLASS_MAPPINGS["ColorGANColorize"], image, tiny_weights)
    assert out.shape == (1, 37, 61, 3) and out.dtype == torch.float32 and out.device.type == "cpu"
    assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0
    assert float((out[..., 0] - out[..., 2]).abs().max()) > 0.02  # colour, not grey


def test_colour_matches_colorizer_colorize(pack, tiny_weights):
    from colorgan.pipeline import Colorizer

    image = _photo(seed=1)
    out = _run(pack.NODE_CLASS_MAPPINGS["ColorGANColorize"], image, tiny_weights)
    expected = Colorizer.from_pretrained(tiny_weights).colorize(image[0].numpy(), render_size=64)
    assert np.abs(out[0].numpy() - expected).max() <= TOL


def test_batch_of_two_keeps_order_and_size(pack, tiny_weights):
    node = pack.NODE_CLASS_MAPPINGS["ColorGANColorize"]
    a, b = _photo(seed=2), _photo(seed=3)
    out = _run(node, torch.cat([a, b]), tiny_weights)
    assert out.shape == (2, *a.shape[1:3], 3)
    for i, one in enumerate((a, b)):
        assert (out[i] - _run(node, one, tiny_weights)[0]).abs().max() <= TOL
    assert (out[0] - out[1]).abs().max() > 0.01  # two different photos, not one twice


def test_rgba_and_grey_inputs_use_the_luminance(pack, tiny_weights):
    node = pack.NODE_CLASS_MAPPINGS["ColorGANColorize"]
    rgb = _run(node, _photo(seed=4), tiny_weights)
    rgba = _run(node, _photo(seed=4, channels=4), tiny_weights)
    grey = _run(node, _photo(seed=4, channels=1), tiny_weights)
    assert rgba.shape == grey.shape == rgb.shape
    assert (rgba - rgb).abs().max() <= TOL and (grey - rgb).abs().max() <= TOL


def test_model_is_loaded_once_per_model_and_device(nodes, tiny_weights, monkeypatch):
    from colorgan.pipeline import Colorizer

    nodes.clear_cache()
    calls = []
    real = Colorizer.from_pretrained.__func__

    def counting(cls, *args, **kw):
        calls.append(args)
        return real(cls, *args, **kw)

    monkeypatch.setattr(Colorizer, "from_pretrained", classmethod(counting))
    first = nodes.load_colorizer("default", str(tiny_weights), "cpu")
    for _ in range(2):
        _run(nodes.ColorGANColorize, _photo(), tiny_weights)
    assert nodes.load_colorizer("cic", str(tiny_weights), "cpu") is first  # weights_path wins over model
    assert len(calls) == 1
    # "auto" outside ComfyUI is the CPU: the same cached model.
    assert nodes.load_colorizer("default", str(tiny_weights), "auto") is first and len(calls) == 1


# ------------------------------------------------------------------------------- guidance


def test_hints_json_moves_the_colour(pack, tiny_guided_weights):
    from colorgan.pipeline import Colorizer

    node = pack.NODE_CLASS_MAPPINGS["ColorGANColorizeGuided"]
    image = _photo(seed=5, size=(48, 64))
    plain = _run(node, image, tiny_guided_weights)
    assert (plain - _run(pack.NODE_CLASS_MAPPINGS["ColorGANColorize"], image, tiny_guided_weights)).abs().max() <= TOL

    hints = {"points": [{"x": 10, "y": 12, "color": "#20c040", "radius": 6}]}
    guided = _run(node, image, tiny_guided_weights, hints=json.dumps(hints))
    change = (guided - plain).abs().amax(dim=-1)[0]
    near, far = float(change[6:18, 4:16].mean()), float(change[30:, 40:].mean())
    assert near > 0.02 and far < near / 4  # the colour moved where the point is, not everywhere
    expected = Colorizer.from_pretrained(tiny_guided_weights).colorize(image[0].numpy(), render_size=64, hints=hints)
    assert np.abs(guided[0].numpy() - expected).max() <= TOL
    # Whitespace only is no hints.
    assert (_run(node, image, tiny_guided_weights, hints="  \n") - plain).abs().max() == 0


def test_reference_image_matches_colorizer(pack, tiny_guided_weights):
    from colorgan.pipeline import Colorizer

    node = pack.NODE_CLASS_MAPPINGS["ColorGANColorizeGuided"]
    image = torch.cat([_photo(seed=6), _photo(seed=7)])
    rng = np.random.default_rng(0)
    reference = torch.from_numpy(rng.uniform(0, 1, (1, 32, 40, 3)).astype(np.float32))
    out = _run(node, image, tiny_guided_weights, reference=reference)
    colorizer = Colorizer.from_pretrained(tiny_guided_weights)
    for i in range(2):
        expected = colorizer.colorize(image[i].numpy(), render_size=64, reference=reference[0].numpy())
        assert np.abs(out[i].numpy() - expected).max() <= TOL
    assert (out - _run(node, image, tiny_guided_weights)).abs().max() > 0.01


# ------------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "image, match",
    [
        (torch.zeros(40, 56, 3), r"rank 4 \(B, H, W, C\), got rank 3"),
        (torch.zeros(1, 1, 40, 56, 3), "got rank 5"),
        (torch.zeros(1, 40, 56, 2), "got 2 channels"),
        (torch.zeros(1, 3, 40, 56), "got 56 channels"),  # channels first
        (torch.zeros(0, 40, 56, 3), "empty"),
        (torch.zeros(1, 40, 56, 3, dtype=torch.uint8), "float values"),
        (torch.full((1, 40, 56, 3), float("nan")), "NaN"),
        (np.zeros((1, 40, 56, 3), np.float32), "tensor"),
    ],
)
def test_bad_image_is_a_clear_value_error(pack, tiny_weights, image, match):
    with pytest.raises(ValueError, match=match):
        _run(pack.NODE_CLASS_MAPPINGS["ColorGANColorize"], image, tiny_weights)


@pytest.mark.parametrize(
    "hints, match",
    [
        ("{not json", "hints: not valid JSON"),
        ('{"points": [{"x": 1, "y": 2}]}', r"points\[0\]: missing \['color'\]"),
        ('{"points": [{"x": 1, "y": 2, "color": "red"}]}', "colour must be '#rrggbb'"),
        ('{"dots": []}', "unknown keys"),
        ('{"points": [{"x": 500, "y": 2, "color": "#ff0000"}]}', r"points\[0\]: \(500, 2\) is outside the 56 x 40 image"),
    ],
)
def test_bad_hints_are_a_clear_value_error(pack, tiny_guided_weights, hints, match):
    with pytest.raises(ValueError, match=match):
        _run(pack.NODE_CLASS_MAPPINGS["ColorGANColorizeGuided"], _photo(), tiny_guided_weights, hints=hints)


def test_bad_guidance_and_model_are_clear_errors(pack, tiny_weights, tiny_guided_weights, tmp_path):
    from colorgan.errors import WeightsNotFoundError

    node = pack.NODE_CLASS_MAPPINGS["ColorGANColorizeGuided"]
    image = torch.cat([_photo(), _photo(seed=1), _photo(seed=2)])
    with pytest.raises(ValueError, match="reference: 2 images for a batch of 3"):
        _run(node, image, tiny_guided_weights, reference=torch.rand(2, 20, 20, 3))
    with pytest.raises(ValueError, match="greyscale"):
        _run(node, image[:1], tiny_guided_weights, reference=_photo(seed=9))
    with pytest.raises(ValueError, match="takes no colour hints"):
        _run(node, image[:1], tiny_weights, hints='{"points": [{"x": 1, "y": 2, "color": "#ff0000"}]}')
    with pytest.raises(ValueError, match="render_size must be an integer in"):
        _run(node, image[:1], tiny_weights, render_size=32)
    with pytest.raises(ValueError, match="unknown model 'nope'"):
        pack.NODE_CLASS_MAPPINGS["ColorGANColorize"]().colorize(image[:1], model="nope")
    with pytest.raises(WeightsNotFoundError, match="missing.safetensors"):
        _run(node, image[:1], tmp_path / "missing.safetensors")


# ------------------------------------------------------------------------------- shipped model


@pytest.mark.integration
def test_shipped_default_model_with_a_point(pack):
    from colorgan.pipeline import Colorizer

    node = pack.NODE_CLASS_MAPPINGS["ColorGANColorizeGuided"]
    image = _photo(seed=8, size=(64, 96))
    hints = '{"points": [{"x": 20, "y": 30, "color": "#c03020"}]}'
    (out,) = node().colorize(image, model="default", render_size=64, device="cpu", hints=hints)
    assert out.shape == (1, 64, 96, 3) and out.dtype == torch.float32
    expected = Colorizer.from_pretrained("default").colorize(image[0].numpy(), render_size=64, hints=json.loads(hints))
    assert np.abs(out[0].numpy() - expected).max() <= TOL
