"""Files of per-pixel confidence: 16-bit PNGs and float16 ``.npy`` of maps with values in [0, 1].

Encodings (what ``fcnseg predict --confidence`` and ``fcnseg serve`` write):

- 16-bit PNG (greyscale, one channel): stored value ``v = round(clip(x, 0, 1) * 65535)``,
  read back as ``x = v / 65535`` (error at most 0.5 / 65535 = 7.6e-6).
- ``.npy``: float16 ``x`` as computed (relative error at most 2^-11, about 4.9e-4).

Beside either, ``fcnseg predict`` writes a picture for a person (:func:`unit_map_view`): the map
through a colour map, with a colour bar (the exact files look nearly uniform dark grey).

Maps: the top-1 probability, in [1/C, 1]; the entropy normalised by ln C, in [0, 1] (0 for a
one-class model); the mutual information of MC-dropout, normalised by ln C likewise; and the
full softmax (C, H, W) as float16 ``.npy``.
"""

from __future__ import annotations

import io
import math
import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..files import atomic_path

PNG16_MAX = 65535


def normalised_entropy(entropy: torch.Tensor, num_classes: int) -> torch.Tensor:
    """``entropy`` (nats) divided by ln C, its largest value, so that it lies in [0, 1]."""
    return entropy / math.log(num_classes) if num_classes > 1 else torch.zeros_like(entropy)


def unit_png16(values: torch.Tensor | np.ndarray) -> Image.Image:
    """A 16-bit greyscale image of a map (H, W) of values in [0, 1]: ``round(x * 65535)``."""
    array = values.numpy() if isinstance(values, torch.Tensor) else np.asarray(values)
    if array.ndim != 2:
        raise ValueError(f"expected a map (H, W), got shape {array.shape}")
    return Image.fromarray(np.rint(np.clip(array.astype(np.float64), 0.0, 1.0) * PNG16_MAX).astype(np.uint16))


def png16_bytes(values: torch.Tensor | np.ndarray) -> bytes:
    """:func:`unit_png16` encoded as PNG bytes."""
    buffer = io.BytesIO()
    unit_png16(values).save(buffer, format="PNG")
    return buffer.getvalue()


def save_unit_png16(values: torch.Tensor | np.ndarray, path: str | os.PathLike[str]) -> Path:
    """Write :func:`unit_png16` of ``values`` to ``path`` atomically; returns the path."""
    with atomic_path(path) as tmp:
        unit_png16(values).save(tmp, format="PNG")
    return Path(path)


#: Colour map of :func:`unit_map_view`: perceptually uniform (equal steps of value look like equal steps of colour).
VIEW_COLOURMAP = "viridis"
#: Width of the band right of a map's picture that holds its colour bar and labels, in px.
VIEW_BAND = 84


def unit_map_view(values: torch.Tensor | np.ndarray, title: str) -> Image.Image:
    """A picture of a map (H, W) of values in [0, 1] for a person to read, at the map's size.

    The 16-bit file holds the exact values but looks nearly uniform dark grey; here each value is a
    colour of :data:`VIEW_COLOURMAP` on a fixed 0..1 scale (pictures of different images compare),
    with a colour bar labelled 0, 0.5 and 1 and ``title`` in a white band on the right.
    """
    from matplotlib import colormaps
    from PIL import ImageDraw

    array = values.numpy() if isinstance(values, torch.Tensor) else np.asarray(values)
    if array.ndim != 2:
        raise ValueError(f"expected a map (H, W), got shape {array.shape}")
    lut = np.rint(colormaps[VIEW_COLOURMAP](np.linspace(0.0, 1.0, 256))[:, :3] * 255).astype(np.uint8)
    levels = np.rint(np.clip(np.nan_to_num(array.astype(np.float32)), 0.0, 1.0) * 255).astype(np.uint8)
    height, width = array.shape
    canvas = Image.new("RGB", (width + VIEW_BAND, max(height, 120)), (255, 255, 255))
    canvas.paste(Image.fromarray(lut[levels]), (0, 0))
    top, bottom, left = 18, canvas.height - 8, width + 10  # the bar: 1 at the top, 0 at the bottom
    ramp = lut[np.rint(np.linspace(255, 0, bottom - top)).astype(np.int64)]
    canvas.paste(Image.fromarray(np.repeat(ramp[:, None], 14, axis=1)), (left, top))
    draw = ImageDraw.Draw(canvas)
    draw.rectangle([left - 1, top - 1, left + 14, bottom], outline=(0, 0, 0))
    draw.text((width + 4, 3), title[:13], fill=(0, 0, 0))
    for value in (1.0, 0.5, 0.0):
        y = round(bottom - 1 - value * (bottom - top - 1))
        draw.line([left + 14, y, left + 18, y], fill=(0, 0, 0))
        draw.text((left + 21, min(max(y - 5, top - 4), bottom - 10)), f"{value:g}", fill=(0, 0, 0))
    return canvas


def save_unit_map_view(values: torch.Tensor | np.ndarray, title: str, path: str | os.PathLike[str]) -> Path:
    """Write :func:`unit_map_view` of ``values`` as a PNG to ``path`` atomically; returns the path."""
    picture = unit_map_view(values, title)
    with atomic_path(path) as tmp:
        picture.save(tmp, format="PNG")
    return Path(path)


def read_unit_png16(path: str | os.PathLike[str] | io.BytesIO) -> np.ndarray:
    """A map written by :func:`save_unit_png16`, as float32 values in [0, 1]."""
    with Image.open(path) as picture:
        if picture.mode not in ("I;16", "I"):
            raise ValueError(f"{path}: expected a 16-bit greyscale PNG, got mode {picture.mode}")
        return (np.asarray(picture).astype(np.float64) / PNG16_MAX).astype(np.float32)


def save_float16_npy(values: torch.Tensor | np.ndarray, path: str | os.PathLike[str]) -> Path:
    """Write ``values`` as a float16 ``.npy`` file, atomically; returns the path."""
    array = values.numpy() if isinstance(values, torch.Tensor) else np.asarray(values)
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        np.save(handle, array.astype(np.float16))  # a handle: np.save would append .npy to the temporary name
    return Path(path)
