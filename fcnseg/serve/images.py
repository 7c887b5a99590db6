"""Uploaded bytes to an image tensor, with the checks a public endpoint needs.

Order of the checks: identify the format and read the size from the header
only (cheap: a 100-megapixel JPEG is refused before anything is decoded), then
decode fully with :func:`fcnseg.predict.load_image`, the same reader as
``fcnseg predict``, so the service sees exactly the pixels the command line sees.
"""

from __future__ import annotations

import io
import os
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image, UnidentifiedImageError

from ..predict import ImageError, load_image


class UploadError(ValueError):
    """An upload that cannot be segmented; ``status`` is the HTTP status that says why."""

    status = 422


class NotAnImage(UploadError):
    status = 415


class TooLarge(UploadError):
    status = 413


class Undecodable(UploadError):
    status = 422


@dataclass(frozen=True)
class ImageInfo:
    """What the header of an image file says."""

    format: str
    width: int
    height: int

    @property
    def pixels(self) -> int:
        return self.width * self.height


def probe_image(data: bytes, name: str, max_pixels: int) -> ImageInfo:
    """Format and size from the header; :class:`NotAnImage` or :class:`TooLarge` when refused."""
    if not data:
        raise Undecodable(f"'{name}' is empty; send an image file (JPEG, PNG, ...)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as picture:  # lazy: reads the header only
                info = ImageInfo(picture.format or "unknown", *picture.size)
    except Image.DecompressionBombError as error:
        raise TooLarge(f"'{name}' is too large to decode safely ({error})") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
        start = data[:8]
        raise NotAnImage(
            f"'{name}' is not an image this service can read (first bytes {start!r}); send a JPEG, PNG, BMP, TIFF or WebP file"
        ) from None
    if info.pixels > max_pixels:
        raise TooLarge(
            f"'{name}' is {info.width}x{info.height} = {info.pixels:,} pixels; this service accepts at most "
            f"{max_pixels:,} pixels per image (resize it, or start the server with a larger --max-pixels)"
        )
    return info


def decode_image(data: bytes, name: str) -> torch.Tensor:
    """Fully decode ``data`` into a uint8 RGB tensor (3, H, W) with ``fcnseg predict``'s reader.

    :class:`Undecodable` for truncated or corrupt files (the whole image is decoded
    here, so a JPEG cut short fails instead of coming back grey at the bottom).
    """
    # load_image reads files; the format is sniffed from the bytes, so the name needs no suffix.
    handle, temporary = tempfile.mkstemp(prefix="fcnseg-upload-")
    try:
        with os.fdopen(handle, "wb") as file:
            file.write(data)
        return load_image(temporary)
    except ImageError as error:
        reason = str(error).replace(temporary, f"'{name}'")
        raise Undecodable(f"'{name}' is truncated or corrupt: {reason}") from None
    finally:
        Path(temporary).unlink(missing_ok=True)


def png_bytes(picture: Image.Image) -> bytes:
    """``picture`` encoded as PNG (palette images keep their palette)."""
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return buffer.getvalue()
