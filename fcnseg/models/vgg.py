"""VGG16 trunk in the FCN reference geometry, as a :class:`~fcnseg.models.backbone.Backbone`.

Geometry (the reference Caffe nets): 13 3x3 convolutions (``conv1_1`` padded by 100 so
the output can be cropped back onto any input size), five 2x2/2 max-pools in ceil
mode as in Caffe, ``fc6`` a 7x7 convolution without padding and ``fc7`` 1x1,
each with ReLU and element-wise dropout. Module names are the reference Caffe
layer names, so weights map one to one.

Exact fast paths (``fast_paths=True``; each proven equal in ``tests/test_fast_paths.py``,
their speed measured by ``benchmarks/speed.py``, fcn8s against fcn8s_plain):

* channels-last convolutions with channels-last weights;
* the padding trim (:mod:`fcnseg.models.padding_trim`): conv1-conv3 skip the band of the
  100-px margin whose rows are provably copies, re-inserted after pool3;
* ``fc6``/``fc7`` as one matrix product each (:func:`fcnseg.models.kernels.conv_as_matmul`).

They change kernels and summation order, never the arithmetic: features (and gradients)
equal the plain forward's to fp32 rounding.
"""

from __future__ import annotations

from typing import cast

import torch
import torch.nn.functional as F
from torch import nn

from .backbone import Backbone
from .contract import ForwardMemory
from .geometry import CoordMap, compose, conv_map
from .kernels import conv_as_matmul
from .padding_trim import Layer, apply_inserts, padding_plan

#: Output channels of each conv in each of the five VGG16 stages.
VGG16_STAGES: tuple[tuple[int, ...], ...] = ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512))
FC_CHANNELS = 4096
FIRST_CONV_PADDING = 100
#: The padding trim covers stages 1-3; band rows are re-inserted after pool3 (stride 8).
TRIM_STAGES = 3


def scaled(channels: int, width: float) -> int:
    """Channel count scaled by ``width`` (at least one channel)."""
    return max(1, int(round(channels * width)))


def _pool(x: torch.Tensor) -> torch.Tensor:
    return F.max_pool2d(x, kernel_size=2, stride=2, ceil_mode=True)  # Caffe pooling rounds up


class VGG16Backbone(Backbone):
    """VGG16 convolutions plus fc6/fc7 as convolutions, returning features by stride 8, 16 and 32."""

    def __init__(self, width: float = 1.0, dropout: float = 0.5) -> None:
        super().__init__()
        if not width > 0:  # also refuses NaN
            raise ValueError(f"width must be a number > 0, got {width}")
        self.conv_names: list[list[str]] = []
        in_channels = 3
        layer_maps: list[CoordMap] = []
        self.coord_maps = {}
        trim_layers: list[Layer] = []
        for stage, stage_channels in enumerate(VGG16_STAGES, start=1):
            names = []
            for index, out_channels in enumerate(stage_channels, start=1):
                name = f"conv{stage}_{index}"
                padding = FIRST_CONV_PADDING if name == "conv1_1" else 1
                out_channels = scaled(out_channels, width)
                self.add_module(name, nn.Conv2d(in_channels, out_channels, 3, padding=padding))
                layer_maps.append(conv_map(3, 1, padding))
                if stage <= TRIM_STAGES:  # conv1_1's margin is padded explicitly by the trim
                    trim_layers.append(("conv", 3, 1, 0 if name == "conv1_1" else padding))
                in_channels = out_channels
                names.append(name)
            self.conv_names.append(names)
            layer_maps.append(conv_map(2, 2, 0))
            if stage <= TRIM_STAGES:
                trim_layers.append(("pool", 2, 2, 0))
            if stage <= 4:  # pool1 ... pool4: the skips of FCN-2s ... FCN-16s
                self.coord_maps[2**stage] = compose(layer_maps)
        self.trim_layers = tuple(trim_layers)
        fc_channels = scaled(FC_CHANNELS, width)
        self.fc6 = nn.Conv2d(in_channels, fc_channels, 7)
        self.fc7 = nn.Conv2d(fc_channels, fc_channels, 1)
        self.drop6 = nn.Dropout(dropout)
        self.drop7 = nn.Dropout(dropout)
        layer_maps += [conv_map(7), conv_map(1)]
        self.coord_maps[32] = compose(layer_maps)
        self.channels = {2**stage: scaled(VGG16_STAGES[stage - 1][-1], width) for stage in range(1, 5)} | {
            32: fc_channels
        }
        #: The finest stride a head fuses (set by the head): the padding trim re-inserts its band after pool3, so
        #: it applies only when no finer features are used (FCN-32s ... FCN-8s).
        self.finest_stride = 8
        self.receptive_field = self._receptive_field()
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """He initialisation (fan-out), for training from scratch; pretrained weights overwrite it."""
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
                if module.bias is not None:
                    nn.init.zeros_(module.bias)

    def _convs(self) -> list[str]:
        return [name for stage in self.conv_names for name in stage]

    def reference_layers(self) -> dict[str, nn.Module]:
        """The trunk's layers under their reference Caffe names."""
        return {name: getattr(self, name) for name in self._convs() + ["fc6", "fc7"]}

    def fast_convolutions(self) -> list[nn.Conv2d]:
        return [getattr(self, name) for name in self._convs()]

    @staticmethod
    def _receptive_field() -> int:
        """Receptive field (px) of one ``fc7`` cell: 3x3 convs and 2x2 pools per stage, then the 7x7 ``fc6``."""
        field, step = 1, 1
        for stage in VGG16_STAGES:
            field += 2 * step * len(stage) + step  # each 3x3 conv widens by 2 cells, the pool by one
            step *= 2
        return field + 6 * step

    def forward_memory(self, num_classes: int) -> ForwardMemory:
        """Peak host memory of one inference pass on an H x W image, a safe estimate.

        Everything scales with the padded area (H + 200) x (W + 200): the first stage keeps
        ``conv1_1``/``conv1_2`` maps of that size, the logits before the final crop have
        ``num_classes`` maps of about that size, and preprocessing makes a few float copies.
        ``4 * area * (3 * conv1_channels + 3 * num_classes + 16)`` over-estimated the peak RSS
        measured on the CPU by 20-35 % across widths 1/16..1 and 0.25..4 Mpx images for the
        plain forward; the padding trim of the fast paths makes it about 2x too high, which
        keeps tiles smaller than needed but never over the budget.
        """
        conv1_1 = cast(nn.Conv2d, self.conv1_1)  # registered by name
        return ForwardMemory(4 * (3 * conv1_1.out_channels + 3 * num_classes + 16), FIRST_CONV_PADDING)

    def _classifier(self, layer: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
        return conv_as_matmul(x, layer.weight, layer.bias) if self.fast_paths else layer(x)

    def forward(self, x: torch.Tensor) -> dict[int, torch.Tensor]:
        plan = None
        if self.fast_paths and self.finest_stride >= 2**TRIM_STAGES:
            plan = padding_plan(FIRST_CONV_PADDING, self.trim_layers, x.shape[-2], x.shape[-1])
            rows, cols = plan
            x = F.pad(x, (cols.pad_start, cols.pad_end, rows.pad_start, rows.pad_end))
        if self.fast_paths:
            x = x.contiguous(memory_format=torch.channels_last)
        features: dict[int, torch.Tensor] = {}
        for stage, names in enumerate(self.conv_names, start=1):
            for name in names:
                conv = getattr(self, name)
                padding = 0 if plan is not None and name == "conv1_1" else conv.padding  # padded above
                x = F.relu(F.conv2d(x, conv.weight, conv.bias, padding=padding), inplace=True)
            x = _pool(x)
            if plan is not None and stage == TRIM_STAGES:
                x = apply_inserts(x, *plan)
            if self.finest_stride <= 2**stage <= 16:  # only what the head fuses stays alive
                features[2**stage] = x
        x = self.drop6(F.relu(self._classifier(self.fc6, x), inplace=True))
        x = self.drop7(F.relu(self._classifier(self.fc7, x), inplace=True))
        features[32] = x
        return features
