"""Pixel agreement: the share of pixels whose class (the arg-max over the classes) equals a reference's.

How an export is judged against the PyTorch model it came from: the fp32 ONNX file against
PyTorch (:func:`fcnseg.export.onnx.check_onnx_parity`), the int8 file against fp32
(:mod:`fcnseg.export.int8`).
"""

from __future__ import annotations

from typing import Any

import torch


class PixelAgreement:
    """Pixels of masks that agree with their reference masks: pooled over every mask, and the worst mask's share.

    Masks are class ids of the same shape as their reference (tensors or NumPy arrays, any integer type).
    """

    def __init__(self) -> None:
        self.agreeing = 0
        self.pixels = 0
        #: The share of each mask added, in order.
        self.shares: list[float] = []

    def add(self, mask: Any, reference: Any) -> float:
        """Count one mask against its reference; returns that mask's share of agreeing pixels."""
        mask, reference = torch.as_tensor(mask), torch.as_tensor(reference)
        if mask.shape != reference.shape:
            raise ValueError(f"a mask {tuple(mask.shape)} and its reference {tuple(reference.shape)} differ in shape")
        agreeing, pixels = int((mask == reference).sum()), reference.numel()
        self.agreeing, self.pixels = self.agreeing + agreeing, self.pixels + pixels
        self.shares.append(agreeing / pixels)
        return self.shares[-1]

    @property
    def pooled(self) -> float:
        """Agreeing pixels over all pixels of every mask added."""
        return self.agreeing / self.pixels

    @property
    def worst(self) -> float:
        """The lowest share of one mask (1.0 before any)."""
        return min(self.shares, default=1.0)


def pixel_agreement(mask: Any, reference: Any) -> float:
    """The share of pixels where ``mask`` and ``reference`` (class ids of one shape) agree."""
    return PixelAgreement().add(mask, reference)
