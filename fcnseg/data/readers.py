"""Reading image, mask and id-list files, with errors that name the file.

Masks are read as class ids, never through colours: a palette ("P") PNG keeps its palette indices (``np.array`` of a P
image is the index plane), a grey ("L") PNG its values. Colour masks are refused here (:class:`ColourMaskError`),
because turning colours back into ids silently mislabels any colour not in a table; the folder dataset's ``colors``
option reads them through an explicit table (:mod:`fcnseg.data.colours`). JPEG masks are refused: lossy compression
changes the ids along every edge.

Images are turned upright by their EXIF orientation, as every viewer shows them; masks are used as stored. Special files
(FIFOs, devices) are refused before they are opened, so a read never blocks.
"""

from __future__ import annotations

import io
import os
import re
import stat
from pathlib import Path

import numpy as np
import scipy.io
import torch
from PIL import Image, UnidentifiedImageError

from .errors import ColourMaskError, DatasetError, ImageTooLargeError, LossyMaskError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".ppm", ".webp")
#: JPEG is listed so that a JPEG mask is found and refused with the reason, not reported missing.
MASK_SUFFIXES = (".png", ".bmp", ".tif", ".tiff", ".gif", ".pgm", ".mat", ".jpg", ".jpeg")
_MASK_MODES = ("L", "P", "I", "I;16", "1")
_COLOUR_MODES = ("RGB", "RGBA", "P", "L")

#: EXIF orientation tag value -> the transpose that shows the picture upright (EXIF 2.3, tag 0x0112).
EXIF_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180, 4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}  # fmt: skip
_EXIF_ORIENTATION_TAG = 0x0112

PathLike = str | os.PathLike[str]


def check_regular_file(path: PathLike, what: str) -> None:
    """Raise :class:`DatasetError` unless ``path`` is an existing regular file (checked without opening it)."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise DatasetError(f"{what} {path} does not exist") from None
    except OSError as error:
        raise DatasetError(f"{what} {path} cannot be read ({error.strerror})") from None
    if not stat.S_ISREG(mode):
        kind = ("a folder" if stat.S_ISDIR(mode) else "a FIFO" if stat.S_ISFIFO(mode) else
                "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else "a special file")  # fmt: skip
        raise DatasetError(f"{what} {path} is {kind}, not a regular file; expected a file")


#: Huffman-coded JPEG frames (SOF0 baseline, SOF1 extended, SOF2 progressive) and the fewest bits that every 8x8 block
#: costs in them: a DC difference and an end-of-block code in sequential frames, a DC difference in the first scan of a
#: progressive one. (Arithmetic-coded and lossless frames have no such floor and are left to the decoder.)
_MIN_BITS_PER_BLOCK = {0xC0: 2, 0xC1: 2, 0xC2: 1}
_FRAME_MARKERS = set(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}  # SOFn; C4/C8/CC are DHT, JPG, DAC


def _frame_and_scan(data: bytes) -> tuple[tuple[int, bytes] | None, int | None]:
    """The JPEG's frame header ``(SOFn marker, its bytes)`` (None if none) and where its first scan's marker begins
    (None when its headers end before a scan)."""
    position, frame = 2, None
    while position + 4 <= len(data) and data[position] == 0xFF:
        marker = data[position + 1]
        if marker == 0xFF:  # fill byte before a marker
            position += 1
            continue
        length = int.from_bytes(data[position + 2 : position + 4], "big")
        if marker == 0xDA:  # start of scan: the coded data follows its header
            return frame, position
        if marker in _FRAME_MARKERS:
            frame = (marker, data[position + 4 : position + 2 + length])
        position += 2 + length
    return frame, None


def jpeg_data_shortfall(data: bytes) -> tuple[int, int] | None:
    """``(bytes held, fewest bytes needed)`` when a JPEG's coded data is too short for its header's size, else None.

    The decoder does not notice this lie: a JPEG whose header claims 2000x2000 but whose data
    (ending in a proper end marker) covers 16x16 decodes as 2000x2000, the rest filled grey.
    The check is a lower bound, so it never refuses a complete image.
    """
    frame, position = _frame_and_scan(data)
    if position is None or frame is None or frame[0] not in _MIN_BITS_PER_BLOCK:
        return None
    marker, header = frame
    height, width, count = int.from_bytes(header[1:3], "big"), int.from_bytes(header[3:5], "big"), header[5:6]
    if not count or len(header) < 6 + 3 * count[0] or height == 0:  # height 0: given later (DNL), not checked
        return None
    sampling = [(header[7 + 3 * i] >> 4, header[7 + 3 * i] & 15) for i in range(count[0])]
    h_max, v_max = max(h for h, _ in sampling) or 1, max(v for _, v in sampling) or 1
    blocks = sum(
        _ceil_div(_ceil_div(width * h, h_max), 8) * _ceil_div(_ceil_div(height * v, v_max), 8) for h, v in sampling
    )
    needed, held = blocks * _MIN_BITS_PER_BLOCK[marker] // 8, len(data) - position
    return (held, needed) if held < needed else None


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


#: Zero bytes put in place of the end marker for :func:`decode_jpeg_fully`. libjpeg reads ahead to fill its bit
#: buffer (to 57 bits in a 64-bit build), so a complete image needs some to finish: at most 7 over 300 JPEGs of
#: every size, quality, subsampling and grey/CMYK (measured); 16 for a margin. The decoder may take them for image
#: data, so a file short of less than 16 bytes goes unnoticed.
_END_PADDING = b"\0" * 16
#: A marker in a JPEG's coded data: 0xFF then neither a stuffed 0x00, a restart marker (D0-D7) nor fill 0xFF.
_MARKER_IN_SCAN = re.compile(rb"\xff+[^\x00\xd0-\xd7\xff]")


class JpegDataRanOut(ValueError):
    """A JPEG whose coded data ends before the picture its header describes is complete."""


def _single_scan_end(data: bytes) -> int | None:
    """Where the end marker of a one-scan sequential Huffman JPEG begins (the end of its coded data), else None."""
    frame, position = _frame_and_scan(data)
    if position is None:
        return None
    end = _MARKER_IN_SCAN.search(data, position + 2 + int.from_bytes(data[position + 2 : position + 4], "big"))
    if frame is None or frame[0] not in (0xC0, 0xC1) or end is None or data[end.end() - 1] != 0xD9:
        return None  # progressive, arithmetic, several scans, or no end marker (PIL refuses that itself)
    return end.start()


def decode_jpeg_fully(data: bytes) -> Image.Image | None:
    """A baseline (or extended sequential) JPEG decoded from ``data``, refused if its coded data ran out.

    libjpeg meets the end marker too early in a file whose header claims a larger picture than its data holds (a header
    patched from 480x360 to 960x720, a file cut and closed again): it warns, which PIL does not show, and fills the rest
    grey. Here the end marker is replaced by a few zero bytes, so the decoder finds no marker and asks for more data
    instead, and PIL reports the image as truncated: :class:`JpegDataRanOut`. A complete file decodes to the same pixels
    as PIL's own decode. None where the check does not apply (progressive and arithmetic-coded JPEGs, several scans):
    decode those as usual (:func:`jpeg_data_shortfall` still bounds their data from below).
    """
    end = _single_scan_end(data) if data[:2] == b"\xff\xd8" else None
    if end is None:
        return None
    image = Image.open(io.BytesIO(data[:end] + _END_PADDING))
    try:
        image.load()
    except OSError as error:
        image.close()
        if "truncated" not in str(error):
            raise
        raise JpegDataRanOut(
            f"its coded data ends before the {image.width}x{image.height} picture its header "
            "describes is complete (the file was cut short, or its header claims a larger size)"
        ) from None
    return image


def _check_jpeg_length(image: Image.Image, path: PathLike) -> bytes:
    """Refuse a JPEG holding less data than its header's size needs (see :func:`jpeg_data_shortfall`); its bytes."""
    data = Path(path).read_bytes()
    shortfall = jpeg_data_shortfall(data)
    if shortfall is not None:
        held, needed = shortfall
        raise DatasetError(
            f"image {path} is truncated: its header says {image.width}x{image.height}, which needs at least {needed:,} "
            f"bytes of image data, but it holds {held:,}; expected a complete image file"
        )
    return data


def _decode_jpeg_fully(image: Image.Image, data: bytes, what: str, path: PathLike) -> Image.Image:
    """``image`` decoded by :func:`decode_jpeg_fully` (closed and replaced), or loaded as usual where that does not
    apply."""
    try:
        decoded = decode_jpeg_fully(data)
    except JpegDataRanOut as error:
        raise DatasetError(f"{what} {path} is truncated: {error}; expected a complete image file") from None
    if decoded is None:
        image.load()
        return image
    image.close()
    return decoded


def _open_decoded(path: PathLike, what: str, max_pixels: int | None = None) -> Image.Image:
    """Open and fully decode an image file (a truncated file fails here, not later; closed on failure)."""
    check_regular_file(path, what)
    image: Image.Image | None = None
    try:
        image = Image.open(path)
        if max_pixels is not None and image.width * image.height > max_pixels:
            raise ImageTooLargeError(
                f"{what} {path} is {image.width}x{image.height} = {image.width * image.height:,} pixels; "
                f"expected at most {max_pixels:,} (refused before decoding)"
            )
        if image.format == "JPEG":
            image = _decode_jpeg_fully(image, _check_jpeg_length(image, path), what, path)
        image.load()
        return image
    except BaseException as error:
        if image is not None:
            image.close()
        if isinstance(error, Image.DecompressionBombError):
            raise ImageTooLargeError(f"{what} {path} has too many pixels to decode safely ({error})") from None
        if isinstance(error, DatasetError) or not isinstance(error, (OSError, SyntaxError, ValueError)):
            raise
        problem = (
            "is truncated" if "truncated" in str(error) else "cannot be decoded"
        )  # UnidentifiedImageError is an OSError
        raise DatasetError(
            f"{what} {path} {problem} ({type(error).__name__}: {error}); expected a complete image file"
        ) from None


def exif_orientation(image: Image.Image) -> int:
    """The EXIF orientation of an opened image (1 = upright, also when there is no or a broken tag)."""
    try:
        value = image.getexif().get(_EXIF_ORIENTATION_TAG, 1)
    except Exception:  # a damaged EXIF block must not make the picture unreadable
        return 1
    return value if value in EXIF_TRANSPOSE else 1


def read_image_header(path: PathLike) -> tuple[int, int, int]:
    """``(width, height, orientation)`` of an image file as stored, from its header (nothing decoded)."""
    check_regular_file(path, "image")
    try:
        with Image.open(path) as image:
            return image.width, image.height, exif_orientation(image)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
        raise DatasetError(f"image {path} cannot be opened ({type(error).__name__}: {error})") from None


def read_image_file(path: PathLike, *, max_pixels: int | None = None) -> torch.Tensor:
    """An image file as a uint8 tensor (3, H, W) in RGB, turned upright by its EXIF orientation.

    Grey or palette images are expanded to RGB. ``max_pixels`` refuses a larger
    image from its header, before decoding (:class:`ImageTooLargeError`); PIL's own
    decompression-bomb limit (``Image.MAX_IMAGE_PIXELS``) still applies when opening.
    """
    with _open_decoded(path, "image", max_pixels) as image:
        return upright_rgb(image)


def upright_rgb(picture: Image.Image) -> torch.Tensor:
    """A decoded picture as a uint8 tensor (3, H, W) in RGB, turned upright by its EXIF orientation."""
    orientation = exif_orientation(picture)
    upright = picture.transpose(EXIF_TRANSPOSE[orientation]) if orientation != 1 else picture
    array = np.asarray(upright.convert("RGB") if upright.mode != "RGB" else upright)
    # (3, H, W) made in numpy: torch's parallel copy is slower on a busy CPU for these sizes.
    return torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1)))


def _refuse_jpeg_mask(image: Image.Image, path: PathLike) -> None:
    if image.format == "JPEG":
        raise LossyMaskError(
            f"mask {path} is a JPEG; expected a lossless PNG: JPEG compression changes the class ids along "
            "every edge, so the ids cannot be trusted (re-export the masks as PNG from their source)"
        )


def read_mask_file(path: PathLike) -> torch.Tensor:
    """A mask file of class ids as an int64 tensor (H, W).

    PNG/BMP/TIFF/GIF/PGM in mode L, P (palette indices), I, I;16 or 1; or an SBD ``.mat`` file (see
    :func:`read_mat_mask`). JPEG masks raise :class:`LossyMaskError`, colour masks :class:`ColourMaskError`.
    """
    if Path(path).suffix.lower() == ".mat":
        return read_mat_mask(path)
    with _open_decoded(path, "mask") as image:
        _refuse_jpeg_mask(image, path)
        if image.mode not in _MASK_MODES:
            error = ColourMaskError if image.mode in ("RGB", "RGBA") else DatasetError
            raise error(
                f"mask {path} is a {image.mode} image; expected one channel of class ids "
                f"(mode {', '.join(_MASK_MODES)}), e.g. a grey or palette PNG (colour masks: the colors option)"
            )
        array = np.array(image)  # P mode: the palette indices themselves, no colour lookup
    return torch.from_numpy(array.astype(np.int64))


def read_colour_mask(path: PathLike) -> np.ndarray:
    """A mask file as its colours: uint8 (H, W, 3) RGB (alpha dropped; palette and grey images expanded)."""
    with _open_decoded(path, "mask") as image:
        _refuse_jpeg_mask(image, path)
        if image.mode not in _COLOUR_MODES:
            raise DatasetError(
                f"mask {path} is a {image.mode} image; expected colours (mode {', '.join(_COLOUR_MODES)})"
            )
        return np.asarray(image.convert("RGB"))


def load_mat_file(path: PathLike, what: str = "mask") -> dict:
    """The variables of a MATLAB .mat file; :class:`DatasetError` naming the file when it cannot be read."""
    check_regular_file(path, what)
    try:
        return scipy.io.loadmat(path)
    except Exception as error:  # scipy raises several types (ValueError, MatReadError, OSError, ...)
        raise DatasetError(f"{what} {path} cannot be read as a .mat file ({type(error).__name__}: {error})") from None


def read_mat_mask(path: PathLike) -> torch.Tensor:
    """An SBD class label: ``loadmat(path)['GTcls'][0]['Segmentation'][0]`` as int64 (H, W)."""
    content = load_mat_file(path)
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


def read_mat_label(path: PathLike, variable: str, expected: str) -> np.ndarray:
    """The 2-D label array stored as ``variable`` in a .mat file, as int64 (whole-valued floats accepted).

    ``expected`` says what the file should be, for the error message (e.g. "a SIFT Flow SemanticLabels file").
    """
    content = load_mat_file(path)
    if variable not in content:
        raise DatasetError(
            f"mask {path} has no variable {variable!r}; expected {expected} "
            f"(found variables: {sorted(k for k in content if not k.startswith('__'))})"
        )
    label = np.asarray(content[variable])
    whole = np.issubdtype(label.dtype, np.integer) or (
        np.issubdtype(label.dtype, np.floating) and bool(np.all(np.isfinite(label) & (label == np.round(label))))
    )
    if label.ndim != 2 or not whole:
        raise DatasetError(
            f"mask {path}: {variable} is {label.dtype} with shape {label.shape}; "
            f"expected a 2-D array of whole numbers ({expected})"
        )
    return label.astype(np.int64)


def read_text_lines(path: Path, what: str) -> list[str]:
    """The lines of a UTF-8 text file (a regular file without NUL bytes); errors name ``what`` and the file."""
    check_regular_file(path, what)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise DatasetError(f"{what} {path} cannot be read as UTF-8 text ({error})") from None
    if "\0" in text:
        line = text[: text.index("\0")].count("\n") + 1
        raise DatasetError(f"{what} {path} holds a NUL byte (line {line}); expected plain text")
    return text.splitlines()


def read_id_list(path: PathLike, what: str = "split file") -> list[str]:
    """Ids from a text file, one per line (first token of each line; blank lines and # comments skipped)."""
    path = Path(path)
    if not path.exists():
        raise DatasetError(f"{what} {path} does not exist; expected a text file with one id per line")
    lines = read_text_lines(path, what)
    ids = [line.split()[0] for line in lines if line.strip() and not line.lstrip().startswith("#")]
    if not ids:
        raise DatasetError(f"{what} {path} is empty; expected one id per line")
    return ids


def split_file(split: PathLike, folder: Path) -> Path:
    """The id list of ``split``: a path as given (it has a slash or ends in .txt), else ``folder/<split>.txt``."""
    text = os.fspath(split)
    return Path(text) if os.sep in text or "/" in text or text.endswith(".txt") else folder / f"{text}.txt"


def read_split(split: PathLike, folder: Path) -> tuple[list[str], dict[str, str]]:
    """The ids of ``split`` (its list found by :func:`split_file`) and the dataset's ``split_info`` for them."""
    source = split_file(split, folder)
    return read_id_list(source), {"split": os.fspath(split), "source": str(source)}


def read_class_names(path: PathLike) -> list[str]:
    """Class names from a text file: line i is the name of id i (blank lines and repeated names are errors)."""
    path = Path(path)
    lines = read_text_lines(path, "classes file")
    while lines and not lines[-1].strip():
        lines.pop()
    names = [line.strip() for line in lines]
    if not names or any(not name for name in names):
        raise DatasetError(f"classes file {path} needs one non-empty class name per line (line i = id i)")
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise DatasetError(f"classes file {path} names {repeated} more than once; expected one line per class")
    return names
