"""Temporal stability and speed of ``colorgan video`` on a clip made from the example photos.

The clip: four shots of the public-domain photos in ``examples/`` (a pan, a zoom-in, a pan with a
slow zoom, a tilt), joined by hard cuts, at 24 frames/s with a mono AAC track. It is colourised
by the shipped model with temporal stabilisation (default strength, and any others asked for)
and with ``--no-temporal``; the output files are decoded and measured:

* warping error (Lai et al., ECCV 2018) on ab: the mean ``||ab_t - warp(ab_{t-1})||`` over the
  pixels where the motion is known, pairs across the known cuts skipped. The motion is the
  ground truth twice over: (1) the exact motion of the virtual camera that made the clip (the
  clip is synthetic, so every pixel's motion is known; valid where it stays inside the frame),
  and (2), as Lai et al. do it, optical flow estimated on the ground-truth luminance (the input
  frames) with OpenCV's Farneback method, kept where it passes a forward-backward check. The
  stabiliser itself uses DIS flow, so neither grades it with its own flow. (2) has a floor of
  its own: on an ab field that is consistent by construction it reads about 0.3, so its ratios
  are closer to 1 than the truth;
* the mean colourfulness of the frames (Hasler and Suesstrunk, ``colorgan.eval.metrics``), to
  see whether stabilisation greys the colour;
* the scene cuts found, against the true ones, and the L-histogram distances behind the default
  scene-cut threshold;
* throughput (frames/s of the whole run: decode, network, stabilisation, merge, encode, mux) at
  480p and 1080p, with the number of CPU threads used, and milliseconds per frame per stage.

    OMP_NUM_THREADS=1 python benchmarks/video_temporal.py                   # about 5 minutes on 1 core
    python benchmarks/video_temporal.py --strengths 0.6,0.8,0.9 --sizes 480 --device cuda

Prints numbers and ratios; never gates on time.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
FPS = 24
# (photo, kind): the shots of the clip, in order.
SHOTS = [
    ("broadway-saratoga-springs-1900s.jpg", "pan"),
    ("detroit-1915.jpg", "zoom"),
    ("keller-chaplin-1919.jpg", "panzoom"),
    ("louis-armstrong-1946.jpg", "tilt"),
]


def _grey_photo(name: str) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(EXAMPLES / name).convert("L"), dtype=np.float32)


def _camera(kind: str, u: float, photo_shape: tuple[int, int], size: tuple[int, int]) -> tuple[float, float, float]:
    """The virtual camera at time u in [0, 1]: (photo pixels per frame pixel, x0, y0 of the crop)."""
    w, h = size
    ph, pw = photo_shape
    fit = min(pw / w, ph / h)  # photo pixels per frame pixel when the crop fills the photo
    if kind == "pan":
        zoom, cx, cy = 0.75, 0.3 + 0.4 * u, 0.5
    elif kind == "zoom":
        zoom, cx, cy = 0.9 - 0.35 * u, 0.5, 0.45
    elif kind == "panzoom":
        zoom, cx, cy = 0.8 - 0.15 * u, 0.4 + 0.2 * u, 0.5
    else:  # tilt
        zoom, cx, cy = 0.6, 0.5, 0.35 + 0.3 * u
    s = fit * zoom
    x0 = float(np.clip(cx * pw - s * w / 2, 0, pw - s * w))
    y0 = float(np.clip(cy * ph - s * h / 2, 0, ph - s * h))
    return s, x0, y0


def _shot(photo: np.ndarray, kind: str, n: int, size: tuple[int, int]) -> tuple[list[np.ndarray], list[tuple[float, float, float]]]:
    """n frames (uint8, H x W) of a virtual camera moving over a photo (sub-pixel, cubic), and the cameras."""
    import cv2

    frames, cams = [], []
    for i in range(n):
        s, x0, y0 = _camera(kind, i / max(1, n - 1), photo.shape, size)
        # Frame pixel (x, y) shows photo point (s x + x0, s y + y0).
        m = np.array([[1 / s, 0, -x0 / s], [0, 1 / s, -y0 / s]], dtype=np.float64)
        frames.append(np.clip(cv2.warpAffine(photo, m, size, flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT), 0, 255).astype(np.uint8))
        cams.append((s, x0, y0))
    return frames, cams


class ExactFlows:
    """The true motion of the synthetic clip: for frame t, the flow to frame t-1 and where it is valid.

    Frame t's pixel (x, y) shows photo point p = (s_t x + x0_t, s_t y + y0_t), which frame t-1
    shows at ((p - x0_{t-1}) / s_{t-1}); valid where that lies inside frame t-1.
    """

    def __init__(self, cams: list[tuple[float, float, float]], size: tuple[int, int]) -> None:
        self.cams, self.size = cams, size

    def __len__(self) -> int:
        return len(self.cams)

    def __getitem__(self, t: int) -> tuple[np.ndarray, np.ndarray] | None:
        if t == 0:
            return None
        w, h = self.size
        (s1, x1, y1), (s0, x0, y0) = self.cams[t], self.cams[t - 1]
        xs, ys = np.meshgrid(np.arange(w, dtype=np.float64), np.arange(h, dtype=np.float64))
        xp, yp = (s1 * xs + x1 - x0) / s0, (s1 * ys + y1 - y0) / s0
        back = np.stack([xp - xs, yp - ys], axis=2).astype(np.float32)
        mask = (xp >= 0) & (xp <= w - 1) & (yp >= 0) & (yp <= h - 1)
        return back, mask


def make_clip(path: Path, height: int, frames_per_shot: int) -> tuple[list[int], ExactFlows]:
    """Write the example clip (H.264 crf 12, mono AAC); return the first frame of each new shot and the true motion."""
    import av

    width = int(round(height * 16 / 9 / 2)) * 2
    cuts, frames, cams = [], [], []
    for k, (name, kind) in enumerate(SHOTS):
        if k:
            cuts.append(len(frames))
        f, c = _shot(_grey_photo(name), kind, frames_per_shot, (width, height))
        frames += f
        cams += c
    with av.open(str(path), "w") as out:
        vs = out.add_stream("libx264", rate=FPS, options={"crf": "12", "threads": "1"})  # 1 thread: the same clip every time
        vs.width, vs.height, vs.pix_fmt = width, height, "yuv420p"
        vs.codec_context.time_base = Fraction(1, FPS)
        aus = out.add_stream("aac", rate=16000)
        aus.layout = "mono"
        for i, f in enumerate(frames):
            vf = av.VideoFrame.from_ndarray(np.repeat(f[..., None], 3, axis=2), format="rgb24")
            vf = vf.reformat(format="yuv420p", dst_colorspace="itu709" if height >= 720 else "itu601", dst_color_range="MPEG")
            vf.pts = i
            vf.time_base = Fraction(1, FPS)
            for p in vs.encode(vf):
                out.mux(p)
        for p in vs.encode(None):
            out.mux(p)
        t = np.arange(int(16000 * len(frames) / FPS)) / 16000
        samples = (0.2 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)[None]
        for s in range(0, samples.shape[1], 1024):
            af = av.AudioFrame.from_ndarray(samples[:, s : s + 1024], format="flt", layout="mono")
            af.sample_rate, af.pts = 16000, s
            for p in aus.encode(af):
                out.mux(p)
        for p in aus.encode(None):
            out.mux(p)
    return cuts, ExactFlows(cams, (width, height))


def decode(path: Path) -> list[np.ndarray]:
    import av

    from colorgan.video.media import frame_to_rgb, probe

    info = probe(path)
    with av.open(str(path)) as c:
        return [frame_to_rgb(f, info) for f in c.decode(c.streams.video[0])]


def measure(inp: Path, out: Path, cuts: list[int], exact: ExactFlows) -> dict[str, float]:
    """Warping errors (true motion; Farneback on the input's L) and mean colourfulness of a colourised file."""
    import torch

    from colorgan import color
    from colorgan.eval.metrics import colourfulness
    from colorgan.video.core import luminance
    from colorgan.video.temporal import warping_error

    L_in = [luminance(f) for f in decode(inp)]
    rgb_out = decode(out)
    abs_ = [color.rgb_to_lab(torch.from_numpy(f).permute(2, 0, 1).float() / 255)[1:].numpy() for f in rgb_out]
    err, _ = warping_error(abs_, L_in, skip=cuts, flows=exact)
    err_fb, _ = warping_error(abs_, L_in, skip=cuts)
    cf = float(np.mean([colourfulness(f.astype(np.float32) / 255) for f in rgb_out]))
    chroma = float(np.mean([np.hypot(a[0], a[1]).mean() for a in abs_]))
    return {"warp": err, "warp_fb": err_fb, "cf": cf, "chroma": chroma}


def run(colorizer, inp: Path, out: Path, strength: float, batch: int, steps: list | None = None) -> tuple[float, object]:
    from colorgan.video.core import VideoOptions, colorize_video

    t = time.perf_counter()
    hook = (lambda rec: steps.append(rec.step)) if steps is not None else None
    result = colorize_video(inp, out, colorizer=colorizer, options=VideoOptions(temporal=strength, batch_size=batch), overwrite=True, on_frame=hook)
    return time.perf_counter() - t, result


def stage_times(colorizer, clip: Path, batch: int) -> str:
    """Milliseconds per frame of each stage on one batch (after a warm-up batch)."""
    import torch
    import torch.nn.functional as F

    from colorgan import color
    from colorgan.video.core import luminance
    from colorgan.pipeline import render_shape
    from colorgan.video.media import EncoderSettings, FrameReader, SegmentWriter, frame_to_rgb, probe
    from colorgan.video.temporal import TemporalStabilizer

    info = probe(clip)
    frames = [f.frame for f in FrameReader(info)][: 2 * batch]
    stab = TemporalStabilizer()
    times: dict[str, float] = {}

    def timed(name: str, fn):
        t = time.perf_counter()
        out = fn()
        times[name] = times.get(name, 0.0) + time.perf_counter() - t
        return out

    encode = 0.0  # over both batches and the flush: x264 holds frames back in its lookahead
    with tempfile.TemporaryDirectory() as tmp, torch.inference_mode():
        writer = SegmentWriter(Path(tmp) / "s.nut", info, EncoderSettings())
        for k in range(2):
            if k == 1:
                encode += times.pop("encode", 0.0)
                times.clear()
            chunk = frames[k * batch : (k + 1) * batch]
            Ls = timed("decode+L", lambda: [luminance(frame_to_rgb(f, info)) for f in chunk])
            L = torch.from_numpy(np.stack(Ls))[:, None].to(colorizer.device)
            # resized once, as colorgan.video.core does: the network and the flow get the same L
            h, w = render_shape(*L.shape[-2:], 256, colorizer.stride)
            Lr = F.interpolate(L, size=(h, w), mode="bilinear", align_corners=False, antialias=h < L.shape[-2]) if (h, w) != L.shape[-2:] else L
            ab = timed("network", lambda: colorizer.predict_ab(Lr, 256).float().cpu())
            small = Lr[:, 0].cpu().numpy()
            ab_s = timed("stabiliser", lambda: [stab.step(small[i], ab[i].numpy())[0] for i in range(len(chunk))])
            rgb = timed("merge (Lab->RGB at full size)", lambda: color.merge_luminance(L, torch.from_numpy(np.stack(ab_s)).to(L.device)))
            rgb8 = (rgb.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
            timed("encode", lambda: [writer.write(rgb8[i], k * batch + i, 1) for i in range(len(chunk))])
        encode += times.pop("encode", 0.0)
        t = time.perf_counter()
        writer.close()
        times["encode"] = (encode + time.perf_counter() - t) / 2  # per batch, like the others
    return ", ".join(f"{name} {1000 * t / batch:.0f}" for name, t in times.items())


def histogram_stats(frames_per_shot: int, height: int, cuts: list[int], clip: Path) -> None:
    """The L-histogram distances behind the scene-cut threshold."""
    import torch

    from colorgan.video.core import luminance
    from colorgan.video.temporal import DEFAULT_SCENE_THRESHOLD, histogram_distance, l_histogram

    def small(L: np.ndarray) -> np.ndarray:
        import torch.nn.functional as F

        x = torch.from_numpy(L)[None, None]
        return F.interpolate(x, size=(256, 448), mode="bilinear", antialias=True)[0, 0].numpy()

    hists = [l_histogram(small(luminance(f))) for f in decode(clip)]
    d = [histogram_distance(hists[i - 1], hists[i]) for i in range(1, len(hists))]
    within = [x for i, x in enumerate(d, start=1) if i not in cuts]
    at_cuts = [d[i - 1] for i in cuts]
    photos = sorted(EXAMPLES.glob("*.jpg"))
    ph = [l_histogram(small(_grey_photo(p.name) / 2.55)) for p in photos]
    pairs = [histogram_distance(ph[i], ph[j]) for i in range(len(ph)) for j in range(i + 1, len(ph))]
    below = sum(x <= DEFAULT_SCENE_THRESHOLD for x in pairs)
    print(
        f"standardised L-histogram distance (threshold {DEFAULT_SCENE_THRESHOLD}): within shots max {max(within):.3f}, "
        f"at the cuts min {min(at_cuts):.3f}; between the {len(photos)} example photos min {min(pairs):.3f}, "
        f"median {np.median(pairs):.3f}, {below} of {len(pairs)} pairs below the threshold (those cuts fall to the flow test)"
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--frames-per-shot", type=int, default=12, help="frames per shot (4 shots; default 12)")
    p.add_argument("--sizes", default="480,1080", help="frame heights to time (default 480,1080)")
    p.add_argument("--strengths", default="", help="extra temporal strengths to measure at 480p, e.g. 0.6,0.9")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--device", default="cpu")
    p.add_argument("--weights", default=None, help="a weights file (default: the shipped model)")
    args = p.parse_args(argv)

    import torch

    from colorgan.pipeline import Colorizer
    from colorgan.video.temporal import DEFAULT_MIN_RELIABLE, DEFAULT_STRENGTH

    colorizer = Colorizer.from_pretrained(args.weights, device=args.device)
    with torch.inference_mode():  # warm-up: the first call builds the convolution kernels
        colorizer.predict_ab(torch.zeros(args.batch_size, 1, 480, 854), 256)
    threads = torch.get_num_threads()
    print(f"model {colorizer.name} on {colorizer.device}; torch threads {threads} (OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}); "
          f"{len(SHOTS)} shots x {args.frames_per_shot} frames at {FPS} frames/s; render size 256; batch {args.batch_size}")
    sizes = [int(s) for s in args.sizes.split(",") if s]
    strengths = [DEFAULT_STRENGTH] + [float(s) for s in args.strengths.split(",") if s and float(s) != DEFAULT_STRENGTH]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for height in sizes:
            clip = tmp / f"clip{height}.mp4"
            cuts, exact = make_clip(clip, height, args.frames_per_shot)
            n = len(SHOTS) * args.frames_per_shot
            if height == min(sizes):
                histogram_stats(args.frames_per_shot, height, cuts, clip)
                secs, base = run(colorizer, clip, tmp / "off.mp4", 0.0, args.batch_size)
                off = measure(clip, tmp / "off.mp4", cuts, exact)
                print(f"{height}p --no-temporal: warping error {off['warp']:.3f} (Farneback flow: {off['warp_fb']:.3f}), colourfulness {off['cf']:.2f}, mean chroma {off['chroma']:.2f}, "
                      f"cuts found {base.scene_cuts} (true {cuts}); {n / secs:.2f} frames/s ({secs:.1f} s)")
                for s in strengths:
                    steps: list = []
                    secs, res = run(colorizer, clip, tmp / f"t{s}.mp4", s, args.batch_size, steps)
                    if s == DEFAULT_STRENGTH:
                        within = [st.reliable for i, st in enumerate(steps) if i and i not in cuts]
                        print(f"flow reliability (cut below {DEFAULT_MIN_RELIABLE}): within shots min {min(within):.3f}, mean {np.mean(within):.3f}; "
                              f"cuts found by {[(i, st.reason) for i, st in enumerate(steps) if st.cut and i]}")
                    m = measure(clip, tmp / f"t{s}.mp4", cuts, exact)
                    ratio = m["warp"] / off["warp"]
                    dcf = (m["cf"] - off["cf"]) / off["cf"] * 100
                    tag = " (default)" if s == DEFAULT_STRENGTH else ""
                    print(f"{height}p --temporal {s}{tag}: warping error {m['warp']:.3f}, ratio to --no-temporal {ratio:.3f} "
                          f"(Farneback flow: {m['warp_fb']:.3f}, ratio {m['warp_fb'] / off['warp_fb']:.3f}) "
                          f"(target <= 0.5: {'met' if ratio <= 0.5 else 'NOT met'}); colourfulness {m['cf']:.2f} ({dcf:+.1f} %, target >= -10 %: "
                          f"{'met' if dcf >= -10 else 'NOT met'}); mean chroma {m['chroma']:.2f}; cuts found {res.scene_cuts}; {n / secs:.2f} frames/s ({secs:.1f} s)")
            else:
                secs, res = run(colorizer, clip, tmp / f"t{height}.mp4", DEFAULT_STRENGTH, args.batch_size)
                print(f"{height}p --temporal {DEFAULT_STRENGTH}: {n / secs:.2f} frames/s ({secs:.1f} s for {n} frames, everything included)")
            print(f"{height}p ms per frame: {stage_times(colorizer, clip, args.batch_size)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
