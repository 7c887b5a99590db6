"""The contract between a backbone and the FCN head (and tiling), and what every backbone shares.

A backbone is an ``nn.Module`` with:

* ``forward(x) -> {stride: features}`` with at least the key 32 and, for skip heads,
  the strides the head fuses (16, 8, ...);
* ``channels[stride]``: the channel count of each of those features;
* ``coord_maps[stride]``: the :class:`~fcnseg.models.geometry.CoordMap` from the features
  back to the input image, from which the head computes its crops;
* ``grid``: the period in input pixels of its pooling grid (tiles start on it);
* ``receptive_field``: the receptive field in input pixels of one stride-32 feature;
* ``exact_tiling``: whether tiles with the context margin reproduce whole-image logits;
* ``forward_memory(num_classes)``: a safe bound on the memory of one inference pass of the whole
  FCN, as a :class:`~fcnseg.models.contract.ForwardMemory` (tiling plans with it, exports carry it);
  ``estimate_forward_bytes(height, width, num_classes)`` evaluates it for an image;
* ``reference_layers()``: its layers under their reference (Caffe) names, for weight loading;
* ``upsampling(factor)``: the ``(kernel, padding)`` of the head's bilinear upsampling by ``factor``
  onto these features: the paper's ``(2 * factor, 0)`` unless the backbone's grid needs another;
* ``options``: the backbone's own constructor options (JSON), stored in the model's config;
* ``fast_paths``: whether ``forward`` takes the backbone's exact fast paths, set through
  :meth:`Backbone.set_fast_paths`. A backbone without fast paths ignores the flag and runs
  its plain forward.
"""

from __future__ import annotations

import torch
from torch import nn

from .contract import ForwardMemory
from .geometry import CoordMap


class Backbone(nn.Module):
    """Base class of FCN backbones: the attributes of the contract and the fast-path switch."""

    channels: dict[int, int]
    coord_maps: dict[int, CoordMap]
    grid: int = 32
    receptive_field: int
    #: False where a layer sees the whole image (e.g. squeeze-and-excitation's global average):
    #: then no tiling reproduces whole-image logits, and inference refuses to tile.
    exact_tiling: bool = True

    def __init__(self) -> None:
        super().__init__()
        self.fast_paths = False
        self.options: dict = {}

    def set_fast_paths(self, enabled: bool) -> None:
        """Switch the exact fast paths on or off; convolution weights follow (channels-last when on).

        oneDNN runs channels-last (NHWC) 3x3 convolutions 1.5-3x faster than NCHW, but only
        when the weight is channels-last too; otherwise it re-lays the weight out on every call.
        """
        self.fast_paths = bool(enabled)
        memory_format = torch.channels_last if enabled else torch.contiguous_format
        for layer in self.fast_convolutions():
            layer.weight.data = layer.weight.data.contiguous(memory_format=memory_format)

    def fast_convolutions(self) -> list[nn.Conv2d]:
        """The convolutions run on channels-last tensors by the fast paths (none by default)."""
        return []

    def reference_layers(self) -> dict[str, nn.Module]:
        raise NotImplementedError

    def upsampling(self, factor: int) -> tuple[int, int]:
        """``(kernel, padding)`` of the head's bilinear upsampling by ``factor`` (the paper's: ``(2 * factor, 0)``)."""
        return 2 * factor, 0

    def forward_memory(self, num_classes: int) -> ForwardMemory:
        raise NotImplementedError

    def estimate_forward_bytes(self, height: int, width: int, num_classes: int) -> int:
        """Bytes of one inference pass of the FCN on an ``height`` x ``width`` image: :meth:`forward_memory`'s."""
        return self.forward_memory(num_classes).bytes(height, width)
