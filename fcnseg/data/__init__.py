"""Datasets, paired transforms, batching and class statistics for segmentation.

``open_dataset(kind, root, split, **options)`` opens any of the kinds in :data:`DATASET_KINDS`; every dataset yields
``(image uint8 (3, H, W) RGB, mask int64 (H, W))`` and exposes ``classes``, ``palette``, ``ignore_index`` (and
``split_info``: how the items were chosen). :func:`diagnose` checks a dataset for what makes training silently wrong
(0/255 masks, colour or JPEG masks, missing classes, ...).
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable
from typing import Any

from .base import InMemoryDataset, SegmentationDataset, Transform
from .coco import COCODataset
from .collate import PadCollate
from .colours import ColourTable, read_colour_table
from .doctor import Finding, diagnose
from .errors import ColourMaskError, DatasetError, ImageTooLargeError, LossyMaskError
from .folder import FolderDataset, auto_split
from .hha import hha_from_depth
from .nyud import NYUD_CLASSES, NYUDDataset
from .paired import PairedFileDataset
from .palette import default_palette, voc_palette
from .pascal_context import PascalContextDataset
from .readers import read_image_file, read_mask_file
from .repair import write_fixed_copy
from .sbd import SBDDataset
from .siftflow import SIFTFlowDataset
from .statistics import ClassStatistics, class_pixel_counts, class_statistics, median_frequency_weights
from .synthetic import SHAPE_CLASSES, SyntheticShapes
from .transforms import EvalTransform, TrainTransform
from .voc import VOC_CLASSES, VOCDataset

#: Dataset kinds and their classes; every class takes ``(root, split, **options)``
#: except synthetic, which takes ``(split, **options)`` and no root.
_KINDS: dict[str, Callable[..., SegmentationDataset]] = {
    "voc": VOCDataset,
    "sbd": SBDDataset,
    "folder": FolderDataset,
    "synthetic": SyntheticShapes,
    "coco": COCODataset,
    "pascal_context": PascalContextDataset,
    "siftflow": SIFTFlowDataset,
    "nyud": NYUDDataset,
}


def _check_options(kind: str, options: dict[str, Any]) -> None:
    accepted = [
        name
        for name, parameter in inspect.signature(_KINDS[kind]).parameters.items()
        if parameter.kind is inspect.Parameter.KEYWORD_ONLY
    ]
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise DatasetError(f"unknown option(s) {unknown} for dataset kind {kind!r}; it accepts {sorted(accepted)}")


DATASET_KINDS = tuple(_KINDS)

#: The split name that means "no split" (``--val-split none``: train without validation); never a file name.
NO_SPLIT = "none"


def open_dataset(
    kind: str, root: str | os.PathLike[str] | None, split: str, *, transform: Transform | None = None, **options: Any
) -> SegmentationDataset:
    """Open a dataset of ``kind`` at ``root`` for ``split``.

    Kinds and their options (all take ``ignore_index`` and ``skip_bad``):

    - "voc": :class:`VOCDataset` (``year``, ``sbd_root`` and ``voc2011_val`` for seg11valid)
    - "sbd": :class:`SBDDataset` (``voc_root`` for train_aug)
    - "folder": :class:`FolderDataset` (``classes``, ``num_classes``, ``palette``, ``images_dir``,
      ``masks_dir``, ``binary``, ``colors``, ``val_fraction``, ``split_seed``; ``fcnseg data --help``)
    - "synthetic": :class:`SyntheticShapes` (root None; ``num_images``, ``size``, ``seed``,
      ``num_classes``/``classes``, ...)
    - "coco": :class:`COCODataset` (``categories`` all/voc, ``keep_empty``; needs pycocotools)
    - "pascal_context": :class:`PascalContextDataset` (``voc_root``: the VOC2010 images)
    - "siftflow": :class:`SIFTFlowDataset` (``labels`` semantic/geometric/both: masks (2, H, W))
    - "nyud": :class:`NYUDDataset` (``modality`` color/hha/color_hha, ``hha_dir``, ``intrinsics``)

    Every kind also takes ``resize=[H, W]``: items resized (images Lanczos, masks nearest).

    Raises :class:`DatasetError` for an unknown kind, for the split :data:`NO_SPLIT` (the caller decides what "no split"
    means; no ``none.txt`` is looked for) or anything wrong with the files.
    """
    if split is not None and str(split) == NO_SPLIT:
        raise DatasetError(
            f"split {NO_SPLIT!r} means no split (e.g. --val-split none: no validation); there is nothing to open"
        )
    if kind not in _KINDS:
        raise DatasetError(f"unknown dataset kind {kind!r}; expected one of {sorted(_KINDS)}")
    resize = options.pop("resize", None)
    if resize is not None and not (
        isinstance(resize, (list, tuple)) and len(resize) == 2 and all(isinstance(v, int) and v > 0 for v in resize)
    ):
        raise DatasetError(f"resize must be [height, width] in pixels, got {resize!r}")
    _check_options(kind, options)
    dataset: SegmentationDataset
    if kind == "synthetic":
        if root is not None:
            raise DatasetError(f"the synthetic dataset is generated, it takes no root folder (got {root!r})")
        dataset = SyntheticShapes(split, transform=transform, **options)
    elif root is None:
        raise DatasetError(f"dataset kind {kind!r} needs a root folder")
    else:
        dataset = _KINDS[kind](root, split, transform=transform, **options)
    dataset.resize = None if resize is None else (int(resize[0]), int(resize[1]))
    return dataset


__all__ = [
    "DATASET_KINDS",
    "NO_SPLIT",
    "COCODataset",
    "ClassStatistics",
    "ColourMaskError",
    "ColourTable",
    "DatasetError",
    "EvalTransform",
    "Finding",
    "FolderDataset",
    "ImageTooLargeError",
    "InMemoryDataset",
    "LossyMaskError",
    "NYUDDataset",
    "NYUD_CLASSES",
    "PadCollate",
    "PairedFileDataset",
    "PascalContextDataset",
    "SBDDataset",
    "SHAPE_CLASSES",
    "SIFTFlowDataset",
    "SegmentationDataset",
    "SyntheticShapes",
    "TrainTransform",
    "VOCDataset",
    "VOC_CLASSES",
    "auto_split",
    "class_pixel_counts",
    "class_statistics",
    "default_palette",
    "diagnose",
    "hha_from_depth",
    "median_frequency_weights",
    "open_dataset",
    "read_colour_table",
    "read_image_file",
    "read_mask_file",
    "voc_palette",
    "write_fixed_copy",
]
