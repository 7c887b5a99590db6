"""Per-pixel softmax cross-entropy with the two normalisations the recipes use.

``"sum"`` is the paper's loss: summed over every (non-ignored) pixel of an image and averaged over the images of the
batch — Caffe's ``normalize: false``, which divides by the batch size only; with batch 1 it is the plain sum over the
image. ``"mean"`` divides the sum by the number of valid pixels (weighted by the class weights when given), exactly
``F.cross_entropy(..., reduction="mean")``.

Training splits a batch over micro-batches (gradient accumulation) and over processes (DDP), so the normaliser is
computed once for the whole global batch (:meth:`SegmentationLoss.normalizer`) and every piece divides its own sum by
it: the gradients then equal those of the whole batch in one piece.

:func:`build_loss` names the losses: ``"ce"`` (this cross-entropy), ``"focal"``, ``"ohem"`` and ``"lovasz"``; each
class's docstring says how it splits over micro-batches. :func:`effective_number_weights` gives class-balanced weights
(Cui et al., CVPR 2019) beside the median-frequency ones of :mod:`fcnseg.data.statistics`. :class:`HeadsLoss` (via
:func:`loss_for_model`) sums one loss per head for a model with several score heads (the SIFT Flow nets).
"""

from __future__ import annotations

import copy
import inspect
from collections.abc import Sequence
from typing import Any, Literal, cast

import torch
import torch.nn.functional as F

from ..models.contract import SegmentationModel, bare_model

Reduction = Literal["sum", "mean"]
REDUCTIONS = ("sum", "mean")


class SegmentationLoss:
    """Cross-entropy over pixels, ignoring ``ignore_index``, optionally class-weighted."""

    def __init__(
        self, reduction: Reduction = "mean", *, ignore_index: int = 255, weight: torch.Tensor | None = None
    ) -> None:
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

    def __call__(
        self, logits: torch.Tensor, target: torch.Tensor, normalizer: torch.Tensor | float | None = None
    ) -> torch.Tensor:
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


def _pixel_log_probability(
    logits: torch.Tensor, target: torch.Tensor, ignore_index: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(log p of the true class (N, H, W), valid-pixel mask, target with ignored pixels set to class 0)."""
    valid = target != ignore_index
    safe_target = torch.where(valid, target, torch.zeros_like(target))
    log_p = F.log_softmax(logits.float(), dim=1).gather(1, safe_target.unsqueeze(1)).squeeze(1)
    return log_p, valid, safe_target


class FocalLoss(SegmentationLoss):
    """Focal loss (Lin et al., ICCV 2017): each pixel's cross-entropy times ``alpha_t (1 - p_t)^gamma``.

    ``gamma = 0`` without ``alpha`` is the cross-entropy. ``alpha`` (a number, or one per
    class) scales the pixels' losses but, unlike ``weight``, stays out of the ``"mean"``
    divisor (Lin et al. normalise by the number of anchors). Splits over micro-batches
    exactly like the cross-entropy: a sum over pixels with the same normaliser.
    """

    def __init__(
        self,
        reduction: Reduction = "mean",
        *,
        ignore_index: int = 255,
        weight: torch.Tensor | None = None,
        gamma: float = 2.0,
        alpha: float | Sequence[float] | torch.Tensor | None = None,
    ) -> None:
        super().__init__(reduction, ignore_index=ignore_index, weight=weight)
        if not gamma >= 0:
            raise ValueError(f"focal loss gamma must be >= 0, got {gamma}")
        self.gamma = float(gamma)
        self.alpha = None if alpha is None else torch.as_tensor(alpha, dtype=torch.float32).reshape(-1)

    def summed(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        log_p, valid, safe_target = _pixel_log_probability(logits, target, self.ignore_index)
        # 1 - p_t as -expm1(log p_t): exact near p_t = 1; clamped so a gamma below 1 has a finite gradient there
        loss = -(-torch.expm1(log_p)).clamp(min=torch.finfo(torch.float32).tiny).pow(self.gamma) * log_p
        for factor in (self.weight, self.alpha):
            if factor is not None:
                factor = factor.to(loss.device)
                loss = loss * (factor[safe_target] if factor.numel() > 1 else factor)
        return loss[valid].sum()


class OHEMLoss(SegmentationLoss):
    """Cross-entropy over the hard pixels only (online hard example mining, as mmseg's OHEMPixelSampler).

    A pixel is hard when the predicted probability of its true class is below ``thresh``; when fewer than ``min_kept``
    pixels per image of the batch are hard, the ``min_kept`` x images lowest-probability pixels are kept instead (all
    valid pixels when there are fewer; with ``thresh=None`` always exactly those). Two small differences from mmseg: a
    tie at the cut is broken arbitrarily, keeping exactly that many, and a batch with at most ``min_kept`` x images
    valid pixels keeps them all (mmseg drops the easiest one). The ranking is by probability, the same order as the
    unweighted loss.

    The normaliser is the cross-entropy's (images, or valid pixels for ``"mean"``, like mmseg's mean over all pixels),
    so a better model gets a smaller loss. Selection is per forward piece: thresholded pixels are the same however a
    batch is split, but the ``min_kept`` floor is applied to each micro-batch (and each DDP rank) separately.
    """

    def __init__(
        self,
        reduction: Reduction = "mean",
        *,
        ignore_index: int = 255,
        weight: torch.Tensor | None = None,
        thresh: float | None = 0.7,
        min_kept: int = 100_000,
    ) -> None:
        super().__init__(reduction, ignore_index=ignore_index, weight=weight)
        if thresh is not None and not 0 < thresh <= 1:
            raise ValueError(f"OHEM thresh must be a probability in (0, 1], got {thresh}")
        if min_kept < 1:
            raise ValueError(f"OHEM min_kept must be at least 1 pixel per image, got {min_kept}")
        self.thresh, self.min_kept = thresh, int(min_kept)

    def summed(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        log_p, valid, safe_target = _pixel_log_probability(logits, target, self.ignore_index)
        loss = -log_p if self.weight is None else -log_p * self.weight.to(log_p.device)[safe_target]
        loss, probability = loss[valid], log_p.detach()[valid].exp()
        kept = probability < self.thresh if self.thresh is not None else torch.zeros_like(probability, dtype=torch.bool)
        floor = min(self.min_kept * target.shape[0], probability.numel())
        if int(kept.sum()) < floor:
            kept[probability.topk(floor, largest=False).indices] = True
        return loss[kept].sum()


def _lovasz_softmax(probability: torch.Tensor, label: torch.Tensor, weight: torch.Tensor | None) -> torch.Tensor:
    """Lovasz-softmax of pixels (P, C) with labels (P,): the mean over the classes present of the
    Lovasz extension of the Jaccard loss at the errors |[y = c] - p_c| (Berman et al., CVPR 2018)."""
    classes = label.unique()
    if not len(classes):
        return probability.sum() * 0  # no valid pixel: zero, still part of the graph
    losses = []
    for c in classes:
        foreground = (label == c).float()
        errors, order = (foreground - probability[:, c]).abs().sort(descending=True)
        foreground = foreground[order]
        # Jaccard loss of the set of the i largest errors: i / |foreground U that set|
        union = foreground.sum() + (1 - foreground).cumsum(0)
        jaccard = torch.arange(1, len(order) + 1, device=errors.device) / union
        losses.append(errors @ torch.diff(jaccard, prepend=jaccard.new_zeros(1)))
    weights = torch.ones(len(classes), device=probability.device) if weight is None else weight[classes]
    return (torch.stack(losses) * weights).sum() / weights.sum().clamp(min=torch.finfo(torch.float32).tiny)


class LovaszSoftmaxLoss(SegmentationLoss):
    """Lovasz-softmax (Berman et al., CVPR 2018), a convex surrogate of per-class IoU.

    Classes are those present in the ground truth of each image (``per_image=True``) or of the whole piece; class
    ``weight`` makes the mean over them a weighted mean. It is not a sum over pixels: ``summed`` is the sum over images
    of the per-image loss, and the normaliser is the number of images whatever ``reduction`` says, so per image the loss
    splits exactly over micro-batches and ranks (the mean over the batch's images). With ``per_image=False`` each
    forward piece is one set of pixels (``summed`` = its loss x its images): over several micro-batches or ranks the
    result is the image-weighted mean of the pieces' losses, the batch's loss only in one piece.
    """

    def __init__(
        self,
        reduction: Reduction = "mean",
        *,
        ignore_index: int = 255,
        weight: torch.Tensor | None = None,
        per_image: bool = True,
    ) -> None:
        super().__init__(reduction, ignore_index=ignore_index, weight=weight)
        self.per_image = bool(per_image)

    def summed(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        probability = F.softmax(logits.float(), dim=1).movedim(1, -1)  # (N, H, W, C)
        weight = None if self.weight is None else self.weight.to(logits.device)
        groups = zip(probability, target, strict=True) if self.per_image else [(probability, target)]
        losses = [_lovasz_softmax(p[t != self.ignore_index], t[t != self.ignore_index], weight) for p, t in groups]
        return torch.stack(losses).sum() * (1 if self.per_image else target.shape[0])

    def normalizer(self, target: torch.Tensor) -> torch.Tensor:
        return torch.tensor(float(target.shape[0]), device=target.device)


LOSSES: dict[str, type[SegmentationLoss]] = {
    "ce": SegmentationLoss,
    "focal": FocalLoss,
    "ohem": OHEMLoss,
    "lovasz": LovaszSoftmaxLoss,
}


def build_loss(
    name: str,
    *,
    reduction: Reduction = "mean",
    ignore_index: int = 255,
    weight: torch.Tensor | None = None,
    **options: Any,
) -> SegmentationLoss:
    """The loss called ``name`` (a key of :data:`LOSSES`) with its own ``options``
    (focal: gamma, alpha; ohem: thresh, min_kept; lovasz: per_image)."""
    if name not in LOSSES:
        raise ValueError(f"unknown loss {name!r}: expected one of {', '.join(LOSSES)}")
    loss_class = LOSSES[name]
    accepted = set(inspect.signature(loss_class).parameters) - {"reduction", "ignore_index", "weight"}
    unknown = sorted(set(options) - accepted)
    if unknown:
        raise ValueError(
            f"loss {name!r} takes no option {', '.join(unknown)} (its options: {', '.join(sorted(accepted)) or 'none'})"
        )
    return loss_class(reduction, ignore_index=ignore_index, weight=weight, **options)


# --- models with several heads (the SIFT Flow nets) ------------------------------------------------


class HeadsLoss(SegmentationLoss):
    """One loss per head of a model with several score heads, summed (the reference SIFT Flow nets' two losses).

    The logits (N, C, H, W) are the heads' concatenated along the channels, in the order of ``heads``
    (``(name, classes)`` pairs, a model's ``heads``); the target (N, K, H, W) has one row per head holding ids numbered
    in the concatenated class list (the ``siftflow`` dataset's ``labels="both"`` masks). Head k's loss is ``loss`` (its
    kind and options; class weights and per-class focal ``alpha`` cut to the head's classes) on its channels and its
    row, the ids shifted to start at 0.

    The normaliser is the heads' mean normaliser: the batch's images for ``"sum"`` (then the loss is exactly Caffe's two
    ``normalize: false`` losses added) and for Lovasz; for ``"mean"`` the heads' mean count of valid pixels, which makes
    the loss the sum of the heads' mean losses when they label the same pixels (nearly so otherwise). One scalar
    normaliser keeps the split over micro-batches and processes exact (see the module docstring).
    """

    def __init__(self, loss: SegmentationLoss, heads: Sequence[tuple[str, int]]) -> None:
        super().__init__(loss.reduction, ignore_index=loss.ignore_index, weight=loss.weight)
        self.heads = tuple((str(name), int(count)) for name, count in heads)
        self.starts = [sum(count for _, count in self.heads[:k]) for k in range(len(self.heads))]
        total = sum(count for _, count in self.heads)
        self.losses: list[SegmentationLoss] = []
        for start, (_, count) in zip(self.starts, self.heads, strict=True):
            head = copy.copy(loss)
            for name in ("weight", "alpha"):  # per-class factors follow the head's classes
                value = getattr(head, name, None)
                if torch.is_tensor(value) and value.numel() > 1:
                    if value.numel() != total:
                        raise ValueError(f"{name} has {value.numel()} values for heads of {total} classes in all")
                    setattr(head, name, value[start : start + count])
            self.losses.append(head)

    def head_targets(self, target: torch.Tensor) -> list[torch.Tensor]:
        """Each head's target (N, H, W) with ids from 0, ignore kept."""
        if target.dim() != 4 or target.shape[1] != len(self.heads):
            raise ValueError(
                f"a loss over heads {[name for name, _ in self.heads]} needs targets with one row per "
                f"head (N, {len(self.heads)}, H, W), got {tuple(target.shape)}"
            )
        return [
            torch.where(row == self.ignore_index, row, row - start)
            for row, start in zip(target.unbind(1), self.starts, strict=True)
        ]

    def summed(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        pieces = zip(self.losses, self.starts, self.heads, self.head_targets(target), strict=True)
        total = sum(loss.summed(logits[:, start : start + count], row) for loss, start, (_, count), row in pieces)
        return cast(torch.Tensor, total)  # a sum of tensors: there is always at least one head

    def normalizer(self, target: torch.Tensor) -> torch.Tensor:
        return torch.stack(
            [loss.normalizer(row) for loss, row in zip(self.losses, self.head_targets(target), strict=True)]
        ).mean()


def loss_for_model(loss: SegmentationLoss, model: SegmentationModel | torch.nn.Module) -> SegmentationLoss:
    """``loss`` as it applies to ``model`` (or its DDP wrapper): a :class:`HeadsLoss` for a model with heads."""
    heads = bare_model(model).heads
    return HeadsLoss(loss, heads) if heads else loss


def effective_number_weights(counts: torch.Tensor | Any, beta: float = 0.9999) -> torch.Tensor:
    """float32 (C,) class-balanced weights by effective number (Cui et al., CVPR 2019).

    ``w_c = (1 - beta) / (1 - beta^n_c)`` for ``n_c`` pixels of class c (a tensor, or the
    ``ClassStatistics`` of :func:`fcnseg.data.statistics.class_statistics`), scaled so the
    weights sum to the number of classes that occur (= C when all do); a class that never
    occurs gets 0, as in median-frequency weighting. Every class with many more than
    1 / (1 - beta) pixels gets the same weight: with pixel counts, take beta close to 1.
    """
    counts = torch.as_tensor(getattr(counts, "pixel_counts", counts)).double()
    if counts.dim() != 1 or bool((counts < 0).any()):
        raise ValueError(f"counts must be a 1-D tensor of non-negative pixel counts, got {counts}")
    if not 0 < beta < 1:
        raise ValueError(f"effective-number beta must be in (0, 1), got {beta}")
    present = counts > 0
    weights = torch.zeros_like(counts)
    # 1 - beta^n as -expm1(n log beta): exact even for beta a hair below 1
    weights[present] = (1 - beta) / -torch.expm1(counts[present] * torch.log(torch.tensor(beta, dtype=torch.float64)))
    if bool(present.any()):
        weights *= int(present.sum()) / weights.sum()
    return weights.float()
