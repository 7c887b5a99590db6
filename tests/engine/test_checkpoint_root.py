"""Issue 26, item 4: a checkpoint records its data root resolved, and says so when that folder is gone."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
from PIL import Image

from fcnseg.checkpoint import read_description
from fcnseg.cli import main
from fcnseg.engine import build_config, train


def write_folder(root: Path) -> None:
    """Six 24x24 items (ids 0/1 in blocks), classes.txt, and no split files (an automatic split)."""
    for sub in ("images", "masks"):
        (root / sub).mkdir(parents=True)
    rng = np.random.default_rng(0)
    for index in range(6):
        Image.fromarray(rng.integers(0, 255, (24, 24, 3), dtype=np.uint8)).save(root / "images" / f"{index}.png")
        mask = np.zeros((24, 24), np.uint8)
        mask[4 + index : 12 + index, 4:12] = 1
        Image.fromarray(mask).save(root / "masks" / f"{index}.png")
    (root / "classes.txt").write_text("background\nthing\n")


def test_a_run_from_a_relative_root_is_evaluated_from_elsewhere(tmp_path: Path, monkeypatch, capsys) -> None:
    project = tmp_path / "project"
    write_folder(project / "a")
    monkeypatch.chdir(project)
    settings = [("model.width", 0.0625), ("threads", 1), ("progress", False), ("recipe.steps", 1),
                ("recipe.minutes", None), ("recipe.batch_size", 2), ("recipe.crop_size", None), ("overlays", 0),
                ("data", "folder"), ("root", "a")]  # fmt: skip
    train(build_config("cpu", settings=settings), project / "runs" / "a1")
    best = project / "runs" / "a1" / "best.safetensors"
    assert read_description(best)["extra"]["data"]["root"] == str(project / "a")  # resolved, not "a"

    monkeypatch.chdir(tmp_path)  # another folder: "a" means nothing here
    capsys.readouterr()
    assert main(["eval", str(best)]) == 0
    assert "on folder val" in capsys.readouterr().out

    shutil.move(project / "a", tmp_path / "moved")
    assert main(["eval", str(best)]) == 2
    err = capsys.readouterr().err
    assert f"dataset folder {project / 'a'} does not exist; it is the training data's root recorded in {best}" in err
    assert "give --root DIR, which overrides the recorded root" in err and err.count("\n") == 1
    assert main(["eval", str(best), "--root", "moved"]) == 0  # --root overrides it
    capsys.readouterr()


def test_root_alone_keeps_the_recorded_options_and_the_same_root_typed_relative_is_the_same(tmp_path, monkeypatch):
    import argparse

    from fcnseg.commands.eval import data_spec

    class Recorded:  # what data_spec reads of a checkpoint
        extra = {"data": {"kind": "folder", "root": str(tmp_path / "a"), "options": {"binary": True}}}
        classes, ignore_index = ["background", "foreground"], 255

    def spec(*argv: str):
        args = argparse.Namespace(checkpoint="c.safetensors", data=None, root=None, data_option=[])
        for key, value in zip(argv[::2], argv[1::2], strict=True):
            setattr(args, key, value)
        return data_spec(args, Recorded())

    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    monkeypatch.chdir(tmp_path)
    assert spec("root", "b")[2]["binary"] is True  # the same data, moved: binary=true still applies
    assert spec("data", "folder", "root", "a")[2]["binary"] is True  # "a" typed relative is the recorded root
    assert "binary" not in spec("data", "folder", "root", "b")[2]  # other data: the recorded options do not apply
