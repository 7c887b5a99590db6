"""A bounded mutation fuzz of the files users hand to fcnseg: images and masks of a folder dataset, and
predict's inputs. Every damaged file gives a DatasetError / ImageError naming it (or is read), never another
exception, a hang or an unbounded decode."""

from __future__ import annotations

import io
import random
import signal

import numpy as np
import pytest
from PIL import Image

from fcnseg.data import DatasetError, open_dataset
from fcnseg.predict.images import ImageError, load_image, max_pixels_for


def _files() -> dict[str, bytes]:
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 256, (24, 32, 3), dtype=np.uint8))
    mask = Image.fromarray(rng.integers(0, 3, (24, 32), dtype=np.uint8))
    out = {}
    for name, picture, fmt in (("a.png", image, "PNG"), ("a.jpg", image, "JPEG"), ("m.png", mask, "PNG")):
        buffer = io.BytesIO()
        picture.save(buffer, format=fmt)
        out[name] = buffer.getvalue()
    return out


def _mutations(data: bytes, count: int, rng: random.Random) -> list[bytes]:
    """Truncations, flipped bytes, inserted and deleted runs, and size fields rewritten to huge values."""
    out = []
    for _ in range(count):
        damaged = bytearray(data)
        kind = rng.randrange(5)
        if kind == 0:
            damaged = damaged[: rng.randrange(len(damaged))]
        elif kind == 1:
            for _ in range(rng.randrange(1, 8)):
                damaged[rng.randrange(len(damaged))] = rng.randrange(256)
        elif kind == 2:
            at = rng.randrange(len(damaged))
            damaged[at:at] = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 64)))
        elif kind == 3:
            at = rng.randrange(len(damaged))
            del damaged[at : at + rng.randrange(1, 64)]
        else:  # a size field in the first bytes set to 0xFFFF: decompression bombs and header lies
            at = rng.randrange(min(64, len(damaged) - 2))
            damaged[at : at + 2] = b"\xff\xff"
        out.append(bytes(damaged))
    return out


@pytest.fixture(autouse=True)
def _no_hang():
    def stop(*_):
        raise TimeoutError("a read hung")

    previous = signal.signal(signal.SIGALRM, stop)
    signal.alarm(120)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


def test_damaged_predict_inputs_are_read_or_refused_with_the_file_named(tmp_path):
    rng = random.Random(1)
    budget = max_pixels_for(256 * 2**20)  # what predict allows under a 256 MiB budget
    checked = 0
    for name, data in _files().items():
        if name.startswith("m"):
            continue
        for index, damaged in enumerate(_mutations(data, 120, rng)):
            path = tmp_path / f"{index}_{name}"
            path.write_bytes(damaged)
            try:
                image = load_image(path, max_pixels=budget)
                assert image.dtype.is_floating_point is False and image.shape[0] == 3
            except ImageError as error:
                assert str(path) in str(error)
                checked += 1
    assert checked > 50  # most damages are found


def test_damaged_dataset_files_are_named_and_never_crash_the_reader(tmp_path):
    rng = random.Random(2)
    files = _files()
    root = tmp_path / "data"
    for sub in ("images", "masks"):
        (root / sub).mkdir(parents=True)
    mutated_images = _mutations(files["a.png"], 60, rng)
    mutated_masks = _mutations(files["m.png"], 60, rng)
    for index in range(60):
        (root / "images" / f"{index}.png").write_bytes(mutated_images[index])
        (root / "masks" / f"{index}.png").write_bytes(mutated_masks[index])
    (root / "classes.txt").write_text("a\nb\nc\n")
    dataset = open_dataset("folder", root, None)
    bad = dataset.find_bad_items()  # never raises: every damaged item is a (index, message) naming its file
    assert len(bad) > 20
    for index, message in bad:
        assert f"{dataset.ids[index]}.png" in message
    for index in range(len(dataset)):
        try:
            image, mask = dataset[index]
            assert image.shape[-2:] == mask.shape
        except DatasetError:
            pass
