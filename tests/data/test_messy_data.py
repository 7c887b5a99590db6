"""Issue 26: a user's messy data, second pass.

Every dataset here is written by the test in ``tmp_path``: a damaged folder (missing mask, truncated
JPEG, wrong-size mask), 0/255 binary masks, RGB colour masks of K classes with an unlabelled colour.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fcnseg.commands import data as data_command
from fcnseg.data import open_dataset


def doctor(argv: list[str]) -> int:
    """``fcnseg data ARGV``, in this process."""
    parser = argparse.ArgumentParser()
    data_command.add_parser(parser.add_subparsers(dest="command"))
    return data_command.run(parser.parse_args(["data", *argv]))


def ids_mask(seed: int, shape: tuple[int, int] = (24, 32), classes: int = 3) -> np.ndarray:
    """A mask of class ids in blocks (regions, not noise), 0..classes-1."""
    rng = np.random.default_rng(seed)
    blocks = rng.integers(0, classes, (shape[0] // 8, shape[1] // 8))
    return np.kron(blocks, np.ones((8, 8), np.int64)).astype(np.uint8)


def write_item(root: Path, stem: str, mask: np.ndarray, *, jpeg: bool = True) -> None:
    """images/<stem>.jpg (a photo-like JPEG of the mask's size) and masks/<stem>.png."""
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "masks").mkdir(exist_ok=True)
    height, width = mask.shape[:2]
    image = np.random.default_rng(sum(stem.encode())).integers(0, 256, (height, width, 3), dtype=np.uint8)
    Image.fromarray(image).save(root / "images" / f"{stem}.{'jpg' if jpeg else 'png'}", quality=90)
    Image.fromarray(mask).save(root / "masks" / f"{stem}.png")


# --- item 2: a damaged folder, every problem in one pass; --fix without skip_bad -------------------


@pytest.fixture
def damaged(tmp_path: Path) -> Path:
    """Eight items with classes.txt and train.txt/val.txt; three train items damaged three ways, one val item too."""
    root = tmp_path / "damaged"
    for index, stem in enumerate("abcdefgh"):
        write_item(root, stem, ids_mask(index))
    (root / "classes.txt").write_text("ground\nroof\nwater\n")
    (root / "train.txt").write_text("a\nb\nc\nd\ne\nf\n")
    (root / "val.txt").write_text("g\nh\n")
    (root / "masks" / "b.png").unlink()  # a missing mask
    data = (root / "images" / "c.jpg").read_bytes()
    (root / "images" / "c.jpg").write_bytes(data[: len(data) // 2])  # a truncated JPEG
    Image.fromarray(ids_mask(3, (16, 16))).save(root / "masks" / "d.png")  # a mask of the wrong size
    (root / "masks" / "h.png").unlink()  # and a val item with a missing mask
    return root


def test_the_doctor_lists_every_problem_of_a_damaged_folder_in_one_pass(damaged: Path, capsys) -> None:
    assert doctor(["--data", "folder", "--root", str(damaged)]) == 2
    captured = capsys.readouterr()
    out = captured.out
    assert out.startswith("6 items (from ")  # the missing one is counted, and listed below
    assert "error: bad item b: " in out and "b.png" in out and "does not exist" in out
    assert "error: bad item c: " in out and "c.jpg is truncated" in out
    assert "error: bad item d: " in out and "but mask is 16x16; expected the same size" in out
    assert "error: bad item h of the other split (val): " in out and "h.png" in out
    assert "skip_bad" not in out + captured.err  # the remedy is --fix, not an option that hides the items
    assert captured.err.count("\n") == 1 and captured.err.startswith("fcnseg data: error: 4 errors above")
    assert "--fix OUT" in captured.err


def test_fix_writes_the_clean_copy_of_a_damaged_folder_without_skip_bad(damaged: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "clean"
    assert doctor(["--data", "folder", "--root", str(damaged), "--fix", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "train: 3 of 6 items written; 3 left out:" in printed and "val: 1 of 2 items written; 1 left out:" in printed
    for stem in "bcdh":
        assert f"  left out {stem}: " in printed
    assert printed.rstrip().endswith(f"wrote {out}; open it with --data folder --root {out}")
    assert "skip_bad" not in printed
    assert (out / "train.txt").read_text().split() == ["a", "e", "f"] and (out / "val.txt").read_text().split() == ["g"]
    assert doctor(["--data", "folder", "--root", str(out)]) == 0  # the copy opens with no options, all readable
    assert ": all readable" in capsys.readouterr().out
    assert open_dataset("folder", out, "train").skip_bad is False


def test_a_users_skip_bad_is_kept_and_its_skipped_items_are_listed(damaged: Path, capsys) -> None:
    dataset = data_command.open_listing_missing("folder", str(damaged), "train", {"skip_bad": True})
    assert dataset.skip_bad is True and dataset.dropped[0][0] == "b"
    assert doctor(["--data", "folder", "--root", str(damaged), "--data-option", "skip_bad=true"]) == 2
    captured = capsys.readouterr()
    assert "error: bad item b: " in captured.out and "skipping" not in captured.err  # listed once, as a finding


# --- item 9 (part): fcnseg data's errors on stderr, one line ---------------------------------------


def test_data_errors_go_to_stderr_as_one_line_and_stdout_keeps_the_report(tmp_path: Path, capsys) -> None:
    assert doctor(["--data", "folder", "--root", str(tmp_path / "nowhere")]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.count("\n") == 1
    assert captured.err.startswith("fcnseg data: error: dataset folder ") and "nowhere does not exist" in captured.err
    write_item(tmp_path / "ok", "a", ids_mask(0))
    write_item(tmp_path / "ok", "b", ids_mask(1))
    (tmp_path / "ok" / "classes.txt").write_text("ground\nroof\nwater\n")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "x").write_text("taken")
    assert doctor(["--data", "folder", "--root", str(tmp_path / "ok"), "--fix", str(tmp_path / "out")]) == 2
    captured = capsys.readouterr()
    assert "error" not in captured.out and captured.err.count("\n") == 1 and "not an empty folder" in captured.err


# --- item 1: 0/255 binary masks name binary=true at once, and a run on them does not start ---------


@pytest.fixture
def binary(tmp_path: Path) -> Path:
    """Six items whose masks hold 0 (background) and 255 (the object), no classes.txt."""
    root = tmp_path / "binary"
    for index, stem in enumerate("abcdef"):
        write_item(root, stem, np.where(ids_mask(index, classes=2) == 1, 255, 0).astype(np.uint8), jpeg=False)
    return root


def test_the_first_error_of_binary_masks_names_binary_true(binary: Path, capsys) -> None:
    assert doctor(["--data", "folder", "--root", str(binary)]) == 2
    err = capsys.readouterr().err
    assert "has no classes.txt, and its masks look binary (only the values 0 and 255 in the 6 read" in err
    assert "pass binary=true" in err and err.count("\n") == 1
    assert doctor(["--data", "folder", "--root", str(binary), "--data-option", "binary=true"]) == 0


def test_the_no_classes_error_stays_plain_for_masks_of_ids_and_points_colour_masks_to_a_table(tmp_path: Path) -> None:
    from fcnseg.data import DatasetError

    write_item(tmp_path / "ids", "a", ids_mask(0))
    with pytest.raises(DatasetError, match=r"has no classes.txt; expected one \(line i") as plain:
        open_dataset("folder", tmp_path / "ids", None)
    assert "binary" not in str(plain.value)
    write_item(tmp_path / "rgb", "a", np.stack([ids_mask(0) * 60] * 3, -1) + np.array([0, 5, 9], np.uint8))
    with pytest.raises(DatasetError, match=r"its masks are RGB colour images \(1 of the 1 read.*colors=FILE"):
        open_dataset("folder", tmp_path / "rgb", None)


def test_a_run_on_0_255_masks_with_255_ignored_refuses_to_start(binary: Path, tmp_path: Path, capsys) -> None:
    from fcnseg.cli import main

    assert doctor(["--data", "folder", "--root", str(binary), "--data-option", "num_classes=2"]) == 2
    assert "error: masks hold only the values 0 and 255" in capsys.readouterr().out
    out = tmp_path / "run"
    code = main(
        [
            "train",
            "--out",
            str(out),
            "--data",
            "folder",
            "--root",
            str(binary),
            "--data-option",
            "num_classes=2",
            "--width",
            "0.0625",
            "--steps",
            "1",
            "--set",
            "recipe.minutes=none",
            "--no-progress",
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and not out.exists()
    line = next(line for line in err.splitlines() if line.startswith("fcnseg train: error: "))
    assert "no trainable foreground" in line and "--data-option binary=true" in line
    assert err.count("masks hold only the values 0 and 255") == 1  # said once, as the error, not also as a warning


# --- item 3: RGB colour masks get ids 0..K-1 and an unlabelled colour -> 255; --fix works with it ----

#: CamVid's 11 class colours: every one of them is also in the 255-colour VOC palette (ids up to 38).
CAMVID_COLOURS = [(128, 128, 128), (128, 0, 0), (192, 192, 128), (128, 64, 128), (0, 0, 192), (128, 128, 0),
                  (192, 128, 128), (64, 64, 128), (64, 0, 128), (64, 64, 0), (0, 128, 192)]  # fmt: skip


def colour_folder(root: Path, colours: list[tuple[int, int, int]], outline: tuple[int, int, int] | None) -> dict:
    """Colour masks of len(colours) classes in 16x16 blocks (every class present in each mask), ``outline``
    drawn as 1-px lines between the blocks; classes.txt names the classes. Returns stem -> class ids (255 on
    the outline)."""
    ids = {}
    lookup = np.array(colours + [outline or (0, 0, 0)], np.uint8)
    for index, stem in enumerate("abcd"):
        blocks = (np.arange(12).reshape(3, 4) + index) % len(colours)
        mask = np.kron(blocks, np.ones((16, 16), np.int64))
        if outline is not None:
            mask[16::16, :] = mask[:, 16::16] = len(colours)
        write_item(root, stem, lookup[mask], jpeg=False)
        ids[stem] = np.where(mask == len(colours), 255, mask)
    (root / "classes.txt").write_text("".join(f"class{index}\n" for index in range(len(colours))))
    return ids


def fixed_ids_follow_the_proposal(out: Path, ids: dict, colours: list, table_text: str) -> None:
    """The copy --fix wrote holds, for each mask pixel, the id the printed table gives its colour."""
    from fcnseg.data.colours import read_colour_table

    assert (out / "colors.txt").read_text() == table_text
    entries = read_colour_table(out / "colors.txt").entries
    to_fixed = np.array([entries[colour] for colour in colours] + [255] * (256 - len(colours)))
    assert sorted(set(entries.values()) - {255}) == list(range(len(colours)))
    for split in ("train", "val"):
        dataset = open_dataset("folder", out, split)
        for index, stem in enumerate(dataset.ids):
            assert np.array_equal(dataset[index][1].numpy(), to_fixed[ids[stem]])


def test_colour_masks_of_k_classes_get_ids_0_to_k_minus_1_and_black_as_unlabelled(tmp_path: Path, capsys) -> None:
    root = tmp_path / "camvid"
    ids = colour_folder(root, CAMVID_COLOURS, outline=(0, 0, 0))
    assert doctor(["--data", "folder", "--root", str(root)]) == 2  # a dataset error: 2, as every other
    out = capsys.readouterr().out
    assert "12 colours in all" in out and "11 colours as class ids 0..10 in RGB order" in out
    assert "(0, 0, 0) as 255, the ignore value" in out and "it looks unlabelled (black, " in out
    assert "edit the ids" not in out and "      0   0   0  255  unlabelled" in out
    table_text = "\n".join(line[4:] for line in out.splitlines() if line.startswith("    ")) + "\n"
    fixed = tmp_path / "fixed"
    assert doctor(["--data", "folder", "--root", str(root), "--fix", str(fixed)]) == 0
    assert "train: 3 of 3 items written (3 masks converted from colours)" in capsys.readouterr().out
    fixed_ids_follow_the_proposal(fixed, ids, CAMVID_COLOURS, table_text)


def test_without_black_a_colour_lying_on_region_borders_is_the_unlabelled_one(tmp_path: Path, capsys) -> None:
    root = tmp_path / "outlined"
    colours = [(250, 40, 40), (40, 40, 250), (40, 200, 40)]
    ids = colour_folder(root, colours, outline=(255, 255, 0))
    assert doctor(["--data", "folder", "--root", str(root)]) == 2
    out = capsys.readouterr().out
    assert "3 colours as class ids 0..2" in out
    assert re.search(
        r"\(255, 255, 0\) as 255, the ignore value \(not trained, not scored\): it looks unlabelled "
        r"\(9\d% of its pixels on region borders, \d\.\d% of the pixels\)",
        out,
    )
    fixed = tmp_path / "fixed"
    assert doctor(["--data", "folder", "--root", str(root), "--fix", str(fixed)]) == 0
    capsys.readouterr()
    table_text = "\n".join(line[4:] for line in out.splitlines() if line.startswith("    ")) + "\n"
    fixed_ids_follow_the_proposal(fixed, ids, colours, table_text)


def test_the_unlabelled_rule() -> None:
    from fcnseg.data.colours import propose_colour_table, unlabelled_colours

    red, blue, black, line = (250, 0, 0), (0, 0, 250), (0, 0, 0), (9, 9, 90)
    # No surplus of colours: black is a class when it covers a large share (a background), unlabelled when small.
    assert unlabelled_colours({black: 40, red: 30, blue: 30}, num_classes=3) == []
    assert unlabelled_colours({black: 5, red: 50, blue: 45}, num_classes=3) == [black]
    # A surplus: black first, then the colour most on borders, then the smallest.
    assert unlabelled_colours({black: 40, red: 30, blue: 30}, num_classes=2) == [black]
    counts, borders = {red: 50, blue: 40, line: 10}, {red: 10, blue: 8, line: 10}
    assert unlabelled_colours(counts, borders, num_classes=2) == [line]
    table = propose_colour_table(counts, num_classes=2, borders=borders)
    assert table.entries == {red: 1, blue: 0, line: 255} and table.class_names(255) == ["class_0", "class_1"]
