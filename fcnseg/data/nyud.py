"""NYUDv2 (Silberman et al., ECCV 2012) in the 40-class task of Gupta, Arbelaez, Malik (CVPR 2013), RGB-D.

Layout of the reference's prepared data (``nyud.tar.gz``, read by ``nyud_layers.py`` of
shelhamer/fcn.berkeleyvision.org; ``root`` is its folder)::

    data/images/img_<id>.png       colour image
    data/depth/img_<id>.png        depth, 16-bit PNG in millimetres (0 = no depth)
    data/hha/img_<id>.png          HHA image: (disparity, height, angle) as the R, G, B of a PNG
    segmentation/img_<id>.mat      variable segmentation: 0 void, 1..40 the classes
    <split>.txt                    ids (train 381, val 414, trainval, test 654 in the reference)

Class k of the file is id k - 1; void is the ignore value.

``modality``: what an item's image is — ``"color"`` (uint8 (3, H, W) RGB: the plain FCNs), ``"hha"`` (uint8 (3, H, W)
HHA: the plain FCNs on depth) or ``"color_hha"`` (uint8 (6, H, W), RGB then HHA: the late-fusion
``nyud_fcn32s_color_hha``, whose :func:`fcnseg.models.preprocess_color_hha` preprocesses each half with its own mean).

HHA images are read from ``hha_dir`` (default ``data/hha``); one that is missing there is
computed from ``data/depth`` (:mod:`fcnseg.data.hha`, with ``intrinsics`` = [fx, fy, cx, cy] in
0-based pixels, default the NYUDv2 colour camera for the frame's size) and written there, so
it is computed once. Delete the computed files to recompute them (e.g. with other intrinsics).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..files import atomic_path
from .base import Transform
from .errors import DatasetError
from .hha import hha_from_depth, nyud_intrinsics
from .paired import PairedFileDataset
from .palette import default_palette
from .readers import _open_decoded, read_image_file, read_mat_label, read_split

NYUD_CLASSES = ("wall", "floor", "cabinet", "bed", "chair", "sofa", "table", "door", "window", "bookshelf", "picture",
                "counter", "blinds", "desk", "shelves", "curtain", "dresser", "pillow", "mirror", "floor mat",
                "clothes", "ceiling", "books", "refrigerator", "television", "paper", "towel", "shower curtain", "box",
                "whiteboard", "person", "night stand", "toilet", "sink", "lamp", "bathtub", "bag", "otherstructure",
                "otherfurniture", "otherprop")  # fmt: skip
MODALITIES = ("color", "hha", "color_hha")
_DEPTH_MODES = ("I;16", "I;16B", "I")

PathLike = str | os.PathLike[str]


def read_depth_file(path: PathLike) -> np.ndarray:
    """A 16-bit depth PNG in millimetres as float64 metres (H, W)."""
    with _open_decoded(path, "depth image") as image:
        if image.mode not in _DEPTH_MODES:
            raise DatasetError(
                f"depth image {path} is a {image.mode} image; expected one channel of 16-bit "
                "depth in millimetres (mode I;16)"
            )
        return np.asarray(image, dtype=np.float64) / 1000.0


class NYUDDataset(PairedFileDataset):
    """NYUDv2, 40 classes, colour and/or HHA images (see the module docstring)."""

    def __init__(
        self,
        root: PathLike,
        split: PathLike = "train",
        *,
        modality: str = "color",
        hha_dir: PathLike | None = None,
        intrinsics: Sequence[float] | None = None,
        ignore_index: int = 255,
        transform: Transform | None = None,
        skip_bad: bool = False,
    ) -> None:
        root = Path(root)
        if not (root / "data").is_dir():
            raise DatasetError(
                f"NYUDv2 folder {root} has no data/ folder; expected the reference's prepared data "
                "(data/images, data/depth or data/hha, segmentation/, <split>.txt)"
            )
        if modality not in MODALITIES:
            raise DatasetError(f"modality={modality!r}; expected one of {', '.join(MODALITIES)}")
        if intrinsics is not None and (len(intrinsics) != 4 or not all(float(v) > 0 for v in intrinsics)):
            raise DatasetError(f"intrinsics={intrinsics!r}; expected [fx, fy, cx, cy] in pixels, all positive")
        self.root, self.modality = str(root), modality
        self.intrinsics: tuple[float, float, float, float] | None = None
        if intrinsics is not None:  # four values, checked above
            fx, fy, cx, cy = (float(v) for v in intrinsics)
            self.intrinsics = (fx, fy, cx, cy)
        self.hha_dir = str(root / "data" / "hha" if hha_dir is None else hha_dir)
        self.depth_dir = str(root / "data" / "depth")
        ids, self.split_info = read_split(split, root)
        super().__init__(
            name=f"NYUDv2 {root} split {os.fspath(split)}",
            ids=ids,
            image_paths=[root / "data" / "images" / f"img_{i}.png" for i in ids],
            mask_paths=[root / "segmentation" / f"img_{i}.mat" for i in ids],
            classes=NYUD_CLASSES,
            palette=default_palette(len(NYUD_CLASSES)),
            ignore_index=ignore_index,
            transform=transform,
            skip_bad=skip_bad,
        )

    def load_mask(self, index: int) -> torch.Tensor:
        label = read_mat_label(self.mask_paths[index], "segmentation", "a NYUDv2 segmentation/img_*.mat file")
        return torch.from_numpy(np.where(label <= 0, self.ignore_index, label - 1))

    def load_image(self, index: int) -> torch.Tensor:
        if self.modality == "color":
            return super().load_image(index)
        hha = self.load_hha(index)
        if self.modality == "hha":
            return hha
        color = super().load_image(index)
        if color.shape != hha.shape:
            raise DatasetError(
                f"{self.describe(index)}: the colour image is {tuple(color.shape)} but the HHA image "
                f"{tuple(hha.shape)}; expected the same size"
            )
        return torch.cat([color, hha])

    def load_hha(self, index: int) -> torch.Tensor:
        """The HHA image uint8 (3, H, W) of item ``index``: from ``hha_dir``, or computed from its depth and cached."""
        name = f"img_{self.ids[index]}.png"
        cached, depth_path = Path(self.hha_dir) / name, Path(self.depth_dir) / name
        if cached.exists():
            return read_image_file(cached)
        if not depth_path.exists():
            raise DatasetError(
                f"{self.name}: HHA image {cached} does not exist, nor the depth image {depth_path} "
                "to compute it from; expected one of them"
            )
        depth = read_depth_file(depth_path)
        hha = hha_from_depth(depth, self.intrinsics or nyud_intrinsics(*depth.shape))
        try:
            with atomic_path(cached) as tmp:
                Image.fromarray(hha).save(tmp, format="PNG")
        except OSError as error:
            raise DatasetError(
                f"cannot write the computed HHA image {cached} ({error}); expected a writable "
                "folder (pass hha_dir=<folder>)"
            ) from None
        return torch.from_numpy(hha).permute(2, 0, 1).contiguous()
