"""Any folder of images and masks: ``images/`` and ``masks/`` paired by file stem.

Layout::

    root/images/<stem>.jpg|png|...   the photos (any format PIL reads; converted to RGB, EXIF-rotated)
    root/masks/<stem>.png            class ids, one channel (grey "L" or palette "P" PNG)
    root/<split>.txt                 optional: the stems of a split, one per line
    root/classes.txt                 optional: class names, line i = id i

Without ``classes.txt`` pass ``classes=[...]`` or ``num_classes=N`` (``binary=true`` and ``colors=FILE`` bring their
own). ``split=None`` (or "all" when there is no ``all.txt``) takes every image. "train" and "val" of a folder with
neither ``train.txt`` nor ``val.txt`` are an automatic split (:func:`auto_split`); any other split name whose
``<split>.txt`` is missing is an error, and so is a path to a list that does not exist.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .base import Transform
from .colours import ColourTable, read_colour_table
from .errors import ColourMaskError, DatasetError
from .paired import PairedFileDataset
from .palette import Colour
from .readers import IMAGE_SUFFIXES, MASK_SUFFIXES, read_class_names, read_colour_mask, read_id_list, read_mask_file

#: Split names an automatic split answers to.
AUTO_SPLITS = ("train", "val")
#: Masks read (evenly spaced) to name the remedy when a folder brings no class names.
PEEK_MASKS = 8


def _files_by_stem(directory: Path, suffixes: Sequence[str], what: str) -> dict[str, Path]:
    if not directory.is_dir():
        raise DatasetError(f"{what} folder {directory} does not exist")
    found: dict[str, Path] = {}
    # Folders are passed over; FIFOs and other special files are kept so that reading them fails with the reason.
    for path in sorted(directory.iterdir()):
        if path.suffix.lower() not in suffixes or path.is_dir():
            continue
        if path.stem in found:
            lossy = [p.suffix.lower() in (".jpg", ".jpeg") for p in (found[path.stem], path)]
            if what == "mask" and lossy[0] != lossy[1]:  # a JPEG beside the mask (a preview?): the lossless one is it
                found[path.stem] = path if lossy[0] else found[path.stem]
                continue
            raise DatasetError(f"two {what} files share the stem {path.stem!r}: {found[path.stem]} and {path}")
        found[path.stem] = path
    return found


def auto_split(stems: Sequence[str], split: str, val_fraction: float = 0.2, seed: int = 0) -> list[str]:
    """The stems of "train" or "val" in a seeded split of ``stems`` (sorted).

    Val is the ``round(n * val_fraction)`` stems (at least 1, at most n - 1) that rank first by SHA-256 of
    ``"<seed>\\0<stem>"``: the same files, seed and fraction give the same split on any machine, and adding files moves
    few of the old ones.
    """
    if not 0 < float(val_fraction) < 1:
        raise DatasetError(f"val_fraction={val_fraction!r}; expected a number between 0 and 1 (exclusive)")
    if len(stems) < 2:
        raise DatasetError(f"an automatic train/val split needs at least 2 images; found {len(stems)}")
    rank = {stem: hashlib.sha256(f"{seed}\0{stem}".encode("utf-8", "surrogateescape")).digest() for stem in stems}
    count = min(max(round(len(stems) * float(val_fraction)), 1), len(stems) - 1)
    val = set(sorted(stems, key=rank.__getitem__)[:count])
    return sorted(stem for stem in stems if (stem in val) == (split == "val"))


def _split_stems(
    root: Path, split: str | os.PathLike[str] | None, stems: list[str], val_fraction: float, seed: int
) -> tuple[list[str], dict[str, Any]]:
    """The stems of ``split`` and where they came from (the dataset's ``split_info``)."""
    if split is None:
        return stems, {"split": "all", "source": "every image"}
    text = os.fspath(split)
    if os.sep in text or "/" in text or text.endswith(".txt"):
        return read_id_list(Path(text)), {"split": text, "source": text}
    named = root / f"{text}.txt"
    if named.exists():
        return read_id_list(named), {"split": text, "source": str(named)}
    if text == "all":
        return stems, {"split": "all", "source": "every image"}
    if text in AUTO_SPLITS and not any((root / f"{name}.txt").exists() for name in AUTO_SPLITS):
        chosen = auto_split(stems, text, val_fraction, seed)
        return chosen, {"split": text, "source": "automatic", "val_fraction": float(val_fraction), "seed": seed,
                        "items": len(chosen), "of": len(stems)}  # fmt: skip
    raise DatasetError(
        f"split file {named} does not exist; expected <root>/{text}.txt with one stem per line "
        "(or split=None for every image; train/val are split automatically only when neither train.txt nor val.txt "
        "exists)"
    )


class FolderDataset(PairedFileDataset):
    """Images and masks paired by stem (see the module docstring for the layout).

    Args:
        root: the folder holding ``images/`` and ``masks/``.
        split: split name (``root/<split>.txt``), a path to a stem list, or None for all.
        classes / num_classes: class names, when the folder has no ``classes.txt``.
        palette: colours per class (default: the ``colors`` table's, else distinct colours, none black).
        ignore_index: the mask value that means "not labelled" (255 by default).
        images_dir / masks_dir: sub-folder names, if not ``images`` and ``masks``.
        binary: masks are foreground/background: 0 -> class 0, any other value (e.g. 255) -> class 1.
        colors: path of a colour table (:mod:`fcnseg.data.colours`) for RGB colour masks.
        val_fraction / split_seed: the automatic train/val split (see :func:`auto_split`).
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        split: str | os.PathLike[str] | None = None,
        *,
        classes: Sequence[str] | None = None,
        num_classes: int | None = None,
        palette: Sequence[Colour] | None = None,
        ignore_index: int = 255,
        images_dir: str = "images",
        masks_dir: str = "masks",
        binary: bool = False,
        colors: str | os.PathLike[str] | None = None,
        val_fraction: float = 0.2,
        split_seed: int = 0,
        transform: Transform | None = None,
        skip_bad: bool = False,
    ) -> None:
        root = Path(root)
        if not root.is_dir():
            raise DatasetError(f"dataset folder {root} does not exist")
        if binary and colors is not None:
            raise DatasetError("binary=true and colors=FILE exclude each other; expected one of them")
        self.root = str(root)
        self.binary = bool(binary)
        self.colour_table: ColourTable | None = read_colour_table(colors) if colors is not None else None
        class_names = _class_names(
            root, classes, num_classes, self.binary, self.colour_table, ignore_index, root / masks_dir
        )
        images = _files_by_stem(root / images_dir, IMAGE_SUFFIXES, "image")
        masks = _files_by_stem(root / masks_dir, MASK_SUFFIXES, "mask")
        if not images:
            raise DatasetError(f"image folder {root / images_dir} holds no images ({', '.join(IMAGE_SUFFIXES)})")
        stems, self.split_info = _split_stems(root, split, sorted(images), val_fraction, split_seed)
        unknown = [stem for stem in stems if stem not in images]
        if unknown:
            raise DatasetError(
                f"split list {self.split_info['source']} lists {len(unknown)} stem(s) with no image in "
                f"{root / images_dir}, e.g. {unknown[:3]}"
            )
        if palette is None and self.colour_table is not None:
            palette = self.colour_table.palette(len(class_names))
        super().__init__(
            name=f"folder {root} split {self.split_info['split']}",
            ids=stems,
            image_paths=[images[stem] for stem in stems],
            mask_paths=[masks.get(stem, root / masks_dir / f"{stem}.png") for stem in stems],
            classes=class_names,
            palette=palette,
            ignore_index=ignore_index,
            transform=transform,
            skip_bad=skip_bad,
        )

    def load_mask(self, index: int) -> torch.Tensor:
        path = self.mask_paths[index]
        if self.colour_table is not None:
            return self.colour_table.to_ids(read_colour_mask(path), path)
        mask = read_mask_file(path)
        return (mask != 0).long() if self.binary else mask


def _masks_hint(masks_dir: Path) -> str:
    """The remedy a folder without class names needs when its masks show it (0/255 masks, RGB colour masks), or "".

    Reads up to :data:`PEEK_MASKS` masks, evenly spaced; "" when they tell nothing (class ids,
    unreadable files, no masks).
    """
    try:
        files = sorted(p for p in masks_dir.iterdir() if p.suffix.lower() in MASK_SUFFIXES)
    except OSError:  # no masks folder (or unreadable): reported when the files are listed
        return ""
    picked = sorted({files[i * len(files) // PEEK_MASKS] for i in range(PEEK_MASKS)}) if files else []
    values: set[int] = set()
    colour = []
    for path in picked:
        try:
            values.update(np.unique(read_mask_file(path).numpy()).tolist())
        except ColourMaskError:
            colour.append(path)
        except DatasetError:
            continue  # a bad file is reported when the items are read
    if not colour and 255 in values and values <= {0, 255}:
        return (
            f", and its masks look binary (only the values 0 and 255 in the {len(picked)} read, e.g. {picked[0]}): "
            "pass binary=true (0 -> class 0 background, any other value -> class 1 foreground; num_classes=2 "
            "would leave 255 as the ignore value and nothing to learn)"
        )
    if colour:
        return (
            f", and its masks are RGB colour images ({len(colour)} of the {len(picked)} read, e.g. {colour[0]}): pass "
            "num_classes=N and `fcnseg data` proposes a colour table to pass as colors=FILE"
        )
    return ""


def _class_names(root: Path, classes: Sequence[str] | None, num_classes: int | None, binary: bool,
                 table: ColourTable | None, ignore_index: int, masks_dir: Path) -> list[str]:  # fmt: skip
    if classes is not None:
        names, source = [str(name) for name in classes], "the classes option"
    elif (root / "classes.txt").exists():
        names, source = read_class_names(root / "classes.txt"), f"classes file {root / 'classes.txt'}"
    elif num_classes is not None:
        names, source = [f"class_{index}" for index in range(int(num_classes))], "num_classes"
    elif binary:
        names, source = ["background", "foreground"], "binary=true"
    elif table is not None:
        names, source = table.class_names(ignore_index), f"colour table {table.source}"
    else:
        hint = _masks_hint(masks_dir)
        raise DatasetError(
            f"{root} has no classes.txt{hint}; "
            f"{'for masks of class ids, expected a classes.txt' if hint else 'expected one'}"
            " (line i = name of id i), or pass classes=[...] or num_classes=N"
        )
    if num_classes is not None and int(num_classes) != len(names):
        raise DatasetError(f"num_classes={num_classes} but {source} gives {len(names)} class names for {root}")
    if binary and len(names) != 2:
        raise DatasetError(f"binary=true makes 2 classes (0 background, 1 foreground) but {source} gives {len(names)}")
    if 0 <= ignore_index < len(names):
        raise DatasetError(
            f"{source} gives {len(names)} classes, so the ignore value {ignore_index} would be a class id; "
            f"expected at most {ignore_index} classes (or another ignore_index)"
        )
    return names
