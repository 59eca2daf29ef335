"""Colorizer: L preserved, shapes and kinds kept, batching, determinism, OOM fallback."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from colorgan import color
from colorgan.errors import OutOfMemoryError
from colorgan.pipeline import Colorizer, render_shape, resolve_device


def _grey_photo(h=48, w=80, seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    img = 0.5 + 0.3 * np.sin(xx / 5.0) * np.cos(yy / 7.0) + rng.normal(0, 0.05, (h, w))
    return (np.clip(img, 0, 1) * 255).astype(np.uint8)


def _lab_L(rgb_uint8: np.ndarray) -> torch.Tensor:
    t = torch.from_numpy(rgb_uint8.astype(np.float64) / 255.0).permute(2, 0, 1)
    return color.rgb_to_l(t)


def test_render_shape_keeps_aspect_and_multiples():
    assert render_shape(512, 768, 256) == (256, 384)
    assert render_shape(768, 512, 256) == (384, 256)
    h, w = render_shape(321, 481, 256)
    assert h == 256 and w % 32 == 0 and abs(w / h - 481 / 321) < 0.1
    assert render_shape(10, 10, 64) == (64, 64)


def test_output_l_equals_input_l(tiny_colorizer):
    grey = _grey_photo()
    out = tiny_colorizer.colorize(Image.fromarray(grey, "L"), render_size=64)
    assert out.mode == "RGB" and out.size == (80, 48)
    arr = np.asarray(out)
    assert np.abs(arr[..., 0].astype(int) - arr[..., 1]).max() > 0  # it did add colour
    L_out = _lab_L(arr)
    L_in = _lab_L(np.repeat(grey[..., None], 3, axis=2))
    assert (L_out - L_in).abs().mean() < 0.5


def test_numpy_dtypes_round_trip(tiny_colorizer):
    grey = _grey_photo()
    out8 = tiny_colorizer.colorize(grey, render_size=64)
    assert out8.dtype == np.uint8 and out8.shape == (48, 80, 3)
    out16 = tiny_colorizer.colorize(grey.astype(np.uint16) * 257, render_size=64)
    assert out16.dtype == np.uint16 and out16.shape == (48, 80, 3)
    outf = tiny_colorizer.colorize(grey.astype(np.float32) / 255, render_size=64)
    assert outf.dtype == np.float32 and 0 <= outf.min() and outf.max() <= 1
    # Same picture whatever the container.
    assert np.abs(out16 / 65535.0 - out8 / 255.0).max() < 2 / 255
    assert np.abs(outf - out8 / 255.0).max() < 1 / 255 + 1e-6


def test_alpha_reattached_unchanged(tiny_colorizer):
    grey = _grey_photo()
    alpha = np.random.default_rng(1).integers(0, 256, grey.shape, dtype=np.uint8)
    rgba = np.dstack([grey, grey, grey, alpha])
    out = tiny_colorizer.colorize(Image.fromarray(rgba, "RGBA"), render_size=64)
    assert out.mode == "RGBA"
    assert np.array_equal(np.asarray(out)[..., 3], alpha)
    out_arr = tiny_colorizer.colorize(rgba, render_size=64)
    assert out_arr.shape == (48, 80, 4) and np.array_equal(out_arr[..., 3], alpha)


def test_deterministic(tiny_colorizer):
    grey = _grey_photo()
    a = tiny_colorizer.colorize(grey, render_size=64)
    b = tiny_colorizer.colorize(grey, render_size=64)
    assert np.array_equal(a, b)


def test_batch_equals_single(tiny_colorizer):
    imgs = [_grey_photo(48, 80, 0), _grey_photo(48, 80, 1), _grey_photo(64, 40, 2)]
    batch = tiny_colorizer.colorize_batch(imgs, render_size=64, batch_size=2)
    for img, res in zip(imgs, batch):
        single = tiny_colorizer.colorize(img, render_size=64)
        assert res.shape == single.shape
        assert np.abs(res.astype(int) - single.astype(int)).max() <= 1


def test_colour_input_reduced_to_luminance(tiny_colorizer, caplog):
    grey = _grey_photo()
    rgb = np.dstack([grey, np.roll(grey, 7, axis=1), 255 - grey]).astype(np.uint8)
    with caplog.at_level("WARNING"):
        out = tiny_colorizer.colorize(rgb, render_size=64)
    assert "already in colour" in caplog.text
    assert (_lab_L(out) - _lab_L(rgb)).abs().mean() < 0.5


def test_render_size_validated(tiny_colorizer):
    with pytest.raises(ValueError, match="render_size"):
        tiny_colorizer.colorize(_grey_photo(), render_size=10)


def test_bad_input_type(tiny_colorizer):
    with pytest.raises(TypeError):
        tiny_colorizer.colorize("not an image")  # type: ignore[arg-type]


class _OOMAbove(torch.nn.Module):
    """Failure injection: behaves like a real model but raises OOM above a size."""

    stride = 32

    def __init__(self, inner: torch.nn.Module, limit: int) -> None:
        super().__init__()
        self.inner = inner
        self.limit = limit
        self.sizes: list[int] = []

    def forward(self, x):
        self.sizes.append(min(x.shape[-2:]))
        if min(x.shape[-2:]) > self.limit:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2 GiB")
        return self.inner(x)


def test_oom_falls_back_to_smaller_render_size(tiny_colorizer):
    model = _OOMAbove(tiny_colorizer.model, limit=64)
    c = Colorizer(model, device="cpu")
    with pytest.warns(RuntimeWarning) as record:
        out = c.colorize(_grey_photo(), render_size=256)
    assert [str(w.message).split("; ")[1] for w in record] == ["retrying at 128", "retrying at 64"]
    assert out.shape == (48, 80, 3)
    assert model.sizes[:3] == [256, 128, 64]


class _OOMAboveBatch(torch.nn.Module):
    """Failure injection: raises OOM for batches larger than ``limit``."""

    stride = 32

    def __init__(self, inner: torch.nn.Module, limit: int) -> None:
        super().__init__()
        self.inner, self.limit, self.batches = inner, limit, []

    def forward(self, x):
        self.batches.append(x.shape[0])
        if x.shape[0] > self.limit:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2 GiB")
        return self.inner(x)


def test_oom_splits_a_batch_before_lowering_the_render_size(tiny_colorizer):
    """The one policy of every caller (photos, folders, video frames): halves of the batch first,
    which gives the same colours; a smaller render size only for a single image."""
    model = _OOMAboveBatch(tiny_colorizer.model, limit=1)
    c = Colorizer(model, device="cpu")
    L = torch.rand(4, 1, 64, 96, generator=torch.Generator().manual_seed(0)) * 100
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no render-size fallback, so no warning
        ab = c.predict_ab_safe(L, 64)
    assert model.batches == [4, 2, 1, 1, 2, 1, 1]
    assert torch.allclose(ab, tiny_colorizer.predict_ab(L, 64), atol=1e-5)


def test_every_caller_resizes_l_the_same_way(tiny_colorizer):
    from colorgan.pipeline import render_shape, resize_to_render

    L = torch.rand(1, 1, 300, 420, generator=torch.Generator().manual_seed(1)) * 100
    small = resize_to_render(L, 128)
    assert small.shape[-2:] == render_shape(300, 420, 128)
    assert torch.equal(resize_to_render(small, 128), small)  # idempotent: video resizes once for network and flow
    # A photo, an array and a batch all give the ab of the one resize.
    ab = tiny_colorizer.predict_ab(small, 128)
    assert torch.equal(tiny_colorizer.predict_ab(L, 128), ab)
    assert torch.equal(tiny_colorizer.predict_ab_batch([L], 128)[0], ab)


def test_colorize_array_takes_the_same_path_as_colorize(tiny_colorizer):
    grey = _grey_photo()
    rgb = np.repeat(grey[..., None], 3, axis=2).astype(np.float32) / 255.0
    out = tiny_colorizer.colorize_array(rgb, render_size=64)
    assert out.dtype == np.float32 and out.shape == rgb.shape
    assert np.array_equal(out, tiny_colorizer.colorize(rgb, render_size=64))
    assert np.array_equal(tiny_colorizer.colorize_array(rgb[..., 0], render_size=64), out)


def test_oom_at_smallest_size_is_a_clear_error(tiny_colorizer):
    c = Colorizer(_OOMAbove(tiny_colorizer.model, limit=0), device="cpu")
    with pytest.warns(RuntimeWarning), pytest.raises(OutOfMemoryError, match="out of memory"):
        c.colorize(_grey_photo(), render_size=128)


def test_resolve_device():
    assert resolve_device("cpu").type == "cpu"
    assert resolve_device("auto").type in {"cpu", "cuda", "mps"}
    with pytest.raises(ValueError):
        resolve_device("nonsense")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            resolve_device("cuda")


def test_from_pretrained_without_default_model(monkeypatch):
    from colorgan.errors import WeightsNotFoundError
    from colorgan.models import hub

    monkeypatch.setattr(hub, "shipped_weights_path", lambda name="default": None)
    with pytest.raises(WeightsNotFoundError, match="no 'default' model is installed"):
        Colorizer.from_pretrained()


@pytest.mark.integration
def test_shipped_default_model_loads_and_colours():
    from colorgan.models import hub

    if hub.shipped_weights_path() is None:
        pytest.skip("this copy ships no default model")
    c = Colorizer.from_pretrained(device="cpu")
    assert c.model.net.config.encoder == "mobilenet_v2" and c.model.calibration.per_image  # calibrated around the network
    grey = _grey_photo(64, 96)
    out = c.colorize(grey, render_size=64)
    assert out.shape == (64, 96, 3)
    assert (_lab_L(out) - _lab_L(np.repeat(grey[..., None], 3, axis=2))).abs().mean() < 0.5
    chroma = color.rgb_to_lab(torch.from_numpy(out / 255.0).permute(2, 0, 1))[1:].square().sum(0).sqrt()
    assert chroma.mean() > 1.0  # it adds colour


@pytest.mark.integration
@pytest.mark.parametrize("name,kind", [("default", "generator"), ("cic", "cic"), ("iizuka", "iizuka")])
def test_every_shipped_model_is_installed_loads_and_colours(name, kind):
    """The package ships our model and the paper's two baselines, each selectable by name."""
    from colorgan.models import hub

    path = hub.shipped_weights_path(name)
    assert path is not None, f"the {name!r} weights are missing from src/colorgan/weights"
    assert path.stat().st_size < 30 * 2**20  # the project's limit per weights file
    assert hub.read_metadata(path)["kind"] == kind
    c = Colorizer.from_pretrained(name, device="cpu")
    grey = _grey_photo(64, 96)
    out = c.colorize(grey, render_size=64)
    assert (_lab_L(out) - _lab_L(np.repeat(grey[..., None], 3, axis=2))).abs().mean() < 0.5
    chroma = color.rgb_to_lab(torch.from_numpy(out / 255.0).permute(2, 0, 1))[1:].square().sum(0).sqrt()
    assert chroma.mean() > 1.0


def test_l_of_8bit_rgb_samples_by_look_up_matches_rgb_to_l(tiny_weights):
    """Colour and tinted 8-bit input: L from the integer samples (sRGB decoding by table) is
    color.rgb_to_l of the float channels."""
    from colorgan import io as cio

    rng = np.random.default_rng(3)
    arr = rng.integers(0, 256, size=(17, 23, 3)).astype(np.uint8)
    loaded = cio.from_array(arr)
    assert loaded.levels is not None and loaded.levels.shape == (17, 23, 3)
    c = Colorizer.from_pretrained(tiny_weights)
    want = color.rgb_to_l(torch.from_numpy(arr.astype(np.float32) / 255).permute(2, 0, 1)[None])
    assert torch.allclose(c.prepare(loaded).L, want, atol=1e-4)
