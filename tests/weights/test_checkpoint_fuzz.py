"""Damaged checkpoints: every command that reads one answers one line and exit status 2, never a traceback.

A bounded mutation fuzz over the checkpoint's JSON description and its tensors (hand-picked
damages from a fuzz of the readers, then seeded random ones), run through ``fcnseg predict``,
``fcnseg eval`` and ``fcnseg export``; and pickled files refused with the project's own message.
"""

from __future__ import annotations

import copy
import io
import json
import math
import pickle
import random
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

import fcnseg
from fcnseg.checkpoint import load_checkpoint, save_checkpoint
from fcnseg.cli import main

CLASSES = ["background", "disc", "square"]


@pytest.fixture(scope="module")
def valid(tmp_path_factory) -> tuple[dict, dict[str, torch.Tensor], Path]:
    folder = tmp_path_factory.mktemp("fuzz")
    model = fcnseg.create_model("fcn32s", num_classes=3, width=0.0625)
    path = save_checkpoint(
        folder / "valid.safetensors", model, classes=CLASSES, palette=[(0, 0, 0), (9, 9, 9), (7, 7, 7)]
    )
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        description = json.loads(handle.metadata()["fcnseg"])
    Image.fromarray(np.zeros((20, 24, 3), np.uint8)).save(folder / "photo.png")
    return description, load_file(str(path)), folder


def _set(document: dict, path: list, value) -> None:
    for key in path[:-1]:
        document = document[key]
    if value is _DELETE:
        del document[path[-1]]
    else:
        document[path[-1]] = value


_DELETE = object()
#: (what, path in the description, new value); each is a damage the readers must name.
DAMAGES = [
    ("list not object", [], None), ("no config", ["config"], _DELETE), ("no classes", ["classes"], _DELETE),
    ("no palette", ["palette"], _DELETE), ("no preprocessing", ["preprocessing"], _DELETE),
    ("no name", ["config", "name"], _DELETE), ("version string", ["version"], "1"), ("version 99", ["version"], 99),
    ("unknown config key", ["config", "colour"], 1), ("unknown model", ["config", "name"], "fcn5s"),
    ("zero classes", ["config", "num_classes"], 0), ("string classes", ["config", "num_classes"], "3"),
    ("negative width", ["config", "width"], -1.0), ("NaN width", ["config", "width"], math.nan),
    ("string width", ["config", "width"], "wide"), ("palette over 255", ["palette", 1, 0], 300),
    ("two colours", ["palette"], [[0, 0, 0], [1, 1, 1]]), ("fewer names", ["classes"], CLASSES[:2]),
    ("empty name", ["classes", 1], ""), ("empty preprocessing", ["preprocessing"], {}),
    ("preprocessing extra", ["preprocessing", "gamma"], 2.2), ("std zero", ["preprocessing", "std"], [0, 1, 1]),
    ("channel order", ["preprocessing", "channel_order"], "GBR"), ("extra list", ["extra"], [1]),
    ("ignore string", ["ignore_index"], "void"), ("format", ["format"], "other"),
    ("num_classes mismatch", ["config", "num_classes"], 4), ("dropout 2", ["config", "dropout"], 2.0),
]  # fmt: skip


def _random_damages(description: dict, count: int, seed: int = 0) -> list[tuple[str, list, object]]:
    """Seeded random replacements of one value anywhere in the description."""
    rng = random.Random(seed)
    paths = []

    def walk(node, path):
        paths.append(path)
        items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else []
        for key, child in items:
            walk(child, path + [key])

    walk(description, [])
    values = [None, True, -1, 0, 1e308, "x", "", [], {}, [1, 2], {"a": 1}, math.inf, 2**63, -0.5]
    return [(f"random {i}", path, rng.choice(values)) for i, path in enumerate(rng.choices(paths[1:], k=count))]


def _write(folder: Path, name: str, description, tensors: dict) -> Path:
    path = folder / f"{name.replace(' ', '_')}.safetensors"
    text = description if isinstance(description, str) else json.dumps(description)
    save_file(tensors, str(path), metadata={"fcnseg": text})
    return path


def _run(argv: list[str]) -> tuple[int, str]:
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = main(argv)
    return code, err.getvalue()


def _check_all_commands(path: Path, folder: Path) -> None:
    commands = {
        "predict": ["predict", str(path), str(folder / "photo.png"), "--out", str(folder / "masks"), "--device", "cpu"],
        "eval": [
            "eval",
            str(path),
            "--data",
            "synthetic",
            "--data-option",
            "size=16",
            "--data-option",
            "num_images=1",
            "--device",
            "cpu",
        ],
        "export": ["export", str(path), "--out", str(folder / "m.onnx")],
    }
    for name, argv in commands.items():
        code, err = _run(argv)
        lines = err.strip().splitlines()
        assert code == 2 and len(lines) == 1 and lines[0].startswith(f"fcnseg {name}: error: "), (name, path.name, err)
        assert str(path) in lines[0], (name, err)


def test_valid_checkpoint_passes_the_same_commands(valid):
    description, tensors, folder = valid
    path = _write(folder, "good", description, tensors)
    code, err = _run(
        ["predict", str(path), str(folder / "photo.png"), "--out", str(folder / "masks"), "--device", "cpu"]
    )
    assert code == 0, err


def test_damaged_descriptions_are_one_line_and_status_2(valid):
    description, tensors, folder = valid
    damages = DAMAGES + _random_damages(description, 150)
    checked = 0
    for what, path, value in damages:
        damaged = [] if what == "list not object" else copy.deepcopy(description)
        if path:
            _set(damaged, path, value)
        try:
            load_checkpoint(_write(folder, "probe", damaged, tensors))
            continue  # a random change that keeps the checkpoint valid (e.g. extra.data)
        except Exception as error:  # noqa: BLE001 - what matters is the type, asserted next
            assert isinstance(error, fcnseg.checkpoint.CheckpointError), (what, repr(error))
        _check_all_commands(_write(folder, what, damaged, tensors), folder)
        checked += 1
    assert checked >= len(DAMAGES) + 50
    _check_all_commands(_write(folder, "not json", "{not json", tensors), folder)


@pytest.mark.parametrize("damage", ["nan", "inf", "int64", "float16", "shape", "missing", "extra"])
def test_damaged_tensors_are_one_line_and_status_2(valid, damage):
    description, tensors, folder = valid
    tensors = dict(tensors)
    key = "backbone.conv2_1.weight"
    if damage in ("nan", "inf"):
        tensors[key] = tensors[key].clone()
        tensors[key].view(-1)[3] = float(damage)
    elif damage in ("int64", "float16"):
        tensors[key] = tensors[key].to(getattr(torch, damage))
    elif damage == "shape":
        tensors[key] = tensors[key][:, :-1].contiguous()
    elif damage == "missing":
        del tensors[key]
    else:
        tensors["backbone.conv9.weight"] = torch.zeros(1)
    path = _write(folder, f"tensor_{damage}", description, tensors)
    _check_all_commands(path, folder)
    if damage in ("nan", "inf"):
        assert key in _run(["predict", str(path), str(folder / "photo.png"), "--out", str(folder / "x")])[1]


class _Payload:
    def __reduce__(self):
        return (print, ("this must never run",))


def test_a_pickle_that_would_run_code_is_refused_with_our_message(tmp_path, capsys):
    from fcnseg.engine.state import TrainStateError, load_train_state
    from fcnseg.weights import WeightsError
    from fcnseg.weights.torchvision_vgg import read_state_dict_file

    evil = tmp_path / "train_state.pt"
    evil.write_bytes(pickle.dumps({"version": 1, "model": _Payload()}))
    with pytest.raises(TrainStateError) as caught:
        load_train_state(evil)
    message = str(caught.value)
    assert "refused" in message and "could run code" in message and "weights_only" not in message
    assert "this must never run" not in capsys.readouterr().out
    with pytest.raises(WeightsError, match="refused"):
        read_state_dict_file(evil.rename(tmp_path / "vgg16.pth"))
