"""``fcnseg demo`` with a reduced budget: it runs end to end and writes every file it promises.

The full demo (about 2 minutes, the README's figures) is ``make demo``, not a test.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from PIL import Image

import fcnseg
from fcnseg.checkpoint import load_checkpoint
from fcnseg.cli import main
from fcnseg.data import open_dataset
from fcnseg.engine.demo import demo_config
from fcnseg.engine.recipes import Recipe, load_preset

METRIC_KEYS = {"pixel_acc", "mean_acc", "mean_iu", "fw_iu", "iu", "acc"}


def independent_masks(checkpoint, images: list[torch.Tensor]) -> list[np.ndarray]:
    """The argmax of the plain forward (no fast paths, no Predictor) of each image, as numpy."""
    model = checkpoint.model.eval()
    model.set_fast_paths(False)
    with torch.no_grad():
        return [
            model(fcnseg.preprocess(image[None], checkpoint.preprocessing))[0].argmax(0).numpy() for image in images
        ]


def independent_metrics(predictions: list[np.ndarray], labels: list[np.ndarray], num_classes: int) -> dict:
    """Pixel accuracy, per-class IU and mean IU (the paper's definitions) from a numpy confusion matrix."""
    hist = np.zeros((num_classes, num_classes), np.int64)
    for pred, label in zip(predictions, labels, strict=True):
        keep = label != 255
        np.add.at(hist, (label[keep], pred[keep]), 1)
    union = hist.sum(0) + hist.sum(1) - np.diag(hist)
    iu = [hist[i, i] / union[i] if union[i] else math.nan for i in range(num_classes)]
    return {"pixel_acc": np.trace(hist) / hist.sum(), "iu": iu, "mean_iu": np.nanmean(iu)}


def test_smoke_demo_writes_checkpoint_metrics_curves_and_overlays(tmp_path, capsys):
    out = tmp_path / "demo"
    assert (
        main(
            [
                "demo",
                "--out",
                str(out),
                "--steps",
                "2",
                "--train-images",
                "8",
                "--val-images",
                "4",
                "--size",
                "40",
                "--threads",
                "1",
                "--no-progress",
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert "mean IU" in printed and "per-class IU" in printed and str(out) in printed

    checkpoint = load_checkpoint(out / "best.safetensors")
    assert checkpoint.model.config["name"] == "fcn8s" and checkpoint.model.config["width"] == 0.125
    assert checkpoint.classes[0] == "background" and checkpoint.recipe["name"] == "demo"
    assert (out / "last.safetensors").is_file() and (out / "train_state.pt").is_file()

    # metrics.json is what evaluating best.safetensors on the validation images gives, computed here independently
    config = demo_config(val_images=4, size=40)
    val_set = open_dataset(
        config.data, config.root, config.val_split, **{**config.data_options, **config.val_data_options}
    )
    images, labels = zip(*(val_set[index] for index in range(len(val_set))), strict=True)
    assert len(images) == 4
    predictions = independent_masks(checkpoint, list(images))
    expected = independent_metrics(predictions, [label.numpy() for label in labels], len(checkpoint.classes))
    metrics = json.loads((out / "metrics.json").read_text())  # strict JSON (NaN written as null)
    assert set(metrics) == METRIC_KEYS and len(metrics["iu"]) == len(checkpoint.classes)
    assert metrics["mean_iu"] == pytest.approx(expected["mean_iu"], abs=1e-9)
    assert metrics["pixel_acc"] == pytest.approx(expected["pixel_acc"], abs=1e-9)
    assert [None if math.isnan(v) else pytest.approx(v, abs=1e-9) for v in expected["iu"]] == metrics["iu"]
    assert f"mean IU {metrics['mean_iu']:.3f}" in printed

    for picture in ("curves.png", "val_overlays.png"):
        assert Image.open(out / picture).size[0] > 100, picture
    # the masks of the first four validation images, as palette PNGs of the checkpoint's colours
    overlays = sorted((out / "predictions").glob("val_*_overlay.png"))
    assert len(overlays) == 4
    palette = [value for colour in checkpoint.palette for value in colour]
    for index, prediction in enumerate(predictions):
        with Image.open(out / "predictions" / f"{val_set.ids[index]}.png") as mask:
            assert mask.mode == "P" and mask.size == (40, 40) and mask.getpalette()[: len(palette)] == palette
            np.testing.assert_array_equal(np.array(mask), prediction)


def test_demo_config_is_the_demo_recipe_on_the_cpu():
    config = demo_config()
    preset = load_preset("demo")
    assert config.recipe == Recipe.from_dict(preset["recipe"]) and config.device == "cpu"
    assert config.model["name"] == "fcn8s" and config.data == "synthetic" and config.threads == 2
    recorded = config.to_dict()  # every setting of the preset, as the file says, beside the recipe
    assert {key: recorded[key] for key in preset if key not in ("description", "recipe")} == {
        key: value for key, value in preset.items() if key not in ("description", "recipe")
    }


def test_demo_config_depends_on_nothing_of_the_time_or_the_machine(monkeypatch):
    import os
    import time

    expected = demo_config(seed=1).to_dict()
    monkeypatch.setattr(time, "time", lambda: 4_000_000_000.0)
    monkeypatch.setattr(time, "strftime", lambda *args: "2096-10-02 07:06:40")
    monkeypatch.setattr(os, "cpu_count", lambda: 96)
    monkeypatch.setattr(torch, "get_num_threads", lambda: 48)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX512")
    assert demo_config(seed=1).to_dict() == expected
    assert demo_config(seed=2).to_dict() == {**expected, "seed": 2}  # the seed, and nothing else, is the run's
