"""The exception types for bad dataset input."""

from __future__ import annotations


class DatasetError(ValueError):
    """A dataset that cannot be opened or an item that cannot be read.

    The message always names the file (or folder, or value) at fault and what
    was expected, e.g. ``mask .../a.png has label 37 at (12, 40); expected 0..20 or 255``.
    """


class ColourMaskError(DatasetError):
    """A mask of colours (RGB) where one channel of class ids was expected (see the ``colors`` option)."""


class LossyMaskError(DatasetError):
    """A mask stored with lossy compression (JPEG): its class ids are changed at every edge."""


class ImageTooLargeError(DatasetError):
    """An image whose header claims more pixels than the reader's ``max_pixels`` (refused before decoding)."""
