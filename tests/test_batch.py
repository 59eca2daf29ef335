"""The pipelined folder runner, sharding, and `colorgan colorize` under torchrun."""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from colorgan import color
from colorgan.batch import FileJob, parse_shard, run_jobs, shard_from_env, shard_of
from colorgan.cli import colorize_paths, main


def _grey(h: int, w: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    img = 0.5 + 0.3 * np.sin(xx / (3.0 + seed % 5)) * np.cos(yy / 6.0) + rng.normal(0, 0.05, (h, w))
    return (np.clip(img, 0, 1) * 255).astype(np.uint8)


def _folder(root: Path, n: int, sizes=((40, 56), (56, 40), (48, 48), (33, 71))) -> list[Path]:
    """n grey photos of a few sizes (so batches mix render shapes) in PNG, JPEG and TIFF, in two subfolders."""
    from conftest import write_photos

    photos = (_grey(*sizes[i % len(sizes)], i) for i in range(n))
    return write_photos(root, photos, lambda i: f"d{i % 2}/p{i:03d}{('.png', '.jpg', '.tif')[i % 3]}")


def _hashes(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_pipelined_outputs_equal_sequential(tmp_path, tiny_colorizer):
    """Threads + batches of mixed render shapes write the same files as one-at-a-time processing."""
    src = tmp_path / "in"
    _folder(src, 14)
    # A 16-bit PNG and an RGBA PNG: bit depth and alpha travel through the worker threads.
    Image.fromarray((np.linspace(0, 65535, 40 * 56).reshape(40, 56)).astype(np.uint16)).save(src / "d0" / "deep16.png")
    g = _grey(40, 56, 99)
    Image.fromarray(np.dstack([g, g, g, 255 - g]), "RGBA").save(src / "d1" / "alpha.png")
    kw = dict(colorizer=tiny_colorizer, render_size=64, progress=False, compare=True)
    seq = colorize_paths([src], tmp_path / "seq", workers=0, batch_size=1, **kw)
    par = colorize_paths([src], tmp_path / "par", workers=3, batch_size=4, **kw)
    assert seq.done == par.done == 16 and seq.failed == par.failed == 0
    a, b = _hashes(tmp_path / "seq"), _hashes(tmp_path / "par")
    assert len(a) == 32 and a.keys() == b.keys()  # outputs and _compare images
    different = [k for k in a if a[k] != b[k]]
    # Batching must not change results; allow at most a one-level rounding flip in lossless files.
    for k in different:
        x = np.asarray(Image.open(tmp_path / "seq" / k)).astype(int)
        y = np.asarray(Image.open(tmp_path / "par" / k)).astype(int)
        assert np.abs(x - y).max() <= (1 if not k.endswith(".jpg") else 3), k
    # And the same as the Python API's one-image path.
    from colorgan import io as cio

    api = tiny_colorizer.colorize_loaded(cio.load_image(src / "d0" / "p000.png"), 64)
    written = cio.load_image(tmp_path / "par" / "d0" / "p000.png").rgb
    assert np.abs(np.round(api * 255) / 255 - written).max() <= 1 / 255 + 1e-6
    deep = cio.load_image(tmp_path / "par" / "d0" / "deep16.png")
    assert deep.bit_depth == 16
    rgba = np.asarray(Image.open(tmp_path / "par" / "d1" / "alpha.png"))
    assert rgba.shape[2] == 4 and np.array_equal(rgba[..., 3], 255 - g)


def test_errors_are_reported_per_file_and_the_batch_goes_on(tmp_path, tiny_colorizer):
    src = tmp_path / "in"
    good = _folder(src, 6)
    (src / "d0" / "empty.png").write_bytes(b"")
    (src / "d1" / "text.jpg").write_text("not an image")
    whole = good[0].read_bytes()
    (src / "d1" / "cut.png").write_bytes(whole[: len(whole) // 2])
    lines: list[str] = []
    summary = colorize_paths([src], tmp_path / "out", colorizer=tiny_colorizer, render_size=64, progress=False,
                             report=lines.append, workers=2, batch_size=4)
    assert summary.done == 6 and summary.failed == 3
    errors = [l for l in lines if l.startswith("error:")]
    assert len(errors) == 3
    for name in ("empty.png", "text.jpg", "cut.png"):
        assert sum(name in l for l in errors) == 1, (name, errors)
    assert all((tmp_path / "out" / p.relative_to(src)).is_file() for p in good)


def test_write_errors_are_reported_too(tmp_path, tiny_colorizer):
    src = tmp_path / "in"
    paths = _folder(src, 3)
    # An output whose folder is a file cannot be written; the other two still are.
    jobs = [FileJob(p, tmp_path / "out" / p.name) for p in paths]
    (tmp_path / "blocker").write_text("a file, not a folder")
    jobs[1] = FileJob(paths[1], tmp_path / "blocker" / "x.png")
    lines: list[str] = []
    res = run_jobs(jobs, tiny_colorizer, render_size=64, workers=2, report=lines.append)
    assert res.done == 2 and res.failed == 1 and len(lines) == 1 and "blocker" in lines[0]


class _Counting:
    """Wraps a Colorizer and counts images decoded but not yet merged (what sits in memory)."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.alive = 0
        self.peak = 0

    def prepare(self, loaded):
        self.alive += 1
        self.peak = max(self.peak, self.alive)
        return self.inner.prepare(loaded)

    def predict_ab_batch(self, Ls, render_size):
        return self.inner.predict_ab_batch(Ls, render_size)

    def merge(self, L, ab):
        out = self.inner.merge(L, ab)
        self.alive -= 1
        return out


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


@pytest.mark.skipif(not Path("/proc/self/statm").exists(), reason="needs Linux /proc")
def test_memory_stays_flat_over_many_files(tmp_path, tiny_colorizer):
    """300 files: bounded queues keep at most prefetch + batch + writes images alive, and RSS flat."""
    from conftest import write_photos

    src = tmp_path / "in"
    n = 300
    write_photos(src, [Image.fromarray(_grey(96, 128, 0), "L")] * n, "f{i:04d}.png", compress_level=0)
    jobs = [FileJob(src / f"f{i:04d}.png", tmp_path / "out" / f"f{i:04d}.png") for i in range(n)]
    counting = _Counting(tiny_colorizer)
    rss: dict[int, float] = {}

    def on_file(job, ok):
        rss[len(rss)] = _rss_mb()

    res = run_jobs(jobs, counting, render_size=64, batch_size=4, workers=2, prefetch=8, on_file=on_file)
    assert res.done == n and res.failed == 0
    # prefetch (8) + one batch being filled (4) + writes in flight (2 * workers) + one per reader.
    assert counting.peak <= 8 + 4 + 4 + 2, counting.peak
    growth = rss[n - 1] - rss[n // 3]
    # Each image holds ~0.2 MB (float RGB + L); keeping the last 200 would add ~40 MB.
    assert growth < 12, f"RSS grew {growth:.1f} MB from file {n // 3} to {n}"


def test_grey_luminance_fast_path_equals_rgb_to_l(tiny_colorizer):
    from colorgan import io as cio

    rng = np.random.default_rng(0)
    g8 = rng.integers(0, 256, (31, 47), dtype=np.uint8)
    g16 = rng.integers(0, 65536, (31, 47), dtype=np.uint16)
    tinted = np.dstack([g8, g8, (g8 * 0.9).astype(np.uint8)])
    floaty = rng.random((31, 47)).astype(np.float32)  # not integer levels: general path
    for arr in (g8, g16, tinted, floaty):
        loaded = cio.from_array(arr)
        L = tiny_colorizer.prepare(loaded).L
        ref = color.rgb_to_l(torch.from_numpy(loaded.rgb).permute(2, 0, 1)[None])
        assert L.shape == (1, 1, 31, 47)
        assert float((L - ref).abs().max()) < 1e-4


# ------------------------------------------------------------------------------------ sharding


def test_shards_partition_the_list():
    items = list(range(23))
    for n in (1, 2, 3, 7):
        parts = [shard_of(items, k, n) for k in range(n)]
        flat = sorted(x for p in parts for x in p)
        assert flat == items  # every item once, none twice
        assert max(map(len, parts)) - min(map(len, parts)) <= 1
    assert parse_shard("2/5") == (2, 5)
    for bad in ("5/5", "-1/3", "1", "a/b", "1/0"):
        with pytest.raises(ValueError):
            parse_shard(bad)
    assert shard_from_env({}) is None
    assert shard_from_env({"RANK": "1", "WORLD_SIZE": "4"}) == (1, 4)
    with pytest.raises(ValueError):
        shard_from_env({"RANK": "4", "WORLD_SIZE": "4"})


def test_cli_shards_split_a_folder_exactly_once(tmp_path, tiny_weights, capsys):
    src = tmp_path / "in"
    files = _folder(src, 10)
    done: list[str] = []
    for k in range(3):
        code = main(["colorize", str(src), "-o", str(tmp_path / "out"), "--weights", str(tiny_weights),
                     "--render-size", "64", "-q", "-v", "--shard", f"{k}/3"])
        assert code == 0
        err = capsys.readouterr().err
        done += re.findall(rf"\[shard {k}/3\] colourised (\S+) ->", err)
    assert sorted(done) == sorted(str(f) for f in files)


def _torchrun(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).parents[1] / "src"), env.get("PYTHONPATH", "")])
    env["OMP_NUM_THREADS"] = "1"
    env.pop("RANK", None)
    env.pop("WORLD_SIZE", None)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           "-m", "colorgan", "colorize", *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=cwd, timeout=300)


@pytest.mark.integration
def test_torchrun_two_ranks_split_a_folder_and_rerun_finishes_only_missing(tmp_path, tiny_weights):
    """`torchrun --nproc-per-node 2 -m colorgan colorize`: each file done by exactly one rank; a
    re-run after losing some outputs redoes exactly those."""
    src = tmp_path / "in"
    files = _folder(src, 11)
    out = tmp_path / "out"
    args = [str(src), "-o", str(out), "--weights", str(tiny_weights), "--render-size", "64", "-q", "-v"]
    r = _torchrun(args, tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    log = r.stdout + r.stderr
    by_rank = {k: re.findall(rf"\[shard {k}/2\] colourised (\S+) ->", log) for k in (0, 1)}
    assert by_rank[0] and by_rank[1], log  # both ranks worked
    assert not set(by_rank[0]) & set(by_rank[1])  # no file done twice
    assert sorted(by_rank[0] + by_rank[1]) == sorted(str(f) for f in files)  # none missed
    counts = [int(m) for m in re.findall(r"shard \d/2: (\d+) colourised", log)]
    assert sorted(counts) == sorted([len(by_rank[0]), len(by_rank[1])])
    outputs = {f: out / f.relative_to(src) for f in files}
    assert all(o.is_file() for o in outputs.values())

    # A "failure": some outputs are lost; the rest must not be touched by the re-run.
    lost = [files[1], files[4], files[9]]
    for f in lost:
        outputs[f].unlink()
    kept = {f: outputs[f].stat().st_mtime_ns for f in files if f not in lost}
    r = _torchrun(args, tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    redone = re.findall(r"\[shard \d/2\] colourised (\S+) ->", r.stdout + r.stderr)
    assert sorted(redone) == sorted(str(f) for f in lost)
    assert all(outputs[f].is_file() for f in lost)
    assert all(outputs[f].stat().st_mtime_ns == t for f, t in kept.items())
    skipped = sum(int(m) for m in re.findall(r"(\d+) skipped", r.stdout + r.stderr))
    assert skipped == len(files) - len(lost)
