"""`colorgan colorize` through its real entry points, on temporary folders."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from colorgan.cli import main


def _photo(path: Path, size=(40, 32), mode="L", seed=0, **save) -> Path:
    from conftest import write_photos

    rng = np.random.default_rng(seed)
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w]
    grey = (np.clip(0.5 + 0.3 * np.sin(xx / 4.0) + rng.normal(0, 0.05, (h, w)), 0, 1) * 255).astype(np.uint8)
    return write_photos(path.parent, [grey], path.name, mode=mode, **save)[0]


def _hashes(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*")) if p.is_file()}


def _run(args, capsys):
    code = main([str(a) for a in args])
    out = capsys.readouterr()
    return code, out.err


def test_folder_tree_kept_and_inputs_untouched(tmp_path, tiny_weights, capsys):
    src = tmp_path / "in"
    _photo(src / "a.jpg")
    _photo(src / "sub" / "b.png", seed=1)
    _photo(src / "sub" / "deeper" / "c.tif", seed=2)
    (src / "notes.txt").write_text("not an image, ignored by the folder walk")
    before = _hashes(src)
    code, err = _run(["colorize", src, "-o", tmp_path / "out", "--weights", tiny_weights, "--render-size", "64", "-q"], capsys)
    assert code == 0, err
    assert (tmp_path / "out" / "a.jpg").is_file()
    assert (tmp_path / "out" / "sub" / "b.png").is_file()
    assert (tmp_path / "out" / "sub" / "deeper" / "c.tif").is_file()
    assert Image.open(tmp_path / "out" / "sub" / "b.png").mode == "RGB"
    assert "3 colourised, 0 skipped" in err
    assert _hashes(src) == before


def test_bad_files_reported_and_batch_goes_on(tmp_path, tiny_weights, capsys):
    src = tmp_path / "in"
    _photo(src / "good1.jpg")
    _photo(src / "good2.png", seed=3)
    (src / "empty.jpg").write_bytes(b"")
    (src / "text.png").write_text("hello")
    whole = _photo(tmp_path / "whole.jpg", size=(64, 64)).read_bytes()
    (src / "truncated.jpg").write_bytes(whole[: len(whole) // 2])
    before = _hashes(src)
    code, err = _run(["colorize", src, "-o", tmp_path / "out", "--weights", tiny_weights, "--render-size", "64", "-q"], capsys)
    assert code == 1
    lines = [l for l in err.splitlines() if l.startswith("error:")]
    assert len(lines) == 3, err
    for name in ("empty.jpg", "text.png", "truncated.jpg"):
        assert any(name in l for l in lines), (name, err)
    assert "Traceback" not in err
    assert (tmp_path / "out" / "good1.jpg").is_file() and (tmp_path / "out" / "good2.png").is_file()
    assert "2 colourised, 0 skipped (already done), 3 failed" in err
    assert _hashes(src) == before


def test_rerun_skips_done_and_overwrite_redoes(tmp_path, tiny_weights, capsys):
    src = _photo(tmp_path / "one.png")
    out = tmp_path / "out"
    args = ["colorize", src, "-o", out, "--weights", tiny_weights, "--render-size", "64", "-q"]
    assert _run(args, capsys)[0] == 0
    mtime = (out / "one.png").stat().st_mtime_ns
    code, err = _run(args, capsys)
    assert code == 0 and "0 colourised, 1 skipped" in err
    assert (out / "one.png").stat().st_mtime_ns == mtime
    code, err = _run(args + ["--overwrite"], capsys)
    assert code == 0 and "1 colourised" in err


def test_compare_writes_side_by_side(tmp_path, tiny_weights, capsys):
    src = _photo(tmp_path / "p.png", size=(40, 32))
    code, _ = _run(["colorize", src, "-o", tmp_path / "out", "--weights", tiny_weights, "--render-size", "64", "--compare", "-q"], capsys)
    assert code == 0
    cmp_img = Image.open(tmp_path / "out" / "p_compare.png")
    assert cmp_img.size == (80, 32)
    assert Image.open(tmp_path / "out" / "p.png").size == (40, 32)


@pytest.mark.parametrize("extra", [[], ["--overwrite"], ["--format", "png", "--compare"]])
def test_output_folder_equal_to_an_input_folder_is_refused(tmp_path, tiny_weights, capsys, monkeypatch, extra):
    # Without --overwrite this used to skip every photo as "already done" and exit 0.
    _photo(tmp_path / "photos" / "p.png")
    _photo(tmp_path / "photos" / "q.jpg", seed=1)
    before = _hashes(tmp_path / "photos")
    monkeypatch.chdir(tmp_path)
    # The same folder spelled differently ("photos" and "./photos/") is still the same folder.
    code, err = _run(["colorize", "photos", "-o", "./photos/", "--weights", tiny_weights, "-q", *extra], capsys)
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("colorgan: error: ") and "input folder" in lines[0], err
    assert _hashes(tmp_path / "photos") == before  # same bytes, and nothing added


def test_output_path_equal_to_an_input_file_is_refused(tmp_path, tiny_weights, capsys):
    # A file named on the command line can sit where another input's output would go.
    photos, out = tmp_path / "photos", tmp_path / "out"
    _photo(photos / "p.png")
    done = _photo(out / "p.png", seed=1)
    before = done.read_bytes()
    code, err = _run(["colorize", photos, done, "-o", out, "--weights", tiny_weights, "--overwrite", "-q"], capsys)
    assert code == 2, err
    assert err.count("\n") == 1 and "would overwrite this input" in err and "p.png" in err, err
    assert done.read_bytes() == before and sorted(p.name for p in out.iterdir()) == ["p.png"]
    # Another format takes the output off the input: allowed.
    code, err = _run(["colorize", done, "-o", out, "--format", "jpg", "--weights", tiny_weights, "--render-size", "64", "-q"], capsys)
    assert code == 0, err
    assert done.read_bytes() == before and (out / "p.jpg").is_file()


def test_output_inside_input_folder_is_not_read_back(tmp_path, tiny_weights, capsys):
    # Allowed (README): OUTDIR is left out of the walk, so re-runs never colourise earlier outputs.
    src = tmp_path / "photos"
    _photo(src / "p.png")
    before = _hashes(src)
    args = ["colorize", src, "-o", src / "colour", "--weights", tiny_weights, "--render-size", "64", "--compare", "-q"]
    assert _run(args, capsys)[0] == 0
    assert sorted(p.name for p in (src / "colour").iterdir()) == ["p.png", "p_compare.png"]
    code, err = _run(args, capsys)
    assert code == 0 and "0 colourised, 1 skipped" in err
    code, err = _run(args + ["--overwrite"], capsys)
    assert code == 0 and "1 colourised, 0 skipped" in err
    assert sorted(p.name for p in (src / "colour").iterdir()) == ["p.png", "p_compare.png"]
    assert {k: v for k, v in _hashes(src).items() if not k.startswith("colour")} == before


def test_sixteen_bit_png_gives_sixteen_bit_output(tmp_path, tiny_weights, capsys):
    h, w = 32, 40
    data = (np.linspace(0, 65535, h * w).reshape(h, w)).astype(np.uint16)
    p = tmp_path / "scan16.png"
    Image.fromarray(data).save(p)  # uint16 -> mode I;16
    code, err = _run(["colorize", p, "-o", tmp_path / "out", "--weights", tiny_weights, "--render-size", "64", "-q"], capsys)
    assert code == 0, err
    from colorgan.io import load_image

    out = load_image(tmp_path / "out" / "scan16.png")
    assert out.bit_depth == 16 and out.rgb.shape == (h, w, 3)


def test_format_conversion(tmp_path, tiny_weights, capsys):
    src = _photo(tmp_path / "p.bmp")
    code, _ = _run(["colorize", src, "-o", tmp_path / "out", "--weights", tiny_weights, "--format", "png", "--render-size", "64", "-q"], capsys)
    assert code == 0 and (tmp_path / "out" / "p.png").is_file()


def test_missing_input_is_reported(tmp_path, tiny_weights, capsys):
    good = _photo(tmp_path / "p.png")
    code, err = _run(["colorize", tmp_path / "nope.jpg", good, "-o", tmp_path / "out", "--weights", tiny_weights, "--render-size", "64", "-q"], capsys)
    assert code == 1 and "nope.jpg" in err
    assert (tmp_path / "out" / "p.png").is_file()


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--render-size", "10"], "render-size"),
        (["--device", "nonsense"], "device"),
        (["--weights", "/does/not/exist.safetensors"], "no such weights file"),
    ],
)
def test_usage_errors_exit_2(tmp_path, capsys, tiny_weights, extra, message):
    src = _photo(tmp_path / "p.png")
    args = ["colorize", src, "-o", tmp_path / "out"] + (["--weights", tiny_weights] if "--weights" not in extra else []) + extra
    with pytest.raises(SystemExit) as e:
        code = main([str(a) for a in args])
        raise SystemExit(code)
    assert e.value.code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out" / "p.png").exists()


def test_no_default_model_says_so(tmp_path, capsys, monkeypatch):
    from colorgan.models import hub

    monkeypatch.setattr(hub, "shipped_weights_path", lambda name="default": None)
    src = _photo(tmp_path / "p.png")
    code, err = _run(["colorize", src, "-o", tmp_path / "out"], capsys)
    assert code == 2
    assert "no 'default' model is installed" in err and "--weights" in err


@pytest.mark.integration
def test_console_script_entry_point(tmp_path, tiny_weights):
    """The real `python -m colorgan` process: exit codes and messages as a user sees them."""
    src = _photo(tmp_path / "p.png")
    (tmp_path / "bad.jpg").write_bytes(b"\x00" * 10)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).parents[1] / "src"), env.get("PYTHONPATH", "")])
    r = subprocess.run(
        [sys.executable, "-m", "colorgan", "colorize", str(src), str(tmp_path / "bad.jpg"), "-o", str(tmp_path / "out"),
         "--weights", str(tiny_weights), "--render-size", "64"],
        capture_output=True, text=True, env=env, timeout=120,
    )
    assert r.returncode == 1, r.stderr
    assert "bad.jpg" in r.stderr and "Traceback" not in r.stderr
    assert (tmp_path / "out" / "p.png").is_file()
    r = subprocess.run([sys.executable, "-m", "colorgan", "--version"], capture_output=True, text=True, env=env, timeout=60)
    assert r.returncode == 0 and "colorgan" in r.stdout


@pytest.mark.parametrize("suffix", [".png", ".tif", ".bmp", ".webp"])
def test_output_file_keeps_input_luminance(tmp_path, tiny_weights, capsys, suffix):
    """L of the written 8-bit file equals L of the input file (mean |dL| < 0.5)."""
    import torch

    from colorgan import color
    from colorgan.io import load_image

    src = _photo(tmp_path / f"p{suffix}", size=(64, 48), seed=4, **({"lossless": True} if suffix == ".webp" else {}))
    code, err = _run(["colorize", src, "-o", tmp_path / "out", "--weights", tiny_weights, "--render-size", "64", "-q"], capsys)
    assert code == 0, err
    a = load_image(src).rgb
    b = load_image(tmp_path / "out" / src.name).rgb
    assert np.abs(b[..., 0] - b[..., 2]).max() > 0.01  # coloured
    La = color.rgb_to_l(torch.from_numpy(a).permute(2, 0, 1).double())
    Lb = color.rgb_to_l(torch.from_numpy(b).permute(2, 0, 1).double())
    assert (La - Lb).abs().mean() < 0.5


def test_infinite_count_is_a_usage_error_not_a_traceback(tmp_path, capsys):
    from colorgan.cli import main

    with pytest.raises(SystemExit) as e:
        main(["colorize", str(tmp_path), "-o", str(tmp_path / "out"), "--threads", "inf"])
    assert e.value.code == 2
    assert "not a number: 'inf'" in capsys.readouterr().err


def _subparsers(parser):
    """(prog, parser) of every subcommand, nested ones (``study prepare``) too."""
    import argparse

    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield sub.prog, sub
                yield from _subparsers(sub)


def test_every_option_of_every_subcommand_is_in_the_readme():
    """A newcomer reads the README, not --help: an option missing there does not exist for them."""
    from colorgan.cli import build_parser

    readme = (Path(__file__).parents[1] / "README.md").read_text()
    missing = []
    for prog, sub in _subparsers(build_parser()):
        for action in sub._actions:
            longs = [o for o in action.option_strings if o.startswith("--") and o != "--help"]
            if longs and not any(o in readme for o in longs):
                missing.append(f"{prog} {longs[0]}")
    assert not missing, f"options not documented in README.md: {missing}"
