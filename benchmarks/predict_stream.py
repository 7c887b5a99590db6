"""Images/s of ``fcnseg predict`` over a folder: one at a time against streamed, one process against torchrun.

A folder of ``--images`` generated CamVid-sized pictures (360x480 PNGs with structure at several scales,
in a temporary folder, removed afterwards) is predicted by fcn8s width 0.25 with random weights (11
classes), each mode a fresh ``fcnseg predict`` process into a fresh output folder:

    no_stream       --no-stream: read, predict, write each image in turn (today's loop), 2 torch threads
    stream_batch1   --workers W --batch-size 1: decoded ahead, written behind (the overlap alone), 2 threads
    stream          --workers W --batch-size B: decoded ahead, batched, written behind, 2 torch threads
    torchrun_2x1    the streamed command under torchrun --nproc-per-node 2, 1 torch thread each

The images/s of a mode is what the command itself reports (inputs / the slowest process's time from its
input list to its last file), so interpreter start and model loading are left out; the wall time of each
process is kept too. Modes run in turn, ``--rounds`` times (medians); every claim is a ratio of two modes of
the same run: ``stream / no_stream`` and ``torchrun_2x1 / stream``.

``--mosaic N`` instead writes an N/4 x N/4 and an N x N GeoTIFF (tiled, deflate; needs rasterio) and predicts
each by windows in a fresh process: their peak RSS against each other (16x the pixels) and against the
decoded image's size (N * N * 3 bytes).

    .venv/bin/python benchmarks/predict_stream.py                     # 2,000 images, 1 round (~30-60 min, 2 CPUs)
    .venv/bin/python benchmarks/predict_stream.py --images 200        # a smaller folder
    .venv/bin/python benchmarks/predict_stream.py --mosaic 40000      # 10,000^2 and 40,000^2 GeoTIFFs, peak RSS
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import harness
import numpy as np
import torch
from harness import PROJECT_ROOT, gib
from PIL import Image

import fcnseg
from fcnseg.checkpoint import save_checkpoint

CLASSES = [f"class{i}" for i in range(11)]  # CamVid's 11
PALETTE = [((37 * i) % 256, (91 * i) % 256, (53 * i) % 256) for i in range(11)]
MODES = ("no_stream", "stream_batch1", "stream", "torchrun_2x1")


def write_checkpoint(path: Path, width: float) -> Path:
    torch.manual_seed(0)
    model = fcnseg.create_model("fcn8s", num_classes=len(CLASSES), width=width)
    with torch.no_grad():  # non-zero scores, so the masks have structure to encode
        for name, param in model.named_parameters():
            if name.startswith("score"):
                param.normal_(0, 0.01)
    return save_checkpoint(path, model, classes=CLASSES, palette=PALETTE)


def write_folder(folder: Path, count: int, height: int, width: int) -> None:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for number in range(count):
        Image.fromarray(harness.synthetic_image(height, width, rng)).save(
            folder / f"frame{number:05d}.png", compress_level=1
        )


def run_mode(mode: str, checkpoint: Path, folder: Path, out: Path, args: argparse.Namespace) -> dict[str, Any]:
    predict = ["-m", "fcnseg", "predict", str(checkpoint), str(folder), "--out", str(out), "--device", "cpu"]
    stream = ["--workers", str(args.workers), "--batch-size", str(args.batch_size)]
    command, threads = {
        "no_stream": ([sys.executable, *predict, "--no-stream"], 2),
        "stream": ([sys.executable, *predict, *stream], 2),
        "stream_batch1": ([sys.executable, *predict, "--workers", str(args.workers), "--batch-size", "1"], 2),
        "torchrun_2x1": (
            [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", *predict, *stream],
            1,
        ),
    }[mode]
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT), "OMP_NUM_THREADS": str(threads)}
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=args.timeout)
    wall = time.perf_counter() - start
    summary = next((line for line in done.stdout.splitlines() if line.startswith("wrote")), None)
    if done.returncode != 0 or summary is None:
        return {"error": f"exit {done.returncode}: {(done.stderr or done.stdout)[-1500:]}"}
    images, rate = re.search(r"wrote (\d+) mask.*?([\d.]+) images/s", summary).groups()
    return {"images": int(images), "images_per_s": float(rate), "wall_s": round(wall, 2), "summary": summary}


def throughput(args: argparse.Namespace) -> dict[str, Any]:
    height, width = args.image_size
    results: dict[str, list[dict]] = {mode: [] for mode in args.modes}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        print(f"writing {args.images} images of {height}x{width} ...", flush=True)
        write_folder(root / "in", args.images, height, width)
        checkpoint = write_checkpoint(root / "model.safetensors", args.width)
        for round_index in range(args.rounds):
            for mode in args.modes:
                result = run_mode(mode, checkpoint, root / "in", root / f"out_{mode}_{round_index}", args)
                results[mode].append(result)
                print(f"  round {round_index + 1}: {mode}: {result.get('summary', result.get('error'))}", flush=True)
    medians = {
        mode: harness.median([r["images_per_s"] for r in runs])
        for mode, runs in results.items()
        if runs and all("images_per_s" in r for r in runs)
    }
    summary = {f"{mode}_images_per_s": round(rate, 3) for mode, rate in medians.items()}
    for faster, slower in (
        ("stream", "no_stream"),
        ("stream_batch1", "no_stream"),
        ("stream", "stream_batch1"),
        ("torchrun_2x1", "stream"),
        ("torchrun_2x1", "no_stream"),
    ):
        if faster in medians and slower in medians:
            summary[f"{faster}_vs_{slower}"] = round(medians[faster] / medians[slower], 3)
    config = {
        "images": args.images,
        "image_size": [height, width],
        "model": f"fcn8s width {args.width}, random weights",
        "workers": args.workers,
        "batch_size": args.batch_size,
        "rounds": args.rounds,
    }
    return {"config": config, "summary": summary, "results": results}


def write_mosaic(path: Path, size: int) -> None:
    import rasterio

    rng = np.random.default_rng(0)
    block = 2048
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        width=size,
        height=size,
        count=3,
        dtype="uint8",
        crs="EPSG:32633",
        transform=rasterio.Affine(0.3, 0.0, 400000.0, 0.0, -0.3, 5000000.0),
        tiled=True,
        blockxsize=512,
        blockysize=512,
        compress="deflate",
        BIGTIFF="YES",
    ) as target:
        for top in range(0, size, block):
            for left in range(0, size, block):
                height, width = min(block, size - top), min(block, size - left)
                window = rasterio.windows.Window(left, top, width, height)
                target.write(harness.synthetic_image(height, width, rng).transpose(2, 0, 1), window=window)


def mosaic_child(args: argparse.Namespace) -> int:
    """Predict the mosaic in this (fresh) process; print the time and the peak RSS as JSON."""
    from fcnseg.cli import main

    before = harness.current_rss_bytes()
    start = time.perf_counter()
    code = main(
        [
            "predict",
            args.checkpoint,
            args.mosaic_file,
            "--out",
            args.out,
            "--device",
            "cpu",
            "--memory-budget-mb",
            str(args.budget_mb),
        ]
    )
    return harness.print_child_result(
        {
            "code": code,
            "seconds": time.perf_counter() - start,
            "peak_rss": harness.peak_rss_bytes(),
            "rss_before": before,
        }
    )


def mosaic(args: argparse.Namespace) -> dict[str, Any]:
    """Peak RSS of predicting an N/4 x N/4 and an N x N GeoTIFF: bounded memory keeps the two alike (16x the pixels)."""
    results: dict[str, Any] = {}
    for size in (args.mosaic // 4, args.mosaic):
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp)
            print(f"writing a {size} x {size} GeoTIFF ...", flush=True)
            write_mosaic(root / "mosaic.tif", size)
            checkpoint = write_checkpoint(root / "model.safetensors", args.mosaic_width)
            child = [
                "--checkpoint",
                str(checkpoint),
                "--mosaic-file",
                str(root / "mosaic.tif"),
                "--out",
                str(root / "out"),
                "--budget-mb",
                str(args.budget_mb),
            ]
            result = harness.run_child(
                Path(__file__),
                "mosaic",
                child,
                timeout=args.timeout,
                env={"OMP_NUM_THREADS": str(torch.get_num_threads())},
            )
            mask = root / "out" / "mosaic.tif"
            if "error" not in result:
                result.update(
                    peak_rss_gib=gib(result.pop("peak_rss")),
                    rss_before_gib=gib(result.pop("rss_before")),
                    decoded_image_gib=gib(3 * size**2),
                    mask_file_mib=round(mask.stat().st_size / 2**20, 2),
                    megapixels_per_s=round(size**2 / 1e6 / result["seconds"], 3),
                )
            results[f"{size}x{size}"] = result
            print(f"  {size}x{size}: {result}", flush=True)
    small, large = results.values()
    summary = {"budget_mb": args.budget_mb}
    if "peak_rss_gib" in small and "peak_rss_gib" in large:
        summary.update(
            large_peak_rss_gib=large["peak_rss_gib"],
            large_decoded_image_gib=large["decoded_image_gib"],
            peak_rss_large_vs_small=round(large["peak_rss_gib"] / small["peak_rss_gib"], 3),
            pixels_large_vs_small=16,
        )
    config = {
        "mosaic": args.mosaic,
        "model": f"fcn8s width {args.mosaic_width}, random weights",
        "budget_mb": args.budget_mb,
    }
    return {"config": config, "summary": summary, "results": results}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=2000, help="images in the generated folder (default 2000)")
    parser.add_argument("--image-size", type=harness.parse_size, default=(360, 480), help="HxW (default 360x480)")
    parser.add_argument("--width", type=float, default=0.25, help="fcn8s channel multiplier (default 0.25)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=1, help="each mode this many times, in turn (medians)")
    parser.add_argument("--modes", type=lambda s: s.split(","), default=list(MODES), help=",".join(MODES))
    parser.add_argument("--mosaic", type=int, default=None, help="instead: predict an N x N GeoTIFF by windows")
    parser.add_argument("--mosaic-width", type=float, default=0.0625, help="channel multiplier for --mosaic")
    parser.add_argument("--budget-mb", type=float, default=512, help="--memory-budget-mb for --mosaic (default 512)")
    parser.add_argument("--timeout", type=float, default=7200, help="seconds per run")
    parser.add_argument(
        "--json", type=Path, default=None, help="default benchmarks/results/predict_stream[_mosaic].json"
    )
    harness.add_child_argument(parser, choices=["mosaic"])
    for hidden in ("--checkpoint", "--mosaic-file", "--out"):
        parser.add_argument(hidden, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child == "mosaic":
        return mosaic_child(args)
    info = harness.machine_info(torch.device("cpu"))
    output = harness.results_document("predict_stream", info, **(mosaic(args) if args.mosaic else throughput(args)))
    print("\n".join(f"{key}: {value}" for key, value in output["summary"].items()))
    name = "predict_stream_mosaic" if args.mosaic else "predict_stream"
    harness.write_json(args.json or harness.results_path(name), output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
