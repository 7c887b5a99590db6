"""A synthetic segmentation set that needs spatial context: textured shapes on a textured background.

Built for the demo and quick tests: no files, deterministic per (seed, split,
index), any size and count, a few milliseconds per image.

Design (why each part is there):

* **Colour says nothing.** Every region (the background and every object) draws its own pair of colours ``(a, b)`` from
  one shared distribution (uniform RGB in [30, 225], the two at least 100 apart), and every pixel is ``a`` or ``b`` plus
  the same Gaussian noise. So the per-class colour statistics are the same for all classes; one pixel's colour cannot
  decide it.
* **A neighbourhood does.** How ``a`` and ``b`` are arranged is the class's texture, visible in a 3x3 to 5x5 window:
  disc = horizontal stripes (period 4 px), square = vertical stripes, triangle = 2-px checkerboard, ring = diagonal
  stripes (either diagonal, so flips keep the class), bar = a grid of 1-px lines every 3 px, dot = solid ``a`` with a
  1-px rim of ``b`` (an edge profile). The background is split into large smooth-edged blobs of its two colours (a sum
  of low-frequency waves, thresholded): locally solid, with blob edges that look like object edges, so a pixel at a
  colour edge is only told by the texture around it.
* **Shape and size** agree with the texture (discs, rotated squares and rectangles, triangles, rings, thin bars, small
  dots), so both cues teach the same labels.
* **Imbalance and small objects.** Two to four large shapes (they may overlap; later ones on top), up to two thin bars
  and up to four small dots per image (dots drawn last): the background covers about 76 % of the pixels, each large
  shape 4-6 %, bars 3 % and dots 2 %.

Shapes scale with the image side, but thin parts keep a floor in pixels (bars at least 4 px wide, dots at least 3.5 px
in radius) so they stay visible in small images (64-128 px is the intended range). Splits draw from disjoint random
streams: the stream of an item is ``SeedSequence([seed, split_code, index])``.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence

import numpy as np
import torch

from .base import SegmentationDataset, Transform
from .errors import DatasetError
from .palette import voc_palette

#: Every class the generator can draw, in id order.
SHAPE_CLASSES = ("background", "disc", "square", "triangle", "ring", "bar", "dot")
_LARGE_SHAPES = ("disc", "square", "triangle", "ring")
_SPLIT_CODES = {"train": 0, "val": 1, "test": 2}
_DEFAULT_COUNTS = {"train": 512, "val": 64, "test": 64}

_COLOUR_LOW, _COLOUR_HIGH, _MIN_CONTRAST = 30.0, 225.0, 100.0


class SyntheticShapes(SegmentationDataset):
    """Textured shapes on a textured background (see the module docstring for the design).

    Args:
        split: "train", "val", "test" or any other name (each has its own random stream).
        num_images: item count (default 512 for train, 64 otherwise).
        size: image side, or (height, width).
        size_range: if given, (min, max) side: each image draws its own height and width in it.
        seed: base seed; changing it gives a different set.
        num_classes: use the first ``num_classes`` of :data:`SHAPE_CLASSES` (2..7).
        classes: or name the classes to use (must start with "background").
        noise: standard deviation of the per-pixel Gaussian noise (0..255 units).
    """

    def __init__(
        self,
        split: str = "train",
        *,
        num_images: int | None = None,
        size: int | Sequence[int] = 96,
        size_range: Sequence[int] | None = None,
        seed: int = 0,
        num_classes: int | None = None,
        classes: Sequence[str] | None = None,
        noise: float = 10.0,
        transform: Transform | None = None,
        skip_bad: bool = False,
        ignore_index: int = 255,
    ) -> None:
        chosen = _choose_classes(num_classes, classes)
        if num_images is None:
            num_images = _DEFAULT_COUNTS.get(split, 64)
        if int(num_images) < 1:
            raise DatasetError(f"synthetic split {split!r}: num_images must be >= 1, got {num_images}")
        self.split = str(split)
        self.seed = int(seed)
        self.height, self.width = _pair(size, "size")
        self.size_range = None if size_range is None else _pair(size_range, "size_range")
        if self.size_range is not None and not 8 <= self.size_range[0] <= self.size_range[1]:
            raise DatasetError(f"size_range must be (min, max) with 8 <= min <= max, got {size_range}")
        if min(self.height, self.width) < 8:
            raise DatasetError(f"synthetic images must be at least 8x8, got size {size}")
        self.noise = float(noise)
        self._split_code = _SPLIT_CODES.get(self.split, zlib.crc32(self.split.encode()) + len(_SPLIT_CODES))
        super().__init__(
            classes=chosen,
            ids=[f"{self.split}_{index:06d}" for index in range(int(num_images))],
            palette=voc_palette(len(chosen)),
            ignore_index=ignore_index,
            transform=transform,
            skip_bad=skip_bad,
        )

    def describe(self, index: int) -> str:
        return f"synthetic {self.split} item {index} (seed {self.seed})"

    def render(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Item ``index`` as numpy arrays: image uint8 (H, W, 3) and mask uint8 (H, W)."""
        rng = np.random.default_rng(np.random.SeedSequence([self.seed, self._split_code, index]))
        height, width = self.height, self.width
        if self.size_range is not None:
            low, high = self.size_range
            height, width = (int(v) for v in rng.integers(low, high + 1, size=2))
        return render_shapes(rng, height, width, self.classes, self.noise)

    def read_item(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        image, mask = self.render(index)
        # Layout changes in numpy: torch's parallel copy is slower on a busy CPU for these sizes.
        return torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))), torch.from_numpy(mask.astype(np.int64))

    def load_image(self, index: int) -> torch.Tensor:
        return self.read_item(index)[0]

    def load_mask(self, index: int) -> torch.Tensor:
        return self.read_item(index)[1]


def _choose_classes(num_classes: int | None, classes: Sequence[str] | None) -> list[str]:
    if classes is not None:
        chosen = list(classes)
        unknown = [name for name in chosen if name not in SHAPE_CLASSES]
        if unknown or not chosen or chosen[0] != "background" or len(set(chosen)) != len(chosen):
            raise DatasetError(
                f"synthetic classes {chosen} invalid; expected distinct names from {list(SHAPE_CLASSES)} "
                "starting with 'background'"
            )
        if num_classes is not None and num_classes != len(chosen):
            raise DatasetError(f"num_classes={num_classes} disagrees with {len(chosen)} class names")
        return chosen
    if num_classes is None:
        return list(SHAPE_CLASSES)
    if not 2 <= num_classes <= len(SHAPE_CLASSES):
        raise DatasetError(f"synthetic num_classes must be 2..{len(SHAPE_CLASSES)}, got {num_classes}")
    return list(SHAPE_CLASSES[:num_classes])


def _pair(value: int | Sequence[int], name: str) -> tuple[int, int]:
    if isinstance(value, (int, np.integer)):
        return int(value), int(value)
    values = tuple(int(v) for v in value)
    if len(values) != 2:
        raise DatasetError(f"{name} must be an int or a pair, got {value!r}")
    return values


# --- rendering -------------------------------------------------------------------------------


def render_shapes(
    rng: np.random.Generator, height: int, width: int, classes: Sequence[str], noise: float = 10.0
) -> tuple[np.ndarray, np.ndarray]:
    """Draw one image and its mask with ``rng``; ``classes[i]`` is the shape drawn with id ``i``."""
    ids = {name: index for index, name in enumerate(classes)}
    side = float(min(height, width))
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    image = np.empty((height, width, 3), np.float32)
    mask = np.zeros((height, width), np.uint8)

    colour_a, colour_b = _colour_pair(rng)
    blobs = _background_blobs(rng, x, y, side)
    image[:] = np.where(blobs[..., None], colour_a, colour_b)

    large = [name for name in _LARGE_SHAPES if name in ids]
    plan: list[str] = []
    if large:
        plan += list(rng.choice(large, size=int(rng.integers(2, 5))))
    if "bar" in ids:
        plan += ["bar"] * int(rng.integers(0, 3))
    if "dot" in ids:
        plan += ["dot"] * int(rng.integers(0, 5))

    for name in plan:
        region = _SHAPES[name](rng, x, y, side, height, width)
        if not region.any():
            continue
        colour_a, colour_b = _colour_pair(rng)
        pattern = _TEXTURES[name](rng, x, y, region)
        image[region] = np.where(pattern[region][:, None], colour_a, colour_b)
        mask[region] = ids[name]

    if noise > 0:
        image += rng.normal(0.0, noise, size=image.shape).astype(np.float32)
    return np.clip(np.rint(image), 0, 255).astype(np.uint8), mask


def _colour_pair(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Two colours from the shared distribution, far enough apart for a texture to show."""
    first = rng.uniform(_COLOUR_LOW, _COLOUR_HIGH, size=3)
    for _ in range(32):
        second = rng.uniform(_COLOUR_LOW, _COLOUR_HIGH, size=3)
        if np.linalg.norm(first - second) >= _MIN_CONTRAST:
            break
    if rng.random() < 0.5:  # symmetric: neither colour of the pair is special
        first, second = second, first
    return first.astype(np.float32), second.astype(np.float32)


def _background_blobs(rng: np.random.Generator, x: np.ndarray, y: np.ndarray, side: float) -> np.ndarray:
    """Large smooth-edged blobs: a sum of three low-frequency waves, thresholded at zero."""
    field = np.zeros_like(x)
    for _ in range(3):
        angle = rng.uniform(0, np.pi)
        wavelength = rng.uniform(0.5, 1.2) * side
        phase = rng.uniform(0, 2 * np.pi)
        field += np.cos((np.cos(angle) * x + np.sin(angle) * y) * (2 * np.pi / wavelength) + phase)
    return field > 0


def _centre(rng: np.random.Generator, height: int, width: int) -> tuple[float, float]:
    return rng.uniform(0.1, 0.9) * width, rng.uniform(0.1, 0.9) * height


def _rotated(x: np.ndarray, y: np.ndarray, cx: float, cy: float, angle: float) -> tuple[np.ndarray, np.ndarray]:
    dx, dy = x - cx, y - cy
    c, s = np.cos(angle), np.sin(angle)
    return c * dx + s * dy, -s * dx + c * dy


def _disc(rng: np.random.Generator, x: np.ndarray, y: np.ndarray, side: float, height: int, width: int) -> np.ndarray:
    cx, cy = _centre(rng, height, width)
    radius = rng.uniform(0.11, 0.19) * side
    return (x - cx) ** 2 + (y - cy) ** 2 <= radius**2


def _square(rng: np.random.Generator, x: np.ndarray, y: np.ndarray, side: float, height: int, width: int) -> np.ndarray:
    cx, cy = _centre(rng, height, width)
    half = rng.uniform(0.10, 0.17) * side
    aspect = rng.uniform(1.0, 1.5)
    u, v = _rotated(x, y, cx, cy, rng.uniform(0, np.pi / 2))
    return (np.abs(u) <= half * aspect) & (np.abs(v) <= half)


def _triangle(
    rng: np.random.Generator, x: np.ndarray, y: np.ndarray, side: float, height: int, width: int
) -> np.ndarray:
    cx, cy = _centre(rng, height, width)
    radius = rng.uniform(0.15, 0.25) * side
    angles = rng.uniform(0, 2 * np.pi) + np.arange(3) * (2 * np.pi / 3) + rng.uniform(-0.2, 0.2, size=3)
    radii = radius * rng.uniform(0.85, 1.1, size=3)
    px, py = cx + radii * np.cos(angles), cy + radii * np.sin(angles)
    inside = np.ones_like(x, dtype=bool)
    for i in range(3):  # vertices are counter-clockwise: inside is left of every edge
        j = (i + 1) % 3
        inside &= (px[j] - px[i]) * (y - py[i]) - (py[j] - py[i]) * (x - px[i]) >= 0
    return inside


def _ring(rng: np.random.Generator, x: np.ndarray, y: np.ndarray, side: float, height: int, width: int) -> np.ndarray:
    cx, cy = _centre(rng, height, width)
    outer = rng.uniform(0.15, 0.24) * side
    inner = outer * rng.uniform(0.45, 0.65)
    squared = (x - cx) ** 2 + (y - cy) ** 2
    return (squared <= outer**2) & (squared >= inner**2)


def _bar(rng: np.random.Generator, x: np.ndarray, y: np.ndarray, side: float, height: int, width: int) -> np.ndarray:
    cx, cy = _centre(rng, height, width)
    half_length = rng.uniform(0.35, 0.7) * side / 2
    half_width = max(2.0, rng.uniform(0.025, 0.04) * side)
    u, v = _rotated(x, y, cx, cy, rng.uniform(0, np.pi))
    return (np.abs(u) <= half_length) & (np.abs(v) <= half_width)


def _dot(rng: np.random.Generator, x: np.ndarray, y: np.ndarray, side: float, height: int, width: int) -> np.ndarray:
    cx, cy = rng.uniform(0.03, 0.97) * width, rng.uniform(0.03, 0.97) * height
    radius = max(3.5, rng.uniform(0.045, 0.065) * side)
    return (x - cx) ** 2 + (y - cy) ** 2 <= radius**2


def _stripes(coordinate: np.ndarray, phase: float) -> np.ndarray:
    return ((coordinate + phase) // 2) % 2 == 0  # period 4 px: 2 on, 2 off


def _horizontal_stripes(rng: np.random.Generator, x: np.ndarray, y: np.ndarray, region: np.ndarray) -> np.ndarray:
    return _stripes(y, float(rng.integers(0, 4)))


def _vertical_stripes(rng: np.random.Generator, x: np.ndarray, y: np.ndarray, region: np.ndarray) -> np.ndarray:
    return _stripes(x, float(rng.integers(0, 4)))


def _checkerboard(rng: np.random.Generator, x: np.ndarray, y: np.ndarray, region: np.ndarray) -> np.ndarray:
    return ((x + rng.integers(0, 4)) // 2 + (y + rng.integers(0, 4)) // 2) % 2 == 0


def _diagonal_stripes(rng: np.random.Generator, x: np.ndarray, y: np.ndarray, region: np.ndarray) -> np.ndarray:
    direction = y if rng.random() < 0.5 else -y
    return ((x + direction + rng.integers(0, 6)) // 3) % 2 == 0


def _mesh(rng: np.random.Generator, x: np.ndarray, y: np.ndarray, region: np.ndarray) -> np.ndarray:
    """Lines of colour a every 3 px in both directions (a grid)."""
    return ((x + rng.integers(0, 3)) % 3 == 0) | ((y + rng.integers(0, 3)) % 3 == 0)


def _rimmed(rng: np.random.Generator, x: np.ndarray, y: np.ndarray, region: np.ndarray) -> np.ndarray:
    """Colour a inside, colour b on a one-pixel rim (the region minus its erosion)."""
    inner = region.copy()
    inner[1:, :] &= region[:-1, :]
    inner[:-1, :] &= region[1:, :]
    inner[:, 1:] &= region[:, :-1]
    inner[:, :-1] &= region[:, 1:]
    return inner


_SHAPES = {"disc": _disc, "square": _square, "triangle": _triangle, "ring": _ring, "bar": _bar, "dot": _dot}
_TEXTURES = {
    "disc": _horizontal_stripes,
    "square": _vertical_stripes,
    "triangle": _checkerboard,
    "ring": _diagonal_stripes,
    "bar": _mesh,
    "dot": _rimmed,
}
