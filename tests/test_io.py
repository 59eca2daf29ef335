"""Tests of colorgan.io: decoding, encoding, limits, atomic writes and folder walking.

Every image is a tiny one made here with Pillow, numpy or tifffile; no external data.
"""

from __future__ import annotations

import hashlib
import io
import os
import struct
import subprocess
import sys
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image, ImageCms, ImageOps

from colorgan import io as cio
from colorgan.errors import ImageLoadError, OutputError

SEPIA = np.array([[0.393, 0.769, 0.189], [0.349, 0.686, 0.168], [0.272, 0.534, 0.131]], dtype=np.float32)


# ----------------------------------------------------------------------------------------------
# helpers and fixtures (io_ prefixed: the conftest is shared)
# ----------------------------------------------------------------------------------------------


def _rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def _rgb8(h: int = 12, w: int = 16, seed: int = 0) -> np.ndarray:
    return _rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _smooth_rgb8(h: int = 16, w: int = 24) -> np.ndarray:
    """A smooth colour image: lossy codecs reproduce it within a few levels."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    rgb = np.stack([x / (w - 1), y / (h - 1), 0.5 + 0.3 * np.sin(x / 4.0)], axis=-1)
    return np.round(rgb * 255).astype(np.uint8)


def _to8(rgb: np.ndarray) -> np.ndarray:
    return np.round(rgb * 255).astype(np.uint8)


def _to16(rgb: np.ndarray) -> np.ndarray:
    return np.round(rgb.astype(np.float64) * 65535).astype(np.uint16)


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _srgb_icc() -> bytes:
    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


def _exif_bytes(orientation: int | None = None, make: str | None = "TestCam") -> bytes:
    exif = Image.Exif()
    if make is not None:
        exif[0x010F] = make
    if orientation is not None:
        exif[0x0112] = orientation
    return exif.tobytes()


def _png_bytes(width: int, height: int, bit_depth: int, colour_type: int, rows: bytes | None) -> bytes:
    """A hand-made PNG (so tests control the header and the IDAT exactly)."""

    def chunk(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))

    out = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0))
    if rows is not None:
        out += chunk(b"IDAT", zlib.compress(rows))
    return out + chunk(b"IEND", b"")


def _assert_one_line_error(exc: pytest.ExceptionInfo[BaseException], name: str, *words: str) -> None:
    text = str(exc.value)
    assert "\n" not in text
    assert name in text
    for word in words:
        assert word in text.lower(), text


@pytest.fixture
def io_rgb_png(tmp_path: Path) -> tuple[Path, np.ndarray]:
    """A random 12x16 RGB PNG and its pixels."""
    pixels = _rgb8()
    path = tmp_path / "rgb.png"
    Image.fromarray(pixels, "RGB").save(path)
    return path, pixels


@pytest.fixture
def io_jpeg_bytes() -> bytes:
    """A real 32x48 JPEG."""
    buffer = io.BytesIO()
    Image.fromarray(_rgb8(32, 48, seed=3), "RGB").save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


# ----------------------------------------------------------------------------------------------
# formats and modes
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("suffix", "fmt", "tolerance"),
    [(".jpg", "JPEG", 12), (".jpeg", "JPEG", 12), (".png", "PNG", 0), (".tif", "TIFF", 0),
     (".tiff", "TIFF", 0), (".webp", "WEBP", 16), (".bmp", "BMP", 0)],
)
def test_format_round_trip(tmp_path: Path, suffix: str, fmt: str, tolerance: int) -> None:
    pixels = _smooth_rgb8()
    target = cio.save_image(tmp_path / f"out{suffix}", pixels / 255.0)
    assert target == tmp_path / f"out{suffix}"
    with Image.open(target) as check:
        assert check.format == fmt
    loaded = cio.load_image(target)
    assert loaded.format == fmt
    assert loaded.source == str(target)
    assert loaded.size == (24, 16)
    assert loaded.rgb.shape == (16, 24, 3) and loaded.rgb.dtype == np.float32
    assert 0.0 <= loaded.rgb.min() and loaded.rgb.max() <= 1.0
    assert loaded.bit_depth == 8 and loaded.alpha is None
    diff = np.abs(_to8(loaded.rgb).astype(int) - pixels.astype(int)).max()
    assert diff <= tolerance


def test_encode_image_bytes_load_back() -> None:
    pixels = _rgb8(8, 8)
    for fmt in ("PNG", "TIFF", "BMP"):
        data = cio.encode_image(pixels / 255.0, format=fmt)
        loaded = cio.load_image(data)
        assert loaded.format == fmt and loaded.source is None
        assert np.array_equal(_to8(loaded.rgb), pixels)
    assert cio.encode_image(pixels / 255.0, format="jpeg").startswith(b"\xff\xd8")
    with pytest.raises(OutputError):
        cio.encode_image(pixels / 255.0, format="GIF")


def test_format_for_suffix() -> None:
    assert cio.format_for_suffix(".JPG") == "JPEG"
    assert cio.format_for_suffix("png") == "PNG"
    assert cio.format_for_suffix(".tiff") == "TIFF"
    assert {cio.format_for_suffix(s) for s in cio.IMAGE_SUFFIXES} == {"JPEG", "PNG", "TIFF", "WEBP", "BMP"}
    with pytest.raises(OutputError, match="unsupported"):
        cio.format_for_suffix(".gif")
    with pytest.raises(OutputError):
        cio.format_for_suffix("")


def test_mode_1(tmp_path: Path) -> None:
    bits = _rng().integers(0, 2, (8, 10)).astype(bool)
    Image.fromarray(bits).convert("1").save(tmp_path / "a.png")
    loaded = cio.load_image(tmp_path / "a.png")
    assert loaded.bit_depth == 8 and loaded.kind == "grey" and loaded.alpha is None
    assert np.array_equal(loaded.rgb[..., 0], bits.astype(np.float32))


def test_mode_l_and_la(tmp_path: Path) -> None:
    grey = _rng().integers(0, 256, (9, 11), dtype=np.uint8)
    alpha = _rng(1).integers(0, 256, (9, 11), dtype=np.uint8)
    Image.fromarray(grey, "L").save(tmp_path / "l.png")
    Image.fromarray(np.dstack([grey, alpha]), "LA").save(tmp_path / "la.png")
    for name in ("l.png", "la.png"):
        loaded = cio.load_image(tmp_path / name)
        assert loaded.kind == "grey" and loaded.bit_depth == 8
        assert np.array_equal(_to8(loaded.rgb), np.dstack([grey] * 3))
    la = cio.load_image(tmp_path / "la.png")
    assert la.alpha is not None and la.alpha.dtype == np.uint8 and np.array_equal(la.alpha, alpha)
    assert cio.load_image(tmp_path / "l.png").alpha is None


def test_mode_i16_png_exact(tmp_path: Path) -> None:
    grey = _rng().integers(0, 65536, (7, 9), dtype=np.uint16)
    Image.fromarray(grey).save(tmp_path / "g16.png")
    loaded = cio.load_image(tmp_path / "g16.png")
    assert loaded.bit_depth == 16 and loaded.kind == "grey"
    assert np.array_equal(_to16(loaded.rgb[..., 0]), grey)
    assert np.array_equal(loaded.rgb[..., 0], grey.astype(np.float32) / np.float32(65535))
    assert np.array_equal(loaded.rgb[..., 0], loaded.rgb[..., 2])


@pytest.mark.parametrize("mode", ["I;16B", "I;16L", "I"])
def test_16bit_grey_pil_modes(mode: str) -> None:
    grey = _rng().integers(0, 65536, (5, 6), dtype=np.uint16)
    if mode == "I":
        image = Image.fromarray(grey.astype(np.int32), "I")
    else:
        dtype = ">u2" if mode == "I;16B" else "<u2"
        image = Image.frombytes(mode, (6, 5), grey.astype(dtype).tobytes())
    loaded = cio.from_pil(image)
    assert loaded.bit_depth == 16
    assert np.array_equal(_to16(loaded.rgb[..., 0]), grey)


def test_mode_i_out_of_range_is_unsupported() -> None:
    image = Image.fromarray(np.full((3, 3), 70000, dtype=np.int32), "I")
    with pytest.raises(ImageLoadError, match="unsupported mode"):
        cio.from_pil(image, source="big.tif")


def test_mode_rgb_rgba(tmp_path: Path, io_rgb_png: tuple[Path, np.ndarray]) -> None:
    path, pixels = io_rgb_png
    loaded = cio.load_image(path)
    assert np.array_equal(_to8(loaded.rgb), pixels) and loaded.kind == "colour"
    alpha = _rng(5).integers(0, 256, pixels.shape[:2], dtype=np.uint8)
    Image.fromarray(np.dstack([pixels, alpha]), "RGBA").save(tmp_path / "rgba.png")
    rgba = cio.load_image(tmp_path / "rgba.png")
    assert np.array_equal(_to8(rgba.rgb), pixels)
    assert rgba.alpha is not None and np.array_equal(rgba.alpha, alpha)


def test_mode_p_with_and_without_transparency(tmp_path: Path) -> None:
    palette_image = Image.fromarray(_smooth_rgb8(), "RGB").convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    palette_image.save(tmp_path / "p.png")
    expected = np.asarray(palette_image.convert("RGB"))
    loaded = cio.load_image(tmp_path / "p.png")
    assert loaded.alpha is None and np.array_equal(_to8(loaded.rgb), expected)

    indices = np.asarray(palette_image)
    palette_image.save(tmp_path / "pt.png", transparency=int(indices[0, 0]))
    transparent = cio.load_image(tmp_path / "pt.png")
    assert transparent.alpha is not None
    assert np.array_equal(transparent.alpha, np.where(indices == indices[0, 0], 0, 255))
    assert np.array_equal(_to8(transparent.rgb), expected)


def test_mode_pa_la_premultiplied_ycbcr_via_from_pil() -> None:
    pa = Image.new("PA", (4, 3))
    assert cio.from_pil(pa).alpha is not None
    la = Image.new("La", (4, 3), (100, 255))
    assert cio.from_pil(la).alpha is not None
    ycc = Image.fromarray(_smooth_rgb8(), "RGB").convert("YCbCr")
    loaded = cio.from_pil(ycc, source="ycc")
    assert loaded.source == "ycc" and loaded.rgb.shape == (16, 24, 3)
    assert np.abs(_to8(loaded.rgb).astype(int) - _smooth_rgb8().astype(int)).max() <= 3


@pytest.mark.parametrize("fmt", ["JPEG", "TIFF"])
def test_mode_cmyk(tmp_path: Path, fmt: str) -> None:
    cmyk = Image.fromarray(_smooth_rgb8(), "RGB").convert("CMYK")
    path = tmp_path / f"c.{fmt.lower()}"
    cmyk.save(path, fmt)
    loaded = cio.load_image(path)
    assert loaded.rgb.shape == (16, 24, 3) and loaded.bit_depth == 8 and loaded.kind == "colour"
    expected = np.asarray(Image.open(path).convert("RGB")).astype(int)
    assert np.abs(_to8(loaded.rgb).astype(int) - expected).max() <= 1


def test_multi_frame_takes_first(tmp_path: Path) -> None:
    first, second = _rgb8(6, 8, seed=1), _rgb8(6, 8, seed=2)
    frames = [Image.fromarray(first), Image.fromarray(second)]
    frames[0].save(tmp_path / "pages.tif", save_all=True, append_images=frames[1:])
    assert np.array_equal(_to8(cio.load_image(tmp_path / "pages.tif").rgb), first)
    frames[0].save(tmp_path / "anim.webp", save_all=True, append_images=frames[1:], lossless=True)
    assert np.array_equal(_to8(cio.load_image(tmp_path / "anim.webp").rgb), first)


def test_sources_bytes_file_objects_and_streams(io_rgb_png: tuple[Path, np.ndarray]) -> None:
    path, pixels = io_rgb_png
    data = path.read_bytes()
    assert np.array_equal(_to8(cio.load_image(data).rgb), pixels)
    assert np.array_equal(_to8(cio.load_image(str(path)).rgb), pixels)
    with open(path, "rb") as handle:
        loaded = cio.load_image(handle)
        assert not handle.closed  # the caller's file object stays open
    assert loaded.source == str(path) and np.array_equal(_to8(loaded.rgb), pixels)

    class Pipe(io.RawIOBase):
        def __init__(self, payload: bytes) -> None:
            self._payload = io.BytesIO(payload)

        def readable(self) -> bool:
            return True

        def seekable(self) -> bool:
            return False

        def readinto(self, buffer) -> int:  # type: ignore[no-untyped-def]
            chunk = self._payload.read(len(buffer))
            buffer[: len(chunk)] = chunk
            return len(chunk)

    assert np.array_equal(_to8(cio.load_image(io.BufferedReader(Pipe(data))).rgb), pixels)
    offset = io.BytesIO(b"junk" + data)
    offset.seek(4)
    assert np.array_equal(_to8(cio.load_image(offset).rgb), pixels)


def test_inputs_are_byte_identical_after_load(tmp_path: Path, io_jpeg_bytes: bytes) -> None:
    paths = []
    (tmp_path / "a.jpg").write_bytes(io_jpeg_bytes)
    paths.append(tmp_path / "a.jpg")
    grey = _rng().integers(0, 65536, (6, 7), dtype=np.uint16)
    Image.fromarray(grey).save(tmp_path / "b.png", exif=_exif_bytes(6))
    paths.append(tmp_path / "b.png")
    tifffile.imwrite(tmp_path / "c.tif", _rng().integers(0, 65536, (5, 6, 3), dtype=np.uint16), photometric="rgb")
    paths.append(tmp_path / "c.tif")
    (tmp_path / "d.png").write_bytes(cio.encode_image(np.full((4, 4, 3), 0.5), bit_depth=16))
    paths.append(tmp_path / "d.png")
    before = {p: (_sha(p), p.stat().st_mtime_ns) for p in paths}
    for p in paths:
        cio.load_image(p)
    assert {p: (_sha(p), p.stat().st_mtime_ns) for p in paths} == before


# ----------------------------------------------------------------------------------------------
# orientation, EXIF, ICC
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("orientation", range(1, 9))
def test_orientation_matches_pil_exif_transpose(tmp_path: Path, orientation: int) -> None:
    pixels = _rgb8(2, 4, seed=orientation)
    alpha = np.arange(8, dtype=np.uint8).reshape(2, 4) * 30
    path = tmp_path / "o.png"
    Image.fromarray(np.dstack([pixels, alpha]), "RGBA").save(path, exif=_exif_bytes(orientation))
    expected = np.asarray(ImageOps.exif_transpose(Image.open(path)))
    loaded = cio.load_image(path)
    assert np.array_equal(_to8(loaded.rgb), expected[..., :3])
    assert loaded.alpha is not None and np.array_equal(loaded.alpha, expected[..., 3])
    assert loaded.size == (expected.shape[1], expected.shape[0])
    kept = Image.Exif()
    kept.load(loaded.exif)
    assert kept.get(0x0112) == 1 and kept.get(0x010F) == "TestCam"


def test_jpeg_orientation_6_and_exif_written_back(tmp_path: Path) -> None:
    path = tmp_path / "portrait.jpg"
    Image.fromarray(_smooth_rgb8(2, 4)).save(path, exif=_exif_bytes(6), quality=95)
    loaded = cio.load_image(path)
    assert loaded.size == (2, 4) and loaded.rgb.shape == (4, 2, 3)
    assert loaded.exif is not None and loaded.exif.startswith(b"Exif\x00\x00")
    for suffix in (".jpg", ".png", ".webp"):
        out = cio.save_image(tmp_path / f"out{suffix}", loaded.rgb, exif=loaded.exif)
        with Image.open(out) as check:
            exif = check.getexif()
            assert exif.get(0x0112) == 1 and exif.get(0x010F) == "TestCam"
            assert check.size == (2, 4)


def test_exif_without_prefix_and_in_16bit_png(tmp_path: Path) -> None:
    raw = _exif_bytes(3)[6:]  # a bare TIFF-structured block
    out = cio.save_image(tmp_path / "x.png", np.full((3, 5, 3), 0.25), exif=raw, bit_depth=16)
    with Image.open(out) as check:
        assert check.getexif().get(0x0112) == 3 and check.getexif().get(0x010F) == "TestCam"
    loaded = cio.load_image(out)
    assert loaded.size == (5, 3)  # orientation 3 keeps the size; the 16-bit path honours it
    assert loaded.bit_depth == 16


def test_icc_profile_kept(tmp_path: Path) -> None:
    icc = _srgb_icc()
    pixels = _smooth_rgb8()
    for suffix in (".jpg", ".png", ".webp", ".tif"):
        src = tmp_path / f"in{suffix}"
        Image.fromarray(pixels).save(src, icc_profile=icc)
        loaded = cio.load_image(src)
        assert loaded.icc_profile == icc, suffix
        out = cio.save_image(tmp_path / f"out{suffix}", loaded.rgb, icc_profile=loaded.icc_profile)
        with Image.open(out) as check:
            assert check.info.get("icc_profile") == icc, suffix
    for fmt in ("PNG", "TIFF"):
        data = cio.encode_image(pixels / 255.0, bit_depth=16, icc_profile=icc, format=fmt)
        assert cio.load_image(data).icc_profile == icc, fmt
    with Image.open(io.BytesIO(cio.encode_image(pixels / 255.0, bit_depth=16, icc_profile=icc))) as check:
        assert check.info.get("icc_profile") == icc


def test_non_rgb_or_broken_icc_dropped(tmp_path: Path) -> None:
    lab = ImageCms.ImageCmsProfile(ImageCms.createProfile("LAB")).tobytes()
    Image.fromarray(_smooth_rgb8()).save(tmp_path / "lab.png", icc_profile=lab)
    assert cio.load_image(tmp_path / "lab.png").icc_profile is None
    Image.fromarray(_smooth_rgb8()).save(tmp_path / "junk.png", icc_profile=b"not a profile at all")
    assert cio.load_image(tmp_path / "junk.png").icc_profile is None


# ----------------------------------------------------------------------------------------------
# 16-bit and alpha
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("with_alpha", [False, True])
def test_16bit_png_round_trip_exact(tmp_path: Path, with_alpha: bool) -> None:
    values = _rng().integers(0, 65536, (7, 9, 3), dtype=np.uint16)
    alpha = _rng(1).integers(0, 65536, (7, 9), dtype=np.uint16) if with_alpha else None
    out = cio.save_image(tmp_path / "deep.png", values / 65535.0, alpha=alpha, bit_depth=16)
    loaded = cio.load_image(out)
    assert loaded.bit_depth == 16 and loaded.format == "PNG"
    assert np.array_equal(_to16(loaded.rgb), values)
    assert np.abs(loaded.rgb.astype(np.float64) - values / 65535.0).max() <= 1 / 65535
    if with_alpha:
        assert loaded.alpha is not None and loaded.alpha.dtype == np.uint16
        assert np.array_equal(loaded.alpha, alpha)
    else:
        assert loaded.alpha is None
    with Image.open(out) as check:  # Pillow reads it too (reduced to 8 bits)
        check.load()
        assert check.mode == ("RGBA" if with_alpha else "RGB")
        assert np.array_equal(np.asarray(check)[..., :3], (values >> 8).astype(np.uint8))


def test_16bit_tiff_round_trip_exact(tmp_path: Path) -> None:
    values = _rng().integers(0, 65536, (6, 5, 3), dtype=np.uint16)
    alpha = _rng(1).integers(0, 65536, (6, 5), dtype=np.uint16)
    out = cio.save_image(tmp_path / "deep.tif", values / 65535.0, alpha=alpha, bit_depth=16)
    read = tifffile.imread(out)
    assert read.dtype == np.uint16 and np.array_equal(read[..., :3], values) and np.array_equal(read[..., 3], alpha)
    loaded = cio.load_image(out)
    assert loaded.bit_depth == 16 and np.array_equal(_to16(loaded.rgb), values)
    assert loaded.alpha is not None and np.array_equal(loaded.alpha, alpha)


def test_16bit_tiff_from_tifffile_planar_and_grey_alpha(tmp_path: Path) -> None:
    values = _rng().integers(0, 65536, (3, 4, 5), dtype=np.uint16)
    tifffile.imwrite(tmp_path / "planar.tif", values, photometric="rgb", planarconfig="separate")
    loaded = cio.load_image(tmp_path / "planar.tif")
    assert loaded.bit_depth == 16 and np.array_equal(_to16(loaded.rgb), np.moveaxis(values, 0, -1))
    grey_alpha = _rng().integers(0, 65536, (4, 5, 2), dtype=np.uint16)
    tifffile.imwrite(tmp_path / "ga.tif", grey_alpha, photometric="minisblack", extrasamples=("unassalpha",))
    loaded = cio.load_image(tmp_path / "ga.tif")
    assert loaded.kind == "grey" and np.array_equal(_to16(loaded.rgb[..., 1]), grey_alpha[..., 0])
    assert loaded.alpha is not None and np.array_equal(loaded.alpha, grey_alpha[..., 1])


def test_16bit_grey_alpha_png(tmp_path: Path) -> None:
    samples = _rng().integers(0, 65536, (5, 6, 2), dtype=np.uint16)
    rows = np.ascontiguousarray(samples, dtype=">u2").view(np.uint8).reshape(5, -1)
    raw = np.concatenate([np.zeros((5, 1), np.uint8), rows], axis=1).tobytes()
    (tmp_path / "la16.png").write_bytes(_png_bytes(6, 5, 16, 4, raw))
    loaded = cio.load_image(tmp_path / "la16.png")
    assert loaded.bit_depth == 16 and loaded.kind == "grey"
    assert np.array_equal(_to16(loaded.rgb[..., 0]), samples[..., 0])
    assert loaded.alpha is not None and np.array_equal(loaded.alpha, samples[..., 1])


def test_alpha_byte_exact_through_save(tmp_path: Path) -> None:
    pixels = _rgb8(6, 7)
    alpha = _rng(9).integers(0, 256, (6, 7), dtype=np.uint8)
    Image.fromarray(np.dstack([pixels, alpha]), "RGBA").save(tmp_path / "in.png")
    loaded = cio.load_image(tmp_path / "in.png")
    for suffix in (".png", ".tif", ".webp"):
        out = cio.save_image(tmp_path / f"out{suffix}", loaded.rgb, alpha=loaded.alpha, quality=80)
        again = cio.load_image(out)
        assert again.alpha is not None and np.array_equal(again.alpha, alpha), suffix
    # An 8-bit alpha in a 16-bit file is scaled by 257, and back exactly.
    deep = cio.load_image(cio.save_image(tmp_path / "deep.png", loaded.rgb, alpha=loaded.alpha, bit_depth=16))
    assert deep.alpha is not None and np.array_equal(deep.alpha, alpha.astype(np.uint16) * 257)
    back = cio.load_image(cio.save_image(tmp_path / "back.png", deep.rgb, alpha=deep.alpha, bit_depth=8))
    assert back.alpha is not None and np.array_equal(back.alpha, alpha)
    assert np.array_equal(_to8(back.rgb), pixels)


def test_alpha_dropped_for_jpeg_and_bmp(tmp_path: Path) -> None:
    alpha = np.full((4, 4), 7, dtype=np.uint8)
    for suffix, mode in ((".jpg", "RGB"), (".bmp", "RGB")):
        out = cio.save_image(tmp_path / f"a{suffix}", np.full((4, 4, 3), 0.5), alpha=alpha)
        with Image.open(out) as check:
            assert check.mode == mode


def test_16bit_falls_back_to_8bit_for_other_formats(tmp_path: Path) -> None:
    for suffix in (".jpg", ".webp", ".bmp"):
        out = cio.save_image(tmp_path / f"a{suffix}", np.full((4, 4, 3), 0.5), bit_depth=16)
        assert cio.load_image(out).bit_depth == 8


def test_save_rounds_and_clips(tmp_path: Path) -> None:
    rgb = np.array([[[-0.5, 1.5, np.nan], [0.6 / 255, 0.49 / 255, 1.0]]], dtype=np.float64)
    loaded = cio.load_image(cio.save_image(tmp_path / "r.png", rgb))
    assert _to8(loaded.rgb).tolist() == [[[0, 255, 0], [1, 0, 255]]]
    # float32 (what the pipeline gives) takes a faster path to the same samples, inf included
    rgb32 = np.array([[[-0.5, 1.5, np.nan], [0.6 / 255, 0.49 / 255, np.inf]]], dtype=np.float32)
    loaded = cio.load_image(cio.save_image(tmp_path / "r32.png", rgb32))
    assert _to8(loaded.rgb).tolist() == [[[0, 255, 0], [1, 0, 255]]]
    levels = (np.arange(256, dtype=np.float32) / 255).reshape(16, 16, 1).repeat(3, axis=2)
    assert np.array_equal(cio._quantise(levels, 8), cio._quantise(levels.astype(np.float64), 8))


# ----------------------------------------------------------------------------------------------
# limits and errors
# ----------------------------------------------------------------------------------------------


def test_bomb_guard_small_limit(io_rgb_png: tuple[Path, np.ndarray]) -> None:
    path, _ = io_rgb_png
    with pytest.raises(ImageLoadError) as exc:
        cio.load_image(path, max_pixels=100)
    _assert_one_line_error(exc, str(path), "16 x 12 = 0.000192 megapixels", "limit of 0.0001 megapixels", "--max-pixels")
    assert cio.load_image(path, max_pixels=192).size == (16, 12)
    assert cio.load_image(path, max_pixels=None).size == (16, 12)


def test_bomb_guard_is_header_only(tmp_path: Path) -> None:
    # Headers only, no pixel data: any attempt to decode would fail as "truncated".
    huge = tmp_path / "huge.png"
    huge.write_bytes(_png_bytes(100_000, 100_000, 8, 2, None))
    medium = tmp_path / "medium.png"  # 120 MP: above Pillow's warning level, below our default
    medium.write_bytes(_png_bytes(12_000, 10_000, 8, 2, b"\x00" * 100))
    limit_before = Image.MAX_IMAGE_PIXELS
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(ImageLoadError) as exc:
            cio.load_image(huge, max_pixels=1000)
        _assert_one_line_error(exc, "huge.png", "100000 x 100000 = 10000.0 megapixels", "--max-pixels")
        with pytest.raises(ImageLoadError) as exc:
            cio.load_image(huge)  # Pillow's own refusal, reworded with the size
        _assert_one_line_error(exc, "huge.png", "100000 x 100000", "limit of 179.0 megapixels")
        with pytest.raises(ImageLoadError) as exc:
            cio.load_image(huge, max_pixels=None)
        _assert_one_line_error(exc, "huge.png", "100000 x 100000", "pillow's hard limit")
        for limit in (50_000_000, 100_000_000):  # below and above Pillow's warning level
            with pytest.raises(ImageLoadError) as exc:
                cio.load_image(medium, max_pixels=limit)
            _assert_one_line_error(exc, "medium.png", "12000 x 10000 = 120.0 megapixels", "--max-pixels")
        # Within our limit: the header passes, and decoding then finds bad data.
        with pytest.raises(ImageLoadError) as exc:
            cio.load_image(medium)
        _assert_one_line_error(exc, "medium.png", "truncated or corrupt")
    assert not [w for w in caught if issubclass(w.category, Image.DecompressionBombWarning)]
    assert Image.MAX_IMAGE_PIXELS == limit_before


def test_from_pil_limit() -> None:
    with pytest.raises(ImageLoadError, match="megapixels"):
        cio.from_pil(Image.new("RGB", (10, 10)), source="x", max_pixels=99)


def test_load_errors(tmp_path: Path, io_jpeg_bytes: bytes, io_rgb_png: tuple[Path, np.ndarray]) -> None:
    png_path, _ = io_rgb_png
    cases: dict[str, tuple[bytes | None, str]] = {
        "empty.jpg": (b"", "empty file"),
        "text.jpg": (b"hello, this is not a picture\n" * 4, "not an image or unsupported format"),
        "half.jpg": (io_jpeg_bytes[: len(io_jpeg_bytes) // 2], "truncated or corrupt"),
        "half.png": (png_path.read_bytes()[: len(png_path.read_bytes()) // 2], "truncated or corrupt"),
        "corrupt.png": (png_path.read_bytes()[:40] + bytes(range(256)) * 2, "truncated or corrupt"),
        "gif.gif": (b"GIF89a" + b"\x00" * 30, "not an image or unsupported format"),
    }
    for name, (data, reason) in cases.items():
        (tmp_path / name).write_bytes(data or b"")
        with pytest.raises(ImageLoadError) as exc:
            cio.load_image(tmp_path / name)
        _assert_one_line_error(exc, name, reason)
        assert exc.value.source == str(tmp_path / name)
    with pytest.raises(ImageLoadError) as exc:
        cio.load_image(tmp_path)
    _assert_one_line_error(exc, str(tmp_path), "is a directory")
    with pytest.raises(ImageLoadError) as exc:
        cio.load_image(tmp_path / "missing.png")
    _assert_one_line_error(exc, "missing.png", "file not found")
    with pytest.raises(ImageLoadError, match="empty file"):
        cio.load_image(b"")
    with pytest.raises(ImageLoadError, match="not an image"):
        cio.load_image(b"\x00" * 64)


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="needs a non-root POSIX user")
def test_permission_denied(io_rgb_png: tuple[Path, np.ndarray]) -> None:
    path, _ = io_rgb_png
    path.chmod(0)
    try:
        with pytest.raises(ImageLoadError) as exc:
            cio.load_image(path)
        _assert_one_line_error(exc, str(path), "permission denied")
    finally:
        path.chmod(0o644)


# ----------------------------------------------------------------------------------------------
# saving: atomicity and safety
# ----------------------------------------------------------------------------------------------


def _leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.endswith(".tmp"))


def test_atomic_write_and_failures_leave_target(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "deep" / "er" / "out.png"
    cio.save_image(target, np.full((4, 4, 3), 0.2))  # parents are created
    original = target.read_bytes()
    assert _leftovers(target.parent) == []
    assert (target.stat().st_mode & 0o777) != 0o600  # not the temp file's private mode

    with pytest.raises(ValueError, match="shape"):
        cio.save_image(target, np.zeros((4, 4)))
    with pytest.raises(ValueError, match="alpha"):
        cio.save_image(target, np.zeros((4, 4, 3)), alpha=np.zeros((3, 3), np.uint8))
    with pytest.raises(OutputError) as exc:
        cio.save_image(target.with_suffix(".gif"), np.zeros((4, 4, 3)))
    assert "out.gif" in str(exc.value) and "unsupported" in str(exc.value)
    assert not target.with_suffix(".gif").exists()

    def broken_replace(src: str, dst: str) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(cio.os, "replace", broken_replace)
    with pytest.raises(OutputError) as exc:
        cio.save_image(target, np.full((4, 4, 3), 0.9))
    assert "no space left" in str(exc.value).lower() and "\n" not in str(exc.value)
    monkeypatch.undo()
    assert target.read_bytes() == original
    assert _leftovers(target.parent) == []


def test_explicit_format_overrides_suffix(tmp_path: Path) -> None:
    out = cio.save_image(tmp_path / "x.data", np.full((4, 4, 3), 0.5), format="png")
    with Image.open(out) as check:
        assert check.format == "PNG"


def test_refuse_to_overwrite_inputs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src = tmp_path / "photo.png"
    cio.save_image(src, np.full((4, 4, 3), 0.3))
    digest = _sha(src)
    rgb = np.full((4, 4, 3), 0.7)
    with pytest.raises(OutputError, match="refusing to overwrite an input file"):
        cio.save_image(src, rgb, inputs=[src])
    monkeypatch.chdir(tmp_path)
    (tmp_path / "sub").mkdir()
    with pytest.raises(OutputError, match="refusing"):
        cio.save_image("sub/../photo.png", rgb, inputs=["photo.png"])
    link = tmp_path / "link.png"
    link.symlink_to(src)
    with pytest.raises(OutputError, match="refusing"):
        cio.save_image(link, rgb, inputs=[str(src)])
    with pytest.raises(OutputError, match="refusing"):
        cio.save_image(src, rgb, inputs=[link])
    hard = tmp_path / "hard.png"
    os.link(src, hard)
    with pytest.raises(OutputError, match="refusing"):
        cio.save_image(hard, rgb, inputs=[src])
    assert _sha(src) == digest
    cio.save_image(tmp_path / "other.png", rgb, inputs=[src])  # other targets are fine


def test_overwrite_false(tmp_path: Path) -> None:
    target = tmp_path / "o.png"
    cio.save_image(target, np.full((2, 2, 3), 0.1), overwrite=False)
    before = target.read_bytes()
    with pytest.raises(OutputError, match="exists"):
        cio.save_image(target, np.full((2, 2, 3), 0.9), overwrite=False)
    assert target.read_bytes() == before
    cio.save_image(target, np.full((2, 2, 3), 0.9))
    assert target.read_bytes() != before


# ----------------------------------------------------------------------------------------------
# folder walking
# ----------------------------------------------------------------------------------------------


def test_iter_image_files(tmp_path: Path) -> None:
    root = tmp_path / "in"
    for rel in ["b.png", "a.JPG", "notes.txt", ".hidden.png", "sub/c.tif", "sub/deeper/d.webp",
                ".git/e.png", "sub/.cache/f.png", "z.bmp"]:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(b"x")
    single = tmp_path / "single.txt"
    single.write_bytes(b"x")
    (root / "sub" / "loop").symlink_to(root, target_is_directory=True)  # must not hang

    found = list(cio.iter_image_files([root, single]))
    assert [(str(f.relative_to(tmp_path)), str(r)) for f, r in found] == [
        ("in/a.JPG", "a.JPG"),
        ("in/b.png", "b.png"),
        ("in/z.bmp", "z.bmp"),
        ("in/sub/c.tif", "sub/c.tif"),
        ("in/sub/deeper/d.webp", "sub/deeper/d.webp"),
        ("single.txt", "single.txt"),
    ]
    flat = [r.as_posix() for _, r in cio.iter_image_files(str(root), recursive=False)]
    assert flat == ["a.JPG", "b.png", "z.bmp"]


def test_iter_image_files_missing_input_is_lazy(tmp_path: Path) -> None:
    (tmp_path / "ok.png").write_bytes(b"x")
    walker = cio.iter_image_files([tmp_path / "ok.png", tmp_path / "nope", tmp_path / "ok.png"])
    assert next(walker)[0] == tmp_path / "ok.png"
    with pytest.raises(ImageLoadError) as exc:
        next(walker)
    _assert_one_line_error(exc, "nope", "no such file or directory")


# ----------------------------------------------------------------------------------------------
# tone classification and arrays
# ----------------------------------------------------------------------------------------------


def _textured_grey(h: int = 48, w: int = 64) -> np.ndarray:
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    grey = 0.1 + 0.8 * x / (w - 1) + 0.08 * np.sin(y * 1.3) * np.cos(x * 0.7)
    return np.clip(grey, 0.0, 1.0)


def test_classify_tone_cases() -> None:
    grey = _textured_grey()
    gradient = np.repeat(np.linspace(0, 1, 64, dtype=np.float32)[None, :, None], 3, axis=2).repeat(8, axis=0)
    assert cio.classify_tone(gradient) == "grey"
    assert cio.classify_tone(np.dstack([grey] * 3)) == "grey"
    noisy = np.clip(np.dstack([grey] * 3) + _rng().normal(0, 0.5 / 255, (48, 64, 3)), 0, 1)
    assert cio.classify_tone(noisy) == "grey"

    sepia = np.clip(np.dstack([grey] * 3) @ SEPIA.T, 0.0, 1.0)
    assert cio.classify_tone(sepia) == "tinted"
    assert cio.classify_tone(_to8(sepia)) == "tinted"  # integer input is scaled
    grainy = np.clip(sepia + _rng().normal(0, 2 / 255, sepia.shape), 0, 1)
    assert cio.classify_tone(grainy) == "tinted"
    cyanotype = np.stack([0.05 + 0.6 * grey, 0.2 + 0.65 * grey, 0.45 + 0.55 * grey], axis=-1)
    assert cio.classify_tone(np.clip(cyanotype, 0, 1)) == "tinted"

    regions = np.zeros((24, 48, 3), np.float32)
    regions[:, :16, 0] = 0.8
    regions[:, 16:32, 1] = 0.7
    regions[:, 32:, 2] = 0.9
    assert cio.classify_tone(regions) == "colour"
    # Warm-dominated colour (one broad hue family) with objects of equal brightness but
    # different colours: still colour.
    warm = np.zeros((32, 32, 3), np.float32)
    warm[:16] = (0.85, 0.55, 0.30)
    warm[16:] = (0.55, 0.68, 0.45)
    warm[:, ::2] *= 0.8
    assert cio.classify_tone(warm) == "colour"
    assert cio.classify_tone(_smooth_rgb8()) == "colour"
    with pytest.raises(ValueError):
        cio.classify_tone(np.zeros((4, 4)))


def test_classify_tone_large_image_is_downsampled() -> None:
    big = np.repeat(np.repeat(np.dstack([_textured_grey(30, 40)] * 3) @ SEPIA.T, 30, axis=0), 30, axis=1)
    assert big.shape[:2] == (900, 1200)
    assert cio.classify_tone(np.clip(big, 0, 1)) == "tinted"


def test_loaded_kind(tmp_path: Path) -> None:
    sepia = np.clip(np.dstack([_textured_grey()] * 3) @ SEPIA.T, 0, 1)
    assert cio.load_image(cio.save_image(tmp_path / "s.png", sepia)).kind == "tinted"


@pytest.mark.parametrize(
    ("array", "bit_depth", "has_alpha"),
    [
        (np.full((3, 4), 128, np.uint8), 8, False),
        (np.full((3, 4, 1), 128, np.uint8), 8, False),
        (np.full((3, 4, 3), 128, np.uint8), 8, False),
        (np.full((3, 4, 4), 128, np.uint8), 8, True),
        (np.full((3, 4, 3), 40000, np.uint16), 16, False),
        (np.full((3, 4, 4), 40000, np.uint16), 16, True),
        (np.eye(3, 4, dtype=bool), 8, False),
        (np.full((3, 4, 3), 0.25, np.float64), 8, False),
        (np.full((3, 4, 4), 0.5, np.float32), 8, True),
    ],
)
def test_from_array(array: np.ndarray, bit_depth: int, has_alpha: bool) -> None:
    loaded = cio.from_array(array)
    assert loaded.rgb.shape == (3, 4, 3) and loaded.rgb.dtype == np.float32
    assert loaded.bit_depth == bit_depth and (loaded.alpha is not None) == has_alpha
    assert loaded.format is None and loaded.exif is None and loaded.source is None
    assert loaded.size == (4, 3)
    if array.dtype == np.uint16:
        assert np.allclose(loaded.rgb, 40000 / 65535)
        if has_alpha:
            assert loaded.alpha.dtype == np.uint16 and (loaded.alpha == 40000).all()  # type: ignore[union-attr]
    if array.dtype == bool:
        assert np.array_equal(loaded.rgb[..., 0], np.eye(3, 4, dtype=np.float32))
    if array.dtype == np.float32 and has_alpha:
        assert loaded.alpha.dtype == np.uint8 and (loaded.alpha == 128).all()  # type: ignore[union-attr]
    assert not np.shares_memory(loaded.rgb, array)


@pytest.mark.parametrize(
    "array",
    [np.zeros((3, 4), np.int32), np.zeros((3, 4, 2), np.uint8), np.zeros((2, 3, 4, 3), np.uint8),
     np.full((3, 4, 3), 1.5), np.zeros((0, 4, 3), np.uint8), np.zeros(5, np.uint8)],
)
def test_from_array_rejects(array: np.ndarray) -> None:
    with pytest.raises(ValueError):
        cio.from_array(array)


@pytest.mark.integration
def test_io_module_does_not_import_torch() -> None:
    code = "import sys, colorgan.io; assert 'torch' not in sys.modules, 'torch imported'"
    env = {**os.environ, "PYTHONPATH": str(Path(cio.__file__).resolve().parents[1])}
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr


def test_single_channel_images_keep_their_levels_and_give_the_same_l(tmp_path, tiny_weights):
    """A grey file is held as its integer samples plus a read-only 3-channel view; L read from the
    levels is what the general path computes from three float channels."""
    import torch

    from colorgan.pipeline import Colorizer

    c = Colorizer.from_pretrained(tiny_weights)
    rng = np.random.default_rng(0)
    for dtype, depth in ((np.uint8, 8), (np.uint16, 16)):
        arr = rng.integers(0, 256 if depth == 8 else 65536, size=(9, 13)).astype(dtype)
        path = tmp_path / f"g{depth}.png"
        Image.fromarray(arr).save(path)  # mode L or I;16 from the dtype
        loaded = cio.load_image(path)
        assert loaded.kind == "grey" and loaded.bit_depth == depth
        assert loaded.levels is not None and np.array_equal(loaded.levels, arr)
        assert loaded.rgb.shape == (9, 13, 3) and not loaded.rgb.flags.writeable
        assert np.array_equal(loaded.rgb[..., 2], arr.astype(np.float32) / np.float32(255 if depth == 8 else 65535))
        three = cio.from_array(np.repeat(arr[..., None], 3, axis=2))  # a grey photo stored as RGB
        assert three.kind == "grey" and np.array_equal(three.levels, arr)
        # L from the levels is what the general path computes from three float channels.
        from colorgan.pipeline import _grey_luminance

        assert torch.equal(c.prepare(loaded).L, _grey_luminance(np.ascontiguousarray(loaded.rgb), depth))
    Image.fromarray(rng.integers(0, 256, size=(9, 13, 3)).astype(np.uint8), "RGB").save(tmp_path / "c.png")
    assert cio.load_image(tmp_path / "c.png").levels.shape == (9, 13, 3)  # colour: its RGB samples
