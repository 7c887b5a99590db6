"""A training fast path: the same network, without computing conv1-conv3 on most of the 100-px margin.

``conv1_1``'s 100-pixel zero margin makes bands of identical rows (and columns)
between the image and the canvas edge in every blob up to pool3.
:func:`fcnseg.models.fast.padding_plan` proves, per input size, how much of the
margin can be left out and which band rows to copy back after pool3 so that
the stage-3 blob equals the faithful one row for row. The inference twin of
:mod:`fcnseg.models.fast` uses it with frozen weight copies; here the same plan
runs on the model's own parameters and stays differentiable (the copies are an
``expand``, whose backward sums the copies' gradients into the source row), so
the loss and its gradients are those of the faithful network up to fp32
summation order — and a step costs about half as much on small images.

The twin shares every parameter and module with the model: train the twin,
save the model.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from ..models.fcn import FCN
from ..models.fast import TRIM_LAST_STAGE, AxisPlan, padding_plan
from ..models.vgg import VGG16Backbone


def _insert_band_copies(x: torch.Tensor, plan: AxisPlan, dim: int) -> torch.Tensor:
    """Put back the band rows the trimmed canvas left out (``plan.inserts``), differentiably."""
    for position, count, source in plan.inserts:
        shape = list(x.shape)
        shape[dim] = count
        copies = x.narrow(dim, source, 1).expand(shape)
        x = torch.cat([x.narrow(dim, 0, position), copies, x.narrow(dim, position, x.shape[dim] - position)], dim)
    return x


class TrimmedBackbone(nn.Module):
    """Computes :class:`VGG16Backbone`'s features with the proven padding trim; holds the backbone itself."""

    def __init__(self, backbone: VGG16Backbone) -> None:
        super().__init__()
        self.backbone = backbone
        self.channels = backbone.channels
        self.coord_maps = backbone.coord_maps

    def forward(self, x: torch.Tensor) -> dict[int, torch.Tensor]:
        b = self.backbone
        plan = padding_plan(b, x.shape[-2], x.shape[-1])
        if plan is None:
            return b(x)
        rows, cols = plan
        x = F.pad(x, (cols.pad_start, cols.pad_end, rows.pad_start, rows.pad_end))
        features: dict[int, torch.Tensor] = {}
        for stage, names in enumerate(b.conv_names, start=1):
            for name in names:
                conv = getattr(b, name)
                # conv1_1's margin was padded explicitly (trimmed) above
                x = F.conv2d(x, conv.weight, conv.bias, padding=0) if name == "conv1_1" else conv(x)
                x = F.relu(x, inplace=True)
            x = F.max_pool2d(x, kernel_size=2, stride=2, ceil_mode=True)
            if stage == TRIM_LAST_STAGE:
                x = _insert_band_copies(_insert_band_copies(x, rows, 2), cols, 3)
            if stage in (3, 4):
                features[2**stage] = x
        x = b.drop6(F.relu(b.fc6(x), inplace=True))
        x = b.drop7(F.relu(b.fc7(x), inplace=True))
        features[32] = x
        return features


def trimmed_twin(model: nn.Module) -> nn.Module:
    """A module computing ``model``'s logits with the padding trim, sharing all its parameters.

    Models other than an :class:`FCN` on :class:`VGG16Backbone` are returned unchanged.
    """
    if not isinstance(model, FCN) or not isinstance(model.backbone, VGG16Backbone):
        return model
    twin = copy.copy(model)  # shallow: the same parameters, buffers and head layers
    twin._modules = dict(model._modules)  # its own module table, so the swap leaves the model alone
    twin.backbone = TrimmedBackbone(model.backbone)
    return twin
