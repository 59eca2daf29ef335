"""Image decoding and encoding: formats, bit depths, limits, atomic writes and folder walking.

Everything that touches image files goes through this module, so that the rest of ColorGAN sees
one representation: a :class:`LoadedImage` whose ``rgb`` is a float32 ``(H, W, 3)`` array in
``[0, 1]`` with EXIF orientation already applied, plus whatever must be carried to the output
unchanged (alpha, bit depth, EXIF, ICC profile).

Supported input formats are JPEG (including MPO, the multi-picture JPEG some cameras write),
PNG, TIFF, WebP and BMP; other formats Pillow could open (EPS, which runs Ghostscript, among
them) are refused on purpose. 16-bit data keeps its full precision: 16-bit grey comes from
Pillow directly, 16-bit RGB/RGBA/grey+alpha PNG is decoded through Pillow twice (high and low
bytes, see :func:`_read_png16`), and 16-bit (or otherwise unusual) TIFF is read with tifffile.

This module deliberately imports neither torch nor anything heavy, so the CLI can use it to
validate inputs cheaply. tifffile is imported lazily, only when a TIFF needs it.
"""

from __future__ import annotations

import io
import os
import re
import struct
import sys
import tempfile
import warnings
import zlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, BinaryIO

import numpy as np
from PIL import Image, UnidentifiedImageError

from .errors import ImageLoadError, OutputError

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "IMAGE_SUFFIXES",
    "LoadedImage",
    "atomic_write",
    "classify_tone",
    "encode_image",
    "format_for_suffix",
    "from_array",
    "from_pil",
    "iter_image_files",
    "load_image",
    "save_image",
]

#: Lower-case file suffixes that :func:`iter_image_files` picks up inside folders.
IMAGE_SUFFIXES: frozenset[str] = frozenset({".jpg", ".jpeg", ".png", ".tif", ".tiff", ".webp", ".bmp"})

#: Default limit on width * height; the same value as Pillow's own decompression-bomb limit.
DEFAULT_MAX_PIXELS: int = 178_956_970

_SUFFIX_FORMATS: dict[str, str] = {
    ".jpg": "JPEG",
    ".jpeg": "JPEG",
    ".png": "PNG",
    ".tif": "TIFF",
    ".tiff": "TIFF",
    ".webp": "WEBP",
    ".bmp": "BMP",
}
_OUTPUT_FORMATS: frozenset[str] = frozenset(_SUFFIX_FORMATS.values())
# The only Pillow plugins we let identify a file. (Pillow's JPEG opener also returns camera
# JPEGs with an embedded preview as format "MPO"; we report those as JPEG.)
_INPUT_FORMATS: tuple[str, ...] = ("JPEG", "PNG", "TIFF", "WEBP", "BMP")

_ORIENTATION_TAG = 0x0112
_ICC_TAG = 34675
_EXIF_PREFIX = b"Exif\x00\x00"
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_TIFF_MAGICS = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")

# Exceptions Pillow (and the codecs under it) raise for data it cannot decode.
_DECODE_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    SyntaxError,
    ValueError,
    EOFError,
    IndexError,
    KeyError,
    TypeError,
    struct.error,
    zlib.error,
)

# Thresholds of classify_tone, in units of the [0, 1] value range. See classify_tone for the why.
_GREY_MEAN_CHROMA = 2.5 / 255.0
_TINT_RESULTANT = 0.85
_TINT_RESIDUAL = 0.15
_TINT_NOISE = 4.0 / 255.0
_TONE_BINS = 32
_TONE_MAX_SIDE = 256


@dataclass(eq=False)
class LoadedImage:
    """A decoded image, ready for the model, plus what must be written back unchanged.

    Attributes:
        rgb: float32 array of shape ``(H, W, 3)`` with values in ``[0, 1]``, EXIF orientation
            applied. Grey input has three equal channels. 16-bit input keeps full precision
            (stored value / 65535).
        alpha: ``(H, W)`` array in the ORIGINAL dtype and values (uint8 or uint16), orientation
            applied, or None if the image has no transparency.
        bit_depth: 8 or 16: the precision of the source samples.
        kind: ``'grey'``, ``'tinted'`` or ``'colour'``, see :func:`classify_tone`.
        format: Pillow's format name (``'JPEG'``, ``'PNG'``, ``'TIFF'``, ``'WEBP'``, ``'BMP'``),
            or None for images made from arrays or PIL images without a format.
        exif: raw EXIF (with the ``b'Exif\\x00\\x00'`` prefix Pillow's JPEG writer expects) with
            the Orientation tag reset to 1, because the orientation is already applied to
            ``rgb``; None if there is none.
        icc_profile: the embedded ICC profile if it describes an RGB colour space (a grey or
            CMYK profile cannot be attached to an RGB output), else None.
        source: the file path as given, or None.
        levels: the integer samples (uint8 or uint16, orientation applied): ``(H, W)`` for a
            single-channel source (a grey JPEG, an 8- or 16-bit grey PNG or TIFF, or an RGB file
            whose three channels are equal), from which ``rgb`` is a read-only broadcast view;
            ``(H, W, 3)`` for an RGB source; None for images made from float arrays. The pipeline
            reads L from them by table look-ups instead of converting the float channels.
    """

    rgb: np.ndarray
    alpha: np.ndarray | None
    bit_depth: int
    kind: str
    format: str | None
    exif: bytes | None
    icc_profile: bytes | None
    source: str | None
    levels: np.ndarray | None = None

    @property
    def size(self) -> tuple[int, int]:
        """``(width, height)`` in pixels, after orientation."""
        height, width = self.rgb.shape[:2]
        return (int(width), int(height))


# ----------------------------------------------------------------------------------------------
# Loading
# ----------------------------------------------------------------------------------------------


def load_image(
    source: str | os.PathLike[str] | bytes | BinaryIO,
    *,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
) -> LoadedImage:
    """Decode an image file into a :class:`LoadedImage`.

    Args:
        source: a path, the file's bytes, or a binary file object (read from its current
            position; a non-seekable stream is read into memory first).
        max_pixels: refuse images whose width * height exceeds this, checked from the header
            before any pixel data is decoded. None means no limit of ours; Pillow's hard limit
            (twice ``PIL.Image.MAX_IMAGE_PIXELS``) still applies because we never change that
            global.

    Returns:
        The decoded image: ``rgb`` float32 ``(H, W, 3)`` in ``[0, 1]``, orientation applied.
        Multi-frame files (TIFF pages, animated WebP) give their first frame.

    Raises:
        ImageLoadError: for every failure (missing, directory, permission, empty, not an image,
            truncated or corrupt, too large, unsupported mode), with a one-line reason.
    """
    name = _source_name(source)
    stream, owned = _open_source(source, name)
    try:
        return _load_stream(stream, name, max_pixels)
    finally:
        if owned:
            stream.close()


def from_pil(
    image: Image.Image,
    *,
    source: str | None = None,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
) -> LoadedImage:
    """Convert a PIL image (already open, loaded or not) into a :class:`LoadedImage`.

    EXIF orientation found in the image is applied, and the EXIF and ICC metadata in
    ``image.info`` are kept as :func:`load_image` keeps them. A 16-bit RGB PNG or TIFF that
    Pillow itself reduced to 8 bits cannot be recovered here; use :func:`load_image` on the file.

    Args:
        image: any PIL image in a supported mode.
        source: a name for error messages and ``LoadedImage.source``.
        max_pixels: as in :func:`load_image`; None for no limit.

    Returns:
        The converted image.

    Raises:
        ImageLoadError: if the image is too large, cannot be decoded or has an unsupported mode.
    """
    _check_pixels(image.size, max_pixels, source)
    try:
        with warnings.catch_warnings():
            # The size is already checked against our own limit, so Pillow's warning is noise.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image.load()
    except Image.DecompressionBombError as exc:
        raise ImageLoadError(source, _pil_bomb_reason(exc)) from None
    except _DECODE_ERRORS as exc:
        raise ImageLoadError(source, f"truncated or corrupt image data ({_one_line(exc)})") from None
    channels, alpha, bit_depth = _pil_to_arrays(image, source)
    return _finish_pil(image, channels, alpha, bit_depth, source)


def from_array(array: np.ndarray) -> LoadedImage:
    """Wrap an in-memory array as a :class:`LoadedImage` (no EXIF, no ICC, no orientation).

    Args:
        array: ``(H, W)``, ``(H, W, 1)``, ``(H, W, 3)`` or ``(H, W, 4)`` (the fourth channel is
            alpha). dtype uint8 (bit_depth 8), uint16 (bit_depth 16), bool (False=0, True=1;
            bit_depth 8) or floating point in ``[0, 1]`` (bit_depth 8; alpha becomes uint8).

    Returns:
        The image; ``rgb`` is a float32 copy, never a view of ``array``.

    Raises:
        ValueError: for any other shape or dtype, or float values outside ``[0, 1]``.
    """
    arr = np.asarray(array)
    if arr.ndim == 3 and arr.shape[2] in (1, 3, 4):
        pass
    elif arr.ndim != 2:
        raise ValueError(
            f"expected an image array of shape (H, W) or (H, W, 1|3|4), got shape {arr.shape}"
        )
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ValueError(f"image array is empty: shape {arr.shape}")

    if arr.dtype == np.bool_:
        ints: np.ndarray = arr.astype(np.uint8) * np.uint8(255)
        bit_depth = 8
    elif arr.dtype == np.uint8:
        ints, bit_depth = arr, 8
    elif arr.dtype == np.uint16:
        ints, bit_depth = arr, 16
    elif np.issubdtype(arr.dtype, np.floating):
        if not np.all(np.isfinite(arr)) or arr.min() < 0.0 or arr.max() > 1.0:
            raise ValueError("a float image array must hold finite values in [0, 1]")
        # Float data carries no bit depth of its own; treat it as 8-bit for the output and
        # keep rgb in full float precision (no quantisation on the way in).
        ints, bit_depth = arr.astype(np.float32), 8
    else:
        raise ValueError(
            f"unsupported image array dtype {arr.dtype}: use uint8, uint16, bool or float in [0, 1]"
        )

    alpha: np.ndarray | None = None
    if ints.ndim == 3 and ints.shape[2] == 4:
        alpha = ints[..., 3]
        if alpha.dtype == np.float32:
            alpha = np.round(alpha * 255.0).astype(np.uint8)
        else:
            alpha = np.array(alpha, copy=True)
        ints = ints[..., :3]
    elif ints.ndim == 3 and ints.shape[2] == 1:
        ints = ints[..., 0]

    if ints.dtype == np.float32:
        rgb = np.array(ints, dtype=np.float32, copy=True)
        if rgb.ndim == 2:
            rgb = np.repeat(rgb[..., None], 3, axis=2)
        rgb = np.ascontiguousarray(rgb)
        return LoadedImage(rgb, alpha, bit_depth, classify_tone(rgb), None, None, None, None)
    return _finish(ints, alpha, bit_depth, orientation=1, fmt=None, exif=None, icc=None, source=None)


def _source_name(source: object) -> str | None:
    """The path to name in messages: the path as given, or a file object's name."""
    if isinstance(source, (str, os.PathLike)):
        return os.fsdecode(source)
    if isinstance(source, (bytes, bytearray, memoryview)):
        return None
    name = getattr(source, "name", None)
    return name if isinstance(name, str) else None


def _open_source(source: Any, name: str | None) -> tuple[IO[bytes], bool]:
    """Return a seekable binary stream for ``source`` and whether we must close it.

    File-system problems become ImageLoadError here, so Pillow only ever sees readable data.
    """
    if isinstance(source, (str, os.PathLike)):
        path = os.fspath(source)
        if os.path.isdir(path):
            raise ImageLoadError(name, "is a directory")
        try:
            handle = open(path, "rb")  # noqa: SIM115 - closed by load_image
        except FileNotFoundError:
            raise ImageLoadError(name, "file not found") from None
        except IsADirectoryError:
            raise ImageLoadError(name, "is a directory") from None
        except PermissionError:
            raise ImageLoadError(name, "permission denied") from None
        except OSError as exc:
            raise ImageLoadError(name, _os_reason(exc)) from None
        try:
            empty = os.fstat(handle.fileno()).st_size == 0
        except OSError:
            empty = False
        if empty:
            handle.close()
            raise ImageLoadError(name, "empty file (0 bytes)")
        return handle, True

    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
        if not data:
            raise ImageLoadError(name, "empty file (0 bytes)")
        return io.BytesIO(data), True

    if not hasattr(source, "read"):
        raise TypeError(f"expected a path, bytes or a binary file object, got {type(source).__name__}")
    try:
        seekable = bool(source.seekable())
    except (AttributeError, OSError, ValueError):
        seekable = False
    try:
        if not seekable:
            # Pillow and tifffile seek freely; a pipe or socket must be buffered first.
            data = source.read()
            if not isinstance(data, (bytes, bytearray)):
                raise TypeError("the file object must be opened in binary mode")
            if not data:
                raise ImageLoadError(name, "empty file (0 bytes)")
            return io.BytesIO(bytes(data)), True
        start = source.tell()
        end = source.seek(0, os.SEEK_END)
        source.seek(start)
    except OSError as exc:
        raise ImageLoadError(name, _os_reason(exc)) from None
    if end - start <= 0:
        raise ImageLoadError(name, "empty file (0 bytes)")
    if start:
        # Pillow seeks to 0 when identifying; hand it a stream that starts at the image.
        return io.BytesIO(source.read()), True
    return source, False


def _load_stream(stream: IO[bytes], name: str | None, max_pixels: int | None) -> LoadedImage:
    """Identify, size-check and decode an image from a seekable stream."""
    head = stream.read(16)
    stream.seek(0)
    im = _pil_open(stream, name, max_pixels, head)
    if im is None:
        # Pillow cannot open some valid TIFFs (16-bit grey+alpha, planar 16-bit RGB...).
        return _load_tiff(stream, name, max_pixels)
    # The image is never im.close()d: Pillow's close() also closes the stream, which may be the
    # caller's file object; load_image closes the streams it opened itself.
    _check_pixels(im.size, max_pixels, name)
    if im.format == "TIFF" and _tiff_needs_tifffile(im):
        return _load_tiff(stream, name, max_pixels)
    if im.format == "PNG" and _png16_rawmode(im) is not None:
        channels, alpha = _read_png16(stream, im, name, max_pixels)
        bit_depth = 16
    else:
        _pil_load(im, name, max_pixels)
        channels, alpha, bit_depth = _pil_to_arrays(im, name)
    return _finish_pil(im, channels, alpha, bit_depth, name)


def _bomb_filter(max_pixels: int | None) -> str:
    """How to treat Pillow's DecompressionBombWarning for our limit.

    With a limit at or below Pillow's own, its warning can only fire for an image we refuse
    anyway, so it becomes an error; with a larger limit (or None) the user asked for big images
    and the warning is ignored. Pillow's global MAX_IMAGE_PIXELS is never modified.
    """
    if max_pixels is not None and Image.MAX_IMAGE_PIXELS is not None and max_pixels <= Image.MAX_IMAGE_PIXELS:
        return "error"
    return "ignore"


def _pil_open(
    stream: IO[bytes], name: str | None, max_pixels: int | None, head: bytes
) -> Image.ImageFile.ImageFile | None:
    """Identify the image (header only); None means "a TIFF that tifffile should try"."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter(_bomb_filter(max_pixels), Image.DecompressionBombWarning)
            return Image.open(stream, formats=list(_INPUT_FORMATS))
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        # Pillow refused from the header alone; report its numbers in our words.
        size = _header_size(stream)
        if size is not None:
            _check_pixels(size, max_pixels, name)
        raise ImageLoadError(name, _pil_bomb_reason(exc, max_pixels, size)) from None
    except UnidentifiedImageError:
        if head.startswith(_TIFF_MAGICS):
            return None
        sniffed = _sniff_format(head)
        if sniffed is not None:
            # The signature says it is one of ours, so the header itself is damaged.
            raise ImageLoadError(
                name, f"truncated or corrupt image data (unreadable {sniffed} header)"
            ) from None
        raise ImageLoadError(name, "not an image or unsupported format") from None
    except _DECODE_ERRORS as exc:
        if head.startswith(_TIFF_MAGICS):
            return None
        raise ImageLoadError(name, f"truncated or corrupt image data ({_one_line(exc)})") from None


def _sniff_format(head: bytes) -> str | None:
    """The supported format a file's first bytes claim, or None."""
    if head.startswith(_PNG_SIGNATURE):
        return "PNG"
    if head.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if head.startswith(b"RIFF") and head[8:12] == b"WEBP":
        return "WebP"
    if head.startswith(b"BM"):
        return "BMP"
    if head.startswith(_TIFF_MAGICS):
        return "TIFF"
    return None


def _pil_load(im: Image.Image, name: str | None, max_pixels: int | None) -> None:
    """Decode the pixels, turning every decoder failure into ImageLoadError."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter(_bomb_filter(max_pixels), Image.DecompressionBombWarning)
            im.load()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageLoadError(name, _pil_bomb_reason(exc, max_pixels, im.size)) from None
    except MemoryError:
        raise ImageLoadError(name, "not enough memory to decode the image") from None
    except _DECODE_ERRORS as exc:
        raise ImageLoadError(name, f"truncated or corrupt image data ({_one_line(exc)})") from None


def _check_pixels(size: tuple[int, int], max_pixels: int | None, name: str | None) -> None:
    """Raise the decompression-bomb error if width * height exceeds ``max_pixels``."""
    width, height = int(size[0]), int(size[1])
    pixels = width * height
    if max_pixels is not None and pixels > max_pixels:
        raise ImageLoadError(
            name,
            f"image is {width} x {height} = {_megapixels(pixels)} megapixels, over the limit of "
            f"{_megapixels(max_pixels)} megapixels (raise it with --max-pixels)",
        )


def _megapixels(pixels: int) -> str:
    """Megapixels to print: one decimal for real photos, enough digits for tiny test limits."""
    value = pixels / 1e6
    if value >= 0.1:
        return f"{value:.1f}"
    return f"{value:.6f}".rstrip("0").rstrip(".") or "0"


def _pil_bomb_reason(
    exc: BaseException, max_pixels: int | None = None, size: tuple[int, int] | None = None
) -> str:
    """Reword Pillow's decompression-bomb message (which has no width and height)."""
    numbers = [int(n) for n in re.findall(r"\d+", str(exc))]
    if len(numbers) < 2:
        return f"image is too large ({_one_line(exc)})"
    pixels, limit = numbers[0], numbers[1]
    shown = f"{size[0]} x {size[1]} = " if size is not None else ""
    if max_pixels is not None and max_pixels <= limit:
        return (
            f"image is {shown}{_megapixels(pixels)} megapixels, over the limit of "
            f"{_megapixels(max_pixels)} megapixels (raise it with --max-pixels)"
        )
    # Only Pillow's hard limit (2 * MAX_IMAGE_PIXELS, a global we leave alone) is left.
    return (
        f"image is {shown}{_megapixels(pixels)} megapixels, over Pillow's hard limit of "
        f"{_megapixels(limit)} megapixels"
    )


def _header_size(stream: IO[bytes]) -> tuple[int, int] | None:
    """Width and height from the header alone, for when Image.open refused the image.

    Pillow's format openers read only the header; the bomb check is done afterwards by
    Image.open, so calling the opener directly gives the size. None if that fails.
    """
    try:
        stream.seek(0)
        prefix = stream.read(16)
        for fmt in _INPUT_FORMATS:
            factory, accept = Image.OPEN[fmt]
            if accept is None or accept(prefix) is True:
                stream.seek(0)
                size = factory(stream, "").size
                stream.seek(0)
                return (int(size[0]), int(size[1]))
    except Exception:  # the size only improves a message
        pass
    try:
        stream.seek(0)
    except OSError:
        pass
    return None


def _png16_rawmode(im: Image.Image) -> str | None:
    """Pillow's raw mode for a 16-bit colour or grey+alpha PNG (which it reduces to 8 bits)."""
    if im.mode not in ("RGB", "RGBA") or len(im.tile) != 1:
        return None
    args = tuple(im.tile[0])[3]
    rawmode = args if isinstance(args, str) else (args[0] if args else None)
    if rawmode in ("RGB;16B", "RGBA;16B", "LA;16B"):
        return rawmode
    return None


def _decode_png_as(
    stream: IO[bytes], rawmode: str, name: str | None, max_pixels: int | None
) -> np.ndarray:
    """Decode the PNG in ``stream`` again, unpacking its samples with ``rawmode``.

    Pillow's PNG decoder undoes zlib and the row filters (which need the real bytes per pixel,
    taken from the raw mode's bit count), then an "unpacker" turns each pixel into 8-bit
    samples. Choosing an unpacker with the same bit count but a different byte selection reads
    the bytes Pillow would otherwise throw away, at C speed.
    """
    stream.seek(0)
    im = _pil_open(stream, name, max_pixels, b"")
    if im is None:  # pragma: no cover - the same bytes opened a moment ago
        raise ImageLoadError(name, "not an image or unsupported format")
    # No im.close(): Pillow's close() would also close the stream, which may be the caller's.
    tile = tuple(im.tile[0])  # a plain tuple in older Pillow, a namedtuple in newer
    args = rawmode if isinstance(tile[3], str) else (rawmode, *tile[3][1:])
    replaced = (*tile[:3], args)
    im.tile = [type(im.tile[0])(*replaced) if hasattr(im.tile[0], "_replace") else replaced]
    _pil_load(im, name, max_pixels)
    return np.asarray(im)


def _read_png16(
    stream: IO[bytes], im: Image.Image, name: str | None, max_pixels: int | None
) -> tuple[np.ndarray, np.ndarray | None]:
    """Full-precision samples of a 16-bit RGB, RGBA or grey+alpha PNG.

    Returns:
        ``(channels, alpha)``: channels uint16 ``(H, W, 3)`` or ``(H, W)``; alpha uint16
        ``(H, W)`` or None.
    """
    rawmode = _png16_rawmode(im)
    if rawmode == "LA;16B":
        # 4 bytes a pixel decoded as 8-bit RGBA gives (L hi, L lo, A hi, A lo) untouched.
        raw = _decode_png_as(stream, "RGBA", name, max_pixels).astype(np.uint16)
        grey = (raw[..., 0] << 8) | raw[..., 1]
        alpha = (raw[..., 2] << 8) | raw[..., 3]
        return grey, alpha
    assert rawmode is not None
    # The "little-endian" unpacker picks the second byte of each sample, which in a
    # big-endian PNG is the low byte.
    high = _decode_png_as(stream, rawmode, name, max_pixels).astype(np.uint16)
    low = _decode_png_as(stream, rawmode.replace("16B", "16L"), name, max_pixels).astype(np.uint16)
    full = (high << 8) | low
    # Keep the PNG's tRNS (a single transparent colour), which Pillow stores in info.
    trns = im.info.get("transparency")
    if full.shape[2] == 4:
        return np.ascontiguousarray(full[..., :3]), np.ascontiguousarray(full[..., 3])
    return full, _key_alpha(full, trns, np.uint16)


def _tiff_needs_tifffile(im: Image.Image) -> bool:
    """True if Pillow would lose precision on this TIFF (more than 8 bits per colour sample)."""
    if im.mode.startswith("I;16") or im.mode in ("I", "F"):
        return False
    try:
        bits = im.tag_v2.get(258)  # type: ignore[attr-defined]
    except AttributeError:
        return False
    if bits is None:
        return False
    if isinstance(bits, int):
        bits = (bits,)
    return any(int(b) > 8 for b in bits)


def _load_tiff(stream: IO[bytes], name: str | None, max_pixels: int | None) -> LoadedImage:
    """Read the first page of a TIFF with tifffile (16-bit RGB, grey+alpha, planar layouts)."""
    try:
        import tifffile
    except ImportError:  # pragma: no cover - tifffile is a dependency
        raise ImageLoadError(name, "not an image or unsupported format") from None
    stream.seek(0)
    try:
        with tifffile.TiffFile(stream) as tif:
            page = tif.pages[0]
            axes = page.axes
            shape = page.shape
            width = shape[axes.index("X")] if "X" in axes else 0
            height = shape[axes.index("Y")] if "Y" in axes else 0
            _check_pixels((width, height), max_pixels, name)
            photometric = int(page.photometric)
            extrasamples = tuple(int(x) for x in (page.extrasamples or ()))
            tags = page.tags
            orientation_tag = tags.get(274)
            orientation = int(orientation_tag.value) if orientation_tag is not None else 1
            icc_tag = tags.get(_ICC_TAG)
            icc = bytes(icc_tag.value) if icc_tag is not None else None
            data = page.asarray()
    except ImageLoadError:
        raise
    except Exception as exc:  # tifffile raises many types (TiffFileError, ValueError, ...)
        reason = _one_line(exc)
        if "not a tiff" in reason.lower() or "invalid tiff" in reason.lower():
            raise ImageLoadError(name, "not an image or unsupported format") from None
        raise ImageLoadError(name, f"truncated or corrupt image data ({reason})") from None

    # Put the data in (H, W, S) order whatever the planar configuration was.
    kept = "".join(a for a in axes if a in "YXS")
    if len(kept) != len(axes):
        # Extra axes of length 1 (Q, I, ...) are squeezed; anything else is unsupported.
        squeeze = tuple(i for i, a in enumerate(axes) if a not in "YXS")
        if any(data.shape[i] != 1 for i in squeeze):
            raise ImageLoadError(name, f"unsupported TIFF layout (axes {axes})")
        data = data.squeeze(axis=squeeze)
    if "S" not in kept:
        data = data[..., None]
        kept += "S"
    data = np.transpose(data, [kept.index(a) for a in "YXS"])

    if data.dtype == np.uint8:
        bit_depth = 8
    elif data.dtype == np.uint16:
        bit_depth = 16
    elif data.dtype == np.bool_:
        data, bit_depth = data.astype(np.uint8) * np.uint8(255), 8
    else:
        raise ImageLoadError(name, f"unsupported TIFF sample type {data.dtype}")

    samples = data.shape[2]
    alpha: np.ndarray | None = None
    if photometric == 2 and samples >= 3:  # RGB
        channels = data[..., :3]
        if samples >= 4 and extrasamples and extrasamples[0] in (1, 2):
            alpha = data[..., 3]
    elif photometric in (0, 1) and samples >= 1:  # min-is-white / min-is-black grey
        channels = data[..., 0]
        if photometric == 0:
            channels = np.iinfo(channels.dtype).max - channels
        if samples >= 2 and extrasamples and extrasamples[0] in (1, 2):
            alpha = data[..., 1]
    else:
        raise ImageLoadError(name, f"unsupported TIFF colour space (photometric {photometric})")
    return _finish(
        np.ascontiguousarray(channels),
        None if alpha is None else np.ascontiguousarray(alpha),
        bit_depth,
        orientation=orientation,
        fmt="TIFF",
        exif=None,
        icc=_rgb_icc(icc),
        source=name,
    )


def _key_alpha(channels: np.ndarray, key: Any, dtype: type[np.integer]) -> np.ndarray | None:
    """Alpha from a colour key (PNG tRNS for grey/RGB): 0 where the pixel equals the key."""
    if key is None or isinstance(key, bytes):
        return None
    top = np.iinfo(dtype).max
    if channels.ndim == 2:
        if not isinstance(key, int):
            return None
        hit = channels == key
    else:
        if not (isinstance(key, tuple) and len(key) == channels.shape[2]):
            return None
        hit = np.all(channels == np.asarray(key, dtype=channels.dtype), axis=2)
    return np.where(hit, 0, top).astype(dtype)


def _pil_to_arrays(im: Image.Image, name: str | None) -> tuple[np.ndarray, np.ndarray | None, int]:
    """Integer samples of a loaded PIL image.

    Returns:
        ``(channels, alpha, bit_depth)``: channels uint8/uint16 of shape ``(H, W)`` (grey) or
        ``(H, W, 3)``; alpha ``(H, W)`` of the same dtype, or None.

    Raises:
        ImageLoadError: for modes we cannot represent.
    """
    mode = im.mode
    try:
        if mode == "1":
            return np.asarray(im.convert("L")), None, 8
        if mode == "L":
            grey = np.asarray(im)
            return grey, _key_alpha(grey, im.info.get("transparency"), np.uint8), 8
        if mode in ("LA", "La"):
            arr = np.asarray(im if mode == "LA" else im.convert("LA"))
            return arr[..., 0], np.ascontiguousarray(arr[..., 1]), 8
        if mode.startswith("I;16"):
            # np.asarray keeps the buffer's byte order; astype makes it native uint16.
            grey = np.asarray(im).astype(np.uint16)
            return grey, _key_alpha(grey, im.info.get("transparency"), np.uint16), 16
        if mode == "I":
            values = np.asarray(im)
            if values.size and (int(values.min()) < 0 or int(values.max()) > 65535):
                raise ImageLoadError(name, "unsupported mode I (32-bit integers outside 0..65535)")
            grey = values.astype(np.uint16)
            return grey, _key_alpha(grey, im.info.get("transparency"), np.uint16), 16
        if mode == "RGB":
            rgb = np.asarray(im)
            return rgb, _key_alpha(rgb, im.info.get("transparency"), np.uint8), 8
        if mode in ("RGBA", "RGBa"):
            arr = np.asarray(im if mode == "RGBA" else im.convert("RGBA"))
            return np.ascontiguousarray(arr[..., :3]), np.ascontiguousarray(arr[..., 3]), 8
        if mode in ("P", "PA"):
            if mode == "PA" or _has_transparency(im):
                arr = np.asarray(im.convert("RGBA"))
                return np.ascontiguousarray(arr[..., :3]), np.ascontiguousarray(arr[..., 3]), 8
            return np.asarray(im.convert("RGB")), None, 8
        if mode == "CMYK":
            return np.asarray(_cmyk_to_rgb(im)), None, 8
        if mode in ("RGBX", "YCbCr", "HSV", "LAB"):
            return np.asarray(im.convert("RGB")), None, 8
    except ImageLoadError:
        raise
    except _DECODE_ERRORS as exc:
        raise ImageLoadError(name, f"unsupported mode {mode} ({_one_line(exc)})") from None
    raise ImageLoadError(name, f"unsupported mode {mode}")


def _has_transparency(im: Image.Image) -> bool:
    """Whether a palette image has transparency (``has_transparency_data`` is Pillow >= 10.1)."""
    flag = getattr(im, "has_transparency_data", None)
    if flag is not None:
        return bool(flag)
    palette = getattr(im, "palette", None)
    return "transparency" in im.info or getattr(palette, "mode", "RGB") == "RGBA"


def _cmyk_to_rgb(im: Image.Image) -> Image.Image:
    """CMYK to RGB, through the embedded CMYK profile when there is one (else Pillow's formula)."""
    icc = im.info.get("icc_profile")
    if icc:
        try:
            from PIL import ImageCms

            src = ImageCms.ImageCmsProfile(io.BytesIO(icc))
            if src.profile.xcolor_space.strip() == "CMYK":
                dst = ImageCms.createProfile("sRGB")
                out = ImageCms.profileToProfile(im, src, dst, outputMode="RGB")
                if out is not None:
                    return out
        except Exception:  # a broken profile only costs accuracy, not the image
            pass
    return im.convert("RGB")


def _pil_orientation(im: Image.Image) -> int:
    """The EXIF (or TIFF) Orientation value 1..8; 1 if absent or unreadable."""
    try:
        value = im.getexif().get(_ORIENTATION_TAG, 1)
        value = int(value)
    except Exception:  # corrupt EXIF must not make an otherwise good image unreadable
        return 1
    return value if 1 <= value <= 8 else 1


def _pil_exif(im: Image.Image) -> bytes | None:
    """Raw EXIF to write back, prefixed, with Orientation reset to 1.

    Only EXIF stored as a block (JPEG APP1, PNG eXIf, WebP EXIF) is kept. A TIFF's "EXIF" is its
    own IFD (strip offsets and all), which would be nonsense in another file, so TIFF gives None.
    """
    raw = im.info.get("exif")
    if not isinstance(raw, (bytes, bytearray)) or not raw:
        return None
    return _reset_orientation(bytes(raw))


def _reset_orientation(exif: bytes) -> bytes | None:
    """Return ``exif`` (prefixed with ``Exif\\0\\0``) with its Orientation tag set to 1.

    The tag is patched in place when it is a plain SHORT in IFD0, the usual case, so every
    other byte (maker notes with absolute offsets included) survives. Otherwise Pillow
    re-serialises the EXIF; if even that fails the EXIF is dropped, since keeping a stale
    orientation would rotate the output a second time in viewers.
    """
    body = exif
    while body.startswith(_EXIF_PREFIX):
        body = body[len(_EXIF_PREFIX):]
    patched = _patch_orientation(body)
    if patched is not None:
        return _EXIF_PREFIX + patched
    try:
        parsed = Image.Exif()
        parsed.load(_EXIF_PREFIX + body)
        parsed[_ORIENTATION_TAG] = 1
        out = parsed.tobytes()
    except Exception:
        return None
    return out if out.startswith(_EXIF_PREFIX) else _EXIF_PREFIX + out


def _patch_orientation(body: bytes) -> bytes | None:
    """Set IFD0's Orientation to 1 in a TIFF-structured EXIF body; None if it can't be done."""
    if len(body) < 8:
        return None
    if body[:2] == b"II":
        order = "<"
    elif body[:2] == b"MM":
        order = ">"
    else:
        return None
    magic, ifd = struct.unpack_from(order + "HI", body, 2)
    if magic != 42 or ifd + 2 > len(body):
        return None
    (count,) = struct.unpack_from(order + "H", body, ifd)
    buf = bytearray(body)
    for i in range(count):
        entry = ifd + 2 + 12 * i
        if entry + 12 > len(body):
            return None
        tag, kind, n = struct.unpack_from(order + "HHI", body, entry)
        if tag == _ORIENTATION_TAG:
            if kind != 3 or n != 1:
                return None
            struct.pack_into(order + "H", buf, entry + 8, 1)
            return bytes(buf)
    return bytes(buf)  # no Orientation tag: nothing to reset


def _rgb_icc(icc: Any) -> bytes | None:
    """``icc`` if it is a parseable profile for an RGB colour space, else None."""
    if not isinstance(icc, (bytes, bytearray)) or not icc:
        return None
    try:
        from PIL import ImageCms

        profile = ImageCms.ImageCmsProfile(io.BytesIO(bytes(icc)))
        space = profile.profile.xcolor_space.strip()
    except Exception:  # ImageCms missing, or a profile it cannot parse: drop it silently
        return None
    return bytes(icc) if space == "RGB" else None


_ORIENTATIONS = {
    # EXIF value -> transform; each matches PIL.ImageOps.exif_transpose (tests check all 8).
    2: lambda a: a[:, ::-1],
    3: lambda a: a[::-1, ::-1],
    4: lambda a: a[::-1],
    5: lambda a: a.swapaxes(0, 1),
    6: lambda a: np.rot90(a, -1),
    7: lambda a: a.swapaxes(0, 1)[::-1, ::-1],
    8: lambda a: np.rot90(a, 1),
}


def _orient(array: np.ndarray, orientation: int) -> np.ndarray:
    """Apply EXIF orientation to an ``(H, W[, C])`` array.

    Done in numpy rather than with ``ImageOps.exif_transpose`` so that one code path serves
    Pillow-decoded, PNG-16 and tifffile-decoded data, and alpha gets exactly the same transform.
    """
    transform = _ORIENTATIONS.get(orientation)
    return np.ascontiguousarray(array if transform is None else transform(array))


def _finish_pil(
    im: Image.Image, channels: np.ndarray, alpha: np.ndarray | None, bit_depth: int, source: str | None
) -> LoadedImage:
    """:func:`_finish` with the orientation, format, EXIF and ICC profile a Pillow image carries."""
    return _finish(
        channels,
        alpha,
        bit_depth,
        orientation=_pil_orientation(im),
        fmt="JPEG" if im.format == "MPO" else im.format,  # camera JPEGs with a preview image
        exif=_pil_exif(im),
        icc=_rgb_icc(im.info.get("icc_profile")),
        source=source,
    )


def _finish(
    channels: np.ndarray,
    alpha: np.ndarray | None,
    bit_depth: int,
    *,
    orientation: int,
    fmt: str | None,
    exif: bytes | None,
    icc: bytes | None,
    source: str | None,
) -> LoadedImage:
    """Orient integer samples, scale them to float32 ``[0, 1]`` RGB and classify the tone."""
    channels = _orient(channels, orientation)
    if alpha is not None:
        alpha = _orient(alpha, orientation)
    scale = np.float32(255.0 if bit_depth == 8 else 65535.0)
    levels = None
    if channels.ndim == 3 and channels.size and np.array_equal(channels[..., 0], channels[..., 1]) and np.array_equal(
        channels[..., 0], channels[..., 2]
    ):
        channels = channels[..., 0]  # a grey photo stored as RGB (many scans are): the same as one channel
    if channels.ndim == 2:
        # One channel: grey by construction (classify_tone would say so), and three equal float
        # channels need not be stored: a read-only view repeats the one (12 MB and about 10 ms
        # saved per megapixel).
        levels = np.ascontiguousarray(channels)
        grey = levels.astype(np.float32) / scale
        rgb = np.broadcast_to(grey[..., None], (*grey.shape, 3))
        kind = "grey"
    else:
        levels = np.ascontiguousarray(channels)
        rgb = np.ascontiguousarray(channels.astype(np.float32) / scale)
        kind = classify_tone(rgb)
    return LoadedImage(
        rgb=rgb,
        alpha=alpha,
        bit_depth=bit_depth,
        kind=kind,
        format=fmt,
        exif=exif,
        icc_profile=icc,
        source=source,
        levels=levels,
    )


# ----------------------------------------------------------------------------------------------
# Tone classification
# ----------------------------------------------------------------------------------------------


def classify_tone(rgb: np.ndarray) -> str:
    """Say whether an image is grey, a single-hue toned monochrome, or in colour.

    The image is block-averaged down to at most 256 px a side (averaging, unlike striding, also
    suppresses grain and JPEG chroma noise), and each pixel's opponent chroma is taken as its
    BT.601 (Cb, Cr), in units of the ``[0, 1]`` value range.

    * ``'grey'``: the mean chroma magnitude is below 2.5/255: the channels are equal up to
      rounding and compression noise.
    * ``'tinted'`` (sepia, cyanotype, selenium, a yellowed print): two tests, both needed.
      (1) One hue: the mean chroma vector is at least 0.85 of the mean chroma length (three
      differently coloured regions average out to a short vector). (2) The colour is a function
      of brightness: a toned print's chroma is set by its tone curve (highlights clip, shadows
      carry less tint), so within each of 32 luminance bins the chroma barely varies. The RMS
      deviation from the bin means must be at most 0.15 of the RMS chroma, or at most 4/255
      (noise on a faint tint). A colour photo of mostly warm hues passes (1) but fails (2),
      because objects of equal brightness differ in colour.
    * ``'colour'``: everything else.

    Args:
        rgb: ``(H, W, 3)`` array in ``[0, 1]`` (float), or uint8/uint16 (scaled accordingly).

    Returns:
        ``'grey'``, ``'tinted'`` or ``'colour'``.

    Raises:
        ValueError: if ``rgb`` is not ``(H, W, 3)``.
    """
    arr = np.asarray(rgb)
    if arr.ndim != 3 or arr.shape[2] != 3:
        raise ValueError(f"classify_tone expects an (H, W, 3) array, got shape {arr.shape}")
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        return "grey"
    small = _block_mean(arr, _TONE_MAX_SIDE)
    if np.issubdtype(arr.dtype, np.integer):
        small /= np.float32(np.iinfo(arr.dtype).max)
    pixels = np.clip(np.nan_to_num(small), 0.0, 1.0).reshape(-1, 3)
    red, green, blue = pixels[:, 0], pixels[:, 1], pixels[:, 2]
    luma = 0.299 * red + 0.587 * green + 0.114 * blue
    chroma = np.stack([0.564 * (blue - luma), 0.713 * (red - luma)], axis=1)
    magnitude = np.sqrt(np.sum(chroma * chroma, axis=1))
    mean_magnitude = float(magnitude.mean())
    if mean_magnitude < _GREY_MEAN_CHROMA:
        return "grey"

    mean_vector = chroma.mean(axis=0)
    if float(np.hypot(mean_vector[0], mean_vector[1])) < _TINT_RESULTANT * mean_magnitude:
        return "colour"

    bins = np.minimum((luma * _TONE_BINS).astype(np.int64), _TONE_BINS - 1)
    counts = np.maximum(np.bincount(bins, minlength=_TONE_BINS), 1)
    bin_means = np.stack(
        [np.bincount(bins, weights=chroma[:, k], minlength=_TONE_BINS) / counts for k in range(2)],
        axis=1,
    )
    residual = chroma - bin_means[bins]
    residual_rms = float(np.sqrt(np.mean(np.sum(residual * residual, axis=1))))
    chroma_rms = float(np.sqrt(np.mean(magnitude * magnitude)))
    if residual_rms <= max(_TINT_RESIDUAL * chroma_rms, _TINT_NOISE):
        return "tinted"
    return "colour"


def _block_mean(arr: np.ndarray, max_side: int) -> np.ndarray:
    """float32 ``(h, w, C)`` block means of ``arr`` with ``max(h, w) <= max_side``."""
    step = max(1, -(-max(arr.shape[0], arr.shape[1]) // max_side))
    if step == 1:
        return arr.astype(np.float32)
    if min(arr.shape[0], arr.shape[1]) < step:
        # A very thin strip has no whole blocks; striding it is good enough.
        return arr[::step, ::step].astype(np.float32)
    height = arr.shape[0] - arr.shape[0] % step
    width = arr.shape[1] - arr.shape[1] % step
    # Rows of blocks first, then columns: two simple reductions (5 ms per megapixel) instead of one
    # over two strided axes at once (22 ms, measured); the same means to float rounding.
    c = arr.shape[2]
    rows = arr[:height, :width].reshape(height // step, step, width * c).sum(axis=1, dtype=np.float32)
    cols = rows.reshape(height // step, width // step, step, c).sum(axis=2, dtype=np.float32)
    return cols / np.float32(step * step)


# ----------------------------------------------------------------------------------------------
# Saving
# ----------------------------------------------------------------------------------------------


def format_for_suffix(suffix: str) -> str:
    """Pillow format name for a file suffix (``'.jpg'`` -> ``'JPEG'``), case-insensitive.

    Raises:
        OutputError: if the suffix is not one of :data:`IMAGE_SUFFIXES`.
    """
    key = suffix.lower()
    if key and not key.startswith("."):
        key = "." + key
    fmt = _SUFFIX_FORMATS.get(key)
    if fmt is None:
        shown = suffix or "(none)"
        raise OutputError(
            None,
            f"unsupported output file type {shown}: use one of {', '.join(sorted(IMAGE_SUFFIXES))}",
        )
    return fmt


def encode_image(
    rgb: np.ndarray,
    *,
    alpha: np.ndarray | None = None,
    bit_depth: int = 8,
    exif: bytes | None = None,
    icc_profile: bytes | None = None,
    format: str = "PNG",  # noqa: A002 - the public name other modules use
    quality: int = 95,
) -> bytes:
    """Encode an image into the bytes of a file of the given format.

    Args:
        rgb: float ``(H, W, 3)`` in ``[0, 1]``; clipped, NaN read as 0, rounded to nearest.
        alpha: ``(H, W)`` uint8 or uint16 (bool and float ``[0, 1]`` are accepted too), written
            exactly: scaled by 257 only if its depth differs from the output's. JPEG and BMP
            cannot hold it and drop it (no compositing: the colour under transparent pixels is
            written as is).
        bit_depth: 8 or 16. 16 is honoured for PNG and TIFF; JPEG, WebP and BMP silently write
            8 bits.
        exif: raw EXIF, with or without the ``Exif\\0\\0`` prefix (JPEG, PNG, WebP; 8-bit TIFF
            too). Not written to BMP or 16-bit TIFF.
        icc_profile: ICC profile bytes (JPEG, PNG, WebP, TIFF; not BMP).
        format: ``'JPEG'``, ``'PNG'``, ``'TIFF'``, ``'WEBP'`` or ``'BMP'`` (case-insensitive).
        quality: JPEG/WebP quality 1..100; JPEG keeps full-resolution chroma from 90 up.

    Returns:
        The encoded file.

    Raises:
        ValueError: for a wrong shape of ``rgb`` or ``alpha``, or a bad ``bit_depth``.
        OutputError: for an unsupported format or an encoder failure.
    """
    fmt = (format or "").upper()
    if fmt == "JPG":
        fmt = "JPEG"
    if fmt == "TIF":
        fmt = "TIFF"
    if fmt not in _OUTPUT_FORMATS:
        raise OutputError(None, f"unsupported output format {format!r}")
    if bit_depth not in (8, 16):
        raise ValueError(f"bit_depth must be 8 or 16, got {bit_depth}")
    if fmt not in ("PNG", "TIFF"):
        bit_depth = 8  # documented: these formats (as Pillow writes them) are 8-bit only
    samples = _quantise(rgb, bit_depth)
    if alpha is not None and fmt in ("JPEG", "BMP"):
        alpha = None  # documented: no alpha channel in these formats
    alpha_samples = None if alpha is None else _alpha_samples(alpha, samples.shape[:2], bit_depth)
    exif_block = _prefixed_exif(exif)
    icc = bytes(icc_profile) if icc_profile else None

    if bit_depth == 16 and fmt == "PNG":
        return _encode_png16(samples, alpha_samples, exif_block, icc)
    if bit_depth == 16 and fmt == "TIFF":
        return _encode_tiff16(samples, alpha_samples, icc)

    pixels = samples if alpha_samples is None else np.dstack([samples, alpha_samples])
    image = Image.fromarray(np.ascontiguousarray(pixels), "RGB" if alpha_samples is None else "RGBA")
    options: dict[str, Any] = {}
    if fmt == "JPEG":
        options.update(quality=int(quality), optimize=False)
        if quality >= 90:
            options["subsampling"] = 0  # 4:4:4: chroma is the whole point of a colouriser
    elif fmt == "WEBP":
        options.update(quality=int(quality))
    elif fmt == "PNG":
        options.update(compress_level=6)
    elif fmt == "TIFF":
        options.update(compression="tiff_deflate")
    if fmt != "BMP":
        if exif_block is not None:
            options["exif"] = exif_block
        if icc is not None:
            options["icc_profile"] = icc
    buffer = io.BytesIO()
    try:
        image.save(buffer, format=fmt, **options)
    except (OSError, ValueError, TypeError, KeyError, struct.error) as exc:
        raise OutputError(None, f"could not encode {fmt} ({_one_line(exc)})") from None
    return buffer.getvalue()


def save_image(
    path: str | os.PathLike[str],
    rgb: np.ndarray,
    *,
    alpha: np.ndarray | None = None,
    bit_depth: int = 8,
    exif: bytes | None = None,
    icc_profile: bytes | None = None,
    format: str | None = None,  # noqa: A002 - the public name other modules use
    quality: int = 95,
    inputs: Iterable[str | os.PathLike[str]] = (),
    overwrite: bool = True,
) -> Path:
    """Encode and atomically write an image file.

    The file is encoded in memory first, then written to a hidden temporary file in the target
    directory, flushed, fsynced and renamed over the target, so a reader never sees a partial
    file and a failure leaves any previous target untouched (the temporary file is removed).

    Args:
        path: the target; its suffix picks the format unless ``format`` is given.
        rgb, alpha, bit_depth, exif, icc_profile, quality: as in :func:`encode_image`.
        format: explicit format name, overriding the suffix.
        inputs: input files of this run; writing onto any of them (same real path, or the same
            file through a hard link) is refused.
        overwrite: if False, an existing target is an error.

    Returns:
        The target path as a :class:`~pathlib.Path`.

    Raises:
        OutputError: unsupported format, target is an input, target exists with
            ``overwrite=False``, or any file-system failure.
        ValueError: wrong shape of ``rgb``/``alpha`` or bad ``bit_depth``.
    """
    target = Path(path)
    try:
        fmt = format.upper() if format else format_for_suffix(target.suffix)
    except OutputError as exc:
        raise OutputError(target, exc.reason) from None
    _refuse_inputs(target, inputs)
    if not overwrite and os.path.lexists(target):
        raise OutputError(target, "already exists (allow overwriting to replace it)")
    if os.path.isdir(target):
        raise OutputError(target, "is a directory")
    try:
        data = encode_image(
            rgb,
            alpha=alpha,
            bit_depth=bit_depth,
            exif=exif,
            icc_profile=icc_profile,
            format=fmt,
            quality=quality,
        )
    except OutputError as exc:
        raise OutputError(target, exc.reason) from None
    atomic_write(target, data)
    return target


def _refuse_inputs(target: Path, inputs: Iterable[str | os.PathLike[str]]) -> None:
    """Raise OutputError if ``target`` is (or links to) one of ``inputs``."""
    if isinstance(inputs, (str, os.PathLike)):
        inputs = [inputs]
    real_target = os.path.realpath(target)
    target_exists = os.path.exists(target)
    for item in inputs:
        candidate = os.fspath(item)
        same = os.path.realpath(candidate) == real_target
        if not same and target_exists and os.path.exists(candidate):
            try:
                same = os.path.samefile(candidate, target)  # hard links
            except OSError:
                same = False
        if same:
            raise OutputError(target, "refusing to overwrite an input file")


def atomic_write(target: Path, data: bytes) -> None:
    """Write ``data`` to ``target`` via a temporary file in the same directory and os.replace.

    A reader never sees half a file; the file gets the permissions a plain open() would give.

    Raises:
        OutputError: the folder or the file cannot be written (the target is left as it was).
    """
    directory = target.parent if str(target.parent) else Path(".")
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(target, f"cannot create folder {directory} ({_os_reason(exc)})") from None
    temp_name: str | None = None
    try:
        with tempfile.NamedTemporaryFile(
            delete=False, dir=directory, prefix="." + target.name, suffix=".tmp"
        ) as handle:
            temp_name = handle.name
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
            # NamedTemporaryFile makes the file 0600; give it the mode a plain open() would.
            if hasattr(os, "fchmod"):
                os.fchmod(handle.fileno(), 0o666 & ~_umask())
        os.replace(temp_name, target)
        temp_name = None
    except OSError as exc:
        raise OutputError(target, _os_reason(exc)) from None
    finally:
        if temp_name is not None:
            try:
                os.unlink(temp_name)
            except OSError:
                pass
    fsync_directory(directory)


def _umask() -> int:
    """The process umask, read without changing it where the OS allows."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)  # the only portable way to read it is to set it and restore it
    os.umask(mask)
    return mask


def fsync_directory(directory: Path) -> None:
    """Make a rename into ``directory`` durable (POSIX); best effort, as some file systems refuse it."""
    if sys.platform.startswith("win"):
        return
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)




def _quantise(rgb: np.ndarray, bit_depth: int) -> np.ndarray:
    """float ``(H, W, 3)`` in ``[0, 1]`` -> uint8/uint16 by clipping and rounding to nearest."""
    arr = np.asarray(rgb)
    if arr.ndim != 3 or arr.shape[2] != 3 or arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ValueError(f"rgb must be a non-empty (H, W, 3) array, got shape {arr.shape}")
    top = 255.0 if bit_depth == 8 else 65535.0
    dtype = np.uint8 if bit_depth == 8 else np.uint16
    if np.issubdtype(arr.dtype, np.integer) or arr.dtype == np.bool_:
        raise ValueError(f"rgb must be a float array in [0, 1], got dtype {arr.dtype}")
    if bit_depth == 8 and arr.dtype == np.float32:
        # float32 holds x * 255 to far better than half a level, so 8-bit output needs no float64
        # copy; clip maps +-inf to 0 and 1, and only NaN needs the (slow) nan_to_num: 5 ms per
        # megapixel instead of 29 (measured).
        values = np.clip(arr, 0.0, 1.0)
        if np.isnan(values).any():
            values = np.nan_to_num(values, nan=0.0)
        values *= np.float32(top)
        return np.rint(values, out=values).astype(dtype)
    values = np.nan_to_num(arr.astype(np.float64), nan=0.0, posinf=1.0, neginf=0.0)
    return np.round(np.clip(values, 0.0, 1.0) * top).astype(dtype)


def _alpha_samples(alpha: np.ndarray, shape: tuple[int, ...], bit_depth: int) -> np.ndarray:
    """Alpha at the output depth, bit-exact when its depth already matches."""
    arr = np.asarray(alpha)
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[..., 0]
    if arr.shape != tuple(shape):
        raise ValueError(f"alpha must have shape {tuple(shape)}, got {arr.shape}")
    if arr.dtype == np.bool_:
        arr = arr.astype(np.uint8) * np.uint8(255)
    elif np.issubdtype(arr.dtype, np.floating):
        arr = np.round(np.clip(np.nan_to_num(arr.astype(np.float64)), 0.0, 1.0) * 255.0).astype(np.uint8)
    elif arr.dtype not in (np.uint8, np.uint16):
        raise ValueError(f"alpha must be uint8, uint16, bool or float, got dtype {arr.dtype}")
    if bit_depth == 8 and arr.dtype == np.uint16:
        # Rounded division by 257 is the exact inverse of the 8 -> 16 scaling below.
        arr = ((arr.astype(np.uint32) + 128) // 257).astype(np.uint8)
    elif bit_depth == 16 and arr.dtype == np.uint8:
        arr = arr.astype(np.uint16) * np.uint16(257)
    return np.ascontiguousarray(arr)


def _prefixed_exif(exif: bytes | None) -> bytes | None:
    """EXIF with exactly one ``Exif\\0\\0`` prefix (Pillow's JPEG writer copies it verbatim)."""
    if not exif:
        return None
    body = bytes(exif)
    while body.startswith(_EXIF_PREFIX):
        body = body[len(_EXIF_PREFIX):]
    return _EXIF_PREFIX + body if body else None


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    """One PNG chunk: length, type, payload, CRC-32 of type + payload."""
    crc = zlib.crc32(kind + payload) & 0xFFFFFFFF
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", crc)


def _encode_png16(
    samples: np.ndarray, alpha: np.ndarray | None, exif: bytes | None, icc: bytes | None
) -> bytes:
    """A 16-bit RGB (colour type 2) or RGBA (6) PNG, which Pillow cannot write."""
    height, width = samples.shape[:2]
    pixels = samples if alpha is None else np.dstack([samples, alpha])
    colour_type = 2 if alpha is None else 6
    # Filter type 0 ("None") on every row; big-endian samples as PNG requires.
    rows = np.ascontiguousarray(pixels, dtype=">u2").view(np.uint8).reshape(height, -1)
    raw = np.empty((height, rows.shape[1] + 1), dtype=np.uint8)
    raw[:, 0] = 0
    raw[:, 1:] = rows
    compressed = zlib.compress(raw.tobytes(), 6)
    header = struct.pack(">IIBBBBB", width, height, 16, colour_type, 0, 0, 0)
    out = [_PNG_SIGNATURE, _png_chunk(b"IHDR", header)]
    if icc:
        out.append(_png_chunk(b"iCCP", b"icc\x00\x00" + zlib.compress(icc)))
    if exif:
        # PNG's eXIf holds the TIFF-structured EXIF without the JPEG-style prefix.
        out.append(_png_chunk(b"eXIf", exif[len(_EXIF_PREFIX):] if exif.startswith(_EXIF_PREFIX) else exif))
    step = 1 << 20  # several IDAT chunks keep each well under PNG's 2**31 - 1 byte limit
    for start in range(0, max(len(compressed), 1), step):
        out.append(_png_chunk(b"IDAT", compressed[start:start + step]))
    out.append(_png_chunk(b"IEND", b""))
    return b"".join(out)


def _encode_tiff16(samples: np.ndarray, alpha: np.ndarray | None, icc: bytes | None) -> bytes:
    """A 16-bit RGB/RGBA TIFF (deflate-compressed) via tifffile; EXIF is not written."""
    import tifffile

    pixels = samples if alpha is None else np.dstack([samples, alpha])
    options: dict[str, Any] = {"photometric": "rgb", "compression": "zlib", "metadata": None}
    if alpha is not None:
        options["extrasamples"] = ("unassalpha",)
    if icc:
        options["extratags"] = [(_ICC_TAG, "B", len(icc), icc, True)]
    buffer = io.BytesIO()
    try:
        tifffile.imwrite(buffer, np.ascontiguousarray(pixels), **options)
    except Exception as exc:  # tifffile raises assorted types; the CLI needs one
        raise OutputError(None, f"could not encode TIFF ({_one_line(exc)})") from None
    return buffer.getvalue()


# ----------------------------------------------------------------------------------------------
# Folder walking
# ----------------------------------------------------------------------------------------------


def iter_image_files(
    inputs: Sequence[str | os.PathLike[str]], *, recursive: bool = True
) -> Iterator[tuple[Path, Path]]:
    """Yield ``(file, relative_path)`` for every image named by ``inputs``.

    A file is yielded as ``(file, Path(file.name))`` whatever its suffix (naming a file is
    asking for it; :func:`load_image` will say if it is not an image). A folder is walked in
    sorted, deterministic order, yielding files whose lower-case suffix is in
    :data:`IMAGE_SUFFIXES` with their path relative to that folder; hidden files and folders
    (names starting with ``'.'``) are skipped, symbolic links to folders are not followed (so
    loops cannot hang), and unreadable subfolders are skipped.

    Args:
        inputs: files and folders; a single path is accepted too.
        recursive: walk subfolders (else only the folder's own files).

    Yields:
        ``(path_to_file, relative_output_path)``.

    Raises:
        ImageLoadError: when a missing input (or an unreadable folder given directly) is
            reached; inputs before it have been yielded, so a caller can catch it per input.
    """
    if isinstance(inputs, (str, os.PathLike)):
        inputs = [inputs]
    for item in inputs:
        root = Path(item)
        if root.is_file():
            yield root, Path(root.name)
            continue
        if not root.is_dir():
            if os.path.lexists(root):
                raise ImageLoadError(root, "not a file or folder")
            raise ImageLoadError(root, "no such file or directory")
        if not os.access(root, os.R_OK | os.X_OK):
            raise ImageLoadError(root, "permission denied")
        yield from _walk(root, recursive)


def _walk(root: Path, recursive: bool) -> Iterator[tuple[Path, Path]]:
    """Sorted walk of one folder for :func:`iter_image_files`."""
    for directory, dirnames, filenames in os.walk(root, followlinks=False):
        # Editing dirnames in place is how os.walk is told what (and in which order) to visit.
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".")) if recursive else []
        base = Path(directory)
        for filename in sorted(filenames):
            if filename.startswith(".") or Path(filename).suffix.lower() not in IMAGE_SUFFIXES:
                continue
            path = base / filename
            if not path.is_file():  # broken symbolic links, sockets...
                continue
            yield path, path.relative_to(root)


# ----------------------------------------------------------------------------------------------
# Small helpers
# ----------------------------------------------------------------------------------------------


def _one_line(exc: BaseException) -> str:
    """An exception's message on one line, never empty."""
    text = " ".join(str(exc).split())
    return text or type(exc).__name__


def _os_reason(exc: OSError) -> str:
    """A short lower-case reason for an OSError (its strerror without the path)."""
    if isinstance(exc, FileNotFoundError):
        return "file not found"
    if isinstance(exc, PermissionError):
        return "permission denied"
    if isinstance(exc, IsADirectoryError):
        return "is a directory"
    text = exc.strerror or _one_line(exc)
    return text[:1].lower() + text[1:]
