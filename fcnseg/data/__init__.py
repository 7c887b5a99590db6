"""Datasets, paired transforms, batching and class statistics for segmentation.

``open_dataset(kind, root, split, **options)`` opens any of the kinds in
:data:`DATASET_KINDS`; every dataset yields ``(image uint8 (3, H, W) RGB,
mask int64 (H, W))`` and exposes ``classes``, ``palette``, ``ignore_index``.
"""

from __future__ import annotations

import inspect
import os
from typing import Any

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


#: Dataset kinds and their classes; every class takes ``(root, split, **options)``
#: except synthetic, which takes ``(split, **options)`` and no root.
_KINDS: dict[str, type[SegmentationDataset]] = {
    "voc": VOCDataset,
    "sbd": SBDDataset,
    "folder": FolderDataset,
    "synthetic": SyntheticShapes,
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

    Every kind also takes ``resize=[H, W]``: items resized (images Lanczos, masks nearest).

    Raises :class:`DatasetError` for an unknown kind or anything wrong with the files.
    """
    if kind not in _KINDS:
        raise DatasetError(f"unknown dataset kind {kind!r}; expected one of {sorted(_KINDS)}")
    resize = options.pop("resize", None)
    if resize is not None and not (isinstance(resize, (list, tuple)) and len(resize) == 2
                                   and all(isinstance(v, int) and v > 0 for v in resize)):
        raise DatasetError(f"resize must be [height, width] in pixels, got {resize!r}")
    _check_options(kind, options)
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
