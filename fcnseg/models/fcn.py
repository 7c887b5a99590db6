"""The FCN head: one class for FCN-32s, FCN-16s, FCN-8s and FCN-8s at-once, over any backbone.

The variant is a parameter (the output stride and the at-once skip scaling),
never a copy; so is the backbone (:data:`BACKBONES`: the paper's VGG16 and AlexNet,
torchvision's ResNets and MobileNetV3). Every crop offset is computed from the layers'
coordinate maps when the model is built (see :mod:`fcnseg.models.geometry`); for VGG16
they come out as the reference numbers (skips 5 and 9; final 19, 27 or 31), for AlexNet 18.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from typing import Any, cast

import torch
from torch import nn

from ..preprocessing import CAFFE, TORCHVISION, Preprocessing, preprocess
from .alexnet import AlexNetBackbone
from .backbone import Backbone
from .contract import ForwardMemory
from .geometry import IDENTITY, CoordMap, crop_offset, deconv_map
from .torchvision_trunks import ARCHITECTURES, TorchvisionBackbone
from .upsampling import BilinearUpsampling
from .vgg import VGG16Backbone

#: Backbones by name: each takes ``width`` and ``dropout`` (and its own options).
BACKBONES: dict[str, Callable[..., Backbone]] = {
    "vgg16": VGG16Backbone,
    "alexnet": AlexNetBackbone,
    **{arch: functools.partial(TorchvisionBackbone, arch) for arch in ARCHITECTURES},
}
#: Reference layer names of each skip, from the coarsest inwards:
#: (backbone stride, score layer, fixed at-once scale, upsampling that precedes the fusion).
SKIPS = (
    (16, "score_pool4", "scale_pool4", "upscore2"),
    (8, "score_pool3", "scale_pool3", "upscore_pool4"),
    (4, "score_pool2", "scale_pool2", "upscore_pool3"),
    (2, "score_pool1", "scale_pool1", "upscore_pool2"),
)
#: Name of the final upsampling layer for each output stride (4 and 2: the skip architecture carried on, FCN-4s/2s).
FINAL_UPSAMPLING = {32: "upscore", 16: "upscore16", 8: "upscore8", 4: "upscore4", 2: "upscore2s"}
#: Fixed skip scales of the at-once model (reference ``scale_pool4``/``scale_pool3``).
ATONCE_SCALES = {"scale_pool4": 0.01, "scale_pool3": 0.0001}


def crop_like(blob: torch.Tensor, offset: int, height: int, width: int) -> torch.Tensor:
    """``blob[:, :, offset:offset+height, offset:offset+width]``, checked to be that size."""
    cropped = blob[:, :, offset : offset + height, offset : offset + width]
    if cropped.shape[-2:] != (height, width):
        raise RuntimeError(
            f"cannot crop {tuple(blob.shape[-2:])} at offset {offset} to {(height, width)}: "
            "the network's padding does not cover this input size"
        )
    return cropped


class FCN(nn.Module):
    """Fully convolutional network: backbone features fused from coarse to fine, upsampled, cropped.

    Args:
        num_classes: number of output classes C.
        stride: output stride of the head, 32, 16, 8, or 4 and 2 (FCN-4s/2s: the paper's skips
            carried on to pool2 and pool1): the score of the backbone's coarsest features is
            fused with those of every finer stride down to this one.
        width: channel multiplier of the backbone (fc6/fc7 included); 1.0 is the paper's net.
        atonce: scale the pool4/pool3 features by the fixed 0.01/0.0001 of FCN-8s at-once.
        learnable_upsampling: train the bilinear deconvolutions (frozen in the paper's models).
        dropout: element-wise dropout probability after fc6 and fc7 (the backbone's last features).
        fast_paths: run the exact fast paths of the backbone and the upsampling (same
            logits and gradients to fp32 rounding, faster); False runs every layer as written.
        backbone: a name in :data:`BACKBONES` (built with ``width``, ``dropout`` and
            ``backbone_options``) or a :class:`~fcnseg.models.backbone.Backbone`.
        name: the model's registry name (stored in ``config``); by default ``fcn{stride}s[_atonce]``
            for VGG16 and ``fcn{stride}s_{backbone}`` otherwise.
        heads: several score heads on the one trunk, as ``(name, classes)`` pairs whose classes
            sum to ``num_classes`` (the paper's SIFT Flow net: ``(("sem", 33), ("geo", 3))``).
            Each head has its own score, skip and upsampling layers, named with the suffix
            ``_<name>`` as in the reference nets (``score_fr_sem``, ``upscore2_geo``); their
            logits are concatenated along the channels in this order. None: one head.

    ``forward`` takes a preprocessed blob (N, 3, H, W) and returns logits
    (N, C, H, W) aligned pixel for pixel to the input, for every H, W >= 1.
    ``config`` is everything :func:`fcnseg.create_model` needs to build it again
    (what checkpoints store); ``preprocessing`` is what its weights expect. It keeps the
    model contract (:class:`~fcnseg.models.contract.SegmentationModel`, ``ReferenceNet``).
    """

    in_channels = 3

    def __init__(
        self,
        num_classes: int,
        stride: int = 8,
        width: float = 1.0,
        atonce: bool = False,
        learnable_upsampling: bool = False,
        dropout: float = 0.5,
        fast_paths: bool = True,
        backbone: str | Backbone = "vgg16",
        name: str | None = None,
        heads: Sequence[tuple[str, int]] | None = None,
        **backbone_options: Any,
    ) -> None:
        super().__init__()
        if stride not in FINAL_UPSAMPLING:
            raise ValueError(f"stride must be one of {sorted(FINAL_UPSAMPLING)}, got {stride}")
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
            raise ValueError(f"num_classes must be an integer >= 1, got {num_classes!r}")
        if not 0.0 <= dropout < 1.0:  # also refuses NaN
            raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")
        if atonce and stride != 8:
            raise ValueError("the at-once skip scaling is defined for stride 8 only")
        self.heads = None if heads is None else _checked_heads(heads, num_classes)
        backbone_name = backbone if isinstance(backbone, str) else type(backbone).__name__
        if isinstance(backbone, str):
            if backbone not in BACKBONES:
                raise ValueError(f"unknown backbone {backbone!r}; available: {', '.join(BACKBONES)}")
            backbone = BACKBONES[backbone](width=width, dropout=dropout, **backbone_options)
        elif backbone_options:
            raise ValueError(f"options {sorted(backbone_options)} need a backbone given by name")
        self.num_classes = num_classes
        self.stride = stride
        self.atonce = atonce
        self.preprocessing: Preprocessing = TORCHVISION
        self.caffe_preprocessing: Preprocessing = CAFFE
        self.backbone = backbone
        channels, maps = backbone.channels, backbone.coord_maps
        coarsest = max(channels)
        if stride not in channels:
            raise ValueError(
                f"stride {stride} needs the backbone's stride-{stride} features; it has strides {sorted(channels)}"
            )

        # The crops depend on the geometry only, so every head shares them.
        self.skip_names: list[tuple[int, str, str, str]] = [
            s for s in SKIPS if stride <= s[0] < coarsest and s[0] in channels
        ]
        self.skip_offsets: list[int] = []
        score_map, score_stride, factors = maps[coarsest], coarsest, []  # factors: of each skip's upsampling
        for skip_stride, _, scale_name, _ in self.skip_names:
            factors.append(score_stride // skip_stride)
            score_map, score_stride = score_map.then(self._upsampling_map(factors[-1])), skip_stride
            self.skip_offsets.append(crop_offset(maps[skip_stride], score_map))
            if atonce:
                self.register_buffer(scale_name, torch.tensor(ATONCE_SCALES[scale_name]))
        if hasattr(backbone, "finest_stride"):  # a backbone that computes less when no finer features are fused
            cast(Any, backbone).finest_stride = min([coarsest] + [s[0] for s in self.skip_names])  # a plain int
        self.final_name = FINAL_UPSAMPLING[stride]
        self.final_offset = crop_offset(score_map.then(self._upsampling_map(stride)), IDENTITY)
        for suffix, classes in self.head_layers():
            self.add_module("score_fr" + suffix, nn.Conv2d(channels[coarsest], classes, 1))
            for (skip_stride, score_name, _, up_name), factor in zip(self.skip_names, factors, strict=True):
                self.add_module(up_name + suffix, self._upsampling(classes, factor, learnable_upsampling))
                self.add_module(score_name + suffix, nn.Conv2d(channels[skip_stride], classes, 1))
            self.add_module(self.final_name + suffix, self._upsampling(classes, stride, learnable_upsampling))
            for layer in ["score_fr"] + [s[1] for s in self.skip_names]:
                # The paper starts every score layer at zero.
                nn.init.zeros_(getattr(self, layer + suffix).weight)
                nn.init.zeros_(getattr(self, layer + suffix).bias)
        default_name = f"fcn{stride}s" + ("_atonce" if atonce else "")
        default_name += "" if backbone_name == "vgg16" else f"_{backbone_name}"
        self.config: dict[str, Any] = {
            "name": name or default_name,
            "num_classes": num_classes,
            "width": width,
            "learnable_upsampling": learnable_upsampling,
            "dropout": dropout,
            **backbone.options,
        }
        if self.heads is not None:
            self.config["heads"] = [list(head) for head in self.heads]
        self.set_fast_paths(fast_paths)

    def _upsampling_map(self, factor: int) -> CoordMap:
        kernel, padding = self.backbone.upsampling(factor)
        return deconv_map(kernel, factor, padding)

    def _upsampling(self, channels: int, factor: int, learnable: bool) -> BilinearUpsampling:
        kernel, padding = self.backbone.upsampling(factor)
        return BilinearUpsampling(channels, factor, learnable, kernel, padding)

    def head_layers(self) -> list[tuple[str, int]]:
        """``(layer-name suffix, classes)`` of each head: ``[("", C)]`` for one head, else ``("_sem", 33), ...``."""
        return [("", self.num_classes)] if self.heads is None else [(f"_{name}", n) for name, n in self.heads]

    def prepare_input(self, images: torch.Tensor) -> torch.Tensor:
        """The blob of uint8 RGB images (3, H, W) or (N, 3, H, W): :func:`fcnseg.preprocess`, :attr:`preprocessing`."""
        return preprocess(images, self.preprocessing)

    def mean_pixel(self) -> tuple[int, ...]:
        """The RGB uint8 pixel that preprocesses to about zero (training pads with it)."""
        return self.preprocessing.mean_rgb_uint8()

    @property
    def fast_paths(self) -> bool:
        return self.backbone.fast_paths

    def set_fast_paths(self, enabled: bool) -> FCN:
        """Switch the exact fast paths of every layer on or off (see the ``fast_paths`` argument)."""
        self.backbone.set_fast_paths(enabled)
        for module in self.modules():
            if isinstance(module, BilinearUpsampling):
                module.fast_paths = bool(enabled)
        return self

    @property
    def exact_tiling(self) -> bool:
        """Whether tiles reproduce whole-image logits (see the backbone contract)."""
        return self.backbone.exact_tiling

    @property
    def grid(self) -> int:
        """Period (px) of the backbone's pooling grid: tiles that start on it see the whole image's grid."""
        return self.backbone.grid

    def context_margin(self) -> int:
        """Context (px, a multiple of :attr:`grid`) around a tile that makes tiled logits equal whole-image ones.

        No output pixel depends on input farther than the backbone's receptive-field radius
        plus the reach of the upsampling chain (less than 32 + 16 + 8 px for FCN-8s); two
        grid periods bound the latter. For VGG16: ceil((404 / 2 + 64) / 32) * 32 = 288 px.
        """
        reach = self.backbone.receptive_field / 2 + 2 * self.grid
        return int(math.ceil(reach / self.grid) * self.grid)

    def estimate_forward_bytes(self, height: int, width: int) -> int:
        """A safe bound on the host memory of one inference pass on an H x W image (see the backbone's)."""
        return self.forward_memory().bytes(height, width)

    def forward_memory(self) -> ForwardMemory:
        """:meth:`estimate_forward_bytes` as data (the backbone's, for this model's classes)."""
        return self.backbone.forward_memory(self.num_classes)

    def reference_layers(self) -> dict[str, nn.Module]:
        """Every layer with weights, under its reference Caffe name."""
        layers = self.backbone.reference_layers()
        names = ["score_fr"] + [n for s in self.skip_names for n in (s[1], s[3])] + [self.final_name]
        layers.update(
            {name + suffix: getattr(self, name + suffix) for suffix, _ in self.head_layers() for name in names}
        )
        return layers

    def fixed_scales(self) -> dict[str, torch.Tensor]:
        """The at-once model's fixed skip scales (``scale_pool4``, ``scale_pool3``) by reference name; else empty."""
        if not self.atonce:
            return {}
        return {scale_name: getattr(self, scale_name) for _, _, scale_name, _ in self.skip_names}

    def crop_offsets(self) -> dict[str, int]:
        """The computed crops: one per skip (by score layer name) and the final one."""
        offsets = {s[1]: off for s, off in zip(self.skip_names, self.skip_offsets, strict=True)}
        offsets["final"] = self.final_offset
        return offsets

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[-2:]
        features = self.backbone(x)
        scores = [self._head(features, suffix, height, width) for suffix, _ in self.head_layers()]
        return scores[0] if len(scores) == 1 else torch.cat(scores, 1)

    def _head(self, features: dict[int, torch.Tensor], suffix: str, height: int, width: int) -> torch.Tensor:
        """One head's logits: score, fuse the skips from coarse to fine, upsample, crop onto the input."""
        score = getattr(self, "score_fr" + suffix)(features[max(features)])
        for (skip_stride, score_name, scale_name, up_name), offset in zip(
            self.skip_names, self.skip_offsets, strict=True
        ):
            score = getattr(self, up_name + suffix)(score)
            skip = features[skip_stride]
            if self.atonce:
                skip = skip * getattr(self, scale_name)
            skip = getattr(self, score_name + suffix)(skip)
            score = score + crop_like(skip, offset, score.shape[-2], score.shape[-1])
        score = getattr(self, self.final_name + suffix)(score)
        return crop_like(score, self.final_offset, height, width)


def _checked_heads(heads: Sequence[tuple[str, int]], num_classes: int) -> tuple[tuple[str, int], ...]:
    checked = tuple((str(name), int(classes)) for name, classes in heads)
    names = [name for name, _ in checked]
    if not checked or any(not name.isidentifier() for name in names) or len(set(names)) != len(names):
        raise ValueError(f"heads must be (name, classes) pairs with distinct identifier names, got {heads!r}")
    if any(classes < 1 for _, classes in checked) or sum(c for _, c in checked) != num_classes:
        raise ValueError(
            f"the heads' classes {[c for _, c in checked]} must be >= 1 and sum to num_classes={num_classes}"
        )
    return checked
