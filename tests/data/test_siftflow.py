"""SIFT Flow: semantic, geometric and both label kinds from .mat files written in the official layout."""

from __future__ import annotations

import json

import numpy as np
import pytest
import scipy.io
import torch
from command_runs import run_data_command
from dataset_files import FOLDER
from dataset_files import write_siftflow_item as write_item

from fcnseg.data import DatasetError, PadCollate, TrainTransform, open_dataset
from fcnseg.data.siftflow import GEOMETRIC_CLASSES, SEMANTIC_CLASSES

# Written out by hand: class k of the file is id k - 1, void is 255; geometric ids follow the 33 semantic ones.
SEMANTIC_IDS = [[255, 0, 1], [27, 32, 255]]
GEOMETRIC_IDS = [[255, 0, 1], [2, 255, 0]]
BOTH_GEOMETRIC_IDS = [[255, 33, 34], [35, 255, 33]]


def test_semantic_labels_are_the_file_labels_minus_one_with_void_ignored(siftflow):
    dataset = open_dataset("siftflow", siftflow, "trainval", labels="semantic")
    image, mask = dataset[0]
    assert dataset.classes == list(SEMANTIC_CLASSES) and len(dataset.classes) == 33 and dataset.heads is None
    assert image.shape == (3, 2, 3) and mask.tolist() == SEMANTIC_IDS


def test_geometric_labels_treat_minus_one_and_zero_as_void(siftflow):
    dataset = open_dataset("siftflow", siftflow, "trainval", labels="geometric")
    assert dataset.classes == list(GEOMETRIC_CLASSES) and dataset[1][1].tolist() == GEOMETRIC_IDS


def test_both_labels_are_one_row_per_head_numbered_in_one_class_list(siftflow):
    dataset = open_dataset("siftflow", siftflow, "trainval")  # labels="both" by default
    image, mask = dataset[0]
    assert dataset.heads == (("sem", 33), ("geo", 3)) and len(dataset.classes) == 36
    assert dataset.classes[27] == "sky" and dataset.classes[33] == "sky (geometric)"
    assert mask.shape == (2, 2, 3) and mask[0].tolist() == SEMANTIC_IDS and mask[1].tolist() == BOTH_GEOMETRIC_IDS
    images, masks = PadCollate()([dataset[0], (torch.zeros(3, 4, 1, dtype=torch.uint8), torch.zeros(2, 4, 1))])
    assert masks.shape == (2, 2, 4, 3) and masks[0, :, :2, :3].tolist() == mask.tolist()
    assert (masks[1, :, :, 1:] == 255).all() and (masks[0, :, 2:] == 255).all()


def test_a_label_outside_its_heads_range_names_the_file(siftflow):
    write_item(siftflow, "coast_a", geometric=np.array([[1, 4, 1], [1, 1, 1]]))  # 4: no geometric class
    with pytest.raises(DatasetError, match=r"coast_a\.mat.*geo labels.*label 36.*expected 33\.\.35"):
        open_dataset("siftflow", siftflow, "trainval")[0]
    write_item(siftflow, "coast_a", semantic=np.array([[34, 1, 1], [1, 1, 1]]))
    with pytest.raises(DatasetError, match=r"label 33 .*expected 0\.\.32"):
        open_dataset("siftflow", siftflow, "trainval", labels="semantic")[0]


def test_missing_and_malformed_files_are_named(siftflow):
    (siftflow / "GeoLabels" / FOLDER / "street_b.mat").unlink()
    with pytest.raises(DatasetError, match=r"GeoLabels/.*street_b\.mat does not exist"):
        open_dataset("siftflow", siftflow, "trainval")[1]
    scipy.io.savemat(siftflow / "SemanticLabels" / FOLDER / "coast_a.mat", {"L": np.zeros((2, 3))})
    with pytest.raises(
        DatasetError, match=r"coast_a\.mat has no variable 'S'.*SemanticLabels.*found variables: \['L'\]"
    ):
        open_dataset("siftflow", siftflow, "trainval")[0]
    with pytest.raises(DatasetError, match=r"test\.txt does not exist"):
        open_dataset("siftflow", siftflow, "test")
    with pytest.raises(DatasetError, match="labels='depth'"):
        open_dataset("siftflow", siftflow, "trainval", labels="depth")


def test_fcnseg_data_checks_every_item_and_counts_both_heads(siftflow, capsys):
    assert run_data_command(["--data", "siftflow", "--root", str(siftflow), "--split", "trainval", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    pixels = {row["class"]: row["pixels"] for row in report["classes"]}
    assert report["items"] == 2 and pixels["sky"] == 2 and pixels["road"] == 0
    assert [pixels[name] for name in GEOMETRIC_CLASSES] == [2 * 2, 2, 2]


def test_resize_and_augmentation_move_both_rows_together(siftflow):
    image, mask = open_dataset("siftflow", siftflow, "trainval", resize=[4, 6])[0]
    expected = np.stack([SEMANTIC_IDS, BOTH_GEOMETRIC_IDS]).repeat(2, axis=1).repeat(2, axis=2)  # nearest, x2
    assert image.shape == (3, 4, 6) and mask.tolist() == expected.tolist()
    semantic = torch.arange(9 * 11).reshape(9, 11) % 33
    paired = torch.stack([semantic, 33 + semantic % 3])  # row 1 is a function of row 0, pixel by pixel
    torch.manual_seed(3)
    _, out = TrainTransform(crop_size=(6, 7), scale_range=(0.5, 2.0))(torch.zeros(3, 9, 11, dtype=torch.uint8), paired)
    labelled = (out[0] != 255) & (out[1] != 255)
    assert out.shape == (2, 6, 7) and labelled.any() and ((out[0] == 255) == (out[1] == 255)).all()
    assert torch.equal(out[1][labelled], 33 + out[0][labelled] % 3)
