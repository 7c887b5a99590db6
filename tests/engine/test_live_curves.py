"""fcnseg train --tensorboard: event files in the run folder hold the loss, the learning rate, each validation's
metrics, per-class IU and images; a resumed run continues the same curves, with no step written twice."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from fcnseg.cli import main

TINY = [
    "--recipe",
    "demo",
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
    "--batch-size",
    "2",
    "--log-every",
    "1",
    "--no-progress",
    "--set",
    "cpu_bf16=false",
]


def _events(run: Path) -> EventAccumulator:
    events = EventAccumulator(str(run / "tensorboard"), size_guidance={"scalars": 0, "images": 0})
    events.Reload()
    return events


def _records(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def _series(events: EventAccumulator, tag: str) -> list[tuple[int, float]]:
    return [(event.step, event.value) for event in events.Scalars(tag)]


def test_tensorboard_holds_the_loss_lr_validation_metrics_per_class_iu_and_images(tmp_path):
    run = tmp_path / "run"
    assert (
        main(["train", "--out", str(run), *TINY, "--steps", "4", "--evals", "2", "--overlays", "2", "--tensorboard"])
        == 0
    )
    events, records = _events(run), _records(run)
    losses = [(r["step"], r["loss"]) for r in records if "loss" in r]
    assert [step for step, _ in _series(events, "train/loss")] == [1, 2, 3, 4]
    assert [value for _, value in _series(events, "train/loss")] == [value for _, value in losses]  # float32 exact
    assert [step for step, _ in _series(events, "train/lr")] == [1, 2, 3, 4]
    vals = [r for r in records if "val" in r]
    got = _series(events, "val/mean_iu")
    assert [step for step, _ in got] == [r["step"] for r in vals] == [2, 4]
    assert [round(value, 6) for _, value in got] == [round(r["val"]["mean_iu"], 6) for r in vals]
    tags = events.Tags()
    assert {"val/pixel_acc", "val/mean_acc", "val/fw_iu"} <= set(tags["scalars"])
    per_class = [tag for tag in tags["scalars"] if tag.startswith("val/iu/")]
    measured = [name for name, iu in zip(_class_names(run), vals[-1]["val"]["iu"], strict=True) if iu is not None]
    assert per_class and sorted(per_class) == sorted(f"val/iu/{name}" for name in measured)  # by class name
    assert sorted(tags["images"]) == ["val_images/0", "val_images/1"]
    image = events.Images("val_images/0")[-1]
    assert image.step == 4 and image.width == 3 * 32 and image.height == 32  # image | truth | prediction


def _class_names(run: Path) -> list[str]:
    from fcnseg.checkpoint import load_checkpoint

    return list(load_checkpoint(run / "last.safetensors").classes)


def test_a_resumed_run_continues_the_curves_without_writing_a_step_twice(tmp_path):
    run = tmp_path / "run"
    assert (
        main(
            ["train", "--out", str(run), *TINY, "--steps", "3", "--val-every", "3", "--overlays", "0", "--tensorboard"]
        )
        == 0
    )
    saved_at_3 = tmp_path / "state_at_3.pt"
    shutil.copy(run / "train_state.pt", saved_at_3)
    assert main(["train", "--resume", str(run), "--steps", "6"]) == 0
    assert [step for step, _ in _series(_events(run), "train/loss")] == [1, 2, 3, 4, 5, 6]
    # A kill after step 6's events but before its state: the state is back at step 3, the events run to 6.
    shutil.copy(saved_at_3, run / "train_state.pt")
    assert main(["train", "--resume", str(run)]) == 0
    events, records = _events(run), _records(run)
    losses = _series(events, "train/loss")
    assert [step for step, _ in losses] == [1, 2, 3, 4, 5, 6]  # steps 4..6 once, from the last writer
    assert [value for _, value in losses] == [r["loss"] for r in records if "loss" in r]
    assert [step for step, _ in _series(events, "val/mean_iu")] == [3, 6]


def test_tensorboard_without_the_package_is_one_clear_error(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "tensorboard", None)  # as if it were not installed
    run = tmp_path / "run"
    assert main(["train", "--out", str(run), *TINY, "--steps", "2", "--tensorboard"]) == 2
    err = capsys.readouterr().err.strip()
    assert "fcnseg[tensorboard]" in err and len(err.splitlines()) == 1
    assert not run.exists()
