"""Exact faster kernels for layers of the FCN models (used by their fast paths)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

#: Unfolded input of :func:`conv_as_matmul` is processed in row slabs of at most this many bytes
#: (bounds memory on huge images).
UNFOLD_BUDGET_BYTES = 256 * 2**20


def _weight_matrix(weight: torch.Tensor) -> tuple[torch.Tensor, bool]:
    """``weight`` (O, C, kh, kw) as an (O, K) matrix without copying it, and whether K is ordered (kh, kw, C).

    A channels-last weight is viewed in its own (kh, kw, C) order: reshaping it to
    (C, kh, kw) order would copy the 411 MB fc6 weight on every call.
    """
    out_channels = weight.shape[0]
    if (
        weight.shape[-2:] != (1, 1)
        and not weight.is_contiguous()
        and weight.is_contiguous(memory_format=torch.channels_last)
    ):
        return weight.permute(0, 2, 3, 1).reshape(out_channels, -1), True
    return weight.reshape(out_channels, -1), False


def _columns(x: torch.Tensor, kh: int, kw: int, spatial_first: bool) -> torch.Tensor:
    """``unfold`` of an NCHW blob, (N, C*kh*kw, L), its rows in the weight matrix's order."""
    batch, channels = x.shape[:2]
    if kh == kw == 1:
        return x.reshape(batch, channels, -1)
    cols = F.unfold(x, (kh, kw))
    if spatial_first:  # (C, kh*kw) -> (kh*kw, C), the order of a channels-last weight
        cols = cols.view(batch, channels, kh * kw, -1).transpose(1, 2).reshape(batch, channels * kh * kw, -1)
    return cols


def conv_as_matmul(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """Unpadded, stride-1 convolution as ``weight (O, C*k*k) @ unfold(x)``; NCHW output.

    For convolutions on tiny maps with huge weights (``fc6``, ``fc7``), where oneDNN's
    convolution re-lays-out the weight on every call and ran at a third of the matmul rate.
    One batched product when the unfolded input fits ``UNFOLD_BUDGET_BYTES`` (differentiable,
    so training uses it too); otherwise, for huge inputs, image by image in row slabs.
    """
    batch, channels, height, width = x.shape
    out_channels, _, kh, kw = weight.shape
    out_h, out_w = height - kh + 1, width - kw + 1
    if out_h < 1 or out_w < 1:
        raise RuntimeError(f"input {height}x{width} is smaller than the {kh}x{kw} kernel")
    matrix, spatial_first = _weight_matrix(weight)
    matrix = matrix.to(x.dtype)
    x = x.contiguous()
    bias_column = None if bias is None else bias.to(x.dtype)[:, None]
    row_bytes = channels * kh * kw * out_w * x.element_size()
    if batch * out_h * row_bytes <= UNFOLD_BUDGET_BYTES:
        # One GEMM (O, K) @ (K, N*L): the batch joins the columns, so the weight gradient is one GEMM too.
        cols = _columns(x, kh, kw, spatial_first)
        cols = cols[0] if batch == 1 else cols.transpose(0, 1).reshape(cols.shape[1], -1)
        out = matrix @ cols if bias_column is None else torch.addmm(bias_column, matrix, cols)
        out = out.view(out_channels, batch, out_h * out_w).transpose(0, 1)
        return out.reshape(batch, out_channels, out_h, out_w)
    out = x.new_empty(batch, out_channels, out_h, out_w)
    slab = max(1, UNFOLD_BUDGET_BYTES // row_bytes)
    for n in range(batch):
        for top in range(0, out_h, slab):
            rows = min(slab, out_h - top)
            cols = _columns(x[n : n + 1, :, top : top + rows + kh - 1], kh, kw, spatial_first)[0]
            result = matrix @ cols if bias_column is None else torch.addmm(bias_column, matrix, cols)
            out[n, :, top : top + rows] = result.view(out_channels, rows, out_w)
    return out


def is_diagonal(weight: torch.Tensor) -> bool:
    """True when a (C, C, k, k) deconvolution weight is zero off the channel diagonal."""
    if weight.dim() != 4 or weight.shape[0] != weight.shape[1]:
        return False
    off = weight.detach().clone()
    index = torch.arange(weight.shape[0])
    off[index, index] = 0
    return bool((off == 0).all())
