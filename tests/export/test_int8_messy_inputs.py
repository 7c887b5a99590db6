"""int8 export on a user's messy folder: unreadable files are skipped and listed; no CUDA notice on a CPU machine."""

from __future__ import annotations

import argparse
import importlib.util
import io
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from command_runs import subprocess_env
from PIL import Image
from tiny_models import tiny_model

from fcnseg.checkpoint import save_checkpoint

pytest.importorskip("onnx", reason="the export extra is not installed (pip install 'fcnseg[export]')")
pytest.importorskip("onnxruntime", reason="the export extra is not installed (pip install 'fcnseg[export]')")

from fcnseg.export.int8 import calibration_folder  # noqa: E402

CLASSES = ["background", "thing", "stuff", "other"]
PALETTE = [(0, 0, 0), (200, 30, 30), (20, 180, 60), (30, 30, 200)]

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def jpeg_bytes(height: int, width: int, seed: int) -> bytes:
    generator = np.random.default_rng(seed)
    buffer = io.BytesIO()
    Image.fromarray(generator.integers(0, 256, (height, width, 3), dtype=np.uint8)).save(buffer, format="JPEG")
    return buffer.getvalue()


def messy_folder(folder, count: int, truncated: set[int]):
    """``count`` JPEGs img0.jpg ... (height 40 + i), those in ``truncated`` cut to half their bytes."""
    folder.mkdir()
    for index in range(count):
        data = jpeg_bytes(40 + index, 80, index)
        (folder / f"img{index}.jpg").write_bytes(data[: len(data) // 2] if index in truncated else data)
    return folder


def test_an_unreadable_pick_is_skipped_listed_and_replaced_by_the_next_readable_image(tmp_path):
    folder = messy_folder(tmp_path / "photos", 6, truncated={2})
    three = calibration_folder(folder, limit=3)  # picks 0, 2, 4 of six: 2 is truncated, 3 stands in
    assert [image.shape[1] for image in three.images] == [40, 43, 44]
    assert len(three.skipped) == 1 and "img2.jpg" in three.skipped[0] and "truncated" in three.skipped[0]
    everything = calibration_folder(folder, limit=None)
    assert [image.shape[1] for image in everything.images] == [40, 41, 43, 44, 45]
    assert len(everything.skipped) == 1
    # the last pick unreadable and nothing after it: an earlier unpicked image stands in
    last = calibration_folder(messy_folder(tmp_path / "last", 4, truncated={3}), limit=2)  # picks 0, 2
    assert len(last.images) == 2 and len(last.skipped) == 0
    last = calibration_folder(tmp_path / "last", limit=4)
    assert [image.shape[1] for image in last.images] == [40, 41, 42] and "img3.jpg" in last.skipped[0]


def test_a_folder_where_nothing_can_be_read_is_one_error(tmp_path):
    folder = messy_folder(tmp_path / "photos", 2, truncated={0, 1})
    with pytest.raises(
        ValueError, match=r"none of its 2 image files can be read; the first: image .*img0.jpg is truncated"
    ):
        calibration_folder(folder)


def run_cli(argv: list[str]) -> int:
    from fcnseg.commands import export as command

    parser = argparse.ArgumentParser(prog="fcnseg")
    command.add_parser(parser.add_subparsers(dest="command", required=True))
    return command.run(parser.parse_args(["export", *argv]))


def test_cli_int8_export_skips_a_truncated_jpeg_and_says_so(tmp_path, capsys):
    checkpoint = save_checkpoint(
        tmp_path / "model.safetensors",
        tiny_model("fcn32s", len(CLASSES), score_std=1.0),
        classes=CLASSES,
        palette=PALETTE,
    )
    folder = messy_folder(tmp_path / "photos", 3, truncated={1})
    out = tmp_path / "int8.onnx"
    code = run_cli(
        [
            str(checkpoint),
            "--out",
            str(out),
            "--int8",
            "--calibrate",
            str(folder),
            "--quantizer",
            "onnxruntime",
            "--exporter",
            "torchscript",
            "--min-agreement",
            "0.5",
        ]
    )
    captured = capsys.readouterr()
    assert code == 0 and out.is_file(), captured.err
    assert "calibrated on 2 images" in captured.out
    assert f"skipped 1 file(s) of {folder} that cannot be read (calibrating on 2 image(s)):" in captured.err
    assert "img1.jpg is truncated" in captured.err and "Traceback" not in captured.err


CUDA_NOTICE = "No CUDA runtime is found"

EXPORT_SCRIPT = """
import sys
import numpy as np, torch
from fcnseg.checkpoint import save_checkpoint
from fcnseg.export.int8 import CalibrationSet, export_int8
sys.path.insert(0, sys.argv[2])
from tiny_models import tiny_model
classes = ["a", "b", "c"]
checkpoint = save_checkpoint(sys.argv[1] + "/model.safetensors", tiny_model("fcn32s", 3, score_std=1.0),
                             classes=classes, palette=[(0, 0, 0), (255, 0, 0), (0, 255, 0)])
image = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (3, 32, 32), dtype=np.uint8))
report = export_int8(checkpoint, sys.argv[1] + "/int8.onnx", CalibrationSet([image], None, "one image"),
                     quantizer="nncf", exporter="torchscript", runtimes=["onnxruntime"], min_agreement=0.01)
print("exported", report.ok, "cpp_extension imported:", "torch.utils.cpp_extension" in sys.modules)
"""


@pytest.mark.skipif(importlib.util.find_spec("nncf") is None, reason="nncf is not installed (fcnseg[int8])")
def test_an_nncf_export_on_a_machine_without_a_gpu_prints_no_cuda_notice(tmp_path):
    # A CUDA toolkit named by CUDA_HOME and no GPU visible: torch's cpp_extension logs the notice on import ...
    env = {**subprocess_env(), "CUDA_HOME": str(tmp_path), "CUDA_VISIBLE_DEVICES": ""}
    control = subprocess.run(
        [sys.executable, "-c", "import torch.utils.cpp_extension"], env=env, capture_output=True, text=True, timeout=300
    )
    assert CUDA_NOTICE in control.stderr, "the test environment must make torch print the notice"
    # ... which the int8 export, importing it through NNCF, keeps to itself.
    tests = str(Path(__file__).resolve().parents[1])
    run = subprocess.run(
        [sys.executable, "-c", EXPORT_SCRIPT, str(tmp_path), tests],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0 and "exported True" in run.stdout, run.stderr
    assert "cpp_extension imported: True" in run.stdout, "the export must go through the import that logs it"
    assert CUDA_NOTICE not in run.stdout + run.stderr
