"""Class statistics over a dataset and median-frequency-balancing class weights.

FCN trains with an unweighted loss and is weak on rare classes; SegNet (Badrinarayanan et al.) weights the loss by
*median frequency balancing* (Eigen & Fergus, ICCV 2015)::

    freq_c   = (pixels of class c) / (pixels of all images in which c is present)
    weight_c = median over classes of freq / freq_c

"Pixels of an image" counts every pixel of it, ignore-labelled ones included (the literal definition). The median is
taken over the classes present in the dataset and is the usual median (the mean of the two middle values for an even
count). A class that never occurs gets weight 0 (it cannot be learned and must not blow up the loss).
"""

from __future__ import annotations

from collections.abc import Sized
from dataclasses import dataclass
from typing import cast

import numpy as np
import torch
from torch.utils.data import Dataset

from ..progress import Progress
from .base import SegmentationDataset, logger
from .errors import DatasetError


@dataclass
class ClassStatistics:
    """Per-class counts over a dataset (ignore-labelled pixels are in no class)."""

    pixel_counts: torch.Tensor  # int64 (C,): pixels labelled c
    present_pixels: torch.Tensor  # int64 (C,): all pixels of the images in which c occurs
    image_counts: torch.Tensor  # int64 (C,): images in which c occurs

    @property
    def frequencies(self) -> torch.Tensor:
        """``freq_c = pixel_counts / present_pixels`` (0 where c never occurs)."""
        return self.pixel_counts.double() / self.present_pixels.clamp(min=1).double()

    def median_frequency_weights(self) -> torch.Tensor:
        return median_frequency_weights(self.pixel_counts, self.present_pixels)


def _mask_of(dataset: Dataset, index: int) -> torch.Tensor | None:
    """The raw, checked mask of an item (no image decoded, no transform); None if skipped as bad."""
    if isinstance(dataset, SegmentationDataset):
        try:
            return dataset.read_mask(index)
        except DatasetError as error:
            if not dataset.skip_bad:
                raise
            logger.warning("class statistics: skipping bad item: %s", error)
            return None
    return dataset[index][1]


def class_statistics(dataset: Dataset, num_classes: int | None = None, *, progress: bool = False) -> ClassStatistics:
    """Count pixels per class over every item's mask (masks read without their transform)."""
    if num_classes is None:
        num_classes = getattr(dataset, "num_classes", None)
        if num_classes is None:
            raise ValueError("num_classes is needed for a dataset without a num_classes attribute")
    ignore_index = getattr(dataset, "ignore_index", 255)
    pixel_counts = torch.zeros(num_classes, dtype=torch.int64)
    present_pixels = torch.zeros(num_classes, dtype=torch.int64)
    image_counts = torch.zeros(num_classes, dtype=torch.int64)
    length = len(cast(Sized, dataset))  # map-style datasets have a length
    with Progress(length, label="class statistics", unit="image", show=progress) as shown:
        for index in range(length):
            shown.update()
            mask = _mask_of(dataset, index)
            if mask is None:
                continue
            labels = mask.cpu().numpy().ravel()
            labels = labels[labels != ignore_index]
            if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
                raise DatasetError(f"item {index}: labels outside 0..{num_classes - 1} (ignore value {ignore_index})")
            counts = torch.from_numpy(np.bincount(labels, minlength=num_classes).astype(np.int64))
            present = counts > 0
            pixel_counts += counts
            present_pixels += present.long() * mask.numel()
            image_counts += present.long()
    return ClassStatistics(pixel_counts, present_pixels, image_counts)


def class_pixel_counts(dataset: Dataset, num_classes: int | None = None) -> torch.Tensor:
    """int64 (C,): number of pixels labelled c over the dataset (ignore-labelled pixels excluded)."""
    return class_statistics(dataset, num_classes).pixel_counts


def median_frequency_weights(
    counts: torch.Tensor | ClassStatistics, present_pixels: torch.Tensor | None = None
) -> torch.Tensor:
    """float32 (C,) class weights ``median(freq) / freq_c``; 0 for classes never present.

    Pass a :class:`ClassStatistics` (or ``counts`` with ``present_pixels``) for the
    Eigen & Fergus / SegNet frequency. With ``counts`` alone, ``freq_c`` is
    ``counts_c / counts.sum()`` (equal to it only when every class occurs in every image).
    """
    if isinstance(counts, ClassStatistics):
        present_pixels = counts.present_pixels
        counts = counts.pixel_counts
    counts = torch.as_tensor(counts).double()
    if counts.dim() != 1 or bool((counts < 0).any()):
        raise ValueError(f"counts must be a 1-D tensor of non-negative pixel counts, got {counts}")
    if present_pixels is None:
        totals = torch.full_like(counts, float(counts.sum()))
    else:
        totals = torch.as_tensor(present_pixels).double()
        if totals.shape != counts.shape or bool((totals < counts).any()):
            raise ValueError("present_pixels must have the shape of counts and be >= counts")
    present = counts > 0
    weights = torch.zeros_like(counts)
    if bool(present.any()):
        frequencies = counts[present] / totals[present]
        weights[present] = torch.quantile(frequencies, 0.5) / frequencies
    return weights.float()
