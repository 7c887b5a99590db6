"""Paired transforms: one random draw moves image and mask together.

Built on ``torchvision.transforms.v2`` with ``tv_tensors.Image`` / ``tv_tensors.Mask``
so each geometric op is applied to both with the right kernel. Images stay
uint8 RGB and masks int64; the model's preprocessing is not applied here (the
engine calls :func:`fcnseg.preprocess` on the batch).

Masks are resized with ``NEAREST_EXACT``: nearest neighbour sampled at pixel
centres, the same sampling grid as the image's bilinear resize. Plain torch
``nearest`` samples at ``floor(i * in / out)`` and so shifts the mask by up to
half a source pixel against the image.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

from ..preprocessing import TORCHVISION

DEFAULT_FILL: tuple[int, int, int] = TORCHVISION.mean_rgb_uint8()


def _size_pair(size: int | Sequence[int] | None, name: str) -> tuple[int, int] | None:
    if size is None:
        return None
    pair = (size, size) if isinstance(size, int) else tuple(int(v) for v in size)
    if len(pair) != 2 or min(pair) < 1:
        raise ValueError(f"{name} must be a positive int or (height, width), got {size!r}")
    return pair


class RandomScale:
    """Resize image and mask by one factor drawn uniformly from ``scale_range`` (torch RNG).

    Image: bilinear with antialiasing; mask: nearest (pixel-centre aligned).
    """

    def __init__(self, scale_range: Sequence[float]) -> None:
        low, high = (float(v) for v in scale_range)
        if not 0 < low <= high:
            raise ValueError(f"scale_range must be (low, high) with 0 < low <= high, got {scale_range!r}")
        self.scale_range = (low, high)

    def __call__(self, image: torch.Tensor, mask: torch.Tensor) -> tuple[tv_tensors.Image, tv_tensors.Mask]:
        low, high = self.scale_range
        scale = low + (high - low) * float(torch.rand(()))
        height, width = image.shape[-2:]
        size = (max(1, round(height * scale)), max(1, round(width * scale)))
        return _resize_typed(image, mask, size)


def _resize_typed(
    image: torch.Tensor, mask: torch.Tensor, size: Sequence[int]
) -> tuple[tv_tensors.Image, tv_tensors.Mask]:
    image = image if isinstance(image, tv_tensors.Image) else tv_tensors.Image(image)
    mask = mask if isinstance(mask, tv_tensors.Mask) else tv_tensors.Mask(mask)
    if tuple(size) == tuple(image.shape[-2:]):
        return image, mask
    image = F.resize(image, list(size), interpolation=v2.InterpolationMode.BILINEAR, antialias=True)
    mask = F.resize(mask, list(size), interpolation=v2.InterpolationMode.NEAREST_EXACT)
    return image, mask


def resize_pair(image: torch.Tensor, mask: torch.Tensor, size: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Resize to ``size`` (height, width): image bilinear+antialias, mask nearest (centre aligned)."""
    out_image, out_mask = _resize_typed(image, mask, size)
    return out_image.as_subclass(torch.Tensor), out_mask.as_subclass(torch.Tensor)


class TrainTransform:
    """Training augmentation: random scale, crop (padding where needed), horizontal flip, colour jitter.

    Args:
        crop_size: output (height, width) or side; ``None`` keeps the (scaled) size, no crop.
        scale_range: (low, high) factor for the random scale; ``None`` for none. The paper
            trains at native size without it; (0.5, 2.0) is the common modern choice.
        hflip: flip image and mask left-right with probability 0.5.
        color_jitter: ``None`` for none, a float (brightness = contrast = saturation, hue 0),
            a (brightness, contrast, saturation, hue) tuple, or a dict of ``v2.ColorJitter``
            arguments. Changes the image only.
        fill: RGB uint8 colour for image padding: the model's mean colour
            (``model.preprocessing.mean_rgb_uint8()``), which preprocesses to ~0.
        ignore_index: label for mask padding (ignored by the loss).
    """

    def __init__(
        self,
        crop_size: int | Sequence[int] | None = None,
        scale_range: Sequence[float] | None = (0.5, 2.0),
        hflip: bool = True,
        color_jitter: float | Sequence[float] | dict | None = None,
        fill: Sequence[int] = DEFAULT_FILL,
        ignore_index: int = 255,
    ) -> None:
        self.crop_size = _size_pair(crop_size, "crop_size")
        self.fill = tuple(int(v) for v in fill)
        if len(self.fill) != 3 or not all(0 <= v <= 255 for v in self.fill):
            raise ValueError(f"fill must be an RGB uint8 colour, got {fill!r}")
        self.ignore_index = int(ignore_index)
        steps: list = []
        if scale_range is not None:
            steps.append(RandomScale(scale_range))
        if self.crop_size is not None:
            fill_by_type = {tv_tensors.Image: self.fill, tv_tensors.Mask: self.ignore_index}
            steps.append(v2.RandomCrop(self.crop_size, pad_if_needed=True, fill=fill_by_type))
        if hflip:
            steps.append(v2.RandomHorizontalFlip(0.5))
        jitter = _color_jitter(color_jitter)
        if jitter is not None:
            steps.append(jitter)
        self.pipeline = v2.Compose(steps)

    def __call__(self, image: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        image_out, mask_out = self.pipeline(tv_tensors.Image(image), tv_tensors.Mask(mask))
        return image_out.as_subclass(torch.Tensor), mask_out.as_subclass(torch.Tensor)

    def __repr__(self) -> str:
        return f"TrainTransform({self.pipeline})"


def _color_jitter(option: float | Sequence[float] | dict | None) -> v2.ColorJitter | None:
    if option is None or option == 0:
        return None
    if isinstance(option, dict):
        return v2.ColorJitter(**option)
    if isinstance(option, (int, float)):
        return v2.ColorJitter(brightness=option, contrast=option, saturation=option)
    values = list(option)
    if len(values) != 4:
        raise ValueError(f"color_jitter needs (brightness, contrast, saturation, hue), got {option!r}")
    return v2.ColorJitter(*values)


class EvalTransform:
    """Evaluation: native size by default (a no-op); ``size=(h, w)`` resizes both (mask nearest)."""

    def __init__(self, size: int | Sequence[int] | None = None) -> None:
        self.size = _size_pair(size, "size")

    def __call__(self, image: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.size is None:
            return image, mask
        return resize_pair(image, mask, self.size)

    def __repr__(self) -> str:
        return f"EvalTransform(size={self.size})"
