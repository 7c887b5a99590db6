"""Pictures: each function writes a readable PNG, from the inputs a run or an evaluation has."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

import fcnseg
from fcnseg.evaluation import figures as visualize
from fcnseg.evaluation.figures import (
    confusion_matrix_figure,
    overlay_grid,
    plot_curves,
    read_jsonl,
    validation_overlays,
    worst_images_figure,
)
from fcnseg.inference.predictor import Predictor

PALETTE = [(0, 0, 0), (220, 20, 60), (30, 144, 255)]


def _png_size(path) -> tuple[int, int]:
    with Image.open(path) as picture:
        assert picture.format == "PNG"
        return picture.size


def test_curves_from_a_metrics_log_with_a_torn_last_line(tmp_path):
    log = tmp_path / "metrics.jsonl"
    lines = [json.dumps({"step": s, "loss": 2.0 / s, "lr": 0.01}) for s in range(1, 41)]
    lines += [json.dumps({"step": s, "val": {"mean_iu": s / 50, "pixel_acc": s / 45}}) for s in (10, 20, 30, 40)]
    log.write_text("\n".join(lines) + '\n{"step": 41, "lo')  # a killed writer left half a line
    assert len(read_jsonl(log)) == 44
    width, height = _png_size(plot_curves(log, tmp_path / "curves.png"))
    assert width > 600 and height > 200


def test_curves_of_an_empty_log_still_draw(tmp_path):
    (tmp_path / "metrics.jsonl").write_text("")
    _png_size(plot_curves(tmp_path / "metrics.jsonl", tmp_path / "curves.png"))


def test_overlay_grid_shows_ground_truth_and_prediction(tmp_path):
    images = [torch.full((3, 20, 30), 128, dtype=torch.uint8) for _ in range(2)]
    gts = [torch.ones(20, 30, dtype=torch.long), torch.full((20, 30), 255)]
    preds = [torch.full((20, 30), 2), torch.zeros(20, 30, dtype=torch.long)]
    path = overlay_grid(images, preds, gts, PALETTE, tmp_path / "grid.png", titles=["a", "b"])
    with Image.open(path) as picture:
        pixels = np.array(picture.convert("RGB")).reshape(-1, 3)
    # the blended class colours are in the picture: 0.5 * 128 + 0.5 * colour
    for colour in (PALETTE[1], PALETTE[2]):
        blended = np.rint(0.5 * 128 + 0.5 * np.array(colour))
        assert (np.abs(pixels - blended).max(axis=1) <= 2).any(), colour
    with pytest.raises(ValueError, match="as many masks as images"):
        overlay_grid(images, preds[:1], gts, PALETTE, tmp_path / "bad.png")


def test_validation_overlays_predict_a_few_items(tmp_path):
    items = [(torch.randint(0, 256, (3, 24, 24), dtype=torch.uint8), torch.randint(0, 3, (24, 24))) for _ in range(5)]

    class Items(list):
        palette = PALETTE
        classes = ["bg", "cat", "dog"]

    model = fcnseg.create_model("fcn32s", num_classes=3, width=0.0625)
    _png_size(validation_overlays(Predictor(model), Items(items), tmp_path / "val.png", count=3))


def test_confusion_matrix_picture(tmp_path):
    matrix = torch.tensor([[50, 2, 0], [5, 30, 1], [0, 0, 0]])  # class 2 absent from the ground truth
    width, height = _png_size(confusion_matrix_figure(matrix, ["bg", "cat", "dog"], tmp_path / "cm.png"))
    assert width > 300 and height > 300
    with pytest.raises(ValueError, match="3 classes"):
        confusion_matrix_figure(torch.zeros(2, 2), ["bg", "cat", "dog"], tmp_path / "bad.png")


def test_worst_images_figure_draws_the_lowest_scores_worst_first(tmp_path, monkeypatch):
    images = [torch.full((3, 16, 16), 10 * i, dtype=torch.uint8) for i in range(5)]
    targets = [torch.full((16, 16), i % 3) for i in range(5)]
    preds = [torch.zeros(16, 16, dtype=torch.long) for _ in range(5)]
    scores = [0.9, 0.2, float("nan"), 0.5, 0.1]  # image 2 has nothing to score
    drawn = {}
    real = visualize.overlay_grid

    def spy(images_k, preds_k, targets_k, palette, path, *, titles, classes=None):
        drawn.update(images=images_k, targets=targets_k, titles=titles)
        return real(images_k, preds_k, targets_k, palette, path, titles=titles, classes=classes)

    monkeypatch.setattr(visualize, "overlay_grid", spy)
    ids = ["a", "b", "c", "d", "e"]
    _png_size(worst_images_figure(images, targets, preds, scores, PALETTE, tmp_path / "worst.png", 3, ids=ids))
    assert drawn["titles"] == ["e: 0.100", "b: 0.200", "d: 0.500"]
    assert [int(image[0, 0, 0]) for image in drawn["images"]] == [40, 10, 30]
    assert [int(t[0, 0]) for t in drawn["targets"]] == [1, 1, 0]
    worst_images_figure(images, targets, preds, scores, PALETTE, tmp_path / "all.png", 10)
    assert drawn["titles"] == ["4: 0.100", "1: 0.200", "3: 0.500", "0: 0.900"]  # NaN left out; index as id
    with pytest.raises(ValueError, match="no image has a score"):
        worst_images_figure(images[:1], targets[:1], preds[:1], [float("nan")], PALETTE, tmp_path / "x.png")
    with pytest.raises(ValueError, match="one target, prediction, score"):
        worst_images_figure(images, targets, preds, scores[:2], PALETTE, tmp_path / "x.png")
