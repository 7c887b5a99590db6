"""FCN backbones from torchvision's ImageNet classifiers: ResNet-18/34/50/101 and MobileNetV3-Large.

The trunk is torchvision's own module (``torchvision.models.resnet50(weights=None)`` ...)
without its classifier, so torchvision's ImageNet weights load under their own names
(:mod:`fcnseg.weights.torchvision_trunks`). The backbone returns the output of the last
block of each stride 8, 16 and 32.

Geometry is derived, not assumed: the coordinate map of each feature is composed from the
modules themselves (kernel, stride, padding and dilation of every ``Conv2d`` and ``MaxPool2d``
on the main path; the shortcut of every residual block is checked to map the same;
squeeze-and-excitation rescales channels and is spatially the identity). For these trunks
every map comes out ``y_in = s * y_out``: the features sit on integer input coordinates, so
the head upsamples by ``f`` with a bilinear kernel ``2f - 1`` and padding ``f - 1``, which
interpolates exactly between neighbouring cells (bilinear with aligned corners) and spans
exactly the first to the last cell.

Input padding. The trunk zero-pads its input by ``P = c - 1`` on every side (``c`` the coarsest
stride: 31 at stride 32). With it, the coarsest map has ``n = ceil((H + 2P) / c)`` cells at image
coordinates ``c * y - P``, and every upsampled blob spans the image coordinates ``-P .. c(n-1) - P``.
The logits cover the image when ``c(n-1) - P >= H - 1``; writing ``H + 2P = cn - r`` with
``0 <= r < c`` this is ``P + r >= c - 1``, true for every H exactly when ``P >= c - 1`` (the case
``r = 0``). The crops computed from the maps then come out 0 for the skips and ``P`` for the final one,
and every image pixel lies between two cells of every stride: interpolated, never extrapolated.
(Zero padding after normalisation is padding with the mean colour, as VGG16's ``conv1_1`` does.)

Options: ``output_stride`` 16 or 8 replaces strides by dilation (ResNet-50/101 as torchvision's
``replace_stride_with_dilation``; MobileNetV3 16 only, torchvision's ``dilated``): a 3x3 convolution
with dilation ``d`` and padding ``d`` maps ``y -> y``, so the geometry stays exact. ``frozen_bn``
keeps every BatchNorm in eval mode while training (its statistics frozen, its scale and shift
still learnt), for batch-1 training. ``width`` scales MobileNetV3 (torchvision's ``width_mult``);
ResNets have fixed widths. MobileNetV3's squeeze-and-excitation averages over the whole image,
so no tiling reproduces whole-image logits for it: ``exact_tiling`` is False and inference
refuses to tile it.

Fast path (``fast_paths=True``): channels-last convolutions with channels-last weights (exact).
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import torch
import torch.nn.functional as F
import torchvision
from torch import nn
from torchvision.models.resnet import BasicBlock, Bottleneck
from torchvision.ops import SqueezeExcitation

from .backbone import Backbone
from .contract import ForwardMemory
from .geometry import IDENTITY, CoordMap, compose, conv_map, receptive_field

#: torchvision builder name -> prefix of the trunk's keys in torchvision's state dict.
ARCHITECTURES = {"resnet18": "", "resnet34": "", "resnet50": "", "resnet101": "", "mobilenet_v3_large": "features."}
#: Strides the head can fuse.
TAPPED_STRIDES = (8, 16, 32)
#: A layer on the main path: (kernel, stride, padding, dilation, output channels or 0 for a pooling).
Layer = tuple[int, int, int, int, int]


def _square(value: Any, what: str, module: nn.Module) -> int:
    values = value if isinstance(value, tuple) else (value,)
    if isinstance(values[0], str) or len(set(values)) != 1:
        raise ValueError(f"{module}: {what} {value!r} is not one integer for both axes; no coordinate map")
    return int(values[0])


def main_path(module: nn.Module) -> list[Layer]:
    """The spatial layers of ``module``'s main path, in order; residual shortcuts are checked to align."""
    if isinstance(module, (nn.Conv2d, nn.MaxPool2d)):
        k, s, p, d = (_square(getattr(module, a), a, module) for a in ("kernel_size", "stride", "padding", "dilation"))
        return [(k, s, p, d, module.out_channels if isinstance(module, nn.Conv2d) else 0)]
    if isinstance(module, SqueezeExcitation):
        return []  # a per-channel scale from the global average: spatially the identity
    if isinstance(module, (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d, nn.Linear, nn.Flatten)):
        raise ValueError(f"{type(module).__name__} has no coordinate map: not a fully convolutional trunk")
    children = dict(module.named_children())
    shortcut = children.pop("downsample", None)
    path = [layer for child in children.values() for layer in main_path(child)]
    if isinstance(module, (BasicBlock, Bottleneck)) or getattr(module, "use_res_connect", False):
        shortcut_map = path_map(main_path(shortcut)) if shortcut is not None else IDENTITY
        if path_map(path) != shortcut_map:
            raise ValueError(f"{type(module).__name__}: the residual branch and the shortcut do not align")
    return path


def path_map(layers: list[Layer], start: CoordMap = IDENTITY) -> CoordMap:
    """Coordinate map of a list of :data:`Layer`."""
    return compose((conv_map(k, s, p, d) for k, s, p, d, _ in layers), start)


def _torchvision_trunk(arch: str, width: float, output_stride: int) -> tuple[nn.Sequential, list[nn.Module]]:
    """torchvision's ``arch`` (random weights) as a Sequential of stages without the classifier."""
    if arch == "mobilenet_v3_large":
        if output_stride not in (32, 16):
            raise ValueError(
                f"mobilenet_v3_large: output_stride must be 32 or 16 (torchvision dilates the last "
                f"stage only), got {output_stride}"
            )
        model = torchvision.models.mobilenet_v3_large(weights=None, width_mult=width, dilated=output_stride == 16)
        return model.features, list(model.features)
    if width != 1.0:
        raise ValueError(
            f"{arch}: width must be 1.0 (a ResNet's channels are fixed by its ImageNet architecture; "
            f"width scales the VGG16, AlexNet and MobileNetV3 backbones), got {width}"
        )
    if output_stride != 32 and arch in ("resnet18", "resnet34"):
        raise ValueError(
            f"{arch}: output_stride {output_stride} needs dilated blocks, which torchvision's "
            "BasicBlock (resnet18/34) does not have; use resnet50 or resnet101"
        )
    dilation = {32: None, 16: [False, False, True], 8: [False, True, True]}
    if output_stride not in dilation:
        raise ValueError(f"{arch}: output_stride must be 32, 16 or 8, got {output_stride}")
    model = getattr(torchvision.models, arch)(weights=None, replace_stride_with_dilation=dilation[output_stride])
    names = ["conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4"]
    body = nn.Sequential(OrderedDict((name, getattr(model, name)) for name in names))
    return body, list(body)


class TorchvisionBackbone(Backbone):
    """A torchvision classifier's trunk, input-padded so that the head's crops cover every input size.

    Args:
        arch: a key of :data:`ARCHITECTURES`.
        width: MobileNetV3's ``width_mult``; must be 1.0 for ResNets.
        dropout: element-wise dropout on the stride-32 features (the trunk has no fc6/fc7; 0 by default).
        output_stride: 32, or 16/8 by dilation (see the module docstring).
        frozen_bn: keep BatchNorm in eval mode while training.
    """

    def __init__(
        self, arch: str, width: float = 1.0, dropout: float = 0.0, output_stride: int = 32, frozen_bn: bool = False
    ) -> None:
        super().__init__()
        if arch not in ARCHITECTURES:
            raise ValueError(f"unknown torchvision trunk {arch!r}; available: {', '.join(ARCHITECTURES)}")
        if not width > 0:  # also refuses NaN
            raise ValueError(f"width must be a number > 0, got {width}")
        self.arch, self.frozen_bn = arch, bool(frozen_bn)
        self.exact_tiling = not arch.startswith("mobilenet")  # squeeze-and-excitation pools the whole image
        self.options = {"output_stride": output_stride, "frozen_bn": self.frozen_bn}
        self.body, stages = _torchvision_trunk(arch, width, output_stride)
        paths = [main_path(stage) for stage in stages]
        layers = [layer for path in paths for layer in path]
        scales, scale, densest = [], 1, 0.0
        channels: list[int] = []
        for path in paths:
            for _kernel, s, _padding, _dilation, out in path:
                scale *= s
                channels.append(out or (channels[-1] if channels else 3))
                densest = max(densest, channels[-1] / scale**2)
            scales.append(scale)
        # The last stage of each stride gives its features (strides replaced by dilation are no new strides).
        last_of = {scale: index for index, scale in enumerate(scales)}
        self.taps = {index: scale for scale, index in last_of.items() if scale in TAPPED_STRIDES}
        self.grid = scales[-1]
        self.input_padding = self.grid - 1  # derived in the module docstring
        padded = conv_map(1, 1, self.input_padding)
        self.coord_maps = {}
        self.channels = {}
        depth = 0
        for index, path in enumerate(paths):
            depth += len(path)
            if index in self.taps:
                self.coord_maps[self.taps[index]] = path_map(layers[:depth], padded)
                self.channels[self.taps[index]] = channels[depth - 1]
        if any(m.scale != stride or m.shift != -self.input_padding for stride, m in self.coord_maps.items()):
            raise ValueError(f"{arch}: features not at y_in = stride * y; the input padding assumes it")
        self.receptive_field = receptive_field(((k - 1) * d + 1, s) for k, s, _, d, _ in layers)
        self._densest = densest
        self.dropout = nn.Dropout(dropout)

    def upsampling(self, factor: int) -> tuple[int, int]:
        """Bilinear between cells on integer coordinates: kernel ``2f - 1``, padding ``f - 1``."""
        return 2 * factor - 1, factor - 1

    def train(self, mode: bool = True) -> TorchvisionBackbone:
        super().train(mode)
        if self.frozen_bn:  # statistics stay those loaded (e.g. ImageNet's); batch-1 batches cannot estimate them
            for module in self.modules():
                if isinstance(module, nn.modules.batchnorm._BatchNorm):
                    module.eval()
        return self

    def reference_layers(self) -> dict[str, nn.Module]:
        """None: the trunk has no reference Caffe layers (its weights load under torchvision's names)."""
        return {}

    def fast_convolutions(self) -> list[nn.Conv2d]:
        return [module for module in self.body.modules() if isinstance(module, nn.Conv2d)]

    def forward_memory(self, num_classes: int) -> ForwardMemory:
        """Peak host memory of one inference pass on an H x W image, a safe estimate.

        Scales with the padded area: a few copies of the densest blob (the most channels per
        input pixel, e.g. ResNet's 64 channels at stride 2), the logits (``num_classes`` per
        pixel, before and after the crop) and the preprocessing copies; plus one copy of the
        weights (oneDNN's re-laid-out weights). Measured peak RSS increase with 21 classes at
        300 and 1000 px, ResNet-18/50 and MobileNetV3: 38-425 MB for 83-705 MB estimated.
        """
        weights = 4 * sum(p.numel() for p in self.parameters())
        return ForwardMemory(4 * (4 * self._densest + 3 * num_classes + 16), self.input_padding, weights)

    def forward(self, x: torch.Tensor) -> dict[int, torch.Tensor]:
        x = F.pad(x, (self.input_padding,) * 4)
        if self.fast_paths:
            x = x.contiguous(memory_format=torch.channels_last)
        features: dict[int, torch.Tensor] = {}
        for index, stage in enumerate(self.body):
            x = stage(x)
            if index in self.taps:
                features[self.taps[index]] = x
        coarsest = max(features)
        features[coarsest] = self.dropout(features[coarsest])
        return features
