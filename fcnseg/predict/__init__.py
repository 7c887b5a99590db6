"""Predicting files: images (and videos, mosaics) in, masks, overlays and confidence maps out.

- :mod:`.images` — read and list inputs, write masks, overlays and legends.
- :mod:`.stream` — :func:`predict_files`, the pipeline of ``fcnseg predict``: decode ahead, batch by
  size, write behind, resume.
- :mod:`.manifest` — the record of finished inputs that lets a killed run resume.
- :mod:`.mosaic` — rasters predicted window by window (the ``geo`` extra).
- :mod:`.video` — videos frame by frame (the ``video`` extra).
"""

from .images import (
    ImageError,
    ImageTooLarge,
    list_images,
    load_image,
    mask_to_image,
    max_pixels_for,
    overlay_image,
    predict_logits,
    predict_mask,
    save_image,
    save_mask_png,
    with_legend,
)
from .stream import PredictOptions, Summary, predict_files

__all__ = [
    "ImageError",
    "ImageTooLarge",
    "PredictOptions",
    "Summary",
    "list_images",
    "load_image",
    "mask_to_image",
    "max_pixels_for",
    "overlay_image",
    "predict_files",
    "predict_logits",
    "predict_mask",
    "save_image",
    "save_mask_png",
    "with_legend",
]
