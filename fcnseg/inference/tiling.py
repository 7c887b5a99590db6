"""Tiled inference: predict images too large for memory, giving the whole-image result.

Why tiles can reproduce whole-image inference exactly
-----------------------------------------------------
An FCN is translation-equivariant only up to the phase of its pooling grid:
the five 2x2/2 ceil-mode max-pools lay a grid of period 32 on the padded
input, anchored at the image origin (``conv1_1`` pads 100 px on every side).
A tile whose origin is a multiple of 32 in image coordinates sees the same grid,
so every feature map of the tile is a window of the whole image's feature map —
except near the tile's edges, where the tile sees zero padding instead of image
content. That difference spreads inwards by at most the receptive-field radius
of an output pixel, so each tile is run with a *margin* of context around the
*core* it contributes, and only the core is kept. Where a tile edge coincides
with the image edge, tile and image see the same padding, so no margin is
needed there.

The margin comes from the model (:meth:`fcnseg.models.FCN.context_margin`): the
receptive-field radius of its backbone plus the reach of its upsampling chain, rounded
up to the grid. For VGG16 that is 288 px (fc7 sees 404 px). Measured (flip one input
column, see which output columns change): the reach is at most ~230 px, and tiles
with a 224-px margin already matched whole-image logits to fp32 noise; with 192 px
they differed by 0.05, with 96 px by 2.2 (logits of std ~8).

Tolerance reached with the default margin: logits equal to fp32 summation
noise (max abs difference ~6e-6 for logits of magnitude ~10, i.e. ~1e-6
relative), masks identical (100 % of pixels), asserted in ``tests/test_tiling.py``.

Memory: one forward pass at a time on a window of at most
``(tile + 2 * margin)^2`` pixels; the whole image stays uint8 on the host and
the mask is written tile by tile, so the peak is bounded by the window, not
the image. (On the CPU, oneDNN caches a little per input shape; a plan has at
most a handful of distinct window shapes, so that stays bounded too.)
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch

from ..models.contract import SegmentationModel


def _round_up(value: int, multiple: int) -> int:
    return max(multiple, int(math.ceil(value / multiple) * multiple))


@dataclass(frozen=True)
class Tiling:
    """Options of tiled inference.

    Args:
        tile_size: side of each tile's core in pixels (rounded up to a multiple of the model's grid).
        margin: context around the core (rounded up likewise); ``None`` uses the model's
            :meth:`~fcnseg.models.FCN.context_margin`, which reproduces whole-image inference.
    """

    tile_size: int = 512
    margin: int | None = None

    def __post_init__(self) -> None:
        if self.tile_size < 1:
            raise ValueError(f"tile_size must be >= 1, got {self.tile_size}")
        if self.margin is not None and self.margin < 0:
            raise ValueError(f"margin must be >= 0, got {self.margin}")

    def for_model(self, model: SegmentationModel) -> Tiling:
        """This tiling with sizes on ``model``'s grid and the margin resolved."""
        grid = model.grid
        margin = model.context_margin() if self.margin is None else self.margin
        return Tiling(_round_up(self.tile_size, grid), 0 if margin == 0 else _round_up(margin, grid))

    @property
    def window_size(self) -> int:
        """Largest side of the window one forward pass sees (after :meth:`for_model`)."""
        return self.tile_size + 2 * int(self.margin or 0)


@dataclass(frozen=True)
class Tile:
    """One forward pass: the ``window`` fed to the network and the ``core`` kept from it.

    Both are ``(top, bottom, left, right)`` in image coordinates (end-exclusive).
    """

    core: tuple[int, int, int, int]
    window: tuple[int, int, int, int]

    def core_in_window(self) -> tuple[slice, slice]:
        """Slices that cut the core out of the window's output."""
        top, bottom, left, right = self.core
        wtop, _, wleft, _ = self.window
        return slice(top - wtop, bottom - wtop), slice(left - wleft, right - wleft)


def _spans(length: int, tile: int, margin: int) -> list[tuple[int, int, int, int]]:
    spans = []
    for start in range(0, length, tile):
        end = min(start + tile, length)
        spans.append((start, end, max(0, start - margin), min(length, end + margin)))
    return spans


def plan_tiles(height: int, width: int, tiling: Tiling) -> list[Tile]:
    """Tiles covering an image once: cores start at multiples of the tile size (a multiple of the grid)."""
    margin = int(tiling.margin or 0)
    return [
        Tile(core=(top, bottom, left, right), window=(wtop, wbottom, wleft, wright))
        for top, bottom, wtop, wbottom in _spans(height, tiling.tile_size, margin)
        for left, right, wleft, wright in _spans(width, tiling.tile_size, margin)
    ]


#: Share of a memory budget given to one tile's forward pass. Over a run of many tiles the
#: CPU process also keeps oneDNN's per-shape caches and allocator fragments: measured at
#: +10-25 % of one pass (2000x2000 image, width 1/16, 25 tiles), so a fifth is held back.
TILING_HEADROOM = 0.8


def tiling_for_budget(model: SegmentationModel, budget_bytes: int, margin: int | None = None) -> Tiling:
    """The largest tiling whose window's forward pass fits ``TILING_HEADROOM * budget_bytes``.

    ``model`` is an FCN (it gives its grid, margin and :meth:`estimate_forward_bytes`).
    """
    budget_bytes = int(budget_bytes * TILING_HEADROOM)
    grid = model.grid
    tiling = Tiling(grid, margin).for_model(model)
    smallest = model.estimate_forward_bytes(tiling.window_size, tiling.window_size)
    if smallest > budget_bytes:
        raise ValueError(
            f"a memory budget of {budget_bytes / TILING_HEADROOM / 2**20:.0f} MiB is too small: the smallest tile "
            f"({tiling.window_size} px window) needs about {smallest / 2**20:.0f} MiB"
        )
    low, high = grid, 1 << 20
    while high - low > grid:  # binary search on the core size, in steps of the grid
        mid = _round_up((low + high) // 2, grid)
        window = Tiling(mid, margin).for_model(model).window_size
        if model.estimate_forward_bytes(window, window) <= budget_bytes:
            low = mid
        else:
            high = mid
    return Tiling(low, margin).for_model(model)


def iter_tiles(
    run: Callable[[torch.Tensor], torch.Tensor],
    image: torch.Tensor,
    tiling: Tiling,
    progress: Callable[[Iterator[Tile]], Iterator[Tile]] | None = None,
) -> Iterator[tuple[Tile, torch.Tensor]]:
    """Yield ``(tile, result of the core)`` for every tile of a uint8 image (3, H, W).

    ``run`` maps a uint8 window (3, h, w) to a per-pixel result (..., h, w), e.g. logits;
    the core is cut from it before it is yielded.
    """
    tiles = plan_tiles(image.shape[-2], image.shape[-1], tiling)  # ``tiling`` resolved by Tiling.for_model
    for tile in progress(iter(tiles)) if progress else tiles:
        top, bottom, left, right = tile.window
        result = run(image[:, top:bottom, left:right])
        rows, cols = tile.core_in_window()
        yield tile, result[..., rows, cols]
