"""Video files through PyAV: probing, decoding frames in order, encoding segments, the final mux.

PyAV's wheels carry the FFmpeg libraries (libx264 included), so no system ``ffmpeg`` is needed.
Everything here is imported lazily (``pip install 'colorgan[video]'``).

Choices, and why:

* YUV <-> RGB conversions use swscale with accurate rounding and full chroma interpolation, in
  the input's colour matrix and range (BT.709 is assumed for untagged video of 720 lines or
  more, BT.601 below, as players do). With these flags an 8-bit grey frame goes Y -> RGB -> Y
  bit-exactly, so the luminance that leaves equals the luminance that came in.
* Segments are encoded with libx264 into NUT files (FFmpeg's own container, which keeps every
  timestamp exactly) and then remuxed, packets copied, into the requested container. Each
  segment starts with an IDR frame and B-frames are off, so segments join with monotonic
  decoding timestamps whether or not a run was interrupted between them.
* Audio (and subtitle) packets are copied unchanged; an audio codec the output container cannot
  hold is re-encoded (AAC, or MP3 for AVI), with a note.
"""

from __future__ import annotations

import heapq
import io
import math
import os
import re
import struct
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from colorgan.errors import ImageLoadError, OutputError

__all__ = [
    "OUTPUT_FORMATS",
    "VideoInfo",
    "DecodedFrame",
    "EncoderSettings",
    "require_av",
    "probe",
    "FrameReader",
    "frame_to_rgb",
    "SegmentWriter",
    "mux_output",
]

#: Output file suffix -> FFmpeg muxer.
OUTPUT_FORMATS: dict[str, str] = {".mp4": "mp4", ".m4v": "mp4", ".mov": "mov", ".mkv": "matroska", ".avi": "avi"}

# AVColorSpace values (libavutil/pixfmt.h) -> swscale matrix names.
_SPC_TO_SWS = {1: "itu709", 4: "fcc", 5: "itu601", 6: "itu601", 7: "smpte240m", 9: "bt2020", 10: "bt2020"}
_SWS_TO_SPC = {"itu709": 1, "itu601": 6}
_RANGE_MPEG, _RANGE_JPEG = 1, 2
# Container and stream tags that describe the old file rather than the content.
_DROP_META = {
    "major_brand", "minor_version", "compatible_brands", "encoder", "duration", "rotate",
    "number_of_frames", "number_of_bytes", "bps", "vendor_id",
}


def require_av() -> Any:
    """Import PyAV, or raise ImportError naming the extra that provides it."""
    try:
        import av
    except ImportError as e:
        raise ImportError(f"video needs PyAV ({e}); install it with: pip install 'colorgan[video]'") from None
    return av


def _sws_flags() -> int:
    from av.video.reformatter import Interpolation as I

    return int(I.BILINEAR | I.ACCURATE_RND | I.FULL_CHR_H_INT | I.FULL_CHR_H_INP)


def _reason(e: BaseException) -> str:
    text = " ".join(str(e).split()) or type(e).__name__
    # PyAV's messages look like "[Errno 1094995529] Invalid data found ...: 'path'"; keep the words.
    return re.sub(r"^\[Errno -?\d+\]\s*", "", text.split(": '")[0]).strip() or type(e).__name__


@dataclass
class VideoInfo:
    """What a video file holds, as far as colourising it needs.

    Attributes:
        path: the file.
        width, height: stored frame size in pixels (before any display rotation).
        time_base: the video stream's time base; every timestamp here is in it.
        rate: average frame rate (frames/s), or None when the container does not say.
        frames: declared number of frames (0 when unknown).
        duration: the video stream's duration in seconds, or None when unknown.
        start_pts: timestamp of the first frame.
        container_start: the earliest start of any stream, in seconds (0 when unknown).
        sar: sample (pixel) aspect ratio, or None for square / unknown.
        display_matrix: the 9-integer FFmpeg display matrix (rotation/flip), or None.
        rotation: counter-clockwise display rotation in degrees (0, 90, 180, -90).
        matrix: the swscale colour matrix used to convert to and from RGB.
        full_range: True for full-range ("JPEG") YUV, False for limited (16-235).
        colorspace, color_primaries, color_trc: FFmpeg colour tags to carry to the output.
        pix_fmt: the decoded pixel format (e.g. ``yuv420p``).
        streams: the other streams (audio, subtitles) as ``(index, type, description)``.
        metadata: container metadata; ``stream_metadata``: the video stream's.
    """

    path: Path
    width: int
    height: int
    time_base: Fraction
    rate: Fraction | None
    frames: int
    duration: float | None
    start_pts: int
    container_start: float
    sar: Fraction | None
    display_matrix: tuple[int, ...] | None
    rotation: int
    matrix: str
    full_range: bool
    colorspace: int
    color_primaries: int
    color_trc: int
    pix_fmt: str
    streams: list[tuple[int, str, str]] = field(default_factory=list)
    metadata: dict[str, str] = field(default_factory=dict)
    stream_metadata: dict[str, str] = field(default_factory=dict)
    video_index: int = 0

    def nominal_duration(self) -> int:
        """One frame's duration in ``time_base`` units (from the frame rate; at least 1)."""
        rate = self.rate or Fraction(25)
        return max(1, round(1 / (rate * self.time_base)))

    def seconds(self, pts: int) -> float:
        return float(pts * self.time_base)


@dataclass
class DecodedFrame:
    """One decoded frame: its (sanitised) timestamp, duration, and the PyAV frame."""

    pts: int
    duration: int
    frame: Any


@dataclass(frozen=True)
class EncoderSettings:
    """libx264 settings of the output.

    Attributes:
        crf: quality, 0 (lossless) to 51; 18 is visually near-lossless.
        preset: x264's speed preset.
        threads: encoder threads. 1 (default) makes the encoding reproducible, so that a resumed
            run writes the same bytes as an uninterrupted one (x264's threaded lookahead is not:
            measured, 1 in 10-25 encodes of the same frames differs); 0 lets x264 choose.
    """

    crf: int = 18
    preset: str = "medium"
    threads: int = 1


def _check_file(path: Path) -> None:
    if not os.path.lexists(path):
        raise ImageLoadError(path, "no such file or directory")
    if os.path.isdir(path):
        raise ImageLoadError(path, "is a directory, not a video file")
    if not os.path.isfile(path):
        raise ImageLoadError(path, "not a regular file")
    if os.path.getsize(path) == 0:
        raise ImageLoadError(path, "empty file")


def _open_input(path: Path) -> Any:
    av = require_av()
    _check_file(path)
    try:
        return av.open(str(path), "r")
    except PermissionError:
        raise ImageLoadError(path, "permission denied") from None
    except EOFError:
        raise ImageLoadError(path, "not a video file, or truncated (the data ends inside the header)") from None
    except (av.error.FFmpegError, OSError, UnicodeDecodeError) as e:
        raise ImageLoadError(path, f"not a video file, or unreadable ({_reason(e)})") from None


def _pick_video_stream(container: Any) -> Any | None:
    for s in container.streams.video:
        # Cover art in audio files is a "video" stream of one attached picture.
        if not (int(s.disposition) & int(s.disposition.__class__.attached_pic)):
            return s
    return None


def _mkv_duration(meta: dict[str, str]) -> float | None:
    """Matroska writes per-stream durations as a tag like ``00:01:02.500000000``."""
    text = meta.get("DURATION") or meta.get("duration")
    if not text:
        return None
    try:
        h, m, s = text.split(":")
        return int(h) * 3600 + int(m) * 60 + float(s)
    except ValueError:
        return None


def _clean_meta(meta: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in meta.items() if k.lower() not in _DROP_META and not k.startswith("_STATISTICS")}


def probe(path: str | os.PathLike[str]) -> VideoInfo:
    """Open a video file, check it, and describe it (decodes its first frame).

    Raises:
        ImageLoadError: missing, empty, not a video, no video stream, no decodable frame,
            corrupt data at the start.
        ImportError: PyAV is not installed.
    """
    av = require_av()
    path = Path(path)
    container = _open_input(path)
    try:
        vs = _pick_video_stream(container)
        if vs is None:
            raise ImageLoadError(path, "no video stream (audio only, or not a video)")
        first = None
        try:
            for packet in container.demux(vs):
                for frame in packet.decode():
                    first = frame
                    break
                if first is not None:
                    break
        except av.error.FFmpegError as e:
            raise ImageLoadError(path, f"corrupt video data at the start ({_reason(e)})") from None
        if first is None:
            raise ImageLoadError(path, "the video stream has no frames")
        cc = vs.codec_context
        tb = vs.time_base or Fraction(1, 90000)
        rate = vs.average_rate or vs.guessed_rate or vs.base_rate
        duration = float(vs.duration * tb) if vs.duration else _mkv_duration(vs.metadata)
        if duration is None and container.duration and not container.streams.audio:
            duration = container.duration / 1_000_000
        matrix_bytes = None
        for sd in first.side_data:
            if str(sd.type).endswith("DISPLAYMATRIX"):
                matrix_bytes = bytes(sd)
        display_matrix = tuple(struct.unpack("<9i", matrix_bytes[:36])) if matrix_bytes and len(matrix_bytes) >= 36 else None
        pix_fmt = first.format.name
        spc = int(first.colorspace)
        matrix = _SPC_TO_SWS.get(spc) or ("itu709" if vs.height >= 720 else "itu601")
        full_range = int(first.color_range) == _RANGE_JPEG or pix_fmt.startswith("yuvj")
        streams = []
        for s in container.streams:
            if s.index == vs.index:
                continue
            desc = s.type
            if s.type == "audio":
                ac = s.codec_context
                desc = f"{ac.name} {ac.sample_rate} Hz {ac.layout.name if ac.layout else ''} ".strip()
            elif s.codec_context is not None:
                desc = f"{s.type} {s.codec_context.name}"
            streams.append((s.index, s.type, desc))
        sar = cc.sample_aspect_ratio
        pts0 = first.pts if first.pts is not None else (vs.start_time or 0)
        return VideoInfo(
            path=path,
            width=int(vs.width),
            height=int(vs.height),
            time_base=Fraction(tb),
            rate=Fraction(rate) if rate else None,
            frames=int(vs.frames or 0),
            duration=duration,
            start_pts=int(pts0),
            container_start=container.start_time / 1_000_000 if container.start_time is not None else 0.0,
            sar=Fraction(sar) if sar and sar != 1 and sar.numerator > 0 else None,
            display_matrix=display_matrix,
            rotation=int(first.rotation) if display_matrix else 0,
            matrix=matrix,
            full_range=full_range,
            colorspace=spc if spc in _SPC_TO_SWS else _SWS_TO_SPC.get(matrix, 2),
            color_primaries=int(getattr(cc, "color_primaries", 2) or 2),
            color_trc=int(getattr(cc, "color_trc", 2) or 2),
            pix_fmt=pix_fmt,
            streams=streams,
            metadata=dict(container.metadata),
            stream_metadata=dict(vs.metadata),
            video_index=vs.index,
        )
    finally:
        container.close()


def frame_to_rgb(frame: Any, info: VideoInfo) -> np.ndarray:
    """A decoded frame as ``(H, W, 3)`` uint8 sRGB, in the input's colour matrix and range."""
    return frame.to_ndarray(
        format="rgb24",
        src_colorspace=info.matrix,
        src_color_range="JPEG" if info.full_range else "MPEG",
        interpolation=_sws_flags(),
    )


class FrameReader:
    """Decode the video stream in display order, a range of it, with clean timestamps.

    Frames are selected by timestamp: ``pts >= start_pts`` (inclusive), ``pts > after_pts``
    (what an interrupted run already did) and ``pts < end_pts``. When the range starts late the
    reader seeks to the keyframe before it and decodes forward; if the container lands after the
    wanted point (imprecise seeking) it starts again from the beginning, so no frame is lost.

    Timestamps are made usable: a missing pts becomes the previous one plus a frame, and a pts
    that does not increase is moved just after the previous one.

    Raises (while iterating):
        ImageLoadError: corrupt data, with the time it happened.
    """

    def __init__(
        self,
        info: VideoInfo,
        *,
        start_pts: int | None = None,
        after_pts: int | None = None,
        end_pts: int | None = None,
    ) -> None:
        self.info = info
        self.start_pts = start_pts
        self.after_pts = after_pts
        self.end_pts = end_pts
        #: End time (s) of the last frame decoded, whether selected or not.
        self.decoded_until: float = 0.0
        self.reached_end_of_file = False

    def _wanted(self, pts: int) -> bool:
        if self.start_pts is not None and pts < self.start_pts:
            return False
        if self.after_pts is not None and pts <= self.after_pts:
            return False
        return True

    def __iter__(self) -> Iterator[DecodedFrame]:
        targets = [t for t in (self.start_pts, self.after_pts) if t is not None]
        target = max(targets) if targets else None
        if target is not None and target > self.info.start_pts:
            yield from self._decode(seek_to=target)
        else:
            yield from self._decode(seek_to=None)

    def _decode(self, seek_to: int | None) -> Iterator[DecodedFrame]:
        av = require_av()
        info = self.info
        container = _open_input(info.path)
        try:
            vs = container.streams[info.video_index]
            vs.thread_type = "AUTO"  # frame threads: decoding is bit-exact either way
            if seek_to is not None:
                try:
                    container.seek(int(seek_to), stream=vs, backward=True, any_frame=False)
                except av.error.FFmpegError:
                    seek_to = None
                    container.close()
                    container = _open_input(info.path)
                    vs = container.streams[info.video_index]
                    vs.thread_type = "AUTO"
            prev: int | None = None
            step = info.nominal_duration()
            first = True
            try:
                for packet in container.demux(vs):
                    for frame in packet.decode():
                        pts = frame.pts if frame.pts is not None else (prev + step if prev is not None else info.start_pts)
                        if prev is not None and pts <= prev:
                            pts = prev + 1
                        if first and seek_to is not None and pts > seek_to:
                            # Landed after the wanted frame: frames may be missing. Start over.
                            container.close()
                            yield from self._decode(seek_to=None)
                            return
                        first = False
                        prev = pts
                        dur = int(frame.duration) if frame.duration and frame.duration > 0 else step
                        self.decoded_until = info.seconds(pts + dur)
                        if self.end_pts is not None and pts >= self.end_pts:
                            return
                        if self._wanted(pts):
                            yield DecodedFrame(pts=int(pts), duration=dur, frame=frame)
            except av.error.FFmpegError as e:
                raise ImageLoadError(info.path, f"corrupt video data after {self.decoded_until:.2f} s ({_reason(e)})") from None
            self.reached_end_of_file = True
        finally:
            container.close()

    def check_complete(self) -> None:
        """After reading to the end of the file: raise if the data stopped well short of the declared length.

        Some containers (Matroska) stop demuxing silently at damaged data; comparing the time
        decoded with the video stream's declared duration turns that into an error.

        Raises:
            ImageLoadError: the stream ended more than max(0.5 s, 2 %) before its declared end.
        """
        d = self.info.duration
        if not self.reached_end_of_file or not d:
            return
        got = self.decoded_until - self.info.seconds(self.info.start_pts)  # the stream may not start at 0
        if got < d - max(0.5, 0.02 * d):
            raise ImageLoadError(
                self.info.path,
                f"truncated or corrupt: video data ends at {got:.2f} s but the file declares {d:.2f} s",
            )


class SegmentWriter:
    """Encode RGB frames with libx264 into one segment file (NUT container).

    Args:
        path: the segment file to create.
        info: the input's description (size, time base, rate, aspect, colour tags).
        settings: encoder settings.
    """

    def __init__(self, path: Path, info: VideoInfo, settings: EncoderSettings) -> None:
        av = require_av()
        self.path = path
        self.info = info
        self.frames = 0
        # yuv420p needs even sizes; odd ones keep their exact size in 4:4:4.
        self.pix_fmt = "yuv420p" if info.width % 2 == 0 and info.height % 2 == 0 else "yuv444p"
        self._flags = _sws_flags()
        self._range = "JPEG" if info.full_range else "MPEG"
        try:
            self._c = av.open(str(path), "w", format="nut")
        except (av.error.FFmpegError, OSError) as e:
            raise OutputError(path, f"cannot write ({_reason(e)})") from None
        try:
            rate = info.rate or Fraction(25)
            # bf=0: no B-frames, so packets are in display order and segments join cleanly.
            opts = {"crf": str(settings.crf), "preset": settings.preset, "bf": "0", "threads": str(settings.threads)}
            s = self._c.add_stream("libx264", rate=rate, options=opts)
            s.width, s.height, s.pix_fmt = info.width, info.height, self.pix_fmt
            cc = s.codec_context
            cc.time_base = info.time_base
            if info.sar:
                cc.sample_aspect_ratio = info.sar
            cc.colorspace = info.colorspace
            cc.color_range = _RANGE_JPEG if info.full_range else _RANGE_MPEG
            cc.color_primaries = info.color_primaries
            cc.color_trc = info.color_trc
            self._s = s
        except Exception:
            self.abort()
            raise

    def write(self, rgb: np.ndarray, pts: int, duration: int) -> None:
        """Encode one frame.

        Args:
            rgb: ``(H, W, 3)`` uint8 sRGB at the input's size.
            pts: timestamp in the input's time base.
            duration: frame duration in the same units.
        """
        av = require_av()
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
        yuv = frame.reformat(format=self.pix_fmt, dst_colorspace=self.info.matrix, dst_color_range=self._range, interpolation=self._flags)
        yuv.pts = int(pts)
        yuv.time_base = self.info.time_base
        yuv.duration = int(duration)
        try:
            for p in self._s.encode(yuv):
                self._c.mux(p)
        except (av.error.FFmpegError, OSError) as e:
            raise OutputError(self.path, f"cannot encode or write ({_reason(e)})") from None
        self.frames += 1

    def close(self) -> None:
        """Flush the encoder, finish the file and make it durable."""
        av = require_av()
        try:
            for p in self._s.encode(None):
                self._c.mux(p)
            self._c.close()
            with open(self.path, "rb") as f:
                os.fsync(f.fileno())
        except (av.error.FFmpegError, OSError) as e:
            raise OutputError(self.path, f"cannot encode or write ({_reason(e)})") from None

    def abort(self) -> None:
        """Close without finishing and delete the file."""
        try:
            self._c.close()
        except Exception:  # noqa: BLE001 - best effort on an already failing path
            pass
        try:
            os.unlink(self.path)
        except OSError:
            pass


def _accepts(fmt: str, template: Any) -> bool:
    """Can ``fmt`` hold a copy of this stream? (Tried on a header written to memory.)"""
    av = require_av()
    buf = io.BytesIO()
    try:
        with av.open(buf, "w", format=fmt) as out:
            out.add_stream_from_template(template, opaque=True)
            out.start_encoding()
        return True
    except Exception:  # noqa: BLE001 - any refusal means "re-encode or drop"
        return False


def _packet_time(p: Any) -> float:
    ts = p.dts if p.dts is not None else p.pts
    return float(ts * p.time_base) if ts is not None and p.time_base else 0.0


def mux_output(
    target: Path,
    fmt: str,
    info: VideoInfo,
    segments: Sequence[Path],
    *,
    start: float | None = None,
    end: float | None = None,
    shift: Fraction | float = 0,
    last_duration: int = 1,
    report: Callable[[str], None] | None = None,
) -> list[str]:
    """Join the encoded segments and the input's other streams into one file.

    Video packets are copied from the segments; audio and subtitle packets from the input,
    unchanged, interleaved by time. With ``start``/``end`` only the other streams' packets in
    [start, end) are kept. Their timestamps move back by ``shift`` seconds (the segments were
    encoded with the same shift), so that the output starts at 0. Metadata, the display matrix
    (rotation) and, for a whole file, chapters are copied.

    Args:
        target: the file to write (a temporary name; the caller renames it).
        fmt: FFmpeg muxer name (see :data:`OUTPUT_FORMATS`).
        info: the input's description.
        segments: segment files in order.
        start, end: the time range of a partial run (seconds, the input's clock), or None.
        shift: seconds subtracted from the other streams' timestamps.
        last_duration: duration of the last frame, in the input's time base.
        report: called with one line per stream that could not be copied as is.

    Returns:
        One description per non-video stream, e.g. ``"audio aac 16000 Hz mono: copied"``.

    Raises:
        ImageLoadError: the input's other streams are corrupt.
        OutputError: the output cannot be written.
    """
    av = require_av()
    notes: list[str] = []
    say = report or (lambda m: None)
    inp = _open_input(info.path)
    seg0 = av.open(str(segments[0]))
    try:
        try:
            out = av.open(str(target), "w", format=fmt)
        except (av.error.FFmpegError, OSError) as e:
            raise OutputError(target, f"cannot write ({_reason(e)})") from None
        with out:
            vt = out.add_stream_from_template(seg0.streams.video[0], opaque=True)
            vt.time_base = info.time_base
            if info.display_matrix:
                vt.set_display_matrix(info.display_matrix)
            vt.metadata.update(_clean_meta(info.stream_metadata))
            out.metadata.update(_clean_meta(info.metadata))
            copies: dict[int, Any] = {}
            encoders: dict[int, tuple[Any, Any]] = {}
            for index, kind, desc in info.streams:
                src = inp.streams[index]
                if kind not in ("audio", "subtitle") or src.codec_context is None:
                    notes.append(f"{kind} stream {index}: dropped (only audio and subtitles are carried over)")
                    continue
                if _accepts(fmt, src):
                    dst = out.add_stream_from_template(src, opaque=True)
                    copies[index] = dst
                    notes.append(f"{desc}: copied")
                elif kind == "audio":
                    codec = "libmp3lame" if fmt == "avi" else "aac"
                    enc = out.add_stream(codec, rate=src.codec_context.sample_rate)
                    enc.layout = src.codec_context.layout
                    encoders[index] = (enc, None)
                    msg = f"{desc}: the {fmt} container cannot hold it; re-encoded as {codec}"
                    notes.append(msg)
                    say(f"warning: {info.path}: {msg}")
                else:
                    msg = f"{desc}: the {fmt} container cannot hold it; dropped"
                    notes.append(msg)
                    say(f"warning: {info.path}: {msg}")
                    continue
                dst = copies.get(index) or encoders[index][0]
                dst.metadata.update(_clean_meta(dict(src.metadata)))
                try:
                    dst.disposition = src.disposition
                except (AttributeError, TypeError, ValueError):
                    pass
            if start is None and end is None:
                try:
                    out.set_chapters(inp.chapters())
                except Exception:  # noqa: BLE001 - chapters are a nicety; formats without them refuse
                    pass

            def video_packets() -> Iterator[tuple[float, int, Any]]:
                # The encoder stamps every packet with 1/frame rate; give each its true duration
                # (up to the next frame) so that variable frame rates and the total length survive.
                prev = None
                for seg in segments:
                    with av.open(str(seg)) as c:
                        for p in c.demux(c.streams.video[0]):
                            if not p.size:
                                continue
                            if prev is not None:
                                prev.duration = int(round((p.pts * p.time_base - prev.pts * prev.time_base) / prev.time_base))
                                yield _packet_time(prev), 0, prev
                            p.stream = vt
                            prev = p
                if prev is not None:
                    prev.duration = max(1, int(round(last_duration * info.time_base / prev.time_base)))
                    yield _packet_time(prev), 0, prev

            def other_packets() -> Iterator[tuple[float, int, Any]]:
                wanted = [inp.streams[i] for i in list(copies) + list(encoders)]
                if not wanted:
                    return
                try:
                    for p in inp.demux(*wanted):
                        if p.size == 0 and p.stream_index not in encoders:
                            continue
                        t = _packet_time(p)
                        if p.size and ((start is not None and t < start) or (end is not None and t >= end)):
                            continue
                        if shift:
                            ticks = math.floor(Fraction(shift) / p.time_base)
                            if p.pts is not None:
                                p.pts -= ticks
                            if p.dts is not None:
                                p.dts -= ticks
                        if p.stream_index in copies:
                            p.stream = copies[p.stream_index]
                            yield t, 1, p
                        else:
                            enc = encoders[p.stream_index][0]
                            for frame in p.decode():
                                frame.pts = None  # the encoder counts samples from the start
                                for q in enc.encode(frame):
                                    yield t, 1, q
                    for enc, _ in encoders.values():
                        for q in enc.encode(None):
                            yield float("inf"), 1, q
                except av.error.FFmpegError as e:
                    raise ImageLoadError(info.path, f"corrupt audio or subtitle data ({_reason(e)})") from None

            try:
                for _, _, packet in heapq.merge(video_packets(), other_packets(), key=lambda x: (x[0], x[1])):
                    out.mux(packet)
            except av.error.FFmpegError as e:
                raise OutputError(target, f"cannot write ({_reason(e)})") from None
    finally:
        seg0.close()
        inp.close()
    return notes
