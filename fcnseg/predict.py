"""Inference on single images: load, predict logits or a mask, save a palette PNG, draw an overlay.

Every function takes uint8 RGB images (3, H, W) and applies the model's own
preprocessing through :func:`fcnseg.preprocess`, so weights trained with any
input convention are used correctly. Masks have the input's H and W.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from contextlib import contextmanager
from typing import Callable, Iterator, Sequence

import numpy as np
import torch
from PIL import Image

from .data import DatasetError, read_image_file
from .data.readers import IMAGE_SUFFIXES
from .files import atomic_path
from .preprocessing import preprocess
from .tiling import Tile, Tiling, iter_tiles


#: Rows blended at a time by :func:`overlay_image` (bounds its float working memory).
OVERLAY_BAND_ROWS = 256


class ImageError(ValueError):
    """An image file that cannot be read (missing, truncated, not an image)."""


def load_image(path: str | os.PathLike[str]) -> torch.Tensor:
    """Read an image file as a uint8 RGB tensor (3, H, W); :class:`ImageError` names a bad file.

    The datasets' reader (:func:`fcnseg.data.read_image_file`) does the decoding, so a
    picture is read the same way for prediction as for evaluation: grey and palette
    images are expanded to RGB, pixel data is used as stored (no EXIF rotation), and a
    truncated file fails here. PIL's decompression-bomb limit is lifted for the call,
    because prediction of huge images (in tiles) is a use case, not an attack.
    """
    previous_limit = Image.MAX_IMAGE_PIXELS
    try:
        Image.MAX_IMAGE_PIXELS = None
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            return read_image_file(path)
    except DatasetError as error:
        raise ImageError(str(error)) from None
    finally:
        Image.MAX_IMAGE_PIXELS = previous_limit


def list_images(inputs: Sequence[str | os.PathLike[str]]) -> tuple[list[Path], list[str]]:
    """Expand files, folders (their image files, sorted) and glob patterns into image paths.

    Returns ``(paths, problems)``: ``problems`` names each input that matched nothing.
    Files given explicitly are kept whatever their suffix (a bad one is reported when read).
    """
    import glob

    paths: list[Path] = []
    problems: list[str] = []
    for item in map(str, inputs):
        if Path(item).is_dir():
            found = sorted(p for p in Path(item).iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                problems.append(f"{item}: folder holds no image files ({', '.join(IMAGE_SUFFIXES)})")
            paths += found
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
    return unique, problems


def _check_image(image: torch.Tensor) -> None:
    if image.dtype != torch.uint8 or image.dim() != 3 or image.shape[0] != 3:
        raise ValueError(f"expected a uint8 RGB image (3, H, W), got {image.dtype} {tuple(image.shape)}")


def _device_of(model: torch.nn.Module) -> torch.device:
    parameter = next(model.parameters(), None)
    return parameter.device if parameter is not None else torch.device("cpu")


@contextmanager
def _inference(
    model: torch.nn.Module, device: str | torch.device | None
) -> Iterator[Callable[[torch.Tensor], torch.Tensor]]:
    """Yield ``forward(uint8 window (3, h, w)) -> logits (C, h, w)`` on the device.

    The model runs in eval mode (no dropout) under ``torch.inference_mode``; it is moved
    to ``device`` when given (``None``: where its parameters are) and its training flag
    is restored afterwards, so a training loop can call prediction in the middle.
    """
    device = _device_of(model) if device is None else torch.device(device)
    if _device_of(model) != device:
        model.to(device)
    was_training = model.training
    model.eval()

    def forward(window: torch.Tensor) -> torch.Tensor:
        blob = preprocess(window.to(device, non_blocking=True), model.preprocessing)
        return model(blob.unsqueeze(0))[0]

    try:
        with torch.inference_mode():
            yield forward
    finally:
        model.train(was_training)


def _as_tiling(tile: Tiling | int | None) -> Tiling | None:
    if tile is None or isinstance(tile, Tiling):
        return tile
    return Tiling(tile_size=int(tile))


def predict_logits(
    model: torch.nn.Module,
    image: torch.Tensor,
    *,
    device: str | torch.device | None = None,
    tile: Tiling | int | None = None,
) -> torch.Tensor:
    """Class scores (C, H, W) for a uint8 RGB image (3, H, W), returned on the CPU.

    The model runs on ``device`` (moved there if needed; ``None``: where it is).
    ``tile`` (a :class:`~fcnseg.tiling.Tiling` or a tile size in px) predicts in
    overlapping tiles: same result as whole-image inference, bounded memory per pass.
    """
    _check_image(image)
    tiling = _as_tiling(tile)
    with _inference(model, device) as forward:
        if tiling is None:
            return forward(image).float().cpu()
        logits = torch.empty((model.num_classes, *image.shape[-2:]), dtype=torch.float32)
        for tile_, core in iter_tiles(forward, image, tiling):
            top, bottom, left, right = tile_.core
            logits[:, top:bottom, left:right] = core.float().cpu()
        return logits


def predict_mask(
    model: torch.nn.Module,
    image: torch.Tensor,
    *,
    device: str | torch.device | None = None,
    tile: Tiling | int | None = None,
    dtype: torch.dtype = torch.int64,
    progress: Callable[[Iterator[Tile]], Iterator[Tile]] | None = None,
) -> torch.Tensor:
    """Class ids (H, W) for a uint8 RGB image (3, H, W), on the CPU; the model runs on ``device``.

    With ``tile`` only one tile's logits exist at a time (the arg-max is taken on the
    device); ``dtype=torch.uint8`` keeps the mask of a huge image small.
    ``progress`` wraps the tile iterator (e.g. a tqdm bar).
    """
    _check_image(image)
    if not dtype.is_floating_point and torch.iinfo(dtype).max < model.num_classes - 1:
        raise ValueError(f"dtype {dtype} cannot hold the class ids of {model.num_classes} classes")
    tiling = _as_tiling(tile)
    with _inference(model, device) as forward:
        if tiling is None:
            return forward(image).argmax(0).to("cpu", dtype)
        mask = torch.empty(image.shape[-2:], dtype=dtype)
        for tile_, core in iter_tiles(forward, image, tiling, progress):
            top, bottom, left, right = tile_.core
            mask[top:bottom, left:right] = core.argmax(0).to("cpu", dtype)
        return mask


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
    image: torch.Tensor,
    mask: torch.Tensor,
    palette: Sequence[Sequence[int]],
    alpha: float = 0.5,
) -> Image.Image:
    """The image with each pixel blended towards its class colour: ``(1 - alpha) * image + alpha * colour``.

    Pixels whose id has no palette colour (e.g. the ignore value 255) keep the image.
    """
    _check_image(image)
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


def save_image(picture: Image.Image, path: str | os.PathLike[str]) -> Path:
    """Save a PIL image atomically, the format taken from the suffix (.png, .jpg)."""
    path = Path(path)
    fmt = {".jpg": "JPEG", ".jpeg": "JPEG"}.get(path.suffix.lower(), "PNG")
    with atomic_path(path) as tmp:
        picture.save(tmp, format=fmt, **({"quality": 90} if fmt == "JPEG" else {}))
    return path
