"""Dataset-level segmentation metrics from one confusion matrix (the paper's definitions).

All four numbers come from a single matrix ``n[gt, pred]`` accumulated over the
whole dataset (not averaged per image), with the ignore value dropped:

- pixel accuracy  = sum_i n_ii / sum n
- mean accuracy   = mean over classes present in the ground truth (t_i > 0) of n_ii / t_i
- IU_i            = n_ii / (t_i + sum_j n_ji - n_ii); NaN for a class absent from both
                    the ground truth and the prediction (left out of the mean); 0 for a
                    class absent from the ground truth but predicted
- mean IU         = nanmean_i IU_i
- frequency-weighted IU = sum over classes with t_i > 0 of (t_i / sum t) IU_i

where ``t_i = sum_j n_ij`` is the number of ground-truth pixels of class i.
"""

from __future__ import annotations

import math
from typing import Any, TypedDict

import torch


class Scores(TypedDict):
    """What :meth:`ConfusionMatrix.compute` returns."""

    pixel_acc: float
    mean_acc: float
    mean_iu: float
    fw_iu: float
    iu: list[float]
    acc: list[float]


class ConfusionMatrix:
    """Accumulates ``n[gt, pred]`` over batches; ``compute()`` gives the paper's four metrics.

    The matrix lives on the device of the first tensors given to :meth:`update`
    (or ``device`` when given), so validation on a GPU never copies masks to the CPU.
    """

    def __init__(self, num_classes: int, ignore_index: int = 255, device: str | torch.device | None = None) -> None:
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        self.num_classes = int(num_classes)
        self.ignore_index = int(ignore_index)
        self._device = torch.device(device) if device is not None else None
        self.matrix = torch.zeros(self.num_classes, self.num_classes, dtype=torch.int64, device=self._device)

    def reset(self) -> None:
        """Forget everything accumulated so far."""
        self.matrix = torch.zeros_like(self.matrix)

    @torch.no_grad()
    def update(self, pred: torch.Tensor, target: torch.Tensor) -> ConfusionMatrix:
        """Add a batch: ``pred`` and ``target`` are integer class maps of the same shape; returns ``self``.

        Target pixels equal to ``ignore_index`` are dropped (whatever was predicted there). A target or prediction
        outside ``0..num_classes-1`` (other than the ignore value in the target) is an error, not silently counted.
        """
        if pred.shape != target.shape:
            raise ValueError(f"prediction shape {tuple(pred.shape)} differs from target shape {tuple(target.shape)}")
        if pred.is_floating_point() or target.is_floating_point():
            raise TypeError(
                f"expected integer class maps, got {pred.dtype} prediction and {target.dtype} target "
                "(take argmax over the class dimension of the logits first)"
            )
        if self.matrix.device != target.device:
            if self._device is None and self.matrix.count_nonzero() == 0:
                self.matrix = self.matrix.to(target.device)  # follow the data's device on first use
            else:
                target = target.to(self.matrix.device)
        pred = pred.to(device=self.matrix.device, dtype=torch.int64).reshape(-1)
        target = target.to(torch.int64).reshape(-1)
        keep = target != self.ignore_index
        pred, target = pred[keep], target[keep]
        n = self.num_classes
        _check_range(target, n, "ground-truth label", self.ignore_index)
        _check_range(pred, n, "predicted class", None)
        self.matrix += torch.bincount(target * n + pred, minlength=n * n).reshape(n, n)
        return self

    def all_reduce(self) -> None:
        """Sum the matrix over all torch.distributed ranks (a no-op when not distributed)."""
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(self.matrix, op=dist.ReduceOp.SUM)

    def compute(self) -> Scores:
        """``{"pixel_acc", "mean_acc", "mean_iu", "fw_iu": float in 0..1, "iu", "acc": per-class lists}``.

        A class's ``acc`` is NaN when it has no ground-truth pixels. With no pixels counted at all, every value is NaN.
        """
        hist = self.matrix.detach().to("cpu", torch.float64)
        correct = hist.diag()
        gt_total = hist.sum(dim=1)  # t_i
        pred_total = hist.sum(dim=0)
        union = gt_total + pred_total - correct
        nan = torch.tensor(float("nan"), dtype=torch.float64)
        iu = torch.where(union > 0, correct / union.clamp(min=1), nan)
        in_gt = gt_total > 0
        total = gt_total.sum()
        acc = torch.where(in_gt, correct / gt_total.clamp(min=1), nan)
        if total == 0:
            return {
                "pixel_acc": math.nan,
                "mean_acc": math.nan,
                "mean_iu": math.nan,
                "fw_iu": math.nan,
                "iu": [math.nan] * self.num_classes,
                "acc": [math.nan] * self.num_classes,
            }
        return {
            "pixel_acc": float(correct.sum() / total),
            "mean_acc": float((correct[in_gt] / gt_total[in_gt]).mean()),
            "mean_iu": float(iu.nanmean()),
            "fw_iu": float((gt_total[in_gt] / total * iu[in_gt]).sum()),
            "iu": [float(v) for v in iu],
            "acc": [float(v) for v in acc],
        }

    def report(self, classes: list[str]) -> dict[str, Any]:
        """:meth:`compute` plus a per-class table (IU, accuracy, ground-truth pixels) and the raw matrix."""
        metrics = self.compute()
        totals = self.matrix.cpu().sum(dim=1).tolist()
        per_class = {
            name: {"iu": iu, "acc": acc, "pixels": int(t)}
            for name, iu, acc, t in zip(classes, metrics["iu"], metrics["acc"], totals, strict=True)
        }
        absent = [name for name, t in zip(classes, totals, strict=True) if t == 0]
        return {
            **metrics,
            "classes": list(classes),
            "per_class": per_class,
            "classes_without_ground_truth": absent,
            "confusion_matrix": self.matrix.cpu().tolist(),
        }


def format_report(report: dict[str, Any]) -> str:
    """The four metrics and the per-class table of :meth:`ConfusionMatrix.report`, as ``fcnseg eval`` prints them."""
    lines = [
        f"{label:<10} {report[key]:.4f}"
        for key, label in (
            ("pixel_acc", "pixel acc"),
            ("mean_acc", "mean acc"),
            ("mean_iu", "mean IU"),
            ("fw_iu", "fw IU"),
        )
    ]
    absent = report.get("classes_without_ground_truth", [])
    if absent:
        counted = len(report["classes"]) - sum(math.isnan(v) for v in report["iu"])
        lines.append(
            f"warning: {len(absent)} class(es) have no ground-truth pixels here ({', '.join(absent)}); "
            f"mean IU is over {counted} of {len(report['classes'])} classes"
        )
    width = max(12, *(len(name) for name in report["classes"]))
    lines += ["", f"{'class':<{width}} {'IU':>7} {'acc':>7} {'pixels':>12}"]
    for name, row in report["per_class"].items():
        iu = "-" if math.isnan(row["iu"]) else f"{row['iu']:.4f}"  # '-': absent from GT and prediction
        acc = "-" if math.isnan(row["acc"]) else f"{row['acc']:.4f}"
        lines.append(f"{name:<{width}} {iu:>7} {acc:>7} {row['pixels']:>12,}")
    return "\n".join(lines)


def json_safe(value: Any) -> Any:
    """NaN and infinities (e.g. the IU of a class absent from ground truth and prediction) become null: strict JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(item) for item in value]
    return value


def _check_range(values: torch.Tensor, num_classes: int, what: str, ignore_index: int | None) -> None:
    bad = (values < 0) | (values >= num_classes)
    if bool(bad.any()):
        offenders = sorted({int(v) for v in values[bad].unique()[:10].tolist()})
        allowed = f"0..{num_classes - 1}" + (f" or {ignore_index} (ignored)" if ignore_index is not None else "")
        raise ValueError(f"{what} values {offenders} out of range: expected {allowed}")
