"""The per-image chroma gain head: its model wiring, its ridge fit, its file and its CLI."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from colorgan.eval import gain_head
from colorgan.models.generator import ChromaGainHead, SAUNet


def _with_head(model: SAUNet, weight: torch.Tensor | None = None, bias: float = 0.0) -> SAUNet:
    d = 2 * model.encoder.channels[4] + model.encoder.channels[3]
    w = np.zeros(d) if weight is None else weight.double().numpy()
    return gain_head.with_gain_head(model, gain_head.RidgeFit(weight=w, bias=bias, alpha=1.0, cv_mse=0.0, cv_mse_mean=0.0))


def _l(b: int = 2, h: int = 64, w: int = 96, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(b, 1, h, w, generator=g) * 2 - 1)


def test_a_zero_head_is_the_plain_network(tiny_generator):
    x = _l()
    with torch.no_grad():
        assert torch.equal(_with_head(tiny_generator)(x), tiny_generator(x))


def test_the_head_scales_each_image_by_its_own_bounded_gain(tiny_generator):
    x = _l(b=3)
    with torch.no_grad():
        plain = tiny_generator(x)
        # A bias alone: one gain for all, exp(0.3).
        assert torch.allclose(_with_head(tiny_generator, bias=0.3)(x), plain * math.exp(0.3), atol=1e-6)
        # Far beyond the bound: clamped to max_gain, never more.
        assert torch.allclose(_with_head(tiny_generator, bias=50.0)(x), plain * ChromaGainHead.max_gain, atol=1e-6)
        # Weights on the features: the gain differs between images, and matches the features.
        d = tiny_generator.encoder.channels
        w = torch.randn(2 * d[4] + d[3], generator=torch.Generator().manual_seed(1)) * 0.5
        m = _with_head(tiny_generator, w)
        got = m(x)
        s = tiny_generator.encoder(x)
        z = (ChromaGainHead.features(s[3], s[4]) @ w).clamp(-math.log(2), math.log(2))
        assert torch.allclose(got, plain * z.exp()[:, None, None, None], atol=1e-5)
        assert z.std() > 0.01  # per image, not one number


def test_features_std_matches_torch_std(tiny_generator):
    s = tiny_generator.encoder(_l(b=2))
    f = ChromaGainHead.features(s[3], s[4])
    c32 = s[4].shape[1]
    assert f.shape == (2, 2 * c32 + s[3].shape[1])
    assert torch.allclose(f[:, -c32:], s[4].std((2, 3), unbiased=False), atol=1e-5)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_a_model_with_a_head_runs_in_half_precision(tiny_generator, dtype):
    from colorgan.pipeline import Colorizer

    d = tiny_generator.encoder.channels
    adaptive = _with_head(tiny_generator, torch.full((2 * d[4] + d[3],), 0.05), bias=0.1)
    if dtype == torch.float16:
        # fp16 matmuls need a GPU on some builds; the head itself is what is under test.
        x = _l(b=2).to(dtype)
        s = adaptive.to(dtype).encoder(x)
        g = adaptive.gain_head(s[3], s[4])
        assert g.dtype == torch.float32 and torch.isfinite(g).all()
        return
    c = Colorizer(adaptive, device="cpu", dtype=dtype)
    rgb = np.random.default_rng(0).integers(0, 255, (40, 56), dtype=np.uint8)
    out = c.colorize(rgb, render_size=64)
    ref = Colorizer(_with_head(tiny_generator, torch.full((2 * d[4] + d[3],), 0.05), bias=0.1), device="cpu").colorize(rgb, render_size=64)
    assert out.shape == (40, 56, 3)
    assert np.abs(out.astype(float) - ref.astype(float)).mean() < 3.0  # bf16 rounding only


def test_ridge_recovers_a_linear_law_and_folds_the_standardisation_back():
    rng = np.random.default_rng(0)
    X = rng.normal(3.0, [0.1, 5.0, 1.0, 2.0], (200, 4))  # columns on very different scales
    w_true = np.array([2.0, -0.1, 0.0, 0.3])
    y = X @ w_true + 0.7 + rng.normal(0, 0.05, 200)
    fit = gain_head.fit_ridge(X, y)
    assert np.allclose(fit.predict(X), y, atol=0.2)
    assert np.allclose(fit.weight, w_true, atol=0.05) and fit.cv_mse < 0.1 * fit.cv_mse_mean
    # Pure noise: cross-validation picks strong shrinkage and does not beat the mean by much.
    noise = gain_head.fit_ridge(rng.normal(size=(60, 300)), rng.normal(size=60))
    assert noise.cv_mse > 0.9 * noise.cv_mse_mean
    assert np.abs(noise.predict(rng.normal(size=(5, 300)))).max() < 1.0
    with pytest.raises(ValueError):
        gain_head.fit_ridge(X[:3], y[:3])


def test_fit_from_photos_and_write_a_file_that_reloads_with_its_head(tmp_path, tiny_weights):
    from conftest import write_tinted_photos

    from colorgan.models import hub

    files = write_tinted_photos(tmp_path / "photos", 8, tint=lambda i, rng: 1.0 + rng.uniform(-0.5, 0.5, 3) * (i % 4) / 3)
    model = hub.load_model(tiny_weights)
    samples = gain_head.collect_samples(model, files, size=64, render_size=64)
    assert samples.features.shape[0] == len(files) == samples.cf_truth.shape[0]
    assert np.all(np.isfinite(samples.target))
    fit = gain_head.fit_ridge(samples.features, samples.target)
    adaptive = gain_head.with_gain_head(model, fit)
    assert adaptive.config.adaptive_gain
    # Fitting is against the plain network even when the model already has a head.
    again = gain_head.collect_samples(adaptive, files[:2], size=64, render_size=64)
    assert np.allclose(again.cf_output, samples.cf_output[:2])
    out = tmp_path / "adaptive.safetensors"
    hub.save_model(adaptive, out, dtype=torch.float16)
    back = hub.load_model(out)
    assert back.config.adaptive_gain and back.gain_head is not None
    x = _l(b=2, h=64, w=64)
    with torch.no_grad():
        assert torch.allclose(back(x), adaptive(x), atol=3e-3)


def test_calibrate_cli_adaptive_fits_on_the_configs_training_photos(tmp_path, tiny_weights, capsys):
    from conftest import write_tinted_photos

    from colorgan.eval import calibrate
    from colorgan.models import hub

    rng = np.random.default_rng(1)
    train, held = tmp_path / "train", tmp_path / "held"
    for d, n in ((train, 12), (held, 3)):
        write_tinted_photos(d, n, seed=rng, size=(40, 40), sd=0.2, tint=lambda i, r: r.uniform(0.4, 1.2, 3), name=d.name + "{i}.png")
    cfg = tmp_path / "recipe.toml"
    cfg.write_text(f'[[data]]\npath = "{train}"\nweight = 1.0\n\n[val]\nholdout_every = 1000000\n')
    out = tmp_path / "cal.safetensors"
    rc = calibrate.main(["--weights", str(tiny_weights), "--data", str(held), "--adaptive", "--fit-config", str(cfg),
                         "--fit-images", "10", "--gains", "1.0", "--target", "0", "--out", str(out)])
    assert rc == 0
    assert "gain head: ridge alpha" in capsys.readouterr().out
    m = hub.load_model(out)
    assert m.config.adaptive_gain and m.config.chroma_gain == 1.0
    assert '"gain_head"' in hub.read_metadata(out)["calibration"]
    # --adaptive without a recipe: a clear usage error, not a traceback.
    with pytest.raises(SystemExit) as e:
        calibrate.main(["--weights", str(tiny_weights), "--data", str(held), "--adaptive"])
    assert e.value.code == 2
    # Fit options without --adaptive: a usage error too.
    with pytest.raises(SystemExit) as e:
        calibrate.main(["--weights", str(tiny_weights), "--data", str(held), "--fit-images", "10"])
    assert e.value.code == 2
    # A recipe whose data folder is missing: one clear line naming the recipe and the folder.
    bad = tmp_path / "bad.toml"
    bad.write_text(f'[[data]]\npath = "{tmp_path / "nowhere"}"\n')
    capsys.readouterr()
    assert calibrate.main(["--weights", str(tiny_weights), "--data", str(held), "--adaptive", "--fit-config", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "bad.toml" in err and "nowhere" in err and "Traceback" not in err


def test_training_files_never_returns_a_held_out_photo(tmp_path):
    from colorgan.train.data import holdout_split, scan_images

    d = tmp_path / "folder"
    d.mkdir()
    for i in range(60):
        (d / f"img{i:03d}.jpg").write_bytes(b"x")
    cfg = tmp_path / "recipe.toml"
    cfg.write_text(f'[[data]]\npath = "{d}"\nweight = 1.0\n\n[val]\nholdout_every = 4\n')
    picked = gain_head.training_files(cfg, 1000)
    _, held = holdout_split(scan_images(d), 4)
    assert held and not set(picked) & set(held)
    assert len(picked) == 60 - len(held)
