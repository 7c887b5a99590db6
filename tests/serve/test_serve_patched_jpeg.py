"""The service refuses a JPEG whose data runs out before the picture its header describes (422), as predict does."""

from __future__ import annotations

import asyncio
import io

import numpy as np
import pytest
from PIL import Image
from tiny_models import tiny_model

from fcnseg.checkpoint import save_checkpoint

pytest.importorskip("fastapi", reason="the serve extra is not installed (pip install 'fcnseg[serve]')")
httpx = pytest.importorskip("httpx", reason="httpx (test extra) is needed to call the service")

from fcnseg.data.readers import jpeg_data_shortfall  # noqa: E402
from fcnseg.serve import ServeLimits, create_app  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def photo_jpeg(height: int = 360, width: int = 480) -> bytes:
    rng = np.random.default_rng(0)
    rows, cols = np.mgrid[0:height, 0:width]
    picture = np.stack(
        [230.0 * (rows < height * 0.4), 150.0 * (cols > width / 2), 120 + 90 * np.sin(rows / 7.0) * np.cos(cols / 5.0)],
        axis=-1,
    )
    picture = np.clip(picture + rng.normal(0, 25, picture.shape), 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(picture).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def claim_size(data: bytes, width: int, height: int) -> bytes:
    """The JPEG with its baseline frame header (SOF0) patched to claim ``width`` x ``height``."""
    out, position = bytearray(data), 2
    while out[position + 1] != 0xC0:
        position += 2 + int.from_bytes(out[position + 2 : position + 4], "big")
    out[position + 5 : position + 9] = height.to_bytes(2, "big") + width.to_bytes(2, "big")
    return bytes(out)


def test_a_jpeg_header_patched_to_twice_its_size_is_refused_with_422(tmp_path):
    app = create_app(
        save_checkpoint(
            tmp_path / "m.safetensors",
            tiny_model("fcn32s", 3, score_std=1.0),
            classes=["a", "b", "c"],
            palette=[(0, 0, 0), (255, 0, 0), (0, 255, 0)],
        ),
        limits=ServeLimits(max_upload_bytes=1 << 20, max_pixels=1 << 20),
    )

    def post(data: bytes) -> httpx.Response:
        async def send() -> httpx.Response:
            async with httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url="http://fcnseg.test"
            ) as client:
                return await client.post("/segment", files={"file": ("photo.jpg", data, "image/jpeg")})

        return asyncio.run(send())

    data = photo_jpeg()
    assert post(data).status_code == 200
    patched = claim_size(data, 960, 720)
    assert jpeg_data_shortfall(patched) is None  # the header check alone lets it through
    response = post(patched)
    assert response.status_code == 422
    assert response.json()["detail"] == (
        "'photo.jpg' is truncated: its coded data ends before the 960x720 picture its "
        "header describes is complete (the file was cut short, or its header claims a "
        "larger size); send the complete file"
    )
