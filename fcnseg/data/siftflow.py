"""SIFT Flow (Liu, Yuen, Torralba 2011; Tighe & Lazebnik's labels): 33 semantic and 3 geometric classes.

Layout of ``SiftFlowDataset.zip`` (``root`` is the folder holding these), as the reference
``siftflow_layers.py`` reads it::

    Images/spatial_envelope_256x256_static_8outdoorcategories/<id>.jpg        256x256 photos
    SemanticLabels/spatial_envelope_256x256_static_8outdoorcategories/<id>.mat  variable S: 0 void, 1..33
    GeoLabels/spatial_envelope_256x256_static_8outdoorcategories/<id>.mat       variable S: -1 (or 0) void, 1..3
    <split>.txt                                                               ids, one per line

The zip holds no split lists: the paper's are ``data/sift-flow/trainval.txt`` (2,488 ids) and
``test.txt`` (200 ids) of shelhamer/fcn.berkeleyvision.org; put them (or any list) in ``root``,
or pass a path as ``split``. Labels are shifted down by one as the reference does (class k is
id k - 1, void is the ignore value).

``labels``: ``"semantic"`` (33 classes, masks (H, W)), ``"geometric"`` (sky, horizontal, vertical; masks (H, W)), or
``"both"`` (the default, for the paper's two-headed ``siftflow_fcn*`` nets): 36 classes, the 33 semantic ones then the 3
geometric ones, and masks (2, H, W) — row 0 the semantic ids 0..32, row 1 the geometric ids 33..35 (``heads``
``(("sem", 33), ("geo", 3))``, the layout :class:`fcnseg.engine.loss.HeadsLoss` splits).

The reference's README notes that cow, desert and moon never occur in the test split (the
paper leaves them out of its means; :class:`fcnseg.evaluation.metrics.ConfusionMatrix` leaves out a class
absent from both ground truth and prediction) and that two images have no annotation.
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
from .readers import read_mat_label, read_split

SEMANTIC_CLASSES = ("awning", "balcony", "bird", "boat", "bridge", "building", "bus", "car", "cow", "crosswalk",
                    "desert", "door", "fence", "field", "grass", "moon", "mountain", "person", "plant", "pole", "river",
                    "road", "rock", "sand", "sea", "sidewalk", "sign", "sky", "staircase", "streetlight", "sun", "tree",
                    "window")  # fmt: skip
GEOMETRIC_CLASSES = ("sky (geometric)", "horizontal (geometric)", "vertical (geometric)")
LABEL_KINDS = ("semantic", "geometric", "both")
_SUBFOLDER = "spatial_envelope_256x256_static_8outdoorcategories"

PathLike = str | os.PathLike[str]


def _shifted(label: np.ndarray, classes: int, ignore_index: int, offset: int) -> np.ndarray:
    """File labels 1..classes -> ids offset..offset+classes-1; void (<= 0) -> ignore; anything else kept (and
    refused)."""
    return np.where(label <= 0, ignore_index, label - 1 + offset)


class SIFTFlowDataset(PairedFileDataset):
    """SIFT Flow with semantic, geometric or both labels (see the module docstring)."""

    def __init__(
        self,
        root: PathLike,
        split: PathLike = "trainval",
        *,
        labels: str = "both",
        ignore_index: int = 255,
        transform: Transform | None = None,
        skip_bad: bool = False,
    ) -> None:
        root = Path(root)
        if not (root / "Images").is_dir():
            raise DatasetError(
                f"SIFT Flow folder {root} has no Images/ folder; expected the unpacked "
                f"SiftFlowDataset.zip (Images/, SemanticLabels/, GeoLabels/)"
            )
        if labels not in LABEL_KINDS:
            raise DatasetError(f"labels={labels!r}; expected one of {', '.join(LABEL_KINDS)}")
        self.root, self.labels = str(root), labels
        text = os.fspath(split)
        ids, self.split_info = read_split(split, root)
        semantic = [root / "SemanticLabels" / _SUBFOLDER / f"{i}.mat" for i in ids]
        geometric = [root / "GeoLabels" / _SUBFOLDER / f"{i}.mat" for i in ids]
        classes = {"semantic": SEMANTIC_CLASSES, "geometric": GEOMETRIC_CLASSES}.get(
            labels, SEMANTIC_CLASSES + GEOMETRIC_CLASSES
        )
        if labels == "both":
            self.heads = (("sem", len(SEMANTIC_CLASSES)), ("geo", len(GEOMETRIC_CLASSES)))
        self.geo_paths = {str(s): str(g) for s, g in zip(semantic, geometric, strict=True)}
        super().__init__(
            name=f"SIFT Flow {root} split {text}",
            ids=ids,
            image_paths=[root / "Images" / _SUBFOLDER / f"{i}.jpg" for i in ids],
            mask_paths=geometric if labels == "geometric" else semantic,
            classes=classes,
            palette=default_palette(len(classes)),
            ignore_index=ignore_index,
            transform=transform,
            skip_bad=skip_bad,
        )

    def describe(self, index: int) -> str:
        text = super().describe(index)
        return text[:-1] + f", geometric {self.geo_paths[self.mask_paths[index]]})" if self.labels == "both" else text

    def _geometric(self, path: str, offset: int) -> np.ndarray:
        return _shifted(
            read_mat_label(path, "S", "a SIFT Flow GeoLabels file"), len(GEOMETRIC_CLASSES), self.ignore_index, offset
        )

    def load_mask(self, index: int) -> torch.Tensor:
        path = self.mask_paths[index]
        if self.labels == "geometric":
            return torch.from_numpy(self._geometric(path, 0))
        semantic = _shifted(
            read_mat_label(path, "S", "a SIFT Flow SemanticLabels file"), len(SEMANTIC_CLASSES), self.ignore_index, 0
        )
        if self.labels == "semantic":
            return torch.from_numpy(semantic)
        geometric = self._geometric(self.geo_paths[path], len(SEMANTIC_CLASSES))
        if geometric.shape != semantic.shape:
            raise DatasetError(
                f"{self.describe(index)}: the semantic labels are {semantic.shape} but the geometric "
                f"ones {geometric.shape}; expected the same size"
            )
        return torch.from_numpy(np.stack([semantic, geometric]))
