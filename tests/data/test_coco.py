"""COCO: instance annotations (polygons, RLE, crowds, overlaps) to semantic masks, against pycocotools.

The expected masks are composed in the test from pycocotools' own ``COCO(file).annToMask`` of every
annotation, with the documented rule (torchvision's): inside exactly one kept annotation -> its
class, inside none -> 0, inside two or more -> 255; crowds count like any annotation.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from command_runs import run_data_command
from PIL import Image

from fcnseg.data import VOC_CLASSES, DatasetError, open_dataset

pycocotools = pytest.importorskip("pycocotools")
from pycocotools import mask as mask_utils  # noqa: E402
from pycocotools.coco import COCO  # noqa: E402

HEIGHT, WIDTH = 10, 12
CATEGORIES = [
    {"id": 1, "name": "person"},
    {"id": 3, "name": "car"},
    {"id": 17, "name": "cat"},
    {"id": 18, "name": "dog"},
    {"id": 90, "name": "toothbrush"},
]
# VOC ids of the COCO categories above, from torchvision's CAT_LIST written out by hand: person 15, car 7,
# cat 8, dog 12; toothbrush is no VOC class.
VOC_ID = {1: 15, 3: 7, 17: 8, 18: 12}
ALL_ID = {1: 1, 3: 2, 17: 3, 18: 4, 90: 5}  # the file's categories in id order


def crowd_rle() -> dict:
    """Uncompressed RLE covering rows 6..8 of columns 0..2: column-major runs alternating background and
    object, so a column's last background rows join the next column's first ones (1 + 6)."""
    return {"counts": [6, 3, 1 + 6, 3, 1 + 6, 3, 1 + (WIDTH - 3) * HEIGHT], "size": [HEIGHT, WIDTH]}


def compressed_rle() -> dict:
    inside = np.zeros((HEIGHT, WIDTH), np.uint8, order="F")
    inside[0:3, 8:12] = 1
    rle = mask_utils.encode(inside)
    return {"counts": rle["counts"].decode("ascii"), "size": rle["size"]}


def annotations() -> list[dict]:
    square = lambda x0, y0, x1, y1: [[x0, y0, x1, y0, x1, y1, x0, y1]]  # noqa: E731
    return [
        {"id": 10, "image_id": 1, "category_id": 1, "iscrowd": 0, "area": 1500, "segmentation": square(1, 1, 6, 5)},
        {"id": 11, "image_id": 1, "category_id": 18, "iscrowd": 0, "area": 900, "segmentation": square(4, 3, 9, 8)},
        {"id": 12, "image_id": 1, "category_id": 3, "iscrowd": 1, "area": 9, "segmentation": crowd_rle()},
        {"id": 13, "image_id": 1, "category_id": 17, "iscrowd": 0, "area": 12, "segmentation": compressed_rle()},
        {"id": 14, "image_id": 1, "category_id": 90, "iscrowd": 0, "area": 20, "segmentation": square(0, 4, 1, 9)},
        {"id": 20, "image_id": 2, "category_id": 90, "iscrowd": 0, "area": 5000, "segmentation": square(0, 0, 5, 5)},
        {"id": 30, "image_id": 3, "category_id": 18, "iscrowd": 0, "area": 800, "segmentation": square(2, 2, 5, 5)},
    ]


def write_coco(root: Path, split: str) -> Path:
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    (root / split).mkdir(exist_ok=True)
    images = [{"id": i, "file_name": f"{i:012d}.jpg", "height": HEIGHT, "width": WIDTH} for i in (1, 2, 3)]
    for image in images:
        Image.fromarray(np.full((HEIGHT, WIDTH, 3), 50, np.uint8)).save(
            root / split / image["file_name"], format="JPEG"
        )
    path = root / "annotations" / f"instances_{split}.json"
    path.write_text(json.dumps({"images": images, "annotations": annotations(), "categories": CATEGORIES}))
    return path


def composed(path: Path, image_id: int, class_of: dict[int, int]) -> np.ndarray:
    """The documented rule applied to pycocotools' annToMask of each kept annotation."""
    coco = COCO(str(path))
    kept = [a for a in coco.loadAnns(coco.getAnnIds(imgIds=image_id, iscrowd=None)) if a["category_id"] in class_of]
    masks = np.stack([coco.annToMask(a) for a in kept])
    classes = np.array([class_of[a["category_id"]] for a in kept])
    label = (masks * classes[:, None, None]).max(0)
    label[masks.sum(0) > 1] = 255
    return label


@pytest.fixture
def coco_root(tmp_path: Path) -> Path:
    write_coco(tmp_path, "train2017")
    write_coco(tmp_path, "val2017")
    return tmp_path


@pytest.mark.parametrize("categories, class_of", [("voc", VOC_ID), ("all", ALL_ID)])
def test_masks_equal_the_composition_of_pycocotools_masks(coco_root, categories, class_of):
    dataset = open_dataset("coco", coco_root, "val2017", categories=categories)
    expected = composed(coco_root / "annotations" / "instances_val2017.json", 1, class_of)
    image, mask = dataset[0]
    assert dataset.ids[0] == "1" and image.shape == (3, HEIGHT, WIDTH)
    assert np.array_equal(mask.numpy(), expected)
    # The cases are really there: an overlap of two classes, the crowd alone, the compressed RLE, background.
    assert mask[4, 5] == 255 and mask[7, 2] == class_of[3] and mask[1, 10] == class_of[17] and mask[9, 11] == 0
    # The toothbrush is left out of the VOC mask (so its overlap with the crowd is the crowd's), not of the 80.
    assert mask[7, 0] == (class_of[3] if categories == "voc" else 255)


def test_class_lists_are_vocs_or_the_files_categories_with_background(coco_root):
    assert open_dataset("coco", coco_root, "val2017", categories="voc").classes == list(VOC_CLASSES)
    assert open_dataset("coco", coco_root, "val2017").classes == [
        "background",
        "person",
        "car",
        "cat",
        "dog",
        "toothbrush",
    ]


def test_images_without_enough_kept_annotation_are_skipped_in_train_or_by_option(coco_root):
    # Image 2 has only a toothbrush (no VOC class), image 3 a dog of 800 px (torchvision keeps > 1000 px).
    assert open_dataset("coco", coco_root, "train2017", categories="voc").ids == ["1"]
    assert open_dataset("coco", coco_root, "train2017", categories="all").ids == ["1", "2"]
    assert open_dataset("coco", coco_root, "val2017", categories="voc").ids == ["1", "2", "3"]
    assert open_dataset("coco", coco_root, "val2017", categories="voc", keep_empty=False).ids == ["1"]
    kept = open_dataset("coco", coco_root, "train2017", categories="voc", keep_empty=True)
    assert kept.ids == ["1", "2", "3"] and (kept[1][1] == 0).all()


def test_missing_and_malformed_files_are_named(coco_root):
    with pytest.raises(DatasetError, match=r"instances_test2017\.json does not exist"):
        open_dataset("coco", coco_root, "test2017")
    (coco_root / "val2017" / "000000000003.jpg").unlink()
    with pytest.raises(DatasetError, match=r"image .*val2017/000000000003\.jpg for id '3' does not exist"):
        open_dataset("coco", coco_root, "val2017")
    path = coco_root / "annotations" / "instances_train2017.json"
    path.write_text('{"images": [')
    with pytest.raises(DatasetError, match=r"instances_train2017\.json cannot be read as JSON"):
        open_dataset("coco", coco_root, "train2017")
    content = {"images": [{"id": 1, "file_name": "a.jpg", "height": 2}], "annotations": [], "categories": []}
    path.write_text(json.dumps(content))
    with pytest.raises(DatasetError, match=r"instances_train2017\.json: image 1 has no 'width'"):
        open_dataset("coco", coco_root, "train2017")


def test_an_undecodable_segmentation_names_the_item(coco_root):
    path = coco_root / "annotations" / "instances_val2017.json"
    content = json.loads(path.read_text())
    content["annotations"][0]["segmentation"] = {"counts": [1, 2], "size": [3, 3]}  # an RLE of another size
    path.write_text(json.dumps(content))
    with pytest.raises(DatasetError, match=r"item '1' .*instances_val2017\.json.*3x3 but the image is 12x10"):
        open_dataset("coco", coco_root, "val2017")[0]


def test_without_pycocotools_the_error_names_the_extra(coco_root, monkeypatch):
    monkeypatch.setitem(sys.modules, "pycocotools.coco", None)  # import fails as if not installed
    with pytest.raises(DatasetError, match=r'pip install "fcnseg\[coco\]"'):
        open_dataset("coco", coco_root, "val2017")


def test_fcnseg_data_reads_it(coco_root, capsys):
    assert (
        run_data_command(
            [
                "--data",
                "coco",
                "--root",
                str(coco_root),
                "--split",
                "val2017",
                "--json",
                "--data-option",
                "categories=voc",
                "--val-split",
                "none",
            ]
        )
        == 0
    )
    report = json.loads(capsys.readouterr().out)
    assert report["items"] == 3 and report["classes"][15]["class"] == "person" and report["classes"][15]["pixels"] > 0
