"""The dataset base class every kind shares: item checks, skipping bad items, transforms."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from .errors import DatasetError
from .palette import Colour, default_palette

logger = logging.getLogger("fcnseg.data")

Transform = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


def resize_item(image: torch.Tensor, mask: torch.Tensor, size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """``image`` resized to ``size`` (H, W) with a Lanczos filter, ``mask`` by nearest neighbour (ids stay ids).

    Images of 3k channels (colour + HHA) are resized 3 channels at a time, masks of several
    rows (one per head) row by row.
    """
    from PIL import Image

    height, width = size
    pictures = [
        Image.fromarray(part.permute(1, 2, 0).numpy()).resize((width, height), Image.Resampling.LANCZOS)
        for part in image.split(3)
    ]
    rows = [
        Image.fromarray(row.numpy().astype(np.int32)).resize((width, height), Image.Resampling.NEAREST)
        for row in mask.reshape(-1, *mask.shape[-2:])
    ]
    resized = np.concatenate([np.asarray(picture) for picture in pictures], axis=2)
    ids = np.stack([np.asarray(row) for row in rows]).reshape(*mask.shape[:-2], height, width)
    return torch.from_numpy(resized.copy()).permute(2, 0, 1).contiguous(), torch.from_numpy(ids.astype(np.int64))


class SegmentationDataset(Dataset):
    """Images with per-pixel class ids.

    An item is ``(image, mask)``: ``image`` a uint8 tensor (3, H, W) in RGB, ``mask`` an int64 tensor (H, W) holding ids
    in ``[0, num_classes)`` or ``ignore_index``; ``transform(image, mask)`` is applied last when given.

    Every item is checked when read: image and mask must have the same size and every label must be a class id or the
    ignore value. A bad item raises :class:`DatasetError` naming its files. With ``skip_bad=True`` a bad item is logged
    (logger ``fcnseg.data``) and the next good item in index order is returned in its place (wrapping around), so a
    DataLoader never stops on it; if no item is good the error is raised.

    Subclasses set ``ids`` and implement :meth:`load_image`, :meth:`load_mask` and :meth:`describe`; they hold only
    plain data so that DataLoader workers can pickle them.

    A dataset with several label maps per image (SIFT Flow's semantic and geometric labels) sets ``heads`` to
    ``((name, classes), ...)``: its masks are (K, H, W), row k holding head k's ids, numbered in ``classes`` (head k's
    classes follow head k-1's), so counting pixels per class works unchanged; each row is checked against its own range.

    ``resize`` (H, W), when set (``open_dataset(..., resize=[H, W])``), resizes every
    checked item with :func:`resize_item`: training and evaluating at a lower resolution.
    """

    resize: tuple[int, int] | None = None
    #: ``((name, classes), ...)`` of a dataset whose masks have one row per head; None: masks (H, W).
    heads: tuple[tuple[str, int], ...] | None = None

    def __init__(
        self,
        *,
        classes: Sequence[str],
        ids: Sequence[str],
        palette: Sequence[Colour] | None = None,
        ignore_index: int = 255,
        transform: Transform | None = None,
        skip_bad: bool = False,
    ) -> None:
        self.classes = [str(name) for name in classes]
        if not self.classes:
            raise DatasetError("a dataset needs at least one class name")
        self.ids = list(ids)
        self.ignore_index = int(ignore_index)
        if 0 <= self.ignore_index < len(self.classes):
            raise DatasetError(
                f"ignore_index {self.ignore_index} is also a class id (classes are 0..{len(self.classes) - 1})"
            )
        palette = list(palette) if palette is not None else default_palette(len(self.classes))
        if len(palette) < len(self.classes):
            raise DatasetError(f"palette has {len(palette)} colours for {len(self.classes)} classes")
        self.palette = [_colour(colour) for colour in palette[: len(self.classes)]]
        self.transform = transform
        self.skip_bad = bool(skip_bad)

    #: How the items were chosen, for run records, e.g. ``{"split": "train", "source": ".../train.txt"}``.
    split_info: dict[str, Any] | None = None

    # -- what subclasses provide -------------------------------------------------------------

    def load_image(self, index: int) -> torch.Tensor:
        """The raw image of item ``index``: uint8 (3, H, W) RGB."""
        raise NotImplementedError

    def load_mask(self, index: int) -> torch.Tensor:
        """The raw mask of item ``index``: int64 (H, W), labels not yet checked."""
        raise NotImplementedError

    def describe(self, index: int) -> str:
        """Where item ``index`` comes from (its files), for messages."""
        return f"item {index} ({self.ids[index]})"

    # -- shared behaviour ---------------------------------------------------------------------

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def stems(self) -> list[str]:
        """Alias of ``ids`` (folder datasets speak of file stems)."""
        return self.ids

    def __len__(self) -> int:
        return len(self.ids)

    def read_mask(self, index: int) -> torch.Tensor:
        """The mask of item ``index`` with its labels checked (no image decoded)."""
        mask = self.load_mask(index)
        self.check_labels(mask, index)
        return mask

    def read_item(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Image and mask of item ``index``, checked, before the transform."""
        image = self.load_image(index)
        mask = self.load_mask(index)
        self.check_size(image, mask, index)
        self.check_labels(mask, index)
        if self.resize is not None:
            image, mask = resize_item(image, mask, self.resize)
        return image, mask

    def check_size(self, image: torch.Tensor, mask: torch.Tensor, index: int) -> None:
        """Raise :class:`DatasetError` if image (3, H, W) and mask (H, W) differ in size."""
        if image.shape[-2:] != mask.shape[-2:]:
            raise DatasetError(
                f"{self.describe(index)}: image is {image.shape[-1]}x{image.shape[-2]} (WxH) but mask is "
                f"{mask.shape[-1]}x{mask.shape[-2]}; expected the same size"
            )

    def check_labels(self, mask: torch.Tensor, index: int) -> None:
        """Raise :class:`DatasetError` if ``mask`` holds a label that is no class id and not ignore."""
        # numpy, not torch: single-threaded and fast even when every core is busy.
        labels = mask.cpu().numpy()
        if self.heads is None:
            self._check_range(labels, 0, self.num_classes, index, "")
            return
        if labels.ndim != 3 or labels.shape[0] != len(self.heads):
            raise DatasetError(
                f"{self.describe(index)}: mask has shape {labels.shape}; expected one row per head "
                f"{[name for name, _ in self.heads]} ({len(self.heads)}, H, W)"
            )
        start = 0
        for row, (name, count) in zip(labels, self.heads, strict=True):
            self._check_range(row, start, start + count, index, f" ({name} labels)")
            start += count

    def _check_range(self, labels: np.ndarray, low: int, high: int, index: int, what: str) -> None:
        if labels.size == 0 or (labels.min() >= low and labels.max() < high):
            return
        bad = ((labels < low) | (labels >= high)) & (labels != self.ignore_index)
        if bad.any():
            position = tuple(int(v) for v in np.argwhere(bad)[0])
            values = np.unique(labels[bad])[:8].tolist()
            raise DatasetError(
                f"{self.describe(index)}: mask{what} has label {labels[position]} at (row, col) {position} "
                f"(bad labels: {values}); expected {low}..{high - 1} or the ignore value {self.ignore_index}"
            )

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for a dataset of {len(self)} items")
        index %= len(self)
        image, mask = self._read_or_skip(index)
        if self.transform is not None:
            image, mask = self.transform(image, mask)
        return image, mask

    def _read_or_skip(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.skip_bad:
            return self.read_item(index)
        first_error: DatasetError | None = None
        for offset in range(len(self)):
            candidate = (index + offset) % len(self)
            try:
                return self.read_item(candidate)
            except DatasetError as error:
                logger.warning("skipping bad item: %s", error)
                first_error = first_error or error
        raise DatasetError(f"no readable item in the dataset (skip_bad=True); first error: {first_error}")

    def find_bad_items(self) -> list[tuple[int, str]]:
        """Read every item once; return ``(index, message)`` for each bad one (nothing raised)."""
        bad = []
        for index in range(len(self)):
            try:
                self.read_item(index)
            except DatasetError as error:
                bad.append((index, str(error)))
        return bad

    def __repr__(self) -> str:
        return f"{type(self).__name__}({len(self)} items, {self.num_classes} classes)"


def _colour(value: Any) -> Colour:
    try:
        colour = tuple(int(v) for v in value)
        if len(colour) == 3 and all(0 <= v <= 255 for v in colour):
            return colour
    except (TypeError, ValueError):
        pass
    raise DatasetError(f"palette entry {value!r} is not a colour; expected [R, G, B] with values 0..255")


class InMemoryDataset(SegmentationDataset):
    """Items held in memory: ``images[i]`` uint8 (3, H, W) and ``masks[i]`` int64 (H, W).

    For tests and for small sets built in code; the same checks apply as for files.
    """

    cached_bytes: int  # set by fcnseg.engine.data_cache on the copies it makes

    def __init__(
        self,
        images: Sequence[torch.Tensor],
        masks: Sequence[torch.Tensor],
        *,
        classes: Sequence[str],
        ids: Sequence[str] | None = None,
        palette: Sequence[Colour] | None = None,
        ignore_index: int = 255,
        transform: Transform | None = None,
        skip_bad: bool = False,
    ) -> None:
        if len(images) != len(masks):
            raise DatasetError(f"{len(images)} images but {len(masks)} masks")
        if not images:
            raise DatasetError("an in-memory dataset needs at least one item")
        self.images = list(images)
        self.masks = list(masks)
        super().__init__(
            classes=classes,
            ids=ids if ids is not None else [f"item_{index}" for index in range(len(images))],
            palette=palette,
            ignore_index=ignore_index,
            transform=transform,
            skip_bad=skip_bad,
        )

    def load_image(self, index: int) -> torch.Tensor:
        return self.images[index]

    def load_mask(self, index: int) -> torch.Tensor:
        return self.masks[index].long()
