"""The web app's API through FastAPI's TestClient, with the tiny seeded model.

Covers every kind of image the CLI accepts, every rejection path (each must be a 4xx with a
JSON message, never a 500), the bounded queue (503 + Retry-After, 504 with the slot kept while
a job still runs), the Host/Origin guard, the page's assets (local only), the docs, and the
``colorgan serve`` command itself in a subprocess.
"""

from __future__ import annotations

import asyncio
import io
import os
import re
import socket
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import torch
from PIL import Image

pytest.importorskip("fastapi")
pytest.importorskip("httpx")

from fastapi import APIRouter, Request  # noqa: E402
from fastapi.testclient import TestClient  # noqa: E402

from colorgan import color  # noqa: E402
from colorgan import io as cio  # noqa: E402
from colorgan.web.app import create_app, get_state  # noqa: E402
from colorgan.web.settings import ServeSettings  # noqa: E402
from colorgan.web.workqueue import WorkQueue, WorkTimeout  # noqa: E402

BASE = "http://127.0.0.1"  # the server answers only to loopback host names by default


# ------------------------------------------------------------------------------------ helpers


def _photo(mode: str = "L", size: tuple[int, int] = (48, 40), seed: int = 0) -> Image.Image:
    """A small structured test image (gradients + noise) in a PIL mode."""
    rng = np.random.default_rng(seed)
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w]
    grey = (xx * 255 / max(1, w - 1) * 0.6 + yy * 255 / max(1, h - 1) * 0.3 + rng.integers(0, 25, (h, w))).clip(0, 255)
    g8 = grey.astype(np.uint8)
    if mode == "L":
        return Image.fromarray(g8, "L")
    if mode == "1":
        return Image.fromarray(g8, "L").convert("1")
    if mode == "LA":
        alpha = (xx * 4 % 256).astype(np.uint8)
        return Image.fromarray(np.dstack([g8, alpha]), "LA")
    if mode == "RGB":  # a colour photo
        return Image.fromarray(np.dstack([g8, 255 - g8, (g8 // 2 + 60)]).astype(np.uint8), "RGB")
    if mode == "RGBA":
        alpha = (yy * 6 % 256).astype(np.uint8)
        return Image.fromarray(np.dstack([g8, g8, g8, alpha]), "RGBA")
    if mode == "P":
        return Image.fromarray(g8, "L").convert("P")
    if mode == "CMYK":
        return Image.fromarray(np.dstack([g8, g8, g8]), "RGB").convert("CMYK")
    if mode == "I;16":
        return Image.fromarray((grey * 257).astype(np.uint16))
    raise ValueError(mode)


def _encode(im: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format=fmt, **kw)
    return buf.getvalue()


def _lum(rgb01: np.ndarray) -> np.ndarray:
    """CIE L in [0, 100] of an (H, W, 3) float image in [0, 1]."""
    t = torch.from_numpy(np.ascontiguousarray(rgb01, dtype=np.float32)).permute(2, 0, 1)[None]
    return color.rgb_to_l(t)[0, 0].numpy()


def _post(client: TestClient, data: bytes, name: str = "photo.png", **fields):
    files = {"file": (name, data, "application/octet-stream")}
    return client.post("/api/colorize", files=files, data={k: str(v) for k, v in fields.items()})


@pytest.fixture
def make_client(tiny_colorizer):
    """Start an app (lifespan included) with the tiny model and the given settings."""
    clients: list[TestClient] = []

    def make(**settings) -> TestClient:
        app = create_app(tiny_colorizer, settings=ServeSettings(**settings))
        client = TestClient(app, base_url=BASE)
        client.__enter__()
        clients.append(client)
        return client

    yield make
    for c in clients:
        c.__exit__(None, None, None)


@pytest.fixture
def client(make_client) -> TestClient:
    return make_client()


def _good(client: TestClient) -> None:
    """The server still serves a normal request."""
    r = _post(client, _encode(_photo("L"), "PNG"))
    assert r.status_code == 200, r.text
    assert Image.open(io.BytesIO(r.content)).size == (48, 40)


# ------------------------------------------------------------------------------------ good input


def test_health_reports_model_queue_and_limits(client):
    r = client.get("/api/health")
    assert r.status_code == 200
    h = r.json()
    assert h["status"] == "ok" and h["model"]["loaded"] is True and h["model"]["device"] == "cpu"
    assert h["queue"]["capacity"] == 32 and h["queue"]["admitted"] == 0
    assert h["limits"]["max_upload_mb"] == 50.0
    assert h["limits"]["render_size"] == {"min": 64, "max": 1024, "default": 256}


CASES = [
    # (PIL mode, format, expected output PIL mode, 16-bit output, alpha kept)
    ("L", "JPEG", "RGB", False, False),
    ("L", "PNG", "RGB", False, False),
    ("1", "PNG", "RGB", False, False),
    ("LA", "PNG", "RGBA", False, True),
    ("RGB", "JPEG", "RGB", False, False),
    ("RGBA", "PNG", "RGBA", False, True),
    ("P", "PNG", "RGB", False, False),
    ("CMYK", "JPEG", "RGB", False, False),
    ("I;16", "PNG", None, True, False),
    ("L", "TIFF", "RGB", False, False),
    ("L", "WEBP", "RGB", False, False),
    ("L", "BMP", "RGB", False, False),
]


@pytest.mark.parametrize("mode,fmt,out_mode,sixteen,alpha", CASES, ids=[f"{m}-{f}" for m, f, *_ in CASES])
def test_colorize_every_mode(client, mode, fmt, out_mode, sixteen, alpha):
    im = _photo(mode)
    data = _encode(im, fmt, **({"quality": 95} if fmt in ("JPEG", "WEBP") else {}))
    r = _post(client, data, name=f"photo.{fmt.lower()}", render_size=64)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "image/png"
    assert float(r.headers["x-processing-time-ms"]) > 0
    assert float(r.headers["x-queue-time-ms"]) >= 0
    assert r.headers["x-image-size"] == "48x40"
    assert r.headers["x-render-size"] == "64"
    assert r.headers["x-input-format"] == fmt
    assert "filename=\"photo-colour.png\"" in r.headers["content-disposition"]

    src = cio.load_image(data)
    out = cio.load_image(r.content)
    assert out.size == (48, 40)
    assert out.bit_depth == (16 if sixteen else 8)
    if out_mode is not None:
        assert Image.open(io.BytesIO(r.content)).mode == out_mode
    if alpha:
        assert out.alpha is not None and np.array_equal(out.alpha, src.alpha), "alpha must come back unchanged"
    else:
        assert out.alpha is None
    # The output keeps the input's luminance (up to 8/16-bit rounding and gamut clipping).
    assert np.abs(_lum(out.rgb) - _lum(src.rgb)).mean() < 1.0
    if mode != "1":  # pure black and white (L = 0 or 100) has no room for colour
        # ...and the tiny random model does add colour.
        assert np.abs(out.rgb - out.rgb.mean(axis=2, keepdims=True)).mean() > 1e-3
    if mode == "RGB":
        assert r.headers["x-input-kind"] == "colour" and "already in colour" in r.headers["x-colorgan-warning"]
    else:
        assert "x-colorgan-warning" not in r.headers


def test_jpeg_output_and_compare(client):
    data = _encode(_photo("L"), "PNG")
    r = _post(client, data, format="jpeg")
    assert r.status_code == 200 and r.headers["content-type"] == "image/jpeg"
    assert Image.open(io.BytesIO(r.content)).format == "JPEG"
    assert r.headers["content-disposition"].startswith('inline; filename="photo-colour.jpg"')

    r = _post(client, _encode(_photo("LA"), "PNG"), compare="true")
    assert r.status_code == 200
    side = Image.open(io.BytesIO(r.content))
    assert side.size == (96, 40) and side.mode == "RGB"  # original | colour, no alpha (as the CLI)
    left = np.asarray(side)[:, :48].astype(int)
    assert np.abs(left - left.mean(axis=2, keepdims=True)).max() <= 1, "the left half is the grey original"
    assert "photo-compare.png" in r.headers["content-disposition"]


def test_options_from_query_and_form(client):
    data = _encode(_photo("L"), "PNG")
    r = client.post("/api/colorize?render_size=96&format=jpeg", files={"file": ("a.png", data)})
    assert r.status_code == 200 and r.headers["x-render-size"] == "96" and r.headers["content-type"] == "image/jpeg"
    # The form field wins over the query.
    r = client.post("/api/colorize?render_size=96", files={"file": ("a.png", data)}, data={"render_size": "128"})
    assert r.headers["x-render-size"] == "128"
    # Different render sizes give different colours (the model really sees another input).
    a = _post(client, data, render_size=64).content
    b = _post(client, data, render_size=192).content
    assert a != b


def test_same_request_twice_gives_identical_bytes(client):
    data = _encode(_photo("L"), "JPEG")
    assert _post(client, data).content == _post(client, data).content


# ------------------------------------------------------------------------------------ bad input


@pytest.mark.parametrize(
    "fields,status,needle",
    [
        ({"render_size": "10"}, 422, "render_size must be between 64 and 1024"),
        ({"render_size": "4096"}, 422, "render_size must be between 64 and 1024"),
        ({"render_size": "abc"}, 422, "render_size must be an integer"),
        ({"compare": "maybe"}, 422, "compare must be true or false"),
        ({"format": "gif"}, 422, "format must be png or jpeg"),
    ],
)
def test_bad_options_are_422(client, fields, status, needle):
    r = _post(client, _encode(_photo("L"), "PNG"), **fields)
    assert r.status_code == status and needle in r.json()["detail"]


def test_bad_query_value_is_one_line_422(client):
    r = client.post("/api/colorize?render_size=big", files={"file": ("a.png", _encode(_photo("L"), "PNG"))})
    assert r.status_code == 422
    assert isinstance(r.json()["detail"], str) and "render_size" in r.json()["detail"]


def _truncated_png() -> bytes:
    data = _encode(_photo("L", (64, 64)), "PNG")
    return data[: len(data) // 2]


@pytest.mark.parametrize(
    "payload,name,status,needle",
    [
        (b"hello, I am a text file\n" * 20, "notes.txt", 415, "notes.txt: not an image"),
        (b"GIF89a" + bytes(200), "anim.gif", 415, "not an image or unsupported format"),
        (b"<svg xmlns='http://www.w3.org/2000/svg'/>", "x.svg", 415, "not an image"),
        (b"PK\x03\x04" + bytes(100), "photo.jpg", 415, "photo.jpg: not an image"),  # the name lies
        (_truncated_png(), "half.png", 400, "half.png: truncated or corrupt"),
        (b"\x89PNG\r\n\x1a\n" + os.urandom(300), "noise.png", 400, "truncated or corrupt"),
        (b"\xff\xd8\xff\xe0" + os.urandom(300), "noise.jpg", 400, "truncated or corrupt"),
        (b"", "empty.png", 400, "empty.png: empty file"),
    ],
    ids=["text", "gif", "svg", "zip-named-jpg", "truncated-png", "png-noise", "jpeg-noise", "empty"],
)
def test_bad_files_get_4xx_with_a_message_and_the_server_keeps_serving(client, payload, name, status, needle):
    r = _post(client, payload, name=name)
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/json"
    assert needle in r.json()["detail"]
    _good(client)


def test_client_path_in_filename_is_only_a_display_name(client):
    r = _post(client, b"not an image", name="../../etc/passwd")
    assert r.status_code == 415 and r.json()["detail"].startswith("passwd: ")
    r = _post(client, _encode(_photo("L"), "PNG"), name="C:\\Users\\me\\Oma 1950 ü.png")
    assert r.status_code == 200
    cd = r.headers["content-disposition"]
    assert 'filename="Oma_1950__-colour.png"' in cd and "filename*=UTF-8''Oma%201950%20%C3%BC-colour.png" in cd


def test_non_multipart_bodies_are_415(client):
    r = client.post("/api/colorize", content=_encode(_photo("L"), "PNG"), headers={"content-type": "image/png"})
    assert r.status_code == 415 and "multipart/form-data" in r.json()["detail"]
    r = client.post("/api/colorize", json={"file": "x"})
    assert r.status_code == 415
    _good(client)


def test_form_without_file_or_with_two_files(client):
    r = client.post("/api/colorize", data={"render_size": "128"}, files={"other": ("a.png", b"x")})
    assert r.status_code == 422 and "field named 'file'" in r.json()["detail"]
    png = _encode(_photo("L"), "PNG")
    r = client.post("/api/colorize", files=[("file", ("a.png", png)), ("file", ("b.png", png))])
    assert r.status_code == 400 and "one file per request" in r.json()["detail"]
    r = client.post(
        "/api/colorize",
        content=b"--xyz\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.png\"\r\n\r\n" + png[:50],
        headers={"content-type": "multipart/form-data; boundary=xyz"},
    )
    assert r.status_code == 400 and "incomplete" in r.json()["detail"]
    _good(client)


def _multipart(data: bytes, boundary: str = "b0undary") -> bytes:
    return (
        f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"big.png\"\r\n"
        f"Content-Type: image/png\r\n\r\n".encode()
        + data
        + f"\r\n--{boundary}--\r\n".encode()
    )


def test_oversized_upload_is_413_from_content_length_and_from_streaming(make_client):
    client = make_client(max_upload_mb=0.05)  # 50 kB
    big = _encode(_photo("L", (400, 400)), "PNG", compress_level=0)
    assert len(big) > 100_000
    r = _post(client, big, name="big.png")
    assert r.status_code == 413 and "50 kB" not in r.json()["detail"] and "0.05 MB" in r.json()["detail"]

    # Chunked, without Content-Length: the bytes are counted while they stream in.
    body = _multipart(big)

    def chunks():
        for i in range(0, len(body), 8192):
            yield body[i : i + 8192]

    r = client.post("/api/colorize", content=chunks(), headers={"content-type": "multipart/form-data; boundary=b0undary"})
    assert r.status_code == 413 and "larger than this server's limit" in r.json()["detail"]
    # A file just under the limit, sent the same way, is fine.
    small = _encode(_photo("L"), "PNG")
    r = client.post("/api/colorize", content=iter([_multipart(small)]), headers={"content-type": "multipart/form-data; boundary=b0undary"})
    assert r.status_code == 200
    _good(client)


def test_pixel_limit_is_413_before_decoding(make_client):
    client = make_client(max_pixels=1000)
    r = _post(client, _encode(_photo("L", (48, 40)), "PNG"), name="wide.png")
    assert r.status_code == 413
    assert "wide.png: image is 48 x 40" in r.json()["detail"] and "--max-pixels" in r.json()["detail"]
    r = _post(client, _encode(_photo("L", (30, 30)), "PNG"))
    assert r.status_code == 200


# ------------------------------------------------------------------------------------ queue


def test_full_queue_is_503_with_retry_after_and_recovers(make_client):
    client = make_client(workers=1, queue_size=2)
    state = client.app.state.colorgan
    tickets = [state.queue.try_admit(), state.queue.try_admit()]
    assert all(tickets) and state.queue.try_admit() is None
    r = _post(client, _encode(_photo("L"), "PNG"))
    assert r.status_code == 503
    assert int(r.headers["retry-after"]) >= 1
    assert "busy" in r.json()["detail"]
    assert client.get("/api/health").json()["queue"]["rejected"] >= 2
    for t in tickets:
        t.release()
        t.release()  # idempotent
    assert client.get("/api/health").json()["queue"]["admitted"] == 0
    _good(client)


def test_timeout_is_504_and_cancels_a_job_that_had_not_started(make_client):
    client = make_client(workers=1, queue_size=4, request_timeout_s=0.3)
    queue = client.app.state.colorgan.queue
    gate = threading.Event()
    blocker_ticket = queue.try_admit()
    # Occupy the only worker thread with a job that waits for the gate.
    blocker = threading.Thread(target=lambda: asyncio.run(blocker_ticket.run(gate.wait, 10, timeout=30)))
    blocker.start()
    try:
        for _ in range(100):
            if queue.stats()["running"] == 1:
                break
            time.sleep(0.01)
        assert queue.stats()["running"] == 1
        r = _post(client, _encode(_photo("L"), "PNG"))
        assert r.status_code == 504
        assert "not done within 0.3 s (it had not started)" in r.json()["detail"]
        stats = queue.stats()
        assert stats["timed_out"] == 1 and stats["admitted"] == 1, "the cancelled job must free its slot"
    finally:
        gate.set()
        blocker.join(10)
    assert queue.stats()["admitted"] == 0
    _good(client)


def test_a_running_job_that_times_out_keeps_its_slot_until_it_ends():
    queue = WorkQueue(workers=1, capacity=1)
    gate = threading.Event()

    async def scenario() -> None:
        ticket = queue.try_admit()
        assert ticket is not None and queue.try_admit() is None
        with pytest.raises(WorkTimeout) as info:
            await ticket.run(gate.wait, 10, timeout=0.1)
        assert info.value.started
        # The torch call cannot be interrupted: it still runs, so the queue is still full.
        assert queue.stats()["admitted"] == 1 and queue.try_admit() is None
        gate.set()
        for _ in range(200):
            if queue.stats()["admitted"] == 0:
                break
            await asyncio.sleep(0.01)
        assert queue.stats()["admitted"] == 0
        again = queue.try_admit()
        assert again is not None and await again.run(lambda: 42, timeout=5) == 42

    try:
        asyncio.run(scenario())
    finally:
        gate.set()
        queue.close()


def test_job_errors_propagate_and_free_the_slot():
    queue = WorkQueue(workers=2, capacity=2)

    def boom() -> None:
        raise ValueError("bad")

    async def scenario() -> None:
        t = queue.try_admit()
        with pytest.raises(ValueError, match="bad"):
            await t.run(boom, timeout=5)
        with pytest.raises(RuntimeError, match="already used"):
            await t.run(boom, timeout=5)
        await asyncio.sleep(0.05)
        assert queue.stats()["admitted"] == 0 and queue.stats()["completed"] == 1

    try:
        asyncio.run(scenario())
    finally:
        queue.close()


def test_model_is_loaded_once_and_shared(tiny_weights):
    from colorgan.pipeline import Colorizer

    calls = []

    def factory() -> Colorizer:
        calls.append(1)
        return Colorizer.from_pretrained(tiny_weights, device="cpu")

    app = create_app(factory, settings=ServeSettings(workers=2))
    with TestClient(app, base_url=BASE) as client:
        assert calls == [1], "loaded at start-up, before any request"
        data = _encode(_photo("L", (96, 80)), "PNG")
        alone = _post(client, data).content
        results = []
        threads = [threading.Thread(target=lambda: results.append(_post(client, data))) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert [r.status_code for r in results] == [200] * 4
        # Two threads share the model: concurrent calls give exactly the result of a lone call.
        assert all(r.content == alone for r in results)
        assert calls == [1]
        assert client.get("/api/health").json()["queue"]["completed"] == 5


def test_weights_path_is_loaded(tiny_weights):
    with TestClient(create_app(str(tiny_weights), settings=ServeSettings(device="cpu")), base_url=BASE) as client:
        assert client.get("/api/health").json()["model"]["name"] == str(tiny_weights)
        _good(client)


# ------------------------------------------------------------------------------------ guard


def test_host_and_origin_guard(client):
    r = client.get("/api/health", headers={"host": "evil.example"})
    assert r.status_code == 400 and "not allowed" in r.json()["detail"]
    for host in ("localhost:8000", "127.0.0.1", "[::1]:8000"):
        assert client.get("/api/health", headers={"host": host}).status_code == 200, host
    data = _encode(_photo("L"), "PNG")
    r = client.post("/api/colorize", files={"file": ("a.png", data)}, headers={"origin": "http://evil.example"})
    assert r.status_code == 403 and "cross-origin" in r.json()["detail"]
    r = client.post("/api/colorize", files={"file": ("a.png", data)}, headers={"origin": "http://127.0.0.1"})
    assert r.status_code == 200


def test_any_host_when_bound_to_all_interfaces(make_client):
    client = make_client(host="0.0.0.0")
    assert client.get("/api/health", headers={"host": "photos.lan:8000"}).status_code == 200


def test_save_dir_keeps_copies_under_server_chosen_names(make_client, tmp_path):
    keep = tmp_path / "kept"
    client = make_client(save_dir=keep)
    r = _post(client, _encode(_photo("L"), "JPEG"), name="../../../escape.jpg")
    assert r.status_code == 200
    names = sorted(p.name for p in keep.iterdir())
    assert len(names) == 2
    assert re.fullmatch(r"\d{8}-\d{6}-[0-9a-f]{12}-colour\.png", names[0]), names
    assert re.fullmatch(r"\d{8}-\d{6}-[0-9a-f]{12}-input\.jpg", names[1]), names
    assert not any("escape" in str(p) for p in tmp_path.rglob("*"))
    assert (keep / names[0]).read_bytes() == r.content


# ------------------------------------------------------------------------------------ page, docs


def test_page_and_assets_are_local(client):
    r = client.get("/")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    csp = r.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "default-src 'self'" in csp
    html = r.text
    for name in ("app.js", "zip.js", "app.css", "favicon.svg"):
        assert f"/static/{name}" in html
        a = client.get(f"/static/{name}")
        assert a.status_code == 200 and a.content
        # No CDN, no external fonts: nothing the page loads comes from elsewhere.
        assert not re.search(rb"(src|href)=[\"']?(https?:)?//", a.content)
        assert b"@import" not in a.content and b"url(http" not in a.content
    assert not re.search(r"(src|href)=\"(https?:)?//", html)
    assert "<script>" not in html, "no inline script (the CSP forbids it)"
    assert client.get("/static/app.py").status_code == 404
    assert client.get("/static/..%2Fapp.py").status_code == 404
    assert client.get("/static/../api.py").status_code == 404
    assert client.get("/favicon.ico").status_code == 200


def test_docs_and_openapi(client):
    spec = client.get("/openapi.json").json()
    post = spec["paths"]["/api/colorize"]["post"]
    schema = post["requestBody"]["content"]["multipart/form-data"]["schema"]
    assert schema["properties"]["file"]["format"] == "binary" and schema["required"] == ["file"]
    assert {"400", "413", "415", "422", "503", "504"} <= set(post["responses"])
    assert "/api/health" in spec["paths"]
    r = client.get("/docs")
    assert r.status_code == 200 and "swagger-ui" in r.text
    try:
        import fastapi_offline  # noqa: F401
    except ImportError:
        pytest.skip("fastapi-offline not installed: /docs loads Swagger UI from its CDN")
    assert "/docs/assets/swagger-ui-bundle.js" in r.text and "cdn" not in r.text
    assert client.get("/docs/assets/swagger-ui-bundle.js").status_code == 200
    assert client.get("/docs/assets/secrets.txt").status_code == 404


def test_extra_routers_are_included_and_share_the_state(tiny_colorizer):
    extra = APIRouter(prefix="/study")

    @extra.get("/ping")
    async def ping(request: Request) -> dict:
        return {"model": get_state(request).colorizer().name}

    with TestClient(create_app(tiny_colorizer, extra_routers=[extra]), base_url=BASE) as client:
        assert client.get("/study/ping").json() == {"model": tiny_colorizer.name}
        _good(client)


def test_settings_are_validated():
    with pytest.raises(ValueError, match="workers"):
        ServeSettings(workers=0)
    with pytest.raises(ValueError, match="queue_size"):
        ServeSettings(workers=4, queue_size=2)
    with pytest.raises(ValueError, match="max_render_size"):
        ServeSettings(max_render_size=4096)
    with pytest.raises(ValueError, match="max_upload_mb"):
        ServeSettings(max_upload_mb=0)


@pytest.mark.integration
def test_import_is_light():
    code = "import sys, colorgan.web, colorgan.web.cli; print(sorted(m for m in ('torch', 'fastapi', 'uvicorn') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "[]"


# ------------------------------------------------------------------------------------ the command


def _serve_env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


@pytest.mark.integration
def test_serve_command_end_to_end(tiny_weights):
    import httpx

    proc = subprocess.Popen(
        [sys.executable, "-m", "colorgan", "serve", "--weights", str(tiny_weights), "--port", "0", "--device", "cpu", "--quiet"],
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
        env=_serve_env(),
    )
    try:
        line = proc.stderr.readline()
        m = re.search(r"serving on (http://127\.0\.0\.1:(\d+)/)", line)
        assert m, line + proc.stderr.read() if proc.poll() is not None else line
        url = m.group(1)
        for _ in range(200):
            try:
                if httpx.get(url + "api/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.05)
        r = httpx.post(url + "api/colorize", files={"file": ("a.png", _encode(_photo("L"), "PNG"))}, timeout=30)
        assert r.status_code == 200 and Image.open(io.BytesIO(r.content)).size == (48, 40)
        r = httpx.post(url + "api/colorize", files={"file": ("a.txt", b"text")}, timeout=30)
        assert r.status_code == 415
    finally:
        proc.send_signal(2)  # Ctrl-C: a graceful stop
        try:
            assert proc.wait(20) == 0
        finally:
            if proc.poll() is None:
                proc.kill()


def test_serve_command_usage_errors(tiny_weights, tmp_path, capsys):
    from colorgan.cli import main

    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    try:
        port = taken.getsockname()[1]
        assert main(["serve", "--weights", str(tiny_weights), "--port", str(port), "--device", "cpu"]) == 2
        assert f"cannot listen on 127.0.0.1:{port}" in capsys.readouterr().err
    finally:
        taken.close()
    assert main(["serve", "--weights", str(tmp_path / "missing.safetensors"), "--device", "cpu"]) == 2
    assert "error:" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        main(["serve", "--port", "70000"])
    assert e.value.code == 2



def test_stalled_upload_is_408_on_a_real_server(tiny_colorizer):
    """A client that stops sending mid-upload gets 408 and frees its slot (real uvicorn, raw socket)."""
    import uvicorn

    app = create_app(tiny_colorizer, settings=ServeSettings(upload_timeout_s=0.3))
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        for _ in range(500):
            if server.started:
                break
            time.sleep(0.01)
        body = _multipart(_encode(_photo("L"), "PNG"))
        head = (
            f"POST /api/colorize HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            f"Content-Type: multipart/form-data; boundary=b0undary\r\nContent-Length: {len(body)}\r\n\r\n"
        ).encode()
        with socket.create_connection(("127.0.0.1", port), timeout=10) as c:
            c.sendall(head + body[:100])  # ...and then nothing more
            start = time.monotonic()
            reply = b""
            while b"\r\n\r\n" not in reply or not reply.rstrip().endswith(b"}"):
                chunk = c.recv(4096)
                if not chunk:
                    break
                reply += chunk
            waited = time.monotonic() - start
        assert reply.startswith(b"HTTP/1.1 408"), reply[:200]
        assert b"upload took longer than 0.3 s" in reply
        assert 0.25 < waited < 5
        assert app.state.colorgan.queue.stats()["admitted"] == 0, "the slot is freed"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


def test_api_takes_hints_and_a_reference_and_refuses_bad_ones(tiny_guided_weights, tiny_weights):
    """POST /api/colorize with the hints JSON of `colorgan colorize --hints` and a reference file."""
    import json as _json

    from colorgan.pipeline import Colorizer

    png = _encode(_photo("L", size=(64, 48)), "PNG")
    hints = _json.dumps({"points": [{"x": 10, "y": 12, "color": "#ff2020", "radius": 6}]})
    ref = _encode(_photo("RGB", size=(60, 50), seed=3), "PNG")
    with TestClient(create_app(str(tiny_guided_weights), settings=ServeSettings(device="cpu")), base_url=BASE) as client:
        auto = client.post("/api/colorize", files={"file": ("a.png", png)}, data={"render_size": "64"})
        hinted = client.post("/api/colorize", files={"file": ("a.png", png)}, data={"render_size": "64", "hints": hints})
        both = client.post("/api/colorize", files={"file": ("a.png", png), "reference": ("r.png", ref)},
                           data={"render_size": "64", "hints": hints})
        assert auto.status_code == hinted.status_code == both.status_code == 200
        assert auto.content != hinted.content != both.content
        # The page's hints reproduce the CLI's result: the same as Colorizer.colorize with those hints.
        grey = np.asarray(Image.open(io.BytesIO(png)))
        want = Colorizer.from_pretrained(tiny_guided_weights).colorize(grey, render_size=64, hints=_json.loads(hints))
        assert np.array_equal(np.asarray(Image.open(io.BytesIO(hinted.content)).convert("RGB")), want)
        bad = client.post("/api/colorize", files={"file": ("a.png", png)}, data={"hints": '{"points": [{"x": 500, "y": 1, "color": "#fff"}]}'})
        assert bad.status_code == 422 and "points[0]" in bad.json()["detail"] and "outside" in bad.json()["detail"]
        assert client.post("/api/colorize", files={"file": ("a.png", png)}, data={"hints": "{nope"}).status_code == 422
        grey_ref = client.post("/api/colorize", files={"file": ("a.png", png), "reference": ("r.png", png)})
        assert grey_ref.status_code == 422 and "greyscale" in grey_ref.json()["detail"]
        junk = client.post("/api/colorize", files={"file": ("a.png", png), "reference": ("r.png", b"not an image")})
        assert junk.status_code == 422 and "reference" in junk.json()["detail"]
    with TestClient(create_app(str(tiny_weights), settings=ServeSettings(device="cpu")), base_url=BASE) as client:
        r = client.post("/api/colorize", files={"file": ("a.png", png)}, data={"hints": hints})
        assert r.status_code == 422 and "takes no colour hints" in r.json()["detail"]


def test_api_suggest_gives_likely_colours_at_the_place_at_its_lightness(client):
    """POST /api/suggest: colours from the shipped colour-distribution model (cic) for one place,
    most likely first, each with the photo's lightness there; bad places are 422s naming the problem."""
    photo = _photo("L", size=(96, 64))
    png = _encode(photo, "PNG")
    r = client.post("/api/suggest", files={"file": ("a.png", png)}, data={"x": "30", "y": "20", "render_size": "64"})
    assert r.status_code == 200, r.text
    body = r.json()
    found = body["suggestions"]
    assert body["x"] == 30 and body["y"] == 20 and 1 <= len(found) <= 6
    probs = [s["probability"] for s in found]
    assert probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1.0 + 1e-6
    want_l = float(np.asarray(photo, dtype=np.float64)[18:23, 28:33].mean())
    for s in found:
        rgb = np.array([[[int(s["color"][i : i + 2], 16) / 255 for i in (1, 3, 5)]]])
        grey_l = _lum(np.full((1, 1, 3), want_l / 255))[0, 0]
        assert abs(_lum(rgb)[0, 0] - grey_l) < 2.0  # the swatch is the colour a point there gives
    for data, msg in (({"x": "500", "y": "20"}, "outside"), ({"x": "3"}, "y is required"), ({"x": "a", "y": "1"}, "number")):
        r = client.post("/api/suggest", files={"file": ("a.png", png)}, data=data)
        assert r.status_code == 422 and msg in r.json()["detail"], r.text
    assert client.post("/api/suggest", data={"x": "1", "y": "1"}).status_code in (415, 422)


def test_suggestions_are_the_modes_of_the_distribution():
    """Two peaks in the predicted distribution: the two colours, the stronger first."""
    from colorgan.models.cic import ab_bins
    from colorgan.suggest import colour_suggestions

    bins = ab_bins()
    red, blue = int(torch.cdist(bins, torch.tensor([[50.0, 30.0]])).argmin()), int(torch.cdist(bins, torch.tensor([[10.0, -50.0]])).argmin())

    class Peaks(torch.nn.Module):
        stride = 32

        def __init__(self) -> None:
            super().__init__()
            self.register_buffer("bins", bins)
            self.w = torch.nn.Parameter(torch.zeros(1))

        def forward(self, l, raw=False):
            logits = torch.full((l.shape[0], len(bins), l.shape[2] // 4, l.shape[3] // 4), -20.0)
            logits[:, red], logits[:, blue] = 3.0, 2.0
            return logits

    L = torch.full((1, 1, 64, 64), 55.0)
    found = colour_suggestions(Peaks(), L, 10, 10, render_size=64)
    assert len(found) == 2 and found[0].probability > found[1].probability > 0.2
    lab = color.rgb_to_lab(torch.tensor([[int(s.color[i : i + 2], 16) / 255 for i in (1, 3, 5)] for s in found]).T[:, :, None])
    assert torch.allclose(lab[0, :, 0], torch.tensor([55.0, 55.0]), atol=1.0)
    assert lab[1, 0, 0] > 30 and lab[2, 0, 0] > 15 and lab[2, 1, 0] < -30  # red-ish, then blue
    with pytest.raises(ValueError, match="outside"):
        colour_suggestions(Peaks(), L, 64, 3)
