"""The one exception type for bad dataset input."""

from __future__ import annotations


class DatasetError(ValueError):
    """A dataset that cannot be opened or an item that cannot be read.

    The message always names the file (or folder, or value) at fault and what
    was expected, e.g. ``mask .../a.png has label 37 at (12, 40); expected 0..20 or 255``.
    """
