"""Mosaics: rasters predicted window by window, never held whole (through rasterio: the ``geo`` extra).

A ``.tif``/``.tiff`` input is predicted this way when it is georeferenced or has more pixels than the
memory budget holds decoded (see :func:`fcnseg.predict.images.max_pixels_for`). Its windows are the tiles of
:func:`fcnseg.inference.tiling.plan_tiles` with the tiling a whole-image prediction would use
(:meth:`Predictor.tiling_for`, else the largest that fits the budget): each window is read from the file,
predicted whole, and only its core is written, so the mask equals the in-memory tiled prediction (and the
whole-image one with the default margin). Masks go to a GeoTIFF ``<stem>.tif`` (palette, deflate) with the
input's transform and CRS, tiled in blocks that divide the tile size so each block is written once; GDAL's
block cache is capped, so memory is one window, whatever the raster's size.

PNG and JPEG cannot be read like this through Pillow: it decodes a whole image at once (JPEG's draft mode
only scales down by 2, 4 or 8), so they are limited to what the budget holds decoded; a larger one is refused
from its header with what to do (convert it to a tiled GeoTIFF).
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..files import atomic_path
from ..inference.predictor import Predictor
from ..inference.tiling import plan_tiles, tiling_for_budget

WINDOWED_SUFFIXES = (".tif", ".tiff")
#: GDAL's block cache while a mosaic is written (its default is 5 % of the RAM).
GDAL_CACHE_BYTES = 64 * 2**20


class MosaicError(ValueError):
    """A raster that cannot be predicted by windows (one line naming the file)."""


def geo_available() -> bool:
    """Whether rasterio (the ``geo`` extra) is installed."""
    return importlib.util.find_spec("rasterio") is not None


def _open(path: str | os.PathLike[str]) -> Any:
    import rasterio

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
        return rasterio.open(path)


def reads_by_windows(path: str | os.PathLike[str], max_pixels: int | None) -> bool:
    """Whether ``path`` is a TIFF to predict by windows: georeferenced, or over ``max_pixels`` (rasterio present)."""
    if Path(path).suffix.lower() not in WINDOWED_SUFFIXES or not geo_available():
        return False
    import rasterio

    try:
        with _open(path) as source:
            too_large = max_pixels is not None and source.width * source.height > max_pixels
            return too_large or source.crs is not None or not source.transform.is_identity
    except rasterio.errors.RasterioError:  # the ordinary reader names what is wrong with it
        return False


def predict_mosaic(
    predictor: Predictor,
    path: str | os.PathLike[str],
    out: str | os.PathLike[str],
    palette: Sequence[Sequence[int]],
    overlay_alpha: float | None = None,
    progress: Callable | None = None,
) -> list[Path]:
    """Write ``<out>/<stem>.tif`` (and ``<stem>_overlay.tif`` with ``overlay_alpha``) window by window.

    ``predictor`` needs a memory budget (it sizes the tiles); ``progress`` wraps the tile iterator.
    Returns the files written; :class:`MosaicError` names an unreadable or unsuitable raster.
    """
    import rasterio
    from rasterio.windows import Window

    from .images import overlay_image

    path, stem = Path(path), Path(out) / Path(path).stem
    if not predictor.model.exact_tiling:
        raise MosaicError(
            f"image {path} is predicted by windows, but this model has a layer that sees the whole image "
            "(squeeze-and-excitation): windows would change its logits"
        )
    whole = Predictor(predictor.model, dtype=predictor.amp_dtype)  # runs each window as one pass
    targets = [stem.with_name(stem.name + ".tif")] + (
        [stem.with_name(stem.name + "_overlay.tif")] if overlay_alpha is not None else []
    )
    try:
        with rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_BYTES), _open(path) as source, contextlib.ExitStack() as stack:
            if source.dtypes[0] != "uint8" or source.count not in (1, 3, 4):
                raise MosaicError(
                    f"image {path} has {source.count} band(s) of {source.dtypes[0]}; expected 1, 3 or 4 "
                    "bands of uint8 (rescale it first, e.g. gdal_translate -ot Byte -scale)"
                )
            height, width = source.height, source.width
            tiling = predictor.tiling_for(height, width)
            if tiling is None:
                if predictor.memory_budget_bytes is None:
                    raise ValueError(
                        f"image {path}: a mosaic needs a predictor with a memory budget (it sizes the tiles)"
                    )
                tiling = tiling_for_budget(predictor.model, predictor.memory_budget_bytes, predictor.margin)
            block = next(size for size in (512, 256, 128, 64, 32, 16) if tiling.tile_size % size == 0)
            profile = dict(
                driver="GTiff",
                width=width,
                height=height,
                crs=source.crs,
                transform=source.transform,
                tiled=True,
                blockxsize=block,
                blockysize=block,
                compress="deflate",
                BIGTIFF="IF_SAFER",
            )
            mask_file = stack.enter_context(
                rasterio.open(
                    stack.enter_context(atomic_path(targets[0])),
                    "w",
                    count=1,
                    dtype="uint8" if predictor.num_classes <= 256 else "uint16",
                    **profile,
                )
            )
            mask_file.write_colormap(1, {i: (*map(int, colour), 255) for i, colour in enumerate(palette)})
            overlay_file = (
                None
                if overlay_alpha is None
                else stack.enter_context(
                    rasterio.open(stack.enter_context(atomic_path(targets[1])), "w", count=3, dtype="uint8", **profile)
                )
            )
            bands = [1, 2, 3] if source.count >= 3 else [1, 1, 1]
            tiles = plan_tiles(height, width, tiling)
            for tile in progress(iter(tiles)) if progress else tiles:
                top, bottom, left, right = tile.window
                image = torch.from_numpy(source.read(bands, window=Window(left, top, right - left, bottom - top)))
                rows, cols = tile.core_in_window()
                core = whole.mask(image)[rows, cols]
                top, bottom, left, right = tile.core
                where = Window(left, top, right - left, bottom - top)
                mask_file.write(core.numpy()[None].astype(mask_file.dtypes[0]), window=where)
                if overlay_file is not None and overlay_alpha is not None:
                    picture = overlay_image(image[:, rows, cols].contiguous(), core, palette, alpha=overlay_alpha)
                    overlay_file.write(np.asarray(picture).transpose(2, 0, 1), window=where)
    except rasterio.errors.RasterioError as error:
        raise MosaicError(f"image {path} cannot be read or its mask written by windows ({error})") from None
    return targets
