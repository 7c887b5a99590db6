"""Uploaded bytes to an image tensor, with the checks a public endpoint needs.

Order of the checks: identify the format and read the size from the header
only (cheap: a 100-megapixel JPEG is refused before anything is decoded; so is
a JPEG whose header claims more pixels than its data can hold), then decode
fully from memory, the way ``fcnseg predict``'s reader does (same pixels), and
turn the picture upright by its EXIF orientation, as image viewers show it.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

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
    shortfall = jpeg_data_shortfall(data) if info.format == "JPEG" else None
    if shortfall is not None:
        held, needed = shortfall
        raise Undecodable(
            f"'{name}' is truncated: its header says {info.width}x{info.height}, which needs at least {needed:,} bytes "
            f"of image data, but it holds {held:,}; send the complete file"
        )
    return info


#: Huffman-coded JPEG frames (SOF0 baseline, SOF1 extended, SOF2 progressive) and the fewest bits
#: that every 8x8 block costs in them: a DC difference and an end-of-block code in sequential
#: frames, a DC difference in the first scan of a progressive one. (Arithmetic-coded and lossless
#: frames have no such floor and are left to the decoder.)
_MIN_BITS_PER_BLOCK = {0xC0: 2, 0xC1: 2, 0xC2: 1}
_FRAME_MARKERS = set(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}  # SOFn; C4/C8/CC are DHT, JPG, DAC


def jpeg_data_shortfall(data: bytes) -> tuple[int, int] | None:
    """``(bytes held, fewest bytes needed)`` when a JPEG's coded data is too short for its header's size, else None.

    The decoder does not notice this lie: a JPEG whose header claims 2000x2000 but whose data
    (ending in a proper end marker) covers 16x16 decodes as 2000x2000, the rest filled grey.
    The check is a lower bound, so it never refuses a complete image.
    """
    position, frame = 2, None
    while position + 4 <= len(data) and data[position] == 0xFF:
        marker = data[position + 1]
        if marker == 0xFF:  # fill byte before a marker
            position += 1
            continue
        length = int.from_bytes(data[position + 2 : position + 4], "big")
        if marker == 0xDA:  # start of scan: the coded data follows
            break
        if marker in _FRAME_MARKERS:
            frame = (marker, data[position + 4 : position + 2 + length])
        position += 2 + length
    else:
        return None
    if frame is None or frame[0] not in _MIN_BITS_PER_BLOCK:
        return None
    marker, header = frame
    height, width, count = int.from_bytes(header[1:3], "big"), int.from_bytes(header[3:5], "big"), header[5:6]
    if not count or len(header) < 6 + 3 * count[0] or height == 0:  # height 0: given later (DNL), not checked
        return None
    sampling = [(header[7 + 3 * i] >> 4, header[7 + 3 * i] & 15) for i in range(count[0])]
    h_max, v_max = max(h for h, _ in sampling) or 1, max(v for _, v in sampling) or 1
    blocks = sum(_ceil_div(_ceil_div(width * h, h_max), 8) * _ceil_div(_ceil_div(height * v, v_max), 8) for h, v in sampling)
    needed, held = blocks * _MIN_BITS_PER_BLOCK[marker] // 8, len(data) - position
    return (held, needed) if held < needed else None


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def decode_image(data: bytes, name: str) -> torch.Tensor:
    """Fully decode ``data`` into a uint8 RGB tensor (3, H, W), upright by its EXIF orientation.

    Decodes as ``fcnseg predict``'s reader does (grey and palette images expanded to
    RGB), in memory. :class:`Undecodable` for truncated or corrupt files (the whole
    image is decoded here, so a JPEG cut short fails instead of coming back grey at
    the bottom). Call :func:`probe_image` first: it bounds the size.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # probe_image has bounded the size
            with Image.open(io.BytesIO(data)) as picture:
                picture.load()
                _exif_upright(picture)
                array = np.asarray(picture.convert("RGB") if picture.mode != "RGB" else picture)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
        reason = f"{type(error).__name__}: {error}"
        raise Undecodable(f"'{name}' is truncated or corrupt ({reason}); send a complete image file") from None
    return torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1)))


def _exif_upright(picture: Image.Image) -> None:
    """Rotate/flip ``picture`` in place as its EXIF orientation says (a phone photo's mask then matches what viewers show)."""
    try:
        ImageOps.exif_transpose(picture, in_place=True)
    except Exception:  # noqa: BLE001 - a broken EXIF block is ignored, as image viewers ignore it
        pass


def png_bytes(picture: Image.Image) -> bytes:
    """``picture`` encoded as PNG (palette images keep their palette)."""
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return buffer.getvalue()
