"""kill -9 in the middle of a CPU training run, then --resume: the same weights as an uninterrupted run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from fcnseg.engine.state import load_train_state

PROJECT_ROOT = Path(__file__).resolve().parents[2]
STEPS = 30
# Modern recipe with every random part switched on: crops, scale, flip, colour jitter, dropout.
TRAIN_ARGS = [
    "--recipe",
    "modern",
    "--model",
    "fcn8s",
    "--width",
    "0.0625",
    "--dropout",
    "0.5",
    "--data",
    "synthetic",
    "--data-option",
    "size=32",
    "--data-option",
    "num_images=12",
    "--steps",
    str(STEPS),
    "--batch-size",
    "2",
    "--crop-size",
    "24",
    "--lr",
    "0.01",
    "--val-every",
    "10",
    "--val-limit",
    "2",
    "--checkpoint-every",
    "3",
    "--log-every",
    "1",
    "--threads",
    "1",
    "--workers",
    "0",
    "--seed",
    "3",
    "--no-progress",
    "--overlays",
    "0",
]


def _fcnseg(*args: str) -> list[str]:
    return [sys.executable, "-m", "fcnseg", "train", *args]


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(PROJECT_ROOT), "OMP_NUM_THREADS": "1"}


def _state_step(path: Path) -> int:
    try:
        return int(load_train_state(path)["step"])
    except Exception:  # not written yet, or being replaced
        return -1


@pytest.mark.slow
def test_kill_9_then_resume_ends_with_the_same_weights(tmp_path):
    killed, whole = tmp_path / "killed", tmp_path / "whole"
    process = subprocess.Popen(
        _fcnseg("--out", str(killed), *TRAIN_ARGS), env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    reference = subprocess.Popen(
        _fcnseg("--out", str(whole), *TRAIN_ARGS), env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        deadline = time.monotonic() + 240
        while _state_step(killed / "train_state.pt") < 6:  # at least two checkpoints, then kill mid-run
            assert process.poll() is None, process.stderr.read().decode()
            assert time.monotonic() < deadline, "the training run never wrote a checkpoint"
            time.sleep(0.02)
        os.kill(process.pid, signal.SIGKILL)
        process.wait()
    finally:
        if process.poll() is None:
            process.kill()
    stopped_at = _state_step(killed / "train_state.pt")
    assert 6 <= stopped_at < STEPS, f"the run was not killed in the middle (state at step {stopped_at})"
    logged = [json.loads(line) for line in (killed / "metrics.jsonl").read_text().splitlines()]

    resumed = subprocess.run(_fcnseg("--resume", str(killed)), env=_env(), capture_output=True, text=True, timeout=240)
    assert resumed.returncode == 0, resumed.stderr
    assert reference.wait(timeout=240) == 0, reference.stderr.read().decode()

    a, b = load_file(killed / "last.safetensors"), load_file(whole / "last.safetensors")
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), f"{key} differs after resume"
    state_a, state_b = load_train_state(killed / "train_state.pt"), load_train_state(whole / "train_state.pt")
    assert state_a["step"] == state_b["step"] == STEPS
    for key, buffers in state_b["optimizer"]["state"].items():
        assert torch.equal(state_a["optimizer"]["state"][key]["momentum_buffer"], buffers["momentum_buffer"])
    # the log of the resumed run is the uninterrupted log: the killed run's extra lines were dropped
    log_a = (killed / "metrics.jsonl").read_text().splitlines()
    log_b = (whole / "metrics.jsonl").read_text().splitlines()

    def strip(lines):
        timing = ("time", "images_per_s", "train_seconds")
        return [{k: v for k, v in json.loads(line).items() if k not in timing} for line in lines]

    assert strip(log_a) == strip(log_b)
    assert len(logged) >= stopped_at  # the kill came after those records


def test_resume_of_a_folder_that_is_not_a_run_is_a_clear_error(tmp_path, capsys):
    from fcnseg.cli import main

    assert main(["train", "--resume", str(tmp_path)]) == 2
    error = capsys.readouterr().err
    assert "not a run directory" in error and "run.json" in error


def test_resume_without_a_state_file_is_a_clear_error(tmp_path, capsys):
    from fcnseg.cli import main
    from fcnseg.engine.train import RUN_FILE, TrainConfig

    config = TrainConfig(model={"name": "fcn8s", "width": 0.0625}, data_options={"size": 32, "num_images": 4})
    (tmp_path / RUN_FILE).write_text(json.dumps(config.to_dict()))
    assert main(["train", "--resume", str(tmp_path)]) == 2
    assert "no training state to resume from" in capsys.readouterr().err


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> Path:
    """The reference: the same run as the signal tests, never stopped."""
    out = tmp_path_factory.mktemp("whole") / "run"
    done = subprocess.run(
        _fcnseg("--out", str(out), *TRAIN_ARGS), env=_env(), capture_output=True, text=True, timeout=240
    )
    assert done.returncode == 0, done.stderr
    return out


@pytest.mark.slow
@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_saves_the_state_and_resume_ends_with_the_same_weights(tmp_path, uninterrupted, sig, code):
    out = tmp_path / "run"
    # No periodic checkpoint before the end: whatever is saved, the signal saved.
    args = list(TRAIN_ARGS)
    args[args.index("--checkpoint-every") + 1] = "1000"
    process = subprocess.Popen(
        _fcnseg("--out", str(out), *args), env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    deadline = time.monotonic() + 240
    log = out / "metrics.jsonl"
    while not (log.is_file() and sum(1 for line in log.read_text().splitlines() if '"loss"' in line) >= 4):
        assert process.poll() is None, process.stderr.read()
        assert time.monotonic() < deadline, "the training run never logged a step"
        time.sleep(0.02)
    process.send_signal(sig)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == code, stderr
    assert "Traceback" not in stderr and f"fcnseg train --resume {out}" in stderr
    stopped_at = _state_step(out / "train_state.pt")
    assert 4 <= stopped_at < STEPS and not list(out.glob(".*.tmp"))
    resumed = subprocess.run(_fcnseg("--resume", str(out)), env=_env(), capture_output=True, text=True, timeout=240)
    assert resumed.returncode == 0, resumed.stderr
    assert f"resuming at step {stopped_at}" in resumed.stderr
    a, b = load_file(out / "last.safetensors"), load_file(uninterrupted / "last.safetensors")
    assert all(torch.equal(a[key], b[key]) for key in b)


def test_resume_sweeps_the_temporary_files_of_interrupted_writes(tmp_path, uninterrupted):
    import shutil

    from fcnseg.cli import main

    run = tmp_path / "run"
    shutil.copytree(uninterrupted, run)
    leftovers = [run / ".last.safetensors.abc123.tmp", run / ".train_state.pt.x9.tmp"]
    for path in leftovers:
        path.write_bytes(b"half a file")
    assert main(["train", "--resume", str(run), "--steps", str(STEPS + 2), "--log-every", "1"]) == 0
    assert not any(path.exists() for path in leftovers)
    assert load_train_state(run / "train_state.pt")["step"] == STEPS + 2  # --steps extended the finished run
