"""Issue 26: a user's messy data, second pass.

Every dataset here is written by the test in ``tmp_path``: a damaged folder (missing mask, truncated
JPEG, wrong-size mask), 0/255 binary masks, RGB colour masks of K classes with an unlabelled colour.
"""

from __future__ import annotations

import argparse
import io
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
    image = np.random.default_rng(len(stem)).integers(0, 256, (height, width, 3), dtype=np.uint8)
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
    code = main(["train", "--out", str(out), "--data", "folder", "--root", str(binary), "--data-option", "num_classes=2",
                 "--width", "0.0625", "--steps", "1", "--set", "recipe.minutes=none", "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and not out.exists()
    line = next(line for line in err.splitlines() if line.startswith("fcnseg train: error: "))
    assert "no trainable foreground" in line and "--data-option binary=true" in line
    assert err.count("masks hold only the values 0 and 255") == 1  # said once, as the error, not also as a warning
