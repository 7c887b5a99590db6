"""Pixel agreement: the share of pixels whose class (arg-max) equals a reference's, as exports are judged.

The fp32 ONNX file against PyTorch (:func:`fcnseg.export.onnx.check_onnx_parity`), the int8 file
against fp32 (:mod:`fcnseg.export.int8`).
"""

from __future__ import annotations

from typing import Any

import torch


class PixelAgreement:
    """Masks (class ids, tensors or NumPy arrays) against reference masks of their shape: pooled, and per mask."""

    def __init__(self) -> None:
        self.agreeing = self.pixels = 0
        self.shares: list[float] = []  # each mask's share, in order

    def add(self, mask: Any, reference: Any) -> float:
        """Count one mask against its reference; returns that mask's share of agreeing pixels."""
        mask, reference = torch.as_tensor(mask), torch.as_tensor(reference)
        if mask.shape != reference.shape:
            raise ValueError(f"a mask {tuple(mask.shape)} and its reference {tuple(reference.shape)} differ in shape")
        agreeing = int((mask == reference).sum())
        self.agreeing, self.pixels = self.agreeing + agreeing, self.pixels + reference.numel()
        self.shares.append(agreeing / reference.numel())
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
