"""Image files around prediction: read inputs, expand folders and globs, write masks and overlays.

The prediction itself is :class:`fcnseg.inference.predictor.Predictor`'s. Images are uint8 RGB
tensors (3, H, W); masks (H, W) of class ids have the image's H and W.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from ..data import DatasetError, read_image_file
from ..data.errors import ImageTooLargeError
from ..data.readers import IMAGE_SUFFIXES
from ..files import atomic_path
from ..inference.predictor import Predictor, check_image

#: Rows blended at a time by :func:`overlay_image` (bounds its float working memory).
OVERLAY_BAND_ROWS = 256


class ImageError(ValueError):
    """An image file that cannot be read (missing, truncated, not an image)."""


class ImageTooLarge(ImageError):
    """An image with more pixels than the decode budget allows (refused from its header)."""


#: Bytes held per pixel of an image predicted in tiles: PIL's 4-byte decode buffer, the uint8 RGB tensor,
#: the uint8 mask and a uint8 overlay, plus slack for PNG encoding (measured ~10; rounded up).
BYTES_PER_IMAGE_PIXEL = 12


def max_pixels_for(budget_bytes: int) -> int:
    """The largest image (in pixels) whose decoded copies fit ``budget_bytes`` while it is predicted in tiles."""
    return max(1, int(budget_bytes) // BYTES_PER_IMAGE_PIXEL)


def load_image(path: str | os.PathLike[str], max_pixels: int | None = None) -> torch.Tensor:
    """Read an image file as a uint8 RGB tensor (3, H, W); :class:`ImageError` names a bad file.

    The datasets' reader (:func:`fcnseg.data.read_image_file`) does the decoding, so a picture is read the same way for
    prediction as for evaluation: upright by its EXIF orientation, grey and palette images expanded to RGB, truncated
    files refused, special files (FIFOs, devices) refused without being opened. PIL's decompression-bomb limit is
    replaced by ``max_pixels`` (see :func:`max_pixels_for`), checked from the header before decoding: prediction of huge
    images in tiles is a use case, an unbounded decode is not.
    """
    previous_limit = Image.MAX_IMAGE_PIXELS
    try:
        Image.MAX_IMAGE_PIXELS = None
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            return read_image_file(path, max_pixels=max_pixels)
    except DatasetError as error:
        raise (ImageTooLarge if isinstance(error, ImageTooLargeError) else ImageError)(str(error)) from None
    finally:
        Image.MAX_IMAGE_PIXELS = previous_limit


def list_images(inputs: Sequence[str | os.PathLike[str]]) -> tuple[list[Path], list[str], list[str]]:
    """Expand files, folders (their image files, sorted) and glob patterns into image paths.

    Returns ``(paths, problems, skipped)``: ``problems`` names each input that matched nothing
    and each image-named entry of a folder that cannot be an image (a folder, a dangling link,
    a FIFO or device); ``skipped`` each other entry of a folder, with why it was left out.
    Files given explicitly are kept whatever their suffix (a bad one is reported when read).
    """
    import glob
    import stat

    paths: list[Path] = []
    problems: list[str] = []
    skipped: list[str] = []
    for item in map(str, inputs):
        if Path(item).is_dir():
            before = len(paths)
            for entry in sorted(Path(item).iterdir()):
                if entry.suffix.lower() not in IMAGE_SUFFIXES:
                    skipped.append(f"{entry}: not an image file name ({', '.join(IMAGE_SUFFIXES)})")
                elif not entry.exists():
                    problems.append(f"{entry}: a link to nothing")
                elif not stat.S_ISREG(entry.stat().st_mode):
                    problems.append(f"{entry}: {'a folder' if entry.is_dir() else 'not a regular file'}, not an image")
                else:
                    paths.append(entry)
            if len(paths) == before:
                problems.append(f"{item}: folder holds no image files ({', '.join(IMAGE_SUFFIXES)})")
        elif Path(item).exists():
            paths.append(Path(item))
        elif glob.has_magic(item):
            found = sorted(Path(p) for p in glob.glob(item, recursive=True) if Path(p).is_file())
            if not found:
                problems.append(f"{item}: pattern matches no files")
            paths += found
        else:
            problems.append(f"{item}: no such file or folder")
    unique = list(dict.fromkeys(paths))  # the same file named twice is predicted once
    return unique, problems, skipped


def predict_mask(model: torch.nn.Module, image: torch.Tensor, **options: Any) -> torch.Tensor:
    """Class ids (H, W), int64 on the CPU, of one uint8 RGB image: ``Predictor(model, **options).mask(image)``."""
    return Predictor(model, **options).mask(image).long()


def predict_logits(model: torch.nn.Module, image: torch.Tensor, **options: Any) -> torch.Tensor:
    """Class scores (C, H, W) of one uint8 RGB image: ``Predictor(model, **options).logits(image)``."""
    return Predictor(model, **options).logits(image)


def _palette_bytes(palette: Sequence[Sequence[int]]) -> list[int]:
    flat = [int(v) for colour in palette[:256] for v in colour]
    return flat + [0] * (768 - len(flat))


def mask_to_image(mask: torch.Tensor | np.ndarray, palette: Sequence[Sequence[int]]) -> Image.Image:
    """A palette ("P" mode) PIL image whose pixel values are the class ids of ``mask`` (H, W)."""
    array = mask.cpu().numpy() if isinstance(mask, torch.Tensor) else np.asarray(mask)
    if array.ndim != 2:
        raise ValueError(f"expected a mask (H, W), got shape {array.shape}")
    if array.size and (array.min() < 0 or array.max() > 255):
        raise ValueError(f"class ids must be in 0..255 for a palette PNG, got {array.min()}..{array.max()}")
    picture = Image.fromarray(array.astype(np.uint8))  # "L"; putpalette turns it into "P"
    picture.putpalette(_palette_bytes(palette))
    return picture


def save_mask_png(
    mask: torch.Tensor | np.ndarray, palette: Sequence[Sequence[int]], path: str | os.PathLike[str]
) -> Path:
    """Write ``mask`` (H, W) as a palette PNG of class ids (atomically); returns the path."""
    picture = mask_to_image(mask, palette)
    with atomic_path(path) as tmp:
        picture.save(tmp, format="PNG")
    return Path(path)


def overlay_image(
    image: torch.Tensor, mask: torch.Tensor, palette: Sequence[Sequence[int]], alpha: float = 0.5
) -> Image.Image:
    """The image with each pixel blended towards its class colour: ``(1 - alpha) * image + alpha * colour``.

    Pixels whose id has no palette colour (e.g. the ignore value 255) keep the image.
    """
    check_image(image)
    if mask.shape != image.shape[-2:]:
        raise ValueError(f"mask {tuple(mask.shape)} does not match image {tuple(image.shape[-2:])}")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in 0..1, got {alpha}")
    rgb = image.permute(1, 2, 0).cpu().numpy()  # a view: (H, W, 3) uint8
    ids = mask.cpu().numpy()
    colours = np.asarray(palette, dtype=np.float32).reshape(-1, 3)
    out = np.empty_like(rgb)
    for top in range(0, rgb.shape[0], OVERLAY_BAND_ROWS):  # in bands: float copies of a huge image would not fit
        band = slice(top, top + OVERLAY_BAND_ROWS)
        pixels = rgb[band].astype(np.float32)
        band_ids = ids[band].astype(np.int64)
        known = (band_ids >= 0) & (band_ids < len(colours))
        pixels[known] = (1 - alpha) * pixels[known] + alpha * colours[band_ids[known]]
        out[band] = np.clip(np.rint(pixels), 0, 255)
    return Image.fromarray(out)


def with_legend(
    picture: Image.Image, mask: torch.Tensor, classes: Sequence[str], palette: Sequence[Sequence[int]]
) -> Image.Image:
    """``picture`` with a band below naming the colour of every class present in ``mask``."""
    from PIL import ImageDraw

    present = [c for c in torch.as_tensor(mask).unique().tolist() if 0 <= c < len(classes)]
    row_height, swatch = 16, 12
    per_row = max(1, picture.width // 140)
    rows = -(-len(present) // per_row)
    out = Image.new("RGB", (picture.width, picture.height + rows * row_height + 4), (255, 255, 255))
    out.paste(picture.convert("RGB"), (0, 0))
    draw = ImageDraw.Draw(out)
    for number, class_id in enumerate(present):
        x, y = 4 + (number % per_row) * 140, picture.height + 4 + (number // per_row) * row_height
        draw.rectangle([x, y, x + swatch, y + swatch], fill=tuple(palette[class_id]), outline=(0, 0, 0))
        draw.text((x + swatch + 4, y), str(classes[class_id])[:18], fill=(0, 0, 0))
    return out


def save_image(picture: Image.Image, path: str | os.PathLike[str]) -> Path:
    """Save a PIL image atomically, the format taken from the suffix (.png, .jpg)."""
    path = Path(path)
    fmt = {".jpg": "JPEG", ".jpeg": "JPEG"}.get(path.suffix.lower(), "PNG")
    with atomic_path(path) as tmp:
        picture.save(tmp, format=fmt, **({"quality": 90} if fmt == "JPEG" else {}))
    return path
