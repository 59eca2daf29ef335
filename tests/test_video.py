"""``colorgan video``: timing, audio, luminance, scene cuts, temporal stability, resume, bad input.

Every clip is made here from still "photos" (smooth procedural grey images): a pan across the
first, a cut, a zoom into the second, with a mono AAC track. The tiny random model of conftest
colours them; frames are 64 x 48 so each run takes a fraction of a second.
"""

from __future__ import annotations

import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

av = pytest.importorskip("av")
cv2 = pytest.importorskip("cv2")

from colorgan.cli import main  # noqa: E402
from colorgan.video.core import VideoOptions, colorize_video, luminance, work_dir_for  # noqa: E402
from colorgan.video.media import OUTPUT_FORMATS, frame_to_rgb, probe  # noqa: E402
from colorgan.video.temporal import TemporalConfig, TemporalStabilizer, warping_error  # noqa: E402

W, H = 64, 48
FPS = 12
CUT = 10  # first frame of the second shot
N_FRAMES = 18


def _photo(seed: int, size: tuple[int, int] = (120, 160)) -> np.ndarray:
    """A smooth grey 'photo' with structure at several scales (uint8, H x W)."""
    rng = np.random.default_rng(seed)
    img = np.zeros(size, np.float32)
    for sigma, amp in ((12, 1.0), (4, 0.5), (1.5, 0.25)):
        img += amp * cv2.GaussianBlur(rng.standard_normal(size).astype(np.float32), (0, 0), sigma) * sigma
    img = (img - img.min()) / (img.max() - img.min())
    # Different tonal ranges, as two different photographs would have.
    lo, hi = (20, 200) if seed % 2 == 0 else (90, 250)
    return (lo + img * (hi - lo)).astype(np.uint8)


def _shot_frames() -> list[np.ndarray]:
    """A pan across photo A, then (cut) a zoom into photo B: N_FRAMES grey frames of H x W."""
    a, b = _photo(0), _photo(1)
    frames = []
    for i in range(CUT):  # pan: 4 px per frame to the right, 1 px down
        frames.append(a[10 + i : 10 + i + H, 8 + 4 * i : 8 + 4 * i + W])
    for i in range(N_FRAMES - CUT):  # zoom: the window shrinks by 3 % per frame around a fixed centre
        s = 1.0 - 0.03 * i
        ch, cw = int(round(2 * H * s)), int(round(2 * W * s))
        y0, x0 = 60 - ch // 2, 80 - cw // 2
        frames.append(cv2.resize(b[y0 : y0 + ch, x0 : x0 + cw], (W, H), interpolation=cv2.INTER_AREA))
    return frames


def make_clip(
    path: Path,
    *,
    pts: list[int] | None = None,
    time_base: Fraction = Fraction(1, 15360),
    audio: str | None = "aac",
    rotation: int = 0,
    sar: Fraction | None = None,
    t0: float = 0.0,
    fmt: str | None = None,
    crf: int = 10,
) -> list[np.ndarray]:
    """Write the test clip (H.264, yuv420p) with an optional mono audio track; return its grey frames.

    ``t0`` starts every stream that many seconds late (as MPEG-TS from a camera does).
    """
    frames = _shot_frames()
    if pts is None:
        step = int(1 / (FPS * time_base))
        pts = [i * step for i in range(len(frames))]
    pts = [p + round(t0 / time_base) for p in pts]
    with av.open(str(path), "w", format=fmt) as out:
        vs = out.add_stream("libx264", rate=FPS, options={"crf": str(crf), "bf": "0"})
        vs.width, vs.height, vs.pix_fmt = W, H, "yuv420p"
        vs.codec_context.time_base = time_base
        if sar:
            vs.codec_context.sample_aspect_ratio = sar
        if rotation:
            vs.set_display_rotation(rotation)
        vs.metadata["language"] = "fra"
        out.metadata["title"] = "test clip"
        aus = None
        if audio:
            aus = out.add_stream(audio, rate=16000)
            aus.layout = "mono"
        for f, p in zip(frames, pts):
            frame = av.VideoFrame.from_ndarray(np.repeat(f[..., None], 3, axis=2), format="rgb24")
            frame = frame.reformat(format="yuv420p", dst_colorspace="itu601", dst_color_range="MPEG")
            frame.pts, frame.time_base = p, time_base
            for packet in vs.encode(frame):
                out.mux(packet)
        for packet in vs.encode(None):
            out.mux(packet)
        if aus is not None:
            seconds = len(frames) / FPS
            t = np.arange(int(16000 * seconds)) / 16000
            samples = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)[None]
            for s in range(0, samples.shape[1], 1024):
                af = av.AudioFrame.from_ndarray(samples[:, s : s + 1024], format="flt", layout="mono")
                af.sample_rate, af.pts = 16000, s + round(t0 * 16000)
                for packet in aus.encode(af):
                    out.mux(packet)
            for packet in aus.encode(None):
                out.mux(packet)
    return frames


def _decode(path: Path) -> tuple[list[np.ndarray], list[int]]:
    info = probe(path)
    with av.open(str(path)) as c:
        frames = [(f.pts, frame_to_rgb(f, info)) for f in c.decode(c.streams.video[0])]
    return [x for _, x in frames], [p for p, _ in frames]


def probe_rate(path: Path) -> int:
    with av.open(str(path)) as c:
        return c.streams.audio[0].rate


def _packets(path: Path, kind: str) -> list[tuple[float | None, bytes]]:
    """(time in ms, bytes) of every packet of the first stream of a kind (times: containers differ in time base)."""
    with av.open(str(path)) as c:
        streams = getattr(c.streams, kind)
        return [(None if p.pts is None else round(float(p.pts * p.time_base) * 1000, 1), bytes(p)) for p in c.demux(streams[0]) if p.size]


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("clip") / "clip.mp4"
    make_clip(path)
    return path


def _opts(**kw) -> VideoOptions:
    base = dict(render_size=64, batch_size=3, segment_frames=4)
    base.update(kw)
    return VideoOptions(**base)


# ------------------------------------------------------------------------------------ the whole path


def test_output_keeps_frames_timing_audio_and_luminance(clip, tmp_path, tiny_colorizer):
    out = tmp_path / "colour.mp4"
    records = []
    # crf 0 (lossless H.264) so that the file check below measures our pipeline, not the codec.
    result = colorize_video(clip, out, colorizer=tiny_colorizer, options=_opts(crf=0), on_frame=records.append)
    assert result.frames == N_FRAMES and not result.skipped and result.resumed_frames == 0
    assert not work_dir_for(out).exists() and [p.name for p in tmp_path.iterdir()] == ["colour.mp4"]

    src, dst = probe(clip), probe(out)
    assert (dst.width, dst.height, dst.rate, dst.frames) == (W, H, src.rate, N_FRAMES)
    assert (dst.matrix, dst.full_range, dst.colorspace) == (src.matrix, src.full_range, src.colorspace)
    assert dst.duration == pytest.approx(src.duration, abs=1.0 / FPS)
    in_frames, in_pts = _decode(clip)
    out_frames, out_pts = _decode(out)
    assert out_pts == in_pts

    # Audio: the same packets, byte for byte (copied, not re-encoded).
    assert _packets(out, "audio") == _packets(clip, "audio")
    with av.open(str(clip)) as a, av.open(str(out)) as b:
        sa, sb = a.streams.audio[0], b.streams.audio[0]
        assert (sb.codec_context.name, sb.rate, sb.channels) == (sa.codec_context.name, sa.rate, sa.channels) == ("aac", 16000, 1)
        assert b.duration == pytest.approx(a.duration, abs=0.07)

    # In memory: each frame handed to the encoder has the input frame's L up to the rounding of
    # RGB to 8 bits: at most half a level in each channel, so at most half the largest L step
    # between consecutive grey levels (about 0.2; measured 0.20).
    grey = np.repeat(np.arange(256, dtype=np.uint8)[None, :, None], 3, axis=2)
    half_step = 0.5 * float(np.diff(luminance(grey)[0]).max())
    for rec, frame in zip(records, in_frames):
        np.testing.assert_array_equal(rec.L, luminance(frame))
        assert np.abs(luminance(rec.rgb) - rec.L).max() <= half_step + 1e-4
    # The files: decoded output vs decoded input, per frame. With lossless H.264 what is left is
    # 8-bit YUV rounding and 4:2:0 chroma subsampling of the (smooth) colour; measured here: mean
    # 0.16, 99th percentile 0.44, max 0.61 L units. (At the default crf 18: mean 0.75, p99 2.4.)
    for a, b in zip(in_frames, out_frames):
        dL = np.abs(luminance(a) - luminance(b))
        assert dL.mean() < 0.3 and np.percentile(dL, 99) < 1.0 and dL.max() < 2.0, (dL.mean(), np.percentile(dL, 99))
    # And the colour is really there (the random tiny model is colourful).
    chroma = np.mean([np.abs(f.astype(int)[..., 0] - f.astype(int)[..., 2]).mean() for f in out_frames])
    assert chroma > 3


def _still_clip(path: Path, n: int = 3) -> list[np.ndarray]:
    """n frames of a 160 x 120 pan, larger than render size 64 (so L is shrunk, antialiased)."""
    a = _photo(2, (140, 200))
    frames = [np.ascontiguousarray(a[i : i + 120, 4 * i : 4 * i + 160]) for i in range(n)]
    with av.open(str(path), "w") as out:
        vs = out.add_stream("libx264", rate=FPS, options={"crf": "10"})
        vs.width, vs.height, vs.pix_fmt = 160, 120, "yuv420p"
        for i, f in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(np.repeat(f[..., None], 3, axis=2), format="rgb24").reformat(format="yuv420p")
            frame.pts = i
            for p in vs.encode(frame):
                out.mux(p)
        for p in vs.encode(None):
            out.mux(p)
    return frames


@pytest.mark.parametrize("size", ["upscaled", "downscaled"])
def test_a_frame_colourises_exactly_as_the_same_still(clip, tmp_path, tiny_colorizer, monkeypatch, size):
    import torch

    from colorgan import color
    from colorgan.pipeline import render_shape

    src = clip  # 64 x 48 frames: render size 64 enlarges them (to 96 x 64)
    if size == "downscaled":
        src = tmp_path / "big.mkv"
        _still_clip(src)
    # What the network sees, and what the stabiliser's flow sees: the same L, resized once.
    seen_net: list[np.ndarray] = []
    seen_flow: list[np.ndarray] = []
    hook = tiny_colorizer.model.register_forward_pre_hook(lambda mod, args: seen_net.extend(args[0].float().contiguous().numpy()))
    real_step = TemporalStabilizer.step

    def step(self, L, ab):
        seen_flow.append(np.array(L))
        return real_step(self, L, ab)

    monkeypatch.setattr(TemporalStabilizer, "step", step)
    records = []
    # Batch 1, as the still: a batch of 3 changes the convolutions' float rounding (measured up
    # to 6e-6 in ab), which is not what this test is about. Temporal 0: the raw prediction.
    colorize_video(src, tmp_path / "v.mkv", colorizer=tiny_colorizer, options=_opts(temporal=0.0, batch_size=1, end=0.25), on_frame=records.append)
    hook.remove()
    in_frames, _ = _decode(src)
    assert len(records) == len(seen_net) == len(seen_flow) == 3
    for rec, frame, net_in, flow_L in zip(records, in_frames, seen_net, seen_flow):
        assert flow_L.shape == render_shape(*frame.shape[:2], 64)
        np.testing.assert_array_equal(color.normalize_l(torch.from_numpy(flow_L)[None].clamp(0, 100)).numpy(), net_in)
        # The still path on the decoded frame: the same ab, the same 8-bit picture.
        prep = tiny_colorizer.prepare(frame)
        ab = tiny_colorizer.predict_ab_batch([prep.L], 64)[0][0].numpy()
        np.testing.assert_array_equal(rec.ab_raw, ab)
        np.testing.assert_array_equal(rec.rgb, tiny_colorizer.colorize(frame, render_size=64))


def test_scene_cut_is_detected(clip, tmp_path, tiny_colorizer):
    result = colorize_video(clip, tmp_path / "c.mkv", colorizer=tiny_colorizer, options=_opts())
    assert result.scene_cuts == [CUT]


def test_interrupted_run_resumes_to_the_same_file(clip, tmp_path, tiny_colorizer):
    whole = tmp_path / "whole.mp4"
    colorize_video(clip, whole, colorizer=tiny_colorizer, options=_opts())

    out = tmp_path / "resumed.mp4"

    def crash(rec):
        if rec.index == 9:  # mid-segment: segments 0 and 1 (frames 0-7) are finished
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        colorize_video(clip, out, colorizer=tiny_colorizer, options=_opts(), on_frame=crash)
    assert not out.exists()
    work = work_dir_for(out)
    assert sorted(p.name for p in work.glob("seg_*")) == ["seg_00000.nut", "seg_00001.nut"]

    seen = []
    result = colorize_video(clip, out, colorizer=tiny_colorizer, options=_opts(), on_frame=lambda r: seen.append(r.index))
    assert result.resumed_frames == 8 and result.frames == N_FRAMES
    assert seen == list(range(8, N_FRAMES))
    assert result.scene_cuts == [CUT]
    assert not work.exists()
    assert _packets(out, "video") == _packets(whole, "video")
    assert _packets(out, "audio") == _packets(whole, "audio")


def test_changed_settings_do_not_reuse_unfinished_work(clip, tmp_path, tiny_colorizer):
    out = tmp_path / "o.mp4"

    def crash(rec):
        if rec.index == 5:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        colorize_video(clip, out, colorizer=tiny_colorizer, options=_opts(), on_frame=crash)
    notes = []
    result = colorize_video(clip, out, colorizer=tiny_colorizer, options=_opts(temporal=0.0), report=notes.append)
    assert result.resumed_frames == 0 and result.frames == N_FRAMES
    assert any("different input or settings" in n for n in notes)


def test_variable_frame_rate_rotation_aspect_and_metadata_kept(tmp_path, tiny_colorizer):
    src = tmp_path / "vfr.mov"
    tb = Fraction(1, 90000)
    steps = [7500, 7500, 3750, 15000, 7500, 11250]  # irregular frame durations
    pts = [0]
    for i in range(N_FRAMES - 1):
        pts.append(pts[-1] + steps[i % len(steps)])
    make_clip(src, pts=pts, time_base=tb, rotation=90, sar=Fraction(4, 3))
    out = tmp_path / "vfr-colour.mov"
    records = []
    colorize_video(src, out, colorizer=tiny_colorizer, options=_opts(), on_frame=records.append)
    _, in_pts = _decode(src)
    _, out_pts = _decode(out)
    assert np.diff(out_pts).tolist() == np.diff(in_pts).tolist() == [steps[i % len(steps)] for i in range(N_FRAMES - 1)]
    info = probe(out)
    assert info.rotation == 90 and info.sar == Fraction(4, 3)
    assert info.metadata.get("title") == "test clip" and info.stream_metadata.get("language") == "fra"
    # The network saw the frames upright (rotated by the display matrix): W x H became H x W.
    assert records[0].ab.shape[1] > records[0].ab.shape[2]


def test_odd_frame_size_is_kept(tmp_path, tiny_colorizer):
    src = tmp_path / "odd.mkv"
    with av.open(str(src), "w") as out:
        vs = out.add_stream("libx264", rate=FPS, options={"crf": "10"})
        vs.width, vs.height, vs.pix_fmt = W - 1, H - 1, "yuv444p"  # 4:2:0 cannot hold odd sizes
        for i, f in enumerate(_shot_frames()[:6]):
            frame = av.VideoFrame.from_ndarray(np.repeat(f[: H - 1, : W - 1, None], 3, axis=2), format="rgb24").reformat(format="yuv444p")
            frame.pts = i
            for p in vs.encode(frame):
                out.mux(p)
        for p in vs.encode(None):
            out.mux(p)
    out = tmp_path / "odd-colour.mp4"
    records = []
    colorize_video(src, out, colorizer=tiny_colorizer, options=_opts(), on_frame=records.append)
    info = probe(out)
    assert (info.width, info.height, info.frames) == (W - 1, H - 1, 6)
    frames, _ = _decode(out)
    assert np.abs(luminance(frames[0]) - records[0].L).mean() < 1.0


def test_start_end_colourise_a_part(clip, tmp_path, tiny_colorizer):
    out = tmp_path / "part.mp4"
    result = colorize_video(clip, out, colorizer=tiny_colorizer, options=_opts(start=0.5, end=1.0))
    assert result.frames == 6  # frames at 6/12 ... 11/12 s
    _, pts = _decode(out)
    info = probe(out)
    assert pts[0] * info.time_base == 0 and len(pts) == 6
    with av.open(str(out)) as c:
        a = c.streams.audio[0]
        assert float(a.duration * a.time_base) == pytest.approx(0.5, abs=0.07)


def test_audio_the_container_cannot_hold_is_reencoded(tmp_path, tiny_colorizer):
    src = tmp_path / "opus.mkv"
    make_clip(src, audio="libopus")
    out = tmp_path / "opus.avi"  # AVI cannot hold Opus
    notes = []
    result = colorize_video(src, out, colorizer=tiny_colorizer, options=_opts(), report=notes.append)
    assert any("re-encoded as libmp3lame" in n for n in result.streams)
    with av.open(str(out)) as c:
        a = c.streams.audio[0]
        assert a.codec_context.name.startswith("mp3") and a.channels == 1 and a.rate == probe_rate(src)
        assert len(list(c.decode(c.streams.video[0]))) == N_FRAMES


@pytest.mark.parametrize("suffix,audio", [(".avi", "libmp3lame"), (".mkv", "aac"), (".mov", "aac"), (".ts", "aac")])
def test_other_input_containers(tmp_path, tiny_colorizer, suffix, audio):
    src = tmp_path / f"in{suffix}"
    t0 = 10.0 if suffix == ".ts" else 0.0  # a camera's MPEG-TS starts anywhere: the output starts at 0
    make_clip(src, audio=audio, time_base=Fraction(1, FPS) if suffix == ".avi" else Fraction(1, 15360), t0=t0)
    out = tmp_path / "out.mp4"
    result = colorize_video(src, out, colorizer=tiny_colorizer, options=_opts(segment_frames=240))
    assert result.frames == N_FRAMES and result.scene_cuts == [CUT] and len(result.streams) == 1
    frames, pts = _decode(out)
    assert len(frames) == N_FRAMES and probe(out).rate == FPS

    def payload(packet: tuple) -> tuple:
        # MPEG-TS carries AAC with ADTS headers, which MP4 does not use: FFmpeg's muxer drops
        # them (aac_adtstoasc); the coded audio must be the same bytes.
        t, b = packet
        if b[0] == 0xFF and b[1] & 0xF6 == 0xF0:
            b = b[7 if b[1] & 1 else 9 :]
        return t, b

    assert [p[1] for p in map(payload, _packets(out, "audio"))] == [p[1] for p in map(payload, _packets(src, "audio"))]
    # Every stream moved back by the input's start (audio and video alike: sync kept).
    shift = 1000 * probe(src).container_start
    assert shift == pytest.approx(1000 * t0 - 64 if t0 else 0, abs=1)  # (the AAC encoder starts 1024 samples early)
    out_times = [p[0] + shift for p in _packets(out, "audio")]
    assert out_times == pytest.approx([p[0] for p in _packets(src, "audio")], abs=0.1)
    src_info, out_info = probe(src), probe(out)
    # (MP4 writes a late first frame as an edit list in milliseconds: within 1 ms.)
    assert 1000 * float(pts[0] * out_info.time_base) + shift == pytest.approx(1000 * float(src_info.start_pts * src_info.time_base), abs=1.0)


def test_existing_output_is_skipped_and_input_never_overwritten(clip, tmp_path, tiny_colorizer):
    out = tmp_path / "o.mp4"
    out.write_bytes(b"keep me")
    assert colorize_video(clip, out, colorizer=tiny_colorizer, options=_opts()).skipped
    assert out.read_bytes() == b"keep me"
    colorize_video(clip, out, colorizer=tiny_colorizer, options=_opts(), overwrite=True)
    assert probe(out).frames == N_FRAMES
    from colorgan.errors import OutputError

    with pytest.raises(OutputError, match="input"):
        colorize_video(clip, clip, colorizer=tiny_colorizer, options=_opts(), overwrite=True)


# ------------------------------------------------------------------------------------ temporal


def _flickering_predictions(frames: list[np.ndarray], seed: int = 0) -> list[np.ndarray]:
    """ab 'predictions' that follow the content (a function of L) plus per-frame flicker."""
    rng = np.random.default_rng(seed)
    out = []
    for f in frames:
        L = luminance(np.repeat(f[..., None], 3, axis=2))
        base = np.stack([30 * np.sin(L / 15.0), 30 * np.cos(L / 20.0)])
        flicker = rng.normal(0, 8, size=(2, 1, 1)) + cv2.GaussianBlur(rng.normal(0, 6, size=(H, W)).astype(np.float32), (0, 0), 4)[None]
        out.append((base + flicker).astype(np.float32))
    return out


def test_stabiliser_halves_flicker_without_greying():
    frames = _shot_frames()[:CUT]
    Ls = [luminance(np.repeat(f[..., None], 3, axis=2)) for f in frames]
    preds = _flickering_predictions(frames)
    stab = TemporalStabilizer(TemporalConfig(strength=0.8))
    outs = [stab.step(L, ab)[0] for L, ab in zip(Ls, preds)]
    raw_err, _ = warping_error(preds, Ls)
    err, _ = warping_error(outs, Ls)
    assert err < 0.6 * raw_err, (err, raw_err)
    chroma = lambda seq: float(np.mean([np.hypot(a[0], a[1]).mean() for a in seq]))  # noqa: E731
    assert chroma(outs) > 0.9 * chroma(preds)


def test_stabiliser_passthrough_reset_and_state_roundtrip():
    frames = _shot_frames()
    Ls = [luminance(np.repeat(f[..., None], 3, axis=2)) for f in frames]
    preds = _flickering_predictions(frames)
    off = TemporalStabilizer(TemporalConfig(strength=0.0))
    for L, ab in zip(Ls, preds):
        np.testing.assert_array_equal(off.step(L, ab)[0], ab)

    a = TemporalStabilizer()
    outs, infos = zip(*[a.step(L, ab) for L, ab in zip(Ls, preds)])
    assert [i for i, info in enumerate(infos) if info.cut] == [0, CUT]
    np.testing.assert_array_equal(outs[CUT], preds[CUT])  # a cut starts from the prediction
    assert not np.array_equal(outs[CUT + 1], preds[CUT + 1])

    b = TemporalStabilizer()
    for L, ab in zip(Ls[:5], preds[:5]):
        b.step(L, ab)
    c = TemporalStabilizer()
    c.load_state_dict(b.state_dict())
    for L, ab in zip(Ls[5:], preds[5:]):
        np.testing.assert_array_equal(b.step(L, ab)[0], c.step(L, ab)[0])


def test_cut_between_shots_with_the_same_histogram_is_found_by_the_flow():
    frames = _shot_frames()[:4]
    # Then the same photo turned upside down, panning back: the first frame after the cut has
    # exactly the tones of the last one before it, but another picture.
    turned = [np.ascontiguousarray(f[::-1, ::-1]) for f in frames[::-1]]
    Ls = [luminance(np.repeat(f[..., None], 3, axis=2)) for f in frames + turned]
    stab = TemporalStabilizer()
    infos = [stab.step(L, np.zeros((2, H, W), np.float32))[1] for L in Ls]
    assert infos[4].hist_distance == 0.0
    assert [(i, info.reason) for i, info in enumerate(infos) if info.cut] == [(0, "first"), (4, "flow")]
    assert min(info.reliable for info in infos[1:4] + infos[5:]) > 0.5


def test_luminance_matches_colour_maths():
    import torch

    from colorgan import color

    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (8, 9, 3), dtype=np.uint8)
    ref = color.rgb_to_l(torch.from_numpy(rgb).permute(2, 0, 1).float() / 255)[0].numpy()
    np.testing.assert_allclose(luminance(rgb), ref, atol=1e-4)
    grey = np.repeat(rgb[..., :1], 3, axis=2)
    ref = color.rgb_to_l(torch.from_numpy(grey).permute(2, 0, 1).float() / 255)[0].numpy()
    np.testing.assert_allclose(luminance(grey), ref, atol=1e-4)


# ------------------------------------------------------------------------------------ the command


def _run(capsys, *argv: str) -> tuple[int, str]:
    code = main(["video", *argv])
    return code, capsys.readouterr().err


def test_cli_colourises(clip, tmp_path, tiny_weights, capsys):
    out = tmp_path / "cli.mp4"
    code, err = _run(capsys, str(clip), "-o", str(out), "--weights", str(tiny_weights), "--render-size", "64", "--device", "cpu")
    assert code == 0, err
    assert f"{N_FRAMES} frames colourised" in err and "aac 16000 Hz mono: copied" in err
    assert probe(out).frames == N_FRAMES
    code, err = _run(capsys, str(clip), "-o", str(out), "--weights", str(tiny_weights), "--no-temporal")
    assert code == 0 and "skipped" in err


def test_cli_ctrl_c_keeps_work_and_the_same_command_continues(clip, tmp_path, tiny_weights, capsys, monkeypatch):
    import colorgan.video.core as core

    real = core._colour_batch
    calls = []

    def interrupted(*args, **kwargs):
        calls.append(1)
        # Batches of 3 never cross segments of 4: [0-2] [3] [4-6] [7] [8-10]...; the 5th call
        # comes after frames 0-7 are in finished segments.
        if len(calls) == 5:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    out = tmp_path / "film.mkv"
    argv = [str(clip), "-o", str(out), "--weights", str(tiny_weights), "--render-size", "64", "--batch-size", "3", "--segment-frames", "4"]
    monkeypatch.setattr(core, "_colour_batch", interrupted)
    code, err = _run(capsys, *argv)
    assert code == 130 and "run the same command again" in err and not out.exists()
    assert work_dir_for(out).is_dir()
    monkeypatch.setattr(core, "_colour_batch", real)
    code, err = _run(capsys, *argv)
    assert code == 0 and f"{N_FRAMES} frames colourised, 8 of them from an interrupted run" in err, err
    assert len(_decode(out)[0]) == N_FRAMES and not work_dir_for(out).exists()


def _bad_inputs(tmp_path: Path, clip: Path) -> dict[str, tuple[Path, str]]:
    text = tmp_path / "notes.mp4"
    text.write_text("this is not a video\n" * 50)
    audio_only = tmp_path / "sound.m4a"
    with av.open(str(audio_only), "w", format="mp4") as out:
        s = out.add_stream("aac", rate=16000)
        s.layout = "mono"
        for i in range(10):
            f = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="flt", layout="mono")
            f.sample_rate, f.pts = 16000, i * 1024
            for p in s.encode(f):
                out.mux(p)
    no_frames = tmp_path / "empty.avi"  # (MP4 and MOV drop a track without samples when read)
    with av.open(str(no_frames), "w") as out:
        s = out.add_stream("libx264", rate=12)
        s.width, s.height = W, H
        out.start_encoding()  # a header, a video stream, and not one frame
    # A Matroska file with garbage in the middle: the demuxer stops there without an error.
    mkv = tmp_path / "full.mkv"
    make_clip(mkv, crf=0)
    data = bytearray(mkv.read_bytes())
    mid = len(data) // 3
    data[mid : mid + 4000] = np.random.default_rng(0).integers(0, 256, 4000, dtype=np.uint8).tobytes()
    corrupt_mkv = tmp_path / "corrupt.mkv"
    corrupt_mkv.write_bytes(bytes(data))
    mp4 = tmp_path / "full.mp4"
    make_clip(mp4, crf=0)
    data = bytearray(mp4.read_bytes())
    data[len(data) // 2 : len(data) // 2 + 3000] = bytes(3000)  # zeros over frames in the middle
    corrupt_mp4 = tmp_path / "corrupt.mp4"
    corrupt_mp4.write_bytes(bytes(data))
    truncated = tmp_path / "truncated.mp4"
    truncated.write_bytes(clip.read_bytes()[: clip.stat().st_size // 2])
    return {
        "text": (text, "not a video file"),
        "audio only": (audio_only, "no video stream"),
        "no frames": (no_frames, "no frames"),
        "corrupt mkv": (corrupt_mkv, "corrupt"),
        "corrupt mp4": (corrupt_mp4, "corrupt video data after"),
        "truncated mp4": (truncated, "not a video file"),
        "missing": (tmp_path / "nope.mp4", "no such file"),
        "folder": (tmp_path, "is a directory"),
    }


def test_cli_bad_inputs_fail_cleanly(clip, tmp_path, tiny_weights, capsys):
    (tmp_path / "in").mkdir()
    bad = _bad_inputs(tmp_path / "in", clip)
    outdir = tmp_path / "out"
    outdir.mkdir()
    for name, (path, reason) in bad.items():
        out = outdir / f"{path.stem}.mp4"
        code, err = _run(capsys, str(path), "-o", str(out), "--weights", str(tiny_weights), "--render-size", "64", "-q")
        lines = err.strip().splitlines()
        assert code == 1, (name, err)
        assert len(lines) == 1 and lines[0].startswith(f"colorgan: error: {path}: ") and reason in lines[0], (name, err)
    assert list(outdir.iterdir()) == []  # no output, no temporary file, no work folder


def test_cli_usage_errors(clip, tmp_path, tiny_weights, capsys):
    w = ["--weights", str(tiny_weights)]
    code, err = _run(capsys, str(clip), "-o", str(tmp_path / "x.gif"), *w)
    assert code == 2 and "unknown video format '.gif'" in err and all(s in err for s in OUTPUT_FORMATS)
    with pytest.raises(SystemExit) as e:
        main(["video", str(clip), "-o", str(tmp_path / "x.mp4"), "--temporal", "1.5"])
    assert e.value.code == 2
    with pytest.raises(SystemExit) as e:
        main(["video", str(clip), "-o", str(tmp_path / "x.mp4"), "--temporal", "0.5", "--no-temporal"])
    assert e.value.code == 2
    code, err = _run(capsys, str(clip), "-o", str(tmp_path / "x.mp4"), "--start", "1:02", "--end", "0:30", *w)
    assert code == 2 and "must be after" in err
    assert _run(capsys, str(clip), "-o", str(tmp_path / "x.mp4"), "--weights", str(tmp_path / "none.safetensors"))[0] == 2
    assert not (tmp_path / "x.mp4").exists()


def test_parse_time():
    from colorgan.video.cli import parse_time

    assert parse_time("90") == 90 and parse_time("1:30") == 90 and parse_time("01:01:30.5") == 3690.5
    assert parse_time(".25") == 0.25
    for bad in ("-1", "1:75", "abc", "1::2"):
        with pytest.raises(Exception):
            parse_time(bad)


@pytest.mark.parametrize("suffix", list(OUTPUT_FORMATS))
def test_every_output_suffix_writes_its_container(clip, tmp_path, tiny_weights, capsys, suffix):
    # The CLI takes its suffixes from the same table as colorize_video: each one it accepts
    # must give a playable file in the container the table names.
    out = tmp_path / f"part{suffix.upper() if suffix == '.mkv' else suffix}"  # (suffixes are case-blind)
    code, err = _run(capsys, str(clip), "-o", str(out), "--weights", str(tiny_weights), "--render-size", "64", "--end", "0.25", "-q")
    assert code == 0, err
    with av.open(str(out)) as c:
        assert OUTPUT_FORMATS[suffix] in c.format.name.split(",")
        if OUTPUT_FORMATS[suffix] in ("mp4", "mov"):  # one demuxer reads both: the brand tells them apart
            assert c.metadata.get("major_brand", "").strip() == ("qt" if OUTPUT_FORMATS[suffix] == "mov" else "isom")
        assert len(list(c.decode(c.streams.video[0]))) == 3 and len(c.streams.audio) == 1


@pytest.mark.integration
def test_import_is_light():
    code = "import sys, colorgan.cli; colorgan.cli.build_parser(); print(any(m in sys.modules for m in ('av', 'cv2')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "False"


def test_cli_reference_for_the_clip(clip, tmp_path, tiny_guided_weights, tiny_weights, capsys):
    """--reference: every frame takes the reference's colours where they match; another reference
    (or none) never reuses unfinished work; a grey reference or a model without guidance is refused."""
    from PIL import Image

    ref = tmp_path / "ref.png"
    Image.fromarray((np.random.default_rng(0).random((60, 80, 3)) * 255).astype(np.uint8)).save(ref)
    base = [str(clip), "--weights", str(tiny_guided_weights), "--render-size", "64", "--device", "cpu"]
    auto, guided = tmp_path / "auto.mp4", tmp_path / "ref.mp4"
    assert _run(capsys, base[0], "-o", str(auto), *base[1:])[0] == 0
    code, err = _run(capsys, base[0], "-o", str(guided), *base[1:], "--reference", str(ref))
    assert code == 0, err
    assert probe(guided).frames == N_FRAMES and guided.read_bytes() != auto.read_bytes()
    grey = tmp_path / "grey.png"
    Image.fromarray(np.full((40, 40), 100, np.uint8)).save(grey)
    code, err = _run(capsys, base[0], "-o", str(tmp_path / "g.mp4"), *base[1:], "--reference", str(grey))
    assert code == 2 and "greyscale" in err
    code, err = _run(capsys, base[0], "-o", str(tmp_path / "t.mp4"), "--weights", str(tiny_weights), "--reference", str(ref))
    assert code == 2 and "takes no colour guidance" in err


def test_cdc_and_the_sequence_evaluation_against_true_colour(tmp_path, tiny_guided_weights):
    from PIL import Image

    from colorgan.pipeline import Colorizer
    from colorgan.video.evaluate import cdc, evaluate_sequences

    same = [np.full((8, 8, 3), 100, np.uint8)] * 5
    assert cdc(same) == 0.0
    flicker = [np.full((8, 8, 3), 100 if i % 2 else 200, np.uint8) for i in range(5)]
    # Disjoint histograms at odd distances (JS = ln 2 there), equal ones at even distances.
    assert cdc(flicker) == pytest.approx(np.log(2) / 3)  # the mean over d = 1, 2, 4
    rng = np.random.default_rng(0)
    for seq in ("a", "b"):
        d = tmp_path / "davis" / seq
        d.mkdir(parents=True)
        base = rng.random((48, 64, 3))
        for t in range(6):
            Image.fromarray((np.roll(base, t, axis=1) * 255).astype(np.uint8)).save(d / f"{t:05d}.png")
    cz = Colorizer.from_pretrained(tiny_guided_weights)
    auto = evaluate_sequences(cz, tmp_path / "davis", render_size=64)
    ref = evaluate_sequences(cz, tmp_path / "davis", render_size=64, reference="first")
    assert set(auto["sequences"]) == {"a", "b"} and auto["sequences"]["a"]["frames"] == 6
    for r in (auto, ref):
        assert np.isfinite(r["mean"]["psnr"]) and r["mean"]["cdc"] >= 0 and r["mean"]["warping_error"] >= 0
    assert ref["sequences"]["a"]["psnr_per_frame"] != auto["sequences"]["a"]["psnr_per_frame"]


def test_hints_on_the_first_frame_are_carried_along_the_shot_and_dropped_at_the_cut(clip, tmp_path, tiny_guided_weights):
    import json

    from colorgan.pipeline import Colorizer

    cz = Colorizer.from_pretrained(tiny_guided_weights)
    info = probe(clip)
    hints = tmp_path / "first.json"
    hints.write_text(json.dumps({"points": [{"x": info.width // 3, "y": info.height // 2, "color": "#20d040", "radius": 10},
                                            {"x": 2 * info.width // 3, "y": info.height // 3, "color": "#d02020", "radius": 10}]}))
    runs = {}
    for name, kw in (("auto", {}), ("hints", {"hints": hints})):
        frames = []
        colorize_video(clip, tmp_path / f"{name}.mp4", colorizer=cz, options=VideoOptions(render_size=64, batch_size=4),
                       on_frame=lambda r: frames.append(r), **kw)
        runs[name] = frames
    auto, hinted = runs["auto"], runs["hints"]
    assert len(auto) == len(hinted) == N_FRAMES and hinted[CUT].step.cut
    moved = [float(np.abs(a.ab - h.ab).mean()) for a, h in zip(auto, hinted)]
    assert min(moved[:CUT]) > 0.05  # every frame of the first shot keeps the points' colour
    # The cut drops them: the second shot is automatic (to float rounding: the frames of the
    # batch that holds the cut go through the network one at a time).
    assert max(moved[CUT:]) < 1e-4
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"points": [{"x": 10 * info.width, "y": 1, "color": "#ff0000"}]}))
    from colorgan.errors import ColorGANError

    with pytest.raises(ColorGANError, match="outside"):
        colorize_video(clip, tmp_path / "bad.mp4", colorizer=cz, options=VideoOptions(render_size=64), hints=bad)
