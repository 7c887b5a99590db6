"""The dataset doctor (`diagnose`, `fcnseg data`), the binary and colors options, and `--fix OUT`."""

from __future__ import annotations

import argparse
import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fcnseg.commands import data as data_command
from fcnseg.data import (
    ColourMaskError,
    DatasetError,
    LossyMaskError,
    class_statistics,
    diagnose,
    open_dataset,
    read_colour_table,  # fmt: skip
    write_fixed_copy,
)
from fcnseg.data.colours import propose_colour_table

COLOURS = {0: (0, 0, 0), 1: (250, 40, 40), 2: (40, 40, 250)}  # a user's own colour coding


def run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    data_command.add_parser(parser.add_subparsers(dest="command"))
    return data_command.run(parser.parse_args(["data", *argv]))


def ids_mask(seed: int, shape=(6, 8), classes: int = 3) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, classes, shape).astype(np.uint8)


def make_folder(root: Path, masks: dict[str, np.ndarray], *, suffix: str = ".png", orientation: int = 1) -> Path:
    """images/<stem>.png (random RGB, the mask's size unless turned by ``orientation``) and masks/<stem><suffix>."""
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "masks").mkdir(exist_ok=True)
    for index, (stem, mask) in enumerate(masks.items()):
        height, width = mask.shape[:2]
        image = np.random.default_rng(100 + index).integers(0, 256, (height, width, 3), dtype=np.uint8)
        exif = Image.Exif()
        exif[0x0112] = orientation
        Image.fromarray(image).save(root / "images" / f"{stem}.png", exif=exif)
        Image.fromarray(mask).save(root / "masks" / f"{stem}{suffix}", **({"quality": 95} if suffix == ".jpg" else {}))
    return root


def codes(findings) -> list[str]:
    return [finding.code for finding in findings]


def tree_digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


# --- 0/255 binary masks ------------------------------------------------------------------------


@pytest.fixture
def binary_folder(tmp_path: Path) -> Path:
    masks = {
        stem: np.where(ids_mask(seed, classes=2) == 1, 255, 0).astype(np.uint8) for seed, stem in enumerate("abcde")
    }
    root = make_folder(tmp_path / "binary", masks)
    (root / "classes.txt").write_text("background\nroof\n")
    return root


def test_binary_masks_warn_and_binary_true_makes_255_the_foreground(binary_folder: Path, capsys) -> None:
    plain = open_dataset("folder", binary_folder, "train")
    assert "binary-masks" in codes(diagnose(plain))
    assert class_statistics(plain).pixel_counts[1] == 0  # what went wrong before: the foreground is ignored
    assert run(["--data", "folder", "--root", str(binary_folder)]) == 2  # no trainable foreground: an error
    assert "error: masks hold only the values 0 and 255" in capsys.readouterr().out
    assert run(["--data", "folder", "--root", str(binary_folder), "--json"]) == 2
    report = json.loads(capsys.readouterr().out)
    assert "binary-masks" in [f["code"] for f in report["findings"]] and report["split"]["source"] == "automatic"

    dataset = open_dataset("folder", binary_folder, "train", binary=True)
    raw = np.array(Image.open(binary_folder / "masks" / f"{dataset.ids[0]}.png"))
    assert np.array_equal(dataset[0][1].numpy(), (raw == 255).astype(np.int64))
    stored = sum(int((np.array(Image.open(binary_folder / "masks" / f"{s}.png")) == 255).sum()) for s in dataset.ids)
    assert class_statistics(dataset).pixel_counts[1] == stored > 0
    assert "binary-masks" not in codes(diagnose(dataset))
    assert open_dataset("folder", binary_folder, None, binary=True, classes=["bg", "fg"]).classes == ["bg", "fg"]
    (binary_folder / "classes.txt").unlink()
    assert open_dataset("folder", binary_folder, None, binary=True).classes == ["background", "foreground"]
    with pytest.raises(DatasetError, match="binary=true makes 2 classes .* num_classes gives 3"):
        open_dataset("folder", binary_folder, None, binary=True, num_classes=3)


# --- RGB colour masks ----------------------------------------------------------------------------


@pytest.fixture
def colour_folder(tmp_path: Path) -> tuple[Path, dict[str, np.ndarray]]:
    ids = {stem: ids_mask(seed) for seed, stem in enumerate("abcde")}
    lookup = np.array([COLOURS[i] for i in range(3)], np.uint8)
    return make_folder(tmp_path / "colour", {stem: lookup[mask] for stem, mask in ids.items()}), ids


def test_colour_masks_get_a_proposed_table_and_open_with_it(colour_folder, tmp_path: Path, capsys) -> None:
    root, ids = colour_folder
    plain = open_dataset("folder", root, None, num_classes=3)
    with pytest.raises(ColourMaskError, match=r"mask .*a\.png is a RGB image; expected one channel of class ids"):
        plain[0]
    finding = next(f for f in diagnose(plain) if f.code == "colour-masks")
    assert finding.severity == "error" and "5 masks are RGB colour images" in finding.message
    table_file = tmp_path / "colors.txt"
    table_file.write_text(finding.detail)  # the proposal, in RGB order: black 0, (40,40,250) 1, (250,40,40) 2
    assert read_colour_table(table_file).entries == {(0, 0, 0): 0, (40, 40, 250): 1, (250, 40, 40): 2}
    table_file.write_text("# mine\n0 0 0 0 ground\n250,40,40 1 roof\n40 40 250 2 water\n")
    dataset = open_dataset("folder", root, None, colors=str(table_file))
    assert dataset.classes == ["ground", "roof", "water"] and dataset.palette == [COLOURS[i] for i in range(3)]
    for index, stem in enumerate(dataset.ids):
        assert np.array_equal(dataset[index][1].numpy(), ids[stem])
    assert not [f for f in diagnose(dataset) if f.severity == "error"]
    assert run(["--data", "folder", "--root", str(root), "--data-option", "num_classes=3"]) == 2
    out = capsys.readouterr().out
    assert "RGB colour images" in out and "colors=FILE" in out and "  0   0   0    0" in out


def test_colour_table_errors_name_the_file_and_line(colour_folder, tmp_path: Path) -> None:
    root, _ = colour_folder
    table_file = tmp_path / "colors.txt"
    table_file.write_text("0 0 0 0\n250 40 40 1\n")  # (40, 40, 250) missing
    dataset = open_dataset("folder", root, None, colors=str(table_file), num_classes=3)
    with pytest.raises(
        DatasetError, match=r"has colour \(40, 40, 250\) at \(row, col\) .*colour table .*colors\.txt does not list"
    ):
        for index in range(len(dataset)):
            dataset[index]
    table_file.write_text("0 0 0 0\n300 0 0 1\n")
    with pytest.raises(DatasetError, match=r"colors\.txt line 2 is '300 0 0 1'; expected 'R G B ID \[name\]'"):
        open_dataset("folder", root, None, colors=str(table_file))
    table_file.write_text("0 0 0 0\n0 0 0 1\n")
    with pytest.raises(DatasetError, match=r"line 2: colour \(0, 0, 0\) is listed with two ids"):
        open_dataset("folder", root, None, colors=str(table_file))


def test_proposed_tables_for_grey_and_voc_colours() -> None:
    grey = propose_colour_table({(0, 0, 0): 5, (3, 3, 3): 7})
    assert grey.entries == {(0, 0, 0): 0, (3, 3, 3): 3}
    voc = propose_colour_table({(0, 0, 0): 1, (128, 0, 0): 1, (0, 64, 128): 1, (224, 224, 192): 1})
    assert voc.entries == {(0, 0, 0): 0, (128, 0, 0): 1, (0, 64, 128): 20, (224, 224, 192): 255}  # DESIGN.md §5
    assert propose_colour_table({(i, 0, 1): 1 for i in range(256)} | {(0, 9, 9): 1}) is None  # 257 colours


# --- JPEG masks, EXIF-rotated images, classes, duplicates -----------------------------------------


def test_jpeg_masks_are_refused_with_the_reason(tmp_path: Path, capsys) -> None:
    root = make_folder(tmp_path, {"a": ids_mask(0), "b": ids_mask(1)}, suffix=".jpg")
    dataset = open_dataset("folder", root, None, num_classes=3)  # found, not "missing a PNG"
    with pytest.raises(
        LossyMaskError, match=r"mask .*a\.jpg is a JPEG; expected a lossless PNG: JPEG compression changes"
    ):
        dataset[0]
    assert codes(diagnose(dataset)) == ["jpeg-masks"]
    assert run(["--data", "folder", "--root", str(root), "--split", "all", "--data-option", "num_classes=3"]) == 2
    assert "2 masks are JPEG files" in capsys.readouterr().out
    Image.fromarray(ids_mask(0)).save(root / "masks" / "a.png")  # a PNG beside the JPEG is taken as the mask
    assert open_dataset("folder", root, None, num_classes=3).mask_paths[0].endswith("a.png")


def test_mask_drawn_on_the_unrotated_image_is_found_and_fixed(tmp_path: Path) -> None:
    masks = {"a": ids_mask(0, (4, 6)), "b": ids_mask(1, (4, 6))}
    root = make_folder(tmp_path / "src", masks, orientation=6)  # stored 6 wide, 4 high; shown 4 wide, 6 high
    dataset = open_dataset("folder", root, None, num_classes=3)
    with pytest.raises(DatasetError, match=r"image is 4x6 \(WxH\) but mask is 6x4"):
        dataset[0]
    found = diagnose(dataset)
    assert codes(found) == ["exif-rotation"] and "2 masks have the size of their image as stored" in found[0].message
    report = write_fixed_copy([dataset], tmp_path / "fixed")
    assert "all: 2 of 2 items written (2 masks rotated as their image's EXIF orientation)" in report
    fixed = open_dataset("folder", tmp_path / "fixed", None)
    for index, stem in enumerate(fixed.ids):
        image, mask = fixed[index]
        assert np.array_equal(mask.numpy(), np.rot90(masks[stem], -1))  # turned clockwise, as the image is shown


def test_classes_missing_from_train_and_identical_files_across_splits(tmp_path: Path) -> None:
    masks = {"a": ids_mask(0, classes=2), "b": ids_mask(1, classes=2), "c": np.full((6, 8), 2, np.uint8)}
    root = make_folder(tmp_path, masks)
    (root / "classes.txt").write_text("ground\nroof\nwater\nsnow\n")
    (root / "train.txt").write_text("a\nb\n")
    (root / "val.txt").write_text("c\n")
    Image.open(root / "images" / "a.png").save(root / "images" / "c.png")  # the same picture, re-saved: not identical
    found = {f.code: f for f in diagnose(open_dataset("folder", root, "train"), open_dataset("folder", root, "val"))}
    assert set(found) == {"class-missing", "class-not-in-other"}
    assert found["class-missing"].message.startswith("2 of 4 classes never occur in the 2 readable train masks")
    assert "water (id 2; 48 pixels in the other split), snow (id 3)" in found["class-missing"].message
    assert "ground (id 0), roof (id 1), snow (id 3)" in found["class-not-in-other"].message
    (root / "images" / "c.png").write_bytes((root / "images" / "b.png").read_bytes())
    found = {f.code: f for f in diagnose(open_dataset("folder", root, "train"), open_dataset("folder", root, "val"))}
    assert (
        "1 image files of the other split are identical to images of this split (b = c)" in found["duplicates"].message
    )


def test_unreadable_items_sampling_and_fifos(tmp_path: Path) -> None:
    root = make_folder(tmp_path, {stem: ids_mask(seed) for seed, stem in enumerate("abcdefgh")})
    (root / "masks" / "c.png").write_bytes(b"not a png")
    os.mkfifo(root / "images" / "d.png.fifo.png")  # a FIFO where an image belongs: refused, never opened
    Image.fromarray(ids_mask(9)).save(root / "masks" / "d.png.fifo.png")
    dataset = open_dataset("folder", root, None, num_classes=3)
    messages = [f.message for f in diagnose(dataset) if f.code == "bad-item"]
    assert any("c.png cannot be decoded" in m for m in messages) and any(
        "is a FIFO, not a regular file" in m for m in messages
    )
    sampled = diagnose(dataset, max_items=3, decode_images=False)
    assert sampled[0].message == "checked 3 of 9 items (evenly spaced)"


# --- --fix OUT -----------------------------------------------------------------------------------


def test_fix_writes_a_new_folder_and_leaves_the_original_untouched(colour_folder, tmp_path: Path, capsys) -> None:
    root, ids = colour_folder
    (root / "classes.txt").write_text("ground\nwater\nroof\n")
    (root / "masks" / "e.png").unlink()
    Image.fromarray(ids_mask(4)).save(root / "masks" / "e.jpg")
    before = tree_digest(root)
    out = tmp_path / "fixed"
    assert run(["--data", "folder", "--root", str(root), "--fix", str(out)]) == 0
    printed = capsys.readouterr().out
    assert tree_digest(root) == before
    assert "wrote" in printed and "left out" in printed and "e.jpg is a JPEG" in printed
    assert sorted(p.name for p in out.iterdir()) == [
        "classes.txt",
        "colors.txt",
        "images",
        "masks",
        "train.txt",
        "val.txt",
    ]
    train, val = open_dataset("folder", out, "train"), open_dataset("folder", out, "val")
    assert sorted(train.ids + val.ids) == ["a", "b", "c", "d"] and not set(train.ids) & set(val.ids)
    proposal = {0: 0, 1: 2, 2: 1}  # proposed ids are in RGB order: (40,40,250) -> 1, (250,40,40) -> 2
    for dataset in (train, val):
        for index, stem in enumerate(dataset.ids):
            assert np.array_equal(dataset[index][1].numpy(), np.vectorize(proposal.get)(ids[stem]))
    assert Image.open(out / "masks" / "a.png").mode == "P"
    assert run(["--data", "folder", "--root", str(root), "--fix", str(out)]) == 2
    assert "exists and is not an empty folder" in capsys.readouterr().err
    assert tree_digest(root) == before


def test_fix_writes_binary_masks_as_0_and_1(binary_folder: Path, tmp_path: Path) -> None:
    report = write_fixed_copy([open_dataset("folder", binary_folder, None)], tmp_path / "out")
    assert report[0] == "all: 5 of 5 items written (5 masks written 0/1)"
    fixed = open_dataset("folder", tmp_path / "out", None)
    raw = np.array(Image.open(binary_folder / "masks" / "a.png"))
    assert fixed.classes == ["background", "roof"] and torch.equal(
        fixed[0][1], torch.from_numpy((raw > 0).astype(np.int64))
    )
