"""benchmarks/small_objects.py: each row keeps the length it was trained for, and a staged row says where it began."""

from __future__ import annotations

import json
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


def test_rows_keep_their_own_length_and_staged_rows_name_their_start(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    import small_objects

    split = {"mean_iu": 0.5, "mean_acc": 0.6, "thin_mean_iu": 0.1, "small_mean_iu": 0.2, "boundary_iou": 0.3}
    path = tmp_path / "results.json"
    path.write_text(
        json.dumps(
            {
                "config": {"steps": 1000},
                "rows": {
                    "baseline_s0": {
                        "seconds_per_step": 1.0,
                        "val": split,
                        "unseen": split,
                    },  # written before rows had "steps"
                    "fcn4s_staged_s0": {
                        "seconds_per_step": 1.4,
                        "steps": 500,
                        "init_from": "baseline",
                        "val": split,
                        "unseen": split,
                    },
                },
            }
        )
    )
    results = small_objects.read_results(path)
    assert results["rows"]["baseline_s0"]["steps"] == 1000 and results["rows"]["fcn4s_staged_s0"]["steps"] == 500
    lines = {line.split("|")[1].strip(): line for line in small_objects.table(results).splitlines()[2:]}
    assert "| 1000 " in lines["baseline_s0"] and "+500 from baseline" in lines["fcn4s_staged_s0"]
    assert small_objects.ROWS["fcn4s_staged"] == {"init_from": "baseline", "set": ["model.name=fcn4s"]}
    assert small_objects.ROWS["fcn8s_continued"]["init_from"] == "baseline"  # the control starts from the same weights


def test_a_staged_row_without_its_start_is_one_clear_stop(tmp_path, monkeypatch):
    import argparse

    import pytest

    monkeypatch.syspath_prepend(str(BENCHMARKS))
    import small_objects

    args = argparse.Namespace(runs=tmp_path, steps=5, threads=1, cpu_bf16=False)
    with pytest.raises(SystemExit, match="train the baseline row"):
        small_objects.train_row("fcn4s_staged", 0, args, tmp_path / "train.txt")
