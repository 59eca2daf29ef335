"""The JSON/binary API: ``POST /api/colorize`` and ``GET /api/health``.

A request's life, and why:

1. Headers only: not multipart -> ``415``; ``Content-Length`` over the limit -> ``413``. Nothing
   of the body has been read yet.
2. Admission: a slot in the bounded queue, or ``503`` + ``Retry-After`` at once (body unread).
3. The body is streamed through a multipart parser into memory, counting bytes: past the limit
   -> ``413``; slower than ``upload_timeout_s`` -> ``408``. Nothing touches the disk; the client's
   file name is used only, cleaned, in messages and in the response's ``Content-Disposition``.
4. A worker thread sniffs the format from the bytes (never from the name or the declared type),
   checks the pixel count from the header (``413``), decodes, colourises with the shared model and
   encodes (PNG, or JPEG on request). Undecodable input -> ``400``/``415`` with a one-line reason.
5. The answer carries ``X-Processing-Time-Ms`` (the worker's time) and ``X-Queue-Time-Ms``.
   Waiting longer than ``request_timeout_s`` -> ``504``.

Every error is JSON ``{"detail": "..."}``; bad input never produces a ``500``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Optional
from urllib.parse import quote

from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.responses import Response
from starlette.requests import ClientDisconnect

from colorgan.errors import ImageLoadError, OutOfMemoryError
from colorgan.hints import HintsError
from colorgan.limits import MIN_RENDER_SIZE
from colorgan.web.state import ServerState, get_state
from colorgan.web.workqueue import WorkTimeout

try:  # python-multipart >= 0.0.13 is importable as python_multipart; older ones as multipart
    from python_multipart.multipart import MultipartParser, parse_options_header
except ImportError:  # pragma: no cover - depends on the installed version
    from multipart.multipart import MultipartParser, parse_options_header  # type: ignore[no-redef]

__all__ = ["router"]

log = logging.getLogger("colorgan.web")

router = APIRouter(prefix="/api", tags=["colorize"])

# Room for the multipart framing and the small fields around the file itself.
_FORM_OVERHEAD = 64 * 1024
_MAX_FIELD_BYTES = 1024
#: The hints field (the JSON of colour points) may be longer than the other fields.
_MAX_HINTS_BYTES = 256 * 1024
_MAX_PARTS = 16
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}
_FORMATS = {"png": ("PNG", "image/png", ".png"), "jpeg": ("JPEG", "image/jpeg", ".jpg"), "jpg": ("JPEG", "image/jpeg", ".jpg")}
_INPUT_SUFFIX = {"JPEG": ".jpg", "PNG": ".png", "TIFF": ".tif", "WEBP": ".webp", "BMP": ".bmp"}

_ERROR = {"content": {"application/json": {"example": {"detail": "photo.txt: not an image or unsupported format"}}}}


# ------------------------------------------------------------------------------------ upload


class _UploadTooLarge(Exception):
    pass


class _BadForm(Exception):
    pass


class _FormReader:
    """Streaming multipart/form-data reader: the photo (``file``) and an optional colour reference
    photo (``reference``) kept in memory (together within the upload limit), a few small text
    fields (``hints``: the colour points' JSON), everything else counted and dropped."""

    def __init__(self, boundary: bytes, max_file_bytes: int) -> None:
        self.max_file_bytes = max_file_bytes
        self.file = bytearray()
        self.reference = bytearray()
        self.has_reference = False
        self.filename: str | None = None
        self.has_file = False
        self.fields: dict[str, str] = {}
        self.complete = False
        self._parts = 0
        self._headers: dict[str, bytes] = {}
        self._hname = bytearray()
        self._hvalue = bytearray()
        self._target: str | None = None  # "file", a field name, or None (ignored part)
        self._value = bytearray()
        self._parser = MultipartParser(
            boundary,
            callbacks={
                "on_part_begin": self._part_begin,
                "on_header_field": lambda d, s, e: self._hname.extend(d[s:e]),
                "on_header_value": lambda d, s, e: self._hvalue.extend(d[s:e]),
                "on_header_end": self._header_end,
                "on_headers_finished": self._headers_finished,
                "on_part_data": self._part_data,
                "on_part_end": self._part_end,
                "on_end": self._end,
            },
        )

    def write(self, chunk: bytes) -> None:
        self._parser.write(chunk)

    def finish(self) -> None:
        self._parser.finalize()
        if not self.complete:
            raise _BadForm("the multipart body ended early (incomplete upload)")

    def _part_begin(self) -> None:
        self._parts += 1
        if self._parts > _MAX_PARTS:
            raise _BadForm(f"too many form fields (at most {_MAX_PARTS})")
        self._headers = {}
        self._target = None
        self._value = bytearray()

    def _header_end(self) -> None:
        # Raw bytes: browsers send UTF-8 file names, which a str round trip through latin-1 would mangle.
        self._headers[self._hname.decode("latin-1").strip().lower()] = bytes(self._hvalue).strip()
        self._hname.clear()
        self._hvalue.clear()

    def _headers_finished(self) -> None:
        _, params = parse_options_header(self._headers.get("content-disposition", b""))
        name = params.get(b"name", b"").decode("utf-8", "replace")
        if name == "file":
            if self.has_file:
                raise _BadForm("send one file per request (the form has several 'file' fields)")
            self.has_file = True
            raw = params.get(b"filename")
            self.filename = raw.decode("utf-8", "replace") if raw is not None else None
            self._target = "file"
        elif name == "reference":
            if self.has_reference:
                raise _BadForm("send one reference photo per request (the form has several 'reference' fields)")
            self.has_reference = True
            self._target = "reference"
        elif name in ("render_size", "compare", "format", "hints", "x", "y"):
            self._target = name

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        if self._target in ("file", "reference"):
            if len(self.file) + len(self.reference) + (end - start) > self.max_file_bytes:
                raise _UploadTooLarge()
            (self.file if self._target == "file" else self.reference).extend(data[start:end])
        elif self._target is not None:
            limit = _MAX_HINTS_BYTES if self._target == "hints" else _MAX_FIELD_BYTES
            if len(self._value) + (end - start) > limit:
                raise _BadForm(f"form field '{self._target}' is too long")
            self._value.extend(data[start:end])

    def _part_end(self) -> None:
        if self._target not in (None, "file", "reference"):
            self.fields[self._target] = self._value.decode("utf-8", "replace").strip()

    def _end(self) -> None:
        self.complete = True


def _too_large(limit_mb: float) -> HTTPException:
    return HTTPException(413, f"upload is larger than this server's limit of {limit_mb:g} MB")


async def _read_form(request: Request, boundary: bytes, max_bytes: int, limit_mb: float) -> _FormReader:
    reader = _FormReader(boundary, max_bytes)
    received = 0
    try:
        async for chunk in request.stream():
            received += len(chunk)
            # Counted as it streams: a missing or lying Content-Length changes nothing.
            if received > max_bytes + _FORM_OVERHEAD:
                raise _UploadTooLarge()
            if chunk:
                reader.write(chunk)
        reader.finish()
    except _UploadTooLarge:
        raise _too_large(limit_mb) from None
    except _BadForm as e:
        raise HTTPException(400, str(e)) from None
    except ValueError as e:  # python-multipart's ParseError / FormParserError
        raise HTTPException(400, f"malformed multipart body ({e})") from None
    return reader


# ------------------------------------------------------------------------------------ options


def _clean_name(filename: str | None) -> str:
    """A display name: the last path component, printable, short. Never used as a path."""
    name = (filename or "").replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(ch for ch in name if ch.isprintable() and ch not in '"<>|*?:;')
    return name.strip()[:120] or "upload"


def _content_disposition(display: str, suffix: str, compare: bool) -> str:
    stem = display.rsplit(".", 1)[0] if "." in display[1:] else display
    stem = f"{stem}-{'compare' if compare else 'colour'}"
    ascii_stem = "".join(ch if ch.isascii() and (ch.isalnum() or ch in "-_.") else "_" for ch in stem).strip("._") or "image"
    return f"inline; filename=\"{ascii_stem}{suffix}\"; filename*=UTF-8''{quote(stem + suffix, safe='')}"


def _parse_render_size(value: Any, state: ServerState) -> int:
    top = state.settings.max_render_size
    if value is None or value == "":
        return state.settings.default_render_size
    try:
        size = int(str(value).strip())
    except ValueError:
        raise HTTPException(422, f"render_size must be an integer, got {str(value)[:40]!r}") from None
    if not MIN_RENDER_SIZE <= size <= top:
        raise HTTPException(422, f"render_size must be between {MIN_RENDER_SIZE} and {top} on this server, got {size}")
    return size


def _parse_bool(name: str, value: Any) -> bool:
    if value is None or isinstance(value, bool):
        return bool(value)
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise HTTPException(422, f"{name} must be true or false, got {str(value)[:40]!r}")


def _parse_hints(value: str | None) -> Any:
    """The hints field as decoded JSON (checked against the photo later), or None when absent or empty."""
    if value is None or not value.strip():
        return None
    try:
        return json.loads(value)
    except json.JSONDecodeError as e:
        raise HTTPException(422, f"hints: not valid JSON ({e.msg})") from None


def _parse_format(value: Any) -> str:
    text = "png" if value in (None, "") else str(value).strip().lower()
    if text not in _FORMATS:
        raise HTTPException(422, f"format must be png or jpeg, got {str(value)[:40]!r}")
    return text


# ------------------------------------------------------------------------------------ the work


@dataclass
class _Job:
    data: bytes
    display: str
    render_size: int
    fmt: str  # key of _FORMATS
    compare: bool
    hints: Any = None  # the decoded JSON of the colour points, or None
    reference: bytes | None = None  # the reference photo's bytes, or None


class _BadGuidance(Exception):
    """Hints or a reference the server cannot use (422 with the message)."""


@dataclass
class _Result:
    body: bytes
    seconds: float
    width: int
    height: int
    kind: str
    input_format: str | None
    bit_depth: int


def _process(state: ServerState, job: _Job) -> _Result:
    """Decode, colourise, encode: runs on a worker thread.

    Raises:
        ImageLoadError: not an image, corrupt, or over the pixel limit.
    """
    import numpy as np

    from colorgan import io as cio

    start = time.perf_counter()
    colorizer = state.colorizer()
    # Content sniffing: load_image identifies the format from the bytes themselves and only
    # lets the JPEG/PNG/TIFF/WebP/BMP decoders try; the size is checked before decoding.
    loaded = cio.load_image(job.data, max_pixels=state.settings.max_pixels)
    reference = None
    if job.reference is not None:
        try:
            reference = cio.load_image(job.reference, max_pixels=state.settings.max_pixels)
        except ImageLoadError as e:
            raise _BadGuidance(f"reference: {e.reason}") from None
    try:
        rgb = colorizer.colorize_loaded(loaded, job.render_size, hints=job.hints, reference=reference)
    except (HintsError, ValueError) as e:  # a bad point, a grey reference, a model without guidance
        raise _BadGuidance(str(e)) from None
    if job.compare:
        # As the CLI's --compare: original | colour, no alpha.
        image, alpha = np.concatenate([loaded.rgb.astype(np.float32, copy=False), rgb], axis=1), None
    else:
        image, alpha = rgb, loaded.alpha
    fmt_name, _, suffix = _FORMATS[job.fmt]
    body = cio.encode_image(
        image,
        alpha=alpha,  # kept by PNG, dropped by JPEG (as the CLI does)
        bit_depth=loaded.bit_depth,  # 16-bit in gives 16-bit PNG out, as the CLI
        exif=loaded.exif,
        icc_profile=loaded.icc_profile,
        format=fmt_name,
        quality=state.settings.jpeg_quality,
    )
    seconds = time.perf_counter() - start
    if state.settings.save_dir is not None:
        _keep_copy(Path(state.settings.save_dir), job.data, loaded.format, body, suffix)
    width, height = loaded.size
    return _Result(body, seconds, width, height, loaded.kind, loaded.format, loaded.bit_depth)


def _keep_copy(folder: Path, data: bytes, input_format: str | None, body: bytes, suffix: str) -> None:
    """Write the upload and its result under server-chosen names (only with --save-dir)."""
    stem = time.strftime("%Y%m%d-%H%M%S") + "-" + uuid.uuid4().hex[:12]
    try:
        folder.mkdir(parents=True, exist_ok=True)
        for name, payload in ((f"{stem}-input{_INPUT_SUFFIX.get(input_format or '', '.bin')}", data), (f"{stem}-colour{suffix}", body)):
            # O_EXCL: never replaces anything; 0600: uploads are private.
            fd = os.open(folder / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as handle:
                handle.write(payload)
    except OSError as e:
        log.warning("could not keep a copy in %s: %s", folder, e)


def _load_error(display: str, e: ImageLoadError) -> HTTPException:
    reason = e.reason.replace("(raise it with --max-pixels)", "(this server's --max-pixels)")
    if "megapixels" in reason:
        status = 413
    elif reason.startswith("not an image") or reason.startswith("unsupported"):
        status = 415
    else:
        status = 400  # empty, truncated, corrupt
    return HTTPException(status, f"{display}: {reason}")


# ------------------------------------------------------------------------------------ routes

def _admit_upload(request: Request, state: ServerState, how: str) -> tuple[bytes, Any]:
    """Check an upload's headers and take a queue slot: ``(boundary, ticket)``.

    Raises:
        HTTPException: 415 not multipart (``how`` says what to send), 400 no boundary, 413 a
            declared size over the limit, 503 the queue full (with Retry-After).
    """
    settings = state.settings
    mime, params = parse_options_header(request.headers.get("content-type", ""))
    if mime != b"multipart/form-data":
        raise HTTPException(415, how)
    boundary = params.get(b"boundary")
    if not boundary:
        raise HTTPException(400, "multipart/form-data without a boundary")
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > settings.max_upload_bytes + _FORM_OVERHEAD:
        raise _too_large(settings.max_upload_mb)
    ticket = state.queue.try_admit()
    if ticket is None:
        wait = state.queue.retry_after_s()
        raise HTTPException(
            503,
            f"the server is busy ({settings.queue_size} requests in progress); try again in {wait} s",
            headers={"Retry-After": str(wait)},
        )
    return boundary, ticket


async def _receive_form(request: Request, state: ServerState, boundary: bytes) -> "_FormReader | None":
    """The whole multipart body within the upload time-out; None when the client went away.

    Raises:
        HTTPException: 408 too slow, 413 too large, 400 malformed.
    """
    settings = state.settings
    try:
        return await asyncio.wait_for(
            _read_form(request, boundary, settings.max_upload_bytes, settings.max_upload_mb), settings.upload_timeout_s
        )
    except asyncio.TimeoutError:
        raise HTTPException(408, f"the upload took longer than {settings.upload_timeout_s:g} s") from None
    except ClientDisconnect:
        return None


async def _run_job(ticket: Any, state: ServerState, display: str, fn: Any, *args: Any) -> Any:
    """Run ``fn(*args)`` in the ticket's queue slot; its failures as HTTP errors naming ``display``.

    Raises:
        HTTPException: 504 not done within the request time-out, 400/413/415 a bad image, 422 bad
            guidance, 503 out of memory.
    """
    timeout = state.settings.request_timeout_s
    try:
        return await ticket.run(fn, *args, timeout=timeout)
    except WorkTimeout as e:
        what = "it was still running and will finish unseen" if e.started else "it had not started"
        raise HTTPException(504, f"{display}: not done within {timeout:g} s ({what})") from None
    except ImageLoadError as e:
        raise _load_error(display, e) from None
    except _BadGuidance as e:
        raise HTTPException(422, f"{display}: {e}") from None
    except (OutOfMemoryError, MemoryError):
        raise HTTPException(503, f"{display}: not enough memory on the server for this image now", headers={"Retry-After": "10"}) from None


_FORM_SCHEMA = {
    "type": "object",
    "required": ["file"],
    "properties": {
        "file": {"type": "string", "format": "binary", "description": "the photo (JPEG, PNG, TIFF, WebP or BMP; sniffed from its bytes)"},
        "render_size": {"type": "integer", "minimum": 64, "description": "short side the model sees (default 256; the server's maximum applies)"},
        "compare": {"type": "boolean", "description": "return original | colour side by side"},
        "format": {"type": "string", "enum": ["png", "jpeg"], "description": "response format (default png)"},
        "hints": {"type": "string", "description": 'colour points as JSON, the format of `colorgan colorize --hints`: '
                  '{"points": [{"x": 120, "y": 45, "color": "#a03020", "radius": 8}]} (pixels of the photo as shown)'},
        "reference": {"type": "string", "format": "binary", "description": "a colour photo of a similar scene whose colours go to the matching parts"},
    },
}


@router.post(
    "/colorize",
    summary="Colourise one photo",
    response_class=Response,
    responses={
        200: {
            "content": {"image/png": {}, "image/jpeg": {}},
            "description": "The colour image. Headers: `X-Processing-Time-Ms` (decode + colourise + encode on the "
            "worker), `X-Queue-Time-Ms`, `X-Render-Size`, `X-Image-Size`, `X-Input-Kind` (grey, tinted, colour), "
            "`X-Input-Format`, and `X-Colorgan-Warning` for colour input.",
        },
        400: {**_ERROR, "description": "corrupt, truncated or empty image; malformed form"},
        408: {**_ERROR, "description": "the upload took longer than the server's upload time-out"},
        413: {**_ERROR, "description": "upload over the size limit, or image over the pixel limit"},
        415: {**_ERROR, "description": "not multipart/form-data, or the file is not a supported image"},
        422: {**_ERROR, "description": "missing file or bad option (render_size, compare, format), bad hints or reference, "
              "or guidance for a model that takes none"},
        503: {**_ERROR, "description": "the work queue is full (see Retry-After), or out of memory"},
        504: {**_ERROR, "description": "not finished within the server's request time-out"},
    },
    openapi_extra={"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": _FORM_SCHEMA}}}},
)
async def colorize(
    request: Request,
    render_size: Optional[int] = Query(None, description="as the form field; the form field wins when both are given"),
    compare: Optional[bool] = Query(None, description="as the form field"),
    format: Optional[Literal["png", "jpeg", "jpg"]] = Query(None, description="as the form field"),  # noqa: A002
) -> Response:
    """Colourise the uploaded photo (multipart field ``file``; options as form fields or query).

    The image is identified from its content; its luminance is kept exactly and the model's
    colour is added. PNG output keeps alpha and 16-bit depth; JPEG output is 8-bit without alpha.
    """
    state = get_state(request)
    boundary, ticket = _admit_upload(request, state, "send the photo as multipart/form-data in a field named 'file'")
    try:
        form = await _receive_form(request, state, boundary)
        if form is None:
            return Response(status_code=400)  # the client went away: nobody is listening any more
        if not form.has_file:
            raise HTTPException(422, "no file: send the photo in a multipart field named 'file'")
        display = _clean_name(form.filename)
        if not form.file:
            raise HTTPException(400, f"{display}: empty file (0 bytes)")
        job = _Job(
            data=bytes(form.file),
            display=display,
            render_size=_parse_render_size(form.fields.get("render_size", render_size), state),
            fmt=_parse_format(form.fields.get("format", format)),
            compare=_parse_bool("compare", form.fields.get("compare", compare)),
            hints=_parse_hints(form.fields.get("hints")),
            reference=bytes(form.reference) if form.has_reference else None,
        )
        del form  # the bytes live on in the job only
        queued_at = time.perf_counter()
        result = await _run_job(ticket, state, display, _process, state, job)
    finally:
        ticket.release()  # no-op once the job owns the slot
    total_ms = (time.perf_counter() - queued_at) * 1000.0
    _, media_type, suffix = _FORMATS[job.fmt]
    headers = {
        "X-Processing-Time-Ms": f"{result.seconds * 1000.0:.1f}",
        "X-Queue-Time-Ms": f"{max(0.0, total_ms - result.seconds * 1000.0):.1f}",
        "X-Render-Size": str(job.render_size),
        "X-Image-Size": f"{result.width}x{result.height}",
        "X-Input-Kind": result.kind,
        "X-Input-Format": result.input_format or "unknown",
        "Content-Disposition": _content_disposition(display, suffix, job.compare),
        "Cache-Control": "no-store",
    }
    if result.kind == "colour":
        headers["X-Colorgan-Warning"] = "already in colour; only its luminance is used"
    return Response(result.body, media_type=media_type, headers=headers)


def _parse_point(name: str, value: Any) -> int:
    if value is None or str(value).strip() == "":
        raise HTTPException(422, f"{name} is required: the place, in pixels of the photo as shown")
    try:
        return int(float(str(value)))
    except ValueError:
        raise HTTPException(422, f"{name} must be a number of pixels, got {str(value)[:40]!r}") from None


def _suggest(state: ServerState, data: bytes, x: int, y: int, render_size: int) -> dict[str, Any]:
    """Decode and suggest: runs on a worker thread."""
    from colorgan import io as cio
    from colorgan.suggest import colour_suggestions

    model = state.suggester()
    if model is None:
        raise _BadGuidance("colour suggestions need the cic model, which is not installed")
    loaded = cio.load_image(data, max_pixels=state.settings.max_pixels)
    L = state.colorizer().prepare(loaded).L
    try:
        found = colour_suggestions(model, L, x, y, render_size=render_size)
    except ValueError as e:
        raise _BadGuidance(str(e)) from None
    return {"x": x, "y": y, "suggestions": [{"color": f.color, "probability": f.probability} for f in found]}


@router.post(
    "/suggest",
    summary="Colours to suggest for one place of a photo",
    responses={
        200: {"description": 'JSON: `{"x": .., "y": .., "suggestions": [{"color": "#rrggbb", "probability": 0.4}, ...]}`, '
              "most likely first, each at the photo's own lightness there (the colour a point with it gives)."},
        400: {**_ERROR, "description": "corrupt, truncated or empty image; malformed form"},
        413: {**_ERROR, "description": "upload over the size limit, or image over the pixel limit"},
        415: {**_ERROR, "description": "not multipart/form-data, or the file is not a supported image"},
        422: {**_ERROR, "description": "missing file, x or y; the place outside the photo; no colour-distribution model"},
        503: {**_ERROR, "description": "the work queue is full (see Retry-After)"},
    },
    openapi_extra={"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
        "type": "object", "required": ["file", "x", "y"],
        "properties": {
            "file": {"type": "string", "format": "binary", "description": "the photo"},
            "x": {"type": "integer", "description": "pixel column of the place (photo as shown)"},
            "y": {"type": "integer", "description": "pixel row of the place"},
            "render_size": {"type": "integer", "minimum": 64, "description": "short side the model sees (default 256)"},
        }}}}}},
)
async def suggest(request: Request) -> dict[str, Any]:
    """The likely colours at one place of the uploaded photo (Zhang et al. 2017's colour
    suggestions), from the shipped colour-distribution model (:mod:`colorgan.suggest`)."""
    state = get_state(request)
    boundary, ticket = _admit_upload(request, state, "send the photo as multipart/form-data in a field named 'file', with fields x and y")
    try:
        form = await _receive_form(request, state, boundary)
        if form is None:
            return Response(status_code=400)  # type: ignore[return-value]
        if not form.has_file or not form.file:
            raise HTTPException(422, "no file: send the photo in a multipart field named 'file'")
        display = _clean_name(form.filename)
        x, y = _parse_point("x", form.fields.get("x")), _parse_point("y", form.fields.get("y"))
        render_size = _parse_render_size(form.fields.get("render_size"), state)
        data = bytes(form.file)
        del form
        return await _run_job(ticket, state, display, _suggest, state, data, x, y, render_size)
    finally:
        ticket.release()


@router.get("/health", summary="Server status, model and limits")
async def health(request: Request) -> dict[str, Any]:
    """Whether the model is loaded, which one, the queue's counters and the upload limits."""
    from colorgan import __version__

    state = get_state(request)
    s = state.settings
    model: dict[str, Any] = {"loaded": state.loaded}
    if state.loaded:
        c = state.colorizer()
        model.update(name=c.name, device=str(c.device), takes_hints=bool(getattr(c, "takes_hints", False)))
    return {
        "status": "ok" if state.loaded else "loading",
        "version": __version__,
        "model": model,
        "queue": state.queue.stats(),
        "limits": {
            "max_upload_mb": s.max_upload_mb,
            "max_pixels": s.max_pixels,
            "render_size": {"min": MIN_RENDER_SIZE, "max": s.max_render_size, "default": s.default_render_size},
            "request_timeout_s": s.request_timeout_s,
            "formats": ["png", "jpeg"],
        },
        "keeps_uploads": s.save_dir is not None,
        "uptime_s": round(time.time() - state.started, 1),
    }
