"""benchmarks/choose_recipe.py: each row trains the settings it names over its frozen base recipe, gets the
steps its probe fits in the budget, and the table averages a row's seeds."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
SHIPPED_CAMVID = Path(__file__).resolve().parents[2] / "fcnseg" / "recipes" / "camvid.json"


@pytest.fixture
def choose_recipe(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    import choose_recipe

    return choose_recipe


def _config(recipe: Path, arguments: list[str]):
    from fcnseg.commands import train as command
    from fcnseg.engine import build_config

    parser = argparse.ArgumentParser()
    command.add_parser(parser.add_subparsers(dest="command"))
    settings = command.settings_from_args(parser.parse_args(["train", "--out", "x", *arguments]))
    return build_config(str(recipe), settings=settings)


@pytest.mark.parametrize(
    "row, model, loss, weights, size, crop",
    [
        ("vgg_ce_180", "fcn8s", "ce", None, [180, 240], "resize"),
        ("mnv3_ce_180", "fcn8s_mobilenet_v3_large", "ce", None, [180, 240], "resize"),
        ("r18_ce_180", "fcn8s_resnet18", "ce", None, [180, 240], "resize"),
        ("mnv3_thin_180", "fcn8s_mobilenet_v3_large", "focal", "effective-number", [180, 240], "resize"),
        ("mnv3_ce_360", "fcn8s_mobilenet_v3_large", "ce", None, [360, 480], "resize"),
        ("mnv3_ce_180_native", "fcn8s_mobilenet_v3_large", "ce", None, [180, 240], None),
    ],
)
def test_each_row_trains_the_settings_it_names(choose_recipe, tmp_path, row, model, loss, weights, size, crop):
    config = _config(choose_recipe.base_recipe(tmp_path), choose_recipe.settings(row))
    assert config.model["name"] == model
    assert (config.recipe.loss, config.class_weights) == (loss, weights)
    assert config.data_options["resize"] == size and config.recipe.crop_size == crop
    assert choose_recipe.full_size(row) == (size == [360, 480])


def test_the_base_recipe_is_a_valid_preset_named_camvid(choose_recipe, tmp_path):
    config = _config(choose_recipe.base_recipe(tmp_path), [])
    assert config.recipe.name == "camvid" and config.data == "folder"
    assert json.loads((tmp_path / "base_recipe.json").read_text()) == choose_recipe.BASE_RECIPE


def test_steps_fill_the_budget_at_each_rows_probed_rate(choose_recipe):
    probes = {"mnv3_ce_180": {"s_per_step": 0.4}, "mnv3_ce_360": {"s_per_step": 1.5}}
    assert choose_recipe.steps_for("mnv3_ce_180", probes, 10) == 1500
    assert choose_recipe.steps_for("mnv3_ce_360", probes, 10) == 400
    # the crop's control trains as many steps as the row it is compared with, not as many as fit the time
    assert choose_recipe.steps_for("mnv3_ce_180_native", probes, 10) == 1500


def test_the_summary_averages_a_rows_seeds(choose_recipe):
    def record(mean_iu, thin):
        figures = {"mean_iu": mean_iu, "thin_mean_iu": thin}
        return {"steps": 100, **{evaluation: figures for evaluation in choose_recipe.EVALUATIONS}}

    rows = {"mnv3_ce_180_s0": record(0.4, 0.1), "mnv3_ce_180_s1": record(0.5, 0.2), "vgg_ce_180_s0": record(0.3, 0.0)}
    summary = choose_recipe.summary(rows)
    assert summary["mnv3_ce_180"]["seeds"] == 2
    assert summary["mnv3_ce_180"]["unseen mean_iu"] == pytest.approx(0.45)
    assert summary["mnv3_ce_180"]["val thin_mean_iu"] == pytest.approx(0.15)
    assert summary["vgg_ce_180"]["seeds"] == 1 and "mnv3_ce_180_native" not in summary
