"""``fcnseg predict`` over many files: batches, the resume manifest, kills, torchrun shards, failures, GeoTIFF
mosaics."""

from __future__ import annotations

import contextlib
import json
import os
import random
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from tiny_models import TINY_PALETTE as PALETTE

import fcnseg
from fcnseg.cli import main
from fcnseg.inference.predictor import Predictor, load_predictor
from fcnseg.inference.tiling import Tiling
from fcnseg.predict.images import load_image, overlay_image
from fcnseg.predict.manifest import MANIFEST_FOLDER
from fcnseg.predict.stream import ImageFiles

PROJECT_ROOT = Path(__file__).resolve().parents[2]


def write_images(folder: Path, sizes: list[tuple[int, int]], seed: int = 0) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for number, (height, width) in enumerate(sizes):
        paths.append(folder / f"img{number:03d}.png")
        Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).save(paths[-1])
    return paths


def masks_of(out: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted(out.glob("*.png"))}


def records(out: Path) -> list[dict]:
    """The manifest's complete lines, every rank's file."""
    lines = []
    for file in sorted((out / MANIFEST_FOLDER).glob("manifest-rank*.jsonl")):
        for line in file.read_bytes().splitlines():
            with contextlib.suppress(ValueError):
                lines.append(json.loads(line))
    return lines


def wrote(stdout: str) -> int:
    return int(re.search(r"wrote (\d+) mask", stdout).group(1))


def predict(checkpoint: Path, inputs: Path, out: Path, *extra: str) -> int:
    return main(["predict", str(checkpoint), str(inputs), "--out", str(out), "--device", "cpu", *extra])


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(PROJECT_ROOT), "OMP_NUM_THREADS": "1"}


def test_batches_give_the_masks_of_one_image_at_a_time(tmp_path, tiny_checkpoint, capsys, monkeypatch):
    monkeypatch.setenv("FCNSEG_PROGRESS_SECONDS", "0")  # a progress line at every update
    # two sizes interleaved: a batch ends where the size changes
    paths = write_images(tmp_path / "in", [(40, 56)] * 3 + [(33, 47)] * 2 + [(40, 56)] * 3)
    assert predict(tiny_checkpoint, tmp_path / "in", tmp_path / "batched", "--batch-size", "3", "--workers", "2") == 0
    err = capsys.readouterr().err
    assert "images/s" in err and "ETA" in err  # the plain progress lines of a log file
    assert predict(tiny_checkpoint, tmp_path / "in", tmp_path / "alone", "--no-stream") == 0
    assert masks_of(tmp_path / "batched") == masks_of(tmp_path / "alone")
    predictor = Predictor(tiny_model_from(tiny_checkpoint))
    for path in paths:  # and each equals the Predictor's mask of that image alone
        expected = predictor.mask(load_image(path)).numpy()
        np.testing.assert_array_equal(np.array(Image.open(tmp_path / "batched" / path.name)), expected)


def tiny_model_from(checkpoint: Path) -> torch.nn.Module:
    return fcnseg.checkpoint.load_checkpoint(checkpoint).model


def test_a_second_run_redoes_only_what_is_missing_damaged_or_changed(tmp_path, tiny_checkpoint, capsys):
    write_images(tmp_path / "in", [(32, 40)] * 6)
    out = tmp_path / "out"
    assert predict(tiny_checkpoint, tmp_path / "in", out, "--overlay") == 0
    assert wrote(capsys.readouterr().out) == 6
    reference = {path.name: path.read_bytes() for path in out.iterdir() if path.is_file()}
    assert len(reference) == 12 and len(records(out)) == 6

    assert predict(tiny_checkpoint, tmp_path / "in", out, "--overlay") == 0
    assert wrote(capsys.readouterr().out) == 0  # all done

    (out / "img000.png").write_bytes(reference["img000.png"][:-10])  # truncated mask
    (out / "img001_overlay.png").unlink()  # missing overlay
    damaged = bytearray(reference["img002.png"])
    damaged[-20] ^= 0xFF  # same size, other bytes: the hash finds it
    (out / "img002.png").write_bytes(bytes(damaged))
    Image.fromarray(np.zeros((32, 40, 3), np.uint8)).save(tmp_path / "in" / "img003.png")  # a changed input
    with open(out / MANIFEST_FOLDER / "manifest-rank0.jsonl", "ab") as manifest:
        manifest.write(b'{"input": "torn by a ki')  # a line a kill cut short
    untouched = (out / "img004.png").stat().st_mtime_ns
    assert predict(tiny_checkpoint, tmp_path / "in", out, "--overlay") == 0
    assert wrote(capsys.readouterr().out) == 4
    assert (out / "img004.png").stat().st_mtime_ns == untouched
    for name, data in reference.items():
        if not name.startswith("img003"):
            assert (out / name).read_bytes() == data, name
    assert (out / "img003.png").read_bytes() != reference["img003.png"]  # predicted from the new content

    assert (
        predict(tiny_checkpoint, tmp_path / "in", out, "--overlay", "--alpha", "0.3") == 0
    )  # other settings: all again
    assert wrote(capsys.readouterr().out) == 6
    assert predict(tiny_checkpoint, tmp_path / "in", out, "--overlay", "--alpha", "0.3", "--overwrite") == 0
    assert wrote(capsys.readouterr().out) == 6


def test_failures_are_listed_in_a_file_and_on_stderr(tmp_path, tiny_checkpoint, capsys):
    write_images(tmp_path / "in", [(24, 24)] * 2)
    (tmp_path / "in" / "broken.png").write_bytes(b"\x89PNG garbage")
    out = tmp_path / "out"
    code = main(
        [
            "predict",
            str(tiny_checkpoint),
            str(tmp_path / "in"),
            str(tmp_path / "nowhere.png"),
            "--out",
            str(out),
            "--device",
            "cpu",
        ]
    )
    captured = capsys.readouterr()
    assert code == 1 and wrote(captured.out) == 2
    listed = (out / "failed.txt").read_text().splitlines()
    assert (
        len(listed) == 2
        and any("broken.png" in line for line in listed)
        and any("nowhere.png" in line for line in listed)
    )
    assert "broken.png" in captured.err and "failed.txt" in captured.err and "Traceback" not in captured.err
    (tmp_path / "in" / "broken.png").unlink()
    assert predict(tiny_checkpoint, tmp_path / "in", out) == 0
    assert not (out / "failed.txt").exists()  # the old list no longer holds
    assert predict(tiny_checkpoint, tmp_path / "in", out, "--workers", "-1") == 2
    assert "--workers must be a number of processes >= 0, got -1" in capsys.readouterr().err


def test_a_mask_that_would_overwrite_an_input_is_refused_before_any_work(tmp_path, tiny_checkpoint, capsys):
    write_images(tmp_path / "in", [(16, 16)] * 2)
    before = {p.name: p.read_bytes() for p in (tmp_path / "in").iterdir()}
    assert predict(tiny_checkpoint, tmp_path / "in", tmp_path / "in") == 2
    err = capsys.readouterr().err
    assert "would overwrite the input" in err and "img000.png" in err and "Traceback" not in err
    assert {p.name: p.read_bytes() for p in (tmp_path / "in").iterdir()} == before


def test_a_model_whose_tiles_are_not_exact_fails_only_the_images_that_need_tiles(
    tmp_path, tiny_checkpoint, capsys, monkeypatch
):
    from fcnseg.models.vgg import VGG16Backbone

    monkeypatch.setattr(VGG16Backbone, "exact_tiling", False)  # as a squeeze-and-excitation trunk says
    small, _ = write_images(tmp_path / "in", [(24, 24), (24, 900)])
    write_geotiff(tmp_path / "in" / "scene.tif", np.zeros((3, 24, 24), np.uint8))
    # a 24 x 900 image's forward pass is over the budget: it would need tiles
    assert (
        predict(tiny_checkpoint, tmp_path / "in", tmp_path / "out", "--memory-budget-mb", "30", "--margin", "32") == 1
    )
    err = capsys.readouterr().err
    assert "img001.png" in err and "squeeze-and-excitation" in err and "scene.tif" in err and "Traceback" not in err
    assert not (tmp_path / "out" / "img001.png").exists()
    with Image.open(tmp_path / "out" / "img000.png") as written:  # the image that fits is predicted whole, as usual
        assert written.mode == "P" and written.getpalette()[:9] == [v for colour in PALETTE for v in colour]
        expected = Predictor(tiny_model_from(tiny_checkpoint)).mask(load_image(small)).numpy()
        np.testing.assert_array_equal(np.array(written), expected)


def test_an_image_too_large_to_decode_is_refused_with_what_to_do(tmp_path):
    Image.new("RGB", (40, 30)).save(tmp_path / "big.png")
    item = ImageFiles([tmp_path / "big.png"], max_pixels=1000)[0]
    assert item.image is None and "big.png" in item.error and "40x30" in item.error
    assert "--memory-budget-mb" in item.error and "fcnseg[geo]" in item.error


@pytest.mark.slow
def test_kill_9_at_random_moments_then_the_same_command_finishes_the_job(tmp_path, tiny_checkpoint):
    total, batch = 24, 2
    write_images(tmp_path / "in", [(48, 64)] * total)
    assert predict(tiny_checkpoint, tmp_path / "in", tmp_path / "reference", "--overlay") == 0
    out = tmp_path / "out"
    command = [
        sys.executable,
        "-m",
        "fcnseg",
        "predict",
        str(tiny_checkpoint),
        str(tmp_path / "in"),
        "--out",
        str(out),
        "--device",
        "cpu",
        "--overlay",
        "--batch-size",
        str(batch),
        "--workers",
        "1",
    ]
    chooser = random.Random(5)
    kills = 0
    for attempt in range(8):
        recorded = len(records(out)) if out.exists() else 0
        log = tmp_path / f"stderr{attempt}.txt"
        with open(log, "w") as stderr:
            run = subprocess.Popen(
                command,
                env={**_env(), "FCNSEG_PROGRESS_SECONDS": "0"},
                stdout=subprocess.PIPE,
                stderr=stderr,
                text=True,
                start_new_session=True,
            )
        # kill -9 once the manifest has grown by a random number of inputs (a random moment of the work)
        target = recorded + chooser.randint(1, 6) if kills < 3 else total + 1  # three kills, then to the end
        while run.poll() is None and (len(records(out)) if out.exists() else 0) < target:
            time.sleep(0.005)
        if run.poll() is None:
            os.killpg(run.pid, signal.SIGKILL)  # the process and its decoding workers, as a preemption would
            run.wait()
            kills += 1
            # predicted (handed to the writer: the progress lines) but not recorded: at most the batch being written
            handed = [int(n) for n in re.findall(r"^predict: (\d+)/\d+ images", log.read_text(), flags=re.M)]
            assert (handed[-1] if handed else 0) - (len(records(out)) - recorded) <= batch
            # written but not recorded: at most that batch
            unrecorded = {p.stem.removesuffix("_overlay") for p in out.glob("img*")} - {
                Path(r["input"]).stem for r in records(out)
            }
            assert len(unrecorded) <= batch, unrecorded
            continue
        stdout, _ = run.communicate()
        assert run.returncode == 0
        assert wrote(stdout) == total - recorded  # nothing recorded was predicted again
        break
    assert kills >= 2, "the runs ended before they could be killed; give them more work"
    done = [Path(r["input"]).name for r in records(out)]
    assert sorted(done) == sorted(p.name for p in (tmp_path / "in").iterdir())  # each input recorded exactly once
    reference = {p.name: p.read_bytes() for p in (tmp_path / "reference").glob("img*")}
    assert {p.name: p.read_bytes() for p in out.glob("img*")} == reference
    assert not list(out.glob(".*.tmp"))  # what the killed writes left was swept


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.slow
@pytest.mark.skipif(
    not torch.distributed.is_available() or not torch.distributed.is_gloo_available(),
    reason="torch.distributed with gloo is not available",
)
def test_two_torchrun_nodes_write_exactly_the_outputs_of_one_process(tmp_path, tiny_checkpoint, capsys):
    paths = write_images(tmp_path / "in", [(40, 48)] * 7 + [(36, 52)] * 2)
    assert predict(tiny_checkpoint, tmp_path / "in", tmp_path / "one", "--overlay") == 0
    capsys.readouterr()
    port = _free_port()
    # two launches ("nodes") of one process each, meeting at a rendezvous on 127.0.0.1
    launch = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nnodes",
        "2",
        "--nproc-per-node",
        "1",
        "--rdzv-backend",
        "c10d",
        "--rdzv-endpoint",
        f"127.0.0.1:{port}",
        "--rdzv-id",
        "predict-test",
        "-m",
        "fcnseg",
        "predict",
        str(tiny_checkpoint),
        str(tmp_path / "in"),
        "--out",
        str(tmp_path / "two"),
        "--device",
        "cpu",
        "--overlay",
        "--workers",
        "1",
    ]
    nodes = [
        subprocess.Popen(launch, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    outputs = [node.communicate(timeout=300) for node in nodes]
    assert all(node.returncode == 0 for node in nodes), outputs
    summaries = [line for stdout, _ in outputs for line in stdout.splitlines() if line.startswith("wrote")]
    assert len(summaries) == 1 and wrote(summaries[0]) == len(paths) and "by 2 processes" in summaries[0]
    one = {p.name: p.read_bytes() for p in (tmp_path / "one").glob("img*")}
    assert {p.name: p.read_bytes() for p in (tmp_path / "two").glob("img*")} == one and len(one) == 2 * len(paths)
    for rank in (0, 1):  # each rank wrote its shard of the sorted list, and only that
        lines = (tmp_path / "two" / MANIFEST_FOLDER / f"manifest-rank{rank}.jsonl").read_text().splitlines()
        assert sorted(Path(json.loads(line)["input"]).name for line in lines) == [
            p.name for p in sorted(paths)[rank::2]
        ]


def write_geotiff(path: Path, image: np.ndarray, **options):
    rasterio = pytest.importorskip("rasterio", reason="the geo extra is not installed (pip install 'fcnseg[geo]')")
    profile = dict(
        driver="GTiff",
        width=image.shape[2],
        height=image.shape[1],
        count=image.shape[0],
        dtype=image.dtype,
        crs="EPSG:32633",
        transform=rasterio.Affine(0.25, 0.0, 500000.0, 0.0, -0.25, 4100000.0),
    )
    with rasterio.open(path, "w", **{**profile, **options}) as target:
        target.write(image)
    return rasterio


def test_a_geotiff_is_predicted_by_windows_and_keeps_its_georeferencing(tmp_path, tiny_checkpoint):
    image = np.random.default_rng(4).integers(0, 256, (3, 150, 230), dtype=np.uint8)
    rasterio = write_geotiff(tmp_path / "scene.tif", image)
    out = tmp_path / "out"
    assert (
        predict(tiny_checkpoint, tmp_path / "scene.tif", out, "--tile-size", "64", "--margin", "64", "--overlay") == 0
    )
    assert not (out / "scene.png").exists()
    with rasterio.open(out / "scene.tif") as mask_file, rasterio.open(tmp_path / "scene.tif") as source:
        assert mask_file.crs == source.crs and mask_file.transform == source.transform
        assert mask_file.count == 1 and mask_file.dtypes[0] == "uint8" and 64 % mask_file.block_shapes[0][0] == 0
        assert [mask_file.colormap(1)[c][:3] for c in range(3)] == PALETTE
        mask = mask_file.read(1)
    # the in-memory tiled prediction with the same tiles (fcnseg.inference.tiling.iter_tiles) gives the same mask
    predictor, _ = load_predictor(tiny_checkpoint, device="cpu", tile=Tiling(64, 64))
    expected = predictor.mask(torch.from_numpy(image))
    np.testing.assert_array_equal(mask, expected.numpy())
    assert len(np.unique(mask)) > 1
    with rasterio.open(out / "scene_overlay.tif") as overlay_file:
        assert overlay_file.transform == mask_file.transform and overlay_file.crs == mask_file.crs
        picture = np.array(overlay_image(torch.from_numpy(image), expected, PALETTE, alpha=0.5))
        np.testing.assert_array_equal(overlay_file.read().transpose(1, 2, 0), picture)


def test_windowed_rasters_refuse_what_they_cannot_read(tmp_path, tiny_checkpoint, capsys):
    from fcnseg.predict.mosaic import reads_by_windows

    write_geotiff(tmp_path / "deep.tif", np.zeros((3, 20, 20), np.uint16))
    assert predict(tiny_checkpoint, tmp_path / "deep.tif", tmp_path / "out") == 1
    err = capsys.readouterr().err
    assert "deep.tif" in err and "uint16" in err and "uint8" in err and "Traceback" not in err
    Image.new("RGB", (30, 20)).save(tmp_path / "plain.tif")  # no georeferencing: windows only when too large
    assert not reads_by_windows(tmp_path / "plain.tif", max_pixels=600)
    assert reads_by_windows(tmp_path / "plain.tif", max_pixels=599)
    assert predict(tiny_checkpoint, tmp_path / "deep.tif", tmp_path / "x", "--confidence") == 1
    assert "not available" in capsys.readouterr().err


def test_a_video_gives_a_mask_per_frame_and_an_overlay_video(tmp_path, tiny_checkpoint):
    av = pytest.importorskip("av", reason="the video extra is not installed (pip install 'fcnseg[video]')")
    rng = np.random.default_rng(6)
    with av.open(str(tmp_path / "drive.mp4"), "w") as container:  # 7 frames of 48 x 62 (even sizes: 4:2:0)
        stream = container.add_stream("libx264", rate=10)
        stream.width, stream.height, stream.pix_fmt = 62, 48, "yuv420p"
        for _ in range(7):
            frame = rng.integers(0, 256, (48, 62, 3), dtype=np.uint8)
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode(None))
    out = tmp_path / "out"
    assert predict(tiny_checkpoint, tmp_path / "drive.mp4", out, "--overlay", "--batch-size", "3") == 0
    with av.open(str(tmp_path / "drive.mp4")) as container:  # the frames as the decoder gives them
        frames = [
            torch.from_numpy(f.to_ndarray(format="rgb24")).permute(2, 0, 1).contiguous()
            for f in container.decode(video=0)
        ]
    predictor = Predictor(tiny_model_from(tiny_checkpoint))
    assert sorted(p.name for p in (out / "drive").iterdir()) == [f"{n:06d}.png" for n in range(7)]
    for number, frame in enumerate(frames):
        np.testing.assert_array_equal(
            np.array(Image.open(out / "drive" / f"{number:06d}.png")), predictor.mask(frame).numpy()
        )
    with av.open(str(out / "drive_overlay.mp4")) as container:
        decoded = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    assert len(decoded) == 7 and decoded[0].shape == (48, 62, 3)
    assert len(records(out)) == 1 and len(records(out)[0]["outputs"]) == 8  # one input: 7 masks and the video
    assert predict(tiny_checkpoint, tmp_path / "drive.mp4", out, "--overlay") == 0  # done: nothing again
    assert len(records(out)) == 1
