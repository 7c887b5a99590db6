"""Evaluate a model over a dataset: one dataset-level confusion matrix, the paper's four metrics.

Images are evaluated at their native size, one at a time when a dataset is given
(as the paper does): batching images of different sizes would pad them, and the
padding changes the network's output near the padded borders. Pass a DataLoader
to batch on your own terms (e.g. equal-sized images).

Under ``torch.distributed`` each rank takes every ``world_size``-th image of a dataset
and the matrices are summed, so every image counts exactly once.
"""

from __future__ import annotations

import contextlib
from typing import Iterable

import torch
from torch.utils.data import DataLoader, Dataset, Subset
from tqdm import tqdm

from .metrics import ConfusionMatrix
from .preprocessing import preprocess
from .tiling import Tiling


def _rank_and_world() -> tuple[int, int]:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _unwrap(model: torch.nn.Module) -> torch.nn.Module:
    # A DistributedDataParallel wrapper would broadcast buffers at every forward, a collective
    # that hangs when ranks hold different numbers of images; evaluation needs the bare model.
    return getattr(model, "module", model)


def _batches(data: Dataset | Iterable, num_workers: int) -> Iterable:
    """Batches ``(images (N,3,H,W) uint8, masks (N,H,W))`` from a dataset (this rank's share) or a loader."""
    if isinstance(data, Dataset) and not isinstance(data, DataLoader):
        rank, world = _rank_and_world()
        share = Subset(data, list(range(rank, len(data), world))) if world > 1 else data
        return DataLoader(share, batch_size=1, num_workers=num_workers, collate_fn=_one_item_batch)
    return data


def _one_item_batch(items: list[tuple[torch.Tensor, torch.Tensor]]) -> tuple[torch.Tensor, torch.Tensor]:
    (image, mask), = items
    return image.unsqueeze(0), mask.unsqueeze(0)


def confusion_matrix(
    model: torch.nn.Module,
    data: Dataset | Iterable,
    num_classes: int,
    device: str | torch.device = "cpu",
    ignore_index: int = 255,
    *,
    tile: Tiling | None = None,
    amp_dtype: torch.dtype | None = None,
    num_workers: int = 0,
    progress: bool = True,
) -> ConfusionMatrix:
    """The confusion matrix of ``model`` over ``data``, summed over all distributed ranks.

    ``data`` is a dataset of ``(image uint8 (3,H,W), mask (H,W))`` items (evaluated one image
    at a time, each rank a share) or an iterable of batches ``(images (N,3,H,W), masks (N,H,W))``
    such as a DataLoader with :class:`fcnseg.data.PadCollate` (its sampler must not repeat
    images across ranks). ``tile`` evaluates in tiles (images larger than memory);
    ``amp_dtype`` runs the forward pass under autocast (e.g. ``torch.bfloat16`` on a GPU).
    The model's training flag is restored afterwards.
    """
    from .predict import predict_mask  # predict imports the data package; keep this module light

    device = torch.device(device)
    net = _unwrap(model)
    matrix = ConfusionMatrix(num_classes, ignore_index, device=device)
    was_training = net.training
    net.eval()
    autocast = torch.autocast(device.type, dtype=amp_dtype) if amp_dtype else contextlib.nullcontext()
    rank, _ = _rank_and_world()
    hide_bar = None if progress and rank == 0 else True  # tqdm: None shows a bar only on a terminal
    batches = _batches(data, num_workers)
    try:
        with torch.inference_mode(), autocast:
            for images, masks in tqdm(batches, desc="evaluate", unit="batch", disable=hide_bar):
                masks = masks.to(device, non_blocking=True)
                if tile is not None:
                    preds = [predict_mask(net, image, device=device, tile=tile) for image in images]
                    preds = torch.stack(preds).to(device)
                else:
                    blob = preprocess(images.to(device, non_blocking=True), net.preprocessing)
                    preds = net(blob).argmax(1)
                matrix.update(preds, masks)
    finally:
        net.train(was_training)
    matrix.all_reduce()
    return matrix


def evaluate(
    model: torch.nn.Module,
    data: Dataset | Iterable,
    num_classes: int,
    device: str | torch.device = "cpu",
    ignore_index: int = 255,
    **options,
) -> dict[str, float | list[float]]:
    """``ConfusionMatrix.compute()`` of ``model`` over ``data``: pixel_acc, mean_acc, mean_iu, fw_iu, iu.

    Options as for :func:`confusion_matrix` (``tile``, ``amp_dtype``, ``num_workers``, ``progress``).
    """
    return confusion_matrix(model, data, num_classes, device, ignore_index, **options).compute()
