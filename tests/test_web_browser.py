"""The page in a real headless Chromium (selenium + chromedriver), against a real uvicorn server.

Upload two files (a photo and a text file), see the result with its before/after slider and the
rejection message, move the slider with the keyboard, re-render at another size, download one
result and the zip of all, and save a screenshot as a test artefact (under the test's tmp folder
and, if ``COLORGAN_TEST_ARTIFACTS`` is set, copied there).

Needs the Debian packages ``chromium`` and ``chromium-driver`` (``/usr/bin/chromium``,
``/usr/bin/chromedriver``); skipped with that reason when they are absent.
"""

from __future__ import annotations

import io
import os
import shutil
import socket
import threading
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

CHROMIUM = os.environ.get("COLORGAN_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("COLORGAN_CHROMEDRIVER", "/usr/bin/chromedriver")

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        not (os.access(CHROMIUM, os.X_OK) and os.access(CHROMEDRIVER, os.X_OK)),
        reason=f"needs headless Chromium and chromedriver ({CHROMIUM}, {CHROMEDRIVER}): apt-get install chromium chromium-driver",
    ),
]

selenium = pytest.importorskip("selenium")
pytest.importorskip("uvicorn")

from selenium import webdriver  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

from colorgan.web.app import create_app  # noqa: E402
from colorgan.web.settings import ServeSettings  # noqa: E402

WAIT_S = 30


def _photo(path: Path, size: tuple[int, int] = (320, 240)) -> Path:
    """A grey JPEG with some structure (gradient, shapes, noise)."""
    from conftest import write_photos

    w, h = size
    rng = np.random.default_rng(3)
    yy, xx = np.mgrid[0:h, 0:w]
    grey = (xx / w * 150 + yy / h * 60 + rng.integers(0, 20, (h, w))).clip(0, 255).astype(np.uint8)
    im = Image.fromarray(grey, "L")
    d = ImageDraw.Draw(im)
    d.ellipse((40, 40, 140, 140), fill=200)
    d.rectangle((180, 60, 290, 200), fill=60)
    return write_photos(path.parent, [im], path.name, quality=92)[0]


@pytest.fixture
def live_server(tiny_colorizer):
    """uvicorn serving the app with the tiny model on a free loopback port, in a thread."""
    yield from _serve(tiny_colorizer)


@pytest.fixture
def live_guided_server(tiny_guided_weights):
    """The same with a tiny model that takes colour guidance."""
    from colorgan.pipeline import Colorizer

    yield from _serve(Colorizer.from_pretrained(tiny_guided_weights, device="cpu"))


def _serve(colorizer):
    import uvicorn

    app = create_app(colorizer, settings=ServeSettings(workers=1))
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + WAIT_S
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    yield f"http://127.0.0.1:{port}/"
    server.should_exit = True
    thread.join(WAIT_S)
    sock.close()


@pytest.fixture
def browser(tmp_path):
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        "--window-size=1280,1000",
        f"--user-data-dir={tmp_path / 'profile'}",
    ):
        options.add_argument(flag)
    options.add_experimental_option(
        "prefs",
        {
            "download.default_directory": str(downloads),
            "download.prompt_for_download": False,
            "download.directory_upgrade": True,
            "safebrowsing.enabled": False,
        },
    )
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    # The driver path is given, so selenium-manager never looks for (or downloads) one.
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        driver.execute_cdp_cmd("Browser.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(downloads)})
        driver.downloads = downloads  # type: ignore[attr-defined]
        yield driver
    finally:
        driver.quit()


def _wait_for_file(folder: Path, name: str) -> Path:
    """Wait until Chromium has finished writing ``folder/name``."""
    target = folder / name
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        partial = list(folder.glob("*.crdownload"))
        if target.is_file() and target.stat().st_size > 0 and not partial:
            return target
        time.sleep(0.05)
    raise AssertionError(f"{name} was not downloaded; the folder holds {sorted(p.name for p in folder.iterdir())}")


def _save_artifact(shot: Path) -> None:
    dest = os.environ.get("COLORGAN_TEST_ARTIFACTS")
    if dest:
        Path(dest).mkdir(parents=True, exist_ok=True)
        shutil.copy2(shot, Path(dest) / shot.name)


def test_upload_compare_rerender_and_download(live_server, browser, tmp_path):
    photo = _photo(tmp_path / "street-1920.jpg")
    junk = tmp_path / "notes.txt"
    junk.write_text("not a photo\n" * 10)
    wait = WebDriverWait(browser, WAIT_S)

    browser.get(live_server)
    wait.until(lambda d: "model" in d.find_element(By.ID, "server-info").text)
    assert "tiny.safetensors" in browser.find_element(By.ID, "server-info").text

    # Keyboard: Tab reaches the skip link, then the file input (whose label is the drop zone).
    body = browser.find_element(By.TAG_NAME, "body")
    body.send_keys(Keys.TAB)
    assert browser.switch_to.active_element.get_attribute("class") == "skip-link"
    browser.switch_to.active_element.send_keys(Keys.TAB)
    assert browser.switch_to.active_element.get_attribute("id") == "file-input"

    browser.find_element(By.ID, "file-input").send_keys(f"{photo}\n{junk}")
    cards = browser.find_elements(By.CSS_SELECTOR, "#results .card")
    assert len(cards) == 2
    good, bad = cards

    # The result and its slider appear.
    wait.until(lambda d: good.get_attribute("data-state") == "done")
    after = good.find_element(By.CSS_SELECTOR, "img.after")
    before = good.find_element(By.CSS_SELECTOR, "img.before")
    wait.until(lambda d: d.execute_script("return arguments[0].complete && arguments[0].naturalWidth", after) == 320)
    wait.until(lambda d: d.execute_script("return arguments[0].complete && arguments[0].naturalWidth", before) == 320)
    assert good.find_element(By.CSS_SELECTOR, ".compare").is_displayed()
    slider = good.find_element(By.CSS_SELECTOR, "input.slider")
    assert slider.is_displayed() and slider.get_attribute("value") == "50"
    assert "street-1920.jpg" in slider.get_attribute("aria-label")
    assert "320 × 240" in good.find_element(By.CSS_SELECTOR, ".meta").text
    assert good.get_attribute("data-render-size") == "256"

    # The rejected file gets a clear message of its own.
    wait.until(lambda d: bad.get_attribute("data-state") == "error")
    message = bad.find_element(By.CSS_SELECTOR, ".error")
    assert message.is_displayed() and message.get_attribute("role") == "alert"
    assert "notes.txt: not an image or unsupported format" in message.text

    # The slider works from the keyboard and moves the clip of the colour image.
    slider.send_keys(Keys.ARROW_LEFT * 5)
    assert slider.get_attribute("value") == "45"
    clip = browser.execute_script("return getComputedStyle(arguments[0]).clipPath", good.find_element(By.CSS_SELECTOR, ".after-clip"))
    assert "45%" in clip, clip
    assert slider.get_attribute("aria-valuetext") == "45% original, 55% colour"

    # Download one result: the file lands and decodes as the colourised photo.
    good.find_element(By.CSS_SELECTOR, "a.download").click()
    single = _wait_for_file(browser.downloads, "street-1920-colour.png")
    with Image.open(single) as im:
        assert im.format == "PNG" and im.size == (320, 240) and im.mode == "RGB"
        first = np.asarray(im)
    assert np.abs(first.astype(int) - first.mean(axis=2, keepdims=True)).mean() > 0.5, "the download is in colour"

    # The render-size control re-renders (256 -> 384 with the keyboard).
    size = browser.find_element(By.ID, "render-size")
    size.send_keys(Keys.ARROW_RIGHT * 4)
    assert browser.find_element(By.ID, "render-size-value").text == "384"
    wait.until(lambda d: good.get_attribute("data-render-size") == "384" and good.get_attribute("data-state") == "done")
    assert bad.get_attribute("data-state") == "error", "a rejected file is not sent again"

    # Download all as a zip (built in the page): valid CRCs, the re-rendered result inside.
    browser.find_element(By.ID, "download-all").click()
    archive = _wait_for_file(browser.downloads, "colorgan-results.zip")
    with zipfile.ZipFile(archive) as z:
        assert z.testzip() is None, "CRC-32 of every member must check"
        assert z.namelist() == ["street-1920-colour.png"]
        with Image.open(io.BytesIO(z.read("street-1920-colour.png"))) as im:
            assert im.size == (320, 240)
            second = np.asarray(im)
    assert not np.array_equal(first, second), "the zip holds the render at 384 px, not the first one"

    shot = tmp_path / "web_ui.png"
    browser.execute_script("window.scrollTo(0, 0)")
    assert browser.save_screenshot(str(shot))
    with Image.open(shot) as im:
        assert im.size[0] >= 1000
    _save_artifact(shot)

    # Nothing went wrong in the page: no script errors, no blocked (non-local) loads. The 415 of
    # the text file is logged by Chromium as a failed resource; that one is expected.
    logs = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    unexpected = [e["message"] for e in logs if "status of 415" not in e["message"]]
    assert not unexpected, unexpected


def test_page_is_usable_on_a_phone_sized_window(live_server, browser, tmp_path):
    browser.set_window_size(390, 844)
    browser.get(live_server)
    WebDriverWait(browser, WAIT_S).until(lambda d: "model" in d.find_element(By.ID, "server-info").text)
    # No horizontal scrolling: the layout fits the narrow viewport.
    assert browser.execute_script("return document.documentElement.scrollWidth <= window.innerWidth")
    label = browser.find_element(By.CSS_SELECTOR, ".dropzone-label")
    assert label.is_displayed() and label.size["width"] <= 390
    shot = tmp_path / "web_ui_phone.png"
    assert browser.save_screenshot(str(shot))
    _save_artifact(shot)


def test_api_docs_render_without_network(live_server, browser):
    pytest.importorskip("fastapi_offline", reason="without fastapi-offline, /docs loads Swagger UI from a CDN")
    browser.get(live_server + "docs")
    WebDriverWait(browser, WAIT_S).until(
        lambda d: any("/api/colorize" in e.text for e in d.find_elements(By.CSS_SELECTOR, ".opblock-summary-path"))
    )
    # Every script and stylesheet came from this server.
    sources = browser.execute_script(
        "return Array.from(document.querySelectorAll('script[src], link[href]')).map(e => e.src || e.href)"
    )
    assert sources and all(s.startswith(live_server) for s in sources), sources


_PIXEL_JS = """
const img = arguments[0], x = arguments[1], y = arguments[2];
const c = document.createElement('canvas');
c.width = img.naturalWidth; c.height = img.naturalHeight;
const g = c.getContext('2d');
g.drawImage(img, 0, 0);
return Array.from(g.getImageData(x, y, 1, 1).data.slice(0, 3));
"""


def _ab(rgb8) -> np.ndarray:
    import torch

    from colorgan import color

    t = torch.tensor(rgb8, dtype=torch.float32).view(1, 3, 1, 1) / 255.0
    return color.rgb_to_lab(t)[0, 1:, 0, 0].numpy()


def _colourise_one(browser, wait, url: str, photo) -> "object":
    """Open the page, upload one photo, and return its result card once it is done."""
    browser.get(url)
    wait.until(lambda d: "model" in d.find_element(By.ID, "server-info").text)
    browser.find_element(By.ID, "file-input").send_keys(str(photo))
    card = browser.find_element(By.CSS_SELECTOR, "#results .card")
    wait.until(lambda d: card.get_attribute("data-state") == "done")
    return card


def test_place_a_colour_point_pick_its_colour_and_the_colour_moves_there(live_guided_server, browser, tmp_path):
    """Click the picture in colour-point mode, choose a colour: the re-rendered colour at that place
    moves towards it; undo brings the automatic colours back; the hints file says what was sent."""
    import json

    from selenium.webdriver.common.action_chains import ActionChains

    wait = WebDriverWait(browser, WAIT_S)
    card = _colourise_one(browser, wait, live_guided_server, _photo(tmp_path / "square.jpg"))
    after = card.find_element(By.CSS_SELECTOR, "img.after")
    wait.until(lambda d: d.execute_script("return arguments[0].complete && arguments[0].naturalWidth", after) == 320)
    guide = card.find_element(By.CSS_SELECTOR, ".guide")
    assert guide.is_displayed()
    x, y = 240, 130  # inside the dark rectangle of the test photo
    auto = browser.execute_script(_PIXEL_JS, after, x, y)
    first_src = after.get_attribute("src")

    # Choose the colour (the native picker cannot be driven; set its value as it would), then click.
    target = "#10c040"
    browser.execute_script(
        "arguments[0].value = arguments[1]; arguments[0].dispatchEvent(new Event('change'));",
        card.find_element(By.CSS_SELECTOR, ".point-colour"), target)
    card.find_element(By.CSS_SELECTOR, ".add-points").click()
    assert card.find_element(By.CSS_SELECTOR, ".add-points").get_attribute("aria-pressed") == "true"
    compare = card.find_element(By.CSS_SELECTOR, ".compare")
    rect = browser.execute_script("const r = arguments[0].getBoundingClientRect(); return [r.width, r.height];", compare)
    dx, dy = (x + 0.5) / 320 * rect[0] - rect[0] / 2, (y + 0.5) / 240 * rect[1] - rect[1] / 2
    ActionChains(browser).move_to_element_with_offset(compare, int(round(dx)), int(round(dy))).click().perform()
    assert len(card.find_elements(By.CSS_SELECTOR, ".marker")) == 1
    label = card.find_element(By.CSS_SELECTOR, ".points li span").text
    px, py = (int(v) for v in label.split(": ")[1].split(", "))
    assert abs(px - x) <= 2 and abs(py - y) <= 2

    wait.until(lambda d: after.get_attribute("src") != first_src and card.get_attribute("data-state") == "done")
    wait.until(lambda d: d.execute_script("return arguments[0].complete && arguments[0].naturalWidth", after) == 320)
    hinted = browser.execute_script(_PIXEL_JS, after, px, py)
    want = _ab([int(target[i : i + 2], 16) for i in (1, 3, 5)])
    assert np.linalg.norm(_ab(hinted) - want) < np.linalg.norm(_ab(auto) - want) - 2.0, (auto, hinted)

    # The downloaded hints file holds exactly the point that was sent.
    card.find_element(By.CSS_SELECTOR, "a.download-hints").click()
    hints = _wait_for_file(browser.downloads, "square.json")
    assert json.loads(hints.read_text()) == {"points": [{"x": px, "y": py, "color": target}]}

    # Undo: no point, and the automatic colours come back.
    second_src = after.get_attribute("src")
    card.find_element(By.CSS_SELECTOR, ".undo").click()
    assert not card.find_elements(By.CSS_SELECTOR, ".marker")
    wait.until(lambda d: after.get_attribute("src") != second_src and card.get_attribute("data-state") == "done")
    wait.until(lambda d: d.execute_script("return arguments[0].complete && arguments[0].naturalWidth", after) == 320)
    assert browser.execute_script(_PIXEL_JS, after, px, py) == auto
    shot = tmp_path / "web-colour-point.png"
    browser.save_screenshot(str(shot))
    _save_artifact(shot)



def test_a_new_point_gets_suggested_colours_and_a_swatch_sets_its_colour(live_guided_server, browser, tmp_path):
    """After a click, swatches of the colours likely at that place appear (from the cic model); a
    click on one makes it the point's colour, in the list and in the hints that are sent."""
    from selenium.webdriver.common.action_chains import ActionChains

    wait = WebDriverWait(browser, WAIT_S)
    card = _colourise_one(browser, wait, live_guided_server, _photo(tmp_path / "square.jpg"))
    card.find_element(By.CSS_SELECTOR, ".add-points").click()
    compare = card.find_element(By.CSS_SELECTOR, ".compare")
    ActionChains(browser).move_to_element_with_offset(compare, 10, 5).click().perform()
    box = card.find_element(By.CSS_SELECTOR, ".suggestions")
    wait.until(lambda d: box.is_displayed() and box.find_elements(By.CSS_SELECTOR, ".swatch"))
    swatches = box.find_elements(By.CSS_SELECTOR, ".swatch")
    assert 1 <= len(swatches) <= 6
    pick = swatches[-1].get_attribute("data-color")
    assert pick.startswith("#") and len(pick) == 7
    swatches[-1].click()
    wait.until(lambda d: card.find_element(By.CSS_SELECTOR, ".points li input[type=color]").get_attribute("value") == pick)
    assert card.find_element(By.CSS_SELECTOR, ".point-colour").get_attribute("value") == pick
    marker = card.find_element(By.CSS_SELECTOR, ".marker")
    rgb = browser.execute_script("return getComputedStyle(arguments[0]).backgroundColor", marker)
    assert rgb.replace(" ", "") == "rgb(%d,%d,%d)" % tuple(int(pick[i : i + 2], 16) for i in (1, 3, 5))
