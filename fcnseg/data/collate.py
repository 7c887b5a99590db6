"""Batching images of different sizes by padding them to the largest."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .transforms import DEFAULT_FILL


class PadCollate:
    """DataLoader ``collate_fn``: pad every item to the batch's largest height and width.

    Padding goes to the bottom and right, so pixel (0, 0) stays in place; images
    are padded with ``fill`` (RGB uint8, the model's mean colour) and masks with
    ``ignore_index``, so padded pixels count neither in the loss nor in metrics.
    ``size_divisor`` rounds the padded size up to a multiple of it.

    Returns ``(images uint8 (N, 3, H, W), masks int64 (N, H, W))``. Images of more channels
    (colour + HHA: 6) need one ``fill`` value per channel; masks with one row per head
    (K, H, W) are batched as (N, K, H, W).
    """

    def __init__(self, fill: Sequence[int] = DEFAULT_FILL, ignore_index: int = 255, size_divisor: int = 1) -> None:
        self.fill = tuple(int(v) for v in fill)
        if len(self.fill) < 3 or not all(0 <= v <= 255 for v in self.fill):
            raise ValueError(f"fill must be an RGB uint8 colour (or one uint8 value per image channel), got {fill!r}")
        if int(size_divisor) < 1:
            raise ValueError(f"size_divisor must be >= 1, got {size_divisor}")
        self.ignore_index = int(ignore_index)
        self.size_divisor = int(size_divisor)

    def __call__(self, batch: Sequence[tuple[torch.Tensor, torch.Tensor]]) -> tuple[torch.Tensor, torch.Tensor]:
        if not batch:
            raise ValueError("PadCollate got an empty batch")
        height = max(image.shape[-2] for image, _ in batch)
        width = max(image.shape[-1] for image, _ in batch)
        height = -(-height // self.size_divisor) * self.size_divisor
        width = -(-width // self.size_divisor) * self.size_divisor
        channels, rows = len(self.fill), batch[0][1].shape[:-2]
        images = torch.empty((len(batch), channels, height, width), dtype=torch.uint8)
        images[:] = torch.tensor(self.fill, dtype=torch.uint8).view(channels, 1, 1)
        masks = torch.full((len(batch), *rows, height, width), self.ignore_index, dtype=torch.int64)
        for index, (image, mask) in enumerate(batch):
            if image.dtype != torch.uint8 or image.dim() != 3 or image.shape[0] != channels:
                raise TypeError(
                    f"item {index}: expected a uint8 image ({channels}, H, W) (one channel per fill value), "
                    f"got {image.dtype} {tuple(image.shape)}"
                )
            if mask.shape[-2:] != image.shape[-2:] or mask.shape[:-2] != rows:
                raise ValueError(
                    f"item {index}: mask {tuple(mask.shape)} does not match image {tuple(image.shape[-2:])}"
                )
            h, w = image.shape[-2:]
            images[index, :, :h, :w] = image
            masks[index, ..., :h, :w] = mask
        return images, masks

    def __repr__(self) -> str:
        return f"PadCollate(fill={self.fill}, ignore_index={self.ignore_index}, size_divisor={self.size_divisor})"
