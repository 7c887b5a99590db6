"""PASCAL VOC segmentation (any year) in the VOCdevkit layout.

::

    VOCdevkit/VOC2012/JPEGImages/<id>.jpg
    VOCdevkit/VOC2012/SegmentationClass/<id>.png      palette PNG: index = class 0..20, 255 = void
    VOCdevkit/VOC2012/ImageSets/Segmentation/<split>.txt

``root`` is the ``VOC20xx`` folder or the ``VOCdevkit`` folder above it (with
several years there, pass ``year=``). ``split`` is a list name (train, val,
trainval, ...), a path to an id list, or ``seg11valid``.

``seg11valid`` is the paper's validation set: the VOC2011 segmentation val ids
minus the SBD train ids (736 ids with the official files). It is computed from
the user's files: the VOC2011 list from ``voc2011_val`` (a list file or a
VOC2011 folder), else from ``root`` itself when it is VOC2011, else from a
``VOC2011`` folder beside it; the SBD train list from ``sbd_root`` (the SBD
``dataset`` folder, or ``train.txt`` itself). Images and masks are read from
``root`` (VOC2012 holds every VOC2011 image).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from .base import Transform
from .errors import DatasetError
from .paired import PairedFileDataset
from .palette import voc_palette
from .readers import read_id_list

logger = logging.getLogger("fcnseg.data")

VOC_CLASSES = (
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
)  # fmt: skip

PathLike = str | os.PathLike[str]


def resolve_voc_root(root: PathLike, year: str | int | None = None) -> Path:
    """The ``VOC20xx`` folder from ``root`` (that folder itself or the VOCdevkit above it)."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"VOC folder {root} does not exist")
    if (root / "JPEGImages").is_dir():
        if year is not None and root.name != f"VOC{year}":
            raise DatasetError(f"VOC folder {root} is not VOC{year}")
        return root
    years = sorted(path for path in root.glob("VOC20*") if (path / "JPEGImages").is_dir())
    if year is not None:
        chosen = root / f"VOC{year}"
        if chosen not in years:
            raise DatasetError(f"{chosen} with JPEGImages/ does not exist; found {[p.name for p in years]}")
        return chosen
    if len(years) == 1:
        return years[0]
    if not years:
        raise DatasetError(f"{root} is neither a VOC20xx folder (with JPEGImages/) nor a VOCdevkit folder holding one")
    raise DatasetError(f"{root} holds several VOC years {[p.name for p in years]}; pass year=")


def voc_split_ids(voc_dir: Path, split: PathLike) -> list[str]:
    """Ids of a VOC segmentation split given by name or as a path to an id list."""
    split_text = os.fspath(split)
    if os.sep in split_text or "/" in split_text or split_text.endswith(".txt"):
        return read_id_list(split_text)
    return read_id_list(voc_dir / "ImageSets" / "Segmentation" / f"{split_text}.txt")


def _sbd_train_list(sbd_root: PathLike | None) -> Path:
    if sbd_root is None:
        raise DatasetError(
            "seg11valid is VOC2011 segmentation val minus SBD train: it needs the SBD train list; "
            "pass sbd_root=<SBD 'dataset' folder holding train.txt> (or the path of train.txt)"
        )
    path = Path(sbd_root)
    if path.is_dir():
        path = path / "dataset" / "train.txt" if (path / "dataset").is_dir() else path / "train.txt"
    if not path.is_file():
        raise DatasetError(
            f"SBD train list {path} does not exist (needed for seg11valid); expected sbd_root to be the SBD "
            "'dataset' folder holding train.txt, the folder above it, or train.txt itself"
        )
    return path


def _voc2011_val_list(voc_dir: Path, voc2011_val: PathLike | None) -> Path:
    relative = Path("ImageSets") / "Segmentation" / "val.txt"
    if voc2011_val is not None:
        path = Path(voc2011_val)
        if path.is_dir():
            path = resolve_voc_root(path, 2011) / relative
    elif voc_dir.name == "VOC2011":
        path = voc_dir / relative
    else:
        path = voc_dir.parent / "VOC2011" / relative
    if not path.is_file():
        raise DatasetError(
            f"VOC2011 segmentation val list {path} does not exist (needed for seg11valid = VOC2011 seg val "
            "minus SBD train); pass voc2011_val=<that val.txt or the VOC2011 folder>"
        )
    return path


def seg11valid_ids(voc_dir: Path, *, sbd_root: PathLike | None, voc2011_val: PathLike | None = None) -> list[str]:
    """VOC2011 segmentation val minus SBD train, in the order of the VOC2011 list."""
    sbd_train = set(read_id_list(_sbd_train_list(sbd_root), "SBD train list"))
    val = read_id_list(_voc2011_val_list(voc_dir, voc2011_val), "VOC2011 val list")
    ids = [item for item in val if item not in sbd_train]
    logger.info(
        "seg11valid: %d VOC2011 val ids minus SBD train = %d ids (736 with the official files)", len(val), len(ids)
    )
    return ids


class VOCDataset(PairedFileDataset):
    """PASCAL VOC segmentation; 21 classes, 255 = void (see the module docstring)."""

    def __init__(
        self,
        root: PathLike,
        split: PathLike = "train",
        *,
        year: str | int | None = None,
        sbd_root: PathLike | None = None,
        voc2011_val: PathLike | None = None,
        ignore_index: int = 255,
        transform: Transform | None = None,
        skip_bad: bool = False,
    ) -> None:
        voc_dir = resolve_voc_root(root, year)
        self.root = str(voc_dir)
        if os.fspath(split) == "seg11valid":
            ids = seg11valid_ids(voc_dir, sbd_root=sbd_root, voc2011_val=voc2011_val)
        else:
            ids = voc_split_ids(voc_dir, split)
        super().__init__(
            name=f"VOC {voc_dir} split {os.fspath(split)}",
            ids=ids,
            image_paths=[voc_dir / "JPEGImages" / f"{item}.jpg" for item in ids],
            mask_paths=[voc_dir / "SegmentationClass" / f"{item}.png" for item in ids],
            classes=VOC_CLASSES,
            palette=voc_palette(len(VOC_CLASSES)),
            ignore_index=ignore_index,
            transform=transform,
            skip_bad=skip_bad,
        )
