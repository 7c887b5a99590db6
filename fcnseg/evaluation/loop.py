"""Evaluate a model over a dataset: one dataset-level confusion matrix, the paper's four metrics.

Images are evaluated at their native size, one at a time when a dataset is given (as the paper does): batching images of
different sizes would pad them, and the padding changes the network's output near the padded borders. Pass a DataLoader
to batch on your own terms (e.g. equal-sized images).

Under ``torch.distributed`` each rank takes every ``world_size``-th image of a dataset
and the matrices are summed, so every image counts exactly once.

A model with several score heads (``model.heads``, the SIFT Flow nets) is scored per head: :func:`evaluate` then reports
the first head's metrics, as for any model, plus every head's under ``"heads"`` (:func:`head_confusion_matrices`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence, Sized
from typing import Any, cast

import torch
from torch.utils.data import DataLoader, Dataset, Subset

from ..inference.predictor import Predictor
from ..models.contract import bare_model
from ..progress import Progress
from .metrics import ConfusionMatrix


def rank_and_world() -> tuple[int, int]:
    """``(rank, world size)`` of this process under torch.distributed; ``(0, 1)`` outside it."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def dataset_batches(data: Dataset | Iterable, num_workers: int) -> Iterable:
    """Batches ``(images (N,3,H,W) uint8, masks (N,H,W))`` from a dataset (this rank's share) or a loader."""
    if isinstance(data, Dataset) and not isinstance(data, DataLoader):
        rank, world = rank_and_world()
        share = Subset(data, list(range(rank, len(cast(Sized, data)), world))) if world > 1 else data
        return DataLoader(share, batch_size=1, num_workers=num_workers, collate_fn=_one_item_batch)
    return data


def batch_progress(batches: Iterable, label: str, show: bool) -> Progress:
    """The progress reporter over ``batches`` (a bar on a terminal, lines elsewhere); only rank 0 shows it."""
    rank, _ = rank_and_world()
    total = len(batches) if isinstance(batches, Sized) else None
    return Progress(total, label=label, unit="batch", show=show and rank == 0)


def _one_item_batch(items: list[tuple[torch.Tensor, torch.Tensor]]) -> tuple[torch.Tensor, torch.Tensor]:
    ((image, mask),) = items
    return image.unsqueeze(0), mask.unsqueeze(0)


def as_predictor(
    model: torch.nn.Module | Predictor, device: str | torch.device | None = None, **options: Any
) -> Predictor:
    """``model`` itself when it is a :class:`Predictor`, else a Predictor for it (``options`` as Predictor's)."""
    return model if isinstance(model, Predictor) else Predictor(model, device=device, **options)


def confusion_matrix(
    model: torch.nn.Module | Predictor,
    data: Dataset | Iterable,
    num_classes: int,
    device: str | torch.device | None = None,
    ignore_index: int = 255,
    *,
    num_workers: int = 0,
    progress: bool = True,
    accumulators: Sequence[Any] = (),
    **predictor_options: Any,
) -> ConfusionMatrix:
    """The confusion matrix of a model (or :class:`Predictor`) over ``data``, summed over all distributed ranks.

    ``data`` is a dataset of ``(image uint8 (3,H,W), mask (H,W))`` items (evaluated one image at a time, each rank a
    share) or an iterable of batches ``(images (N,3,H,W), masks (N,H,W))`` such as a DataLoader with
    :class:`fcnseg.data.PadCollate` (its sampler must not repeat images across ranks). A bare model is run by
    ``Predictor(model, device=device, **predictor_options)`` (e.g. ``tile=``, ``dtype=``, ``memory_budget_bytes=``).
    ``accumulators`` (e.g. :mod:`fcnseg.evaluation.detail_metrics`' ones) get every batch's ``update(pred, target)``
    too, and are summed over ranks at the end.
    """
    heads = _heads(model)
    if heads:
        raise ValueError(
            f"the model has several heads {[name for name, _ in heads]}: one confusion matrix "
            "cannot score them; use head_confusion_matrices or evaluate (which reports every head)"
        )
    predictor = as_predictor(model, device, **predictor_options)
    matrix = ConfusionMatrix(num_classes, ignore_index, device=predictor.device)
    batches = dataset_batches(data, num_workers)
    with batch_progress(batches, "evaluate", progress) as shown:
        for images, masks in batches:
            preds, masks = predictor.masks(images), masks.to(predictor.device, non_blocking=True)
            matrix.update(preds, masks)  # first: it checks the labels' range
            for accumulator in accumulators:
                accumulator.update(preds, masks)
            shown.update()
    for accumulator in [matrix, *accumulators]:
        accumulator.all_reduce()
    return matrix


def evaluate(
    model: torch.nn.Module | Predictor,
    data: Dataset | Iterable,
    num_classes: int,
    device: str | torch.device | None = None,
    ignore_index: int = 255,
    **options: Any,
) -> dict[str, Any]:
    """``ConfusionMatrix.compute()`` of ``model`` over ``data``: pixel_acc, mean_acc, mean_iu, fw_iu, iu, acc.

    Options as for :func:`confusion_matrix`. For a model with heads, see :func:`evaluate_heads`.
    """
    if _heads(model):
        return evaluate_heads(model, data, device, ignore_index, **options)
    return dict(confusion_matrix(model, data, num_classes, device, ignore_index, **options).compute())


# --- models with several heads (the SIFT Flow nets) ------------------------------------------------


def _heads(model: torch.nn.Module | Predictor) -> tuple[tuple[str, int], ...] | None:
    return (model.model if isinstance(model, Predictor) else bare_model(model)).heads


def head_confusion_matrices(
    model: torch.nn.Module | Predictor,
    data: Dataset | Iterable,
    device: str | torch.device | None = None,
    ignore_index: int = 255,
    *,
    num_workers: int = 0,
    progress: bool = True,
    **predictor_options: Any,
) -> dict[str, ConfusionMatrix]:
    """One confusion matrix per head (by name) of a model with ``heads``, summed over distributed ranks.

    Masks have one row per head (K, H, W), ids numbered in the concatenated class list (the ``siftflow`` dataset's
    ``labels="both"``). Each image's logits come from :meth:`Predictor.logits` (whole image or tiles); a head's
    prediction is the arg-max over its own channels, scored against its row with the ids shifted to start at 0.
    """
    predictor = as_predictor(model, device, **predictor_options)
    heads = _heads(predictor)
    if heads is None:
        raise ValueError("the model has one head: use confusion_matrix or evaluate")
    matrices = {name: ConfusionMatrix(count, ignore_index, device=predictor.device) for name, count in heads}
    batches = dataset_batches(data, num_workers)
    with batch_progress(batches, "evaluate", progress) as shown:
        for images, masks in batches:
            for image, mask in zip(images, masks, strict=True):
                logits, start = predictor.logits(image), 0
                for (name, count), row in zip(heads, mask, strict=True):
                    target = torch.where(row == ignore_index, row, row - start)
                    matrices[name].update(logits[start : start + count].argmax(0).to(predictor.device), target)
                    start += count
            shown.update()
    for matrix in matrices.values():
        matrix.all_reduce()
    return matrices


def evaluate_heads(
    model: torch.nn.Module | Predictor,
    data: Dataset | Iterable,
    device: str | torch.device | None = None,
    ignore_index: int = 255,
    **options: Any,
) -> dict[str, Any]:
    """The first head's metrics (what training tracks, e.g. SIFT Flow's semantic mean IU) and every
    head's ``ConfusionMatrix.compute()`` under ``"heads"``: ``{name: metrics}``."""
    results = {
        name: matrix.compute()
        for name, matrix in head_confusion_matrices(model, data, device, ignore_index, **options).items()
    }
    return {**next(iter(results.values())), "heads": results}
