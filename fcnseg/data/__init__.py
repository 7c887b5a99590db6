"""Datasets, paired transforms, batching and class statistics for segmentation.

``open_dataset(kind, root, split, **options)`` opens any of the kinds in
:data:`DATASET_KINDS`; every dataset yields ``(image uint8 (3, H, W) RGB,
mask int64 (H, W))`` and exposes ``classes``, ``palette``, ``ignore_index``.
"""

from __future__ import annotations

import os
from typing import Any, Callable

from .base import InMemoryDataset, SegmentationDataset, Transform
from .collate import PadCollate
from .errors import DatasetError
from .folder import FolderDataset
from .paired import PairedFileDataset
from .palette import default_palette, voc_palette
from .readers import read_image_file, read_mask_file
from .sbd import SBDDataset
from .statistics import ClassStatistics, class_pixel_counts, class_statistics, median_frequency_weights
from .synthetic import SHAPE_CLASSES, SyntheticShapes
from .transforms import EvalTransform, TrainTransform
from .voc import VOC_CLASSES, VOCDataset


def _open_synthetic(root: str | os.PathLike[str] | None, split: str, **options: Any) -> SegmentationDataset:
    if root is not None:
        raise DatasetError(f"the synthetic dataset is generated, it takes no root folder (got {root!r})")
    return SyntheticShapes(split, **options)


def _needs_root(kind: str, cls: Callable[..., SegmentationDataset]) -> Callable[..., SegmentationDataset]:
    def opener(root: str | os.PathLike[str] | None, split: str, **options: Any) -> SegmentationDataset:
        if root is None:
            raise DatasetError(f"dataset kind {kind!r} needs a root folder")
        return cls(root, split, **options)

    return opener


_OPENERS: dict[str, Callable[..., SegmentationDataset]] = {
    "voc": _needs_root("voc", VOCDataset),
    "sbd": _needs_root("sbd", SBDDataset),
    "folder": _needs_root("folder", FolderDataset),
    "synthetic": _open_synthetic,
}

DATASET_KINDS = tuple(_OPENERS)


def open_dataset(
    kind: str,
    root: str | os.PathLike[str] | None,
    split: str,
    *,
    transform: Transform | None = None,
    **options: Any,
) -> SegmentationDataset:
    """Open a dataset of ``kind`` at ``root`` for ``split``.

    Kinds and their options (all take ``ignore_index`` and ``skip_bad``):

    - "voc": :class:`VOCDataset` (``year``, ``sbd_root`` and ``voc2011_val`` for seg11valid)
    - "sbd": :class:`SBDDataset` (``voc_root`` for train_aug)
    - "folder": :class:`FolderDataset` (``classes``, ``num_classes``, ``palette``, ...)
    - "synthetic": :class:`SyntheticShapes` (root None; ``num_images``, ``size``, ``seed``,
      ``num_classes``/``classes``, ...)

    Raises :class:`DatasetError` for an unknown kind or anything wrong with the files.
    """
    opener = _OPENERS.get(kind)
    if opener is None:
        raise DatasetError(f"unknown dataset kind {kind!r}; expected one of {sorted(_OPENERS)}")
    return opener(root, split, transform=transform, **options)


__all__ = [
    "DATASET_KINDS",
    "ClassStatistics",
    "DatasetError",
    "EvalTransform",
    "FolderDataset",
    "InMemoryDataset",
    "PadCollate",
    "PairedFileDataset",
    "SBDDataset",
    "SHAPE_CLASSES",
    "SegmentationDataset",
    "SyntheticShapes",
    "TrainTransform",
    "VOCDataset",
    "VOC_CLASSES",
    "class_pixel_counts",
    "class_statistics",
    "default_palette",
    "median_frequency_weights",
    "open_dataset",
    "read_image_file",
    "read_mask_file",
    "voc_palette",
]
