"""Metrics that see small things: IU by object size, boundary IoU, Dice/F1, per-image mean IU.

Every accumulator takes integer class maps at the evaluated resolution, ``update(pred, target)`` with shapes (N, H, W)
or (H, W); target pixels equal to ``ignore_index`` are left out of every count. ``compute()`` returns a JSON-friendly
dict with NaN where a value is undefined. ``merge(other)`` adds another accumulator's state and ``all_reduce()`` sums it
over torch.distributed ranks: the state is count tensors that add (:class:`PerImageIU` keeps a list of per-image values
instead).

IU by object size (:class:`SizeIU`)
    A ground-truth *segment* is a connected component of the pixels of one class in
    one image: 8-connectivity by default (pixels touching at a corner belong together,
    so a one-pixel-wide diagonal pole is one segment, not a chain of single pixels);
    ``connectivity=4`` joins edge neighbours only. Its area is its pixel count. With
    ``edges`` e_1 < ... < e_K, a segment of area a is in bin k when e_k <= a < e_{k+1}
    (e_0 = 0, e_{K+1} = inf); the default edges 32*32 and 96*96 give COCO's sizes:
    small < 1024 px, medium 1024..9215 px, large >= 9216 px. Over the dataset, for
    class c and bin b:

    - GT_cb = pixels of the class-c segments in bin b;
    - TP_cb = those of them predicted c;
    - FP_cb = pixels predicted c whose label is another class (not ignore), each given to the bin of the class-c segment
      nearest to it in its image (Euclidean distance between pixel centres; on a tie, the segment of the pixel scipy's
      distance transform returns) or, in an image whose ground truth has no class c, to the bin of the area of the
      predicted class-c component (same connectivity) containing it.

    ``acc`` = TP_cb / GT_cb (the fraction of segment pixels predicted correctly) and
    ``iu`` = TP_cb / (GT_cb + FP_cb), per class; per bin, ``pixel_acc`` =
    sum_c TP_cb / sum_c GT_cb and ``mean_iu`` = nanmean_c IU_cb. The bins partition each
    class's true positives, ground-truth pixels and false positives, so summing over the
    bins gives back the numerator and denominator of the class's dataset-level IU.

Boundary IoU (:class:`BoundaryIoU`, Cheng et al., CVPR 2021)
    The boundary region of a mask is its pixels within distance d of its contour: chessboard distance (the authors'
    reference erodes with a 3x3 square d times) to a pixel outside the mask, the outside of the image counting as
    outside (so a mask cut by the image frame has a boundary there, as in the reference; an ignored pixel is outside
    every ground-truth mask too), with d = max(1, round(ratio x image diagonal)), ratio 0.02 by default and Python's
    round (half to even, as the reference: 12.5 -> 12). Per class, the ground-truth and predicted regions of the class's
    masks are intersected and united over non-ignored pixels; intersections and unions are summed over the dataset and
    divided at the end.

Dice / F1 (:func:`dice_scores`, :class:`DiceScore`)
    Dice_c = 2 n_cc / (t_c + p_c) from the dataset's confusion matrix (= per-class F1).

Per-image mean IU (:class:`PerImageIU`)
    The paper's mean IU (:mod:`fcnseg.evaluation.metrics`) of each image alone, kept with its id.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

from .metrics import ConfusionMatrix

SIZE_EDGES = (32 * 32, 96 * 96)
SIZE_NAMES = ("small", "medium", "large")


def _class_maps(
    pred: torch.Tensor, target: torch.Tensor, num_classes: int, ignore_index: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """``pred`` and ``target`` as checked (N, H, W) int64 tensors on the target's device."""
    if pred.shape != target.shape or pred.dim() not in (2, 3):
        raise ValueError(
            f"expected a prediction and a target of one shape, (N, H, W) or (H, W), "
            f"got {tuple(pred.shape)} and {tuple(target.shape)}"
        )
    if pred.is_floating_point() or target.is_floating_point():
        raise TypeError(f"expected integer class maps, got {pred.dtype} prediction and {target.dtype} target")
    pred = pred.reshape(-1, *pred.shape[-2:]).to(target.device, torch.int64)
    target = target.reshape(-1, *target.shape[-2:]).to(torch.int64)
    bad = torch.cat(
        [
            pred[(pred < 0) | (pred >= num_classes)],
            target[((target < 0) | (target >= num_classes)) & (target != ignore_index)],
        ]
    )
    if bad.numel():
        raise ValueError(
            f"class values {sorted(set(bad.unique()[:10].tolist()))} out of range: expected "
            f"0..{num_classes - 1} (or {ignore_index}, ignored, in the target)"
        )
    return pred, target


def _ratio(numerator: torch.Tensor, denominator: torch.Tensor) -> torch.Tensor:
    """Element-wise numerator / denominator in float64, NaN where the denominator is 0."""
    numerator, denominator = numerator.double(), denominator.double()
    return torch.where(denominator > 0, numerator / denominator.clamp(min=1), torch.full_like(denominator, math.nan))


def _floats(values: torch.Tensor) -> list[float]:
    return [float(v) for v in values]


class CountAccumulator:
    """An accumulator whose whole state is ``counts``: int64 CPU tensors that add up."""

    counts: dict[str, torch.Tensor]

    def reset(self) -> None:
        """Forget everything accumulated so far."""
        for value in self.counts.values():
            value.zero_()

    def merge(self, other: CountAccumulator) -> None:
        """Add the counts of ``other`` (an accumulator of the same kind and settings)."""
        if type(other) is not type(self) or {k: v.shape for k, v in other.counts.items()} != {
            k: v.shape for k, v in self.counts.items()
        }:
            raise ValueError(
                f"cannot merge a {type(other).__name__} with different settings into this {type(self).__name__}"
            )
        for name, value in other.counts.items():
            self.counts[name] += value

    def all_reduce(self) -> None:
        """Sum the counts over all torch.distributed ranks (a no-op when not distributed)."""
        import torch.distributed as dist

        if not (dist.is_available() and dist.is_initialized()):
            return
        nccl = dist.get_backend() == "nccl"  # NCCL reduces CUDA tensors only
        device = torch.device("cuda", torch.cuda.current_device()) if nccl else torch.device("cpu")
        for name, value in self.counts.items():
            shared = value.to(device)
            dist.all_reduce(shared, op=dist.ReduceOp.SUM)
            self.counts[name] = shared.cpu()


class SizeIU(CountAccumulator):
    """Accuracy and IU of ground-truth segments binned by area (see the module docstring)."""

    def __init__(
        self,
        num_classes: int,
        ignore_index: int = 255,
        *,
        edges: Sequence[int] = SIZE_EDGES,
        names: Sequence[str] | None = None,
        connectivity: int = 8,
    ) -> None:
        edges = [int(e) for e in edges]
        if not edges or edges[0] < 1 or any(a >= b for a, b in zip(edges, edges[1:], strict=False)):
            raise ValueError(f"size bin edges must be increasing positive pixel areas, got {edges}")
        if names is None:
            names = (
                SIZE_NAMES
                if tuple(edges) == SIZE_EDGES
                else (
                    [f"<{edges[0]}"]
                    + [f"{a}-{b - 1}" for a, b in zip(edges, edges[1:], strict=False)]
                    + [f">={edges[-1]}"]
                )
            )
        if len(names) != len(edges) + 1:
            raise ValueError(f"{len(edges)} size bin edges need {len(edges) + 1} names, got {list(names)}")
        if connectivity not in (4, 8):
            raise ValueError(f"connectivity must be 4 or 8, got {connectivity}")
        self.num_classes, self.ignore_index, self.connectivity = int(num_classes), int(ignore_index), connectivity
        self.edges, self.names = edges, list(names)
        self._structure = ndimage.generate_binary_structure(2, 1 if connectivity == 4 else 2)
        shape = (self.num_classes, len(self.names))
        self.counts = {key: torch.zeros(shape, dtype=torch.int64) for key in ("tp", "gt", "fp", "segments")}

    @torch.no_grad()
    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        """Add a batch of class maps (N, H, W) or one (H, W)."""
        pred, target = _class_maps(pred, target, self.num_classes, self.ignore_index)
        for p, t in zip(pred.cpu().numpy(), target.cpu().numpy(), strict=True):
            self._add_image(p, t)

    def _bins(self, areas: np.ndarray) -> np.ndarray:
        return np.searchsorted(self.edges, areas, side="right")

    def _add(self, key: str, c: int | np.integer, bins: np.ndarray, weights: np.ndarray | None = None) -> None:
        counted = np.bincount(bins, weights=weights, minlength=len(self.names))
        self.counts[key][c] += torch.from_numpy(counted.astype(np.int64))

    def _add_image(self, pred: np.ndarray, target: np.ndarray) -> None:
        valid = target != self.ignore_index
        present = np.bincount(target[valid], minlength=self.num_classes) + np.bincount(
            pred[valid], minlength=self.num_classes
        )
        for c in np.flatnonzero(present):
            truth, predicted = target == c, pred == c
            false_positive = predicted & valid & ~truth
            if truth.any():
                labels, _ = ndimage.label(truth, self._structure)
                areas = np.bincount(labels.ravel())[1:]
                bin_of_label = np.concatenate([[0], self._bins(areas)])  # label 0 (not class c) is never looked up
                self._add("segments", c, bin_of_label[1:])
                self._add("gt", c, bin_of_label[1:], areas)
                self._add("tp", c, bin_of_label[labels[truth & predicted]])
                if false_positive.any():
                    rows, cols = ndimage.distance_transform_edt(~truth, return_distances=False, return_indices=True)
                    self._add("fp", c, bin_of_label[labels[rows[false_positive], cols[false_positive]]])
            elif false_positive.any():  # a hallucinated object is judged by its own size
                labels, _ = ndimage.label(predicted, self._structure)
                self._add("fp", c, self._bins(np.bincount(labels.ravel()))[labels[false_positive]])

    def compute(self) -> dict:
        """``{"connectivity", "bins": [{"name", "min_area", "max_area" (exclusive; None = no limit),
        "segments", "pixels", "pixel_acc", "mean_iu", "acc", "iu", "class_segments"}]}``."""
        tp, gt, fp, segments = (self.counts[key] for key in ("tp", "gt", "fp", "segments"))
        acc, iu = _ratio(tp, gt), _ratio(tp, gt + fp)
        bounds = [0, *self.edges, None]
        bins = [
            {
                "name": name,
                "min_area": bounds[b],
                "max_area": bounds[b + 1],
                "segments": int(segments[:, b].sum()),
                "pixels": int(gt[:, b].sum()),
                "pixel_acc": float(_ratio(tp[:, b].sum(), gt[:, b].sum())),
                "mean_iu": float(iu[:, b].nanmean()),
                "acc": _floats(acc[:, b]),
                "iu": _floats(iu[:, b]),
                "class_segments": segments[:, b].tolist(),
            }
            for b, name in enumerate(self.names)
        ]
        return {"connectivity": self.connectivity, "bins": bins}


def boundary_width(height: int, width: int, ratio: float = 0.02) -> int:
    """Boundary IoU's band width d: ``round(ratio * image diagonal)`` pixels, at least 1."""
    return max(1, int(round(ratio * math.hypot(height, width))))


def _window(
    x: torch.Tensor, size: int, dim: int, op: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
) -> torch.Tensor:
    """``op`` (torch.maximum or torch.minimum) over every run of ``size`` values along ``dim``
    (output length n - size + 1), by doubling windows: about log2(size) element-wise ops."""
    span = 1
    while span < size:
        step = min(span, size - span)  # windows of span and step overlap into one of span + step
        n = x.size(dim) - step
        x = op(x.narrow(dim, 0, n), x.narrow(dim, step, n))
        span += step
    return x


def boundary_regions(labels: torch.Tensor, d: int) -> torch.Tensor:
    """Bool (N, H, W): pixels whose class's mask has a contour within chessboard distance ``d``.

    A pixel of label c is in the boundary region of the class-c mask exactly when its (2d+1)^2 window holds another
    label or reaches outside the image, i.e. when the window's largest and smallest label differ once the outside is
    labelled -1: one sliding maximum and one minimum give that for every class at once.
    """
    padded = F.pad(labels, (d, d, d, d), value=-1)
    size = 2 * d + 1
    largest, smallest = (_window(_window(padded, size, -1, op), size, -2, op) for op in (torch.maximum, torch.minimum))
    return largest != smallest


class BoundaryIoU(CountAccumulator):
    """Per-class boundary IoU, intersections and unions summed over the dataset (module docstring)."""

    def __init__(self, num_classes: int, ignore_index: int = 255, *, ratio: float = 0.02) -> None:
        if not 0 < ratio < 1:
            raise ValueError(f"boundary width ratio must be in (0, 1), got {ratio}")
        self.num_classes, self.ignore_index, self.ratio = int(num_classes), int(ignore_index), float(ratio)
        self.counts = {key: torch.zeros(self.num_classes, dtype=torch.int64) for key in ("intersection", "union")}

    @torch.no_grad()
    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        """Add a batch of class maps (N, H, W) or one (H, W); d follows the maps' size."""
        pred, target = _class_maps(pred, target, self.num_classes, self.ignore_index)
        height, width = target.shape[-2:]
        d = boundary_width(height, width, ratio=self.ratio)
        valid = target != self.ignore_index
        in_truth = boundary_regions(target, d) & valid
        in_pred = boundary_regions(pred, d) & valid
        both = in_truth & in_pred & (target == pred)
        n = self.num_classes
        truth_count = torch.bincount(target[in_truth], minlength=n)
        pred_count = torch.bincount(pred[in_pred], minlength=n)
        intersection = torch.bincount(target[both], minlength=n)
        self.counts["intersection"] += intersection.cpu()
        self.counts["union"] += (truth_count + pred_count - intersection).cpu()

    def compute(self) -> dict:
        """``{"boundary_iou": per-class list, "mean_boundary_iou": nanmean, "ratio"}``."""
        iou = _ratio(self.counts["intersection"], self.counts["union"])
        return {"boundary_iou": _floats(iou), "mean_boundary_iou": float(iou.nanmean()), "ratio": self.ratio}


def dice_scores(matrix: torch.Tensor) -> torch.Tensor:
    """float64 (C,) Dice = F1 per class, ``2 n_cc / (t_c + p_c)`` from ``n[gt, pred]``; NaN where 0/0."""
    matrix = torch.as_tensor(matrix).double().cpu()
    return _ratio(2 * matrix.diag(), matrix.sum(dim=1) + matrix.sum(dim=0))


class DiceScore(CountAccumulator):
    """Per-class Dice/F1 over the dataset, from an accumulated confusion matrix."""

    def __init__(self, num_classes: int, ignore_index: int = 255) -> None:
        self.num_classes, self.ignore_index = int(num_classes), int(ignore_index)
        self.counts = {"matrix": torch.zeros(self.num_classes, self.num_classes, dtype=torch.int64)}

    @torch.no_grad()
    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        """Add a batch of class maps (N, H, W) or one (H, W)."""
        confusion = ConfusionMatrix(self.num_classes, self.ignore_index)
        confusion.update(pred, target)
        self.counts["matrix"] += confusion.matrix.cpu()

    def compute(self) -> dict:
        """``{"dice": per-class list, "mean_dice": nanmean}``."""
        dice = dice_scores(self.counts["matrix"])
        return {"dice": _floats(dice), "mean_dice": float(dice.nanmean())}


class PerImageIU:
    """The mean IU of each image alone, with the image's id, to find where a model fails."""

    def __init__(self, num_classes: int, ignore_index: int = 255) -> None:
        self.num_classes, self.ignore_index = int(num_classes), int(ignore_index)
        self.ids: list[Hashable] = []
        self.values: list[float] = []

    def reset(self) -> None:
        """Forget everything accumulated so far."""
        self.ids, self.values = [], []

    @torch.no_grad()
    def update(self, pred: torch.Tensor, target: torch.Tensor, ids: Sequence[Hashable] | None = None) -> None:
        """Add a batch; ``ids`` names its images (default: their running index in this accumulator)."""
        pred, target = _class_maps(pred, target, self.num_classes, self.ignore_index)
        ids = list(range(len(self.ids), len(self.ids) + len(pred))) if ids is None else list(ids)
        if len(ids) != len(pred):
            raise ValueError(f"{len(ids)} ids for a batch of {len(pred)} images")
        for p, t, image_id in zip(pred, target, ids, strict=True):
            confusion = ConfusionMatrix(self.num_classes, self.ignore_index, device=t.device)
            confusion.update(p, t)
            self.ids.append(image_id)
            self.values.append(float(confusion.compute()["mean_iu"]))

    def merge(self, other: PerImageIU) -> None:
        """Append the images of ``other``."""
        self.ids += other.ids
        self.values += other.values

    def all_reduce(self) -> None:
        """Gather every rank's images, in rank order (a no-op when not distributed)."""
        import torch.distributed as dist

        if not (dist.is_available() and dist.is_initialized()):
            return
        gathered: list = [None] * dist.get_world_size()
        dist.all_gather_object(gathered, (self.ids, self.values))
        self.ids = [i for ids, _ in gathered for i in ids]
        self.values = [v for _, values in gathered for v in values]

    def compute(self) -> dict:
        """``{"mean": mean over images (NaN ones left out), "ids": [...], "mean_iu": [...]}``; an
        image without any non-ignored pixel has NaN."""
        finite = [v for v in self.values if not math.isnan(v)]
        return {
            "mean": sum(finite) / len(finite) if finite else math.nan,
            "ids": list(self.ids),
            "mean_iu": list(self.values),
        }
