"""The training loss against F.cross_entropy and hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from fcnseg.engine.loss import SegmentationLoss, segmentation_loss


def _batch(n=3, c=4, h=5, w=6, ignore_fraction=0.2):
    generator = torch.Generator().manual_seed(1)
    logits = torch.randn(n, c, h, w, generator=generator, dtype=torch.float64).float()
    target = torch.randint(0, c, (n, h, w), generator=generator)
    target[torch.rand(n, h, w, generator=generator) < ignore_fraction] = 255
    return logits, target


def test_mean_equals_cross_entropy_mean():
    logits, target = _batch()
    expected = F.cross_entropy(logits, target, ignore_index=255)
    assert torch.allclose(segmentation_loss(logits, target, reduction="mean"), expected, rtol=1e-6)


def test_weighted_mean_equals_cross_entropy_weighted_mean():
    logits, target = _batch()
    weight = torch.tensor([0.5, 2.0, 1.0, 3.0])
    expected = F.cross_entropy(logits, target, weight=weight, ignore_index=255)
    assert torch.allclose(segmentation_loss(logits, target, reduction="mean", weight=weight), expected, rtol=1e-6)


def test_sum_is_summed_over_pixels_and_averaged_over_images():
    logits, target = _batch(n=3)
    expected = F.cross_entropy(logits, target, ignore_index=255, reduction="sum") / 3
    assert torch.allclose(segmentation_loss(logits, target, reduction="sum"), expected, rtol=1e-6)
    # batch 1 (the paper): the plain sum over the image
    one = segmentation_loss(logits[:1], target[:1], reduction="sum")
    assert torch.allclose(one, F.cross_entropy(logits[:1], target[:1], ignore_index=255, reduction="sum"), rtol=1e-6)


def test_hand_computed_value():
    # two pixels, two classes: logits (0, 0) -> -log(1/2); logits (log 3, 0) with target 1 -> -log(1/4); one ignored
    logits = torch.tensor([[[[0.0, math.log(3.0), 5.0]], [[0.0, 0.0, 1.0]]]])  # (1, 2, 1, 3)
    target = torch.tensor([[[0, 1, 255]]])
    total = math.log(2.0) + math.log(4.0)
    assert segmentation_loss(logits, target, reduction="sum").item() == pytest.approx(total, rel=1e-6)
    assert segmentation_loss(logits, target, reduction="mean").item() == pytest.approx(total / 2, rel=1e-6)


def test_pieces_with_global_normalizer_add_up_to_the_whole_batch():
    logits, target = _batch(n=4)
    for reduction in ("sum", "mean"):
        loss = SegmentationLoss(reduction, weight=torch.tensor([1.0, 2.0, 0.5, 1.0]))
        whole = loss(logits, target)
        normalizer = loss.normalizer(target[:2]) + loss.normalizer(target[2:])
        pieces = loss(logits[:2], target[:2], normalizer) + loss(logits[2:], target[2:], normalizer)
        assert torch.allclose(pieces, whole, rtol=1e-6), reduction


def test_all_ignored_gives_zero_not_nan():
    logits, target = _batch()
    target[:] = 255
    assert segmentation_loss(logits, target, reduction="mean").item() == 0.0


def test_unknown_reduction_is_an_error():
    with pytest.raises(ValueError, match="reduction"):
        SegmentationLoss("median")
