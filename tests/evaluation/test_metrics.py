"""ConfusionMatrix against hand-computed matrices and an independent numpy version of DESIGN §4."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from fcnseg.evaluation.metrics import ConfusionMatrix


def reference_metrics(gt: np.ndarray, pred: np.ndarray, num_classes: int, ignore: int = 255) -> dict:
    """DESIGN §4 written out with numpy loops, independent of fcnseg.evaluation.metrics."""
    hist = np.zeros((num_classes, num_classes), dtype=np.int64)
    for g, p in zip(gt.ravel(), pred.ravel(), strict=True):
        if g != ignore:
            hist[g, p] += 1
    t = hist.sum(axis=1)
    accs, ius = [], []
    for i in range(num_classes):
        if t[i] > 0:
            accs.append(hist[i, i] / t[i])
        union = t[i] + hist[:, i].sum() - hist[i, i]
        ius.append(hist[i, i] / union if union > 0 else math.nan)
    fw = sum(t[i] / t.sum() * ius[i] for i in range(num_classes) if t[i] > 0)
    return {
        "hist": hist,
        "pixel_acc": np.trace(hist) / hist.sum(),
        "mean_acc": float(np.mean(accs)),
        "mean_iu": float(np.nanmean(ius)),
        "fw_iu": float(fw),
        "iu": ius,
    }


def test_hand_computed_matrix_and_metrics():
    # 3 classes; class 2 never appears in GT but is predicted once -> IU 0, excluded from mean acc.
    gt = torch.tensor([[0, 0, 0, 1], [1, 1, 255, 0]])
    pred = torch.tensor([[0, 0, 1, 1], [1, 2, 2, 0]])  # the 255 pixel's prediction (2) is dropped
    cm = ConfusionMatrix(3)
    cm.update(pred, gt)
    assert cm.matrix.tolist() == [[3, 1, 0], [0, 2, 1], [0, 0, 0]]
    m = cm.compute()
    # pixel acc = (3+2)/7; mean acc over classes 0,1 = (3/4 + 2/3)/2
    assert m["pixel_acc"] == pytest.approx(5 / 7)
    assert m["mean_acc"] == pytest.approx((3 / 4 + 2 / 3) / 2)
    # IU0 = 3/(4+3-3) = 3/4; IU1 = 2/(3+3-2) = 1/2; IU2 = 0/(0+1-0) = 0
    assert m["iu"] == pytest.approx([3 / 4, 1 / 2, 0.0])
    assert m["mean_iu"] == pytest.approx((3 / 4 + 1 / 2 + 0) / 3)
    # fw IU = 4/7 * 3/4 + 3/7 * 1/2 (class 2 has t=0 and is left out)
    assert m["fw_iu"] == pytest.approx(4 / 7 * 3 / 4 + 3 / 7 * 1 / 2)


def test_class_absent_everywhere_is_nan_and_left_out_of_means():
    gt = torch.tensor([0, 0, 1, 1])
    pred = torch.tensor([0, 1, 1, 1])
    cm = ConfusionMatrix(4)
    cm.update(pred, gt)
    m = cm.compute()
    assert math.isnan(m["iu"][2]) and math.isnan(m["iu"][3])
    # IU0 = 1/(2+1-1) = 1/2, IU1 = 2/(2+3-2) = 2/3
    assert m["mean_iu"] == pytest.approx((1 / 2 + 2 / 3) / 2)
    assert m["mean_acc"] == pytest.approx((1 / 2 + 1) / 2)
    assert m["fw_iu"] == pytest.approx(0.5 * 1 / 2 + 0.5 * 2 / 3)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_independent_formulas_on_random_maps_over_batches(seed):
    rng = np.random.default_rng(seed)
    num_classes = 6
    gts, preds = [], []
    cm = ConfusionMatrix(num_classes)
    for _ in range(4):  # several updates accumulate into one dataset-level matrix
        h, w = rng.integers(3, 12, size=2)
        gt = rng.integers(0, num_classes - 1, size=(2, h, w))  # class 5 never in GT
        gt[rng.random(gt.shape) < 0.1] = 255
        pred = rng.integers(0, num_classes - 2, size=(2, h, w))  # class 4, 5 never predicted
        cm.update(torch.from_numpy(pred), torch.from_numpy(gt))
        gts.append(gt.ravel())
        preds.append(pred.ravel())
    ref = reference_metrics(np.concatenate(gts), np.concatenate(preds), num_classes)
    got = cm.compute()
    np.testing.assert_array_equal(cm.matrix.numpy(), ref["hist"])
    for key in ("pixel_acc", "mean_acc", "mean_iu", "fw_iu"):
        assert got[key] == pytest.approx(ref[key], rel=1e-12), key
    np.testing.assert_allclose(got["iu"], ref["iu"], rtol=1e-12, equal_nan=True)
    assert math.isnan(got["iu"][5])  # absent from GT and prediction
    assert got["iu"][4] == 0.0  # in GT, never predicted


def test_perfect_prediction_is_one_everywhere():
    gt = torch.tensor([[0, 1], [2, 255]])
    cm = ConfusionMatrix(3)
    cm.update(gt.clamp(max=2), gt)
    m = cm.compute()
    assert (m["pixel_acc"], m["mean_acc"], m["mean_iu"], m["fw_iu"]) == (1.0, 1.0, 1.0, 1.0)


def test_custom_ignore_index_and_reset():
    cm = ConfusionMatrix(2, ignore_index=-1)
    cm.update(torch.tensor([1, 1, 0]), torch.tensor([-1, 1, 0]))
    assert cm.matrix.tolist() == [[1, 0], [0, 1]]
    cm.reset()
    assert cm.matrix.sum() == 0
    m = cm.compute()
    assert all(math.isnan(m[k]) for k in ("pixel_acc", "mean_acc", "mean_iu", "fw_iu"))


def test_out_of_range_labels_are_errors():
    cm = ConfusionMatrix(3)
    with pytest.raises(ValueError, match=r"ground-truth label values \[3, 7\] out of range: expected 0..2 or 255"):
        cm.update(torch.tensor([0, 0, 0]), torch.tensor([3, 7, 0]))
    with pytest.raises(ValueError, match=r"predicted class values \[-1\]"):
        cm.update(torch.tensor([-1, 0]), torch.tensor([0, 0]))
    with pytest.raises(ValueError, match="shape"):
        cm.update(torch.zeros(2, 3, dtype=torch.long), torch.zeros(3, 2, dtype=torch.long))
    with pytest.raises(TypeError, match="argmax"):
        cm.update(torch.zeros(2, 3), torch.zeros(2, 3, dtype=torch.long))
    assert cm.matrix.sum() == 0  # nothing half-counted


# Summing over gloo ranks is tested with evaluation in tests/test_eval_cli.py (two processes).
def test_all_reduce_is_noop_when_not_distributed():
    cm = ConfusionMatrix(2)
    cm.update(torch.tensor([0, 1]), torch.tensor([0, 0]))
    cm.all_reduce()
    assert cm.matrix.tolist() == [[1, 1], [0, 0]]
