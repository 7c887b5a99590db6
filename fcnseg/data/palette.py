"""Colour palettes for class ids.

The PASCAL VOC palette spreads the bits of a class id over the top bits of R, G and B (id 1 = (128, 0, 0), 2 = (0, 128,
0), 3 = (128, 128, 0), ...); VOC, SBD and the synthetic set use it. Other datasets that bring no palette get
:func:`default_palette`, in which no class is black (black reads as "unlabelled" in every other tool).
"""

from __future__ import annotations

import colorsys

Colour = tuple[int, int, int]

#: Colour of the VOC "void" label 255 in the VOC palette.
VOC_VOID_COLOUR: Colour = (224, 224, 192)


def voc_palette(n: int = 256) -> list[Colour]:
    """The first ``n`` colours of the PASCAL VOC palette (``n`` <= 256)."""
    if not 0 <= n <= 256:
        raise ValueError(f"the VOC palette has 256 colours; asked for {n}")
    palette = []
    for index in range(n):
        r = g = b = 0
        bits = index
        for shift in range(7, -1, -1):  # bit 0 -> top bit, bit 3 -> next bit down, ...
            r |= (bits & 1) << shift
            g |= ((bits >> 1) & 1) << shift
            b |= ((bits >> 2) & 1) << shift
            bits >>= 3
        palette.append((r, g, b))
    return palette


def default_palette(num_classes: int) -> list[Colour]:
    """Palette for a dataset without its own: distinct, bright enough colours, none black.

    Hues step by the golden ratio (neighbouring ids get far-apart hues) and saturation
    and brightness cycle, so the first 256 colours are all different.
    """
    palette: list[tuple[int, int, int]] = []
    for index in range(num_classes):
        hue = (index * 0.618033988749895) % 1.0
        saturation, value = (0.95, 0.6, 0.8)[index % 3], (0.95, 0.75, 0.55)[index // 3 % 3]
        red, green, blue = (round(255 * c) for c in colorsys.hsv_to_rgb(hue, saturation, value))
        palette.append((red, green, blue))
    return palette


def flat_palette(palette: list[Colour], ignore_index: int | None = 255) -> list[int]:
    """A 768-entry flat list for ``PIL.Image.putpalette`` (ignore id drawn in the VOC void colour)."""
    flat = [0] * 768
    for index, colour in enumerate(palette[:256]):
        flat[3 * index : 3 * index + 3] = list(colour)
    if ignore_index is not None and 0 <= ignore_index < 256 and ignore_index >= len(palette):
        flat[3 * ignore_index : 3 * ignore_index + 3] = list(VOC_VOID_COLOUR)
    return flat
