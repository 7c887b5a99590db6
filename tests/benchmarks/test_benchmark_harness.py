"""benchmarks/harness.py owns what the benchmark scripts share: the results envelope, the child process, sizes,
images."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


@pytest.fixture
def harness(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    import harness

    return harness


def test_results_document_is_name_command_machine_then_the_body(harness, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["benchmarks/speed.py", "--quick"])
    machine = {"cpu": "test cpu", "load_average_start": [1.0, 1.0, 1.0]}
    document = harness.results_document("speed", machine, config={"size": [64, 64]}, results=[])
    assert list(document) == ["benchmark", "command", "machine", "config", "results"]
    assert (
        document["benchmark"] == "speed"
        and document["command"] == f"{Path(sys.executable).name} benchmarks/speed.py --quick"
    )
    assert document["machine"]["cpu"] == "test cpu" and len(document["machine"]["load_average_end"]) == 3
    assert "load_average_end" not in machine  # the caller's facts are not changed
    assert harness.results_path("speed_cpu", quick=True) == BENCHMARKS / "results" / "speed_cpu_quick.json"
    assert harness.results_path("speed_cpu") == BENCHMARKS / "results" / "speed_cpu.json"


def test_a_child_process_gets_the_child_flag_and_its_last_json_line_comes_back(harness, tmp_path):
    script = tmp_path / "child.py"
    script.write_text("import sys, json\nprint('noise')\nprint(json.dumps({'argv': sys.argv[1:]}))\n")
    assert harness.run_child(script, "tiled", ["--size", "64"]) == {
        "argv": [harness.CHILD_FLAG, "tiled", "--size", "64"]
    }
    script.write_text("import sys\nsys.exit(3)\n")
    failed = harness.run_child(script, "tiled", [])
    assert "child tiled failed (exit 3)" in failed["error"]


@pytest.mark.parametrize(
    "script, kind",
    [("large_image", "tiled"), ("speed", "fcn8s"), ("models_table", "fcn8s"), ("predict_stream", "mosaic")],
)
def test_every_benchmark_that_runs_children_reads_the_one_child_flag(harness, monkeypatch, script, kind):
    assert __import__(script).parse_args([harness.CHILD_FLAG, kind]).child == kind


def test_parse_size_takes_n_or_height_x_width(harness):
    assert harness.parse_size("500") == (500, 500)
    assert harness.parse_size("360x480") == harness.parse_size("360X480") == (360, 480)
    for bad in ("", "12x", "0x5", "1x2x3", "big"):
        with pytest.raises(argparse.ArgumentTypeError, match="size must be N or HxW"):
            harness.parse_size(bad)


def test_synthetic_image_is_deterministic_smooth_blobs_plus_noise(harness):
    image = harness.synthetic_image(90, 120, np.random.default_rng(0), blob=30, noise=0.2)
    assert image.shape == (90, 120, 3) and image.dtype == np.uint8
    np.testing.assert_array_equal(image, harness.synthetic_image(90, 120, np.random.default_rng(0), blob=30, noise=0.2))
    assert not np.array_equal(image, harness.synthetic_image(90, 120, np.random.default_rng(1), blob=30, noise=0.2))
    pixels = image.astype(np.float64)
    # blobs: the picture spans most of the range, yet neighbours differ by little more than the noise
    assert pixels.max() - pixels.min() > 150
    assert np.abs(np.diff(pixels, axis=1)).mean() < 0.25 * 255 and pixels.std() > 0.1 * 255
    smooth = harness.synthetic_image(40, 40, np.random.default_rng(0), noise=0.0).astype(np.float64)
    # without noise, the blobs alone: 2 x 2 cells over 40 px, so a step is at most a cell's range over half a cell
    assert np.abs(np.diff(smooth, axis=1)).max() <= 255 / 20 + 1 and smooth.max() - smooth.min() > 100


def test_every_harness_name_a_benchmark_uses_exists(harness):
    """A rename in the harness breaks the scripts that still call the old name (train_rate.py called run_probe
    after it became run_child); the scripts run only by hand, so this reads them."""
    import re

    used = {(script.name, name) for script in BENCHMARKS.glob("*.py")
            for name in re.findall(r"\bharness\.([A-Za-z_]\w*)", script.read_text(encoding="utf-8"))}  # fmt: skip
    missing = sorted((script, name) for script, name in used if not hasattr(harness, name))
    assert used and not missing, f"benchmarks calling harness names that do not exist: {missing}"
