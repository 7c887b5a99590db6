"""PASCAL-Context: the 59-class task (+ background) mapped from a full LabelMap written as the release does."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import scipy.io
from command_runs import run_data_command
from PIL import Image

from fcnseg.data import DatasetError, open_dataset

# A shortened release: the full list (its indices are the LabelMap values) and a 4-class task list, in
# the release's format; "diningtable" and "bedcloth" are spelled as in the real 59_labels.txt.
FULL_LABELS = ["1: accordion", "2: aeroplane", "3: air conditioner", "4: bedclothes", "5: sky", "6: table", "7: cat"]
TASK_LABELS = ["1: aeroplane", "2: diningtable", "3: sky", "4: bedcloth"]
LABEL_MAP = np.array([[0, 1, 2], [5, 6, 7], [4, 3, 99]], dtype=np.uint16)
# By hand: aeroplane (2) -> 1, table (6) -> 2 (diningtable), sky (5) -> 3, bedclothes (4) -> 4 (bedcloth);
# accordion, air conditioner, cat, 0 and the unknown 99 are none of the task's classes: background 0.
EXPECTED = [[0, 0, 1], [3, 2, 0], [4, 0, 0]]


@pytest.fixture
def context(tmp_path: Path) -> Path:
    root, voc = tmp_path / "context", tmp_path / "VOCdevkit" / "VOC2010"
    (root / "trainval").mkdir(parents=True)
    (root / "labels.txt").write_text("\n".join(FULL_LABELS) + "\n")
    (root / "59_labels.txt").write_text("\n".join(TASK_LABELS) + "\n")
    (voc / "JPEGImages").mkdir(parents=True)
    (voc / "ImageSets" / "Main").mkdir(parents=True)
    for item in ("2008_000002", "2008_000003"):
        scipy.io.savemat(root / "trainval" / f"{item}.mat", {"LabelMap": LABEL_MAP})
        Image.fromarray(np.zeros((3, 3, 3), np.uint8)).save(voc / "JPEGImages" / f"{item}.jpg", format="JPEG")
    (voc / "ImageSets" / "Main" / "train.txt").write_text("2008_000002\n2008_000003\n")
    return root


def test_full_labels_map_to_the_task_classes_and_everything_else_to_background(context):
    dataset = open_dataset("pascal_context", context, "train", voc_root=context.parent / "VOCdevkit")
    assert dataset.classes == ["background", "aeroplane", "diningtable", "sky", "bedcloth"]
    image, mask = dataset[1]
    assert image.shape == (3, 3, 3) and mask.tolist() == EXPECTED


def test_missing_and_malformed_files_are_named(context):
    voc = context.parent / "VOCdevkit"
    scipy.io.savemat(context / "trainval" / "2008_000003.mat", {"labels": LABEL_MAP})
    with pytest.raises(DatasetError, match=r"2008_000003\.mat has no variable 'LabelMap'"):
        open_dataset("pascal_context", context, "train", voc_root=voc)[1]
    (context / "trainval" / "2008_000002.mat").unlink()
    with pytest.raises(DatasetError, match=r"mask .*trainval/2008_000002\.mat for image .* does not exist"):
        open_dataset("pascal_context", context, "train", voc_root=voc)
    (context / "59_labels.txt").write_text("1: aeroplane\n2: unicorn\n")
    with pytest.raises(DatasetError, match=r"class 'unicorn' of .*59_labels\.txt is not in .*labels\.txt"):
        open_dataset("pascal_context", context, "train", voc_root=voc)
    (context / "59_labels.txt").write_text("aeroplane\n")
    with pytest.raises(DatasetError, match=r"59_labels\.txt line 1 is 'aeroplane'; expected '<index>: <name>'"):
        open_dataset("pascal_context", context, "train", voc_root=voc)
    with pytest.raises(DatasetError, match="pass voc_root="):
        open_dataset("pascal_context", context, "train")


def test_fcnseg_data_reads_it(context, capsys):
    voc = json.dumps(str(context.parent / "VOCdevkit"))
    assert (
        run_data_command(
            [
                "--data",
                "pascal_context",
                "--root",
                str(context),
                "--split",
                "train",
                "--data-option",
                f"voc_root={voc}",
                "--json",
            ]
        )
        == 0
    )
    report = json.loads(capsys.readouterr().out)
    assert report["items"] == 2 and [row["pixels"] for row in report["classes"]] == [2 * 5, 2, 2, 2, 2]
