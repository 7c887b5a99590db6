"""VOC (any year, seg11valid) and SBD (.mat labels, train_aug) on generated files and the real VOC mini set."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import torch
from dataset_files import scrambled_palette, write_list, write_voc_item
from PIL import Image

from fcnseg.data import VOC_CLASSES, DatasetError, open_dataset

# VOC colours of the ids in the real mini set, written out by hand from the VOC palette rule
# (bit k of the id sets bit 7-k//3 of R, G or B by k mod 3): never derived by the code under test.
VOC_COLOURS = {
    0: (0, 0, 0), 5: (128, 0, 128), 6: (0, 128, 128), 7: (128, 128, 128), 9: (192, 0, 0),
    11: (192, 128, 0), 15: (192, 128, 128), 18: (0, 192, 0), 255: (224, 224, 192),
}  # fmt: skip


def label(value: int, shape: tuple[int, int] = (4, 6)) -> np.ndarray:
    mask = np.full(shape, value, np.uint8)
    mask[0, :] = 255
    return mask


@pytest.fixture
def devkit(tmp_path: Path) -> Path:
    """VOCdevkit/VOC2012 with ids a..d (mask of id i holds class i+1), train = a, b; val = c, d."""
    voc = tmp_path / "VOCdevkit" / "VOC2012"
    for number, item in enumerate("abcd"):
        write_voc_item(voc, item, label(number + 1))
    segmentation = voc / "ImageSets" / "Segmentation"
    write_list(segmentation / "train.txt", ["a", "b"])
    write_list(segmentation / "val.txt", ["c", "d"])
    write_list(segmentation / "trainval.txt", list("abcd"))
    return tmp_path / "VOCdevkit"


def test_voc_splits_from_devkit_or_year_folder(devkit: Path) -> None:
    train = open_dataset("voc", devkit, "train")
    assert train.ids == ["a", "b"] and train.classes == list(VOC_CLASSES) and train.num_classes == 21
    assert train.palette[15] == (192, 128, 128) and train.palette[20] == (0, 64, 128)
    image, mask = train[1]
    assert image.shape == (3, 4, 6) and image.dtype == torch.uint8
    assert torch.equal(mask, torch.from_numpy(label(2).astype(np.int64)))
    assert open_dataset("voc", devkit / "VOC2012", "val").ids == ["c", "d"]
    write_list(devkit / "mine.txt", ["d", "a"])
    assert open_dataset("voc", devkit, str(devkit / "mine.txt")).ids == ["d", "a"]
    pickle.loads(pickle.dumps(train))


def test_voc_masks_are_palette_indices_not_colours(devkit: Path) -> None:
    voc = devkit / "VOC2012"
    indices = np.array([[0, 1, 2, 15], [20, 255, 3, 0]], np.uint8)
    write_voc_item(voc, "scrambled", indices, scrambled_palette())
    write_list(voc / "ImageSets" / "Segmentation" / "odd.txt", ["scrambled"])
    _, mask = open_dataset("voc", devkit, "odd")[0]
    assert torch.equal(mask, torch.from_numpy(indices.astype(np.int64)))


def test_voc_real_mini_set_reads_palette_indices(voc_mini_root: Path) -> None:
    assert len(open_dataset("voc", voc_mini_root, "train")) == 2
    dataset = open_dataset("voc", voc_mini_root.parent, "trainval")
    assert len(dataset) == 4
    seen: set[int] = set()
    for index, item in enumerate(dataset.ids):
        image, mask = dataset[index]
        assert mask.dim() == 2 and mask.shape == image.shape[-2:]
        # Independent reference: the PNG drawn in RGB, each colour looked up in the hand-written VOC table.
        rgb = np.array(Image.open(voc_mini_root / "SegmentationClass" / f"{item}.png").convert("RGB"))
        expected = np.full(rgb.shape[:2], -1, np.int64)
        for class_id, colour in VOC_COLOURS.items():
            expected[(rgb == colour).all(-1)] = class_id
        assert (expected >= 0).all(), f"{item}: a colour outside the table"
        assert torch.equal(mask, torch.from_numpy(expected))
        seen |= set(mask.unique().tolist())
        photo = np.array(Image.open(voc_mini_root / "JPEGImages" / f"{item}.jpg").convert("RGB"))
        assert torch.equal(image, torch.from_numpy(photo).permute(2, 0, 1))
    assert seen == {0, 5, 6, 7, 9, 11, 15, 18, 255}


def test_voc_errors(devkit: Path, tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match=r"split file .*Segmentation/test\.txt does not exist"):
        open_dataset("voc", devkit, "test")
    (devkit / "VOC2012" / "JPEGImages" / "b.jpg").unlink()
    with pytest.raises(DatasetError, match=r"image .*JPEGImages/b\.jpg for id 'b' does not exist"):
        open_dataset("voc", devkit, "train")
    (devkit / "VOC2012" / "SegmentationClass" / "c.png").unlink()
    with pytest.raises(DatasetError, match=r"mask .*SegmentationClass/c\.png for image .*c\.jpg does not exist"):
        open_dataset("voc", devkit, "val")
    write_voc_item(devkit / "VOC2007", "z", label(1))
    with pytest.raises(DatasetError, match=r"several VOC years \['VOC2007', 'VOC2012'\]; pass year="):
        open_dataset("voc", devkit, "trainval")
    assert len(open_dataset("voc", devkit, "trainval", year=2012, skip_bad=True)) == 2
    with pytest.raises(DatasetError, match="neither a VOC20xx folder"):
        open_dataset("voc", tmp_path, "train")


def test_voc_label_outside_classes(devkit: Path) -> None:
    write_voc_item(devkit / "VOC2012", "b", label(21))
    with pytest.raises(DatasetError, match=r"SegmentationClass/b\.png\): mask has label 21 .*expected 0..20 or"):
        open_dataset("voc", devkit, "train")[1]


# --- seg11valid --------------------------------------------------------------------------------


def test_seg11valid_is_voc2011_val_minus_sbd_train(devkit: Path, tmp_path: Path) -> None:
    write_list(devkit / "VOC2011" / "ImageSets" / "Segmentation" / "val.txt", ["d", "a", "c", "b"])
    sbd = tmp_path / "benchmark_RELEASE" / "dataset"
    write_list(sbd / "train.txt", ["b", "x", "y"])
    dataset = open_dataset("voc", devkit / "VOC2012", "seg11valid", sbd_root=sbd)
    assert dataset.ids == ["d", "a", "c"]  # VOC2011 order, SBD train removed
    assert "VOC2012" in dataset.describe(0)  # images from the given VOC folder
    by_file = open_dataset(
        "voc",
        devkit,
        "seg11valid",
        sbd_root=sbd / "train.txt",
        voc2011_val=devkit / "VOC2011" / "ImageSets" / "Segmentation" / "val.txt",
    )
    assert by_file.ids == ["d", "a", "c"]
    assert open_dataset("voc", devkit, "seg11valid", sbd_root=sbd.parent).ids == ["d", "a", "c"]


def test_seg11valid_names_the_missing_file(devkit: Path, tmp_path: Path) -> None:
    sbd = tmp_path / "sbd"
    write_list(sbd / "train.txt", ["b"])
    with pytest.raises(DatasetError, match=r"VOC2011 segmentation val list .*VOC2011/ImageSets/Segmentation/val\.txt"):
        open_dataset("voc", devkit, "seg11valid", sbd_root=sbd)
    write_list(devkit / "VOC2011" / "ImageSets" / "Segmentation" / "val.txt", ["a"])
    with pytest.raises(DatasetError, match="needs the SBD train list; pass sbd_root="):
        open_dataset("voc", devkit, "seg11valid")
    with pytest.raises(DatasetError, match=r"SBD train list .*elsewhere does not exist .*holding train\.txt"):
        open_dataset("voc", devkit, "seg11valid", sbd_root=tmp_path / "elsewhere")


# --- SBD ---------------------------------------------------------------------------------------


def write_sbd_item(sbd_dir: Path, item: str, segmentation: np.ndarray) -> None:
    """img/<id>.jpg and cls/<id>.mat with the GTcls struct of the SBD release."""
    (sbd_dir / "img").mkdir(parents=True, exist_ok=True)
    (sbd_dir / "cls").mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full(segmentation.shape + (3,), 60, np.uint8)).save(sbd_dir / "img" / f"{item}.jpg")
    boundaries = np.empty((21, 1), dtype=object)
    for index in range(21):
        boundaries[index, 0] = np.zeros(segmentation.shape, dtype=bool)
    gt = {"Segmentation": segmentation.astype(np.uint8), "Boundaries": boundaries,
          "CategoriesPresent": np.unique(segmentation).reshape(-1, 1).astype(np.uint8)}  # fmt: skip
    scipy.io.savemat(sbd_dir / "cls" / f"{item}.mat", {"GTcls": gt})


@pytest.fixture
def sbd(tmp_path: Path) -> Path:
    """benchmark_RELEASE/dataset with b, c, e (train) and d, f (val); each .mat holds a random 0..20 map."""
    sbd_dir = tmp_path / "benchmark_RELEASE" / "dataset"
    for number, item in enumerate("bcedf"):
        rng = np.random.default_rng(number)
        write_sbd_item(sbd_dir, item, rng.integers(0, 21, (5, 7)))
    write_list(sbd_dir / "train.txt", ["b", "c", "e"])
    write_list(sbd_dir / "val.txt", ["d", "f"])
    return sbd_dir


def test_sbd_mat_labels_read_back_exactly(sbd: Path) -> None:
    train = open_dataset("sbd", sbd, "train")
    assert train.ids == ["b", "c", "e"] and train.num_classes == 21
    for number, item in enumerate("bce"):
        image, mask = train[number]
        expected = np.random.default_rng("bcedf".index(item)).integers(0, 21, (5, 7))
        assert mask.dtype == torch.int64 and torch.equal(mask, torch.from_numpy(expected))
        assert image.shape == (3, 5, 7) and image.dtype == torch.uint8
    assert open_dataset("sbd", sbd.parent, "val").ids == ["d", "f"]  # root may be benchmark_RELEASE


def test_sbd_train_aug_union_without_voc_val(sbd: Path, devkit: Path) -> None:
    # VOC train = a, b; VOC val = c, d; SBD train = b, c, e; SBD val = d, f.
    dataset = open_dataset("sbd", sbd, "train_aug", voc_root=devkit)
    assert dataset.ids == ["a", "b", "e", "f"]  # (a, b + b, c, e + d, f) - (c, d)
    sources = dict(zip(dataset.ids, dataset.mask_paths, strict=True))
    assert sources["a"].endswith("SegmentationClass/a.png") and sources["b"].endswith("SegmentationClass/b.png")
    assert sources["e"].endswith("cls/e.mat") and sources["f"].endswith("cls/f.mat")
    assert torch.equal(dataset[1][1], torch.from_numpy(label(2).astype(np.int64)))  # b: the VOC label
    with pytest.raises(DatasetError, match="train_aug .* needs the VOC lists; pass voc_root="):
        open_dataset("sbd", sbd, "train_aug")


def test_sbd_errors(sbd: Path, tmp_path: Path) -> None:
    (sbd / "cls" / "c.mat").write_bytes(b"MATLAB garbage")
    dataset = open_dataset("sbd", sbd, "train")
    with pytest.raises(DatasetError, match=r"mask .*cls/c\.mat cannot be read as a \.mat file"):
        dataset[1]
    scipy.io.savemat(sbd / "cls" / "e.mat", {"other": np.zeros((2, 2))})
    with pytest.raises(DatasetError, match=r"mask .*cls/e\.mat has no GTcls\.Segmentation.*\['other'\]"):
        dataset[2]
    (sbd / "cls" / "b.mat").unlink()
    with pytest.raises(DatasetError, match=r"mask .*cls/b\.mat for image .*img/b\.jpg does not exist"):
        open_dataset("sbd", sbd, "train")
    with pytest.raises(DatasetError, match=r"SBD split file .*dataset/test\.txt does not exist"):
        open_dataset("sbd", sbd, "test")
    with pytest.raises(DatasetError, match="expected img/ and cls/"):
        open_dataset("sbd", tmp_path, "train")
