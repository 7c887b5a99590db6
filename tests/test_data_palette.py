"""The VOC palette against the values in DESIGN.md §5."""

from __future__ import annotations

import pytest

from fcnseg.data import default_palette, voc_palette
from fcnseg.data.palette import flat_palette


def test_voc_palette_matches_the_published_colours() -> None:
    palette = voc_palette()
    assert len(palette) == 256 and len(set(palette)) == 256
    assert palette[0] == (0, 0, 0)
    assert palette[1] == (128, 0, 0) and palette[2] == (0, 128, 0) and palette[3] == (128, 128, 0)
    assert palette[15] == (192, 128, 128) and palette[20] == (0, 64, 128)
    assert palette[255] == (224, 224, 192)  # the void colour
    assert voc_palette(21) == palette[:21]
    with pytest.raises(ValueError, match="256 colours"):
        voc_palette(300)


def test_default_palette_and_flat_form() -> None:
    assert default_palette(3) == [(0, 0, 0), (128, 0, 0), (0, 128, 0)]
    flat = flat_palette(default_palette(3), ignore_index=255)
    assert len(flat) == 768 and flat[3:6] == [128, 0, 0] and flat[765:768] == [224, 224, 192]
