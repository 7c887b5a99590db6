"""A run's length (steps or clock) decides when it validates, stops and what its progress says: the recipe's
evals hold for step-counted runs, each validation says its mean IU in one line, a clocked run stops at its budget."""

from __future__ import annotations

import io
import json
import logging
import math
import re
import sys
import time

import pytest

from fcnseg.cli import build_parser, main
from fcnseg.commands.train import settings_from_args
from fcnseg.engine import build_config, train
from fcnseg.engine.run_length import CLOCK_RESOLUTION, Position, RunLength
from fcnseg.progress import Progress

TRAIN_MODULE = sys.modules["fcnseg.engine.train"]  # `fcnseg.engine.train` is the function; this is its module
TINY = [
    ("model.width", 0.0625),
    ("data_options", {"size": 32, "num_images": 8}),
    ("val_data_options", {"num_images": 2}),
    ("threads", 1),
    ("progress", False),
    ("overlays", 0),
    ("class_weights", None),
    ("cpu_bf16", False),
    ("recipe.batch_size", 2),
    ("log_every", 1),
]
TINY_FLAGS = [
    "--width",
    "0.0625",
    "--data",
    "synthetic",
    "--data-option",
    "size=32",
    "--data-option",
    "num_images=8",
    "--set",
    "val_data_options.num_images=2",
    "--set",
    "threads=1",
    "--overlays",
    "0",
    "--batch-size",
    "2",
    "--set",
    "class_weights=none",
    "--set",
    "cpu_bf16=false",
    "--crop-size",
    "native",
    "--set",
    "recipe.amp=false",
]


def _config(recipe: str, *flags: str):
    """The TrainConfig that ``fcnseg train --recipe RECIPE FLAGS`` builds (the command's own layering)."""
    args = build_parser().parse_args(["train", "--out", "x", *flags])
    return build_config(recipe, settings=settings_from_args(args))


def _validated_steps(length: RunLength) -> list[int]:
    """The steps a step-counted run validates at, as the loop decides (due, or the end)."""
    steps, position = [], Position(0, 0.0)
    while not length.finished(position):
        after = Position(position.step + 1, 0.0)
        if length.validation_due(position, after) or length.finished(after):
            steps.append(after.step)
        position = after
    return steps


def test_the_recipes_evals_hold_for_a_step_counted_run():
    length = RunLength.of(_config("camvid", "--steps", "2998").recipe)  # camvid: evals 10, no val_every
    steps = _validated_steps(length)
    assert len(steps) == 10 and steps[-1] == 2998  # not 1000 and 2000 only
    gaps = [b - a for a, b in zip([0] + steps, steps, strict=False)]
    assert all(299 <= gap <= 301 for gap in gaps), gaps  # evenly spaced
    assert steps == [math.ceil(2998 * i / 10) for i in range(1, 11)]  # each at the first step at or past its moment


def test_an_explicit_val_every_still_wins_and_evals_alone_override_a_recipes_val_every():
    assert _validated_steps(RunLength.of(_config("camvid", "--steps", "2998", "--val-every", "1000").recipe)) == [
        1000,
        2000,
        2998,
    ]
    assert _validated_steps(
        RunLength.of(_config("camvid", "--steps", "2998", "--val-every", "1000", "--evals", "4").recipe)
    ) == [1000, 2000, 2998]
    assert _validated_steps(RunLength.of(_config("demo").recipe)) == [250, 500, 750, 1000]  # the demo's val_every
    assert _validated_steps(RunLength.of(_config("modern", "--steps", "100", "--evals", "4").recipe)) == [
        25,
        50,
        75,
        100,
    ]
    assert _validated_steps(RunLength.of(_config("modern", "--steps", "100", "--set", "evals=4").recipe)) == [
        25,
        50,
        75,
        100,
    ]
    assert _config("modern").recipe.val_every == 1000 and _config("camvid").recipe.val_every is None
    assert _validated_steps(RunLength(steps=3, evals=10)) == [1, 2, 3]  # more evals than steps: every step


def test_a_clocked_length_schedules_validates_and_stops_by_the_training_seconds():
    length = RunLength.of(_config("camvid", "--minutes", "2", "--evals", "4").recipe)
    assert length.clocked and length.total == 120.0 and length.describe() == "2 minutes of training"
    assert not length.finished(Position(500, 119.9)) and length.finished(Position(501, 120.0))
    assert length.validation_due(Position(9, 29.9), Position(10, 30.0))  # the first of 4 moments: 30 s
    assert not length.validation_due(Position(10, 30.0), Position(11, 59.0))
    assert length.validation_due(Position(11, 59.0), Position(12, 95.0))  # one step over two moments: one validation
    assert length.schedule_steps == CLOCK_RESOLUTION
    assert length.schedule_moment(Position(3, 60.0)) == CLOCK_RESOLUTION // 2
    assert length.schedule_moment(Position(3, 500.0)) == CLOCK_RESOLUTION - 1
    assert length.where(Position(812, 36.0)) == "step 812, 36.0/120 s"
    assert RunLength(seconds=1800.0).where(Position(812, 360.0)) == "step 812, 6.0/30 min"
    assert RunLength(steps=2998).where(Position(300, 1.0)) == "step 300/2998"
    with pytest.raises(ValueError, match="not both or neither"):
        RunLength(steps=3, seconds=4.0)


def test_a_step_counted_run_validates_at_the_recipes_evals(tmp_path):
    out = tmp_path / "run"
    train(
        build_config(
            "camvid",
            settings=TINY
            + [
                ("data", "synthetic"),
                ("data_options.resize", None),
                ("recipe.minutes", None),
                ("recipe.steps", 6),
                ("recipe.evals", 3),
                ("recipe.amp", False),
            ],
        ),
        out,
    )
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if "val" in r] == [2, 4, 6]


def test_each_validation_says_its_mean_iu_in_one_line_off_a_terminal(tmp_path, caplog):
    out = tmp_path / "run"
    with caplog.at_level(logging.INFO, logger="fcnseg.train"):
        assert (
            main(
                [
                    "train",
                    "--recipe",
                    "demo",
                    "--out",
                    str(out),
                    "--steps",
                    "6",
                    "--evals",
                    "3",
                    "--no-progress",
                    *TINY_FLAGS,
                ]
            )
            == 0
        )
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("val:")]
    recorded = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    vals = [r for r in recorded if "val" in r]
    assert len(lines) == len(vals) == 3
    best = -1.0
    for line, record in zip(lines, vals, strict=True):
        best = max(best, record["val"]["mean_iu"])
        expected = (
            f"val: step {record['step']}/6, mean IU {record['val']['mean_iu']:.4f} (best {best:.4f}), "
            f"pixel acc {record['val']['pixel_acc']:.3f}, "
        )
        assert line.startswith(expected) and re.fullmatch(r"\d+\.\d s", line[len(expected) :]), line


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_on_a_terminal_the_validation_line_does_not_break_the_progress_bar(tmp_path, monkeypatch):
    terminal = _Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    handler = logging.StreamHandler(terminal)  # what `fcnseg train` sets up: log lines on stderr
    root = logging.getLogger()
    root.addHandler(handler)
    monkeypatch.setattr(root, "level", logging.INFO)
    try:
        train(
            build_config("demo", settings=TINY + [("recipe.steps", 4), ("recipe.val_every", 2), ("progress", True)]),
            tmp_path / "run",
        )
    finally:
        root.removeHandler(handler)
    shown = terminal.getvalue()
    assert shown.count("val: step") == 2 and "train:" in shown
    assert not re.search(r"[^\r\n]val: step", shown)  # each at the start of its own line, never after the bar's text
    assert re.search(r"\rval: step 2/4, mean IU [0-9.]+ \(best [0-9.]+\)[^\n]*\n", shown)


def _slow_steps(monkeypatch, seconds: float) -> None:
    step = TRAIN_MODULE.train_step

    def slow(run, batches):
        loss = step(run, batches)
        time.sleep(seconds)
        return loss

    monkeypatch.setattr(TRAIN_MODULE, "train_step", slow)


def test_a_clocked_run_whose_step_is_slower_than_its_budget_stops_and_says_nothing_negative(
    tmp_path, monkeypatch, capsys
):
    monkeypatch.setenv("FCNSEG_PROGRESS_SECONDS", "0")  # a line at every update
    _slow_steps(monkeypatch, 0.6)
    out = tmp_path / "run"
    result = train(build_config("demo", settings=TINY + [("recipe.minutes", 0.005), ("progress", True)]), out)
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert result.step == 1 and records[-1]["step"] == 1  # the first step spent the 0.3 s budget: no second one
    _check_progress_lines(capsys.readouterr().err)


def _check_progress_lines(err: str) -> None:
    lines = [line for line in err.splitlines() if line.startswith("train:")]
    assert lines, "no progress line"
    for line in lines:
        assert "-" not in line.split("elapsed")[-1].split(";")[0], line  # never a negative time left
        assert not line.rstrip().endswith(";"), line  # no bare '; ' before the first loss


def test_a_clocked_run_ends_less_than_a_step_past_its_budget(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("FCNSEG_PROGRESS_SECONDS", "0")  # a line at every update
    _slow_steps(monkeypatch, 0.4)
    out = tmp_path / "run"
    train(
        build_config("demo", settings=TINY + [("recipe.minutes", 0.02), ("progress", True), ("log_every", 2)]), out
    )  # 1.2 s: about three steps; the first line comes before any loss
    _check_progress_lines(capsys.readouterr().err)
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if '"loss"' in line]
    seconds = [0.0] + [r["train_seconds"] for r in records]
    steps = [b - a for a, b in zip(seconds, seconds[1:], strict=False)]
    assert seconds[-2] < 1.2 <= seconds[-1]  # the last step started before the budget was spent and reached it
    assert seconds[-1] - 1.2 < steps[-1]  # crossing it by less than that step's own duration


def test_progress_lines_clamp_what_is_left_and_show_no_empty_postfix():
    progress = Progress(120.0, label="train", unit="s", stream=io.StringIO())
    progress.done = 131.0  # a last step that ended past the budget
    line = progress.format_line(progress.started + 200.0)
    assert line == "train: 131/120 s, 3m20s elapsed"  # nothing left: no ETA at all, never a negative one
    progress.set_postfix(loss="0.51")
    assert progress.format_line(progress.started + 200.0).endswith("elapsed; loss 0.51")


def test_run_json_is_written_once_per_start_and_a_resume_that_changes_the_length_keeps_the_splits(
    tmp_path, monkeypatch
):
    out = tmp_path / "run"
    writes = []
    write = TRAIN_MODULE.atomic_write_text
    monkeypatch.setattr(
        TRAIN_MODULE,
        "atomic_write_text",
        lambda path, text: (writes.append(path.name) if path.name == "run.json" else None, write(path, text)),
    )
    train(
        build_config(
            "demo",
            settings=TINY
            + [
                ("recipe.steps", 2),
                ("data", "folder"),
                ("root", str(_folder(tmp_path))),
                ("data_options", {}),
                ("val_data_options", {}),
            ],
        ),
        out,
    )
    recorded = json.loads((out / "run.json").read_text())
    assert writes == ["run.json"] and recorded["splits"]["train"] is not None
    train(None, out, resume=True, changes=[("recipe.steps", 3)])
    resumed = json.loads((out / "run.json").read_text())
    assert writes == ["run.json"] * 2 and resumed["recipe"]["steps"] == 3
    assert resumed["splits"] == recorded["splits"]  # how the splits were made is not lost by the change


def _folder(tmp_path):
    """A folder dataset without split files: fcnseg splits it itself (and records how in run.json)."""
    import numpy as np
    from PIL import Image

    root = tmp_path / "folder"
    for sub in ("images", "masks"):
        (root / sub).mkdir(parents=True)
    rng = np.random.default_rng(0)
    for index in range(6):
        Image.fromarray(rng.integers(0, 255, (24, 24, 3), dtype=np.uint8)).save(root / "images" / f"{index}.png")
        mask = np.zeros((24, 24), np.uint8)
        mask[4:12, 4:12] = 1
        Image.fromarray(mask).save(root / "masks" / f"{index}.png")
    (root / "classes.txt").write_text("background\nthing\n")
    return root
