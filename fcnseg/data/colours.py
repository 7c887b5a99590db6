"""Colour masks: a table from RGB colours to class ids (the folder dataset's ``colors`` option).

The table file is plain text, one colour per line, ``R G B ID [name]`` (commas
may separate the numbers; ``#`` starts a comment line)::

    # R   G   B   id  name
    128 128 128    0  sky
    128   0   0    1  building
      0   0   0  255  void      <- the ignore value: not trained, not scored

Several colours may share an id. A mask pixel whose colour is not in the table is an error naming the mask, the colour
and the table: colours are never guessed at read time. ``fcnseg data`` proposes a table from the colours it finds
(:func:`propose_colour_table`): ids 0..K-1 for the K class colours, and 255 (the ignore value) for the colours that look
unlabelled (:func:`unlabelled_colours`).
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
#: Black covering less than this share of the pixels reads as "unlabelled" (void), not as a background class.
UNLABELLED_MAX_SHARE = 0.10
BLACK: Colour = (0, 0, 0)


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
            lines.append(
                f"{colour[0]:>3} {colour[1]:>3} {colour[2]:>3} {index:>4}  {self.names.get(index, '')}".rstrip()
            )
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
    return {(int(c >> 16), int(c >> 8 & 255), int(c & 255)): int(n) for c, n in zip(codes, counts, strict=True)}


def count_border_colours(rgb: np.ndarray) -> dict[Colour, int]:
    """Pixels per colour that lie on a region border: a 4-neighbour of another colour, or on the image's frame."""
    codes = _codes(rgb)
    border = np.zeros(codes.shape, bool)
    border[[0, -1], :] = border[:, [0, -1]] = True
    vertical, horizontal = codes[1:] != codes[:-1], codes[:, 1:] != codes[:, :-1]
    border[1:] |= vertical
    border[:-1] |= vertical
    border[:, 1:] |= horizontal
    border[:, :-1] |= horizontal
    values, counts = np.unique(codes[border], return_counts=True)
    return {(int(c >> 16), int(c >> 8 & 255), int(c & 255)): int(n) for c, n in zip(values, counts, strict=True)}


def unlabelled_colours(
    counts: dict[Colour, int], borders: dict[Colour, int] | None = None, num_classes: int | None = None
) -> list[Colour]:
    """The colours of colour masks that look like "unlabelled" (to map to the ignore value), most likely first.

    The rule: colours rank by how unlabelled they look: black first (the void colour of CamVid, Cityscapes and most
    annotation tools), then by the share of their pixels on region borders (thin outlines and anti-aliased edges lie all
    on borders; ``borders`` from :func:`count_border_colours`), then by fewest pixels. With more colours than the
    ``num_classes`` classes, the surplus is taken from the top of that ranking; black is also taken when it covers under
    :data:`UNLABELLED_MAX_SHARE` of the pixels (a void, not a background class). ``counts``: pixels per colour.
    """
    total = sum(counts.values()) or 1
    border = {colour: (borders or {}).get(colour, 0) / max(count, 1) for colour, count in counts.items()}
    ranked = sorted(counts, key=lambda colour: (colour != BLACK, -border[colour], counts[colour], colour))
    surplus = max(len(counts) - num_classes, 0) if num_classes is not None else 0
    chosen = ranked[:surplus]
    if BLACK in counts and BLACK not in chosen and len(counts) > 1 and counts[BLACK] / total < UNLABELLED_MAX_SHARE:
        chosen.append(BLACK)
    return chosen


def propose_colour_table(
    colours: dict[Colour, int] | set[Colour],
    ignore_index: int = 255,
    *,
    num_classes: int | None = None,
    borders: dict[Colour, int] | None = None,
) -> ColourTable | None:
    """A table for the colours found in masks, or None if there are too many to be labels.

    Greys (R = G = B) map to their value (ids stored as grey RGB); VOC palette colours to their VOC ids when those fit
    ``num_classes`` (the VOC void colour to ``ignore_index``); any other set of colours to ids 0, 1, ... in RGB order,
    except the colours :func:`unlabelled_colours` picks (given pixel ``colours`` counts and ``borders``), which map to
    ``ignore_index`` and are named "unlabelled". With ``num_classes`` the ids stay below it. The user should check the
    ids.
    """
    found = sorted(colours)
    if len(found) > MAX_TABLE_COLOURS:
        return None
    if all(r == g == b for r, g, b in found):
        return ColourTable({colour: colour[0] for colour in found})
    voc = {colour: index for index, colour in enumerate(voc_palette(255))}
    others = [colour for colour in found if colour != VOC_VOID_COLOUR]
    void = {VOC_VOID_COLOUR: ignore_index} if VOC_VOID_COLOUR in found else {}
    # The 255-colour VOC palette holds many colours of other datasets (CamVid's): its ids only where they fit.
    if all(c in voc for c in others) and (
        num_classes is None or max((voc[c] for c in others), default=0) < num_classes
    ):
        return ColourTable({**{colour: voc[colour] for colour in others}, **void})
    counts = {colour: (colours[colour] if isinstance(colours, dict) else 0) for colour in others}
    unlabelled = list(void) + unlabelled_colours(counts, borders, num_classes)
    labelled = [colour for colour in found if colour not in unlabelled]
    entries = {colour: index for index, colour in enumerate(labelled)}
    names = {ignore_index: "unlabelled"} if unlabelled else {}
    return ColourTable({**entries, **dict.fromkeys(unlabelled, ignore_index)}, names)
