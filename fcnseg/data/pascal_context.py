"""PASCAL-Context (Mottaghi et al., CVPR 2014): the 59-class task plus background, on PASCAL VOC 2010 images.

Files, as the reference ``pascalcontext_layers.py`` reads them::

    <root>/trainval/<id>.mat   variable LabelMap: the full labelling, values = indices of labels.txt (0 = none)
    <root>/labels.txt          "<index>: <name>" for the full label set (459 labels in the release)
    <root>/59_labels.txt       "<index>: <name>" for the 59 classes of the task, in output order
    <voc_root>/JPEGImages/<id>.jpg, <voc_root>/ImageSets/Main/<split>.txt    (VOC2010)

``root`` is the folder of the unpacked annotation release (``trainval/``, ``labels.txt``,
``59_labels.txt``); ``voc_root`` the VOC2010 folder or the VOCdevkit holding it (default: ``root``
itself when it has ``JPEGImages/``). ``split`` is a VOC2010 Main list name (train: 4,998 ids,
val: 5,105) or a path to an id list.

Labels: class k (1..59) is the k-th line of ``59_labels.txt``; every pixel whose full label is
not one of the 59 — and every unlabelled pixel — is class 0, background, as in the reference
(there is no void). Names are matched with their spaces removed; three of the task's names
differ from the full list's and are matched as the reference does: diningtable = table,
bedcloth = bedclothes, clothes = cloth.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from .base import Transform
from .errors import DatasetError
from .paired import PairedFileDataset
from .palette import default_palette
from .readers import read_id_list, read_mat_label, read_text_lines, split_file
from .voc import resolve_voc_root

#: Task name -> the full label list's name, where they differ (the reference data layer's fix-up).
TASK_NAME_ALIASES = {"diningtable": "table", "bedcloth": "bedclothes", "clothes": "cloth"}

PathLike = str | os.PathLike[str]


def read_label_list(path: Path) -> list[tuple[int, str]]:
    """``(index, name)`` from the lines ``"<index>: <name>"`` of a PASCAL-Context label file."""
    entries = []
    for number, line in enumerate(read_text_lines(path, "label list"), start=1):
        if not line.strip():
            continue
        index, colon, name = line.partition(":")
        if not colon or not index.strip().isdigit() or not name.strip():
            raise DatasetError(f"label list {path} line {number} is {line!r}; expected '<index>: <name>'")
        entries.append((int(index), name.strip()))
    if not entries:
        raise DatasetError(f"label list {path} is empty; expected lines '<index>: <name>'")
    return entries


def task_lookup(labels_file: Path, task_file: Path) -> tuple[list[str], np.ndarray]:
    """The task's class names (background first) and the table full-label index -> class id."""
    full = {name.replace(" ", ""): index for index, name in read_label_list(labels_file)}
    names = [name for _, name in read_label_list(task_file)]
    lookup = np.zeros(max(full.values()) + 1, dtype=np.int64)
    for class_id, name in enumerate(names, start=1):
        key = name.replace(" ", "")
        key = key if key in full else TASK_NAME_ALIASES.get(key, key)
        if key not in full:
            raise DatasetError(
                f"class {name!r} of {task_file} is not in {labels_file}; expected every task class "
                "among the full labels"
            )
        lookup[full[key]] = class_id
    return ["background", *names], lookup


class PascalContextDataset(PairedFileDataset):
    """PASCAL-Context, the 59 classes of ``59_labels.txt`` + background (see the module docstring)."""

    def __init__(
        self,
        root: PathLike,
        split: PathLike = "train",
        *,
        voc_root: PathLike | None = None,
        ignore_index: int = 255,
        transform: Transform | None = None,
        skip_bad: bool = False,
    ) -> None:
        root = Path(root)
        if not (root / "trainval").is_dir():
            raise DatasetError(
                f"PASCAL-Context folder {root} has no trainval/ folder; expected the unpacked "
                "annotation release (trainval/<id>.mat, labels.txt, 59_labels.txt)"
            )
        if voc_root is None and not (root / "JPEGImages").is_dir():
            raise DatasetError("PASCAL-Context images are VOC2010's: pass voc_root=<VOC2010 folder or VOCdevkit>")
        voc_path = root if voc_root is None else Path(voc_root)
        voc_dir = resolve_voc_root(voc_path, None if (voc_path / "JPEGImages").is_dir() else 2010)
        self.root = str(root)
        classes, self.lookup = task_lookup(root / "labels.txt", root / "59_labels.txt")
        source = split_file(split, voc_dir / "ImageSets" / "Main")
        ids = read_id_list(source)
        self.split_info = {"split": os.fspath(split), "source": str(source)}
        super().__init__(
            name=f"PASCAL-Context {root} split {os.fspath(split)}",
            ids=ids,
            image_paths=[voc_dir / "JPEGImages" / f"{i}.jpg" for i in ids],
            mask_paths=[root / "trainval" / f"{i}.mat" for i in ids],
            classes=classes,
            palette=default_palette(len(classes)),
            ignore_index=ignore_index,
            transform=transform,
            skip_bad=skip_bad,
        )

    def load_mask(self, index: int) -> torch.Tensor:
        label = read_mat_label(self.mask_paths[index], "LabelMap", "a PASCAL-Context trainval/*.mat file")
        known = (label >= 0) & (label < len(self.lookup))
        return torch.from_numpy(np.where(known, self.lookup[np.where(known, label, 0)], 0))
