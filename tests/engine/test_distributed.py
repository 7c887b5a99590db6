"""``torchrun --nproc-per-node 2`` (gloo, CPU) trains the same weights as one process with the same global batch."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from command_runs import TRAIN_ARGS
from command_runs import subprocess_env as _env
from safetensors.torch import load_file

PROJECT_ROOT = Path(__file__).resolve().parents[2]


def _records(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.slow
@pytest.mark.skipif(
    not torch.distributed.is_available() or not torch.distributed.is_gloo_available(),
    reason="torch.distributed with gloo is not available",
)
def test_two_gloo_processes_match_one_process(tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    single = subprocess.Popen(
        [sys.executable, "-m", "fcnseg", "train", "--out", str(one), *TRAIN_ARGS],
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    pair = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc-per-node",
            "2",
            "-m",
            "fcnseg",
            "train",
            "--out",
            str(two),
            *TRAIN_ARGS,
        ],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    output, _ = single.communicate(timeout=300)
    assert single.returncode == 0, output
    assert pair.returncode == 0, pair.stdout + pair.stderr

    a, b = load_file(one / "last.safetensors"), load_file(two / "last.safetensors")
    initial_score = torch.zeros_like(a["score_fr.weight"])
    assert not torch.equal(a["score_fr.weight"], initial_score)  # the steps changed the weights
    for key in a:
        torch.testing.assert_close(b[key], a[key], rtol=1e-4, atol=1e-6, msg=f"{key} differs")

    # only rank 0 wrote: one log line per record; the losses and the (all-reduced) metrics agree
    log_one, log_two = _records(one), _records(two)
    assert [sorted(r) for r in log_one] == [sorted(r) for r in log_two]
    for r1, r2 in zip(log_one, log_two, strict=True):
        if "loss" in r1:
            assert r2["loss"] == pytest.approx(r1["loss"], rel=1e-5)
    val_one, val_two = log_one[-1]["val"], log_two[-1]["val"]
    assert val_two["mean_iu"] == pytest.approx(val_one["mean_iu"], abs=1e-3)
    assert val_two["pixel_acc"] == pytest.approx(val_one["pixel_acc"], abs=1e-3)
    state = torch.load(two / "train_state.pt", weights_only=True)
    assert state["world_size"] == 2 and len(state["rng"]) == 2
