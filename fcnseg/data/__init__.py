"""Datasets, paired transforms, batching and class statistics for segmentation.

``open_dataset(kind, root, split, **options)`` opens any of the kinds in
:data:`DATASET_KINDS`; every dataset yields ``(image uint8 (3, H, W) RGB,
mask int64 (H, W))`` and exposes ``classes``, ``palette``, ``ignore_index``.
"""

from __future__ import annotations

import os
from typing import Any, Callable

from .base import SegmentationDataset, Transform
from .collate import PadCollate
from .errors import DatasetError
from .palette import default_palette, voc_palette
from .synthetic import SHAPE_CLASSES, SyntheticShapes
from .transforms import EvalTransform, TrainTransform


def _open_synthetic(root: str | os.PathLike[str] | None, split: str, **options: Any) -> SegmentationDataset:
    if root is not None:
        raise DatasetError(f"the synthetic dataset is generated, it takes no root folder (got {root!r})")
    return SyntheticShapes(split, **options)


_OPENERS: dict[str, Callable[..., SegmentationDataset]] = {
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

    ``options`` go to the kind's class (e.g. ``num_images``, ``size``, ``seed`` for
    "synthetic"; ``ignore_index``, ``skip_bad`` for all). Raises :class:`DatasetError`
    for an unknown kind or anything wrong with the files.
    """
    opener = _OPENERS.get(kind)
    if opener is None:
        raise DatasetError(f"unknown dataset kind {kind!r}; expected one of {sorted(_OPENERS)}")
    return opener(root, split, transform=transform, **options)


__all__ = [
    "DATASET_KINDS",
    "DatasetError",
    "EvalTransform",
    "PadCollate",
    "SHAPE_CLASSES",
    "SegmentationDataset",
    "SyntheticShapes",
    "TrainTransform",
    "default_palette",
    "open_dataset",
    "voc_palette",
]
