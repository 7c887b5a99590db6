"""``fcnseg predict`` resumed after a kill sweeps the temporary files its atomic writes left, and nothing else."""

from __future__ import annotations

import numpy as np
from dataset_files import CLASSES, PALETTE
from PIL import Image
from tiny_models import tiny_model

from fcnseg.checkpoint import save_checkpoint
from fcnseg.cli import main
from fcnseg.files import atomic_path


def test_a_resumed_predict_sweeps_a_killed_writes_temporary_file_and_nothing_else(tmp_path):
    checkpoint = save_checkpoint(
        tmp_path / "m.safetensors", tiny_model("fcn32s", len(CLASSES), score_std=1.0), classes=CLASSES, palette=PALETTE
    )
    inputs, out = tmp_path / "in", tmp_path / "out"
    inputs.mkdir()
    rng = np.random.default_rng(0)
    for name in ("img0", "img1"):
        Image.fromarray(rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)).save(inputs / f"{name}.png")
    command = ["predict", str(checkpoint), str(inputs), "--out", str(out), "--device", "cpu", "--overlay"]
    assert main(command) == 0
    # A new input whose mask was being written when the run was killed: the atomic write's temporary file stays.
    Image.fromarray(rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)).save(inputs / "img2.png")
    killed_write = atomic_path(out / "img2.png")
    leftover = killed_write.__enter__()
    leftover.write_bytes(b"half a PNG")
    # Files that are not temporary files of this run's outputs: the user's, and another process's write in progress.
    kept = {
        out / name: name.encode()
        for name in (
            "notes.txt",
            ".hidden",
            ".img2.tmp",
            "img2.png.tmp",
            ".img2.png.bak",
            ".elsewhere.png.k3y9q2x1.tmp",
        )
    }
    for path, content in kept.items():
        path.write_bytes(content)
    done = {path: path.read_bytes() for path in out.glob("img[01]*")}
    assert leftover.exists() and leftover.name.startswith(".img2.png.")

    assert main(command) == 0
    assert not leftover.exists() and (out / "img2.png").is_file() and (out / "img2_overlay.png").is_file()
    assert {path: path.read_bytes() for path in kept} == kept
    assert {path: path.read_bytes() for path in out.glob("img[01]*")} == done
