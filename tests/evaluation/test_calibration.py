"""Expected calibration error: the binning, a hand-computed case, the dataset pass and ``fcnseg eval --calibration``."""

from __future__ import annotations

import json
from fractions import Fraction

import numpy as np
import pytest
import torch
from dataset_files import CLASSES, PALETTE, hand_masks, write_folder_dataset
from PIL import Image
from tiny_models import tiny_model

import fcnseg
from fcnseg.checkpoint import save_checkpoint
from fcnseg.cli import main
from fcnseg.data import open_dataset
from fcnseg.evaluation.calibration_error import ReliabilityBins, calibrate, reliability_diagram
from fcnseg.evaluation.loop import confusion_matrix
from fcnseg.inference.predictor import Predictor

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_ece_of_a_hand_computed_case():
    #          p     pred  label   bin (b/15, (b+1)/15]
    pixels = [
        (0.95, 1, 1),  # 14
        (0.95, 1, 2),  # 14
        (1.00, 0, 0),  # 14 (p = 1 closes the last bin)
        (0.50, 2, 2),  # 7
        (0.50, 2, 2),  # 7
        (0.50, 2, 0),  # 7
        (0.30, 1, 0),  # 4
        (0.20, 1, 255),
    ]  # ignored
    top1, pred, target = (torch.tensor([row[i] for row in pixels]) for i in range(3))
    bins = ReliabilityBins(15, ignore_index=255).update(top1.float(), pred, target)
    # Bin 14: n 3, correct 2, sum p 2.9 -> |2 - 2.9| = 0.9; bin 7: n 3, correct 2, sum p 1.5 -> 0.5;
    # bin 4: n 1, correct 0, sum p 0.3 -> 0.3. ECE = (0.9 + 0.5 + 0.3) / 7; MCE = max(0.3, 1/6, 0.3).
    result = bins.compute()
    assert result["ece"] == pytest.approx(1.7 / 7, abs=1e-6)
    assert result["mce"] == pytest.approx(0.3, abs=1e-6)
    assert result["pixels"] == 7 and result["accuracy"] == pytest.approx(4 / 7)
    assert result["mean_confidence"] == pytest.approx((2.9 + 1.5 + 0.3) / 7, abs=1e-6)
    assert [b["pixels"] for b in result["bins"]] == [0, 0, 0, 0, 1, 0, 0, 3, 0, 0, 0, 0, 0, 0, 3]
    assert result["bins"][7]["accuracy"] == pytest.approx(2 / 3) and np.isnan(result["bins"][0]["accuracy"])


@pytest.mark.parametrize("count", [15, 16])  # 16: every edge b/16 is a float32 value, so the closed side matters
def test_bins_are_right_closed_equal_width_intervals(count):
    # Reference in exact rational arithmetic: bin b holds b/B < p <= (b+1)/B.
    edges = [np.float32(b / count) for b in range(1, count)]
    below, above = (np.nextafter(e, np.float32(0)) for e in edges), (np.nextafter(e, np.float32(1)) for e in edges)
    values = np.array(
        [
            *edges,
            *below,
            *above,
            np.float32(1.0),
            np.float32(1e-7),
            *np.random.default_rng(0).random(200).astype(np.float32),
        ]
    )
    bins = ReliabilityBins(count).update(torch.from_numpy(values), torch.zeros(len(values)), torch.zeros(len(values)))
    expected = [
        next(b for b in range(count) if Fraction(b, count) < Fraction(float(p)) <= Fraction(b + 1, count))
        for p in values
    ]
    assert bins.counts["pixels"].tolist() == np.bincount(expected, minlength=count).tolist()


def test_merge_adds_and_refuses_other_settings():
    rng = np.random.default_rng(1)
    top1, target = torch.from_numpy(rng.random(100).astype(np.float32)), torch.from_numpy(rng.integers(0, 2, 100))
    pred = torch.zeros(100)
    whole = ReliabilityBins().update(top1, pred, target)
    first = ReliabilityBins().update(top1[:40], pred[:40], target[:40])
    second = ReliabilityBins().update(top1[40:], pred[40:], target[40:])
    first.merge(second)
    assert all(torch.equal(first.counts[k], whole.counts[k]) for k in ("pixels", "correct"))
    torch.testing.assert_close(first.counts["confidence"], whole.counts["confidence"])
    with pytest.raises(ValueError, match="different settings"):
        first.merge(ReliabilityBins(10))


def numpy_ece(probabilities: list[np.ndarray], labels: list[np.ndarray], bins: int = 15) -> float:
    """A second implementation: per-pixel top-1 and correctness, binned with np.digitize (right-closed)."""
    top1 = np.concatenate([p.max(0).ravel() for p in probabilities]).astype(np.float64)
    correct = np.concatenate([(p.argmax(0) == label).ravel() for p, label in zip(probabilities, labels, strict=True)])
    keep = np.concatenate([(label != 255).ravel() for label in labels])
    top1, correct = top1[keep], correct[keep]
    index = np.clip(np.digitize(top1, np.linspace(0, 1, bins + 1)[1:-1], right=True), 0, bins - 1)
    return sum(abs(correct[index == b].sum() - top1[index == b].sum()) for b in range(bins)) / len(top1)


def test_calibrate_over_a_dataset_matches_numpy_and_the_confusion_matrix():
    model = tiny_model("fcn32s", 4, score_std=0.1)  # soft random scores: probabilities away from 0 and 1
    dataset = open_dataset("synthetic", None, "val", num_images=3, size=40, num_classes=4)
    predictor = Predictor(model)
    matrix, bins = calibrate(predictor, dataset, 4, progress=False)
    assert torch.equal(matrix.matrix, confusion_matrix(predictor, dataset, 4, progress=False).matrix)
    images = [dataset[i] for i in range(len(dataset))]
    probabilities = [predictor.probabilities(image).numpy() for image, _ in images]
    expected = numpy_ece(probabilities, [mask.numpy() for _, mask in images])
    result = bins.compute()
    assert expected > 0.01 and result["ece"] == pytest.approx(expected, abs=1e-6)
    assert result["pixels"] == sum(int((mask != 255).sum()) for _, mask in images)
    assert sum(1 for b in result["bins"] if b["pixels"]) >= 3, "confidences must spread over bins to mean anything"


def test_reliability_diagram_is_written(tmp_path):
    bins = ReliabilityBins().update(torch.tensor([0.9, 0.6, 0.3]), torch.tensor([1, 1, 0]), torch.tensor([1, 0, 0]))
    path = reliability_diagram(bins, tmp_path / "r.png", title="test")
    with Image.open(path) as picture:
        assert picture.format == "PNG" and picture.size[0] > 200


def test_eval_calibration_reports_ece_and_writes_the_diagram(tmp_path, capsys, monkeypatch):
    from fcnseg.evaluation import calibration_error

    drawn = []
    monkeypatch.setattr(
        calibration_error,
        "reliability_diagram",
        lambda bins, path, **options: drawn.append(bins) or reliability_diagram(bins, path, **options),
    )
    # Zero score layers (the paper's init): logits 0, so every pixel has p = 1/4 and is predicted class 0.
    model = fcnseg.create_model("fcn32s", num_classes=len(CLASSES), width=0.0625)
    checkpoint = save_checkpoint(tmp_path / "zero.safetensors", model, classes=CLASSES, palette=PALETTE)
    root = tmp_path / "data"
    write_folder_dataset(root, hand_masks())
    out = tmp_path / "eval"
    code = main(
        [
            "eval",
            str(checkpoint),
            "--data",
            "folder",
            "--root",
            str(root),
            "--device",
            "cpu",
            "--calibration",
            "--out",
            str(out),
        ]
    )
    assert code == 0
    # By hand: 27 counted pixels, 18 of them background (correct), all in bin 3 (0.2, 0.2667]:
    # ECE = |18/27 - 1/4| = 5/12.
    printed = capsys.readouterr().out
    assert "calibration: ECE 0.4167" in printed
    document = json.loads((out / "metrics.json").read_text())
    assert document["calibration"]["ece"] == pytest.approx(18 / 27 - 0.25)
    assert document["calibration"]["bins"][3]["pixels"] == 27
    assert document["pixel_acc"] == pytest.approx(18 / 27)  # the usual report is unchanged
    shown = drawn[0].compute()  # the diagram is drawn from the bins the report gives
    assert len(drawn) == 1 and shown["ece"] == document["calibration"]["ece"]
    assert [b["pixels"] for b in shown["bins"]] == [b["pixels"] for b in document["calibration"]["bins"]]
    with Image.open(out / "reliability_diagram.png") as picture:
        assert picture.format == "PNG" and picture.size[0] > 200
