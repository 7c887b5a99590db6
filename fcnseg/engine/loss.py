"""Per-pixel softmax cross-entropy with the two normalisations the recipes use.

``"sum"`` is the paper's loss: summed over every (non-ignored) pixel of an image
and averaged over the images of the batch — Caffe's ``normalize: false``, which
divides by the batch size only; with batch 1 it is the plain sum over the image.
``"mean"`` divides the sum by the number of valid pixels (weighted by the class
weights when given), exactly ``F.cross_entropy(..., reduction="mean")``.

Training splits a batch over micro-batches (gradient accumulation) and over
processes (DDP), so the normaliser is computed once for the whole global batch
(:meth:`SegmentationLoss.normalizer`) and every piece divides its own sum by it:
the gradients then equal those of the whole batch in one piece.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F

Reduction = Literal["sum", "mean"]
REDUCTIONS = ("sum", "mean")


class SegmentationLoss:
    """Cross-entropy over pixels, ignoring ``ignore_index``, optionally class-weighted."""

    def __init__(self, reduction: Reduction = "mean", *, ignore_index: int = 255, weight: torch.Tensor | None = None) -> None:
        if reduction not in REDUCTIONS:
            raise ValueError(f"loss reduction must be one of {REDUCTIONS}, got {reduction!r}")
        self.reduction = reduction
        self.ignore_index = ignore_index
        self.weight = None if weight is None else weight.detach().float()

    def summed(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Sum of the (weighted) per-pixel losses of a batch, computed in float32."""
        weight = None if self.weight is None else self.weight.to(logits.device)
        return F.cross_entropy(logits.float(), target, weight=weight, ignore_index=self.ignore_index, reduction="sum")

    def normalizer(self, target: torch.Tensor) -> torch.Tensor:
        """What this batch contributes to the divisor: images ("sum") or (weighted) valid pixels ("mean")."""
        if self.reduction == "sum":
            return torch.tensor(float(target.shape[0]), device=target.device)
        valid = target != self.ignore_index
        if self.weight is None:
            return valid.sum().to(torch.float32)
        weight = self.weight.to(target.device)
        return weight[target[valid]].sum()

    def __call__(self, logits: torch.Tensor, target: torch.Tensor, normalizer: torch.Tensor | float | None = None) -> torch.Tensor:
        """The loss of ``logits`` (N, C, H, W) against ``target`` (N, H, W).

        ``normalizer`` is the divisor of the whole global batch (see the module docstring);
        by default this batch's own. A batch without any valid pixel gives a zero loss.
        """
        if normalizer is None:
            normalizer = self.normalizer(target)
        if not torch.is_tensor(normalizer):
            normalizer = torch.tensor(float(normalizer), device=logits.device)
        return self.summed(logits, target) / normalizer.clamp(min=torch.finfo(torch.float32).tiny)


def segmentation_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    *,
    reduction: Reduction = "mean",
    ignore_index: int = 255,
    weight: torch.Tensor | None = None,
) -> torch.Tensor:
    """Functional form of :class:`SegmentationLoss` for one batch."""
    return SegmentationLoss(reduction, ignore_index=ignore_index, weight=weight)(logits, target)
