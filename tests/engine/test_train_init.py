"""``--init`` (staged training from a coarser checkpoint, clear errors) and the class-weighted loss."""

from __future__ import annotations

import pytest
import torch
from tiny_models import tiny_model

import fcnseg
from fcnseg.checkpoint import save_checkpoint
from fcnseg.data import open_dataset
from fcnseg.engine import build_config
from fcnseg.engine.distributed import DistContext
from fcnseg.engine.initial_weights import apply_initial_weights
from fcnseg.engine.train import build_run


def test_staged_init_from_a_coarser_checkpoint(tmp_path):
    coarse = tiny_model("fcn32s", 3, all_std=1.0)
    path = save_checkpoint(tmp_path / "fcn32s.safetensors", coarse, classes=["a", "b", "c"], palette=[(0, 0, 0)] * 3)
    fine = fcnseg.create_model("fcn16s", num_classes=3, width=0.0625)
    description = apply_initial_weights(fine, f"checkpoint:{path}")
    assert "fcn32s" in description
    assert torch.equal(fine.backbone.fc7.weight, coarse.backbone.fc7.weight)
    assert torch.equal(fine.score_fr.weight, coarse.score_fr.weight)
    assert not fine.score_pool4.weight.any()  # the new skip starts at zero: the finer net starts as the coarser


@pytest.mark.parametrize(
    "spec, message",
    [
        ("caffe", "needs a file"),
        ("caffe:/nonexistent/x.caffemodel", "no such file"),
        ("checkpoint:/nonexistent/best.safetensors", "no such file"),
        ("vgg19-torchvision", "unknown --init"),
    ],
)
def test_bad_init_specs_are_clear_errors(spec, message):
    model = fcnseg.create_model("fcn8s", num_classes=3, width=0.0625)
    with pytest.raises(ValueError, match=message):
        apply_initial_weights(model, spec)


def test_checkpoint_with_other_classes_is_refused(tmp_path):
    other = fcnseg.create_model("fcn32s", num_classes=4, width=0.0625)
    path = save_checkpoint(tmp_path / "c.safetensors", other, classes=list("abcd"), palette=[(0, 0, 0)] * 4)
    with pytest.raises(ValueError, match="4 classes"):
        apply_initial_weights(fcnseg.create_model("fcn16s", num_classes=3, width=0.0625), f"checkpoint:{path}")


def test_median_frequency_class_weights_reach_the_loss(tmp_path):
    data = {"size": 24, "num_images": 6}
    config = build_config(
        "demo",
        settings=[
            ("model.width", 0.0625),
            ("data_options", data),
            ("threads", 1),
            ("progress", False),
            ("class_weights", "median-frequency"),
        ],
    )
    run = build_run(config, tmp_path, DistContext())
    # independent computation: freq_c = pixels of c / pixels of the images where c occurs; w_c = median / freq_c
    dataset = open_dataset("synthetic", None, "train", **data)
    counts = torch.zeros(7, dtype=torch.float64)
    present = torch.zeros(7, dtype=torch.float64)
    for index in range(len(dataset)):
        mask = dataset[index][1]
        per_class = torch.bincount(mask.flatten(), minlength=7).double()
        counts += per_class
        present += (per_class > 0).double() * mask.numel()
    seen = counts > 0
    frequency = counts[seen] / present[seen]
    expected = torch.zeros(7, dtype=torch.float64)
    expected[seen] = torch.quantile(frequency, 0.5) / frequency
    torch.testing.assert_close(run.loss.weight, expected.float(), rtol=1e-5, atol=0)
    assert run.loss.weight[0] < 1.0 < run.loss.weight[seen].max()  # the background is down-weighted
