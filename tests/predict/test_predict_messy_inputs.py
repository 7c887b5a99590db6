"""fcnseg predict on what a fuzz of bad inputs found: names that are not UTF-8, JPEG headers that claim more
than their data holds, inputs rewritten with the same size and time."""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys

import numpy as np
import pytest
from command_runs import subprocess_env
from PIL import Image
from tiny_models import tiny_model

from fcnseg.checkpoint import load_checkpoint, save_checkpoint
from fcnseg.cli import main
from fcnseg.data.readers import decode_jpeg_fully, jpeg_data_shortfall
from fcnseg.inference.predictor import Predictor
from fcnseg.predict.images import ImageError, load_image
from fcnseg.predict.manifest import Manifest, input_state

CLASSES = ["background", "thing", "stuff"]
PALETTE = [(0, 0, 0), (200, 30, 30), (20, 180, 60)]

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture
def checkpoint(tmp_path):
    return save_checkpoint(
        tmp_path / "tiny.safetensors",
        tiny_model("fcn32s", len(CLASSES), score_std=1.0),
        classes=CLASSES,
        palette=PALETTE,
    )


def photo(height: int = 360, width: int = 480, seed: int = 0) -> np.ndarray:
    """A street-like picture: sky, a road, texture and noise (compresses like a photo, not like a flat image)."""
    rng = np.random.default_rng(seed)
    rows, cols = np.mgrid[0:height, 0:width]
    picture = np.zeros((height, width, 3))
    picture[..., 2] = 230 * (rows < height * 0.4)
    picture[..., 0] = 150 * (cols > width * (0.3 + 0.4 * rows / height))
    picture[..., 1] = 120 + 90 * np.sin(rows / 7.0) * np.cos(cols / 5.0)
    picture += rng.normal(0, 25, picture.shape)
    return np.clip(picture, 0, 255).astype(np.uint8)


def jpeg(picture: np.ndarray, mode: str = "RGB", **options) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(picture).convert(mode).save(buffer, format="JPEG", **{"quality": 90, **options})
    return buffer.getvalue()


def claim_size(data: bytes, width: int, height: int) -> bytes:
    """The JPEG with its frame header (SOF0/SOF2) patched to claim ``width`` x ``height``; the data unchanged."""
    out, position = bytearray(data), 2
    while out[position + 1] not in (0xC0, 0xC2):
        position += 2 + int.from_bytes(out[position + 2 : position + 4], "big")
    out[position + 5 : position + 9] = height.to_bytes(2, "big") + width.to_bytes(2, "big")
    return bytes(out)


# --- (b) a header that claims more than the data holds -----------------------------------------------------


def test_a_jpeg_whose_header_claims_twice_its_size_is_refused_as_truncated(tmp_path):
    data = jpeg(photo())
    patched = claim_size(data, 960, 720)
    assert 20_000 < len(patched) < 200_000 and jpeg_data_shortfall(patched) is None, (
        "the header check alone lets it through (that is the case to catch)"
    )
    with Image.open(io.BytesIO(patched)) as lenient:  # PIL alone: a 960x720 picture, its lower part filled grey
        lenient.load()
        assert lenient.size == (960, 720)
    (tmp_path / "patched.jpg").write_bytes(patched)
    with pytest.raises(
        ImageError,
        match=r"patched.jpg is truncated: its coded data ends before the 960x720 picture "
        r"its header describes is complete",
    ):
        load_image(tmp_path / "patched.jpg")
    # cut short and closed again with an end marker: PIL decodes it, grey at the bottom; refused too
    (tmp_path / "closed.jpg").write_bytes(data[: len(data) * 2 // 3] + b"\xff\xd9")
    with pytest.raises(ImageError, match="closed.jpg is truncated: its coded data ends before the 480x360"):
        load_image(tmp_path / "closed.jpg")


@pytest.mark.parametrize(
    "kind", ["baseline", "444", "grey", "cmyk", "optimized", "restarts", "progressive", "tiny", "odd"]
)
def test_complete_jpegs_of_every_kind_decode_to_pils_pixels(tmp_path, kind):
    picture = photo(37, 53, seed=3) if kind == "odd" else photo(1, 1) if kind == "tiny" else photo(120, 160)
    options = {
        "444": {"subsampling": 0},
        "optimized": {"optimize": True},
        "restarts": {"restart_marker_blocks": 3},
        "progressive": {"progressive": True},
    }.get(kind, {})
    mode = {"grey": "L", "cmyk": "CMYK"}.get(kind, "RGB")
    data = jpeg(picture, mode, **options)
    (tmp_path / "a.jpg").write_bytes(data)
    with Image.open(io.BytesIO(data)) as reference:
        expected = np.asarray(reference.convert("RGB")).transpose(2, 0, 1)
    np.testing.assert_array_equal(load_image(tmp_path / "a.jpg").numpy(), expected)
    assert (decode_jpeg_fully(data) is None) == (kind == "progressive")  # progressive: decoded as before


def test_predict_refuses_the_patched_jpeg_and_predicts_the_rest(tmp_path, checkpoint, capsys):
    folder = tmp_path / "in"
    folder.mkdir()
    data = jpeg(photo())
    (folder / "fine.jpg").write_bytes(data)
    (folder / "patched.jpg").write_bytes(claim_size(data, 960, 720))
    out = tmp_path / "out"
    assert main(["predict", str(checkpoint), str(folder), "--out", str(out), "--device", "cpu", "--workers", "0"]) == 1
    captured = capsys.readouterr()
    assert "wrote 1 mask(s)" in captured.out and "patched.jpg is truncated" in captured.err
    assert sorted(p.name for p in out.glob("*.png")) == ["fine.png"]
    assert "patched.jpg is truncated" in (out / "failed.txt").read_text()


# --- (a) a failing input whose name is not UTF-8 -----------------------------------------------------------


def test_a_failing_input_whose_name_is_not_utf8_is_reported_in_failed_txt(tmp_path, checkpoint):
    folder = os.fsencode(tmp_path / "in")
    os.mkdir(folder)
    good, bad = os.path.join(folder, b"\xe9t\xe9.png"), os.path.join(folder, b"caf\xe9.jpg")
    try:
        with open(good, "wb") as handle:
            Image.fromarray(photo(40, 56)).save(handle, format="PNG")
    except OSError:
        pytest.skip("this file system refuses names that are not UTF-8")
    data = jpeg(photo(40, 56))
    with open(bad, "wb") as handle:
        handle.write(data[: len(data) // 2])  # a truncated JPEG
    out = tmp_path / "out"
    command = [
        sys.executable,
        "-m",
        "fcnseg",
        "predict",
        str(checkpoint),
        os.fsdecode(folder),
        "--out",
        str(out),
        "--device",
        "cpu",
        "--workers",
        "0",
    ]
    run = subprocess.run(command, env=subprocess_env(), capture_output=True, timeout=300)
    stderr = run.stderr.decode("utf-8", "replace")
    assert run.returncode == 1 and b"wrote 1 mask(s)" in run.stdout, stderr
    assert "Traceback" not in stderr and "caf\\udce9.jpg" in stderr  # Python's stderr escapes the odd byte
    listed = (out / "failed.txt").read_bytes()  # the name as the file system spells it, the rest UTF-8
    assert re.fullmatch(rb"image .*/caf\xe9\.jpg is truncated .*\n", listed), listed
    assert os.path.exists(os.path.join(os.fsencode(out), b"\xe9t\xe9.png"))
    # the manifest keeps the odd name too: a second run finds the good image done
    run = subprocess.run(command, env=subprocess_env(), capture_output=True, timeout=300)
    assert run.returncode == 1 and b"wrote 0 mask(s)" in run.stdout and b"1 found done" in run.stdout, run.stderr


# --- (c) an input rewritten with the same size and modification time ---------------------------------------


def written_masks(out) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted(out.glob("*.png"))}


def test_resume_check_hash_predicts_an_input_rewritten_with_the_same_size_and_time(tmp_path, checkpoint, capsys):
    folder = tmp_path / "in"
    folder.mkdir()
    for number in range(3):  # BMP: the same dimensions give the same file size, whatever the pixels
        Image.fromarray(photo(40, 56, seed=number)).save(folder / f"img{number}.bmp")
    out = tmp_path / "out"

    def predict(*extra: str) -> int:
        assert (
            main(
                [
                    "predict",
                    str(checkpoint),
                    str(folder),
                    "--out",
                    str(out),
                    "--device",
                    "cpu",
                    "--workers",
                    "0",
                    *extra,
                ]
            )
            == 0
        )
        return int(re.search(r"wrote (\d+) mask", capsys.readouterr().out).group(1))

    assert predict("--resume-check", "hash") == 3
    before = written_masks(out)
    changed = folder / "img1.bmp"
    status = changed.stat()
    Image.fromarray(np.zeros((40, 56, 3), np.uint8)).save(changed)  # other content ...
    os.utime(changed, ns=(status.st_atime_ns, status.st_mtime_ns))  # ... same size, same time
    assert input_state(changed) == [status.st_size, status.st_mtime_ns]

    assert predict() == 0  # the default looks at size and time only: the stale mask is kept (documented)
    assert predict("--resume-check", "hash") == 1  # the hash sees the new content
    after = written_masks(out)
    assert {name for name in after if after[name] != before[name]} == {"img1.png"}
    expected = Predictor(load_checkpoint(checkpoint).model).mask(load_image(changed)).numpy()
    np.testing.assert_array_equal(np.array(Image.open(out / "img1.png")), expected)
    assert predict("--resume-check", "hash") == 0  # and then finds everything done


def test_a_hash_check_does_not_trust_lines_recorded_without_a_hash(tmp_path):
    (tmp_path / "a.png").write_bytes(b"pixels")
    output = tmp_path / "out" / "a.png"
    output.parent.mkdir()
    output.write_bytes(b"mask")
    plain = Manifest(tmp_path / "out", 0, "settings")
    plain.record(tmp_path / "a.png", input_state(tmp_path / "a.png"), [output])
    plain.close()
    assert Manifest(tmp_path / "out", 1, "settings").is_done(tmp_path / "a.png")
    assert not Manifest(tmp_path / "out", 1, "settings", "hash").is_done(tmp_path / "a.png")
    hashed = Manifest(tmp_path / "out", 0, "settings", "hash")
    hashed.record(tmp_path / "a.png", input_state(tmp_path / "a.png", "hash"), [output])
    hashed.close()
    assert Manifest(tmp_path / "out", 1, "settings", "hash").is_done(tmp_path / "a.png")
    assert Manifest(tmp_path / "out", 1, "settings").is_done(tmp_path / "a.png")  # the default reads hashed lines too
    with pytest.raises(ValueError, match="resume check 'content': expected one of size-mtime, hash"):
        Manifest(tmp_path / "out", 1, "settings", "content")
