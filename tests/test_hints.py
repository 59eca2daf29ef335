"""Colour guidance: the hints format, its checks, rasterising, the guided generator, the API and the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from colorgan import color
from colorgan.hints import ColourPoint, HintsError, load_hints, parse_hints, points_to_json, rasterize_points, simulate_points


def test_hints_file_round_trips_and_reads_both_colour_forms(tmp_path):
    data = {"points": [{"x": 120, "y": 45, "color": "#a03020"}, {"x": 3.5, "y": 0, "color": "#fff", "radius": 12}]}
    points = parse_hints(data, size=(100, 200))
    assert points[0] == ColourPoint(120.0, 45.0, (0xA0 / 255, 0x30 / 255, 0x20 / 255), None)
    assert points[1].rgb == (1.0, 1.0, 1.0) and points[1].radius == 12.0
    assert parse_hints(points_to_json(points)) == points
    f = tmp_path / "h.json"
    f.write_text(json.dumps(data))
    assert load_hints(f) == points


@pytest.mark.parametrize(
    "data, match",
    [
        ({"points": [{"x": 10, "y": 5, "color": "red"}]}, r"points\[0\]: colour must be '#rrggbb'"),
        ({"points": [{"x": 10, "color": "#ff0000"}]}, r"points\[0\]: missing \['y'\]"),
        ({"points": [{"x": 1, "y": 1, "color": "#ff0000"}, {"x": 250, "y": 5, "color": "#00ff00"}]}, r"points\[1\]: \(250, 5\) is outside the 200 x 100 image"),
        ({"points": [{"x": 1, "y": 1, "color": "#ff0000", "radius": 0}]}, r"points\[0\]: radius must be > 0"),
        ({"points": [{"x": float("nan"), "y": 1, "color": "#ff0000"}]}, r"points\[0\]: x must be a finite number"),
        ({"points": [{"x": 1, "y": 1, "color": "#ff0000", "size": 3}]}, r"unknown keys \['size'\]"),
        ({"dots": []}, "unknown keys"),
        ("nonsense", "expected"),
    ],
)
def test_bad_hints_are_refused_naming_the_file_and_the_point(data, match):
    with pytest.raises(HintsError, match=match) as e:
        parse_hints(data, source="photo.json", size=(100, 200))
    assert str(e.value).startswith("photo.json")


def test_unreadable_hints_files_name_the_file(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(HintsError, match="bad.json: not valid JSON"):
        load_hints(bad)
    with pytest.raises(HintsError, match="no such hints file"):
        load_hints(tmp_path / "missing.json")


def test_rasterize_puts_the_colours_chroma_at_the_scaled_place():
    red = ColourPoint(x=150.0, y=40.0, rgb=(0.8, 0.1, 0.1))
    big = ColourPoint(x=10.0, y=90.0, rgb=(0.1, 0.2, 0.9), radius=20.0)
    g = rasterize_points([red, big], image_size=(100, 200), render_size=(64, 128))
    assert g.shape == (1, 3, 64, 128)
    lab = color.rgb_to_lab(torch.tensor([0.8, 0.1, 0.1]).view(1, 3, 1, 1))[0, 1:, 0, 0] / 110
    y, x = int((40 + 0.5) * 0.64), int((150 + 0.5) * 0.64)
    assert torch.allclose(g[0, :2, y, x], lab, atol=1e-6) and g[0, 2, y, x] == 1
    # The default radius: about a 5 x 5 patch of the render; the given one scales with the image.
    assert 9 <= int((g[0, 2, :32] > 0).sum()) <= 25
    assert int((g[0, 2, 32:] > 0).sum()) > 300  # radius 20 px of the image = 12.8 px of the render
    assert rasterize_points([], (100, 200), (64, 128)).abs().sum() == 0


def test_simulated_points_hold_the_true_mean_colour():
    ab = torch.rand(2, 2, 32, 48, generator=torch.Generator().manual_seed(0)) * 2 - 1
    g = simulate_points(ab, [0, 5], torch.Generator().manual_seed(1))
    assert g[0].abs().sum() == 0 and 5 <= int((g[1, 2] > 0).sum()) <= 5 * 81
    assert simulate_points(ab, [0, 5], torch.Generator().manual_seed(1)).equal(g)  # a pure function of the seed


def test_no_guidance_adds_exactly_nothing_even_when_trained(tiny_generator):
    """The guided generator's automatic output is the unguided network's, bit for bit."""
    from conftest import make_tiny_generator

    guided = make_tiny_generator(guidance=True)  # random (trained-like) branch weights
    x = torch.rand(2, 1, 64, 96, generator=torch.Generator().manual_seed(2)) * 2 - 1
    with torch.no_grad():
        plain = tiny_generator(x)
        assert torch.equal(guided(x), plain)
        assert torch.equal(guided(x, torch.zeros(2, 3, 64, 96)), plain)
        hinted = guided(x, simulate_points(torch.rand(2, 2, 64, 96) * 0.5, [4, 4], torch.Generator().manual_seed(3)))
    assert (hinted - plain).abs().max() > 1e-3
    with pytest.raises(ValueError, match="takes no colour guidance"):
        tiny_generator(x, torch.zeros(2, 3, 64, 96))


def test_colorize_with_hints_moves_the_colour_there_and_keeps_l(tiny_guided_weights, tiny_weights):
    from colorgan.pipeline import Colorizer

    c = Colorizer.from_pretrained(tiny_guided_weights)
    assert c.takes_hints and not Colorizer.from_pretrained(tiny_weights).takes_hints
    grey = np.tile(np.linspace(40, 200, 96, dtype=np.uint8), (64, 1))
    auto = c.colorize(grey, render_size=64)
    hinted = c.colorize(grey, render_size=64, hints=[{"x": 20, "y": 30, "color": "#ff0000", "radius": 6}])
    assert not np.array_equal(auto, hinted)
    L = lambda im: color.rgb_to_lab(torch.from_numpy(im / 255.0).permute(2, 0, 1).float())[0]
    assert (L(hinted) - L(np.repeat(grey[..., None], 3, 2))).abs().mean() < 0.5  # L is the input's
    # The same points as ColourPoints, as a {"points": ...} object and as a file give the same image.
    pts = parse_hints([{"x": 20, "y": 30, "color": "#ff0000", "radius": 6}])
    assert np.array_equal(c.colorize(grey, render_size=64, hints=pts), hinted)
    with pytest.raises(HintsError, match="outside"):
        c.colorize(grey, render_size=64, hints=[{"x": 500, "y": 30, "color": "#ff0000"}])
    with pytest.raises(ValueError, match="takes no colour hints"):
        Colorizer.from_pretrained(tiny_weights).colorize(grey, hints=pts)


def test_calibration_fades_to_one_near_the_hints(tiny_generator):
    from conftest import make_tiny_generator

    from colorgan.models.calibration import CalibratedGenerator, ChromaCalibration

    guided = make_tiny_generator(guidance=True)
    cal = CalibratedGenerator(guided, ChromaCalibration(gain=1.5)).eval()
    x = torch.rand(1, 1, 64, 64, generator=torch.Generator().manual_seed(4)) * 2 - 1
    guide = torch.zeros(1, 3, 64, 64)
    guide[0, :, 30:34, 30:34] = torch.tensor([0.3, -0.2, 1.0]).view(3, 1, 1)
    with torch.no_grad():
        raw = guided(x, guide)
        out = cal(x, guide)
        assert torch.equal(cal(x), guided(x) * 1.5)  # no hints: the calibrated automatic output
    assert torch.allclose(out[..., 31, 31], raw[..., 31, 31], atol=1e-6)  # at the hint: as the network gives it
    assert torch.allclose(out[..., 0, 0], raw[..., 0, 0] * 1.5, atol=1e-6)  # far away: calibrated


def test_cli_hints_file_folder_and_a_bad_point_fail_only_their_photo(tmp_path, tiny_guided_weights, tiny_weights, capsys):
    from conftest import write_tinted_photos

    from colorgan.cli import main

    src = tmp_path / "in"
    files = write_tinted_photos(src / "sub", 3, size=(40, 56), tint=(1, 1, 1), name="p{i}.png")
    hints = tmp_path / "hints"
    (hints / "sub").mkdir(parents=True)
    (hints / "sub" / "p0.json").write_text(json.dumps({"points": [{"x": 5, "y": 5, "color": "#00ff00", "radius": 4}]}))
    (hints / "sub" / "p1.json").write_text(json.dumps({"points": [{"x": 999, "y": 5, "color": "#00ff00"}]}))
    before = {f: f.read_bytes() for f in files}
    rc = main(["colorize", str(src), "-o", str(tmp_path / "out"), "--weights", str(tiny_guided_weights), "--render-size", "64",
               "--hints", str(hints), "-q"])
    err = capsys.readouterr().err
    assert rc == 1  # one photo failed, the rest were done
    assert "p1.png" in err and "p1.json: points[0]: (999, 5) is outside the 56 x 40 image" in err
    assert (tmp_path / "out" / "sub" / "p0.png").exists() and (tmp_path / "out" / "sub" / "p2.png").exists()
    assert not (tmp_path / "out" / "sub" / "p1.png").exists()
    assert all(f.read_bytes() == b for f, b in before.items())
    # p2 had no hints file: automatic, the same as without --hints.
    rc = main(["colorize", str(src), "-o", str(tmp_path / "auto"), "--weights", str(tiny_guided_weights), "--render-size", "64", "-q"])
    assert rc == 0
    assert (tmp_path / "auto" / "sub" / "p2.png").read_bytes() == (tmp_path / "out" / "sub" / "p2.png").read_bytes()
    assert (tmp_path / "auto" / "sub" / "p0.png").read_bytes() != (tmp_path / "out" / "sub" / "p0.png").read_bytes()
    # One file for every input; a model without guidance, or a missing hints path, is a usage error.
    one = hints / "sub" / "p0.json"
    assert main(["colorize", str(files[2]), "-o", str(tmp_path / "one"), "--weights", str(tiny_guided_weights), "--render-size", "64", "--hints", str(one), "-q"]) == 0
    capsys.readouterr()
    assert main(["colorize", str(files[2]), "-o", str(tmp_path / "x"), "--weights", str(tiny_weights), "--hints", str(one)]) == 2
    assert "takes no colour guidance" in capsys.readouterr().err
    assert main(["colorize", str(files[2]), "-o", str(tmp_path / "x"), "--weights", str(tiny_guided_weights), "--hints", str(tmp_path / "nope.json")]) == 2
    assert "no such hints file" in capsys.readouterr().err


def test_guidance_stage_trains_only_the_branch(tmp_path):
    """The recipe's guidance stage: the automatic output of the result is the start's, bit for bit."""
    from conftest import write_tinted_photos

    from colorgan.models import hub
    from colorgan.train.config import load_config
    from colorgan.train.stages import run_training

    from conftest import make_tiny_generator

    d = tmp_path / "photos"
    write_tinted_photos(d, 8, size=(64, 64), tint=lambda i, r: r.uniform(0.4, 1.2, 3), sd=0.2)
    start = tmp_path / "start.safetensors"
    hub.save_model(make_tiny_generator(), start, dtype=torch.float16)  # as shipped: the export is fp16 too
    cfg = load_config(
        __import__("pathlib").Path(__file__).parents[1] / "configs" / "tiny.toml",
        [f'data=[{{path="{d}"}}]', "cycles=0", "pretrain_g.steps=0", f'init_generator="{start}"', "guidance.steps=6",
         "guidance.size=64", "guidance.batch_size=4", "guidance.eval_every=3", "guidance.checkpoint_every=3"],
    )
    out = run_training(cfg, tmp_path / "run", progress=False)
    g, g0 = hub.load_model(out), hub.load_model(start)
    assert g.config.guidance and not g0.config.guidance
    x = torch.rand(2, 1, 64, 64) * 2 - 1
    with torch.no_grad():
        assert torch.equal(g(x), g0(x))
        guide = simulate_points(torch.rand(2, 2, 64, 64) * 0.5, [6, 6], torch.Generator().manual_seed(0))
        assert not torch.equal(g(x, guide), g0(x))  # the branch learned something
    log = (tmp_path / "run" / "stages" / "01_guidance" / "log.csv").read_text()
    assert "l1_10pts" in log.splitlines()[0] and len(log.splitlines()) >= 3


def test_guided_decoder_is_used_only_where_guidance_is_given(tiny_generator):
    """With a guided decoder, an image without guidance takes the automatic path exactly, also in
    a batch where other images have guidance; the guided decoder starts as a copy of the automatic one."""
    import dataclasses

    from colorgan.models.generator import SAUNet

    g = SAUNet(dataclasses.replace(tiny_generator.config, guidance=True, guided_decoder=True)).eval()
    g.load_state_dict(tiny_generator.state_dict(), strict=False)
    assert float(g.guided_ready) == 0.0
    g.start_guided_decoder()
    assert float(g.guided_ready) == 1.0
    x = torch.rand(3, 1, 64, 64, generator=torch.Generator().manual_seed(5)) * 2 - 1
    guide = simulate_points(torch.rand(3, 2, 64, 64) * 0.5, [0, 4, 3], torch.Generator().manual_seed(6))
    with torch.no_grad():
        plain = tiny_generator(x)
        assert torch.equal(g(x, guide), plain)  # a fresh branch adds zero, and the copy is the original
        for p in g.guided_decoder_parameters():  # a trained guided decoder differs from the automatic one
            p.add_(torch.randn_like(p) * 0.05)
        mixed = g(x, guide)
        assert torch.equal(mixed[0], plain[0])  # no points: exactly automatic
        assert (mixed[1:] - plain[1:]).abs().max() > 1e-3
        assert torch.allclose(mixed[1:], g(x[1:], guide[1:]), atol=1e-6)  # the same as alone
        assert torch.equal(g(x, torch.zeros_like(guide)), plain)
    with pytest.raises(ValueError, match="needs guidance"):
        dataclasses.replace(tiny_generator.config, guided_decoder=True)


def test_guidance_stage_with_a_guided_decoder_keeps_the_automatic_output(tmp_path):
    """``guidance.decoder``: the stage starts the guided decoder from the automatic one and trains
    it with the branch; the automatic output of the result is still the start's, bit for bit."""
    from conftest import make_tiny_generator, write_tinted_photos

    from colorgan.models import hub
    from colorgan.train.config import load_config
    from colorgan.train.stages import run_training

    d = tmp_path / "photos"
    write_tinted_photos(d, 8, size=(64, 64), tint=lambda i, r: r.uniform(0.4, 1.2, 3), sd=0.2)
    start = tmp_path / "start.safetensors"
    hub.save_model(make_tiny_generator(guidance=True), start, dtype=torch.float16)  # a branch already trained
    cfg = load_config(
        __import__("pathlib").Path(__file__).parents[1] / "configs" / "tiny.toml",
        [f'data=[{{path="{d}"}}]', "cycles=0", "pretrain_g.steps=0", f'init_generator="{start}"', "guidance.steps=4",
         "guidance.decoder=true", "guidance.size=64", "guidance.batch_size=4", "guidance.eval_every=2", "guidance.checkpoint_every=2"],
    )
    out = run_training(cfg, tmp_path / "run", progress=False)
    g, g0 = hub.load_model(out), hub.load_model(start)
    assert g.config.guided_decoder and float(g.guided_ready) == 1.0
    x = torch.rand(2, 1, 64, 64) * 2 - 1
    with torch.no_grad():
        assert torch.equal(g(x), g0(x))
        moved = [float((p - q).abs().max()) for p, q in zip(g.guided.head.parameters(), g0.head.parameters())]
        assert max(moved) > 0  # the guided decoder learned, the automatic one did not


def test_evaluate_hints_reports_psnr_against_points_and_the_error_at_the_hints(tmp_path, tiny_guided_weights, tiny_weights, capsys):
    from conftest import write_tinted_photos

    from colorgan.cli import main

    d = tmp_path / "photos"
    write_tinted_photos(d, 3, size=(64, 80), tint=lambda i, r: r.uniform(0.4, 1.3, 3), sd=0.2)
    out = tmp_path / "report"
    rc = main(["evaluate", "--models", f"{tiny_guided_weights},{tiny_weights}", "--data", str(d), "--out", str(out),
               "--no-fid", "--hints", "10", "--render-size", "64", "-q"])
    assert rc == 0, capsys.readouterr().err
    res = json.loads((out / "results.json").read_text())
    guided, plain = res["models"].values()
    assert "hints" not in plain  # it takes no hints: automatic
    h = guided["hints"]
    assert list(h["curve"]) == ["0", "1", "2", "5", "10", "20", "50"] and h["hinted_pixels"] > 0
    assert h["curve"]["10"]["mean"] == pytest.approx(guided["psnr"]["mean"])  # the table's run is the 10-point one
    md = (out / "report.md").read_text()
    assert "median ΔE at the hints" in md and "50 pts" in md
    # Seeded by the photo's name: a second run gives the same numbers.
    assert main(["evaluate", "--models", str(tiny_guided_weights), "--data", str(d), "--out", str(tmp_path / "r2"),
                 "--no-fid", "--hints", "10", "--render-size", "64", "-q"]) == 0
    again = json.loads((tmp_path / "r2" / "results.json").read_text())
    assert next(iter(again["models"].values()))["hints"]["curve"] == h["curve"]


def test_reference_guidance_carries_matching_colour_and_refuses_what_matches_nothing(tiny_guided_weights):
    from colorgan.pipeline import Colorizer
    from colorgan.reference import ReferenceConfig, reference_guidance, reference_lab

    c = Colorizer.from_pretrained(tiny_guided_weights)
    net = c.model
    rgb = torch.rand(1, 3, 64, 96, generator=torch.Generator().manual_seed(5))
    ref_l, ref_ab = reference_lab(rgb)
    g = reference_guidance(net, ref_l, ref_l, ref_ab)  # the photo as its own reference
    assert g.shape == (1, 3, 64, 96) and (g[:, 2] > 0).float().mean() > 0.5  # it matches itself
    # Thresholds no similarity reaches: no confidence anywhere, so no colour is given.
    none = reference_guidance(net, ref_l, ref_l, ref_ab, ReferenceConfig(low=1.01, high=1.02))
    assert none.abs().sum() == 0


def test_colorize_with_a_reference_api_and_cli(tmp_path, tiny_guided_weights, tiny_weights, capsys):
    from PIL import Image

    from conftest import write_tinted_photos

    from colorgan.cli import main
    from colorgan.pipeline import Colorizer

    c = Colorizer.from_pretrained(tiny_guided_weights)
    grey = np.tile(np.linspace(40, 200, 96, dtype=np.uint8), (64, 1))
    ref = (np.random.default_rng(0).random((70, 90, 3)) * 255).astype(np.uint8)
    auto, withref = c.colorize(grey, render_size=64), c.colorize(grey, render_size=64, reference=Image.fromarray(ref))
    assert withref.shape == auto.shape and not np.array_equal(auto, withref)
    with pytest.raises(ValueError, match="greyscale"):
        c.colorize(grey, reference=grey)
    with pytest.raises(ValueError, match="takes no reference"):
        Colorizer.from_pretrained(tiny_weights).colorize(grey, reference=ref)
    # CLI: a folder of references in the inputs' layout; a grey reference fails only its photo.
    src, refs = tmp_path / "in", tmp_path / "refs"
    write_tinted_photos(src, 2, size=(40, 56), tint=(1, 1, 1), name="p{i}.png")
    refs.mkdir()
    Image.fromarray(ref).save(refs / "p0.jpg")
    Image.fromarray(np.full((30, 30), 90, np.uint8)).save(refs / "p1.png")
    rc = main(["colorize", str(src), "-o", str(tmp_path / "out"), "--weights", str(tiny_guided_weights), "--render-size", "64",
               "--reference", str(refs), "-q"])
    err = capsys.readouterr().err
    assert rc == 1 and "p1.png: its reference" in err and "greyscale" in err
    assert (tmp_path / "out" / "p0.png").exists() and not (tmp_path / "out" / "p1.png").exists()
    assert main(["colorize", str(src), "-o", str(tmp_path / "x"), "--weights", str(tiny_weights), "--reference", str(refs / "p0.jpg")]) == 2


def test_near_guidance_separable_filters_equal_the_square_ones():
    from colorgan.models.calibration import near_guidance

    conf = torch.zeros(2, 1, 70, 93)
    conf[0, 0, 5, 7] = 1.0
    conf[0, 0, 40:44, 60:66] = 0.6
    conf[1, 0, 69, 0] = 1.0  # at a corner: the clipped windows
    k = 2 * max(1, round(70 / 16)) + 1
    grown = torch.nn.functional.max_pool2d(conf, k, stride=1, padding=k // 2)
    square = torch.nn.functional.avg_pool2d(grown, k, stride=1, padding=k // 2, count_include_pad=False).clamp(0, 1)
    assert torch.allclose(near_guidance(conf), square, atol=1e-6)
