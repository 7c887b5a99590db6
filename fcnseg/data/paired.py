"""A dataset of (image file, mask file) pairs: what the voc, sbd and folder kinds build."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from .base import SegmentationDataset, Transform, logger
from .errors import DatasetError
from .palette import Colour
from .readers import read_image_file, read_mask_file


class PairedFileDataset(SegmentationDataset):
    """Items read from files: ``image_paths[i]`` and ``mask_paths[i]`` belong to ``ids[i]``.

    Checked when opened: the list is not empty and every image and mask file exists (with ``skip_bad=True`` an item with
    a missing file is logged and dropped instead, and listed in ``dropped`` as ``(id, reason)``). Checked when read:
    both files decode, sizes agree, labels are class ids or the ignore value (see :class:`SegmentationDataset`).
    """

    def __init__(
        self,
        *,
        name: str,
        ids: Sequence[str],
        image_paths: Sequence[str | Path],
        mask_paths: Sequence[str | Path],
        classes: Sequence[str],
        palette: Sequence[Colour] | None = None,
        ignore_index: int = 255,
        transform: Transform | None = None,
        skip_bad: bool = False,
    ) -> None:
        if not len(ids) == len(image_paths) == len(mask_paths):
            raise ValueError("ids, image_paths and mask_paths must have the same length")
        self.name = name
        kept_ids, kept_images, kept_masks = [], [], []
        #: ``(id, reason)`` of each item dropped when opened (a missing file, with ``skip_bad=True``).
        self.dropped: list[tuple[str, str]] = []
        for item_id, image_path, mask_path in zip(ids, image_paths, mask_paths, strict=True):
            problem = None
            # exists(), not is_file(): a FIFO or device is kept, and reading it says what it is.
            if not Path(image_path).exists():
                problem = f"{name}: image {image_path} for id {item_id!r} does not exist"
            elif not Path(mask_path).exists():
                problem = f"{name}: mask {mask_path} for image {image_path} does not exist; expected its mask there"
            if problem is not None:
                if not skip_bad:
                    raise DatasetError(problem)
                logger.warning("skipping: %s", problem)
                self.dropped.append((str(item_id), problem))
                continue
            kept_ids.append(str(item_id))
            kept_images.append(str(image_path))
            kept_masks.append(str(mask_path))
        if not kept_ids:
            raise DatasetError(f"{name}: no items" + (" left after skipping bad ones" if ids else ""))
        self.image_paths = kept_images
        self.mask_paths = kept_masks
        super().__init__(
            classes=classes,
            ids=kept_ids,
            palette=palette,
            ignore_index=ignore_index,
            transform=transform,
            skip_bad=skip_bad,
        )

    def describe(self, index: int) -> str:
        return f"{self.name} item {self.ids[index]!r} (image {self.image_paths[index]}, mask {self.mask_paths[index]})"

    def load_image(self, index: int) -> torch.Tensor:
        return read_image_file(self.image_paths[index])

    def load_mask(self, index: int) -> torch.Tensor:
        return read_mask_file(self.mask_paths[index])
