"""The service cannot be held: deadlines for heads and bodies, upload slots, API key, CORS, readiness;
and what a phone or a liar uploads: EXIF orientation, a JPEG header that claims more than its data holds."""

from __future__ import annotations

import argparse
import io
import socket
import time

import numpy as np
import pytest
import torch
from PIL import Image

from fcnseg.checkpoint import load_checkpoint, save_checkpoint
from fcnseg.predict.images import predict_mask

pytest.importorskip("fastapi", reason="the serve extra is not installed (pip install 'fcnseg[serve]')")
httpx = pytest.importorskip("httpx", reason="httpx (test extra) is needed to call the service")

from test_serve import CLASSES, PALETTE, call, content_dependent_model, encode, png_ids, scene, upload  # noqa: E402

from fcnseg.data.readers import jpeg_data_shortfall  # noqa: E402
from fcnseg.serve import ServeLimits, create_app  # noqa: E402
from fcnseg.serve.background import background_server  # noqa: E402
from fcnseg.serve.server import set_mmap_threshold  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SLACK = 5.0  # seconds a busy 2-core machine may add to a deadline
KEY = "s3cret-key"
ALLOWED = "https://app.example.org"


@pytest.fixture(scope="module")
def checkpoint_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("guards") / "model.safetensors"
    return save_checkpoint(path, content_dependent_model(), classes=CLASSES, palette=PALETTE)


def limits(**changes) -> ServeLimits:
    return ServeLimits(**{"max_upload_bytes": 256 * 1024, "max_pixels": 160 * 160, **changes})


PART = b'--xyz\r\nContent-Disposition: form-data; name="file"; filename="a.jpg"\r\n\r\n'  # file bytes follow


def head(length: int, path: str = "/segment") -> bytes:
    """A request head that promises a multipart body of ``length`` bytes."""
    return (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: multipart/form-data; boundary=xyz\r\n"
        f"Content-Length: {length}\r\n\r\n"
    ).encode()


def raw_connection(url: str) -> socket.socket:
    host, port = url.removeprefix("http://").split(":")
    connection = socket.create_connection((host, int(port)), timeout=30)
    return connection


def read_until_closed(connection: socket.socket, limit: float) -> tuple[bytes, float]:
    """Everything the server sends until it closes the connection, and the seconds that took (at most ``limit``)."""
    start, received = time.monotonic(), b""
    connection.settimeout(limit)
    try:
        while chunk := connection.recv(65536):
            received += chunk
    except TimeoutError:
        pytest.fail(f"the server neither answered nor closed within {limit:.0f} s (got {received[:80]!r})")
    except ConnectionResetError:
        pass
    return received, time.monotonic() - start


# ---- deadlines, against a real uvicorn on 127.0.0.1 -------------------------------------------------


def test_a_stalled_body_gets_408_and_the_connection_is_closed(checkpoint_path):
    app = create_app(checkpoint_path, limits=limits(body_timeout_s=1.0))
    with background_server(app) as url, raw_connection(url) as connection:
        connection.sendall(head(200_000) + PART)
        answer, seconds = read_until_closed(connection, limit=1.0 + SLACK)
    assert answer.startswith(b"HTTP/1.1 408 "), answer[:200]
    assert b"within 1 s" in answer and b"connection: close" in answer.lower()
    assert seconds >= 0.9, "answered before the body timeout"


def test_a_trickled_body_is_cut_off_at_the_deadline_not_kept_alive_by_each_byte(checkpoint_path):
    app = create_app(checkpoint_path, limits=limits(body_timeout_s=1.0))
    with background_server(app) as url, raw_connection(url) as connection:
        connection.sendall(head(200_000) + PART)
        start = time.monotonic()
        connection.settimeout(0.2)
        answer = b""
        while time.monotonic() - start < 1.0 + SLACK and not answer:
            try:
                connection.sendall(b"x")  # one byte every 0.2 s: never idle for as long as the timeout
                answer = connection.recv(65536)
            except TimeoutError:
                continue
            except (BrokenPipeError, ConnectionResetError):
                break
    assert answer.startswith(b"HTTP/1.1 408 "), answer[:200]
    assert time.monotonic() - start < 1.0 + SLACK


def test_a_stalled_head_is_answered_408_and_a_silent_connection_closed(checkpoint_path):
    app = create_app(checkpoint_path, limits=limits(header_timeout_s=1.0))
    with background_server(app) as url:
        with raw_connection(url) as connection:
            connection.sendall(b"POST /segment HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # no blank line: the head never ends
            answer, seconds = read_until_closed(connection, limit=1.0 + SLACK)
        assert answer.startswith(b"HTTP/1.1 408 ") and seconds >= 0.9, answer[:200]
        with raw_connection(url) as connection:  # connects and sends nothing
            answer, seconds = read_until_closed(connection, limit=1.0 + SLACK)
        assert answer == b"" and seconds >= 0.9


def test_the_head_deadline_ends_with_the_head_and_restarts_for_the_next_request(checkpoint_path):
    """Processing longer than the head timeout is fine, and so is a second request on the same connection."""
    app = create_app(checkpoint_path, limits=limits(header_timeout_s=0.5))
    segment = app.state.segmenter.segment
    app.state.segmenter.segment = lambda image, **options: (time.sleep(1.0), segment(image, **options))[
        1
    ]  # slower than the head timeout
    data = encode(scene(40, 48, seed=2))
    with background_server(app) as url, httpx.Client(base_url=url, timeout=30) as client:
        first = client.post("/segment", files={"file": ("a.png", data, "image/png")})
        second = client.post("/segment", files={"file": ("a.png", data, "image/png")})  # the same keep-alive connection
    assert first.status_code == 200 and second.status_code == 200
    np.testing.assert_array_equal(png_ids(first.content), png_ids(second.content))


# ---- upload slots and readiness ---------------------------------------------------------------------


def test_uploads_beyond_the_slots_wait_then_get_503_and_health_says_not_ready(checkpoint_path):
    app = create_app(checkpoint_path, limits=limits(max_concurrent_uploads=1, queue_timeout_s=0.5, body_timeout_s=3.0))
    data = encode(scene(40, 48, seed=3))
    with background_server(app) as url, httpx.Client(base_url=url, timeout=30) as client:
        health = client.get("/health").json()
        assert health["ready"] is True and health["uploads"] == {"in_progress": 0, "waiting": 0, "slots": 1}
        with raw_connection(url) as holder:
            holder.sendall(head(100_000))  # takes the only slot, then stalls
            deadline = time.monotonic() + SLACK
            while client.get("/health").json()["uploads"]["in_progress"] == 0 and time.monotonic() < deadline:
                time.sleep(0.02)
            health = client.get("/health").json()
            assert health["uploads"]["in_progress"] == 1 and health["ready"] is False

            start = time.monotonic()
            busy = client.post("/segment", files={"file": ("a.png", data, "image/png")})
            assert busy.status_code == 503 and busy.headers["retry-after"] == "5"
            assert "1 uploads are being processed" in busy.json()["detail"]
            assert 0.4 <= time.monotonic() - start < 0.5 + SLACK
            assert read_until_closed(holder, limit=3.0 + SLACK)[0].startswith(b"HTTP/1.1 408 ")
        # The stalled upload gave its slot back.
        assert client.post("/segment", files={"file": ("a.png", data, "image/png")}).status_code == 200
        assert client.get("/health").json()["ready"] is True


def test_an_upload_that_finds_the_slots_busy_waits_its_turn(checkpoint_path):
    app = create_app(checkpoint_path, limits=limits(max_concurrent_uploads=1, queue_timeout_s=20.0, body_timeout_s=1.0))
    data = encode(scene(40, 48, seed=4))
    with background_server(app) as url, httpx.Client(base_url=url, timeout=30) as client, raw_connection(url) as holder:
        holder.sendall(head(100_000))
        deadline = time.monotonic() + SLACK
        while app.state.uploads.in_progress == 0 and time.monotonic() < deadline:
            time.sleep(0.02)
        start = time.monotonic()
        waited = client.post("/segment", files={"file": ("a.png", data, "image/png")})
        assert waited.status_code == 200 and time.monotonic() - start >= 0.5  # served once the holder timed out


# ---- API key and CORS (in process) ------------------------------------------------------------------


@pytest.fixture(scope="module")
def guarded_app(checkpoint_path):
    return create_app(checkpoint_path, limits=limits(), api_key=KEY, cors_origins=[ALLOWED])


def test_api_key_is_required_everywhere_but_health_and_the_page(guarded_app):
    data = upload(encode(scene(32, 40, seed=5)), "a.png", "image/png")
    missing = call(guarded_app, "POST", "/segment", **data)
    assert missing.status_code == 401 and missing.headers["www-authenticate"] == "Bearer"
    assert "needs an API key" in missing.json()["detail"]
    wrong = call(guarded_app, "POST", "/segment", headers={"X-API-Key": "guess"}, **data)
    assert wrong.status_code == 401 and wrong.json()["detail"] == "the API key is wrong"
    assert call(guarded_app, "POST", "/segment", headers={"Authorization": f"Bearer {KEY}"}, **data).status_code == 200
    assert call(guarded_app, "POST", "/segment", headers={"X-API-Key": KEY}, **data).status_code == 200
    assert call(guarded_app, "GET", "/openapi.json").status_code == 401

    health = call(guarded_app, "GET", "/health")
    assert health.status_code == 200 and health.json()["auth_required"] is True
    assert call(guarded_app, "GET", "/").status_code == 200


def test_cors_headers_for_an_allowed_origin_only(guarded_app, checkpoint_path):
    allowed = call(guarded_app, "GET", "/health", headers={"Origin": ALLOWED})
    assert allowed.headers["access-control-allow-origin"] == ALLOWED
    other = call(guarded_app, "GET", "/health", headers={"Origin": "https://evil.example.com"})
    assert other.status_code == 200 and "access-control-allow-origin" not in other.headers
    # A browser's preflight carries no key: it is answered, and the key header is allowed.
    preflight = call(
        guarded_app,
        "OPTIONS",
        "/segment",
        headers={
            "Origin": ALLOWED,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization",
        },
    )
    assert preflight.status_code == 200 and preflight.headers["access-control-allow-origin"] == ALLOWED
    assert "authorization" in preflight.headers["access-control-allow-headers"].lower()
    # A refusal reaches the page's script too (it can show why).
    refused = call(guarded_app, "POST", "/segment", headers={"Origin": ALLOWED}, **upload(b"x", "a.png"))
    assert refused.status_code == 401 and refused.headers["access-control-allow-origin"] == ALLOWED
    # Without --cors-origin, no origin gets the header.
    plain = create_app(checkpoint_path, limits=limits())
    assert "access-control-allow-origin" not in call(plain, "GET", "/health", headers={"Origin": ALLOWED}).headers
    body = call(plain, "GET", "/health").json()
    assert body["auth_required"] is False and body["ready"] is True and body["model"] == "fcn8s"


def test_serve_command_takes_the_key_from_the_environment_and_the_new_limits(checkpoint_path, monkeypatch, capsys):
    import uvicorn

    from fcnseg.commands import serve as command

    seen = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **options: seen.update(app=app, **options))
    parser = argparse.ArgumentParser()
    command.add_parser(parser.add_subparsers(dest="command"))
    monkeypatch.setenv("FCNSEG_API_KEY", KEY)
    args = parser.parse_args(
        [
            "serve",
            str(checkpoint_path),
            "--max-concurrent-uploads",
            "2",
            "--queue-timeout",
            "7",
            "--body-timeout",
            "9",
            "--header-timeout",
            "3",
            "--cors-origin",
            ALLOWED,
            "--cors-origin",
            "http://x.test",
        ]
    )
    assert command.run(args) == 0
    app, served = seen["app"], capsys.readouterr().out
    assert "API key required" in served
    given = app.state.limits
    assert (given.max_concurrent_uploads, given.queue_timeout_s, given.body_timeout_s, given.header_timeout_s) == (
        2,
        7,
        9,
        3,
    )
    assert seen["http"].head_timeout == 3
    assert call(app, "POST", "/segment", **upload(b"x", "a.png")).status_code == 401
    second_origin = call(app, "GET", "/health", headers={"Origin": "http://x.test"})
    assert second_origin.headers["access-control-allow-origin"] == "http://x.test"

    monkeypatch.setenv("FCNSEG_API_KEY", "")
    assert command.run(parser.parse_args(["serve", str(checkpoint_path)])) == 2
    assert "$FCNSEG_API_KEY is empty" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        parser.parse_args(["serve", str(checkpoint_path), "--body-timeout", "0"])
    assert "expected a number of seconds > 0" in capsys.readouterr().err


def test_limits_refuse_non_positive_values():
    for field in ("max_concurrent_uploads", "queue_timeout_s", "body_timeout_s", "header_timeout_s"):
        for bad in (0, -1, float("nan")):
            with pytest.raises(ValueError, match=field):
                ServeLimits(**{field: bad})


# ---- what is uploaded: EXIF orientation, JPEG header lies -------------------------------------------


def with_orientation(picture: np.ndarray, orientation: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation  # the EXIF Orientation tag
    buffer = io.BytesIO()
    Image.fromarray(picture).save(buffer, format="JPEG", quality=95, exif=exif.tobytes())
    return buffer.getvalue()


@pytest.mark.parametrize(
    "orientation, upright",
    [(3, lambda a: np.rot90(a, 2)), (6, lambda a: np.rot90(a, -1)), (8, lambda a: np.rot90(a, 1))],
    ids=["180", "90-clockwise", "90-counter-clockwise"],
)
def test_exif_orientation_gives_the_mask_of_the_picture_as_viewers_show_it(checkpoint_path, orientation, upright):
    data = with_orientation(scene(40, 64, seed=6), orientation)
    with Image.open(io.BytesIO(data)) as stored:  # the pixels as stored, without EXIF handling
        shown = np.ascontiguousarray(upright(np.asarray(stored.convert("RGB"))))
    reference = load_checkpoint(checkpoint_path).model
    expected = predict_mask(reference, torch.from_numpy(shown).permute(2, 0, 1).contiguous()).numpy()
    app = create_app(checkpoint_path, limits=limits())
    response = call(app, "POST", "/segment?format=json", **upload(data, "phone.jpg"))
    assert response.status_code == 200
    body = response.json()
    assert (body["height"], body["width"]) == shown.shape[:2]
    served = call(app, "POST", "/segment", **upload(data, "phone.jpg"))
    np.testing.assert_array_equal(png_ids(served.content), expected)


def jpeg_claiming(picture: np.ndarray, height: int, width: int) -> bytes:
    """``picture`` as a JPEG whose frame header (SOF0) says ``height`` x ``width`` instead."""
    buffer = io.BytesIO()
    Image.fromarray(picture).save(buffer, format="JPEG", quality=90)
    data = bytearray(buffer.getvalue())
    frame = data.index(b"\xff\xc0")
    data[frame + 5 : frame + 9] = height.to_bytes(2, "big") + width.to_bytes(2, "big")
    return bytes(data)


def test_a_jpeg_whose_header_claims_more_than_its_data_is_refused_as_truncated(checkpoint_path):
    liar = jpeg_claiming(scene(16, 16, seed=7), 2000, 2000)
    with Image.open(io.BytesIO(liar)) as picture:
        picture.load()  # PIL decodes it without complaint: the lie must be caught by the service itself
        assert picture.size == (2000, 2000)
    response = call(create_app(checkpoint_path), "POST", "/segment", **upload(liar, "liar.jpg"))
    assert response.status_code == 422
    detail = response.json()["detail"]
    assert "'liar.jpg' is truncated" in detail and "2000x2000" in detail


@pytest.mark.parametrize(
    "options",
    [
        {"quality": 50},
        {"quality": 50, "optimize": True},
        {"quality": 10, "optimize": True, "progressive": True},
        {"quality": 95, "subsampling": 0, "optimize": True},
    ],
    ids=["baseline", "optimized", "progressive", "4:4:4"],
)
@pytest.mark.parametrize("mode", ["L", "RGB"])
def test_the_truncation_bound_accepts_the_most_compressible_complete_jpegs(mode, options):
    """A flat picture is the smallest a JPEG of its size can be; the bound must still let it through."""
    buffer = io.BytesIO()
    Image.new(mode, (1000, 1200), 128).save(buffer, format="JPEG", **options)
    assert jpeg_data_shortfall(buffer.getvalue()) is None


def test_mmap_threshold_is_set_on_glibc_unless_the_environment_sets_it(monkeypatch):
    import platform

    monkeypatch.setenv("MALLOC_MMAP_THRESHOLD_", "131072")
    assert set_mmap_threshold(2**20) is False
    monkeypatch.delenv("MALLOC_MMAP_THRESHOLD_")
    assert set_mmap_threshold(0) is False
    if platform.libc_ver()[0] != "glibc":
        pytest.skip("mallopt is glibc's")
    assert set_mmap_threshold(2**20) is True
