"""Evaluation report: baselines, evaluate_models and `colorgan evaluate`, on tiny synthetic photos."""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from colorgan import color
from colorgan.errors import ColorGANError
from colorgan.eval.cli import add_evaluate_parser
from colorgan.eval.metrics import bootstrap_ci, center_crop_resize, colourfulness, psnr, ssim
from colorgan.eval.report import EvalConfig, EvaluationError, evaluate_models, load_eval_models
from colorgan.models.baselines import GreyModel, MeanChromaConfig, MeanChromaModel
from colorgan.pipeline import Colorizer

SIZES = [(48, 64), (80, 56), (64, 64), (72, 48), (56, 80), (60, 70)]  # (w, h)


def _photo(seed: int, w: int, h: int) -> np.ndarray:
    """Smooth colour gradients plus a little noise, uint8 (H, W, 3)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w] / 64.0
    img = np.stack([0.5 + 0.35 * np.sin(3 * xx + 2 * c + seed) * np.cos(2 * yy + c) for c in range(3)], -1)
    img = img + 0.02 * rng.standard_normal(img.shape)
    return (np.clip(img, 0, 1) * 255).round().astype(np.uint8)


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    from conftest import write_photos

    folder = tmp_path_factory.mktemp("photos")
    write_photos(folder, (_photo(i, w, h) for i, (w, h) in enumerate(SIZES)), "img{i}.png")
    return folder


@pytest.fixture(scope="module")
def models(photos, tiny_weights) -> dict:
    return {
        "tiny": Colorizer.from_pretrained(tiny_weights, device="cpu"),
        "grey": Colorizer(GreyModel(), name="grey"),
        "mean": Colorizer(MeanChromaModel.from_folder(photos), name="mean"),
    }


@pytest.fixture(scope="module")
def full_run(models, photos, tmp_path_factory) -> tuple[dict, Path]:
    out = tmp_path_factory.mktemp("report")
    cfg = EvalConfig(render_size=64, protocol="full", fid=False, n_boot=200)
    return evaluate_models(models, [photos], out, cfg, progress=False), out


def _load_rgb(path: Path) -> torch.Tensor:
    return torch.from_numpy(np.asarray(Image.open(path), dtype=np.float32) / 255.0).permute(2, 0, 1)[None]


def _grey_psnr_direct(rgb: torch.Tensor) -> float:
    lab = color.rgb_to_lab(rgb)
    gt_rt = color.lab_to_rgb(lab)
    pred = color.merge_luminance(lab[:, :1], torch.zeros(1, 2, 4, 4))
    return psnr(pred[0], gt_rt[0])


# ------------------------------------------------------------------------------------- baselines


def test_grey_model_predicts_zero_ab() -> None:
    out = GreyModel()(torch.rand(2, 1, 32, 64) * 2 - 1)
    assert out.shape == (2, 2, 32, 64) and not out.any()
    with pytest.raises(ValueError):
        GreyModel()(torch.zeros(1, 3, 32, 32))


def test_mean_chroma_measures_colour_photos_and_skips_grey(tmp_path) -> None:
    rgb = np.array([0.8, 0.4, 0.2])
    Image.fromarray(np.full((300, 40, 3), rgb * 255, np.uint8)).save(tmp_path / "a.png")  # resized to <= 256
    Image.fromarray(np.full((20, 20), 128, np.uint8)).save(tmp_path / "grey.png")  # would pull towards 0
    model = MeanChromaModel.from_folder(tmp_path)
    want = color.rgb_to_lab(torch.tensor(np.round(rgb * 255) / 255, dtype=torch.float32).view(3, 1, 1))[1:, 0, 0]
    assert model.config.mean_a == pytest.approx(float(want[0]), abs=0.05)
    assert model.config.mean_b == pytest.approx(float(want[1]), abs=0.05)
    assert torch.allclose(model.mean_ab * 110, want, atol=0.05)
    out = model(torch.zeros(2, 1, 32, 32))
    assert out.shape == (2, 2, 32, 32) and torch.allclose(out[1, :, 5, 7], model.mean_ab)
    # The config round-trips (what the hub stores), and the buffer is in the state dict.
    rebuilt = MeanChromaModel(MeanChromaConfig.from_dict(model.config.to_dict()))
    rebuilt.load_state_dict(model.state_dict(), strict=True)
    assert MeanChromaModel.hub_kind == "mean_chroma"
    with pytest.raises(ValueError, match="no colour images"):
        MeanChromaModel.from_folder(tmp_path / "grey.png")


# ---------------------------------------------------------------------------------- evaluate_models


def test_report_files_and_per_image_entries(full_run, photos) -> None:
    results, out = full_run
    for name in ("report.md", "results.json", "grid.png", "ab_hist.png"):
        assert (out / name).is_file(), name
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temporary files left
    saved = json.loads((out / "results.json").read_text())
    assert saved["n_images"] == len(SIZES) and saved["protocol"] == "full"
    files = [img["file"] for img in saved["images"]]
    assert files == sorted(files) and len(files) == len(SIZES)
    assert {(img["width"], img["height"]) for img in saved["images"]} == set(SIZES)
    for name in ("tiny", "grey", "mean"):
        per = saved["models"][name]["per_image"]
        assert [p["file"] for p in per] == files
        for p in per:
            assert all(math.isfinite(p[k]) for k in ("psnr", "ssim", "cf", "cf_true", "auc"))
        for key in ("psnr", "ssim", "cf", "delta_cf", "cf_ratio", "auc"):
            ci = saved["models"][name][key]
            assert all(math.isfinite(ci[k]) for k in ("mean", "lo", "hi")), (name, key)
            assert ci["lo"] <= ci["mean"] <= ci["hi"]
        assert saved["models"][name]["fid"] is None
    report = (out / "report.md").read_text()
    assert "| tiny |" in report and "| grey |" in report and "| mean |" in report and "ground truth" in report
    assert "Protocol: full" in report and f"Images: {len(SIZES)}" in report and str(photos) in report
    # Grid: a label row, then one row per image; columns grey input | 3 models | ground truth.
    grid = Image.open(out / "grid.png")
    assert grid.size == (4 + 5 * (128 + 4), 18 + 4 + len(SIZES) * (128 + 4))


def test_grey_baseline_has_no_colour(full_run) -> None:
    results, _ = full_run
    grey, truth = results["models"]["grey"], results["ground_truth"]
    assert grey["cf"]["mean"] == pytest.approx(0.0, abs=0.05)  # 0 up to Lab matrix rounding
    assert grey["cf_ratio"]["mean"] == pytest.approx(0.0, abs=1e-3)
    assert truth["cf"]["mean"] > 20
    assert grey["delta_cf"]["mean"] == pytest.approx(truth["cf"]["mean"], abs=0.05)
    # The mean baseline has some colour, the tiny random generator more; the CF ratio says so.
    assert 0 < results["models"]["mean"]["cf_ratio"]["mean"] < results["models"]["tiny"]["cf_ratio"]["mean"]


def test_paired_differences_are_first_model_minus_each_other_photo_by_photo(full_run) -> None:
    results, out = full_run
    paired = results["paired"]
    assert list(paired) == ["grey", "mean"]  # the first model ("tiny") against each other one
    tiny = results["models"]["tiny"]["per_image"]
    for other in ("grey", "mean"):
        per = results["models"][other]["per_image"]
        want = {
            "psnr": np.mean([a["psnr"] - b["psnr"] for a, b in zip(tiny, per)]),
            "ssim": np.mean([a["ssim"] - b["ssim"] for a, b in zip(tiny, per)]),
            "delta_cf": np.mean([abs(a["cf"] - a["cf_true"]) - abs(b["cf"] - b["cf_true"]) for a, b in zip(tiny, per)]),
        }
        for key, value in want.items():
            ci = paired[other][key]
            assert ci["mean"] == pytest.approx(value, abs=1e-9), (other, key)
            assert ci["lo"] <= ci["mean"] <= ci["hi"]
        # The interval is the bootstrap of the per-photo differences (paired), not of each model alone.
        diffs = [abs(a["cf"] - a["cf_true"]) - abs(b["cf"] - b["cf_true"]) for a, b in zip(tiny, per)]
        est, lo, hi = bootstrap_ci(diffs, n_boot=200)
        assert (paired[other]["delta_cf"]["lo"], paired[other]["delta_cf"]["hi"]) == pytest.approx((lo, hi), abs=1e-9)
    # Equal to the difference of the table's means, but its interval is the paired one.
    assert paired["grey"]["delta_cf"]["mean"] == pytest.approx(
        results["models"]["tiny"]["delta_cf"]["mean"] - results["models"]["grey"]["delta_cf"]["mean"], abs=1e-9)
    saved = json.loads((out / "results.json").read_text())
    assert saved["paired"]["mean"]["psnr"]["mean"] == pytest.approx(paired["mean"]["psnr"]["mean"])
    report = (out / "report.md").read_text()
    assert "Paired differences, tiny minus each other model" in report and "| grey | " in report.split("Paired")[1]


def test_one_model_has_no_paired_table(photos, tmp_path) -> None:
    cfg = EvalConfig(render_size=64, protocol="full", fid=False, n_boot=50, max_images=2)
    results = evaluate_models({"grey": Colorizer(GreyModel(), name="grey")}, [photos], tmp_path, cfg, progress=False)
    assert results["paired"] == {}
    assert "Paired differences" not in (tmp_path / "report.md").read_text()


def test_grey_psnr_equals_direct_computation(full_run, photos) -> None:
    results, _ = full_run
    per = results["models"]["grey"]["per_image"]
    for i in (0, 3):
        rgb = _load_rgb(photos / f"img{i}.png")
        assert per[i]["psnr"] == pytest.approx(_grey_psnr_direct(rgb), abs=1e-6)
        assert per[i]["cf_true"] == pytest.approx(colourfulness(color.lab_to_rgb(color.rgb_to_lab(rgb))[0]), abs=1e-6)
    mean_psnr = float(np.mean([p["psnr"] for p in per]))
    assert results["models"]["grey"]["psnr"]["mean"] == pytest.approx(mean_psnr, abs=1e-9)


def test_protocol_256_crops_before_colourising(photos, tmp_path) -> None:
    models = {"grey": Colorizer(GreyModel(), name="grey")}
    cfg = EvalConfig(render_size=64, protocol="256", fid=False, max_images=2, grid_images=1, n_boot=50)
    results = evaluate_models(models, [photos], tmp_path, cfg, progress=False)
    assert results["n_images"] == 2
    assert all((img["width"], img["height"]) == (256, 256) for img in results["images"])
    rgb = np.asarray(Image.open(photos / "img1.png"), dtype=np.float32) / 255.0
    crop = torch.from_numpy(center_crop_resize(rgb, 256)).permute(2, 0, 1)[None]
    grey = results["models"]["grey"]["per_image"][1]
    assert grey["psnr"] == pytest.approx(_grey_psnr_direct(crop), abs=1e-6)
    lab = color.rgb_to_lab(crop)
    pred = color.merge_luminance(lab[:, :1], torch.zeros(1, 2, 1, 1))
    assert grey["ssim"] == pytest.approx(ssim(pred[0], color.lab_to_rgb(lab)[0]), abs=1e-9)
    assert Image.open(tmp_path / "grid.png").size[1] == 18 + 4 + 128 + 4  # one grid row


def test_grey_and_unreadable_ground_truths_are_skipped(photos, tmp_path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    Image.fromarray(_photo(7, 40, 40)).save(data / "a.png")
    Image.fromarray(np.full((40, 40), 90, np.uint8)).save(data / "b_grey.png")
    (data / "c_broken.png").write_bytes(b"not a png")
    messages: list[str] = []
    cfg = EvalConfig(render_size=64, protocol="full", fid=False, n_boot=20)
    results = evaluate_models({"grey": Colorizer(GreyModel())}, [data], tmp_path / "out", cfg, progress=False, report=messages.append)
    assert results["n_images"] == 1
    assert {Path(s["file"]).name for s in results["skipped"]} == {"b_grey.png", "c_broken.png"}
    assert any("c_broken.png" in m for m in messages)
    Image.fromarray(np.full((40, 40), 90, np.uint8)).save(tmp_path / "only_grey.png")
    with pytest.raises(EvaluationError, match="no usable colour images"):
        evaluate_models({"grey": Colorizer(GreyModel())}, [tmp_path / "only_grey.png"], tmp_path / "o2", cfg, progress=False)


def test_report_inside_data_folder_is_not_read_back(tmp_path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    Image.fromarray(_photo(3, 40, 48)).save(data / "a.png")
    cfg = EvalConfig(render_size=64, protocol="full", fid=False, n_boot=20)
    for _ in range(2):  # the second run must not evaluate the first run's grid.png / ab_hist.png
        results = evaluate_models({"grey": Colorizer(GreyModel())}, [data], data / "report", cfg, progress=False)
        assert results["n_images"] == 1 and not results["skipped"]


@pytest.mark.integration
def test_fid_and_kid_on_four_images(photos, tmp_path) -> None:
    from colorgan.errors import WeightsNotFoundError
    from colorgan.eval.metrics import InceptionFeatures

    try:
        InceptionFeatures()
    except WeightsNotFoundError:
        pytest.skip("FID Inception network not installed")
    models = {"grey": Colorizer(GreyModel(), name="grey")}
    cfg = EvalConfig(render_size=64, protocol="full", fid=True, max_images=4, grid_images=0, n_boot=50)
    results = evaluate_models(models, [photos], tmp_path, cfg, progress=False)
    m = results["models"]["grey"]
    assert math.isfinite(m["fid"]) and m["fid"] > 0
    assert math.isfinite(m["kid"]["mean"]) and m["kid"]["std"] == 0.0
    assert not (tmp_path / "grid.png").exists()
    report = (tmp_path / "report.md").read_text()
    assert f"{m['fid']:.2f}" in report


# ------------------------------------------------------------------------------- load_eval_models


def test_load_eval_models(photos, tiny_weights) -> None:
    got = load_eval_models(["grey", "mean", str(tiny_weights)], "cpu", mean_from=photos)
    assert list(got) == ["grey", "mean", Path(tiny_weights).stem]
    assert isinstance(got["grey"].model, GreyModel) and isinstance(got["mean"].model, MeanChromaModel)
    with pytest.raises(ColorGANError, match="--mean-from"):
        load_eval_models(["mean"], "cpu")
    with pytest.raises(ColorGANError, match="grey, mean"):
        load_eval_models(["no-such-model"], "cpu")
    with pytest.raises(ColorGANError, match="twice"):
        load_eval_models(["grey", "grey"], "cpu")


# -------------------------------------------------------------------------------------------- CLI


def _cli(argv: list) -> int:
    parser = argparse.ArgumentParser(prog="colorgan")
    add_evaluate_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args([str(a) for a in argv])
    return args.func(args)


def test_cli_usage_errors_exit_2(photos, tmp_path, capsys) -> None:
    base = ["evaluate", "--out", tmp_path / "r", "--no-fid", "-q", "--device", "cpu"]
    assert _cli(base + ["--models", "grey", "--data", tmp_path / "missing"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("colorgan: error:") and "missing" in err and err.count("\n") == 1
    assert _cli(base + ["--models", "grey,nope", "--data", photos]) == 2
    err = capsys.readouterr().err
    assert err.startswith("colorgan: error:") and "nope" in err and err.count("\n") == 1
    (tmp_path / "empty").mkdir()
    assert _cli(base + ["--models", "grey", "--data", tmp_path / "empty"]) == 2
    assert "no images" in capsys.readouterr().err
    assert _cli(base + ["--models", "mean", "--data", photos]) == 2
    assert "--mean-from" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_cli_writes_report(photos, tiny_weights, tmp_path, capsys) -> None:
    out = tmp_path / "r"
    argv = ["evaluate", "--models", f"grey,{tiny_weights}", "--models", "mean", "--mean-from", photos, "--data", photos]
    argv += ["--out", out, "--protocol", "full", "--render-size", "64", "--no-fid", "--max-images", "3", "-q", "--device", "cpu"]
    assert _cli(argv) == 0
    captured = capsys.readouterr()
    assert captured.out.strip() == str(out / "report.md")
    saved = json.loads((out / "results.json").read_text())
    assert saved["n_images"] == 3 and list(saved["models"]) == ["grey", Path(tiny_weights).stem, "mean"]
