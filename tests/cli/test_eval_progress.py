"""``fcnseg eval`` is not silent while it runs: progress lines on stderr off a terminal, a bar on one; the report on
stdout unchanged."""

from __future__ import annotations

import io
import re
import sys

import pytest
from dataset_files import CLASSES, PALETTE, hand_masks, write_folder_dataset

import fcnseg
from fcnseg.checkpoint import save_checkpoint
from fcnseg.cli import main
from fcnseg.data import open_dataset
from fcnseg.evaluation.loop import confusion_matrix
from fcnseg.evaluation.metrics import format_report

IMAGES = 5


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture
def evaluation(tmp_path):
    """A tiny folder dataset of IMAGES images and a checkpoint; returns the eval command's arguments."""
    model = fcnseg.create_model("fcn32s", num_classes=len(CLASSES), width=0.0625)
    checkpoint = save_checkpoint(tmp_path / "zero.safetensors", model, classes=CLASSES, palette=PALETTE)
    write_folder_dataset(tmp_path / "data", (hand_masks() * 3)[:IMAGES])
    return [
        "eval",
        str(checkpoint),
        "--data",
        "folder",
        "--root",
        str(tmp_path / "data"),
        "--split",
        "val",
        "--device",
        "cpu",
    ]


def progress_lines(err: str, label: str = "evaluate") -> list[str]:
    return re.findall(rf"^{label}: \d+/{IMAGES} batches.*$", err, flags=re.M)


def test_eval_off_a_terminal_prints_progress_lines_on_stderr_and_the_same_report(
    evaluation, tmp_path, capsys, monkeypatch
):
    assert main(evaluation + ["--no-progress"]) == 0
    quiet = capsys.readouterr()
    assert quiet.err == ""
    # the report, computed here without the command: stdout holds it, and only it, in every mode
    dataset = open_dataset("folder", tmp_path / "data", "val")
    matrix = confusion_matrix(fcnseg.load_checkpoint(evaluation[1]).model, dataset, len(CLASSES), progress=False)
    assert format_report(matrix.report(CLASSES)) in quiet.out

    assert main(evaluation) == 0  # default: a line every 30 s, and one at the end
    default = capsys.readouterr()
    assert default.out == quiet.out
    assert progress_lines(default.err) == default.err.splitlines()  # nothing else on stderr
    assert progress_lines(default.err)[-1].startswith(f"evaluate: {IMAGES}/{IMAGES} batches, ")

    monkeypatch.setenv("FCNSEG_PROGRESS_SECONDS", "0")  # a line at every batch
    assert main(evaluation) == 0
    every_batch = capsys.readouterr()
    assert every_batch.out == quiet.out and "\r" not in every_batch.err
    assert [line.split(",")[0] for line in progress_lines(every_batch.err)] == [
        f"evaluate: {i}/{IMAGES} batches" for i in range(1, IMAGES + 1)
    ]
    assert "ETA" in progress_lines(every_batch.err)[0]

    assert main(evaluation + ["--calibration"]) == 0  # the calibration pass reports its progress too
    calibrated = capsys.readouterr()
    assert len(progress_lines(calibrated.err, "calibrate")) == IMAGES and calibrated.out.startswith(quiet.out)


def test_eval_on_a_terminal_shows_a_bar(evaluation, capsys, monkeypatch):
    assert main(evaluation + ["--no-progress"]) == 0
    quiet = capsys.readouterr().out
    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    assert main(evaluation) == 0
    assert capsys.readouterr().out == quiet
    bar = terminal.getvalue()
    assert "\r" in bar and f"{IMAGES}/{IMAGES}" in bar and "evaluate" in bar and not progress_lines(bar)
