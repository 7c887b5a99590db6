"""``fcnseg data``: checks every item and prints class statistics."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from command_runs import run_data_command as run
from PIL import Image


def test_prints_weights_as_json(capsys) -> None:
    code = run(["--split", "val", "--data-option", "num_images=4", "--data-option", "size=32", "--json"])
    assert code == 0
    report = json.loads(capsys.readouterr().out)
    assert report["items"] == 4 and report["classes"][0]["class"] == "background"
    assert sum(row["pixels"] for row in report["classes"]) == 4 * 32 * 32


def test_bad_items_are_listed_with_exit_code_2(tmp_path: Path, capsys) -> None:
    for stem, value in (("a", 0), ("b", 7)):
        (tmp_path / "images").mkdir(exist_ok=True)
        (tmp_path / "masks").mkdir(exist_ok=True)
        Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(tmp_path / "images" / f"{stem}.png")
        Image.fromarray(np.full((4, 4), value, np.uint8)).save(tmp_path / "masks" / f"{stem}.png")
    code = run(["--data", "folder", "--root", str(tmp_path), "--split", "all", "--data-option", "num_classes=2"])
    out = capsys.readouterr().out
    assert code == 2 and "bad item b" in out and "b.png" in out and "label 7" in out
    assert run(["--data", "folder", "--root", str(tmp_path / "nowhere")]) == 2
    assert "does not exist" in capsys.readouterr().err
