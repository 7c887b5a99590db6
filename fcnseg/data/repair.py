"""``fcnseg data --fix OUT``: a corrected copy of a folder dataset in a new folder; the original is never written.

The copy holds ``images/`` (hard links to the originals, copies across file systems), ``masks/`` (palette PNGs of class
ids), ``classes.txt``, one ``<split>.txt`` per split (an automatic split becomes explicit) and, when colour masks were
converted, the ``colors.txt`` used. It opens with no options.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .base import SegmentationDataset
from .colours import ColourTable
from .doctor import Survey, colour_table_for, survey
from .errors import DatasetError
from .folder import FolderDataset
from .palette import Colour, default_palette, flat_palette
from .readers import EXIF_TRANSPOSE, read_colour_mask, read_image_header


def _link_or_copy(source: str, target: Path) -> None:
    if target.exists():  # an item listed in two splits
        return
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


def _save_mask(mask: torch.Tensor, palette: list[Colour], ignore_index: int, path: Path) -> None:
    array = mask.numpy()
    if array.min() >= 0 and array.max() <= 255:
        picture = Image.fromarray(array.astype(np.uint8), mode="L")
        picture.putpalette(flat_palette(palette, ignore_index))
    else:
        picture = Image.fromarray(array.astype(np.uint16))
    picture.save(path)


def _fixed_mask(
    dataset: FolderDataset, found: Survey, index: int, table: ColourTable | None, binary: bool
) -> torch.Tensor:
    """The item's mask with every fix applied, checked against its image; DatasetError if it stays bad."""
    path = dataset.mask_paths[index]
    if index in found.colour_items:
        if table is None:
            raise DatasetError(f"mask {path} has too many colours to be labels; expected a colour-coded mask")
        mask = table.to_ids(read_colour_mask(path), path)
    else:
        mask = dataset.load_mask(index)
        mask = (mask != 0).long() if binary else mask
    if index in found.rotated_items:  # drawn on the stored pixels: turn it as the image is turned
        method = EXIF_TRANSPOSE[read_image_header(dataset.image_paths[index])[2]]
        mask = torch.from_numpy(
            np.asarray(Image.fromarray(mask.numpy().astype(np.int32)).transpose(method)).astype(np.int64)
        )
    dataset.check_size(dataset.load_image(index), mask, index)
    if not binary:
        dataset.check_labels(mask, index)
    return mask


def write_fixed_copy(splits: Sequence[SegmentationDataset], out: str | os.PathLike[str]) -> list[str]:
    """Write the corrected copy of ``splits`` (e.g. train and val of one folder) to the new folder ``out``.

    Fixes colour masks (the dataset's ``colors`` table, else the proposed one), 0/255 binary masks (written 0/1) and
    masks drawn on the unrotated pixels of an EXIF-rotated image (rotated the same way). Items that stay bad (JPEG
    masks, bad labels, unreadable files, and the items a split opened with ``skip_bad=True`` dropped for a missing file)
    are left out and listed. Returns the lines of a report.
    """
    out = Path(out)
    folders = [dataset for dataset in splits if isinstance(dataset, FolderDataset)]
    if len(folders) != len(splits):
        raise DatasetError("--fix works on folder datasets (images/ and masks/ paired by stem)")
    first = folders[0]
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise DatasetError(f"--fix OUT writes a new folder; {out} exists and is not an empty folder")
    found = [survey(dataset) for dataset in folders]
    table = colour_table_for(found)
    binary = any(s.looks_binary for s in found) and all(s.values <= {0, 255} for s in found)
    classes = ["background", "foreground"] if binary and first.num_classes != 2 else first.classes
    palette = table.palette(len(classes)) if table is not None and first.colour_table is None else first.palette
    palette = palette if classes is first.classes else default_palette(len(classes))
    top = len(table.class_names(first.ignore_index)) - 1 if table is not None else -1
    if top >= len(classes):
        raise DatasetError(
            f"the colour table maps colours to ids up to {top} but the dataset has {len(classes)} classes; expected "
            f"ids 0..{len(classes) - 1} or {first.ignore_index}: save the table `fcnseg data` prints, edit it and "
            "pass it with --data-option colors=FILE"
        )
    (out / "images").mkdir(parents=True)
    (out / "masks").mkdir()
    report = []
    for dataset, checked in zip(folders, found, strict=True):
        kept = []
        left_out = [f"  left out {item}: {reason}" for item, reason in checked.missing]
        for index in range(len(dataset)):
            try:
                mask = _fixed_mask(dataset, checked, index, table, binary)
            except DatasetError as error:
                left_out.append(f"  left out {dataset.ids[index]}: {error}")
                continue
            _link_or_copy(dataset.image_paths[index], out / "images" / Path(dataset.image_paths[index]).name)
            _save_mask(mask, palette, dataset.ignore_index, out / "masks" / f"{dataset.ids[index]}.png")
            kept.append(dataset.ids[index])
        split = dataset.split_info["split"] if dataset.split_info else "all"
        if split != "all":
            (out / f"{Path(split).stem}.txt").write_text(
                "".join(f"{stem}\n" for stem in kept), "utf-8", "surrogateescape"
            )
        changes = ", ".join(f"{count} {what}" for count, what in (
            (len(checked.colour_items), "masks converted from colours"), (len(kept) * binary, "masks written 0/1"),
            (len(checked.rotated_items), "masks rotated as their image's EXIF orientation")) if count)  # fmt: skip
        listed = len(dataset) + len(checked.missing)  # the items the split lists, those dropped when opened too
        report.append(
            f"{split}: {len(kept)} of {listed} items written"
            + (f" ({changes})" if changes else "")
            + (f"; {len(left_out)} left out:" if left_out else "")
        )
        report += left_out
    (out / "classes.txt").write_text("".join(f"{name}\n" for name in classes), "utf-8")
    if table is not None:
        (out / "colors.txt").write_text(table.text(), "utf-8")
    ignore = f" --data-option ignore_index={first.ignore_index}" if first.ignore_index != 255 else ""
    report.append(f"wrote {out}; open it with --data folder --root {out}{ignore}")
    return report
