"""The paper's SIFT Flow and NYUDv2 nets on their datasets: one training step and an evaluation, end to end."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from tiny_models import tiny_model

import fcnseg
from fcnseg.data import PadCollate, open_dataset
from fcnseg.engine.loss import SegmentationLoss, loss_for_model
from fcnseg.evaluation.loop import evaluate
from fcnseg.models import preprocess_color_hha


def test_siftflow_net_trains_both_heads_and_is_evaluated_per_head(siftflow):  # noqa: F811
    dataset = open_dataset("siftflow", siftflow, "trainval")
    # random score layers, weights and biases: zero scores would give the trunk no gradient
    model = tiny_model("siftflow_fcn16s", dataset.num_classes, dropout=0.0, score_std=0.1, score_bias_std=0.1).train()
    images, masks = PadCollate()([dataset[0], dataset[1]])
    loss = loss_for_model(SegmentationLoss("sum"), model)
    value = loss(model(fcnseg.preprocess(images, model.preprocessing)), masks)
    value.backward()
    assert torch.isfinite(value) and value > 0
    for head in ("sem", "geo"):
        assert getattr(model, f"score_fr_{head}").weight.grad.abs().sum() > 0
    assert model.backbone.conv1_1.weight.grad.abs().sum() > 0
    result = evaluate(model, dataset, dataset.num_classes, progress=False)
    assert set(result["heads"]) == {"sem", "geo"}
    assert len(result["heads"]["sem"]["iu"]) == 33 and len(result["heads"]["geo"]["iu"]) == 3
    assert result["mean_iu"] == result["heads"]["sem"]["mean_iu"]


def test_late_fusion_net_takes_the_colour_hha_items(nyud):  # noqa: F811
    dataset = open_dataset("nyud", nyud, "train", modality="color_hha", intrinsics=[150.0, 150.0, 79.5, 59.5])
    model = fcnseg.create_model("nyud_fcn32s_color_hha", num_classes=dataset.num_classes, width=0.0625)
    fill = (*model.preprocessing.mean_rgb_uint8(), 132, 94, 118)  # each stream's mean colour
    images, masks = PadCollate(fill=fill)([dataset[0], dataset[1]])
    assert images.shape == (2, 6, 120, 160)
    logits = model(preprocess_color_hha(images, model))
    value = SegmentationLoss("mean")(logits, masks)
    value.backward()
    assert logits.shape == (2, 40, 120, 160) and torch.isfinite(value)
    assert np.isclose(value.item(), np.log(40), rtol=1e-5)  # score layers start at zero: uniform over 40 classes
    assert model.hha.score_fr.bias.grad.abs().sum() > 0 and model.color.score_fr.bias.grad.abs().sum() > 0


def test_fcnseg_train_and_eval_run_the_two_headed_net(siftflow, tmp_path, capsys):  # noqa: F811
    from fcnseg.cli import main

    out = tmp_path / "run"
    assert (
        main(
            [
                "train",
                "--recipe",
                "demo",
                "--out",
                str(out),
                "--model",
                "siftflow_fcn32s",
                "--width",
                "0.0625",
                "--data",
                "siftflow",
                "--root",
                str(siftflow),
                "--train-split",
                "trainval",
                "--val-split",
                "trainval",
                "--set",
                "data_options={}",
                "--set",
                "val_data_options={}",
                "--set",
                "class_weights=none",
                "--steps",
                "2",
                "--batch-size",
                "2",
                "--no-progress",
                "--overlays",
                "0",
            ]
        )
        == 0
    )
    assert main(["eval", str(out / "best.safetensors"), "--split", "trainval", "--json", str(tmp_path / "m.json")]) == 0
    printed = capsys.readouterr().out
    assert "head sem (33 classes)" in printed and "head geo (3 classes)" in printed


def test_the_engine_trains_the_late_fusion_net_on_colour_hha_items(nyud, tmp_path):  # noqa: F811
    from fcnseg.engine import build_config, train

    settings = [
        ("model.name", "nyud_fcn32s_color_hha"),
        ("model.width", 0.0625),
        ("data", "nyud"),
        ("root", str(nyud)),
        ("data_options", {"modality": "color_hha", "intrinsics": [150.0, 150.0, 79.5, 59.5]}),
        ("val_split", "train"),
        ("recipe.steps", 1),
        ("recipe.batch_size", 2),
        ("threads", 1),
        ("progress", False),
        ("overlays", 0),
        ("recipe.lr", 1e-10),
    ]  # the paper recipe knows the VOC nets' rates
    result = train(build_config("paper", settings=settings), tmp_path / "run")
    # the validation it reports is what evaluating its weights gives, through the evaluation loop instead
    from fcnseg.checkpoint import load_checkpoint

    dataset = open_dataset("nyud", nyud, "train", modality="color_hha", intrinsics=[150.0, 150.0, 79.5, 59.5])
    expected = evaluate(
        load_checkpoint(tmp_path / "run" / "last.safetensors").model, dataset, dataset.num_classes, progress=False
    )
    assert result.step == 1 and result.last_metrics["mean_iu"] == pytest.approx(expected["mean_iu"], abs=1e-9)
    assert result.last_metrics["pixel_acc"] == pytest.approx(expected["pixel_acc"], abs=1e-9)


def test_staged_training_carries_the_heads_from_32s_to_16s():
    from fcnseg.weights import transfer_fcn

    coarse = tiny_model("siftflow_fcn32s", 36, all_std=1.0)
    fine = fcnseg.create_model("siftflow_fcn16s", num_classes=36, width=0.0625)
    transfer_fcn(coarse, fine)
    for head in ("sem", "geo"):
        assert torch.equal(getattr(fine, f"score_fr_{head}").weight, getattr(coarse, f"score_fr_{head}").weight)
        assert not getattr(fine, f"score_pool4_{head}").weight.any()  # the new skip starts at zero
