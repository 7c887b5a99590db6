"""One finite-values check (fcnseg.checkpoint.check_finite) for checkpoints and other weight files, each with its
error."""

from __future__ import annotations

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from tiny_models import tiny_model

from fcnseg.checkpoint import CheckpointError, check_finite, load_checkpoint, save_checkpoint
from fcnseg.weights import WeightsError, assign_reference_weights, reference_tensors

MESSAGE = r"{source}: {key} holds 2 NaN or infinite value\(s\); refusing weights that cannot be used"


def test_the_check_counts_nan_and_infinite_values_and_raises_the_callers_error():
    value = torch.tensor([1.0, float("nan"), -float("inf"), 2.0])
    with pytest.raises(CheckpointError, match=MESSAGE.format(source="model.safetensors", key="fc6.weight")):
        check_finite("fc6.weight", value, "model.safetensors")
    with pytest.raises(WeightsError, match=MESSAGE.format(source="vgg.pth", key="fc6.weight")):
        check_finite("fc6.weight", value, "vgg.pth", WeightsError)
    check_finite("fc6.weight", torch.ones(3), "vgg.pth")
    check_finite("count", torch.tensor([2**62]), "vgg.pth")  # integers are always finite


def test_a_checkpoint_with_nan_is_a_checkpoint_error(tmp_path):
    path = save_checkpoint(
        tmp_path / "m.safetensors",
        tiny_model("fcn32s", 3, score_std=1.0),
        classes=["a", "b", "c"],
        palette=[(0, 0, 0), (1, 1, 1), (2, 2, 2)],
    )
    tensors = load_file(str(path))
    tensors["score_fr.bias"][:2] = float("nan")
    with safe_open(str(path), "pt") as opened:
        metadata = opened.metadata()
    save_file(tensors, str(path), metadata=metadata)
    with pytest.raises(CheckpointError, match=MESSAGE.format(source=".*m.safetensors", key="score_fr.bias")):
        load_checkpoint(path)


def test_foreign_weights_with_nan_are_a_weights_error():
    model = tiny_model("fcn32s", 3, score_std=1.0)
    weights = {key: torch.zeros_like(value) for key, value in reference_tensors(model).items() if key == "fc6.bias"}
    weights["fc6.bias"][[0, 5]] = float("inf")
    with pytest.raises(WeightsError, match=MESSAGE.format(source="my.caffemodel", key="fc6.bias")):
        assign_reference_weights(model, weights, "my.caffemodel")
