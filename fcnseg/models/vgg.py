"""VGG16 trunk in the FCN reference geometry, as a backbone with a stated contract.

Contract (shared by every backbone an FCN head can sit on):

* ``forward(x)`` returns a dict ``{stride: features}`` with at least the key 32
  and, for skip heads, 16 and 8;
* ``channels[stride]`` is the channel count of each of those features;
* ``coord_maps[stride]`` is the :class:`~fcnseg.models.geometry.CoordMap` from
  the features back to the input image, from which the head computes its crops.

Geometry (DESIGN §1): 13 3x3 convolutions (``conv1_1`` padded by 100 so the
output can be cropped back onto any input size), five 2x2/2 max-pools in ceil
mode as in Caffe, ``fc6`` a 7x7 convolution without padding and ``fc7`` 1x1,
each with ReLU and element-wise dropout. Module names are the reference Caffe
layer names, so weights map one to one.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from .geometry import CoordMap, compose, conv_map

#: Output channels of each conv in each of the five VGG16 stages.
VGG16_STAGES: tuple[tuple[int, ...], ...] = ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512))
FC_CHANNELS = 4096
FIRST_CONV_PADDING = 100


def scaled(channels: int, width: float) -> int:
    """Channel count scaled by ``width`` (at least one channel)."""
    return max(1, int(round(channels * width)))


class VGG16Backbone(nn.Module):
    """VGG16 convolutions plus fc6/fc7 as convolutions, returning features by stride."""

    def __init__(self, width: float = 1.0, dropout: float = 0.5) -> None:
        super().__init__()
        if width <= 0:
            raise ValueError(f"width must be > 0, got {width}")
        self.conv_names: list[list[str]] = []
        in_channels = 3
        layer_maps: list[CoordMap] = []
        self.coord_maps: dict[int, CoordMap] = {}
        for stage, stage_channels in enumerate(VGG16_STAGES, start=1):
            names = []
            for index, out_channels in enumerate(stage_channels, start=1):
                name = f"conv{stage}_{index}"
                padding = FIRST_CONV_PADDING if name == "conv1_1" else 1
                out_channels = scaled(out_channels, width)
                self.add_module(name, nn.Conv2d(in_channels, out_channels, 3, padding=padding))
                layer_maps.append(conv_map(3, 1, padding))
                in_channels = out_channels
                names.append(name)
            self.conv_names.append(names)
            layer_maps.append(conv_map(2, 2, 0))  # pool
            if stage in (3, 4):
                self.coord_maps[2**stage] = compose(layer_maps)
        pool5_channels = in_channels
        fc_channels = scaled(FC_CHANNELS, width)
        self.fc6 = nn.Conv2d(pool5_channels, fc_channels, 7)
        self.fc7 = nn.Conv2d(fc_channels, fc_channels, 1)
        self.drop6 = nn.Dropout(dropout)
        self.drop7 = nn.Dropout(dropout)
        layer_maps += [conv_map(7), conv_map(1)]
        self.coord_maps[32] = compose(layer_maps)
        self.channels = {8: scaled(VGG16_STAGES[2][-1], width), 16: scaled(VGG16_STAGES[3][-1], width), 32: fc_channels}
        #: When set (by ``fcnseg.models.fast.enable_fast_training``), ``forward`` returns
        #: ``fast_forward(self, x)``: the same features by exact faster paths. None: the code below.
        self.fast_forward: Callable[["VGG16Backbone", torch.Tensor], dict[int, torch.Tensor]] | None = None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """He initialisation (fan-out), for training from scratch; pretrained weights overwrite it."""
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(module.bias)

    def reference_layers(self) -> dict[str, nn.Module]:
        """The trunk's layers under their reference Caffe names."""
        names = [name for stage in self.conv_names for name in stage] + ["fc6", "fc7"]
        return {name: getattr(self, name) for name in names}

    def forward(self, x: torch.Tensor) -> dict[int, torch.Tensor]:
        if self.fast_forward is not None:
            return self.fast_forward(self, x)
        features: dict[int, torch.Tensor] = {}
        for stage, names in enumerate(self.conv_names, start=1):
            for name in names:
                x = F.relu(getattr(self, name)(x), inplace=True)
            x = F.max_pool2d(x, kernel_size=2, stride=2, ceil_mode=True)
            if stage in (3, 4):
                features[2**stage] = x
        x = self.drop6(F.relu(self.fc6(x), inplace=True))
        x = self.drop7(F.relu(self.fc7(x), inplace=True))
        features[32] = x
        return features
