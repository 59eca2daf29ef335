"""Colour maths against scikit-image, round trips, ranges, gradients."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from colorgan import color

skcolor = pytest.importorskip("skimage.color")


def _random_rgb(seed: int = 0, shape=(2, 3, 16, 16)) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(shape, generator=g, dtype=torch.float64)


def test_rgb_to_lab_matches_skimage():
    rgb = _random_rgb()
    ours = color.rgb_to_lab(rgb).numpy()
    for i in range(rgb.shape[0]):
        ref = skcolor.rgb2lab(rgb[i].permute(1, 2, 0).numpy())
        np.testing.assert_allclose(ours[i].transpose(1, 2, 0), ref, atol=1e-3)


def test_rgb_to_lab_matches_skimage_float32_and_extremes():
    # Primaries, black, white and near-black values on the linear segment of sRGB.
    pts = torch.tensor(
        [[0, 0, 0], [1, 1, 1], [1, 0, 0], [0, 1, 0], [0, 0, 1], [0.01, 0.02, 0.03], [0.5, 0.5, 0.5]],
        dtype=torch.float32,
    )
    img = pts.T.reshape(3, 1, -1)
    ours = color.rgb_to_lab(img)[:, 0, :].T.numpy()
    ref = skcolor.rgb2lab(pts.numpy()[None].astype(np.float64))[0]
    np.testing.assert_allclose(ours, ref, atol=1e-3)


def test_lab_to_rgb_matches_skimage_in_gamut():
    rgb = _random_rgb(1)
    lab = color.rgb_to_lab(rgb)
    for i in range(rgb.shape[0]):
        ref = skcolor.lab2rgb(lab[i].permute(1, 2, 0).numpy())
        ours = color.lab_to_rgb(lab[i]).permute(1, 2, 0).numpy()
        np.testing.assert_allclose(ours, ref, atol=1e-4)


def test_round_trip_rgb_lab_rgb():
    rgb = _random_rgb(2).float()
    back = color.lab_to_rgb(color.rgb_to_lab(rgb))
    assert torch.allclose(back, rgb, atol=1e-4)


def test_rgb_to_l_equals_l_channel_and_grey_inverse():
    rgb = _random_rgb(3)
    L = color.rgb_to_l(rgb)
    assert L.shape == (2, 1, 16, 16)
    assert torch.allclose(L, color.rgb_to_lab(rgb)[:, :1], atol=1e-9)
    grey = color.l_to_grey_rgb(L)
    assert grey.shape == rgb.shape
    assert torch.allclose(color.rgb_to_l(grey), L, atol=1e-6)
    # A grey pixel has (nearly) zero chroma; skimage's white point and matrix rows differ in
    # the 5th digit, which leaves |ab| of about 0.005 on greys (as in skimage itself).
    assert color.rgb_to_lab(grey)[:, 1:].abs().max() < 0.01


def test_normalisation_inverse_and_range():
    L = torch.linspace(0, 100, 11)
    assert torch.allclose(color.denormalize_l(color.normalize_l(L)), L)
    assert color.normalize_l(L).min() == -1 and color.normalize_l(L).max() == 1
    ab = torch.linspace(-110, 110, 11)
    assert torch.allclose(color.denormalize_ab(color.normalize_ab(ab)), ab)
    assert color.normalize_ab(ab).abs().max() == 1


def test_gamut_clip_keeps_l_and_hue():
    # Very saturated colours at dark and bright L are far out of the sRGB gamut.
    lab = torch.tensor([[10.0, 100.0, -100.0], [95.0, -90.0, 90.0], [50.0, 0.0, 0.0], [60.0, 20, 30]])
    img = lab.T.reshape(3, 1, -1)
    rgb = color.lab_to_rgb(img)
    assert rgb.min() >= 0 and rgb.max() <= 1
    back = color.rgb_to_lab(rgb)
    assert torch.allclose(back[0], img[0], atol=0.2), (back[0], img[0])
    # Hue angle kept for the clipped colours.
    hue_in = torch.atan2(img[2], img[1])
    hue_out = torch.atan2(back[2], back[1])
    assert torch.allclose(hue_in[0, :2], hue_out[0, :2], atol=0.05)
    # In-gamut colours untouched.
    assert torch.allclose(back[:, 0, 2:], img[:, 0, 2:], atol=1e-3)


def test_plain_clamp_would_shift_l():
    # Documents why gamut_clip exists: clamping RGB changes L by several units here.
    img = torch.tensor([10.0, 100.0, -100.0]).view(3, 1, 1)
    clamped = color.lab_to_rgb_unclipped(img).clamp(0, 1)
    assert abs(color.rgb_to_lab(clamped)[0].item() - 10.0) > 1.0
    assert abs(color.rgb_to_lab(color.lab_to_rgb(img))[0].item() - 10.0) < 0.2


def test_merge_luminance_keeps_full_res_l():
    g = torch.Generator().manual_seed(0)
    L = torch.rand(2, 1, 40, 56, generator=g) * 100
    ab = (torch.rand(2, 2, 10, 14, generator=g) - 0.5) * 120
    rgb = color.merge_luminance(L, ab)
    assert rgb.shape == (2, 3, 40, 56)
    assert torch.isfinite(rgb).all() and rgb.min() >= 0 and rgb.max() <= 1
    dL = (color.rgb_to_l(rgb) - L).abs()
    assert dL.mean() < 0.05 and dL.max() < 0.5


def test_merge_luminance_rejects_bad_shapes():
    with pytest.raises(ValueError):
        color.merge_luminance(torch.zeros(1, 3, 4, 4), torch.zeros(1, 2, 4, 4))
    with pytest.raises(ValueError):
        color.merge_luminance(torch.zeros(1, 1, 4, 4), torch.zeros(2, 2, 4, 4))


def test_input_validation():
    with pytest.raises(ValueError):
        color.rgb_to_lab(torch.zeros(4, 4))
    with pytest.raises(TypeError):
        color.rgb_to_lab(torch.zeros(3, 4, 4, dtype=torch.uint8))


def test_gradcheck_rgb_to_lab_and_back():
    rgb = (torch.rand(1, 3, 3, 3, dtype=torch.float64) * 0.9 + 0.05).requires_grad_()
    assert torch.autograd.gradcheck(color.rgb_to_lab, (rgb,), eps=1e-6, atol=1e-4)
    lab = color.rgb_to_lab(rgb).detach().requires_grad_()
    assert torch.autograd.gradcheck(color.lab_to_rgb_unclipped, (lab,), eps=1e-6, atol=1e-4)


def test_gradient_finite_at_zero():
    rgb = torch.zeros(1, 3, 2, 2, requires_grad=True)
    color.rgb_to_lab(rgb).sum().backward()
    assert torch.isfinite(rgb.grad).all()


def test_merge_luminance_in_bands_equals_one_pass(monkeypatch):
    """Large CPU merges run in bands of rows (for the cache); the result must not change."""
    g = torch.Generator().manual_seed(3)
    L = torch.rand(2, 1, 37, 29, generator=g) * 100
    ab = torch.randn(2, 2, 9, 7, generator=g) * 40  # strong colour: many pixels need the gamut clip
    whole = color.merge_luminance(L, ab)
    monkeypatch.setattr(color, "_MERGE_CHUNK", 100)  # bands of 1 row
    banded = color.merge_luminance(L, ab)
    assert torch.allclose(whole, banded, atol=1e-6)
    ab_full = torch.nn.functional.interpolate(ab, size=(37, 29), mode="bilinear", align_corners=False)
    # The fast merge encodes sRGB by a polynomial (within 4.4e-5) and clips by the same bisection.
    assert torch.allclose(banded, color.lab_to_rgb(torch.cat([L, ab_full], 1)), atol=1e-4)


def test_fast_merge_matches_the_reference_conversion_and_keeps_l():
    """The in-place merge (float32, no autograd) against lab_to_rgb in float64, on colours far
    outside the gamut, very dark and very bright pixels, and L beyond [0, 100]."""
    g = torch.Generator().manual_seed(7)
    L = torch.rand(3, 1, 64, 80, generator=g) * 104 - 2
    L[0, 0, :8] = 0.0
    L[1, 0, :8] = 100.0
    ab = torch.randn(3, 2, 16, 20, generator=g) * 60
    fast = color.merge_luminance(L, ab)
    ab_full = torch.nn.functional.interpolate(ab.double(), size=(64, 80), mode="bilinear", align_corners=False)
    ref = color.lab_to_rgb(torch.cat([L.double(), ab_full], 1))
    assert fast.dtype == torch.float32 and fast.min() >= 0 and fast.max() <= 1
    diff = (fast.double() - ref).abs()
    # The encoding's 4.4e-5, and at a few pixels on the gamut boundary a float32 bisection
    # decision that differs from float64's by one step (2.4e-4 of chroma): far inside 1/255.
    assert diff.max() < 5e-4 and diff.mean() < 5e-5 and float((diff > 1e-4).float().mean()) < 1e-3
    dL = (color.rgb_to_l(fast) - L.clamp(0, 100)).abs()
    assert dL.mean() < 0.05


def test_srgb_polynomial_is_within_its_stated_error():
    x = torch.linspace(0.0, 1.0, 200_001, dtype=torch.float64)
    exact = color._linear_to_srgb(x)
    out = torch.empty(x.numel(), dtype=torch.float32)
    fast = color._linear_to_srgb_into(x.float().clone(), out, torch.empty_like(out))
    assert (fast.double() - exact).abs().max() < 5e-5
