"""The Semantic Boundaries Dataset (SBD, Hariharan et al. 2011): extra VOC-class labels.

::

    dataset/img/<id>.jpg
    dataset/cls/<id>.mat        label = loadmat(p)['GTcls'][0]['Segmentation'][0], ids 0..20
    dataset/train.txt           8,498 ids (the paper's training set)
    dataset/val.txt             2,857 ids

``root`` is the ``dataset`` folder or the folder above it (``benchmark_RELEASE``).
Splits: ``train``, ``val``, a path to an id list, or ``train_aug``.

``train_aug`` (needs ``voc_root``, a VOC2012 folder or VOCdevkit) is the usual
"augmented" training set::

    train_aug = (VOC train ∪ SBD train ∪ SBD val) − VOC val

(10,582 ids with VOC2012 and the official SBD). An id in the VOC train list is
read from VOC (its finer label, with the void border); every other id from SBD.
The result is sorted by id.
"""

from __future__ import annotations

import os
from pathlib import Path

from .base import Transform
from .errors import DatasetError
from .paired import PairedFileDataset
from .palette import voc_palette
from .readers import read_id_list
from .voc import VOC_CLASSES, resolve_voc_root, voc_split_ids

PathLike = str | os.PathLike[str]


def resolve_sbd_root(root: PathLike) -> Path:
    """The SBD ``dataset`` folder from ``root`` (that folder itself or the one above it)."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"SBD folder {root} does not exist")
    for candidate in (root, root / "dataset"):
        if (candidate / "cls").is_dir() and (candidate / "img").is_dir():
            return candidate
    raise DatasetError(
        f"{root} is not an SBD 'dataset' folder; expected img/ and cls/ in it (or in {root / 'dataset'})"
    )


def sbd_split_ids(sbd_dir: Path, split: PathLike) -> list[str]:
    split_text = os.fspath(split)
    if os.sep in split_text or "/" in split_text or split_text.endswith(".txt"):
        return read_id_list(split_text)
    return read_id_list(sbd_dir / f"{split_text}.txt", "SBD split file")


class SBDDataset(PairedFileDataset):
    """SBD class segmentation (21 VOC classes); see the module docstring for ``train_aug``."""

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
        sbd_dir = resolve_sbd_root(root)
        self.root = str(sbd_dir)
        if os.fspath(split) == "train_aug":
            if voc_root is None:
                raise DatasetError(
                    "train_aug = (VOC train + SBD train + SBD val) - VOC val needs the VOC lists; "
                    "pass voc_root=<VOC2012 folder or VOCdevkit>"
                )
            voc_dir = resolve_voc_root(voc_root)
            voc_train = voc_split_ids(voc_dir, "train")
            voc_val = set(voc_split_ids(voc_dir, "val"))
            sbd_ids = sbd_split_ids(sbd_dir, "train") + sbd_split_ids(sbd_dir, "val")
            from_voc = set(voc_train)
            ids = sorted((from_voc | set(sbd_ids)) - voc_val)
            image_paths = [
                voc_dir / "JPEGImages" / f"{i}.jpg" if i in from_voc else sbd_dir / "img" / f"{i}.jpg" for i in ids
            ]
            mask_paths = [
                voc_dir / "SegmentationClass" / f"{i}.png" if i in from_voc else sbd_dir / "cls" / f"{i}.mat"
                for i in ids
            ]
        else:
            ids = sbd_split_ids(sbd_dir, split)
            image_paths = [sbd_dir / "img" / f"{item}.jpg" for item in ids]
            mask_paths = [sbd_dir / "cls" / f"{item}.mat" for item in ids]
        super().__init__(
            name=f"SBD {sbd_dir} split {os.fspath(split)}",
            ids=ids,
            image_paths=image_paths,
            mask_paths=mask_paths,
            classes=VOC_CLASSES,
            palette=voc_palette(len(VOC_CLASSES)),
            ignore_index=ignore_index,
            transform=transform,
            skip_bad=skip_bad,
        )
