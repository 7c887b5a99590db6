"""COCO instance annotations as semantic masks (pycocotools): all 80 categories, or the 20 VOC ones.

Layout (``root`` is the COCO folder)::

    annotations/instances_<split>.json      e.g. instances_val2017.json
    <split>/<file_name>                     e.g. val2017/000000000139.jpg

``split`` is the name of both (``train2017``, ``val2017``, ``val2014``, ...). Reading the
annotations needs pycocotools: ``pip install "fcnseg[coco]"``.

``categories``:

- ``"all"``: every category of the file in id order, as ids 1..80 (contiguous), background 0;
  names from the file.
- ``"voc"``: the 20 PASCAL VOC categories as torchvision's COCO-to-VOC transfer does
  (``CAT_LIST`` of torchvision's references/segmentation/coco_utils.py): COCO category ids
  5, 2, 16, 9, 44, 6, 3, 17, 62, 21, 67, 18, 19, 4, 1, 64, 20, 63, 7, 72 become VOC ids
  1..20 (aeroplane ... tvmonitor); every other category is left out (its pixels are background).

Masks follow torchvision's rule: each kept annotation is decoded by pycocotools'
``COCO.annToMask`` (polygons, uncompressed or compressed RLE); a pixel inside exactly one kept
annotation gets its class, inside none background (0), inside two or more the ignore value
(255), whatever their classes. Crowd annotations (``iscrowd`` 1) count like any other
annotation, as in torchvision: a crowd region is labelled with its category where it overlaps
no other annotation.

Images: ``keep_empty=None`` (default) is torchvision's choice: in a ``train*`` split an image
whose kept annotations cover an ``area`` of 1,000 pixels or less in all is skipped, other
splits keep every image; ``keep_empty=True`` keeps every image, ``False`` skips in any split.
Items are in image-id order.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .base import Transform
from .errors import DatasetError
from .paired import PairedFileDataset
from .palette import default_palette, voc_palette
from .voc import VOC_CLASSES

#: COCO category id of each VOC class 1..20 (torchvision's CAT_LIST without its leading 0).
VOC_CATEGORY_IDS = (5, 2, 16, 9, 44, 6, 3, 17, 62, 21, 67, 18, 19, 4, 1, 64, 20, 63, 7, 72)
CATEGORY_SETS = ("all", "voc")
#: torchvision skips training images whose kept annotations cover this many pixels or fewer.
MIN_TRAIN_AREA = 1000

PathLike = str | os.PathLike[str]


def _pycocotools() -> Any:
    try:
        from pycocotools.coco import COCO
    except ImportError:
        raise DatasetError(
            "the coco dataset reads its annotations with pycocotools, which is not installed; "
            'install the extra: pip install "fcnseg[coco]"'
        ) from None
    return COCO


def _read_annotation_file(path: Path) -> dict[str, list]:
    if not path.is_file():
        raise DatasetError(
            f"COCO annotation file {path} does not exist; expected <root>/annotations/instances_<split>.json"
        )
    try:
        with open(path, encoding="utf-8") as handle:
            content = json.load(handle)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise DatasetError(f"COCO annotation file {path} cannot be read as JSON ({error})") from None
    missing = [
        key
        for key in ("images", "annotations", "categories")
        if not isinstance(content, dict) or not isinstance(content.get(key), list)
    ]
    if missing:
        raise DatasetError(f"COCO annotation file {path} has no list {missing}; expected an instances_*.json file")
    return content


def _field(entry: Any, key: str, path: Path, what: str) -> Any:
    if not isinstance(entry, dict) or key not in entry:
        raise DatasetError(f"COCO annotation file {path}: {what} has no {key!r}; expected COCO instance annotations")
    return entry[key]


class COCODataset(PairedFileDataset):
    """COCO instances as semantic masks (see the module docstring)."""

    def __init__(
        self,
        root: PathLike,
        split: str = "train2017",
        *,
        categories: str = "all",
        keep_empty: bool | None = None,
        ignore_index: int = 255,
        transform: Transform | None = None,
        skip_bad: bool = False,
    ) -> None:
        _pycocotools()  # fail now, not at the first item
        root = Path(root)
        if categories not in CATEGORY_SETS:
            raise DatasetError(f"categories={categories!r}; expected one of {', '.join(CATEGORY_SETS)}")
        self.root, self.categories = str(root), categories
        annotation_file = root / "annotations" / f"instances_{split}.json"
        content = _read_annotation_file(annotation_file)
        coco_ids = sorted(int(_field(c, "id", annotation_file, "a category")) for c in content["categories"])
        if categories == "voc":
            class_of = {coco_id: index for index, coco_id in enumerate(VOC_CATEGORY_IDS, start=1)}
            classes, palette = list(VOC_CLASSES), voc_palette(len(VOC_CLASSES))
        else:
            names = {
                int(c["id"]): str(_field(c, "name", annotation_file, f"category {c['id']}"))
                for c in content["categories"]
            }
            class_of = {coco_id: index for index, coco_id in enumerate(coco_ids, start=1)}
            classes = ["background"] + [names[coco_id] for coco_id in coco_ids]
            palette = default_palette(len(classes))
        images = {}
        for image in content["images"]:
            key = str(_field(image, "id", annotation_file, "an image"))
            images[key] = (
                str(_field(image, "file_name", annotation_file, f"image {key}")),
                int(_field(image, "height", annotation_file, f"image {key}")),
                int(_field(image, "width", annotation_file, f"image {key}")),
            )
        #: image id -> [(segmentation, class id, area)] of its kept annotations, in file order
        self.annotations: dict[str, list[tuple[Any, int, float]]] = {key: [] for key in images}
        for number, annotation in enumerate(content["annotations"]):
            what = f"annotation {annotation.get('id', number) if isinstance(annotation, dict) else number}"
            key = str(_field(annotation, "image_id", annotation_file, what))
            class_id = class_of.get(int(_field(annotation, "category_id", annotation_file, what)))
            if class_id is None:
                continue
            if key not in images:
                raise DatasetError(
                    f"COCO annotation file {annotation_file}: {what} refers to image {key}, which is not in its images"
                )
            self.annotations[key].append(
                (
                    _field(annotation, "segmentation", annotation_file, what),
                    class_id,
                    float(annotation.get("area", 0.0)),
                )
            )
        if keep_empty is None:
            keep_empty = not split.startswith("train")
        ids = sorted(
            (key for key in images if keep_empty or sum(area for _, _, area in self.annotations[key]) > MIN_TRAIN_AREA),
            key=_image_order,
        )
        self.sizes = {key: images[key][1:] for key in ids}
        self.split_info = {
            "split": split,
            "source": str(annotation_file),
            "categories": categories,
            "keep_empty": keep_empty,
        }
        super().__init__(
            name=f"COCO {root} split {split}",
            ids=ids,
            image_paths=[root / split / images[key][0] for key in ids],
            mask_paths=[annotation_file] * len(ids),
            classes=classes,
            palette=palette,
            ignore_index=ignore_index,
            transform=transform,
            skip_bad=skip_bad,
        )

    def load_mask(self, index: int) -> torch.Tensor:
        key = self.ids[index]
        height, width = self.sizes[key]
        coco = _pycocotools()()
        coco.imgs = {key: {"height": height, "width": width}}  # all annToMask looks up
        label = np.zeros((height, width), dtype=np.int64)
        covered = np.zeros((height, width), dtype=np.int64)
        for segmentation, class_id, _ in self.annotations[key]:
            try:
                inside = coco.annToMask({"image_id": key, "segmentation": segmentation}).astype(bool)
            except Exception as error:  # pycocotools raises TypeError, ValueError, plain Exception
                raise DatasetError(
                    f"{self.describe(index)}: an annotation's segmentation cannot be decoded "
                    f"({type(error).__name__}: {error}); expected polygons or RLE"
                ) from None
            if inside.shape != label.shape:
                raise DatasetError(
                    f"{self.describe(index)}: an RLE segmentation is {inside.shape[1]}x{inside.shape[0]}"
                    f" but the image is {width}x{height} in the annotation file"
                )
            label[inside] = class_id
            covered += inside
        label[covered > 1] = self.ignore_index
        return torch.from_numpy(label)


def _image_order(key: str) -> tuple[int, int | str]:
    return (0, int(key)) if key.lstrip("-").isdigit() else (1, key)
