"""Inference speed: PyTorch vs ONNX Runtime backends, CPU tuning options, ECCV16 for scale, memory.

Everything is measured in this one run, on this machine, side by side:

1. CPU tuning of the network alone (the shipped model at the render shape of a 1 MP 4:3 photo,
   render size 256 -> 256x352): each option against the previous default, with interleaved
   repetitions (A, B, C, A, B, C, ...) and medians, so background load hits all of them alike;
   plus the colour difference each option makes (Delta E*ab against PyTorch float32; L is the
   input's by construction, so Delta E*ab is the whole colour difference at render size).
2. Folder throughput: ``--n`` photos of 1 MP through ``colorize_paths`` (the core of
   ``colorgan colorize``: pipelined decode / network / encode) with the PyTorch backend, the
   ONNX backend and the sequential runner; and Zhang et al.'s ECCV16 network (random weights,
   timing only) at the same render size, both inside ColorGAN's pipeline (isolates the
   network) and in the authors' released demo pipeline (scikit-image colour conversions, one
   photo at a time). Each configuration runs in its own process (peak memory is that
   process's maximum RSS; model loading and one warm-up call are not timed), and the folder is
   processed in two halves, interleaved across the configurations.
3. Single-photo latency (decode -> colourise -> JPEG encode, one thread of work) and the
   network-only latency of ColorGAN vs ECCV16.
4. ``--many`` tiny files through the pipelined runner, printing RSS as it goes (steady memory).

    python benchmarks/speed.py --n 200 --many 10000        # the full run (several minutes on 2 cores)
    python benchmarks/speed.py --n 40 --many 0 --skip-compile   # a quick look

Numbers are printed, never asserted: they depend on the machine and on what else runs on it.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))  # common.py, eccv16_arch beside this file

from common import PHOTO_SIZE, make_photos, peak_rss_mb  # noqa: E402
from eccv16_arch import ECCV16ForColorizer  # noqa: E402

from colorgan import io as cio  # noqa: E402
from colorgan.batch import FileJob, run_jobs  # noqa: E402
from colorgan.cli import colorize_paths  # noqa: E402
from colorgan.export import plain_model  # noqa: E402
from colorgan.models.hub import load_model, resolve_weights  # noqa: E402
from colorgan.onnx_backend import OnnxModel  # noqa: E402
from colorgan.pipeline import Colorizer, render_shape  # noqa: E402

TORCH = "ColorGAN, PyTorch backend, pipelined"
ONNX = "ColorGAN, ONNX backend, pipelined"
ONNX_SEQ = "ColorGAN, ONNX backend, sequential (workers 0)"
ECCV = "ECCV16 net in ColorGAN's pipeline, pipelined"
DEMO = "ECCV16, authors' demo pipeline (skimage)"
TORCH_T2 = "ColorGAN, PyTorch backend, pipelined, 2 threads"
ONNX_T2 = "ColorGAN, ONNX backend, pipelined, 2 threads"
BASELINE = "torch fp32 NCHW, SN per call (previous default)"


# ------------------------------------------------------------------------------------ helpers


def rss_mb() -> float:
    """Resident set size of this process now, in MiB (Linux /proc; 0 elsewhere)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:
        return 0.0


def interleaved(fns: dict[str, Callable[[], object]], reps: int, warmup: int = 1) -> dict[str, list[float]]:
    """Run each function ``warmup`` times, then ``reps`` rounds of A, B, C...; seconds per call."""
    for f in fns.values():
        for _ in range(warmup):
            f()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(reps):
        for k, f in fns.items():
            t = time.perf_counter()
            f()
            times[k].append(time.perf_counter() - t)
    return times


def delta_e(ab_norm: torch.Tensor, ref_norm: torch.Tensor) -> tuple[float, float]:
    """(99th percentile, max) of Delta E*ab = |ab - ab_ref| in ab units (same L)."""
    d = ((ab_norm.float() - ref_norm.float()) * 110.0).square().sum(1).sqrt().flatten()
    return float(torch.quantile(d, 0.99)), float(d.max())


def photo_l_norm(path: Path, render_size: int) -> torch.Tensor:
    """The normalised L the network sees for this photo: ``(1, 1, h, w)`` in [-1, 1]."""
    from colorgan import color

    loaded = cio.load_image(path)
    L = color.rgb_to_l(torch.from_numpy(loaded.rgb).permute(2, 0, 1)[None])
    h, w = render_shape(L.shape[-2], L.shape[-1], render_size)
    L = torch.nn.functional.interpolate(L, size=(h, w), mode="bilinear", align_corners=False, antialias=True)
    return color.normalize_l(L)


# ------------------------------------------------------------------------------------ 1. tuning


def tuning(model: torch.nn.Module, onnx_path: Path, x: torch.Tensor, tmp: Path, reps: int, compile_: bool) -> None:
    print(f"\n== 1. CPU tuning: the network alone, input {tuple(x.shape)}, medians of {reps} interleaved rounds ==")
    base = copy.deepcopy(model).eval()  # NCHW, spectral norm (SN) recomputed per call: the previous default
    plain = plain_model(model)
    cl = plain_model(model).to(memory_format=torch.channels_last)
    cl_sn = copy.deepcopy(model).eval().to(memory_format=torch.channels_last)
    bf = plain_model(model).to(torch.bfloat16).to(memory_format=torch.channels_last)
    bf_sn = copy.deepcopy(model).eval().to(torch.bfloat16).to(memory_format=torch.channels_last)
    xcl = x.contiguous(memory_format=torch.channels_last)
    ort1 = OnnxModel(onnx_path, threads=1, providers=["CPUExecutionProvider"])
    ort2 = OnnxModel(onnx_path, threads=2, providers=["CPUExecutionProvider"])
    variants: dict[str, Callable[[], torch.Tensor]] = {}

    def threads(n: int, f: Callable[[], torch.Tensor]) -> Callable[[], torch.Tensor]:
        def run() -> torch.Tensor:
            old = torch.get_num_threads()
            torch.set_num_threads(n)
            try:
                return f()
            finally:
                torch.set_num_threads(old)

        return run

    variants[BASELINE] = threads(1, lambda: base(x))
    variants["torch fp32 NCHW, SN folded"] = threads(1, lambda: plain(x))
    variants["torch fp32 channels_last, SN per call"] = threads(1, lambda: cl_sn(xcl))
    variants["torch fp32 channels_last, SN folded (new default)"] = threads(1, lambda: cl(xcl))
    variants["torch fp32 channels_last, SN folded, 2 threads"] = threads(2, lambda: cl(xcl))
    variants["torch bf16 autocast, channels_last, SN folded"] = threads(1, lambda: _autocast(cl, xcl))
    variants["torch bf16 weights, channels_last, SN per call"] = threads(1, lambda: bf_sn(xcl.bfloat16()).float())
    variants["torch bf16 weights, cl, SN folded (--precision bf16)"] = threads(1, lambda: bf(xcl.bfloat16()).float())
    variants["onnxruntime fp32, 1 thread"] = lambda: ort1(x)
    variants["onnxruntime fp32, 2 threads"] = lambda: ort2(x)
    notes: dict[str, str] = {}
    try:
        from onnxruntime.quantization import QuantType, quantize_dynamic

        for label, qt in (("int8", QuantType.QInt8), ("uint8", QuantType.QUInt8)):
            qpath = tmp / f"model-{label}.onnx"
            with contextlib.redirect_stdout(None), _quiet():
                quantize_dynamic(str(onnx_path), str(qpath), weight_type=qt)
            q = OnnxModel(qpath, threads=1, providers=["CPUExecutionProvider"])
            variants[f"onnxruntime dynamic quantisation, {label} weights"] = lambda q=q: q(x)
    except Exception as e:  # noqa: BLE001 - reported, the rest of the benchmark goes on
        notes["quantisation"] = f"failed: {type(e).__name__}: {str(e)[:100]}"
    if compile_:
        notes.update(_compile_variants(model, xcl, variants, threads))

    with torch.inference_mode():
        ref = base(x)
        errors = {k: delta_e(f(), ref) for k, f in variants.items()}
        times = interleaved(variants, reps)
    t0 = statistics.median(times[BASELINE])
    print(f"{'option':<58}{'ms':>8}{'speed-up':>10}{'dE99':>8}{'dEmax':>8}")
    for k, v in times.items():
        m = statistics.median(v)
        print(f"{k:<58}{m * 1e3:8.1f}{t0 / m:9.2f}x{errors[k][0]:8.3f}{errors[k][1]:8.3f}")
    for k, v in notes.items():
        print(f"{k}: {v}")
    print("dE99/dEmax: 99th percentile / max of Delta E*ab against torch fp32 (ab units; 2.3 is a just-noticeable difference)")


def _autocast(m: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.autocast("cpu", dtype=torch.bfloat16):
        return m(x).float()


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    import logging
    import warnings

    level = logging.getLogger().level
    logging.getLogger().setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logging.getLogger().setLevel(level)


def _compile_variants(model, xcl, variants, threads) -> dict[str, str]:
    """torch.compile (inductor): the whole model, and, if that fails, all but the blur upsamplers."""
    notes = {}
    # Every compiled block is its own graph; the default limit (8) would silently leave the rest eager.
    torch._dynamo.config.cache_size_limit = 64
    if hasattr(torch._dynamo.config, "recompile_limit"):
        torch._dynamo.config.recompile_limit = 64
    whole = plain_model(model).to(memory_format=torch.channels_last)
    t = time.perf_counter()
    try:
        with _quiet(), torch.no_grad():
            c = torch.compile(whole, dynamic=False)
            c(xcl)
        notes["torch.compile (whole model)"] = f"compiled in {time.perf_counter() - t:.0f} s"
        variants["torch.compile, fp32 channels_last"] = threads(1, lambda: c(xcl))
        return notes
    except Exception as e:  # noqa: BLE001
        notes["torch.compile (whole model)"] = f"FAILS: {type(e).__name__}: {str(e).splitlines()[0][:110]}"
    torch._dynamo.reset()
    part = plain_model(model).to(memory_format=torch.channels_last)
    t = time.perf_counter()
    try:
        with _quiet(), torch.no_grad():
            # The blurred PixelShuffle upsamplers (replicate pad + avg pool) are what inductor
            # cannot compile; everything else (encoder, convolutions) is compiled.
            part.encoder = torch.compile(part.encoder, dynamic=False)
            part.middle = torch.compile(part.middle, dynamic=False)
            part.refine = torch.compile(part.refine, dynamic=False)
            for b in part.blocks:
                b.conv1 = torch.compile(b.conv1, dynamic=False)
                b.conv2 = torch.compile(b.conv2, dynamic=False)
            part(xcl)
        notes["torch.compile (all but upsamplers)"] = f"compiled in {time.perf_counter() - t:.0f} s"
        variants["torch.compile all but upsamplers, fp32 cl"] = threads(1, lambda: part(xcl))
    except Exception as e:  # noqa: BLE001
        notes["torch.compile (all but upsamplers)"] = f"FAILS: {type(e).__name__}: {str(e).splitlines()[0][:110]}"
    return notes


# ------------------------------------------------------------------------------------ 2. folders


def folder_runs(configs: list[str], files: list[Path], tmp: Path, common: dict) -> dict[str, dict]:
    """Each configuration over the same photos in its own process, in two interleaved halves."""
    import json
    import subprocess

    halves = [files[: len(files) // 2], files[len(files) // 2 :]]
    stats = {k: {"seconds": 0.0, "done": 0, "failed": 0, "peak": 0.0} for k in configs}
    for h, part in enumerate(halves):
        if not part:
            continue
        listing = tmp / f"half{h}.txt"
        listing.write_text("\n".join(str(f) for f in part))
        for k in configs:
            spec = dict(common, config=k, files=str(listing), out=str(tmp / f"out-{configs.index(k)}"))
            r = subprocess.run([sys.executable, __file__, "--child", json.dumps(spec)], capture_output=True, text=True)
            if r.returncode != 0:
                raise SystemExit(f"child run {k!r} failed:\n{r.stderr[-3000:]}")
            res = json.loads(r.stdout.strip().splitlines()[-1])
            stats[k]["seconds"] += res["seconds"]
            stats[k]["done"] += res["done"]
            stats[k]["failed"] += res["failed"]
            stats[k]["peak"] = max(stats[k]["peak"], res["maxrss_mb"])
    return stats


def child(spec_json: str) -> None:
    """One folder run in this (fresh) process; prints a JSON line with seconds, counts and max RSS."""
    import json

    spec = json.loads(spec_json)
    if spec["config"] in (TORCH_T2, ONNX_T2):
        spec["threads"] = 2
    torch.set_num_threads(spec["threads"])
    files = [Path(f) for f in Path(spec["files"]).read_text().splitlines()]
    out = Path(spec["out"])
    cfg = spec["config"]
    render = spec["render"]
    if cfg == DEMO:
        from eccv16_arch import ECCV16, colorize_file_like_demo

        torch.manual_seed(0)
        net = ECCV16().eval()
        out.mkdir(parents=True, exist_ok=True)
        with torch.no_grad():
            net(torch.zeros(1, 1, render, render))  # warm-up, not timed
        t = time.perf_counter()
        for f in files:
            colorize_file_like_demo(net, str(f), str(out / f.name), size=render)
        seconds, done, failed = time.perf_counter() - t, len(files), 0
    else:
        if "ONNX" in cfg:
            c = Colorizer.from_pretrained(spec["onnx"], device="cpu", threads=spec["threads"])
        elif "ECCV16" in cfg:
            c = Colorizer(ECCV16ForColorizer(), device="cpu")
        else:
            c = Colorizer.from_pretrained(spec["weights"], device="cpu")  # what `colorgan colorize` runs
        h, w = render_shape(PHOTO_SIZE[1], PHOTO_SIZE[0], render)
        c.predict_ab(torch.full((1, 1, h, w), 50.0), render)  # warm-up, not timed
        workers = 0 if "sequential" in cfg else spec["workers"]
        t = time.perf_counter()
        s = colorize_paths(files, out, colorizer=c, render_size=render, overwrite=True, progress=False,
                           report=lambda m: None, batch_size=spec["batch"], workers=workers)
        seconds, done, failed = time.perf_counter() - t, s.done, s.failed
    print(json.dumps({"seconds": seconds, "done": done, "failed": failed, "maxrss_mb": peak_rss_mb()}))


def many_files(colorizer: Colorizer, n: int, tmp: Path, render: int) -> None:
    print(f"\n== 4. steady memory: {n} small files (64x48 PNG) through the pipelined runner, render {render} ==")
    src = tmp / "many"
    src.mkdir()
    g = (np.random.default_rng(0).random((48, 64)) * 255).astype(np.uint8)
    img = Image.fromarray(g, "L")
    for i in range(n):
        img.save(src / f"f{i:05d}.png", compress_level=1)
    jobs = [FileJob(src / f"f{i:05d}.png", tmp / "many-out" / f"f{i:05d}.png") for i in range(n)]
    marks: list[tuple[int, float]] = []
    step = max(1, n // 10)

    def on_file(job: FileJob, ok: bool) -> None:
        on_file.count += 1  # type: ignore[attr-defined]
        if on_file.count % step == 0:  # type: ignore[attr-defined]
            marks.append((on_file.count, rss_mb()))  # type: ignore[attr-defined]

    on_file.count = 0  # type: ignore[attr-defined]
    t = time.perf_counter()
    res = run_jobs(jobs, colorizer, render_size=render, batch_size=8, workers=2, on_file=on_file, report=lambda m: None)
    dt = time.perf_counter() - t
    print(f"{res.done} done, {res.failed} failed in {dt:.0f} s ({res.done / dt:.0f} files/s)")
    print("files done : " + " ".join(f"{c:>6}" for c, _ in marks))
    print("RSS MiB    : " + " ".join(f"{m:6.0f}" for _, m in marks))
    if len(marks) >= 2:
        print(f"RSS growth from file {marks[0][0]} to {marks[-1][0]}: {marks[-1][1] - marks[0][1]:+.1f} MiB")


# ------------------------------------------------------------------------------------ main


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=200, help="photos of 1 MP in the folder runs (default 200)")
    ap.add_argument("--many", type=int, default=10000, help="small files for the steady-memory run (0: skip)")
    ap.add_argument("--render-size", type=int, default=256)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--workers", type=int, default=2, help="reader and writer threads of the pipelined runs")
    ap.add_argument("--threads", type=int, default=1, help="intra-op threads of the network in the folder runs")
    ap.add_argument("--reps", type=int, default=7, help="interleaved rounds of the latency and tuning timings")
    ap.add_argument("--weights", default=None, help="weights to time (default: the shipped model)")
    ap.add_argument("--skip-tuning", action="store_true")
    ap.add_argument("--skip-compile", action="store_true", help="leave torch.compile out of the tuning table")
    ap.add_argument("--skip-eccv16", action="store_true")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.child)
        return

    import subprocess

    torch.set_num_threads(args.threads)
    load = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, load average {load[0]:.1f} "
          f"(other processes share these cores; all timings below are from this one run)")
    import onnxruntime

    print(f"torch {torch.__version__}, onnxruntime {onnxruntime.__version__}, python {platform.python_version()}")
    weights = resolve_weights(args.weights)
    model = load_model(weights)
    print(f"model: {weights.name}, {sum(p.numel() for p in model.parameters()) / 1e6:.1f} M parameters")

    with tempfile.TemporaryDirectory(prefix="colorgan-speed-") as tmp_name:
        tmp = Path(tmp_name)
        onnx_path = tmp / "model.onnx"
        t = time.perf_counter()
        # Through the real command (default exporter, with its onnxruntime check), in its own process.
        r = subprocess.run([sys.executable, "-m", "colorgan", "export", "--format", "onnx", "-o", str(onnx_path),
                            "--weights", str(weights)], capture_output=True, text=True)
        if r.returncode != 0:
            raise SystemExit(f"colorgan export failed: {r.stderr}")
        print(f"colorgan export --format onnx (dynamo exporter + onnxruntime check): {time.perf_counter() - t:.0f} s, "
              f"{onnx_path.stat().st_size / 1e6:.1f} MB")
        src = tmp / "photos"
        t = time.perf_counter()
        files = make_photos(src, max(args.n, 2))
        print(f"made {len(files)} grey JPEG photos of {PHOTO_SIZE[0]}x{PHOTO_SIZE[1]} ({PHOTO_SIZE[0] * PHOTO_SIZE[1] / 1e6:.2f} MP) "
              f"in {time.perf_counter() - t:.0f} s")
        x = photo_l_norm(files[0], args.render_size)

        if not args.skip_tuning:
            tuning(model, onnx_path, x, tmp, args.reps, not args.skip_compile)
            torch.set_num_threads(args.threads)

        rh, rw = render_shape(PHOTO_SIZE[1], PHOTO_SIZE[0], args.render_size)
        configs = [TORCH, ONNX, ONNX_SEQ] + ([] if args.threads == 2 else [TORCH_T2, ONNX_T2])
        configs += [] if args.skip_eccv16 else [ECCV, DEMO]
        print(f"\n== 2. folder of {len(files)} photos at 1 MP, render {args.render_size} ({rh}x{rw}; the demo pipeline: "
              f"{args.render_size}x{args.render_size}), batch {args.batch_size}, {args.workers} reader + {args.workers} "
              f"writer threads, network threads {args.threads}, each in its own process ==")
        common = {"render": args.render_size, "batch": args.batch_size, "workers": args.workers, "threads": args.threads,
                  "onnx": str(onnx_path), "weights": str(weights)}
        stats = folder_runs(configs, files, tmp, common)
        print(f"{'configuration':<50}{'photos/s':>10}{'s/photo':>9}{'peak RSS MiB':>14}{'failed':>8}")
        for k, st in stats.items():
            rate = st["done"] / st["seconds"] if st["seconds"] else float("nan")
            print(f"{k:<50}{rate:10.2f}{1 / rate:9.3f}{st['peak']:14.0f}{st['failed']:8d}")

        print(f"\n== 3. latency: one photo end to end (decode, colourise, JPEG encode) in one thread, median of {args.reps} ==")
        torch_c = Colorizer.from_pretrained(weights, device="cpu")
        onnx_c = Colorizer.from_pretrained(onnx_path, device="cpu", threads=args.threads)
        lat_c = {"ColorGAN PyTorch": torch_c, "ColorGAN ONNX": onnx_c}
        eccv = None
        if not args.skip_eccv16:
            eccv = Colorizer(ECCV16ForColorizer(), device="cpu", name="eccv16")
            lat_c["ECCV16 in ColorGAN's pipeline"] = eccv
        lat_fns = {k: _latency_fn(c, files[0], args.render_size) for k, c in lat_c.items()}
        if eccv is not None:
            from eccv16_arch import colorize_file_like_demo

            demo_out = str(tmp / "demo-latency.jpg")
            lat_fns["ECCV16, authors' demo pipeline"] = lambda: colorize_file_like_demo(eccv.model.net, str(files[0]), demo_out,
                                                                                      size=args.render_size)
        lat = {k: statistics.median(v) for k, v in interleaved(lat_fns, args.reps).items()}
        for k, v in lat.items():
            print(f"{k:<34}{v * 1e3:8.0f} ms")
        xcl = x.contiguous(memory_format=torch.channels_last)
        net_fns = {"ColorGAN PyTorch": lambda: torch_c.model(xcl), "ColorGAN ONNX": lambda: onnx_c.model(x)}
        if eccv is not None:
            net_fns["ECCV16 PyTorch"] = lambda: eccv.model(xcl)
        with torch.inference_mode():
            net = {k: statistics.median(v) for k, v in interleaved(net_fns, args.reps).items()}
        print(f"network alone at {rh}x{rw}:")
        for k, v in net.items():
            print(f"{k:<34}{v * 1e3:8.0f} ms")

        if eccv is not None:
            print("\nColorGAN vs Zhang et al. ECCV16 (random weights: timing only) at the same render size:")
            for ref in (ECCV, DEMO):
                e_rate = stats[ref]["done"] / stats[ref]["seconds"]
                for k in (TORCH, ONNX):
                    ours = stats[k]["done"] / stats[k]["seconds"]
                    print(f"  folder photos/s, {k.split(', ')[1]:<16} vs {ref}: {ours / e_rate:5.1f}x")
            for ref in ("ECCV16 in ColorGAN's pipeline", "ECCV16, authors' demo pipeline"):
                print(f"  single-photo latency vs {ref}: ONNX {lat[ref] / lat['ColorGAN ONNX']:5.1f}x, "
                      f"PyTorch {lat[ref] / lat['ColorGAN PyTorch']:5.1f}x")
            print(f"  network alone: ONNX {net['ECCV16 PyTorch'] / net['ColorGAN ONNX']:5.1f}x, "
                  f"PyTorch {net['ECCV16 PyTorch'] / net['ColorGAN PyTorch']:5.1f}x")
            print("  (issue #9's target: 15x end to end)")

        if args.many > 0:
            many_files(torch_c, args.many, tmp, 64)
    print(f"\npeak RSS of the main benchmark process: {peak_rss_mb():.0f} MiB")


def _latency_fn(c: Colorizer, photo: Path, render: int) -> Callable[[], object]:
    def run() -> bytes:
        loaded = cio.load_image(photo)
        rgb = c.colorize_loaded(loaded, render)
        return cio.encode_image(rgb, format="JPEG", quality=95)

    return run


if __name__ == "__main__":
    t0 = time.time()
    main()
    if "--child" not in sys.argv:
        print(f"total {time.time() - t0:.0f} s")
