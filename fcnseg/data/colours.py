"""Colour masks: a table from RGB colours to class ids (the folder dataset's ``colors`` option).

The table file is plain text, one colour per line, ``R G B ID [name]`` (commas
may separate the numbers; ``#`` starts a comment line)::

    # R   G   B   id  name
    128 128 128    0  sky
    128   0   0    1  building
      0   0   0  255  void      <- the ignore value: not trained, not scored

Several colours may share an id. A mask pixel whose colour is not in the table
is an error naming the mask, the colour and the table: colours are never
guessed at read time. ``fcnseg data`` proposes a table from the colours it
finds (:func:`propose_colour_table`).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from .errors import DatasetError
from .palette import VOC_VOID_COLOUR, Colour, default_palette, voc_palette
from .readers import read_text_lines

#: More distinct colours than this in the masks means they are not label images (e.g. photos, JPEG).
MAX_TABLE_COLOURS = 256


def _codes(rgb: np.ndarray) -> np.ndarray:
    """One int per pixel: 0xRRGGBB."""
    rgb = rgb.astype(np.int64)
    return (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]


class ColourTable:
    """Colours -> class ids (and optional names); ``source`` names the file for messages."""

    def __init__(self, entries: dict[Colour, int], names: dict[int, str] | None = None, source: str = "") -> None:
        self.entries = dict(entries)
        self.names = dict(names or {})
        self.source = source
        order = sorted(self.entries)  # (R, G, B) order is 0xRRGGBB order: the keys come out sorted
        self._keys = _codes(np.array(order, dtype=np.int64).reshape(-1, 3))
        self._ids = np.array([self.entries[colour] for colour in order], dtype=np.int64)

    def to_ids(self, rgb: np.ndarray, path: str | os.PathLike[str]) -> torch.Tensor:
        """Class ids (int64 (H, W)) of a colour mask (uint8 (H, W, 3)); an unknown colour is an error."""
        codes = _codes(rgb)
        position = np.searchsorted(self._keys, codes).clip(max=len(self._keys) - 1)
        unknown = self._keys[position] != codes
        if unknown.any():
            row, col = (int(v) for v in np.argwhere(unknown)[0])
            raise DatasetError(
                f"mask {path} has colour {tuple(int(v) for v in rgb[row, col])} at (row, col) ({row}, {col}), "
                f"which colour table {self.source} does not list; expected one of its {len(self.entries)} colours"
            )
        return torch.from_numpy(self._ids[position])

    def class_names(self, ignore_index: int) -> list[str]:
        """Names for ids 0..max (the ignore id left out), from the table or ``class_<id>``."""
        count = max((i for i in self.entries.values() if i != ignore_index), default=-1) + 1
        return [self.names.get(index, f"class_{index}") for index in range(count)]

    def palette(self, num_classes: int) -> list[Colour]:
        """The table's first colour of each id (a default colour for an id no colour maps to)."""
        palette = default_palette(num_classes)
        for colour, index in reversed(list(self.entries.items())):
            if index < num_classes:
                palette[index] = colour
        return palette

    def text(self) -> str:
        """The table in the file format this module reads."""
        lines = ["# fcnseg colour table: R G B id [name]; edit ids/names, 255 (the ignore value) = not labelled"]
        for colour, index in sorted(self.entries.items(), key=lambda item: (item[1], item[0])):
            lines.append(f"{colour[0]:>3} {colour[1]:>3} {colour[2]:>3} {index:>4}  {self.names.get(index, '')}".rstrip())
        return "\n".join(lines) + "\n"


def read_colour_table(path: str | os.PathLike[str]) -> ColourTable:
    """Read a colour table file (format in the module docstring); errors name the file and line."""
    path = Path(path)
    lines = read_text_lines(path, "colour table")
    entries: dict[Colour, int] = {}
    names: dict[int, str] = {}
    for number, line in enumerate(lines, 1):
        fields = line.replace(",", " ").split(maxsplit=4)
        if not fields or fields[0].startswith("#"):
            continue
        try:
            r, g, b, index = (int(v) for v in fields[:4])
            if not all(0 <= v <= 255 for v in (r, g, b)) or index < 0:
                raise ValueError
        except ValueError:
            raise DatasetError(
                f"colour table {path} line {number} is {line.strip()!r}; expected 'R G B ID [name]' "
                "with R, G, B in 0..255 and a class id >= 0"
            ) from None
        if entries.get((r, g, b), index) != index:
            raise DatasetError(f"colour table {path} line {number}: colour {(r, g, b)} is listed with two ids")
        entries[(r, g, b)] = index
        if len(fields) == 5:
            names.setdefault(index, fields[4].strip())
    if not entries:
        raise DatasetError(f"colour table {path} lists no colours; expected lines 'R G B ID [name]'")
    return ColourTable(entries, names, str(path))


def count_colours(rgb: np.ndarray) -> dict[Colour, int]:
    """Pixels per distinct colour of a uint8 (H, W, 3) image."""
    codes, counts = np.unique(_codes(rgb), return_counts=True)
    return {(int(c >> 16), int(c >> 8 & 255), int(c & 255)): int(n) for c, n in zip(codes, counts)}


def propose_colour_table(colours: dict[Colour, int] | set[Colour], ignore_index: int = 255) -> ColourTable | None:
    """A table for the colours found in masks, or None if there are too many to be labels.

    Greys (R = G = B) map to their value (ids stored as grey RGB); VOC palette
    colours to their VOC ids; any other set of colours to ids 0, 1, ... in RGB
    order, which the user should check. The VOC void colour always maps to
    ``ignore_index``.
    """
    found = sorted(colours)
    if len(found) > MAX_TABLE_COLOURS:
        return None
    if all(r == g == b for r, g, b in found):
        return ColourTable({colour: colour[0] for colour in found})
    voc = {colour: index for index, colour in enumerate(voc_palette(255))}
    others = [colour for colour in found if colour != VOC_VOID_COLOUR]
    entries = {colour: voc[colour] for colour in others} if all(c in voc for c in others) else {
        colour: index for index, colour in enumerate(others)}  # fmt: skip
    return ColourTable({**entries, **({VOC_VOID_COLOUR: ignore_index} if VOC_VOID_COLOUR in found else {})})
