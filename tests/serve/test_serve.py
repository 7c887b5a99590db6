"""The HTTP service: health, the same mask as fcnseg predict, limits and clear errors, concurrency."""

from __future__ import annotations

import argparse
import asyncio
import base64
import io
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch
from PIL import Image
from tiny_models import tiny_model

from fcnseg.checkpoint import load_checkpoint, save_checkpoint
from fcnseg.predict.images import load_image, predict_mask

pytest.importorskip("fastapi", reason="the serve extra is not installed (pip install 'fcnseg[serve]')")
httpx = pytest.importorskip("httpx", reason="httpx (test extra) is needed to call the service")

from fcnseg.serve import ServeLimits, create_app  # noqa: E402
from fcnseg.serve.background import background_server  # noqa: E402

CLASSES = ["background", "sky", "road", "tree", "car"]
PALETTE = [(0, 0, 0), (70, 130, 180), (128, 64, 128), (60, 160, 60), (220, 30, 60)]
MAX_UPLOAD = 64 * 1024
MAX_PIXELS = 160 * 160


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def content_dependent_model() -> torch.nn.Module:
    """A narrow FCN-8s whose masks vary with the image (random pool3 scores; seed chosen so they do)."""
    return tiny_model("fcn8s", len(CLASSES), width=0.125, seed=1, score_std={"score_pool3": 3.0})


@pytest.fixture(scope="module")
def checkpoint_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("serve") / "model.safetensors"
    return save_checkpoint(path, content_dependent_model(), classes=CLASSES, palette=PALETTE)


@pytest.fixture(scope="module")
def app(checkpoint_path):
    return create_app(checkpoint_path, limits=ServeLimits(max_upload_bytes=MAX_UPLOAD, max_pixels=MAX_PIXELS))


def call(app, method: str, url: str, **kwargs) -> httpx.Response:
    """One request through the ASGI interface (in process, no socket)."""

    async def send() -> httpx.Response:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://fcnseg.test") as client:
            return await client.request(method, url, **kwargs)

    return asyncio.run(send())


def scene(height: int, width: int, seed: int) -> np.ndarray:
    """A uint8 RGB picture with regions of different colour and texture."""
    rng = np.random.default_rng(seed)
    rows, cols = np.mgrid[0:height, 0:width]
    picture = np.zeros((height, width, 3), np.float64)
    picture[..., 2] = 255 * (rows < height * rng.uniform(0.3, 0.6))  # "sky"
    picture[..., 0] = 180 * (cols > width * rng.uniform(0.2, 0.8))
    picture[..., 1] = 120 + 100 * np.sin(rows / rng.uniform(3, 9)) * np.cos(cols / rng.uniform(3, 9))
    picture += rng.normal(0, 20, picture.shape)
    return np.clip(picture, 0, 255).astype(np.uint8)


def encode(picture: np.ndarray, fmt: str = "PNG", **options) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(picture).save(buffer, format=fmt, **options)
    return buffer.getvalue()


def png_ids(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as picture:
        assert picture.mode == "P", "the mask must be a palette PNG of class ids"
        return np.array(picture)


def expected_mask(checkpoint_path, image_file) -> np.ndarray:
    """The reference: the inference API on a separately loaded model."""
    model = load_checkpoint(checkpoint_path).model
    return predict_mask(model, load_image(image_file)).numpy()


def upload(data: bytes, name: str = "photo.jpg", mime: str = "image/jpeg") -> dict:
    return {"files": {"file": (name, data, mime)}}


def test_health_names_the_model_and_classes(app):
    response = call(app, "GET", "/health")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok" and body["model"] == "fcn8s"
    assert body["classes"] == CLASSES and body["num_classes"] == 5
    assert body["limits"]["max_upload_bytes"] == MAX_UPLOAD and body["limits"]["max_pixels"] == MAX_PIXELS


def test_page_is_served(app):
    response = call(app, "GET", "/")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/html")
    assert 'id="file"' in response.text and "segment?format=json" in response.text


def test_segment_returns_the_palette_png_of_predict_mask(app, checkpoint_path, tmp_path):
    photo = tmp_path / "street.jpg"
    photo.write_bytes(encode(scene(47, 61, seed=3), "JPEG", quality=90))  # odd size, lossy format
    response = call(app, "POST", "/segment", **upload(photo.read_bytes()))
    assert response.status_code == 200 and response.headers["content-type"] == "image/png"
    served = png_ids(response.content)
    expected = expected_mask(checkpoint_path, photo)
    assert len(np.unique(expected)) > 1, "a one-class mask would not show a mix-up"
    np.testing.assert_array_equal(served, expected)
    with Image.open(io.BytesIO(response.content)) as picture:
        assert picture.getpalette()[: 3 * len(PALETTE)] == [v for colour in PALETTE for v in colour]


def test_service_runs_the_fast_paths_by_default_and_the_plain_model_when_asked(checkpoint_path, tmp_path):
    fast, plain = create_app(checkpoint_path), create_app(checkpoint_path, fast_paths=False)
    assert fast.state.segmenter.model.fast_paths and not plain.state.segmenter.model.fast_paths
    data = encode(scene(64, 80, seed=9))
    masks = [
        png_ids(call(app, "POST", "/segment", **upload(data, "s.png", "image/png")).content) for app in (fast, plain)
    ]
    assert len(np.unique(masks[1])) > 1
    np.testing.assert_array_equal(masks[0], masks[1])


def test_segment_equals_the_fcnseg_predict_command(app, checkpoint_path, tmp_path):
    command = pytest.importorskip("fcnseg.commands.predict", reason="fcnseg predict is not there yet")
    photo = tmp_path / "in" / "garden.jpg"
    photo.parent.mkdir()
    photo.write_bytes(encode(scene(90, 70, seed=5), "JPEG", quality=85))
    parser = argparse.ArgumentParser()
    command.add_parser(parser.add_subparsers(dest="command"))
    assert (
        command.run(parser.parse_args(["predict", str(checkpoint_path), str(photo), "--out", str(tmp_path / "out")]))
        == 0
    )
    written = png_ids((tmp_path / "out" / "garden.png").read_bytes())

    response = call(app, "POST", "/segment", **upload(photo.read_bytes(), "garden.jpg"))
    assert response.status_code == 200
    np.testing.assert_array_equal(png_ids(response.content), written)


def test_segment_json_has_counts_mask_and_overlay(app, checkpoint_path, tmp_path):
    picture = scene(40, 52, seed=7)
    photo = tmp_path / "x.png"
    photo.write_bytes(encode(picture))
    response = call(app, "POST", "/segment?format=json", **upload(photo.read_bytes(), "x.png", "image/png"))
    assert response.status_code == 200
    body = response.json()
    expected = expected_mask(checkpoint_path, photo)

    assert (body["width"], body["height"]) == (52, 40) and body["classes"] == CLASSES
    counts = np.bincount(expected.ravel(), minlength=len(CLASSES))
    assert body["pixel_counts"] == {name: int(counts[i]) for i, name in enumerate(CLASSES)}
    present = [(entry["name"], entry["pixels"], tuple(entry["color"])) for entry in body["present"]]
    assert present == sorted(
        [(CLASSES[i], int(counts[i]), PALETTE[i]) for i in np.flatnonzero(counts)], key=lambda item: -item[1]
    )
    np.testing.assert_array_equal(png_ids(base64.b64decode(body["mask_png"])), expected)
    # Overlay at the default opacity 0.5, from the formula: (1 - a) * image + a * colour.
    blend = np.rint(0.5 * picture + 0.5 * np.asarray(PALETTE)[expected]).astype(np.uint8)
    overlay = np.array(Image.open(io.BytesIO(base64.b64decode(body["overlay_png"]))))
    assert np.abs(overlay.astype(int) - blend).max() <= 1


def test_oversized_upload_is_refused_with_413(app):
    too_big = bytes(MAX_UPLOAD + 200_000)
    response = call(app, "POST", "/segment", **upload(too_big, "huge.jpg"))  # declared Content-Length
    assert response.status_code == 413
    assert "upload too large" in response.json()["detail"] and f"{MAX_UPLOAD:,} bytes" in response.json()["detail"]

    body = (
        b'--xyz\r\nContent-Disposition: form-data; name="file"; filename="huge.jpg"\r\n'
        b"Content-Type: image/jpeg\r\n\r\n" + bytes(4 * 2**20) + b"\r\n--xyz--\r\n"
    )
    sent = 0

    async def chunks():  # no Content-Length: the body is counted as it arrives
        nonlocal sent
        for offset in range(0, len(body), 16 * 1024):
            sent = offset + 16 * 1024
            yield body[offset:sent]

    response = call(
        app, "POST", "/segment", content=chunks(), headers={"content-type": "multipart/form-data; boundary=xyz"}
    )
    assert response.status_code == 413 and "upload too large" in response.json()["detail"]
    assert sent < 4 * MAX_UPLOAD, f"the server read {sent:,} bytes of a 4 MiB upload before refusing it"

    just_over = bytes(MAX_UPLOAD + 1)  # inside the multipart slack: caught on the file's own size
    response = call(app, "POST", "/segment", **upload(just_over, "a.jpg"))
    assert response.status_code == 413 and "upload too large" in response.json()["detail"]


def test_image_over_the_pixel_limit_is_refused_with_413(app):
    wide = encode(np.zeros((100, 300, 3), np.uint8))  # few bytes, 30,000 pixels > 25,600
    response = call(app, "POST", "/segment", **upload(wide, "wide.png", "image/png"))
    assert response.status_code == 413
    detail = response.json()["detail"]
    assert "300x100 = 30,000 pixels" in detail and f"at most {MAX_PIXELS:,} pixels" in detail


def test_non_image_is_refused_with_415(app):
    response = call(app, "POST", "/segment", **upload(b"name,value\nroad,1\n", "table.csv", "image/jpeg"))
    assert response.status_code == 415
    assert "'table.csv' is not an image" in response.json()["detail"]


def test_truncated_jpeg_is_refused_with_422(app):
    complete = encode(scene(64, 64, seed=1), "JPEG", quality=95)
    with Image.open(io.BytesIO(complete[: len(complete) * 2 // 3])) as picture:
        assert picture.size == (64, 64), "the header must still parse, so only a full decode can notice"
    response = call(app, "POST", "/segment", **upload(complete[: len(complete) * 2 // 3], "cut.jpg"))
    assert response.status_code == 422
    detail = response.json()["detail"]
    assert "'cut.jpg'" in detail and "truncated" in detail


def test_empty_or_missing_file_is_refused_with_422(app):
    assert call(app, "POST", "/segment", **upload(b"", "empty.png")).status_code == 422
    response = call(app, "POST", "/segment")
    assert response.status_code == 422 and response.json()["detail"][0]["loc"] == ["body", "file"]


def test_twenty_concurrent_requests_get_their_own_masks(checkpoint_path):
    """Twenty different images sent at once to a real uvicorn server; each answer checked against its own mask."""
    pictures = [scene(48, 64, seed=100 + i) for i in range(20)]
    uploads = [encode(picture) for picture in pictures]
    reference = load_checkpoint(checkpoint_path).model
    expected = [predict_mask(reference, torch.from_numpy(p).permute(2, 0, 1).contiguous()).numpy() for p in pictures]
    distinct = {mask.tobytes() for mask in expected}
    assert len(distinct) == 20, "every image must have a different mask, or a swapped answer would pass"

    app = create_app(checkpoint_path)
    start = threading.Barrier(len(uploads))

    def request(index: int) -> tuple[int, bytes]:
        with httpx.Client(base_url=url, timeout=120) as client:
            start.wait()  # all twenty leave together
            response = client.post("/segment", files={"file": (f"img{index}.png", uploads[index], "image/png")})
            return response.status_code, response.content

    with background_server(app) as url, ThreadPoolExecutor(max_workers=len(uploads)) as pool:
        answers = list(pool.map(request, range(len(uploads))))
    for index, (status, content) in enumerate(answers):
        assert status == 200, content[:200]
        np.testing.assert_array_equal(png_ids(content), expected[index], err_msg=f"request {index}")
    assert app.state.segmenter.peak_in_flight > 1, "the requests never overlapped: concurrency was not exercised"


def test_serve_command_builds_the_app_and_runs_uvicorn(checkpoint_path, monkeypatch, capsys):
    import uvicorn

    from fcnseg.cli import COMMAND_MODULES
    from fcnseg.commands import serve as command

    assert "serve" in COMMAND_MODULES
    seen = {}
    monkeypatch.setattr(
        uvicorn,
        "run",
        lambda app, host, port, log_level, **options: seen.update(app=app, host=host, port=port, **options),
    )
    parser = argparse.ArgumentParser()
    command.add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(
        ["serve", str(checkpoint_path), "--port", "8123", "--max-upload-mb", "2", "--max-pixels", "1000"]
    )
    assert command.run(args) == 0
    assert (seen["host"], seen["port"]) == ("127.0.0.1", 8123)
    limits = seen["app"].state.limits
    assert (limits.max_upload_bytes, limits.max_pixels) == (2 * 2**20, 1000)
    assert "http://127.0.0.1:8123/" in capsys.readouterr().out

    assert command.run(parser.parse_args(["serve", str(checkpoint_path.parent / "missing.safetensors")])) == 2
    assert "no such checkpoint file" in capsys.readouterr().err
