"""Uploaded bytes to an image tensor, with the checks a public endpoint needs.

Order of the checks: identify the format and read the size from the header only (cheap: a 100-megapixel JPEG is refused
before anything is decoded; so is a JPEG whose header claims more pixels than its data can hold), then decode fully from
memory, the way ``fcnseg predict``'s reader does (same pixels), and turn the picture upright by its EXIF orientation, as
image viewers show it.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

import torch
from PIL import Image, UnidentifiedImageError

from ..data.readers import JpegDataRanOut, decode_jpeg_fully, jpeg_data_shortfall, upright_rgb


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
            f"'{name}' is not an image this service can read (first bytes {start!r}); send a JPEG, PNG, BMP, TIFF or "
            "WebP file"
        ) from None
    if info.pixels > max_pixels:
        raise TooLarge(
            f"'{name}' is {info.width}x{info.height} = {info.pixels:,} pixels; this service accepts at most "
            f"{max_pixels:,} pixels per image (resize it, or start the server with a larger --max-pixels)"
        )
    shortfall = jpeg_data_shortfall(data) if info.format == "JPEG" else None
    if shortfall is not None:
        held, needed = shortfall
        raise Undecodable(
            f"'{name}' is truncated: its header says {info.width}x{info.height}, which needs at least {needed:,} bytes "
            f"of image data, but it holds {held:,}; send the complete file"
        )
    return info


def decode_image(data: bytes, name: str) -> torch.Tensor:
    """Fully decode ``data`` into a uint8 RGB tensor (3, H, W), upright by its EXIF orientation.

    Decodes as ``fcnseg predict``'s reader does (grey and palette images expanded to RGB), in memory.
    :class:`Undecodable` for truncated or corrupt files (the whole image is decoded here, so a JPEG cut short fails
    instead of coming back grey at the bottom). Call :func:`probe_image` first: it bounds the size.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # probe_image has bounded the size
            with decode_jpeg_fully(data) or Image.open(io.BytesIO(data)) as picture:  # a JPEG's data must not run out
                picture.load()
                image = upright_rgb(picture)
    except JpegDataRanOut as error:
        raise Undecodable(f"'{name}' is truncated: {error}; send the complete file") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
        reason = f"{type(error).__name__}: {error}"
        raise Undecodable(f"'{name}' is truncated or corrupt ({reason}); send a complete image file") from None
    return image


def png_bytes(picture: Image.Image) -> bytes:
    """``picture`` encoded as PNG (palette images keep their palette)."""
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return buffer.getvalue()
