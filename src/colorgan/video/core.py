"""Colourise a video file: decode -> predict ab -> stabilise over time -> merge with L -> encode.

The run is resumable. Frames are encoded in segments of ``segment_frames`` frames into a work
folder next to the output (``.NAME.colorgan-work/``) with a JSON manifest; after each segment the
temporal state (the last frame's render-size L and ab) is saved too. A new run with the same
input and settings skips the finished segments, seeks to where they end, restores the state and
goes on. Batches never cross a segment boundary and the encoder runs reproducibly, so a resumed
run computes exactly what an uninterrupted one would: the finished file is the same either way. At the end the segments and
the input's audio are remuxed into a hidden temporary file that is renamed to the output only
when complete, and the work folder is removed.

Per frame, as for photos: the full-resolution L of the frame is kept, the network predicts ab at
render size, ab is stabilised (at render size, which is cheap) and upsampled, and the two are
joined by :func:`colorgan.color.merge_luminance`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from colorgan.errors import ImageLoadError, OutputError
from colorgan.io import atomic_write, fsync_directory

from .media import OUTPUT_FORMATS, DecodedFrame, EncoderSettings, FrameReader, SegmentWriter, VideoInfo, frame_to_rgb, mux_output, probe
from .temporal import DEFAULT_SCENE_THRESHOLD, DEFAULT_STRENGTH, StepInfo, TemporalConfig, TemporalStabilizer

__all__ = ["VideoOptions", "VideoResult", "FrameRecord", "colorize_video", "work_dir_for", "luminance"]

log = logging.getLogger(__name__)

_MANIFEST_VERSION = 1


@dataclass(frozen=True)
class VideoOptions:
    """How to colourise a video.

    Attributes:
        render_size: short side the network sees (64-2048).
        temporal: temporal strength in [0, 1): weight of the motion-compensated previous colour
            where the flow is reliable; 0 is frame by frame (``--no-temporal``).
        scene_threshold: L-histogram distance in (0, 1] that marks a scene cut.
        start, end: colourise only frames with ``start <= t < end`` (seconds from the first
            frame); the output then starts at 0.
        batch_size: frames per forward pass.
        segment_frames: frames per resumable segment (each starts with a keyframe).
        crf, preset: libx264 quality (0 lossless, 18 default) and speed preset.
        encoder_threads: libx264 threads; 1 (default) is reproducible (see
            :class:`~colorgan.video.media.EncoderSettings`), 0 lets x264 choose (faster on a GPU
            machine, where the encoder can become the bottleneck).
    """

    render_size: int = 256
    temporal: float = DEFAULT_STRENGTH
    scene_threshold: float = DEFAULT_SCENE_THRESHOLD
    start: float | None = None
    end: float | None = None
    batch_size: int = 4
    segment_frames: int = 240
    crf: int = 18
    preset: str = "medium"
    encoder_threads: int = 1

    def __post_init__(self) -> None:
        from colorgan.pipeline import MAX_RENDER_SIZE, MIN_RENDER_SIZE

        if not MIN_RENDER_SIZE <= int(self.render_size) <= MAX_RENDER_SIZE:
            raise ValueError(f"render_size must be in [{MIN_RENDER_SIZE}, {MAX_RENDER_SIZE}], got {self.render_size}")
        TemporalConfig(strength=self.temporal, scene_threshold=self.scene_threshold)  # validates both
        if self.start is not None and (self.start < 0 or not math.isfinite(self.start)):
            raise ValueError(f"start must be a time >= 0, got {self.start}")
        if self.end is not None and (self.end <= (self.start or 0.0) or not math.isfinite(self.end)):
            raise ValueError(f"end must be after start, got start={self.start} end={self.end}")
        if self.batch_size < 1 or self.segment_frames < 1:
            raise ValueError("batch_size and segment_frames must be positive")
        if not 0 <= self.crf <= 51:
            raise ValueError(f"crf must be in [0, 51], got {self.crf}")
        if self.encoder_threads < 0:
            raise ValueError(f"encoder_threads must be >= 0, got {self.encoder_threads}")


@dataclass
class FrameRecord:
    """One finished frame, as passed to the ``on_frame`` callback of :func:`colorize_video`.

    Attributes:
        index: frame number within the colourised range (0-based).
        pts: the frame's timestamp in the input's time base; ``time`` the same in seconds.
        L: ``(H, W)`` float32 L in [0, 100] of the input frame at full resolution.
        rgb: ``(H, W, 3)`` uint8 sRGB handed to the encoder.
        ab: ``(2, h, w)`` float32 stabilised ab at render size (upright orientation).
        ab_raw: ``(2, h, w)`` the network's prediction before stabilisation.
        step: what the stabiliser did (scene cut or not).
    """

    index: int
    pts: int
    time: float
    L: np.ndarray
    rgb: np.ndarray
    ab: np.ndarray
    ab_raw: np.ndarray
    step: StepInfo


@dataclass
class VideoResult:
    """What :func:`colorize_video` did.

    Attributes:
        output: the output file.
        frames: frames in the output.
        resumed_frames: of those, frames an earlier interrupted run had already done.
        scene_cuts: frame indices (within the colourised range) where a new scene starts,
            the first frame excluded.
        seconds: wall time of this run; ``fps`` frames computed per second in this run.
        streams: what happened to each other stream (audio copied, ...).
        skipped: the output existed already and nothing was done.
    """

    output: Path
    frames: int = 0
    resumed_frames: int = 0
    scene_cuts: list[int] = field(default_factory=list)
    seconds: float = 0.0
    fps: float = 0.0
    streams: list[str] = field(default_factory=list)
    skipped: bool = False


def work_dir_for(output: str | os.PathLike[str]) -> Path:
    """The work folder of an output: ``.NAME.colorgan-work`` beside it."""
    output = Path(output)
    return output.parent / f".{output.name}.colorgan-work"


# ------------------------------------------------------------------------------------ luminance

def luminance(rgb: np.ndarray) -> np.ndarray:
    """L of an 8-bit sRGB frame.

    A black-and-white video decodes to three equal channels, whose L is a table look-up (the
    table is made by :func:`colorgan.color.rgb_to_l` itself); anything else goes through
    ``rgb_to_l``.

    Args:
        rgb: ``(H, W, 3)`` uint8.

    Returns:
        ``(H, W)`` float32 L in [0, 100].
    """
    import torch

    from colorgan import color
    from colorgan.pipeline import _grey_lut  # the photos' table, built by rgb_to_l itself

    r = rgb[..., 0]
    if np.array_equal(r, rgb[..., 1]) and np.array_equal(r, rgb[..., 2]):
        return _grey_lut(8)[r]
    x = torch.from_numpy(np.require(rgb, np.uint8, ["C", "W"])).permute(2, 0, 1).float() / 255.0
    return color.rgb_to_l(x)[0].numpy()


# ------------------------------------------------------------------------------------ work folder


def _model_id(colorizer: Any) -> str:
    """A fingerprint of the network's weights, so that work done by another model is never reused."""
    import torch

    h = hashlib.sha256(str(getattr(colorizer, "dtype", "")).encode())
    model = colorizer.model
    if hasattr(model, "state_dict"):
        for k, v in sorted(model.state_dict().items()):
            h.update(k.encode())
            h.update(v.detach().to("cpu").contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    else:
        h.update(f"{type(model).__name__}:{getattr(model, 'path', colorizer.name)}".encode())
    return h.hexdigest()[:16]


class _Work:
    """The work folder: finished segments, the manifest, and the temporal state after the last segment."""

    def __init__(self, folder: Path, fingerprint: dict, report: Callable[[str], None]) -> None:
        self.folder = folder
        self.fingerprint = fingerprint
        self.segments: list[dict] = []
        self.state_file: str | None = None
        manifest = folder / "manifest.json"
        if folder.exists():
            ok = False
            try:
                data = json.loads(manifest.read_text())
                ok = data.get("version") == _MANIFEST_VERSION and data.get("fingerprint") == fingerprint
                ok = ok and all((folder / s["file"]).is_file() and (folder / s["file"]).stat().st_size == s["bytes"] for s in data["segments"])
                ok = ok and (not data["segments"] or (folder / str(data.get("state"))).is_file())
            except (OSError, ValueError, KeyError, TypeError):
                ok = False
            if ok:
                self.segments = list(data["segments"])
                self.state_file = data.get("state")
            else:
                report(f"note: {folder}: unfinished work from a different input or settings; starting again")
                shutil.rmtree(folder, ignore_errors=True)
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise OutputError(folder, f"cannot create the work folder ({e.strerror or e})") from None

    @property
    def frames_done(self) -> int:
        return sum(int(s["frames"]) for s in self.segments)

    def segment_path(self, k: int) -> Path:
        return self.folder / f"seg_{k:05d}.nut"

    def load_state(self) -> dict[str, np.ndarray]:
        if not self.state_file:
            return {}
        with np.load(self.folder / self.state_file) as z:
            return {k: z[k] for k in z.files}

    def commit(self, seg: dict, state: dict[str, np.ndarray]) -> None:
        """Record a finished segment and the state after it (the manifest is replaced atomically)."""
        name = f"state_{len(self.segments):05d}.npz"
        try:
            with open(self.folder / name, "wb") as f:
                np.savez(f, **state)
                f.flush()
                os.fsync(f.fileno())
            manifest = {"version": _MANIFEST_VERSION, "fingerprint": self.fingerprint, "segments": self.segments + [seg], "state": name}
            atomic_write(self.folder / "manifest.json", json.dumps(manifest, indent=1).encode())  # raises OutputError
        except OSError as e:
            raise OutputError(self.folder, f"cannot write ({e.strerror or e})") from None
        old = self.state_file
        self.segments.append(seg)
        self.state_file = name
        if old and old != name:
            try:
                os.unlink(self.folder / old)
            except OSError:
                pass


class _Segments:
    """The segment being encoded; finished segments are committed to the work folder with the state."""

    def __init__(self, work: _Work, info: VideoInfo, settings: EncoderSettings, stab: TemporalStabilizer, shift: int) -> None:
        self.work, self.info, self.settings, self.stab, self.shift = work, info, settings, stab, shift
        self.writer: SegmentWriter | None = None
        self.entry: dict = {}

    def add(self, frame: DecodedFrame, rgb: np.ndarray, *, cut: bool, index: int) -> None:
        """Encode one frame (its timestamp moves back by ``shift``, so that the output starts at 0)."""
        if self.writer is None:
            path = self.work.segment_path(len(self.work.segments))
            self.writer = SegmentWriter(path, self.info, self.settings)
            self.entry = {"file": path.name, "frames": 0, "first_pts": frame.pts, "cuts": []}
        self.writer.write(rgb, frame.pts - self.shift, frame.duration)
        self.entry["frames"] += 1
        self.entry["last_pts"] = frame.pts
        self.entry["last_duration"] = frame.duration
        if cut:
            self.entry["cuts"].append(index)

    def finish(self) -> None:
        """Close the current segment (if any) and commit it with the temporal state after it."""
        if self.writer is None:
            return
        self.writer.close()
        self.entry["bytes"] = self.writer.path.stat().st_size
        self.work.commit(self.entry, self.stab.state_dict())
        self.writer, self.entry = None, {}

    def abort(self) -> None:
        """Drop the unfinished segment."""
        if self.writer is not None:
            self.writer.abort()
            self.writer = None


# ------------------------------------------------------------------------------------ the run


def _inference_mode(fn: Callable) -> Callable:
    """torch.inference_mode as a decorator that imports torch only when called."""
    import functools

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        import torch

        with torch.inference_mode():
            return fn(*args, **kwargs)

    return wrapper


@_inference_mode
def colour_frames(
    colorizer: Any, stab: TemporalStabilizer, L: Any, render_size: int, *, reference: Any = None, k_rot: int = 0,
    points: Any = None,
) -> tuple[Any, list[np.ndarray], list[np.ndarray], list[StepInfo]]:
    """Colourise consecutive frames given as L: network, temporal stabilisation, merge.

    The one video path, shared by ``colorgan video`` and the video evaluation.

    Args:
        colorizer: a :class:`colorgan.pipeline.Colorizer`.
        stab: the stabiliser, carrying the previous frames' colour.
        L: ``(B, 1, H, W)`` float32 L in [0, 100] on the colorizer's device, in display order.
        render_size: short side the network sees.
        reference: ``(1, 3, H', W')`` a reference photo for the clip (:meth:`Colorizer.prepare_reference`), or None.
        k_rot: quarter turns that show the frames upright to the network (the video's rotation).
        points: colour points (:class:`colorgan.hints.ColourPoint`, pixels of the upright frame)
            for the first frame the stabiliser sees (the clip's first); they are carried along
            the shot by the motion (:meth:`TemporalStabilizer.carry`) and dropped at a cut.

    Returns:
        ``(rgb, ab, ab_raw, steps)``: ``(B, 3, H, W)`` float32 sRGB in [0, 1]; per frame the
        stabilised and the predicted ab ``(2, h, w)`` at render size (upright); what the
        stabiliser did.
    """
    import torch

    from colorgan.pipeline import resize_to_render

    L_model = torch.rot90(L, k_rot, dims=(2, 3)) if k_rot else L
    # L at render size, made once and used twice: by the network and by the flow. It is resized
    # by the function that resizes a photo, so a frame colourises as the same picture would as a
    # still; predict_ab then finds it already at its render shape and does not resize it again.
    L_small = resize_to_render(L_model, render_size, colorizer.stride)
    guide = None
    if reference is not None:  # the reference's colours, matched frame by frame
        guide = torch.cat([colorizer.guidance(L_small[i : i + 1], L_small[i : i + 1], render_size, None, reference) for i in range(len(L))])
    if stab.guide is not None or (points and not stab.started):  # guidance still being carried
        return _colour_frames_guided(colorizer, stab, L, L_small, render_size, guide, points, k_rot)
    raw = [a.numpy() for a in _predict(colorizer, L_small, render_size, guide)]
    outs, steps = [], []
    for Ls_i, ab_i in zip(L_small[:, 0].cpu().numpy(), raw):  # in display order: each frame builds on the previous one
        out, step = stab.step(Ls_i, ab_i)
        outs.append(out)
        steps.append(step)
    return _merge(L, outs, k_rot), outs, raw, steps


def _predict(colorizer: Any, L_small: Any, render_size: int, guide: Any) -> Any:
    """ab ``(B, 2, h, w)`` float32 on the CPU at the shape of ``L_small``, whatever render size fitted in memory."""
    import torch.nn.functional as F

    ab = colorizer.predict_ab_safe(L_small, render_size, guide).float()
    if ab.shape[-2:] != L_small.shape[-2:]:  # out of memory: predicted at a smaller render size
        ab = F.interpolate(ab, size=L_small.shape[-2:], mode="bilinear", align_corners=False)
    return ab.cpu()


def _merge(L: Any, outs: list[np.ndarray], k_rot: int) -> Any:
    """The frames' full-resolution L joined with their stabilised ab (turned back to the stored orientation)."""
    import torch

    from colorgan import color

    ab = torch.from_numpy(np.stack(outs))
    if k_rot:
        ab = torch.rot90(ab, -k_rot, dims=(2, 3))
    return color.merge_luminance(L, ab.to(L.device))


def _colour_frames_guided(colorizer: Any, stab: TemporalStabilizer, L: Any, L_small: Any, render_size: int,
                          ref_guide: Any, points: Any, k_rot: int) -> tuple[Any, list[np.ndarray], list[np.ndarray], list[StepInfo]]:
    """:func:`colour_frames` with colour points carried along the shot: frame by frame, since each
    frame's guidance comes from the previous frame's along the motion."""
    import torch

    from colorgan.hints import rasterize_points

    outs, raw, steps = [], [], []
    for i in range(len(L)):
        Ls_i = L_small[i, 0].cpu().numpy()
        carried = None
        if stab.guide is not None:
            carried = stab.carry(Ls_i, stab.guide)
        elif points and not stab.started:  # the clip's first frame; points are pixels of the upright frame
            H, W = L.shape[-2:] if k_rot % 2 == 0 else L.shape[-2:][::-1]
            carried = rasterize_points(points, (int(H), int(W)), tuple(L_small.shape[-2:]))[0].numpy()
        g = None if carried is None else torch.from_numpy(carried)[None].to(colorizer.device)
        if ref_guide is not None:
            r = ref_guide[i : i + 1]
            g = r if g is None else torch.where(g[:, 2:3] > 0, g, r)  # carried points win where they are
        ab_np = _predict(colorizer, L_small[i : i + 1], render_size, g)[0].numpy()
        out, step = stab.step(Ls_i, ab_np)
        stab.guide = carried  # None after a cut: guidance does not cross it
        outs.append(out)
        raw.append(ab_np)
        steps.append(step)
    return _merge(L, outs, k_rot), outs, raw, steps


@_inference_mode
def _colour_batch(
    colorizer: Any, stab: TemporalStabilizer, frames: list[Any], info: VideoInfo, render_size: int, reference: Any = None,
    points: Any = None,
) -> tuple[list[np.ndarray], np.ndarray, list[np.ndarray], list[np.ndarray], list[StepInfo]]:
    """Colourise consecutive decoded frames (:func:`colour_frames` on their luminance).

    Returns:
        ``(Ls, rgb8, ab, ab_raw, steps)``: per frame the full-resolution L ``(H, W)`` in
        [0, 100]; ``(B, H, W, 3)`` uint8 sRGB; the stabilised and the predicted ab ``(2, h, w)``
        at render size (upright); what the stabiliser did.
    """
    import torch

    Ls = [luminance(frame_to_rgb(f, info)) for f in frames]
    L = torch.from_numpy(np.stack(Ls))[:, None].to(colorizer.device)
    k_rot = int(round(info.rotation / 90.0)) % 4  # the network sees frames upright
    rgb, outs, raw, steps = colour_frames(colorizer, stab, L, render_size, reference=reference, k_rot=k_rot, points=points)
    rgb8 = (rgb.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    return Ls, rgb8, outs, raw, steps


def _same_file(a: Path, b: Path) -> bool:
    if os.path.realpath(a) == os.path.realpath(b):
        return True
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def _batches(frames: Iterator[DecodedFrame], first_index: int, opts: VideoOptions) -> Iterator[list[DecodedFrame]]:
    """Group frames into batches that never cross a segment boundary (see the module docstring)."""
    batch: list[DecodedFrame] = []
    index = first_index
    for f in frames:
        batch.append(f)
        index += 1
        if len(batch) == opts.batch_size or index % opts.segment_frames == 0:
            yield batch
            batch = []
    if batch:
        yield batch


def colorize_video(
    input: str | os.PathLike[str],
    output: str | os.PathLike[str],
    *,
    colorizer: Any,
    options: VideoOptions | None = None,
    overwrite: bool = False,
    progress: bool = False,
    on_frame: Callable[[FrameRecord], None] | None = None,
    report: Callable[[str], None] | None = None,
    reference: str | os.PathLike[str] | None = None,
    hints: str | os.PathLike[str] | None = None,
) -> VideoResult:
    """Colourise a video file into ``output`` (the core of ``colorgan video``).

    Args:
        input: a video file (MP4, MOV, MKV, AVI, ... anything FFmpeg reads).
        output: the file to write; its suffix picks the container (.mp4, .m4v, .mov, .mkv, .avi).
            The video is H.264 at the input's size, pixel aspect, frame timing and colour tags.
        colorizer: a :class:`colorgan.pipeline.Colorizer`.
        options: see :class:`VideoOptions`.
        overwrite: redo an output that exists (otherwise it is left alone and ``skipped``).
        progress: show a progress bar (frames/s and ETA) on stderr.
        on_frame: called with each finished frame (tests and benchmarks; an exception raised
            there interrupts the run like Ctrl-C would, and the next run resumes).
        report: called with one-line notes and warnings (default: the logger).
        reference: a colour photo or frame for the clip (a model that takes guidance): every
            frame takes its colours where they match (:mod:`colorgan.reference`), and the
            temporal path carries them on as it carries the automatic ones.
        hints: a hints JSON file (:mod:`colorgan.hints`) of colour points for the clip's first
            frame (pixels of the frame as shown); they are carried along the shot by the motion
            and dropped at the first scene cut.

    Returns:
        What was done.

    Raises:
        ImageLoadError: the input is missing, not a video, has no video stream or no frames in
            the range, or is corrupt. Nothing is left behind.
        OutputError: the output cannot be written, or would overwrite the input.
        ImportError: PyAV or OpenCV is not installed (``pip install 'colorgan[video]'``).
    """
    opts = options or VideoOptions()
    say = report or (lambda m: log.warning("%s", m))
    src, dst = Path(input), Path(output)
    fmt = OUTPUT_FORMATS.get(dst.suffix.lower())
    if fmt is None:
        raise OutputError(dst, f"unknown video format {dst.suffix!r}; use one of {', '.join(OUTPUT_FORMATS)}")
    if _same_file(src, dst):
        raise OutputError(dst, "refusing to overwrite the input file")
    if dst.is_dir():
        raise OutputError(dst, "is a directory")
    if dst.exists() and not overwrite:
        return VideoResult(output=dst, skipped=True)
    info = probe(src)

    # The time range, in the video's time base, relative to its first frame. The output starts
    # at 0: a part from its start, a whole file from the input's start when that is later than 0
    # (MPEG-TS from cameras), every stream shifted alike so that sync is kept.
    t0 = info.start_pts * info.time_base
    start_abs = t0 + Fraction(opts.start) if opts.start else None
    end_abs = t0 + Fraction(opts.end) if opts.end is not None else None
    start_pts = math.ceil(start_abs / info.time_base) if start_abs is not None else None
    end_pts = math.ceil(end_abs / info.time_base) if end_abs is not None else None
    shift_abs = start_abs if start_abs is not None else Fraction(max(0.0, info.container_start))
    shift = math.floor(shift_abs / info.time_base)

    ref = None
    st = os.stat(src)
    fingerprint = {
        "input": os.path.abspath(src), "size": st.st_size, "mtime_ns": st.st_mtime_ns,
        "model": _model_id(colorizer), "format": fmt, "options": asdict(opts),
    }
    if reference is not None:
        ref = colorizer.prepare_reference(reference)  # raises for a grey or unreadable photo
        # Work done with another reference (or none) is never reused.
        fingerprint["reference"] = hashlib.sha256(Path(reference).read_bytes()).hexdigest()
    points = None
    if hints is not None:
        from colorgan.hints import load_hints

        upright = (info.height, info.width) if int(round(info.rotation / 90.0)) % 2 == 0 else (info.width, info.height)
        points = load_hints(hints, size=upright) or None  # HintsError: a bad file or point, before any work
        if points and not colorizer.takes_hints:
            raise ValueError(f"the model {colorizer.name!r} takes no colour hints (it was not trained with guidance)")
        fingerprint["hints"] = hashlib.sha256(Path(hints).read_bytes()).hexdigest()
    work = _Work(work_dir_for(dst), fingerprint, say)
    if work.segments:
        say(f"note: resuming: {work.frames_done} frames already done in {work.folder}")
    stab = TemporalStabilizer(TemporalConfig(strength=opts.temporal, scene_threshold=opts.scene_threshold))
    stab.load_state_dict(work.load_state())
    resumed = work.frames_done
    after_pts = int(work.segments[-1]["last_pts"]) if work.segments else None
    reader = FrameReader(info, start_pts=start_pts, after_pts=after_pts, end_pts=end_pts)

    expected = info.frames if info.frames and start_pts is None and end_pts is None else 0
    if not expected and info.rate:
        span_end = float(end_abs) if end_abs is not None else (float(t0) + info.duration if info.duration else None)
        if span_end is not None:
            expected = max(0, round((span_end - float(start_abs if start_abs is not None else t0)) * float(info.rate)))
    from tqdm import tqdm

    bar = tqdm(total=expected or None, initial=resumed, unit="frame", disable=not progress, dynamic_ncols=True, desc=src.name, leave=False)
    index = resumed
    computed = 0
    sink = _Segments(work, info, EncoderSettings(crf=opts.crf, preset=opts.preset, threads=opts.encoder_threads), stab, shift)
    tic = time.perf_counter()
    try:
        for batch in _batches(iter(reader), index, opts):
            Ls, rgb8, abs_out, ab_raw, steps = _colour_batch(colorizer, stab, [f.frame for f in batch], info, opts.render_size, ref, points)
            for i, f in enumerate(batch):
                sink.add(f, rgb8[i], cut=steps[i].cut and index > 0, index=index)
                if on_frame is not None:
                    on_frame(FrameRecord(index, f.pts, info.seconds(f.pts - info.start_pts), Ls[i], rgb8[i], abs_out[i], ab_raw[i], steps[i]))
                index += 1
                computed += 1
                bar.update(1)
                if index % opts.segment_frames == 0:
                    sink.finish()
        sink.finish()
        if end_pts is None:
            reader.check_complete()
        if not work.segments:
            where = "" if opts.start is None and opts.end is None else f" between {opts.start or 0:g} s and {opts.end if opts.end is not None else 'the end'}"
            raise ImageLoadError(src, f"no video frames{where}")
        seconds = time.perf_counter() - tic
        tmp = dst.parent / f".{dst.name}.partial{dst.suffix}"
        try:
            notes = mux_output(
                tmp, fmt, info, [work.folder / s["file"] for s in work.segments],
                start=float(start_abs) if start_abs is not None else None,
                end=float(end_abs) if end_abs is not None else None,
                shift=shift * info.time_base,
                last_duration=int(work.segments[-1]["last_duration"]),
                report=say,
            )
            os.replace(tmp, dst)
        finally:
            if tmp.exists():
                tmp.unlink()
        fsync_directory(dst.parent)
        shutil.rmtree(work.folder, ignore_errors=True)
    except ImageLoadError:
        # Bad input: there is nothing to resume, so leave nothing behind.
        sink.abort()
        shutil.rmtree(work.folder, ignore_errors=True)
        raise
    except BaseException:
        # Interrupted or failed: finished segments stay for the next run; the partial one goes.
        sink.abort()
        raise
    finally:
        bar.close()
    cuts = [c for s in work.segments for c in s.get("cuts", [])]
    return VideoResult(
        output=dst, frames=work.frames_done, resumed_frames=resumed, scene_cuts=cuts, seconds=seconds,
        fps=computed / seconds if seconds > 0 else 0.0, streams=notes,
    )
