"""The folder dataset kind, every bad-input error, skip_bad, and the real CamVid folder."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fcnseg.data import DatasetError, FolderDataset, open_dataset

CLASSES = ["sky", "road", "car"]


def write_pair(root: Path, stem: str, mask: np.ndarray, *, image_size: tuple[int, int] | None = None) -> np.ndarray:
    """Write images/<stem>.png (random RGB) and masks/<stem>.png (mode L); return the image array."""
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "masks").mkdir(parents=True, exist_ok=True)
    height, width = image_size or mask.shape
    rng = np.random.default_rng(abs(hash(stem)) % 2**32)
    image = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    Image.fromarray(image).save(root / "images" / f"{stem}.png")
    Image.fromarray(mask.astype(np.uint8), mode="L").save(root / "masks" / f"{stem}.png")
    return image


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """Three good pairs a, b, c; classes.txt; train.txt = a, c; val.txt = b."""
    for index, stem in enumerate("abc"):
        mask = np.full((6, 8), index, dtype=np.uint8)
        mask[0, 0] = 255
        write_pair(tmp_path, stem, mask)
    (tmp_path / "classes.txt").write_text("\n".join(CLASSES) + "\n")
    (tmp_path / "train.txt").write_text("a\nc\n")
    (tmp_path / "val.txt").write_text("b\n")
    return tmp_path


def test_reads_pairs_by_stem_with_split_lists(folder: Path) -> None:
    train = open_dataset("folder", folder, "train")
    assert train.ids == ["a", "c"] and train.stems == ["a", "c"]
    assert train.classes == CLASSES and train.num_classes == 3 and train.ignore_index == 255
    image, mask = train[1]
    expected_image = np.array(Image.open(folder / "images" / "c.png"))
    assert image.dtype == torch.uint8 and torch.equal(image, torch.from_numpy(expected_image).permute(2, 0, 1))
    assert mask.dtype == torch.int64 and mask[0, 0] == 255 and (mask.flatten()[1:] == 2).all()
    assert "c.png" in train.describe(1)
    assert len(open_dataset("folder", folder, "val")) == 1
    assert open_dataset("folder", folder, None).ids == ["a", "b", "c"]
    assert open_dataset("folder", folder, "all").ids == ["a", "b", "c"]
    listed = folder / "lists" / "mine.txt"
    listed.parent.mkdir()
    listed.write_text("# a comment\nb\n\nc\n")
    assert open_dataset("folder", folder, str(listed)).ids == ["b", "c"]


def test_jpeg_images_and_palette_masks_read_as_indices(tmp_path: Path) -> None:
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    Image.fromarray(np.full((5, 7, 3), 90, np.uint8)).save(tmp_path / "images" / "x.jpg", quality=95)
    indices = np.array([[0, 1, 2, 3, 255, 1, 0]] * 5, dtype=np.uint8)
    mask = Image.fromarray(indices, mode="P")
    # A palette unlike VOC's: index 3 is drawn black like index 0, so an RGB detour could not recover it.
    mask.putpalette([0, 0, 0, 10, 200, 30, 250, 250, 0, 0, 0, 0] + [7, 7, 7] * 252)
    mask.save(tmp_path / "masks" / "x.png")
    dataset = FolderDataset(tmp_path, None, num_classes=4)
    assert dataset.classes == ["class_0", "class_1", "class_2", "class_3"]
    image, read = dataset[0]
    assert image.shape == (3, 5, 7)
    assert torch.equal(read, torch.from_numpy(indices.astype(np.int64)))


def test_custom_ignore_value(folder: Path) -> None:
    write_pair(folder, "d", np.array([[0, 100], [1, 2]]))
    dataset = open_dataset("folder", folder, None, ignore_index=100)
    assert dataset.ignore_index == 100
    assert dataset[dataset.ids.index("d")][1].tolist() == [[0, 100], [1, 2]]
    with pytest.raises(
        DatasetError, match=r"masks/a.png\): mask has label 255 .*expected 0..2 or the ignore value 100"
    ):
        dataset[dataset.ids.index("a")]


# --- bad input: each a DatasetError naming the file and what was expected ----------------------


def test_missing_mask_is_an_error_when_opened(folder: Path) -> None:
    (folder / "masks" / "c.png").unlink()
    with pytest.raises(DatasetError, match=r"mask .*c\.png for image .*c\.png does not exist"):
        open_dataset("folder", folder, "train")


def test_missing_mask_with_skip_bad_drops_the_item(folder: Path, caplog: pytest.LogCaptureFixture) -> None:
    (folder / "masks" / "c.png").unlink()
    with caplog.at_level(logging.WARNING, logger="fcnseg.data"):
        dataset = open_dataset("folder", folder, "train", skip_bad=True)
    assert dataset.ids == ["a"]
    assert "c.png" in caplog.text


def test_size_mismatch_names_both_files(folder: Path) -> None:
    write_pair(folder, "d", np.zeros((6, 8)), image_size=(6, 9))
    dataset = open_dataset("folder", folder, None)
    with pytest.raises(DatasetError, match=r"images/d\.png.*masks/d\.png.*image is 9x6 \(WxH\) but mask is 8x6"):
        dataset[3]


def test_label_out_of_range_names_the_mask_and_the_label(folder: Path) -> None:
    mask = np.zeros((6, 8))
    mask[2, 5] = 3  # 3 classes: ids 0..2
    write_pair(folder, "d", mask)
    dataset = open_dataset("folder", folder, None)
    with pytest.raises(DatasetError, match=r"masks/d\.png\): mask has label 3 at \(row, col\) \(2, 5\).*expected 0..2"):
        dataset[3]
    with pytest.raises(DatasetError, match="label 3"):
        dataset.read_mask(3)


def test_truncated_image_is_an_error(folder: Path) -> None:
    write_pair(folder, "d", np.zeros((40, 40)))
    path = folder / "images" / "d.png"
    path.write_bytes(path.read_bytes()[:-200])
    dataset = open_dataset("folder", folder, None)
    with pytest.raises(DatasetError, match=r"image .*images/d\.png is truncated"):
        dataset[3]


def test_garbage_mask_is_an_error(folder: Path) -> None:
    (folder / "masks" / "b.png").write_bytes(b"not a png at all")
    dataset = open_dataset("folder", folder, "val")
    with pytest.raises(DatasetError, match=r"mask .*masks/b\.png cannot be decoded"):
        dataset[0]


def test_rgb_mask_is_refused(folder: Path) -> None:
    Image.fromarray(np.zeros((6, 8, 3), np.uint8)).save(folder / "masks" / "b.png")
    dataset = open_dataset("folder", folder, "val")
    with pytest.raises(DatasetError, match=r"mask .*b\.png is a RGB image; expected one channel of class ids"):
        dataset[0]


def test_split_file_problems(folder: Path) -> None:
    with pytest.raises(DatasetError, match=r"split file .*test\.txt does not exist"):
        open_dataset("folder", folder, "test")
    (folder / "test.txt").write_text("\n\n")
    with pytest.raises(DatasetError, match=r"split file .*test\.txt is empty"):
        open_dataset("folder", folder, "test")
    (folder / "test.txt").write_text("a\nzzz\n")
    with pytest.raises(DatasetError, match=r"stem\(s\) with no image .*zzz"):
        open_dataset("folder", folder, "test")
    with pytest.raises(DatasetError, match=r"nope\.txt does not exist"):
        open_dataset("folder", folder, str(folder / "nope.txt"))


def test_folder_problems(tmp_path: Path, folder: Path) -> None:
    with pytest.raises(DatasetError, match="does not exist"):
        open_dataset("folder", tmp_path / "absent", None)
    with pytest.raises(DatasetError, match="needs a root folder"):
        open_dataset("folder", None, None)
    empty = tmp_path / "empty"
    (empty / "images").mkdir(parents=True)
    (empty / "masks").mkdir()
    with pytest.raises(DatasetError, match="holds no images"):
        FolderDataset(empty, None, num_classes=2)
    with pytest.raises(DatasetError, match=r"no classes.txt; expected one .*num_classes=N"):
        FolderDataset(empty, None)
    Image.fromarray(np.zeros((2, 2, 3), np.uint8)).save(folder / "images" / "a.jpg")
    with pytest.raises(DatasetError, match="two image files share the stem 'a'"):
        open_dataset("folder", folder, None)


def test_unknown_kind_and_option(folder: Path) -> None:
    with pytest.raises(DatasetError, match="unknown dataset kind 'ade20k'"):
        open_dataset("ade20k", "/x", "train")
    with pytest.raises(
        DatasetError, match=r"unknown option\(s\) \['colour'\] for dataset kind 'folder'.*'num_classes'"
    ):
        open_dataset("folder", folder, "train", colour=3)


def test_skip_bad_substitutes_the_next_good_item(folder: Path, caplog: pytest.LogCaptureFixture) -> None:
    mask = np.full((6, 8), 9)
    write_pair(folder, "aa", mask)  # sorts between a and b
    dataset = open_dataset("folder", folder, None, skip_bad=True)
    assert dataset.ids == ["a", "aa", "b", "c"]
    with caplog.at_level(logging.WARNING, logger="fcnseg.data"):
        image, read = dataset[1]
    assert "aa.png" in caplog.text and "label 9" in caplog.text
    assert torch.equal(read, dataset[2][1])  # b stands in for aa
    assert [index for index, _ in dataset.find_bad_items()] == [1]


def test_skip_bad_with_nothing_good_raises(folder: Path) -> None:
    for stem in "abc":
        write_pair(folder, stem, np.full((6, 8), 7))
    dataset = open_dataset("folder", folder, None, skip_bad=True)
    with pytest.raises(DatasetError, match="no readable item"):
        dataset[0]


# --- real data -------------------------------------------------------------------------------


def test_camvid_folder(camvid_root: Path) -> None:
    train = open_dataset("folder", camvid_root, "train")
    val = open_dataset("folder", camvid_root, "val")
    assert (len(train), len(val)) == (367, 101)
    assert train.num_classes == 11 and train.classes[0] == "sky" and train.classes[10] == "bicyclist"
    labels: set[int] = set()
    for dataset in (train, val):
        for index in range(len(dataset)):
            labels |= set(np.unique(dataset.read_mask(index).numpy()).tolist())  # read_mask checks every label
    assert labels == set(range(11)) | {255}
    image, mask = train[0]
    assert image.shape == (3, 360, 480) and image.dtype == torch.uint8 and mask.shape == (360, 480)


# --- automatic split, "none", the layout options -----------------------------------------------


def test_automatic_split_is_seeded_disjoint_and_complete(tmp_path: Path) -> None:
    import hashlib

    stems = [f"img{index:02d}" for index in range(20)]
    for stem in stems:
        write_pair(tmp_path, stem, np.zeros((2, 2)))
    train = open_dataset("folder", tmp_path, "train", num_classes=1)
    val = open_dataset("folder", tmp_path, "val", num_classes=1)
    assert (len(train), len(val)) == (16, 4) and sorted(train.ids + val.ids) == stems
    # the documented rule, written out: val = the 4 stems ranked first by sha256("0\0<stem>")
    ranked = sorted(stems, key=lambda s: hashlib.sha256(f"0\0{s}".encode()).digest())
    assert val.ids == sorted(ranked[:4])
    assert val.split_info == {
        "split": "val",
        "source": "automatic",
        "val_fraction": 0.2,
        "seed": 0,
        "items": 4,
        "of": 20,
    }
    assert open_dataset("folder", tmp_path, "val", num_classes=1).ids == val.ids  # deterministic
    other = open_dataset("folder", tmp_path, "val", num_classes=1, split_seed=1, val_fraction=0.5)
    assert other.ids == sorted(sorted(stems, key=lambda s: hashlib.sha256(f"1\0{s}".encode()).digest())[:10])
    with pytest.raises(DatasetError, match=r"val_fraction=1.5; expected a number between 0 and 1"):
        open_dataset("folder", tmp_path, "val", num_classes=1, val_fraction=1.5)
    (tmp_path / "train.txt").write_text("img00\n")  # with a train.txt, val.txt is needed too
    with pytest.raises(
        DatasetError, match=r"split file .*val\.txt does not exist.*split automatically only when neither"
    ):
        open_dataset("folder", tmp_path, "val", num_classes=1)


def test_split_none_means_no_split_and_reads_no_file(folder: Path) -> None:
    (folder / "none.txt").write_text("a\n")
    with pytest.raises(DatasetError, match="split 'none' means no split"):
        open_dataset("folder", folder, "none")


def test_images_dir_and_masks_dir_options(tmp_path: Path) -> None:
    (tmp_path / "rgb").mkdir()
    (tmp_path / "labels").mkdir()
    Image.fromarray(np.zeros((3, 5, 3), np.uint8)).save(tmp_path / "rgb" / "a.png")
    Image.fromarray(np.ones((3, 5), np.uint8)).save(tmp_path / "labels" / "a.png")
    dataset = open_dataset("folder", tmp_path, None, num_classes=2, images_dir="rgb", masks_dir="labels")
    assert dataset[0][1].tolist() == [[1] * 5] * 3
    with pytest.raises(DatasetError, match=r"image folder .*images does not exist"):
        open_dataset("folder", tmp_path, None, num_classes=2)
