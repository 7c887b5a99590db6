"""The image/mask/list readers: EXIF orientation, truncated JPEGs, special files, pixel limits, text files."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fcnseg.data import DatasetError, ImageTooLargeError, open_dataset, read_image_file
from fcnseg.data.readers import read_class_names, read_id_list

PROJECT_ROOT = Path(__file__).resolve().parents[2]

#: What a viewer shows for each EXIF orientation of stored pixels ``a`` (EXIF 2.3, tag 0x0112: where row 0
#: and column 0 of the stored picture lie on the displayed one), written out independently of PIL.
UPRIGHT = {
    1: lambda a: a,
    2: lambda a: a[:, ::-1],  # mirrored left-right
    3: lambda a: a[::-1, ::-1],  # turned 180
    4: lambda a: a[::-1, :],  # mirrored top-bottom
    5: lambda a: a.transpose(1, 0, 2),  # row 0 on the left, column 0 at the top
    6: lambda a: np.rot90(a, -1),  # row 0 on the right: turn 90 clockwise
    7: lambda a: np.rot90(a, 2).transpose(1, 0, 2),  # row 0 on the right, column 0 at the bottom
    8: lambda a: np.rot90(a, 1),  # row 0 on the left: turn 90 counter-clockwise
}


def with_orientation(array: np.ndarray, orientation: int, path: Path, **save) -> None:
    picture = Image.fromarray(array)
    exif = Image.Exif()
    exif[0x0112] = orientation
    picture.save(path, exif=exif, **save)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_turns_the_image_upright(tmp_path: Path, orientation: int) -> None:
    stored = np.random.default_rng(orientation).integers(0, 256, (4, 6, 3), dtype=np.uint8)
    with_orientation(stored, orientation, tmp_path / "x.png")
    read = read_image_file(tmp_path / "x.png").permute(1, 2, 0).numpy()
    assert np.array_equal(read, UPRIGHT[orientation](stored))


def test_phone_photo_jpeg_is_rotated_and_its_upright_mask_fits(tmp_path: Path) -> None:
    stored = np.zeros((16, 32, 3), np.uint8)
    stored[:, :8] = 255  # a white band on the left of the stored pixels: at the top once turned clockwise
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    with_orientation(stored, 6, tmp_path / "images" / "a.jpg", quality=95)
    mask = np.zeros((32, 16), np.uint8)  # drawn on the upright view (32 high, 16 wide)
    mask[:8] = 1
    Image.fromarray(mask).save(tmp_path / "masks" / "a.png")
    image, read_mask = open_dataset("folder", tmp_path, None, num_classes=2)[0]
    assert image.shape == (3, 32, 16)
    assert image[:, :8].float().mean() > 240 and image[:, 12:].float().mean() < 15
    assert np.array_equal(read_mask.numpy(), mask)  # masks are used as stored


def jpeg_bytes(array: np.ndarray, **save) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, "JPEG", **save)
    return buffer.getvalue()


def with_claimed_size(data: bytes, width: int, height: int) -> bytes:
    """The JPEG with its frame header (SOF0/SOF2) claiming another size."""
    data = bytearray(data)
    at = max(data.find(b"\xff\xc0"), data.find(b"\xff\xc2"))
    data[at + 5 : at + 9] = height.to_bytes(2, "big") + width.to_bytes(2, "big")
    return bytes(data)


def test_jpeg_with_less_data_than_its_header_claims_is_refused(tmp_path: Path) -> None:
    small = np.random.default_rng(0).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    path = tmp_path / "lie.jpg"
    path.write_bytes(with_claimed_size(jpeg_bytes(small), 2000, 2000))
    with Image.open(path) as picture:
        picture.load()  # PIL itself accepts it: libjpeg fills the missing rows with grey
        assert picture.size == (2000, 2000)
    with pytest.raises(DatasetError, match=r"lie\.jpg is truncated: its header says 2000x2000"):
        read_image_file(path)
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(jpeg_bytes(small)[:-100])  # cut short, no end marker
    with pytest.raises(DatasetError, match=r"cut\.jpg is truncated"):
        read_image_file(cut)


@pytest.mark.parametrize("progressive", [False, True])
def test_large_flat_jpegs_are_not_taken_for_truncated(tmp_path: Path, progressive: bool) -> None:
    """A flat grey picture with optimised Huffman tables is about the smallest a real JPEG of its size gets."""
    path = tmp_path / "flat.jpg"
    path.write_bytes(jpeg_bytes(np.zeros((1000, 1000), np.uint8), quality=1, optimize=True, progressive=progressive))
    assert read_image_file(path).shape == (3, 1000, 1000)


def test_max_pixels_refuses_from_the_header_before_decoding(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "big.jpg"
    path.write_bytes(with_claimed_size(jpeg_bytes(np.zeros((16, 16, 3), np.uint8)), 3000, 2000))

    def no_decoding(self):
        raise AssertionError("the image was decoded")

    monkeypatch.setattr("PIL.ImageFile.ImageFile.load", no_decoding)
    with pytest.raises(
        ImageTooLargeError, match=r"big\.jpg is 3000x2000 = 6,000,000 pixels; expected at most 1,000,000"
    ):
        read_image_file(path, max_pixels=1_000_000)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1_000_000)  # over 2x PIL's own limit: also ImageTooLargeError
    with pytest.raises(ImageTooLargeError, match="too many pixels"):
        read_image_file(path, max_pixels=10**9)


def test_special_files_are_refused_without_opening_them(tmp_path: Path) -> None:
    fifo = tmp_path / "x.png"
    os.mkfifo(fifo)

    def hung(signum, frame):
        raise TimeoutError("the reader blocked on the FIFO")

    previous = signal.signal(signal.SIGALRM, hung)
    signal.setitimer(signal.ITIMER_REAL, 5)
    try:
        with pytest.raises(DatasetError, match=r"x\.png is a FIFO, not a regular file"):
            read_image_file(fifo)
        with pytest.raises(DatasetError, match=r"split file .*x\.png is a FIFO"):
            read_id_list(fifo)
        with pytest.raises(DatasetError, match=r"image .* is a folder, not a regular file"):
            read_image_file(tmp_path)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def test_class_and_split_file_errors_name_the_file(tmp_path: Path) -> None:
    classes = tmp_path / "classes.txt"
    classes.write_text("sky\x00\nroad\n")
    with pytest.raises(DatasetError, match=r"classes file .*classes\.txt holds a NUL byte \(line 1\)"):
        read_class_names(classes)
    classes.write_text("\n\n")
    with pytest.raises(DatasetError, match=r"classes file .*classes\.txt needs one non-empty class name"):
        read_class_names(classes)
    classes.write_text("sky\nroad\nsky\n")
    with pytest.raises(DatasetError, match=r"classes file .*classes\.txt names \['sky'\] more than once"):
        read_class_names(classes)
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    Image.fromarray(np.zeros((2, 2, 3), np.uint8)).save(tmp_path / "images" / "a.png")
    classes.write_text("".join(f"c{i}\n" for i in range(256)))
    with pytest.raises(DatasetError, match=r"classes file .*classes\.txt gives 256 classes, so the ignore value 255"):
        open_dataset("folder", tmp_path, None)
    classes.write_text("a\nb\n")
    (tmp_path / "train.txt").write_bytes(b"a\n\x00b\n")
    with pytest.raises(DatasetError, match=r"split file .*train\.txt holds a NUL byte \(line 2\)"):
        open_dataset("folder", tmp_path, "train")
    (tmp_path / "train.txt").write_text("a\nzz\n")
    with pytest.raises(DatasetError, match=r"split list .*train\.txt lists 1 stem\(s\) with no image"):
        open_dataset("folder", tmp_path, "train")


def test_a_file_name_that_is_not_utf8_prints_safely(tmp_path: Path) -> None:
    """Under a strict UTF-8 stdout, `fcnseg data` prints the name escaped instead of crashing."""
    images, masks = tmp_path / "images", tmp_path / "masks"
    images.mkdir()
    masks.mkdir()
    name = os.fsdecode(b"caf\xe9")  # Latin-1 bytes: not UTF-8
    Image.fromarray(np.zeros((2, 2, 3), np.uint8)).save(images / f"{name}.png")
    Image.fromarray(np.full((2, 2), 9, np.uint8)).save(masks / f"{name}.png")  # label 9: a bad item, named
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT), "PYTHONIOENCODING": "utf-8", "LC_ALL": "C.UTF-8"}
    done = subprocess.run(
        [sys.executable, "-m", "fcnseg", "data", "--data", "folder", "--root", str(tmp_path),
         "--split", "all", "--data-option", "num_classes=2"],
        capture_output=True, env=env, timeout=120,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr.decode(errors="replace")
    assert b"Traceback" not in done.stderr
    assert b"caf\\udce9.png" in done.stdout and b"label 9" in done.stdout
