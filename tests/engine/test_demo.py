"""``fcnseg demo`` with a reduced budget: it runs end to end and writes every file it promises.

The full demo (about 2 minutes, the README's figures) is ``make demo``, not a test.
"""

from __future__ import annotations

import json

from PIL import Image

from fcnseg.checkpoint import load_checkpoint
from fcnseg.cli import main
from fcnseg.engine.demo import demo_config
from fcnseg.engine.recipes import Recipe, load_preset

METRIC_KEYS = {"pixel_acc", "mean_acc", "mean_iu", "fw_iu", "iu", "acc"}


def test_smoke_demo_writes_checkpoint_metrics_curves_and_overlays(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--steps", "2", "--train-images", "8", "--val-images", "4",
                 "--size", "40", "--threads", "1", "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "mean IU" in printed and "per-class IU" in printed and str(out) in printed

    checkpoint = load_checkpoint(out / "best.safetensors")
    assert checkpoint.model.config["name"] == "fcn8s" and checkpoint.model.config["width"] == 0.125
    assert checkpoint.classes[0] == "background" and checkpoint.recipe["name"] == "demo"
    assert (out / "last.safetensors").is_file() and (out / "train_state.pt").is_file()

    metrics = json.loads((out / "metrics.json").read_text())  # strict JSON (NaN written as null)
    assert set(metrics) == METRIC_KEYS and len(metrics["iu"]) == len(checkpoint.classes)
    assert 0.0 <= metrics["mean_iu"] <= 1.0
    assert f"mean IU {metrics['mean_iu']:.3f}" in printed

    for picture in ("curves.png", "val_overlays.png"):
        assert Image.open(out / picture).size[0] > 100, picture
    masks = sorted((out / "predictions").glob("val_*[0-9].png"))
    overlays = sorted((out / "predictions").glob("val_*_overlay.png"))
    assert len(masks) == len(overlays) == 4
    mask = Image.open(masks[0])
    assert mask.mode == "P" and mask.size == (40, 40)


def test_demo_config_is_the_demo_recipe_on_the_cpu():
    config = demo_config()
    assert config.recipe == Recipe.from_dict(load_preset("demo")["recipe"]) and config.device == "cpu"
    assert config.model["name"] == "fcn8s" and config.data == "synthetic" and config.threads == 2
    assert demo_config(seed=1).to_dict() == demo_config(seed=1).to_dict()  # nothing time- or machine-dependent
