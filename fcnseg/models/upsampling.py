"""Bilinear upsampling as a transposed convolution, initialised as in the paper."""

from __future__ import annotations

from typing import cast

import torch
import torch.nn.functional as F
from torch import nn

from .kernels import is_diagonal


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

    The kernel side is ``2 * stride`` unless given (the paper's VGG nets; FCN-AlexNet's
    ``upscore`` is 63 for stride 32). ``padding`` trims the output as a ``ConvTranspose2d``'s does:
    kernel ``2s - 1`` with padding ``s - 1`` interpolates exactly between the input cells
    (bilinear with aligned corners), which the torchvision trunks use.

    Frozen (``requires_grad=False``) unless ``learnable`` is set, as in the
    released FCN models. The full channels x channels weight is kept so that
    weights trained with learnable upsampling, and the reference Caffe blobs,
    load unchanged.

    Fast path (``fast_paths``): while no gradient flows to the weight and the weight is
    zero off the channel diagonal (checked whenever the weight changes), the C x C
    transposed convolution equals a depthwise one (``groups=C``), run on channels-last
    tensors where oneDNN's depthwise kernel is fastest. Same arithmetic, C times less work.
    """

    def __init__(
        self, channels: int, stride: int, learnable: bool = False, kernel_size: int | None = None, padding: int = 0
    ) -> None:
        super().__init__(
            channels, channels, kernel_size=kernel_size or 2 * stride, stride=stride, padding=padding, bias=False
        )
        self.reset_parameters()
        self.weight.requires_grad_(learnable)
        self.fast_paths = False
        self._diagonal: tuple[tuple[int, int], bool] | None = None  # ((data_ptr, version), verdict)

    def reset_parameters(self) -> None:
        with torch.no_grad():
            self.weight.copy_(bilinear_upsampling_weight(self.in_channels, self.kernel_size[0]))

    def _is_diagonal(self) -> bool:
        if self.weight.is_meta:  # shapes only: nothing to check, the full deconvolution has the same shape
            return False
        # An inference tensor (a model built under torch.inference_mode) has no version counter; it is checked once.
        key = (self.weight.data_ptr(), -1 if self.weight.is_inference() else self.weight._version)
        if self._diagonal is None or self._diagonal[0] != key:
            self._diagonal = (key, is_diagonal(self.weight))
        return self._diagonal[1]

    def forward(self, x: torch.Tensor, output_size: list[int] | None = None) -> torch.Tensor:
        learning = self.weight.requires_grad and torch.is_grad_enabled()
        if not self.fast_paths or learning or output_size is not None or not self._is_diagonal():
            return super().forward(x, output_size)
        index = torch.arange(self.in_channels, device=self.weight.device)
        weight = self.weight[index, index].unsqueeze(1).to(x.dtype)  # (C, 1, k, k)
        x = x.contiguous(memory_format=torch.channels_last)
        padding = cast(tuple[int, int], self.padding)  # ConvTranspose2d takes no string padding
        return F.conv_transpose2d(x, weight, None, self.stride, padding, self.output_padding, self.in_channels,
                                  self.dilation)  # fmt: skip
