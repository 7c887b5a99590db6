"""Models with several heads (SIFT Flow): the summed per-head loss and the per-head evaluation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import fcnseg
from fcnseg.data import InMemoryDataset
from fcnseg.engine.loss import HeadsLoss, SegmentationLoss, build_loss, loss_for_model
from fcnseg.evaluation.loop import evaluate, evaluate_heads

HEADS = (("sem", 4), ("geo", 3))


def batch(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits (2, 7, 5, 6) and targets (2, 2, 5, 6): row 0 ids 0..3, row 1 ids 4..6, some 255."""
    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn(2, 7, 5, 6, generator=generator)
    target = torch.stack(
        [torch.randint(0, 4, (2, 5, 6), generator=generator), torch.randint(4, 7, (2, 5, 6), generator=generator)],
        dim=1,
    )
    target[0, 0, 0, :3] = 255
    target[1, 1, 2:, :] = 255
    return logits, target


def per_head_cross_entropy(logits, target, reduction, weight=None):
    """The two losses written directly with F.cross_entropy on each head's channels and row."""
    semantic, geometric = target[:, 0], torch.where(target[:, 1] == 255, 255, target[:, 1] - 4)
    w_sem, w_geo = (None, None) if weight is None else (weight[:4], weight[4:])
    return (
        F.cross_entropy(logits[:, :4], semantic, weight=w_sem, ignore_index=255, reduction=reduction),
        F.cross_entropy(logits[:, 4:], geometric, weight=w_geo, ignore_index=255, reduction=reduction),
    )


def test_sum_loss_is_the_two_heads_summed_losses_per_image():
    logits, target = batch()
    semantic, geometric = per_head_cross_entropy(logits, target, "sum")
    loss = HeadsLoss(SegmentationLoss("sum"), HEADS)
    torch.testing.assert_close(loss(logits, target), (semantic + geometric) / 2)  # Caffe normalize: false, batch 2


def test_mean_loss_with_class_weights_cut_per_head():
    logits, target = batch(1)
    weight = torch.tensor([1.0, 2.0, 0.5, 3.0, 1.5, 0.25, 2.0])
    loss = HeadsLoss(SegmentationLoss("mean", weight=weight), HEADS)
    semantic, geometric = per_head_cross_entropy(logits, target, "sum", weight)
    valid_sem = weight[target[:, 0][target[:, 0] != 255]].sum()
    valid_geo = weight[target[:, 1][target[:, 1] != 255]].sum()
    torch.testing.assert_close(loss(logits, target), (semantic + geometric) / ((valid_sem + valid_geo) / 2))


def test_micro_batches_with_the_global_normalizer_give_the_whole_batch_loss():
    logits, target = batch(2)
    loss = HeadsLoss(build_loss("focal", reduction="mean", gamma=1.5), HEADS)
    normalizer = loss.normalizer(target[:1]) + loss.normalizer(target[1:])
    pieces = loss.summed(logits[:1], target[:1]) / normalizer + loss.summed(logits[1:], target[1:]) / normalizer
    torch.testing.assert_close(pieces, loss(logits, target))


def test_targets_without_one_row_per_head_are_refused():
    logits, target = batch()
    with pytest.raises(ValueError, match=r"one row per head \(N, 2, H, W\), got \(2, 5, 6\)"):
        HeadsLoss(SegmentationLoss(), HEADS)(logits, target[:, 0])


def test_loss_for_model_wraps_only_models_with_heads():
    siftflow = fcnseg.create_model("siftflow_fcn32s", num_classes=36, width=0.0625)
    plain = fcnseg.create_model("fcn32s", num_classes=36, width=0.0625)
    base = SegmentationLoss("sum")
    wrapped = loss_for_model(base, siftflow)
    assert isinstance(wrapped, HeadsLoss) and wrapped.heads == (("sem", 33), ("geo", 3))
    assert loss_for_model(base, plain) is base


class FixedLogits(nn.Module):
    """A 'model' with two heads whose logits are given: the image's first pixel value selects them."""

    heads = HEADS
    num_classes = 7
    in_channels = 3
    preprocessing = fcnseg.TORCHVISION

    def __init__(self, logits: list[torch.Tensor]) -> None:
        super().__init__()
        self.anchor = nn.Parameter(torch.zeros(1))
        self.logits = logits

    def set_fast_paths(self, enabled: bool) -> None:
        pass

    def prepare_input(self, images: torch.Tensor) -> torch.Tensor:
        return fcnseg.preprocess(images, self.preprocessing)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        index = round(float(x[0, 0, 0, 0] * 0.229 + 0.485) * 255)  # undo the preprocessing of pixel value i
        return self.logits[index][None] + self.anchor


def iou_by_hand(pred: np.ndarray, target: np.ndarray, classes: int) -> list[float]:
    keep = target != 255
    pred, target = pred[keep], target[keep]
    out = []
    for c in range(classes):
        union = np.sum((pred == c) | (target == c))
        out.append(np.sum((pred == c) & (target == c)) / union if union else float("nan"))
    return out


def test_evaluation_scores_each_head_on_its_own_channels():
    logits = [batch(seed)[0][0] for seed in (3, 4)]
    targets = [batch(seed)[1][1] for seed in (5, 6)]
    images = [torch.full((3, 5, 6), index, dtype=torch.uint8) for index in range(2)]
    data = InMemoryDataset(images, targets, classes=[f"c{i}" for i in range(7)])
    data.heads = HEADS
    result = evaluate(FixedLogits(logits), data, 7, progress=False)
    predictions = [(row[:4].argmax(0).numpy(), row[4:].argmax(0).numpy()) for row in logits]
    sem_target = np.concatenate([t[0].numpy().ravel() for t in targets])
    geo_target = np.concatenate([t[1].numpy().ravel() for t in targets])
    geo_target = np.where(geo_target == 255, 255, geo_target - 4)
    sem_pred = np.concatenate([p[0].ravel() for p in predictions])
    geo_pred = np.concatenate([p[1].ravel() for p in predictions])
    np.testing.assert_allclose(result["heads"]["sem"]["iu"], iou_by_hand(sem_pred, sem_target, 4))
    np.testing.assert_allclose(result["heads"]["geo"]["iu"], iou_by_hand(geo_pred, geo_target, 3))
    assert result["mean_iu"] == result["heads"]["sem"]["mean_iu"]
    assert evaluate_heads(FixedLogits(logits), data, progress=False)["heads"]["geo"] == result["heads"]["geo"]


def test_one_confusion_matrix_for_a_model_with_heads_is_refused():
    from fcnseg.evaluation.loop import confusion_matrix

    with pytest.raises(ValueError, match=r"several heads \['sem', 'geo'\].*head_confusion_matrices"):
        confusion_matrix(FixedLogits([]), [], 7)
