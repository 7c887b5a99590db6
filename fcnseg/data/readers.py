"""Reading image, mask and id-list files, with errors that name the file.

Masks are read as class ids, never through colours: a palette ("P") PNG keeps
its palette indices (``np.array`` of a P image is the index plane), a grey
("L") PNG its values. Colour masks are refused, because turning colours back
into ids silently mislabels any colour not in the palette.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import scipy.io
import torch
from PIL import Image, UnidentifiedImageError

from .errors import DatasetError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".ppm", ".webp")
MASK_SUFFIXES = (".png", ".bmp", ".tif", ".tiff", ".gif", ".pgm", ".mat")
_MASK_MODES = ("L", "P", "I", "I;16", "1")

PathLike = str | os.PathLike[str]


def _open_decoded(path: PathLike, what: str) -> Image.Image:
    """Open and fully decode an image file (a truncated file fails here, not later)."""
    try:
        image = Image.open(path)
        image.load()
        return image
    except FileNotFoundError:
        raise DatasetError(f"{what} {path} does not exist") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
        raise DatasetError(
            f"{what} {path} cannot be decoded ({type(error).__name__}: {error}); expected a complete image file"
        ) from None


def read_image_file(path: PathLike) -> torch.Tensor:
    """An image file as a uint8 tensor (3, H, W) in RGB (grey or palette images are expanded)."""
    with _open_decoded(path, "image") as image:
        array = np.asarray(image.convert("RGB") if image.mode != "RGB" else image)
    # (3, H, W) made in numpy: torch's parallel copy is slower on a busy CPU for these sizes.
    return torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1)))


def read_mask_file(path: PathLike) -> torch.Tensor:
    """A mask file of class ids as an int64 tensor (H, W).

    PNG/BMP/TIFF/GIF/PGM in mode L, P (palette indices), I, I;16 or 1; or an SBD
    ``.mat`` file (see :func:`read_mat_mask`).
    """
    if Path(path).suffix.lower() == ".mat":
        return read_mat_mask(path)
    with _open_decoded(path, "mask") as image:
        if image.mode not in _MASK_MODES:
            raise DatasetError(
                f"mask {path} is a {image.mode} image; expected one channel of class ids "
                f"(mode {', '.join(_MASK_MODES)}), e.g. a grey or palette PNG"
            )
        array = np.array(image)  # P mode: the palette indices themselves, no colour lookup
    return torch.from_numpy(array.astype(np.int64))


def read_mat_mask(path: PathLike) -> torch.Tensor:
    """An SBD class label: ``loadmat(path)['GTcls'][0]['Segmentation'][0]`` as int64 (H, W)."""
    try:
        content = scipy.io.loadmat(path)
    except FileNotFoundError:
        raise DatasetError(f"mask {path} does not exist") from None
    except Exception as error:  # scipy raises several types (ValueError, MatReadError, OSError, ...)
        raise DatasetError(f"mask {path} cannot be read as a .mat file ({type(error).__name__}: {error})") from None
    try:
        label = content["GTcls"][0]["Segmentation"][0]
    except (KeyError, IndexError, ValueError, TypeError):
        raise DatasetError(
            f"mask {path} has no GTcls.Segmentation; expected an SBD cls/*.mat file "
            f"(found variables: {sorted(k for k in content if not k.startswith('__'))})"
        ) from None
    label = np.asarray(label)
    if label.ndim != 2 or not np.issubdtype(label.dtype, np.integer):
        raise DatasetError(
            f"mask {path}: GTcls.Segmentation is {label.dtype} with shape {label.shape}; expected a 2-D integer array"
        )
    return torch.from_numpy(label.astype(np.int64))


def read_id_list(path: PathLike, what: str = "split file") -> list[str]:
    """Ids from a text file, one per line (first token of each line; blank lines and # comments skipped)."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"{what} {path} does not exist; expected a text file with one id per line")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise DatasetError(f"{what} {path} cannot be read as UTF-8 text ({error})") from None
    ids = [line.split()[0] for line in lines if line.strip() and not line.lstrip().startswith("#")]
    if not ids:
        raise DatasetError(f"{what} {path} is empty; expected one id per line")
    return ids


def read_class_names(path: PathLike) -> list[str]:
    """Class names from a text file: line i is the name of id i (blank lines are an error)."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise DatasetError(f"classes file {path} cannot be read ({error})") from None
    while lines and not lines[-1].strip():
        lines.pop()
    names = [line.strip() for line in lines]
    if not names or any(not name for name in names):
        raise DatasetError(f"classes file {path} needs one non-empty class name per line (line i = id i)")
    return names
