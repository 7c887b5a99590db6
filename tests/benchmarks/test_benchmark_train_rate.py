"""benchmarks/train_rate.py: its variants are the settings they say (before: native size, no cache; after: the
recipe's defaults), and its summary divides the pure step's time by each variant's."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


@pytest.fixture
def train_rate(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    import train_rate

    return train_rate


def _config(arguments):
    from fcnseg.commands import train as command
    from fcnseg.engine import build_config

    parser = argparse.ArgumentParser()
    command.add_parser(parser.add_subparsers(dest="command"))
    return build_config(
        "camvid", settings=command.settings_from_args(parser.parse_args(["train", "--out", "x", *arguments]))
    )


@pytest.mark.parametrize(
    "variant, crop, cache",
    [("before", None, False), ("after", "resize", None), ("crop_only", "resize", False), ("cache_only", None, None)],
)
def test_each_variant_trains_the_settings_it_names(train_rate, variant, crop, cache):
    config = _config([*train_rate.MODEL, *train_rate.VARIANTS[variant]])
    assert (config.recipe.crop_size, config.cache_in_memory) == (crop, cache)
    assert config.model["name"] == "fcn8s_mobilenet_v3_large" and config.model["width"] == 1


def test_the_summary_is_the_pure_step_over_each_variant_in_medians_of_rounds(train_rate):
    rounds = [
        {
            "pure": {"s_per_step": p},
            "before": {"s_per_step": b, "outside_loop_s": 5.0},
            "after": {"s_per_step": a, "outside_loop_s": 9.0},
        }
        for p, b, a in [(0.4, 0.6, 0.44), (0.5, 0.7, 0.5), (0.41, 0.62, 0.45)]
    ]
    summary = train_rate.summarise(rounds, ["before", "after"])
    assert summary["pure"] == {"s_per_step": 0.41, "steps_per_30_min": round(1800 / 0.41)}
    assert summary["before"]["pure_over_train"] == round(0.41 / 0.62, 3)
    assert summary["after"]["steps_per_30_min"] == round(1800 / 0.45) and summary["after"]["outside_loop_s"] == 9.0
