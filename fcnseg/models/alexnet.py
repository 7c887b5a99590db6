"""AlexNet trunk in the reference FCN-AlexNet geometry, as a :class:`~fcnseg.models.backbone.Backbone`.

Geometry (the reference ``voc-fcn-alexnet`` net): ``conv1`` 11x11 stride 4 padded by 100
(96 channels), 3x3 stride-2 max-pools in Caffe's ceil mode after ``conv1``, ``conv2`` and
``conv5``, local response normalisation after ``pool1`` and ``pool2`` (in that order),
``conv2`` 5x5 pad 2, ``conv3``-``conv5`` 3x3 pad 1, ``conv2``/``conv4``/``conv5`` in two
groups, ``fc6`` a 6x6 convolution and ``fc7`` 1x1 (4096 each) with ReLU and element-wise
dropout. Module names are the reference Caffe layer names (a grouped blob is (out, in/2, k, k)
in Caffe and in PyTorch alike).

Caffe's ``LRN`` (across channels) computes ``a / (k + alpha / n * sum of a^2 over n channels)^beta``
with the window centred on the channel; :func:`torch.nn.functional.local_response_norm` is the
same formula (alpha divided by the size, ``n // 2`` channels either side for odd ``n``).

The stride-32 features sit on integer input coordinates (``32 y + 13``), so the head's
upsampling kernel is odd: ``upscore`` is 63 wide for stride 32, centred on a cell, and the
final crop comes out 18 as in the reference.

Exact fast paths (``fast_paths=True``, measured by ``benchmarks/models_table.py``):
channels-last ``conv1``-``conv5`` with channels-last weights, and ``fc6``/``fc7`` as one
matrix product each (:func:`fcnseg.models.kernels.conv_as_matmul`).
"""

from __future__ import annotations

from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import nn

from .backbone import Backbone
from .contract import ForwardMemory
from .geometry import compose, conv_map, receptive_field
from .kernels import conv_as_matmul

#: The five convolutions: (name, output channels, kernel, stride, padding, groups).
CONVS = (
    ("conv1", 96, 11, 4, 100, 1),
    ("conv2", 256, 5, 1, 2, 2),
    ("conv3", 384, 3, 1, 1, 1),
    ("conv4", 384, 3, 1, 1, 2),
    ("conv5", 256, 3, 1, 1, 2),
)
#: The order of the trunk up to pool5 ("pool": 3x3/2 ceil-mode max-pool; "norm": LRN).
STEPS = ("conv1", "pool", "norm", "conv2", "pool", "norm", "conv3", "conv4", "conv5", "pool")
FC_CHANNELS, FC6_KERNEL = 4096, 6
FIRST_CONV_PADDING = 100
LRN: dict[str, Any] = {"size": 5, "alpha": 1e-4, "beta": 0.75, "k": 1.0}
GROUPS = 2


def _scaled_even(channels: int, width: float) -> int:
    """Channel count scaled by ``width``, a multiple of the two groups (at least 2)."""
    return GROUPS * max(1, int(round(channels * width / GROUPS)))


def caffe_pool(x: torch.Tensor) -> torch.Tensor:
    """Caffe's 3x3 stride-2 max-pooling (ceil mode), as floor mode after one ``-inf`` row and column at the end.

    For kernel 3 and stride 2 the ceil mode adds a last window, partial by one, exactly when the
    size is even: the padded floor-mode pooling has the same windows. Written this way because
    ``torch.export`` (the ONNX exporter) cannot solve the shape guards of ceil mode after stride 4.
    """
    return F.max_pool2d(F.pad(x, (0, 1, 0, 1), value=float("-inf")), kernel_size=3, stride=2)


class AlexNetBackbone(Backbone):
    """The FCN-AlexNet trunk: conv1-conv5 with LRN and groups, fc6/fc7 as convolutions; stride-32 features."""

    def __init__(self, width: float = 1.0, dropout: float = 0.5) -> None:
        super().__init__()
        if not width > 0:  # also refuses NaN
            raise ValueError(f"width must be a number > 0, got {width}")
        in_channels = 3
        layers = []  # (kernel, stride, padding) along the trunk, for the coordinate map
        specs = {name: spec for name, *spec in CONVS}
        for step in STEPS:
            if step == "pool":
                layers.append((3, 2, 0))
            elif step != "norm":
                out_channels, kernel, stride, padding, groups = specs[step]
                out_channels = _scaled_even(out_channels, width)
                self.add_module(step, nn.Conv2d(in_channels, out_channels, kernel, stride, padding, groups=groups))
                layers.append((kernel, stride, padding))
                in_channels = out_channels
        fc_channels = max(1, int(round(FC_CHANNELS * width)))
        self.fc6 = nn.Conv2d(in_channels, fc_channels, FC6_KERNEL)
        self.fc7 = nn.Conv2d(fc_channels, fc_channels, 1)
        self.drop6, self.drop7 = nn.Dropout(dropout), nn.Dropout(dropout)
        layers += [(FC6_KERNEL, 1, 0), (1, 1, 0)]
        self.channels = {32: fc_channels}
        self.coord_maps = {32: compose(conv_map(*layer) for layer in layers)}
        self.receptive_field = receptive_field((kernel, stride) for kernel, stride, _ in layers)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """He initialisation (fan-out), for training from scratch; pretrained weights overwrite it."""
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
                if module.bias is not None:
                    nn.init.zeros_(module.bias)

    def upsampling(self, factor: int) -> tuple[int, int]:
        """The reference's odd kernel (63 for stride 32), centred on the integer-placed cells."""
        return 2 * factor - 1, 0

    def reference_layers(self) -> dict[str, nn.Module]:
        """The trunk's layers under their reference Caffe names."""
        return {name: getattr(self, name) for name in [c[0] for c in CONVS] + ["fc6", "fc7"]}

    def fast_convolutions(self) -> list[nn.Conv2d]:
        return [getattr(self, c[0]) for c in CONVS]

    def forward_memory(self, num_classes: int) -> ForwardMemory:
        """Peak host memory of one inference pass on an H x W image, a safe estimate.

        As VGG16's (:meth:`fcnseg.models.vgg.VGG16Backbone.forward_memory`) with the first
        maps at stride 4 (``conv1`` adds its channels / 16 per padded pixel), plus one copy of the
        weights (the plain forward's oneDNN re-lays out ``fc6``). Measured peak RSS increase at
        300 and 1000 px: 37-171 MB (fast paths), 169-351 MB (plain) for 309-750 MB estimated.
        """
        weights = 4 * sum(p.numel() for p in self.parameters())
        conv1 = cast(nn.Conv2d, self.conv1)  # registered by name from CONVS
        per_pixel = 4 * (3 * conv1.out_channels // 16 + 3 * num_classes + 16)
        return ForwardMemory(per_pixel, FIRST_CONV_PADDING, weights)

    def _classifier(self, layer: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
        return conv_as_matmul(x, layer.weight, layer.bias) if self.fast_paths else layer(x)

    def forward(self, x: torch.Tensor) -> dict[int, torch.Tensor]:
        if self.fast_paths:
            x = x.contiguous(memory_format=torch.channels_last)
        for step in STEPS:
            if step == "pool":
                x = caffe_pool(x)
            elif step == "norm":
                x = F.local_response_norm(x, **LRN)
            else:
                x = F.relu(getattr(self, step)(x), inplace=True)
        x = self.drop6(F.relu(self._classifier(self.fc6, x), inplace=True))
        x = self.drop7(F.relu(self._classifier(self.fc7, x), inplace=True))
        return {32: x}
