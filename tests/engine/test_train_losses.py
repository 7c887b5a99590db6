"""Focal, OHEM and Lovasz-softmax losses, build_loss and effective-number weights against direct formulas."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from fcnseg.data.statistics import ClassStatistics
from fcnseg.engine.loss import (
    LOSSES,
    FocalLoss,
    LovaszSoftmaxLoss,
    OHEMLoss,
    SegmentationLoss,
    build_loss,
    effective_number_weights,
)

IGNORE = 255


def _batch(n=3, c=4, h=5, w=6, seed=1):
    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, c, h, w, generator=generator)
    target = torch.randint(0, c, (n, h, w), generator=generator)
    target[torch.rand(n, h, w, generator=generator) < 0.2] = IGNORE
    return logits, target


def _softmax(logits: torch.Tensor) -> np.ndarray:
    x = logits.double().numpy()
    e = np.exp(x - x.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


# ---------------------------------------------------------------- build_loss and "ce"


@pytest.mark.parametrize("reduction", ["sum", "mean"])
def test_ce_is_todays_loss_exactly(reduction):
    logits, target = _batch()
    weight = torch.tensor([0.5, 2.0, 1.0, 3.0])
    for w in (None, weight):
        built = build_loss("ce", reduction=reduction, weight=w)
        assert type(built) is SegmentationLoss
        assert torch.equal(built(logits, target), SegmentationLoss(reduction, weight=w)(logits, target))


def test_build_loss_names_and_one_line_errors():
    assert set(LOSSES) == {"ce", "focal", "ohem", "lovasz"}
    assert isinstance(build_loss("focal", gamma=1.0), FocalLoss) and build_loss("focal", gamma=1.0).gamma == 1.0
    assert build_loss("ohem", thresh=0.5, min_kept=7).min_kept == 7
    assert build_loss("lovasz", per_image=False).per_image is False
    with pytest.raises(ValueError, match="unknown loss 'dice': expected one of ce, focal, ohem, lovasz"):
        build_loss("dice")
    with pytest.raises(ValueError, match="loss 'focal' takes no option min_kept"):
        build_loss("focal", min_kept=3)
    with pytest.raises(ValueError, match="loss 'ce' takes no option gamma"):
        build_loss("ce", gamma=2.0)
    with pytest.raises(ValueError, match="gamma"):
        build_loss("focal", gamma=-1)
    with pytest.raises(ValueError, match="thresh"):
        build_loss("ohem", thresh=1.5)


# ---------------------------------------------------------------- focal


@pytest.mark.parametrize("reduction", ["sum", "mean"])
def test_focal_with_gamma_0_is_cross_entropy(reduction):
    logits, target = _batch()
    weight = torch.tensor([0.5, 2.0, 1.0, 3.0])
    focal = FocalLoss(reduction, weight=weight, gamma=0.0)
    torch.testing.assert_close(focal(logits, target), SegmentationLoss(reduction, weight=weight)(logits, target))


@pytest.mark.parametrize("alpha", [None, 0.25, [0.1, 0.4, 0.3, 0.2]])
def test_focal_against_the_direct_formula(alpha):
    logits, target = _batch()
    weight = np.array([0.5, 2.0, 1.0, 3.0])
    gamma = 2.0
    probability = _softmax(logits)
    total, divisor = 0.0, 0.0
    for n, y, x in zip(*np.nonzero(target.numpy() != IGNORE), strict=True):
        c = target[n, y, x].item()
        p = probability[n, c, y, x]
        a = 1.0 if alpha is None else (alpha if isinstance(alpha, float) else alpha[c])
        total += -a * weight[c] * (1 - p) ** gamma * math.log(p)
        divisor += weight[c]
    loss = FocalLoss("mean", weight=torch.tensor(weight, dtype=torch.float32), gamma=gamma, alpha=alpha)
    assert loss(logits, target).item() == pytest.approx(total / divisor, rel=1e-5)
    assert loss.summed(logits, target).item() == pytest.approx(total, rel=1e-5)


def test_focal_gradient_is_finite_for_a_certain_pixel_and_gamma_below_1():
    logits = torch.tensor([[[[40.0, 0.0]], [[0.0, 1.0]]]], requires_grad=True)  # pixel 0: p_t == 1 in float32
    target = torch.tensor([[[0, 0]]])
    FocalLoss("sum", gamma=0.5)(logits, target).backward()
    assert torch.isfinite(logits.grad).all() and logits.grad[..., 1].abs().sum() > 0


def test_focal_pieces_add_up_to_the_whole_batch():
    logits, target = _batch(n=4)
    loss = FocalLoss("mean", gamma=2.0)
    normalizer = loss.normalizer(target[:2]) + loss.normalizer(target[2:])
    pieces = loss(logits[:2], target[:2], normalizer) + loss(logits[2:], target[2:], normalizer)
    torch.testing.assert_close(pieces, loss(logits, target))


# ---------------------------------------------------------------- OHEM


def _ohem_case():
    """One image of 7 pixels, 2 classes, true-class probabilities set through the logits."""
    probability = torch.tensor([0.9, 0.8, 0.6, 0.5, 0.3, 0.95, 0.1])
    target = torch.tensor([0, 1, 0, 1, 0, 1, IGNORE]).reshape(1, 1, 7)
    true_logit = torch.log(probability / (1 - probability))  # two classes: sigmoid of the logit gap
    logits = torch.zeros(1, 2, 1, 7)
    for i, c in enumerate(target.flatten().tolist()):
        logits[0, 0 if c == IGNORE else c, 0, i] = true_logit[i]
    return logits, target, probability


@pytest.mark.parametrize(
    "thresh, min_kept, expected",
    [
        (0.7, 2, [2, 3, 4]),  # three below the threshold, more than the floor
        (0.7, 4, [1, 2, 3, 4]),  # the floor: the four lowest probabilities
        (None, 2, [3, 4]),  # no threshold: exactly the min_kept hardest
        (0.7, 50, [0, 1, 2, 3, 4, 5]),  # a floor above the valid pixels keeps them all (never the ignored one)
    ],
)
def test_ohem_keeps_exactly_the_hard_pixels(thresh, min_kept, expected):
    logits, target, probability = _ohem_case()
    logits.requires_grad_(True)
    loss = OHEMLoss("sum", thresh=thresh, min_kept=min_kept)
    value = loss(logits, target)
    value.backward()
    kept = logits.grad.abs().sum(dim=(0, 1, 2)).nonzero().flatten().tolist()
    assert kept == expected
    assert value.item() == pytest.approx(-sum(math.log(probability[i]) for i in expected), rel=1e-5)


def test_ohem_floor_is_per_image():
    logits, target, _ = _ohem_case()
    two_images = OHEMLoss("sum", thresh=0.05, min_kept=2)  # nothing below 0.05: only the floor counts
    pair = two_images.summed(torch.cat([logits, logits]), torch.cat([target, target]))
    # 2 x 2 = 4 pixels over the pair: the two copies of each of the two hardest pixels (p = 0.3, 0.5)
    assert pair.item() == pytest.approx(-2 * (math.log(0.3) + math.log(0.5)), rel=1e-5)


def test_ohem_with_a_threshold_splits_exactly_over_micro_batches():
    logits, target = _batch(n=4)
    loss = OHEMLoss("mean", thresh=0.7, min_kept=1)
    normalizer = loss.normalizer(target[:2]) + loss.normalizer(target[2:])
    pieces = loss(logits[:2], target[:2], normalizer) + loss(logits[2:], target[2:], normalizer)
    torch.testing.assert_close(pieces, loss(logits, target))
    assert loss(logits, target) < SegmentationLoss("mean")(logits, target)  # easy pixels dropped


# ---------------------------------------------------------------- Lovasz-softmax


def _lovasz_reference(probability: np.ndarray, label: np.ndarray, weight=None) -> float:
    """The Lovasz extension as an integral over thresholds, f(m) = int_0^1 Delta({i: m_i >= t}) dt,
    with the Jaccard loss Delta(S) = |S| / |foreground U S| (Berman et al. 2018, eq. 8-9);
    the mean over the classes present in ``label``."""
    losses, weights = [], []
    for c in np.unique(label):
        foreground = label == c
        errors = np.abs(foreground.astype(float) - probability[:, c])
        levels = np.unique(np.concatenate([[0.0], errors]))
        value = 0.0
        for low, high in zip(levels[:-1], levels[1:], strict=True):
            chosen = errors >= high
            value += (high - low) * chosen.sum() / (foreground | chosen).sum()
        losses.append(value)
        weights.append(1.0 if weight is None else weight[c])
    return float(np.dot(losses, weights) / np.sum(weights))


def _valid_pixels(logits, target):
    probability = _softmax(logits).transpose(0, 2, 3, 1)
    valid = target.numpy() != IGNORE
    return probability[valid], target.numpy()[valid]


def test_lovasz_per_image_against_the_threshold_integral():
    logits, target = _batch(n=3, c=3, h=3, w=4, seed=4)
    expected = np.mean([_lovasz_reference(*_valid_pixels(logits[i : i + 1], target[i : i + 1])) for i in range(3)])
    for reduction in ("sum", "mean"):  # either way the mean over images
        assert LovaszSoftmaxLoss(reduction)(logits, target).item() == pytest.approx(expected, rel=1e-5)


def test_lovasz_per_batch_and_weighted_against_the_threshold_integral():
    logits, target = _batch(n=2, c=3, h=3, w=3, seed=6)
    weight = [0.5, 2.0, 1.0]
    expected = _lovasz_reference(*_valid_pixels(logits, target), weight=weight)
    loss = LovaszSoftmaxLoss(per_image=False, weight=torch.tensor(weight))
    assert loss(logits, target).item() == pytest.approx(expected, rel=1e-5)


def test_lovasz_of_hard_predictions_is_one_minus_the_mean_iu_of_present_classes():
    target = torch.tensor([[[0, 0, 1], [1, 2, IGNORE]]])
    pred = torch.tensor([[[0, 1, 1], [1, 1, 0]]])
    logits = 60.0 * F.one_hot(pred, 3).permute(0, 3, 1, 2).float()
    # IU: class 0 = 1/2, class 1 = 2/4, class 2 = 0/1
    assert LovaszSoftmaxLoss()(logits, target).item() == pytest.approx(1 - (0.5 + 0.5 + 0.0) / 3, rel=1e-6)


def test_lovasz_per_image_splits_over_micro_batches_and_has_gradients():
    logits, target = _batch(n=4)
    logits.requires_grad_(True)
    loss = LovaszSoftmaxLoss()
    normalizer = loss.normalizer(target[:2]) + loss.normalizer(target[2:])
    pieces = loss(logits[:2], target[:2], normalizer) + loss(logits[2:], target[2:], normalizer)
    whole = loss(logits, target)
    torch.testing.assert_close(pieces, whole)
    whole.backward()
    assert logits.grad.abs().sum() > 0
    empty = torch.full_like(target, IGNORE)
    assert loss(logits, empty).item() == 0.0


# ---------------------------------------------------------------- effective-number weights


def test_effective_number_weights_by_formula():
    counts = [10, 1000, 0, 5]
    beta = 0.99
    raw = [(1 - beta) / (1 - beta**n) if n else 0.0 for n in counts]
    expected = [3 * r / sum(raw) for r in raw]  # three classes occur: they sum to 3
    weights = effective_number_weights(torch.tensor(counts), beta=beta)
    assert weights.dtype == torch.float32 and weights.tolist() == pytest.approx(expected, rel=1e-6)
    statistics = ClassStatistics(torch.tensor(counts), torch.tensor([100] * 4), torch.tensor([1, 1, 0, 1]))
    assert effective_number_weights(statistics, beta=beta).tolist() == pytest.approx(expected, rel=1e-6)


def test_effective_number_weights_near_beta_1_are_inverse_frequency():
    counts = torch.tensor([1_000, 4_000, 2_000_000])
    weights = effective_number_weights(counts, beta=1 - 1e-12)  # beta^n ~ 1 - n(1 - beta)
    inverse = 1 / counts.double()
    assert weights.tolist() == pytest.approx((3 * inverse / inverse.sum()).tolist(), rel=1e-5)
    with pytest.raises(ValueError, match="beta"):
        effective_number_weights(counts, beta=1.0)
    with pytest.raises(ValueError, match="non-negative"):
        effective_number_weights(torch.tensor([3, -1]))
