"""The web page of fcnseg serve, driven in Debian's headless Chromium through Playwright.

Uploads a photo, waits for the overlay and the legend, checks them against the
inference API, and saves a screenshot (into pytest's tmp_path, and into
$FCNSEG_SCREENSHOT_DIR when that is set). Skips when /usr/bin/chromium is absent
(Debian/Ubuntu: ``apt-get install chromium``); ``playwright install`` is not used.
"""

from __future__ import annotations

import base64
import io
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from tiny_models import tiny_model

import fcnseg
from fcnseg.checkpoint import save_checkpoint
from fcnseg.predict.images import load_image, predict_mask

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
CAMVID_PHOTO = (
    Path(__file__).resolve().parents[2].parent / "shared" / "data" / "camvid" / "images" / "0001TP_006690.jpg"
)
CLASSES = ["background", "sky", "road", "tree", "car"]
PALETTE = [(0, 0, 0), (70, 130, 180), (128, 64, 128), (60, 160, 60), (220, 30, 60)]

pytestmark = [
    pytest.mark.skipif(
        not CHROMIUM.exists(), reason=f"Debian's chromium is not installed at {CHROMIUM} (apt-get install chromium)"
    ),
    pytest.mark.usefixtures("one_torch_thread"),
]
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright (test extra) is not installed")
pytest.importorskip("fastapi", reason="the serve extra is not installed (pip install 'fcnseg[serve]')")

from fcnseg.serve import create_app  # noqa: E402
from fcnseg.serve.background import background_server  # noqa: E402


def photo_file(folder: Path) -> Path:
    """A real road photo from the shared CamVid data, or a synthetic scene when that is absent."""
    path = folder / "street.jpg"
    if CAMVID_PHOTO.is_file():
        shutil.copy(CAMVID_PHOTO, path)
        return path
    rows, cols = np.mgrid[0:180, 0:240]
    picture = np.stack([120 + 100 * (cols > 140), 90 + 80 * np.sin(rows / 7.0), 230 * (rows < 70)], axis=-1)
    Image.fromarray(np.clip(picture, 0, 255).astype(np.uint8)).save(path, quality=92)
    return path


def test_page_uploads_a_photo_and_shows_overlay_and_legend(tmp_path):
    # a narrow random FCN-8s whose masks follow the image (several classes)
    model = tiny_model("fcn8s", len(CLASSES), width=0.125, seed=1, score_std={"score_pool3": 3.0})
    checkpoint = save_checkpoint(tmp_path / "model.safetensors", model, classes=CLASSES, palette=PALETTE)
    photo = photo_file(tmp_path)
    image = load_image(photo)
    mask = predict_mask(model, image).numpy()
    counts = np.bincount(mask.ravel(), minlength=len(CLASSES))
    present = [CLASSES[i] for i in sorted(np.flatnonzero(counts), key=lambda i: -counts[i])]
    blend = np.rint(0.5 * image.permute(1, 2, 0).numpy() + 0.5 * np.asarray(PALETTE)[mask])
    problems: list[str] = []

    with background_server(create_app(checkpoint)) as url, sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 760})
            page.on("pageerror", lambda error: problems.append(f"page error: {error}"))
            page.on("console", lambda message: message.type == "error" and problems.append(f"console: {message.text}"))
            page.goto(url + "/")
            sync_api.expect(page.locator("#model")).to_contain_text("fcn8s · 5 classes")

            page.set_input_files("#file", str(photo))
            page.wait_for_selector('#results[data-state="done"]', timeout=60_000)
            assert page.locator("#overlay").is_visible() and page.locator("#legend").is_visible()
            assert page.locator("#legend li .name").all_inner_texts() == present
            size = page.evaluate(
                "() => [document.getElementById('overlay').naturalWidth, "
                "document.getElementById('overlay').naturalHeight]"
            )
            assert size == [image.shape[-1], image.shape[-2]]
            source = page.get_attribute("#overlay", "src")
            shown = np.array(Image.open(io.BytesIO(base64.b64decode(source.split(",", 1)[1]))).convert("RGB"))
            assert np.abs(shown.astype(int) - blend).max() <= 1, "the page shows a different overlay"
            page.wait_for_timeout(200)  # let the images paint before the screenshot
            screenshot = tmp_path / "serve_page.png"
            page.screenshot(path=str(screenshot), full_page=True)

            # A file that is not an image: the server's reason appears on the page.
            page.set_input_files(
                "#file", files=[{"name": "notes.txt", "mimeType": "text/plain", "buffer": b"not a photo"}]
            )
            page.wait_for_selector('#results[data-state="error"]', timeout=30_000)
            error_text = page.inner_text("#error")
            assert "415" in error_text and "'notes.txt' is not an image" in error_text
        finally:
            browser.close()

    assert screenshot.stat().st_size > 10_000
    with Image.open(screenshot) as picture:
        assert picture.size[0] == 1280
    if os.environ.get("FCNSEG_SCREENSHOT_DIR"):
        target = Path(os.environ["FCNSEG_SCREENSHOT_DIR"])
        target.mkdir(parents=True, exist_ok=True)
        shutil.copy(screenshot, target / screenshot.name)
    # The failed upload above makes the browser log its 415 response; nothing else may go wrong.
    assert [p for p in problems if "415" not in p] == []


def test_page_asks_for_the_api_key_when_the_server_needs_one(tmp_path):
    model = fcnseg.create_model("fcn8s", num_classes=len(CLASSES), width=0.0625).eval()
    checkpoint = save_checkpoint(tmp_path / "model.safetensors", model, classes=CLASSES, palette=PALETTE)
    photo = photo_file(tmp_path)
    with background_server(create_app(checkpoint, api_key="k-123")) as url, sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            page.goto(url + "/")
            sync_api.expect(page.locator("#apikey")).to_be_visible()
            page.set_input_files("#file", str(photo))  # no key yet: the server's 401 is shown
            page.wait_for_selector('#results[data-state="error"]', state="attached", timeout=30_000)
            assert "401" in page.inner_text("#error") and "needs an API key" in page.inner_text("#error")
            page.fill("#apikey", "k-123")
            page.set_input_files("#file", [])
            page.set_input_files("#file", str(photo))
            page.wait_for_selector('#results[data-state="done"]', timeout=60_000)
            assert page.locator("#overlay").is_visible()
        finally:
            browser.close()
