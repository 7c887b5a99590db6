"""Running fcnseg's commands from the tests: in process (one sub-command) or as a child process."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from fcnseg.commands import data as data_command

PROJECT_ROOT = Path(__file__).resolve().parents[1]


def run_data_command(argv: list[str]) -> int:
    """``fcnseg data ARGV`` in this process; returns its exit status."""
    parser = argparse.ArgumentParser()
    data_command.add_parser(parser.add_subparsers(dest="command"))
    return data_command.run(parser.parse_args(["data", *argv]))


# Random crops, scale and flips pad with the ignore value, so the ranks hold different numbers of
# valid pixels: the mean loss is only right if its normaliser is the global one. No dropout (its
# masks are drawn per rank, so they cannot match a one-process run).
TRAIN_ARGS = [
    "--recipe",
    "modern",
    "--model",
    "fcn8s",
    "--width",
    "0.0625",
    "--dropout",
    "0",
    "--data",
    "synthetic",
    "--data-option",
    "size=32",
    "--data-option",
    "num_images=8",
    "--steps",
    "4",
    "--batch-size",
    "4",
    "--crop-size",
    "28",
    "--lr",
    "0.02",
    "--val-every",
    "4",
    "--val-limit",
    "5",
    "--val-batch-size",
    "2",
    "--log-every",
    "1",
    "--threads",
    "1",
    "--workers",
    "0",
    "--seed",
    "11",
    "--no-progress",
    "--overlays",
    "0",
]


def subprocess_env() -> dict[str, str]:
    """The environment of a child ``python -m fcnseg``: this checkout first on the path, one thread."""
    return {**os.environ, "PYTHONPATH": str(PROJECT_ROOT), "OMP_NUM_THREADS": "1"}
