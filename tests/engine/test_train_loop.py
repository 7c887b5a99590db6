"""The training loop on tiny synthetic data: it learns, it stops on NaN, accumulation is exact."""

from __future__ import annotations

import json
import math

import pytest
import torch
from safetensors.torch import load_file

from fcnseg.checkpoint import load_checkpoint
from fcnseg.data import open_dataset
from fcnseg.engine import TrainConfig, TrainingDiverged, build_config, train
from fcnseg.engine.distributed import DistContext
from fcnseg.engine.loss import segmentation_loss
from fcnseg.engine.state import load_train_state
from fcnseg.engine.train import build_run, validate
from fcnseg.evaluation.metrics import ConfusionMatrix
from fcnseg.predict.images import predict_mask
from fcnseg.preprocessing import preprocess

DATA = {"size": 32, "num_images": 16}


#: The demo recipe's optimisation on a tiny net and tiny images, without its extras (class weights, bf16, cache).
TINY = {
    "model.width": 0.0625,
    "data_options": DATA,
    "val_data_options": {"num_images": 4},
    "threads": 1,
    "log_every": 1,
    "progress": False,
    "overlays": 0,
    "class_weights": None,
    "cpu_bf16": False,
    "cache_in_memory": False,
    "val_batch_size": 1,
    "device": "auto",
    "recipe.steps": 6,
    "recipe.val_every": 3,
    "recipe.batch_size": 4,
}


def tiny_config(**recipe_changes) -> TrainConfig:
    changes = {**TINY, **{f"recipe.{key}": value for key, value in recipe_changes.items()}}
    return build_config("demo", settings=list(changes.items()))


def _fixed_batch():
    dataset = open_dataset("synthetic", None, "train", **DATA)
    images, masks = zip(*(dataset[i] for i in range(8)), strict=True)
    return torch.stack(images), torch.stack(masks)


def _loss_of(model, images, masks):
    model.eval()
    with torch.no_grad():
        return segmentation_loss(model(preprocess(images, model.preprocessing)), masks).item()


def _records(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_a_few_steps_lower_the_loss(tmp_path):
    result = train(tiny_config(steps=12, val_every=12, lr=3e-3), tmp_path)
    images, masks = _fixed_batch()
    # score layers start at zero: every pixel gets uniform scores, a loss of exactly log(C)
    losses = [r["loss"] for r in _records(tmp_path) if "loss" in r]
    assert losses[0] == pytest.approx(math.log(7), rel=1e-5)
    trained = load_checkpoint(tmp_path / "last.safetensors").model
    assert _loss_of(trained, images, masks) < 0.8 * math.log(7)
    assert result.step == 12 and set(result.last_metrics) >= {"pixel_acc", "mean_acc", "mean_iu", "fw_iu", "iu"}
    for name in ("best.safetensors", "last.safetensors", "train_state.pt", "run.json"):
        assert (tmp_path / name).is_file(), name


def test_nan_loss_stops_with_a_clear_message_and_keeps_the_last_good_checkpoint(tmp_path):
    config = tiny_config(steps=20, val_every=100, lr=1e8, warmup_fraction=0.0, schedule="fixed")
    config.checkpoint_every = 1
    with pytest.raises(TrainingDiverged, match=r"loss is (nan|inf) at step (\d+).*last good checkpoint"):
        train(config, tmp_path)
    state = load_train_state(tmp_path / "train_state.pt")
    last = load_checkpoint(tmp_path / "last.safetensors")
    assert 1 <= state["step"] < 20 and last.extra["step"] == state["step"]
    assert all(torch.isfinite(t).all() for t in load_file(tmp_path / "last.safetensors").values())
    assert all(torch.isfinite(t).all() for t in state["model"].values())


@pytest.mark.parametrize("reduction, lr", [("mean", 0.05), ("sum", 5e-5)])
def test_gradient_accumulation_equals_the_batch_in_one_piece(tmp_path, reduction, lr):
    weights = []
    for accumulate in (1, 2):
        # random down-scaling pads with the ignore value: pieces hold different numbers of valid pixels
        config = tiny_config(
            steps=3,
            val_every=100,
            optimizer="sgd",
            lr=lr,
            reduction=reduction,
            momentum=0.9,
            augment=True,
            crop_size=32,
            scale_range=(0.4, 1.2),
        )
        config.accumulate = accumulate
        train(config, tmp_path / f"acc{accumulate}")
        weights.append(load_file(tmp_path / f"acc{accumulate}" / "last.safetensors"))
    one, two = weights
    assert one.keys() == two.keys()
    for key in one:
        torch.testing.assert_close(two[key], one[key], rtol=1e-4, atol=1e-6)
    # and the steps did move the weights (else equality would prove nothing)
    assert not torch.equal(one["score_fr.weight"], torch.zeros_like(one["score_fr.weight"]))


def test_validate_equals_per_image_prediction(tmp_path):
    config = tiny_config()
    config.val_batch_size = 3
    run = build_run(config, tmp_path, DistContext())
    with torch.no_grad():  # make the untrained net predict something other than one class
        run.model.score_pool3.weight.normal_(0, 1)
    metrics = validate(run)
    reference = ConfusionMatrix(7)
    for index in range(len(run.val_set)):
        image, mask = run.val_set[index]
        reference.update(predict_mask(run.model, image), mask)
    expected = reference.compute()
    for key in ("pixel_acc", "mean_acc", "mean_iu", "fw_iu"):
        assert metrics[key] == pytest.approx(expected[key], abs=1e-12), key


def test_cached_training_set_trains_exactly_like_the_generated_one(tmp_path):
    weights = []
    for cached in (False, True):
        config = tiny_config(steps=2, val_every=100, augment=True, crop_size=28)
        config.cache_in_memory = cached
        train(config, tmp_path / str(cached))
        weights.append(load_file(tmp_path / str(cached) / "last.safetensors"))
    assert all(torch.equal(weights[0][key], weights[1][key]) for key in weights[0])


def test_cpu_bf16_trains_under_autocast_where_the_cpu_has_bf16(tmp_path):
    from fcnseg.engine.train import cpu_has_native_bf16

    config = tiny_config(steps=2, val_every=2)
    config.cpu_bf16 = True
    run = build_run(config, tmp_path, DistContext())
    assert run.amp_dtype == (torch.bfloat16 if cpu_has_native_bf16() else None)
    config.cpu_bf16 = False
    assert build_run(config, tmp_path, DistContext()).amp_dtype is None
    config.cpu_bf16 = True
    result = train(config, tmp_path / "run")
    losses = [r["loss"] for r in _records(tmp_path / "run") if "loss" in r]
    assert losses[0] == pytest.approx(math.log(7), rel=1e-2) and math.isfinite(result.last_metrics["mean_iu"])


def test_train_command_passes_cpu_bf16_to_the_config(tmp_path):
    import argparse

    from fcnseg.commands import train as command

    parser = argparse.ArgumentParser()
    command.add_parser(parser.add_subparsers(dest="command"))

    def config(*flags: str) -> TrainConfig:
        return build_config(
            "modern", settings=command.settings_from_args(parser.parse_args(["train", "--out", "x", *flags]))
        )

    assert (config().cpu_bf16, config("--cpu-bf16").cpu_bf16) == (False, True)


def test_fast_paths_train_the_same_weights_as_the_plain_forward(tmp_path):
    weights = []
    for fast in (False, True):
        config = tiny_config(steps=3, val_every=100, optimizer="sgd", lr=0.05, momentum=0.9)
        config.fast_paths = fast
        run = build_run(config, tmp_path / f"probe{fast}", DistContext())
        assert run.model.fast_paths == fast
        train(config, tmp_path / str(fast))
        weights.append(load_file(tmp_path / str(fast) / "last.safetensors"))
    plain, fast = weights
    for key in plain:
        torch.testing.assert_close(fast[key], plain[key], rtol=1e-3, atol=1e-5, msg=key)
    assert plain["score_fr.weight"].abs().sum() > 0
