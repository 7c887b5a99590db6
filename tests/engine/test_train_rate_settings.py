"""What keeps training at the compute rate: batches of exactly the nominal size (crop_size "resize"), and decoded
items cached in memory when they fit (the default), with a switch to turn it off; neither changes what a run
computes, and a cached run resumes bit for bit."""

from __future__ import annotations

import argparse
import logging

import pytest
import torch
from safetensors.torch import load_file

from fcnseg.data import InMemoryDataset, open_dataset
from fcnseg.engine import build_config, data_cache, train
from fcnseg.engine.data_cache import cache_budget, cache_splits, in_memory
from fcnseg.engine.distributed import DistContext
from fcnseg.engine.state import load_train_state
from fcnseg.engine.train import build_run, train_crop_size, train_loader

NOMINAL = [24, 28]
#: The camvid recipe (crop_size "resize", scale 0.75-1.25, flips, jitter) on tiny synthetic images resized to NOMINAL.
TINY_CAMVID = [
    ("data", "synthetic"),
    ("root", None),
    ("data_options", {"size": 32, "num_images": 16, "resize": NOMINAL}),
    ("val_data_options", {"num_images": 4}),
    ("model.width", 0.0625),
    ("recipe.batch_size", 4),
    ("recipe.steps", 6),
    ("recipe.minutes", None),
    ("recipe.val_every", 3),
    ("threads", 1),
    ("log_every", 1),
    ("progress", False),
    ("overlays", 0),
    ("seed", 5),
]
ITEM_BYTES = 3 * 32 * 32 + 32 * 32  # a synthetic item: uint8 image and uint8 mask


def _config(*changes):
    return build_config("camvid", settings=[*TINY_CAMVID, *changes])


def _batch_shapes(config, tmp_path, count=8):
    run = build_run(config, tmp_path, DistContext())
    batches = train_loader(run)
    return [tuple(next(batches)[0].shape) for _ in range(count)]


# --- fixed-size batches -------------------------------------------------------------------------


def test_the_camvid_recipe_crops_to_the_size_its_data_is_resized_to():
    assert build_config("camvid").recipe.crop_size == "resize"


def test_crop_size_resize_gives_batches_of_exactly_the_nominal_size(tmp_path):
    assert set(_batch_shapes(_config(), tmp_path)) == {(4, 3, *NOMINAL)}


def test_crop_size_native_keeps_the_old_batches_padded_to_their_largest_scaled_image(tmp_path):
    shapes = _batch_shapes(_config(("recipe.crop_size", "native")), tmp_path)
    assert any(h > NOMINAL[0] and w > NOMINAL[1] for *_, h, w in shapes)


def test_crop_size_takes_a_side_a_pair_or_resize_which_is_native_for_data_at_its_native_size():
    assert _config(("recipe.crop_size", "[20,22]")).recipe.crop_size == (20, 22)
    assert train_crop_size(_config(("recipe.crop_size", "20"))) == 20
    assert train_crop_size(_config()) == tuple(NOMINAL)
    assert train_crop_size(_config(("data_options.resize", None))) is None
    with pytest.raises(ValueError, match="crop_size must be"):
        _config(("recipe.crop_size", "large"))


# --- the cache rule ----------------------------------------------------------------------------


def _splits():
    return (
        open_dataset("synthetic", None, "train", size=32, num_images=16),
        open_dataset("synthetic", None, "val", size=32, num_images=4),
    )


def test_the_budget_is_two_gib_or_a_quarter_of_the_memory_shared_by_the_processes():
    assert cache_budget(memory=4 * 2**30) == 2**30
    assert cache_budget(memory=64 * 2**30) == 2 * 2**30
    assert cache_budget(processes=2, memory=64 * 2**30) == 2**30


def test_splits_that_fit_are_cached_and_said_in_one_line(caplog):
    train_set, val_set = _splits()
    with caplog.at_level(logging.INFO, logger="fcnseg.train"):
        cached_train, cached_val = cache_splits(None, train_set, val_set)
    assert isinstance(cached_train, InMemoryDataset) and isinstance(cached_val, InMemoryDataset)
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1 and lines[0].startswith("cached in memory: train 16 images + val 4 images, 0.1 MiB decoded")
    assert cached_train.cached_bytes == 16 * ITEM_BYTES
    # the cache holds the items as the dataset gives them, before any augmentation
    for index in range(len(train_set)):
        assert all(torch.equal(a, b) for a, b in zip(cached_train[index], train_set[index], strict=True))


def test_the_budget_is_shared_train_first_and_a_split_over_it_is_read_from_disk(monkeypatch, caplog):
    train_set, val_set = _splits()
    monkeypatch.setattr(data_cache, "CACHE_LIMIT_BYTES", 16 * ITEM_BYTES + ITEM_BYTES)  # train fits, val does not
    with caplog.at_level(logging.INFO, logger="fcnseg.train"):
        cached_train, cached_val = cache_splits(None, train_set, val_set)
    assert isinstance(cached_train, InMemoryDataset) and cached_val is val_set
    assert "not cached in memory: val ~" in caplog.records[-1].getMessage()
    monkeypatch.setattr(data_cache, "CACHE_LIMIT_BYTES", ITEM_BYTES)
    assert cache_splits(None, train_set, val_set) == (train_set, val_set)
    assert all(
        isinstance(s, InMemoryDataset) for s in cache_splits(True, train_set, val_set)
    )  # true: whatever the size
    assert cache_splits(False, train_set, val_set) == (train_set, val_set)


def test_a_split_whose_items_prove_larger_than_the_budget_stops_being_read():
    train_set, _ = _splits()
    assert in_memory(train_set, limit=10 * ITEM_BYTES) is None
    assert len(in_memory(train_set, limit=16 * ITEM_BYTES)) == 16


def test_a_run_caches_by_default_and_no_cache_turns_it_off(tmp_path):
    from fcnseg.commands import train as command

    assert build_config("camvid").cache_in_memory is None  # the rule decides
    run = build_run(_config(), tmp_path, DistContext())
    assert isinstance(run.train_set, InMemoryDataset) and isinstance(run.val_set, InMemoryDataset)
    for off in (["--no-cache"], ["--set", "cache_in_memory=false"]):
        parser = argparse.ArgumentParser()
        command.add_parser(parser.add_subparsers())
        settings = command.settings_from_args(parser.parse_args(["train", "--out", "x", *off]))
        config = _config(*settings)
        assert config.cache_in_memory is False
        assert not isinstance(build_run(config, tmp_path, DistContext()).train_set, InMemoryDataset)
    assert "cache_in_memory" in command.RESUMABLE  # the same items either way: a resume may change it


def test_a_cached_run_killed_then_resumed_without_the_cache_ends_like_an_uninterrupted_cached_one(
    tmp_path, monkeypatch
):
    import importlib

    engine = importlib.import_module("fcnseg.engine.train")

    train(_config(("cache_in_memory", True)), tmp_path / "whole")
    step = engine.train_step

    def dies_at_step_5(run, batches):
        if run.step == 4:
            raise RuntimeError("killed")
        return step(run, batches)

    monkeypatch.setattr(engine, "train_step", dies_at_step_5)
    with pytest.raises(RuntimeError, match="killed"):
        train(_config(("cache_in_memory", True), ("checkpoint_every", 3)), tmp_path / "killed")
    monkeypatch.setattr(engine, "train_step", step)
    assert load_train_state(tmp_path / "killed" / "train_state.pt")["step"] == 3
    train(None, tmp_path / "killed", resume=True, changes=[("cache_in_memory", False)])  # resumes at step 3
    whole, resumed = (
        load_file(tmp_path / "whole" / "last.safetensors"),
        load_file(tmp_path / "killed" / "last.safetensors"),
    )
    assert whole.keys() == resumed.keys()
    assert all(torch.equal(whole[key], resumed[key]) for key in whole)
    # ...and the steps moved the weights, so equality means something
    assert not torch.equal(whole["score_fr.weight"], torch.zeros_like(whole["score_fr.weight"]))


# --- loading beside the compute ----------------------------------------------------------------


class _ThreadSpy(torch.utils.data.Dataset):
    """A dataset that notes torch's thread count whenever an item is read."""

    def __init__(self, dataset):
        self.dataset, self.threads = dataset, []

    def __len__(self):
        return len(self.dataset)

    def __getattr__(self, name):  # classes, ignore_index... as the dataset's
        return getattr(self.dataset, name)

    def __getitem__(self, index):
        self.threads.append(torch.get_num_threads())
        return self.dataset[index]


def test_batches_are_loaded_on_one_thread_and_the_compute_keeps_its_threads(tmp_path):
    from fcnseg.engine.train import determinism

    with determinism(2, torch.device("cpu")):
        run = build_run(_config(("threads", 2)), tmp_path, DistContext())
        run.train_set = spy = _ThreadSpy(run.train_set)
        batches = train_loader(run)
        for _ in range(3):
            next(batches)
            assert torch.get_num_threads() == 2
    assert spy.threads and set(spy.threads) == {1}
