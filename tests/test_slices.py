"""Stored output slices that catch numeric drift, as diffusers' pipeline tests do.

A few pixels of ab (and of the final sRGB) from a seeded tiny generator and from the shipped
default model, on a deterministic synthetic grey image made here, are stored as literals and
compared within 1e-4. A refactor that changes what the network, the calibration or the
resizing computes fails here, however plausible its output still looks.

The values were recorded with torch 2.13.0 on CPU, one thread (conftest pins it). Rounding
noise from the thread count or the memory format is below 7e-5 in ab on this input (measured),
under the tolerance. Re-record only for an intended change of the numbers, and say why in the
commit: ``python tests/test_slices.py`` prints the current values in the literals' layout.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

ATOL_AB = 1e-4  # ab units (about [-110, 110])
ATOL_RGB = 1e-4  # sRGB in [0, 1]

# (y, x) positions in the render-resolution ab map and in the full-resolution output.
AB_AT = [(0, 0), (5, 17), (20, 40), (31, 60), (45, 10), (63, 95)]
RGB_AT = [(0, 0), (32, 36), (50, 100), (70, 90), (95, 127)]


def scene(h: int = 96, w: int = 128) -> np.ndarray:
    """A smooth grey test pattern with structure: a horizontal ramp, vertical ripples, a bright
    disc, a dark box and a striped patch. uint8 ``(h, w)``; the same bytes on every platform
    (no value lies near a rounding boundary)."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    img = 0.2 + 0.5 * xx / (w - 1) + 0.12 * np.sin(yy / 6.0)
    img[(yy - 32) ** 2 + (xx - 36) ** 2 < 16**2] = 0.9
    img[58:86, 78:116] = 0.08
    img[10:24, 90:120] = 0.55 + 0.3 * ((xx[10:24, 90:120] // 5) % 2)
    return (np.clip(img, 0, 1) * 255).round().astype(np.uint8)


def ab_slice(colorizer, image: np.ndarray, render_size: int) -> np.ndarray:
    """ab at ``AB_AT`` of the render-resolution prediction: ``(len(AB_AT), 2)`` float64."""
    L = colorizer.prepare(image).L
    ab = colorizer.predict_ab_batch([L], render_size)[0]
    single = colorizer.predict_ab(L, render_size)
    assert torch.allclose(ab, single, atol=ATOL_AB)  # the batch path and the one-image path agree
    return np.array([[float(ab[0, c, y, x]) for c in range(2)] for y, x in AB_AT])


def rgb_slice(out: np.ndarray) -> np.ndarray:
    """The output's RGB at ``RGB_AT``: ``(len(RGB_AT), 3)``."""
    return np.array([out[y, x, :3] for y, x in RGB_AT])


# --------------------------------------------------------------------------- tiny, seeded

# conftest.make_tiny_generator(seed=0) saved through the hub and loaded by Colorizer.from_pretrained.
TINY_AB_64 = [(8.24988, -9.37074), (13.39401, -10.77613), (4.21289, -3.86135), (13.53911, -14.13078), (8.88316, -7.73262), (15.47844, -12.56969)]
TINY_RGB_64 = [(0.2225573, 0.1860133, 0.2543281), (0.9332005, 0.8815315, 1.0000000), (0.7523215, 0.6732029, 0.8124886), (0.1043315, 0.0642941, 0.1143557), (0.7578995, 0.6524879, 0.7770229)]


def test_tiny_seeded_generator_ab_slice(tiny_colorizer):
    got = ab_slice(tiny_colorizer, scene(), 64)
    assert np.abs(got).max() > 1.0  # real colour: a zero ab head would make this test blind
    np.testing.assert_allclose(got, TINY_AB_64, rtol=0, atol=ATOL_AB)


def test_tiny_seeded_generator_rgb_slice(tiny_colorizer):
    out = tiny_colorizer.colorize(scene().astype(np.float32) / 255, render_size=64)
    np.testing.assert_allclose(rgb_slice(out), TINY_RGB_64, rtol=0, atol=ATOL_RGB)


# --------------------------------------------------------------------------- shipped default


@pytest.fixture(scope="module")
def default_colorizer():
    from colorgan.pipeline import Colorizer

    return Colorizer.from_pretrained("default", device="cpu")


# First recorded at commit 19f4f52 (the shipped file's network with its per-image gain head and
# global gain 1.0, i.e. everything colorize applies); re-recorded in session 7 when inference
# began to fold BatchNorm into the convolutions (ab moved by at most 3.3e-4) and to encode sRGB
# by a polynomial in the merge (sRGB moved by at most 1.1e-5).
DEFAULT_AB = {
    256: [(-1.91946, 5.45254), (0.71607, 10.08530), (1.74153, 13.47445), (0.00310, 5.93437), (2.71847, 8.46204), (3.67707, 23.13635)],
    128: [(-4.02426, 2.35851), (-11.77370, 1.53864), (-9.93324, 0.44579), (-4.36818, 1.98497), (-7.78472, 3.94799), (-6.18029, 0.53858)],
}
DEFAULT_RGB_256 = [(0.2062369, 0.2007289, 0.1718984), (0.9987453, 0.8868582, 0.7209642), (0.6871260, 0.7047340, 0.7172850), (0.0883467, 0.0732950, 0.0957027), (0.6631688, 0.6901312, 0.7137859)]
DEFAULT_RGB8_256 = [(53, 51, 44), (255, 226, 184), (175, 180, 183), (23, 19, 24), (169, 176, 182)]


@pytest.mark.integration
@pytest.mark.parametrize("render_size", [256, 128])
def test_shipped_default_ab_slice(default_colorizer, render_size):
    got = ab_slice(default_colorizer, scene(), render_size)
    np.testing.assert_allclose(got, DEFAULT_AB[render_size], rtol=0, atol=ATOL_AB)


@pytest.mark.integration
def test_shipped_default_colorize_slice(default_colorizer):
    img = scene()
    out8 = default_colorizer.colorize(img, render_size=256)
    assert out8.dtype == np.uint8 and out8.shape == (*img.shape, 3)
    np.testing.assert_array_equal(rgb_slice(out8), DEFAULT_RGB8_256)
    out = default_colorizer.colorize(img.astype(np.float32) / 255, render_size=256)
    np.testing.assert_allclose(rgb_slice(out), DEFAULT_RGB_256, rtol=0, atol=ATOL_RGB)


if __name__ == "__main__":  # print the current values, to re-record after an intended change
    import sys
    from pathlib import Path
    from tempfile import TemporaryDirectory

    sys.path.insert(0, str(Path(__file__).parent))
    from conftest import make_tiny_generator

    from colorgan.models import hub
    from colorgan.pipeline import Colorizer

    def show(name: str, a: np.ndarray, fmt: str = "{:.6f}") -> None:
        rows = ", ".join("(" + ", ".join(fmt.format(v) for v in row) + ")" for row in a)
        print(f"{name} = [{rows}]")

    with TemporaryDirectory() as d:
        tiny = Colorizer.from_pretrained(hub.save_model(make_tiny_generator(), Path(d) / "tiny.safetensors"))
        show("TINY_AB_64", ab_slice(tiny, scene(), 64), "{:.5f}")
        show("TINY_RGB_64", rgb_slice(tiny.colorize(scene().astype(np.float32) / 255, render_size=64)), "{:.7f}")
    default = Colorizer.from_pretrained("default")
    for size in (256, 128):
        show(f"DEFAULT_AB[{size}]", ab_slice(default, scene(), size), "{:.5f}")
    show("DEFAULT_RGB_256", rgb_slice(default.colorize(scene().astype(np.float32) / 255, render_size=256)), "{:.7f}")
    raw = default.colorize(scene(), render_size=256)
    show("DEFAULT_RGB8_256", rgb_slice(raw), "{}")
