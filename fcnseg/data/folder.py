"""Any folder of images and masks: ``images/`` and ``masks/`` paired by file stem.

Layout::

    root/images/<stem>.jpg|png|...   the photos (any format PIL reads; converted to RGB)
    root/masks/<stem>.png            class ids, one channel (grey "L" or palette "P" PNG)
    root/<split>.txt                 optional: the stems of a split, one per line
    root/classes.txt                 optional: class names, line i = id i

Without ``classes.txt`` pass ``classes=[...]`` or ``num_classes=N``. ``split=None``
(or "all" when there is no ``all.txt``) takes every image; a split name whose
``<split>.txt`` is missing is an error, and so is a path to a list that does not exist.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

from .base import Transform
from .errors import DatasetError
from .palette import Colour
from .paired import PairedFileDataset
from .readers import IMAGE_SUFFIXES, MASK_SUFFIXES, read_class_names, read_id_list


def _files_by_stem(directory: Path, suffixes: Sequence[str], what: str) -> dict[str, Path]:
    if not directory.is_dir():
        raise DatasetError(f"{what} folder {directory} does not exist")
    found: dict[str, Path] = {}
    for path in sorted(directory.iterdir()):
        if path.suffix.lower() not in suffixes or not path.is_file():
            continue
        if path.stem in found:
            raise DatasetError(f"two {what} files share the stem {path.stem!r}: {found[path.stem]} and {path}")
        found[path.stem] = path
    return found


def resolve_split_list(root: Path, split: str | os.PathLike[str] | None) -> list[str] | None:
    """Stems of ``split``: None for "every file", else from ``root/<split>.txt`` or a list file path."""
    if split is None:
        return None
    split_text = os.fspath(split)
    named = root / f"{split_text}.txt"
    if os.sep in split_text or "/" in split_text or split_text.endswith(".txt"):
        return read_id_list(Path(split_text))
    if named.is_file():
        return read_id_list(named)
    if split_text == "all":
        return None
    raise DatasetError(
        f"split file {named} does not exist; expected <root>/{split_text}.txt with one stem per line "
        "(or split=None for every image)"
    )


class FolderDataset(PairedFileDataset):
    """Images and masks paired by stem (see the module docstring for the layout).

    Args:
        root: the folder holding ``images/`` and ``masks/``.
        split: split name (``root/<split>.txt``), a path to a stem list, or None for all.
        classes / num_classes: class names, when the folder has no ``classes.txt``.
        palette: colours per class (default: the VOC palette).
        ignore_index: the mask value that means "not labelled" (255 by default).
        images_dir / masks_dir: sub-folder names, if not ``images`` and ``masks``.
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
        transform: Transform | None = None,
        skip_bad: bool = False,
    ) -> None:
        root = Path(root)
        if not root.is_dir():
            raise DatasetError(f"dataset folder {root} does not exist")
        self.root = str(root)
        class_names = _class_names(root, classes, num_classes)
        images = _files_by_stem(root / images_dir, IMAGE_SUFFIXES, "image")
        masks = _files_by_stem(root / masks_dir, MASK_SUFFIXES, "mask")
        stems = resolve_split_list(root, split)
        if stems is None:
            stems = sorted(images)
            if not stems:
                raise DatasetError(f"image folder {root / images_dir} holds no images ({', '.join(IMAGE_SUFFIXES)})")
        unknown = [stem for stem in stems if stem not in images]
        if unknown:
            raise DatasetError(
                f"split {split!r} of {root} lists {len(unknown)} stem(s) with no image in {root / images_dir}, "
                f"e.g. {unknown[:3]}"
            )
        split_name = "all" if split is None else os.fspath(split)
        super().__init__(
            name=f"folder {root} split {split_name}",
            ids=stems,
            image_paths=[images[stem] for stem in stems],
            mask_paths=[masks.get(stem, root / masks_dir / f"{stem}.png") for stem in stems],
            classes=class_names,
            palette=palette,
            ignore_index=ignore_index,
            transform=transform,
            skip_bad=skip_bad,
        )


def _class_names(root: Path, classes: Sequence[str] | None, num_classes: int | None) -> list[str]:
    if classes is not None:
        names = [str(name) for name in classes]
    elif (root / "classes.txt").is_file():
        names = read_class_names(root / "classes.txt")
    elif num_classes is not None:
        names = [f"class_{index}" for index in range(int(num_classes))]
    else:
        raise DatasetError(
            f"{root} has no classes.txt; expected one (line i = name of id i), or pass classes=[...] or num_classes=N"
        )
    if num_classes is not None and int(num_classes) != len(names):
        raise DatasetError(f"num_classes={num_classes} but {len(names)} class names were given for {root}")
    return names
