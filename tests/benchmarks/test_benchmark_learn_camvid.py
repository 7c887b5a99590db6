"""benchmarks/learn_camvid.py is a thin caller of the engine: its run is `fcnseg train --recipe camvid` with the
same settings, so the curve it records is the curve `fcnseg train` gives."""

from __future__ import annotations

import argparse
import shlex
from pathlib import Path

import pytest
import torch

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


@pytest.mark.parametrize(
    "extra",
    [
        [],
        ["--cpu-bf16", "--class-weights", "median-frequency", "--minutes", "12"],
        ["--steps", "300", "--width", "0.5", "--resolution", "90x120"],
    ],
)
def test_the_benchmark_trains_what_the_command_line_trains(extra, monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    import learn_camvid

    from fcnseg.commands import train as command
    from fcnseg.engine import build_config

    args = learn_camvid.parse_args(extra)
    settings = learn_camvid.settings_for(args, torch.device("cpu"))
    benchmark = build_config("camvid", settings=settings)
    line = "train --recipe camvid --out x " + " ".join(f"--set {k}={shlex.quote(_text(v))}" for k, v in settings)
    parser = argparse.ArgumentParser()
    command.add_parser(parser.add_subparsers(dest="command"))
    cli = build_config("camvid", settings=command.settings_from_args(parser.parse_args(shlex.split(line))))
    assert cli.to_dict() == benchmark.to_dict()


def _text(value) -> str:
    import json

    return "none" if value is None else value if isinstance(value, str) else json.dumps(value)
