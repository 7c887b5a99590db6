"""Calibration of per-pixel confidence: expected calibration error (ECE) and the reliability diagram.

Definition (the binned ECE of Guo et al., "On Calibration of Modern Neural Networks", ICML 2017),
over all non-ignored pixels of a dataset:

- a pixel's confidence is its top-1 probability p = max_c softmax(logits)_c (float32), and it is
  correct when its arg-max class equals its label;
- with B equal-width bins (B = 15 by default), the pixel falls in bin b = clamp(ceil(B p) - 1, 0, B - 1),
  so bin b holds (b/B, (b+1)/B] (B p is exact in float64 for a float32 p and B < 2^29);
- per bin, n_b pixels, acc_b = (correct pixels) / n_b and conf_b = (sum of p) / n_b;
- ECE = sum_b (n_b / N) |acc_b - conf_b| = (1/N) sum_b |correct_b - sum_b p|, N = sum_b n_b; empty bins add 0.
  MCE = max over non-empty bins of |acc_b - conf_b|.

The accumulator keeps per-bin sums (pixel and correct counts, int64; confidence sums, float64),
which add over images and over torch.distributed ranks (``merge``, ``all_reduce``).
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from ..inference.predictor import Predictor
from .detail_metrics import CountAccumulator
from .loop import batch_progress, dataset_batches
from .metrics import ConfusionMatrix

DEFAULT_BINS = 15


class ReliabilityBins(CountAccumulator):
    """Per-bin pixel counts, correct counts and confidence sums of top-1 probabilities (module docstring)."""

    def __init__(self, num_bins: int = DEFAULT_BINS, ignore_index: int = 255) -> None:
        if num_bins < 1:
            raise ValueError(f"num_bins must be >= 1, got {num_bins}")
        self.num_bins, self.ignore_index = int(num_bins), int(ignore_index)
        self.counts = {
            "pixels": torch.zeros(num_bins, dtype=torch.int64),
            "correct": torch.zeros(num_bins, dtype=torch.int64),
            "confidence": torch.zeros(num_bins, dtype=torch.float64),
        }

    @torch.no_grad()
    def update(self, top1: torch.Tensor, pred: torch.Tensor, target: torch.Tensor) -> ReliabilityBins:
        """Add pixels: top-1 probabilities, predicted classes and labels of one shape; returns ``self``."""
        if not top1.shape == pred.shape == target.shape:
            raise ValueError(
                f"expected top-1 probabilities, predictions and targets of one shape, got "
                f"{tuple(top1.shape)}, {tuple(pred.shape)} and {tuple(target.shape)}"
            )
        target = target.to(top1.device).reshape(-1)
        keep = target != self.ignore_index
        confidence = top1.reshape(-1)[keep].double()
        correct = pred.to(top1.device).reshape(-1)[keep].long() == target[keep].long()
        bins = (confidence * self.num_bins).ceil().long().sub(1).clamp(0, self.num_bins - 1)
        self.counts["pixels"] += torch.bincount(bins, minlength=self.num_bins).cpu()
        self.counts["correct"] += torch.bincount(bins[correct], minlength=self.num_bins).cpu()
        self.counts["confidence"] += torch.bincount(bins, weights=confidence, minlength=self.num_bins).cpu()
        return self

    def compute(self) -> dict[str, Any]:
        """``ece``, ``mce``, ``pixels``, ``accuracy``, ``mean_confidence`` and per-bin ``bins`` (NaN where
        undefined)."""
        pixels, correct, confidence = (self.counts[k].double() for k in ("pixels", "correct", "confidence"))
        total = float(pixels.sum())
        filled = pixels > 0
        accuracy = torch.where(filled, correct / pixels.clamp(min=1), torch.nan)
        mean_confidence = torch.where(filled, confidence / pixels.clamp(min=1), torch.nan)
        gaps = (accuracy - mean_confidence).abs()
        return {
            "ece": float((correct - confidence).abs().sum() / total) if total else math.nan,
            "mce": float(gaps[filled].max()) if filled.any() else math.nan,
            "pixels": int(total),
            "accuracy": float(correct.sum() / total) if total else math.nan,
            "mean_confidence": float(confidence.sum() / total) if total else math.nan,
            "bins": [
                {
                    "lower": b / self.num_bins,
                    "upper": (b + 1) / self.num_bins,
                    "pixels": int(pixels[b]),
                    "accuracy": float(accuracy[b]),
                    "confidence": float(mean_confidence[b]),
                }
                for b in range(self.num_bins)
            ],
        }


def calibrate(
    predictor: Predictor,
    data: Dataset | Iterable,
    num_classes: int,
    ignore_index: int = 255,
    *,
    num_bins: int = DEFAULT_BINS,
    num_workers: int = 0,
    progress: bool = True,
    accumulators: Sequence[Any] = (),
) -> tuple[ConfusionMatrix, ReliabilityBins]:
    """One pass over ``data`` (as :func:`fcnseg.evaluation.loop.confusion_matrix` takes it): the confusion matrix of the
    arg-max masks and the reliability bins of their top-1 probabilities, both summed over distributed ranks."""
    matrix = ConfusionMatrix(num_classes, ignore_index, device=predictor.device)
    bins = ReliabilityBins(num_bins, ignore_index)
    batches = dataset_batches(data, num_workers)
    with batch_progress(batches, "calibrate", progress) as shown:
        for images, masks in batches:
            for image, target in zip(images, masks, strict=True):
                result = predictor.confidence(image)
                matrix.update(result.mask, target)  # first: it checks the labels' range
                bins.update(result.top1, result.mask, target)
                for accumulator in accumulators:
                    accumulator.update(result.mask, target)
            shown.update()
    for accumulator in [matrix, bins, *accumulators]:
        accumulator.all_reduce()
    return matrix, bins


def reliability_diagram(bins: ReliabilityBins, path: str | os.PathLike[str], title: str = "") -> Path:
    """Accuracy against confidence per bin (bars; the diagonal is perfect calibration), pixels per bin below."""
    from matplotlib.figure import Figure

    from .figures import _save

    result = bins.compute()
    lower = np.array([b["lower"] for b in result["bins"]])
    width = 1.0 / bins.num_bins
    accuracy = np.nan_to_num([b["accuracy"] for b in result["bins"]])
    confidence = np.array([b["confidence"] for b in result["bins"]])
    share = np.array([b["pixels"] for b in result["bins"]]) / max(1, result["pixels"])
    figure = Figure(figsize=(5, 6))
    top, bottom = figure.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    top.bar(lower, accuracy, width=width, align="edge", color="#4878cf", edgecolor="black", label="accuracy")
    top.bar(
        lower,
        np.nan_to_num(confidence - accuracy),
        bottom=accuracy,
        width=width,
        align="edge",
        color="#d65f5f",
        alpha=0.35,
        edgecolor="#d65f5f",
        label="gap to mean confidence",
    )
    top.plot([0, 1], [0, 1], "--", color="grey", label="perfect calibration")
    top.set(
        ylabel="accuracy",
        xlim=(0, 1),
        ylim=(0, 1),
        title=f"{title + ': ' if title else ''}ECE {result['ece']:.4f} ({bins.num_bins} bins)",
    )
    top.legend(loc="upper left", fontsize="small")
    bottom.bar(lower, share, width=width, align="edge", color="grey", edgecolor="black")
    bottom.set(xlabel="top-1 probability", ylabel="share of pixels")
    return _save(figure, path)
