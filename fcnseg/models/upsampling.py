"""Bilinear upsampling as a transposed convolution, initialised as in the paper."""

from __future__ import annotations

import torch
from torch import nn


def bilinear_kernel(size: int) -> torch.Tensor:
    """2-D bilinear interpolation kernel of side ``size`` (the reference formula).

    ``factor = (size + 1) // 2``; the centre is ``factor - 1`` for odd sizes and
    ``factor - 0.5`` for even ones; ``w[i, j] = (1 - |i - c| / factor) * (1 - |j - c| / factor)``.
    """
    if size < 1:
        raise ValueError(f"kernel size must be >= 1, got {size}")
    factor = (size + 1) // 2
    center = factor - 1 if size % 2 == 1 else factor - 0.5
    ramp = 1 - (torch.arange(size, dtype=torch.float64) - center).abs() / factor
    return (ramp[:, None] * ramp[None, :]).float()


def bilinear_upsampling_weight(channels: int, size: int) -> torch.Tensor:
    """ConvTranspose2d weight (in, out, k, k): the bilinear kernel on the channel diagonal."""
    weight = torch.zeros(channels, channels, size, size)
    kernel = bilinear_kernel(size)
    index = torch.arange(channels)
    weight[index, index] = kernel
    return weight


class BilinearUpsampling(nn.ConvTranspose2d):
    """``ConvTranspose2d`` (no bias) that upsamples by ``stride`` with a bilinear kernel.

    Frozen (``requires_grad=False``) unless ``learnable`` is set, as in the
    released FCN models. The full channels x channels weight is kept so that
    weights trained with learnable upsampling, and the reference Caffe blobs,
    load unchanged.
    """

    def __init__(self, channels: int, stride: int, learnable: bool = False) -> None:
        super().__init__(channels, channels, kernel_size=2 * stride, stride=stride, bias=False)
        self.reset_parameters()
        self.weight.requires_grad_(learnable)

    def reset_parameters(self) -> None:
        with torch.no_grad():
            self.weight.copy_(bilinear_upsampling_weight(self.in_channels, self.kernel_size[0]))
