"""The VOC palette against the values in DESIGN.md §5."""

from __future__ import annotations

import numpy as np
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


def test_default_palette_is_distinct_and_never_black() -> None:
    palette = default_palette(256)
    assert len(set(palette)) == 256
    assert all(sum(colour) >= 150 for colour in palette)  # black reads as "unlabelled"
    assert (224, 224, 192) not in palette  # nor the void colour
    first = np.array(default_palette(12), float)
    distances = np.sqrt(((first[:, None] - first[None]) ** 2).sum(-1)) + np.eye(12) * 1e9
    assert distances.min() > 40  # neighbouring ids are told apart at a glance
    assert default_palette(3) == palette[:3]


def test_flat_form() -> None:
    flat = flat_palette(voc_palette(3), ignore_index=255)
    assert len(flat) == 768 and flat[3:6] == [128, 0, 0] and flat[765:768] == [224, 224, 192]


def test_palettes_of_the_dataset_kinds(tmp_path) -> None:
    """VOC-like kinds keep VOC's palette; folders get the distinct one unless a palette is given."""
    from PIL import Image

    from fcnseg.data import DatasetError, open_dataset

    assert open_dataset("synthetic", None, "val", num_images=1, size=8).palette[:3] == voc_palette(3)
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(tmp_path / "images" / "a.png")
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(tmp_path / "masks" / "a.png")
    assert open_dataset("folder", tmp_path, None, num_classes=3).palette == default_palette(3)
    given = [[1, 2, 3], [4, 5, 6]]
    assert open_dataset("folder", tmp_path, None, num_classes=2, palette=given).palette == [(1, 2, 3), (4, 5, 6)]
    with pytest.raises(DatasetError, match=r"palette entry \[1, 2\] is not a colour"):
        open_dataset("folder", tmp_path, None, num_classes=2, palette=[[1, 2], [3, 4, 5]])
