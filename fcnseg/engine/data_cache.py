"""Decoded training and validation items kept in memory, when they fit.

Reading a photo, decoding it and resizing it costs more than augmenting it: on a 2-core CPU
it is a tenth of a CamVid training step at 180x240, every step, in the process that also
computes. A split whose decoded items fit the budget is read once, before the first step,
and kept as uint8 tensors (masks as uint8 when the labels fit). The cache holds the items as
the dataset gives them, before any augmentation: the training transform still draws its
random scale, crop, flip and jitter per step, from the same seeds, so a cached run trains
bit for bit like an uncached one (and resumes like one).

The rule (``cache_in_memory`` None, the default): each split is cached when its decoded size
fits what is left of the budget, min(2 GiB, a quarter of the memory), shared by the
processes of the run; the training split first. ``True`` caches whatever the size,
``False`` never caches.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any

import torch

from ..data.base import InMemoryDataset, SegmentationDataset

logger = logging.getLogger("fcnseg.train")

#: The most a run keeps in memory by default (a quarter of the machine's memory when that is less).
CACHE_LIMIT_BYTES = 2 * 2**30
#: Items decoded to estimate a split's size before reading all of it.
SAMPLED_ITEMS = 3


def memory_bytes() -> int | None:
    """The memory this process may use: the machine's, or its cgroup's limit when lower; None if unknown."""
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        total = None
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        if limit.isdigit():
            total = min(int(limit), total) if total else int(limit)
    except OSError:
        pass
    return total


def cache_budget(processes: int = 1, memory: int | None = None) -> int:
    """Bytes one process may cache by default: min(2 GiB, memory / 4), shared by ``processes``."""
    memory = memory_bytes() if memory is None else memory
    budget = CACHE_LIMIT_BYTES if memory is None else min(CACHE_LIMIT_BYTES, memory // 4)
    return budget // max(1, processes)


def _small_labels(dataset: SegmentationDataset) -> bool:
    return dataset.ignore_index <= 255 and dataset.num_classes <= 255


def item_bytes(dataset: SegmentationDataset, image: torch.Tensor, mask: torch.Tensor) -> int:
    """What one decoded item takes in the cache."""
    return image.numel() * image.element_size() + mask.numel() * (1 if _small_labels(dataset) else mask.element_size())


def estimated_bytes(dataset: SegmentationDataset) -> int:
    """The decoded size of ``dataset``, from up to :data:`SAMPLED_ITEMS` items spread over it."""
    count = len(dataset)
    if count == 0:
        return 0
    picks = sorted({round(i * (count - 1) / max(1, SAMPLED_ITEMS - 1)) for i in range(min(SAMPLED_ITEMS, count))})
    sampled = [item_bytes(dataset, *dataset[index]) for index in picks]
    return round(sum(sampled) / len(sampled) * count)


def in_memory(dataset: SegmentationDataset, limit: int | None = None) -> InMemoryDataset | None:
    """``dataset`` read once into memory (masks as uint8 when the labels fit); None if it passes ``limit`` bytes."""
    images, masks, total = [], [], 0
    small = _small_labels(dataset)
    for index in range(len(dataset)):
        image, mask = dataset[index]
        total += item_bytes(dataset, image, mask)
        if limit is not None and total > limit:
            return None
        images.append(image)
        masks.append(mask.to(torch.uint8) if small else mask)
    cached = InMemoryDataset(
        images,
        masks,
        classes=dataset.classes,
        ids=dataset.ids,
        palette=dataset.palette,
        ignore_index=dataset.ignore_index,
    )
    cached.split_info = dataset.split_info  # run.json records how the split was made, cached or not
    cached.cached_bytes = total
    return cached


def cache_splits(
    setting: bool | None,
    train_set: SegmentationDataset,
    val_set: SegmentationDataset | None,
    *,
    processes: int = 1,
    say: bool = True,
) -> tuple[Any, Any]:
    """The training and validation sets, each cached in memory where ``setting`` (see the module) says so.

    With ``say``, logs one line: what was cached and how much, or why not.
    """
    if setting is False:
        return train_set, val_set
    started = time.perf_counter()
    budget = None if setting else cache_budget(processes)
    left = budget
    cached: dict[str, InMemoryDataset] = {}
    too_big: dict[str, int] = {}  # split -> its estimated decoded size
    for name, dataset in (("train", train_set), ("val", val_set)):
        if dataset is None:
            continue
        estimate = estimated_bytes(dataset) if left is not None else 0
        # A split over the estimate is not read at all; one whose items prove larger stops once past the budget.
        copy = None if left is not None and estimate > left else in_memory(dataset, limit=left)
        if copy is None:
            too_big[name] = max(estimate, (left or 0) + 1)
            continue
        cached[name] = copy
        left = None if left is None else left - copy.cached_bytes
    if say:
        logger.info("%s", _cache_line(cached, too_big, budget, time.perf_counter() - started))
    return cached.get("train", train_set), cached.get("val", val_set)


def _cache_line(cached: dict[str, InMemoryDataset], too_big: dict[str, int], budget: int | None, seconds: float) -> str:
    """``cached in memory: train 367 images + val 101 images, 63.4 MiB decoded, read in 4.1 s (...)``, or why not."""
    rule = "min(2 GiB, memory / 4)"
    parts = []
    if cached:
        splits = " + ".join(f"{name} {len(item)} images" for name, item in cached.items())
        total = sum(item.cached_bytes for item in cached.values())
        why = "as asked" if budget is None else f"within the budget of {_size(budget)}, {rule}"
        parts.append(
            f"cached in memory: {splits}, {_size(total)} decoded, read in {seconds:.1f} s ({why}; "
            "--no-cache reads from disk every step)"
        )
    if too_big:
        sizes = ", ".join(f"{name} ~{_size(size)}" for name, size in too_big.items())
        parts.append(
            f"not cached in memory: {sizes} decoded, over what is left of the budget of {_size(budget or 0)}, "
            f"{rule} (read from disk every step; --set cache_in_memory=true caches anyway)"
        )
    return "; ".join(parts)


def _size(n_bytes: float) -> str:
    return f"{n_bytes / 2**30:.2f} GiB" if n_bytes >= 2**30 else f"{n_bytes / 2**20:.1f} MiB"
