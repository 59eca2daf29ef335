"""Chroma calibration: the value stored with the weights, its wrapper, its fit and ``colorgan calibrate``."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from colorgan.calibrate import head as gain_head
from colorgan.models.calibration import MAX_GAIN, CalibratedGenerator, ChromaCalibration, gain_features
from colorgan.models.generator import SAUNet


def _with_head(model: SAUNet, weight: torch.Tensor | None = None, bias: float = 0.0, gain: float = 1.0) -> CalibratedGenerator:
    d = 2 * model.encoder.channels[4] + model.encoder.channels[3]
    w = np.zeros(d) if weight is None else weight.double().numpy()
    fit = gain_head.RidgeFit(weight=w, bias=bias, alpha=1.0, cv_mse=0.0, cv_mse_mean=0.0)
    return CalibratedGenerator(model, gain_head.head_calibration(fit, gain)).eval()


def calibrate_main(argv: list[str]) -> int:
    """``colorgan calibrate ARGV`` through the real entry point."""
    from colorgan.cli import main

    return main(["calibrate", *argv])


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
        assert torch.allclose(_with_head(tiny_generator, bias=50.0)(x), plain * MAX_GAIN, atol=1e-6)
        # Weights on the features: the gain differs between images, and matches the features.
        d = tiny_generator.encoder.channels
        w = torch.randn(2 * d[4] + d[3], generator=torch.Generator().manual_seed(1)) * 0.5
        m = _with_head(tiny_generator, w)
        got = m(x)
        s = tiny_generator.encoder(x)
        z = (gain_features(s[3], s[4]) @ w).clamp(-math.log(2), math.log(2))
        assert torch.allclose(got, plain * z.exp()[:, None, None, None], atol=1e-5)
        assert z.std() > 0.01  # per image, not one number


def test_features_std_matches_torch_std(tiny_generator):
    s = tiny_generator.encoder(_l(b=2))
    f = gain_features(s[3], s[4])
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
        s = adaptive.to(dtype).net.encoder(x)
        g = adaptive.per_image_gain(s[3], s[4])
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
    adaptive = CalibratedGenerator(model, gain_head.head_calibration(fit, gain=1.25)).eval()
    assert adaptive.calibration.per_image and adaptive.calibration.gain == 1.25
    # Fitting is against the bare network even when the model is already calibrated.
    again = gain_head.collect_samples(adaptive, files[:2], size=64, render_size=64)
    assert np.allclose(again.cf_output, samples.cf_output[:2])
    out = tmp_path / "adaptive.safetensors"
    hub.save_model(adaptive, out, dtype=torch.float16)
    # The calibration is in the metadata, never in the network's config or tensors.
    assert hub.read_calibration(out) == adaptive.calibration
    bare = hub.load_model(out)
    assert isinstance(bare, SAUNet) and bare.state_dict().keys() == model.state_dict().keys()
    back = hub.load_inference_model(out)
    assert isinstance(back, CalibratedGenerator)
    x = _l(b=2, h=64, w=64)
    with torch.no_grad():
        assert torch.allclose(back(x), adaptive(x), atol=3e-3)


def test_calibrate_cli_adaptive_fits_on_the_configs_training_photos(tmp_path, tiny_weights, capsys):
    from conftest import write_tinted_photos

    from colorgan.models import hub

    rng = np.random.default_rng(1)
    train, held = tmp_path / "train", tmp_path / "held"
    for d, n in ((train, 12), (held, 3)):
        write_tinted_photos(d, n, seed=rng, size=(40, 40), sd=0.2, tint=lambda i, r: r.uniform(0.4, 1.2, 3), name=d.name + "{i}.png")
    cfg = tmp_path / "recipe.toml"
    cfg.write_text(f'[[data]]\npath = "{train}"\nweight = 1.0\n\n[val]\nholdout_every = 1000000\n')
    out = tmp_path / "cal.safetensors"
    rc = calibrate_main(["--weights", str(tiny_weights), "--data", str(held), "--adaptive", "--fit-config", str(cfg),
                         "--fit-images", "10", "--gains", "1.0", "--target", "0", "--out", str(out)])
    assert rc == 0
    assert "gain head: ridge alpha" in capsys.readouterr().out
    cal = hub.read_calibration(out)
    assert cal.per_image and cal.gain == 1.0
    assert '"gain_head"' in hub.read_metadata(out)["calibration"]
    # --adaptive without a recipe: a clear usage error, not a traceback.
    with pytest.raises(SystemExit) as e:
        calibrate_main(["--weights", str(tiny_weights), "--data", str(held), "--adaptive"])
    assert e.value.code == 2
    # Fit options without --adaptive: a usage error too.
    with pytest.raises(SystemExit) as e:
        calibrate_main(["--weights", str(tiny_weights), "--data", str(held), "--fit-images", "10"])
    assert e.value.code == 2
    # A recipe whose data folder is missing: one clear line naming the recipe and the folder.
    bad = tmp_path / "bad.toml"
    bad.write_text(f'[[data]]\npath = "{tmp_path / "nowhere"}"\n')
    capsys.readouterr()
    assert calibrate_main(["--weights", str(tiny_weights), "--data", str(held), "--adaptive", "--fit-config", str(bad)]) == 2
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


# ----------------------------------------------------------------------------- chroma-gain calibration


def test_pick_gain_with_a_psnr_floor_takes_the_lowest_delta_cf_inside_the_band():
    from colorgan.calibrate.gain import GainPoint, choose_gain, pick_gain

    curve = [
        GainPoint(gain=0.8, cf_ratio=0.70, delta_cf=14.5, psnr=23.0),  # lowest dCF, below the band
        GainPoint(gain=0.9, cf_ratio=0.75, delta_cf=17.0, psnr=22.8),
        GainPoint(gain=1.0, cf_ratio=0.83, delta_cf=15.6, psnr=22.6),
        GainPoint(gain=1.1, cf_ratio=0.86, delta_cf=15.3, psnr=22.4),
        GainPoint(gain=1.2, cf_ratio=0.90, delta_cf=15.1, psnr=22.2),  # lowest dCF, below the floor
        GainPoint(gain=1.3, cf_ratio=1.20, delta_cf=14.0, psnr=22.9),  # above the band (garish)
    ]
    assert pick_gain(curve, 0.8).gain == 1.0  # without a floor: the smallest gain reaching 0.8
    assert pick_gain(curve, 0.8, min_psnr=22.3).gain == 1.1
    assert pick_gain(curve, 0.8, min_psnr=22.1).gain == 1.2
    assert pick_gain(curve, 0.8, min_psnr=22.1, max_ratio=1.3).gain == 1.3
    assert pick_gain(curve, 0.8, min_psnr=23.0).gain == 1.0  # nothing qualifies: the first rule
    assert pick_gain(list(reversed(curve)), 0.8, min_psnr=22.3).gain == 1.1  # order does not matter
    assert pick_gain(curve, 0.8, min_psnr=22.4).gain == 1.1  # the floor and the band's ends are inclusive
    assert pick_gain(curve, 0.8, min_psnr=22.1, max_ratio=0.90).gain == 1.2
    assert choose_gain(curve, 0.8, min_psnr=22.3) == (curve[3], "min_dcf")
    assert choose_gain(curve, 0.8, min_psnr=30.0) == (curve[2], "target")
    assert choose_gain(curve, 5.0) == (curve[-1], "unreached")
    with pytest.raises(ValueError, match="empty"):
        choose_gain([], 0.8)


def test_calibrate_cli_says_which_rule_chose_the_gain_and_rejects_bad_options(tmp_path, tiny_weights, capsys):
    from conftest import write_tinted_photos

    d = tmp_path / "heldout"
    write_tinted_photos(d, 2, seed=1)
    base = ["--weights", str(tiny_weights), "--data", str(d), "--gains", "0.5,1.0"]
    rec = tmp_path / "r.json"
    assert calibrate_main(base + ["--target", "0", "--json", str(rec)]) == 0
    out = capsys.readouterr()
    assert "chosen gain 0.50: the smallest gain reaching CF ratio 0.0" in out.out and "warning" not in out.err
    assert json.loads(rec.read_text())["rule"] == "target"
    assert calibrate_main(base + ["--target", "0", "--min-psnr", "1000", "--json", str(rec)]) == 0
    out = capsys.readouterr()
    assert "falling back to the smallest gain reaching the target" in out.err  # a floor nothing meets
    saved = json.loads(rec.read_text())
    assert saved["rule"] == "target" and saved["min_psnr"] == 1000 and saved["chosen"] == 0.5
    assert calibrate_main(base + ["--target", "100", "--json", str(rec)]) == 0
    assert "no gain reaches CF ratio 100.0, so the largest" in capsys.readouterr().out
    assert json.loads(rec.read_text())["rule"] == "unreached"
    for bad in (["--min-psnr", "nan"], ["--min-psnr", "inf"], ["--min-psnr", "20", "--target", "1.2"],
                ["--gains", "0,1"], ["--gains", "1,x"], ["--gains", "-1"]):
        with pytest.raises(SystemExit) as e:
            calibrate_main(["--weights", str(tiny_weights), "--data", str(d), *bad])
        assert e.value.code == 2, bad
    capsys.readouterr()


def test_chroma_gain_calibration_scales_ab_and_is_picked_on_held_out_photos(tmp_path, tiny_weights):
    from conftest import write_tinted_photos

    from colorgan.calibrate import gain as calibrate
    from colorgan.models import hub
    from colorgan.pipeline import Colorizer

    d = tmp_path / "heldout"
    files = write_tinted_photos(d, 3)
    c = Colorizer.from_pretrained(tiny_weights)
    curve = calibrate.chroma_gain_curve(c, files, [1.0, 1.5, 2.0], size=64, render_size=64)
    ratios = [p.cf_ratio for p in curve]
    assert ratios[0] < ratios[1] < ratios[2]  # more gain, more colour
    assert calibrate.pick_gain(curve, target=ratios[1] - 1e-6).gain == 1.5
    assert calibrate.pick_gain(curve, target=10.0).gain == 2.0  # unreachable: the largest

    out = tmp_path / "cal.safetensors"
    assert calibrate_main(["--weights", str(tiny_weights), "--data", str(d), "--gains", "1.5",
                           "--target", "0", "--out", str(out)]) == 0
    m0, m1 = hub.load_inference_model(tiny_weights), hub.load_inference_model(out)
    assert hub.read_calibration(out) == ChromaCalibration(gain=1.5) and hub.read_calibration(tiny_weights).is_identity
    assert "calibration" in hub.read_metadata(out)
    rec = tmp_path / "cal.json"
    assert calibrate_main(["--weights", str(tiny_weights), "--data", str(d), "--gains", "1.0,1.5",
                           "--target", "0", "--min-psnr", "-100", "--json", str(rec)]) == 0
    saved = json.loads(rec.read_text())
    in_band = [p for p in saved["curve"] if p["cf_ratio"] <= 1.15]
    assert in_band  # the tiny model's colour is mild: the test checks the choice, not the fallback
    assert saved["chosen"] == min(in_band, key=lambda p: p["delta_cf"])["gain"] and saved["min_psnr"] == -100 and saved["max_ratio"] == 1.15
    x = torch.rand(1, 1, 64, 64) * 2 - 1
    with torch.no_grad():
        # fp16 storage of the calibrated file: equal within half precision.
        assert torch.allclose(m1(x), 1.5 * m0(x), atol=2e-3)


# ----------------------------------------------------------------------------- the stored value and older files


def test_calibration_value_round_trips_and_refuses_bad_values():
    cal = ChromaCalibration(gain=1.2, head_weight=(0.1, -0.25, 1e-7), head_bias=0.3)
    assert ChromaCalibration.from_json(cal.to_json()) == cal
    assert ChromaCalibration().is_identity and not cal.is_identity and cal.with_gain(1.0).per_image
    for bad in ({"gain": 0.0}, {"gain": float("nan")}, {"head_weight": (float("inf"),)}, {"max_gain": 0.5}):
        with pytest.raises(ValueError):
            ChromaCalibration(**bad)
    for text in ("[1]", "{nope", '{"gain": 1, "extra": 2}'):
        with pytest.raises(ValueError):
            ChromaCalibration.from_json(text)


def test_an_uncalibrated_network_is_not_wrapped_and_a_head_must_fit_the_network(tiny_generator):
    from colorgan.models.calibration import with_calibration

    assert with_calibration(tiny_generator, ChromaCalibration()) is tiny_generator
    with pytest.raises(ValueError, match="weights"):
        CalibratedGenerator(tiny_generator, ChromaCalibration(head_weight=(0.1, 0.2)))


def _legacy_file(model: SAUNet, path, gain: float, weight: torch.Tensor | None, bias: float) -> None:
    """A weights file as ColorGAN wrote it before 2026-12-02: the calibration in config and tensors."""
    import dataclasses

    from safetensors.torch import save_file

    tensors = {k: v.detach().clone().half() for k, v in model.state_dict().items()}
    config = {**dataclasses.asdict(model.config), "chroma_gain": gain, "adaptive_gain": weight is not None}
    if weight is not None:
        tensors["gain_head.linear.weight"] = weight.half()[None]
        tensors["gain_head.linear.bias"] = torch.tensor([bias]).half()
    save_file(tensors, str(path), metadata={"format": "colorgan", "kind": "generator", "config": json.dumps(config), "version": "0.1.0"})


@pytest.mark.parametrize("per_image", [False, True])
def test_files_of_the_older_format_load_as_network_and_calibration(tmp_path, tiny_generator, per_image):
    from colorgan.models import hub

    d = tiny_generator.encoder.channels
    w = torch.randn(2 * d[4] + d[3], generator=torch.Generator().manual_seed(2)) * 0.3 if per_image else None
    path = tmp_path / "old.safetensors"
    _legacy_file(tiny_generator, path, 1.3, w, 0.125)
    bare = hub.load_model(path)
    assert isinstance(bare, SAUNet) and "gain_head.linear.weight" not in bare.state_dict()
    cal = hub.read_calibration(path)
    assert cal.gain == 1.3 and cal.per_image == per_image
    if per_image:
        assert cal.head_weight == tuple(w.half().float().tolist()) and cal.head_bias == 0.125
    x = _l(b=2, h=64, w=64)
    with torch.no_grad():
        plain = bare(x)
        got = hub.load_inference_model(path)(x)
        gain = 1.3 * (CalibratedGenerator(bare, cal).per_image_gain(*bare.forward_features(x)[1]) if per_image else 1.0)
        assert torch.allclose(got, plain * gain, atol=1e-6)
    # Written again, it is the new format: same network tensors, the calibration in the metadata.
    new = tmp_path / "new.safetensors"
    hub.save_model(bare, new, dtype=torch.float16, calibration=cal)
    assert "chroma_calibration" in hub.read_metadata(new) and hub.read_calibration(new) == cal
    with torch.no_grad():
        assert torch.equal(hub.load_inference_model(new)(x), got)


def test_the_shipped_default_keeps_its_calibration_in_the_metadata():
    from colorgan.models import hub

    path = hub.shipped_weights_path("default")
    meta = hub.read_metadata(path)
    assert "chroma_calibration" in meta and "chroma_gain" not in json.loads(meta["config"])
    cal = hub.read_calibration(path)
    assert cal.per_image and cal.gain == 1.0



def test_calibrate_same_as_copies_a_calibration_onto_a_network(tmp_path, tiny_weights, capsys):
    from conftest import make_tiny_generator

    from colorgan.models import hub

    cal = ChromaCalibration(gain=1.2, head_weight=(0.01,) * 88, head_bias=0.1)  # the tiny encoder: 2 x 32 + 24 features
    src = tmp_path / "calibrated.safetensors"
    hub.save_model(make_tiny_generator(), src, calibration=cal)
    guided = tmp_path / "guided.safetensors"
    hub.save_model(make_tiny_generator(guidance=True), guided)
    out = tmp_path / "out.safetensors"
    assert calibrate_main(["--weights", str(guided), "--same-as", str(src), "--out", str(out)]) == 0
    assert hub.read_calibration(out) == cal and hub.load_model(out).config.guidance
    with pytest.raises(SystemExit):
        calibrate_main(["--weights", str(guided), "--same-as", str(src)])  # no --out
    with pytest.raises(SystemExit):
        calibrate_main(["--weights", str(guided)])  # neither --data nor --same-as
