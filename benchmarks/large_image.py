"""Peak memory and time of predicting one large image, tiled against whole-image.

Each mode runs in a fresh process (so its RSS high-water mark is its own) and
saves its mask; the parent compares the masks. Tiling comes from
``fcnseg.inference.tiling.tiling_for_budget(model, budget)``: the largest tile whose
forward pass is estimated to fit the budget. The statement checked is

    peak RSS of the tiled run - RSS after loading the model  <=  --budget-gib

i.e. inference itself stays within the budget, whatever the image size; the
whole-image run shows what it costs without tiling.

Modes: ``whole`` and ``tiled`` use what prediction uses (the model's exact fast paths);
``whole_plain`` and ``tiled_plain`` the plain forward (``fast_paths=False``).

    .venv/bin/python benchmarks/large_image.py                      # 3000x4000, width 1.0 (~11 GB whole-image)
    .venv/bin/python benchmarks/large_image.py --quick              # 3000x4000, width 0.125

Many windows of different sizes fragment glibc's heap (the RSS of the tiled run then grows with
the number of distinct window shapes); ``--mmap-threshold-mib 1`` sets ``MALLOC_MMAP_THRESHOLD_``
for the runs, so that big tensors are mapped and unmapped instead.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import harness
import numpy as np
import torch
from harness import gib
from torch import nn

import fcnseg
from fcnseg.inference.predictor import Predictor
from fcnseg.inference.tiling import Tiling, tiling_for_budget

NUM_CLASSES = 21
MODES = ("whole", "tiled", "whole_plain", "tiled_plain")


def build_model(width: float) -> nn.Module:
    torch.manual_seed(0)
    model = fcnseg.create_model("fcn8s", num_classes=NUM_CLASSES, width=width).eval()
    with torch.no_grad():  # non-zero scores so that the mask has structure worth comparing
        for layer in ("score_fr", "score_pool4", "score_pool3"):
            nn.init.normal_(getattr(model, layer).weight, std=1e-2)
            nn.init.normal_(getattr(model, layer).bias, std=1e-2)
    return model


def make_image(height: int, width: int) -> torch.Tensor:
    """A deterministic uint8 RGB image (3, H, W) with structure at several scales (smooth blobs plus noise)."""
    picture = harness.synthetic_image(height, width, np.random.default_rng(3), blob=256, noise=0.25)
    return torch.from_numpy(picture).permute(2, 0, 1)


def child(args: argparse.Namespace) -> int:
    """One mode in this process: prints peak memory and time as JSON, saves the mask."""
    height, width = args.image_size
    model = build_model(args.width)
    tiling = (
        tiling_for_budget(model, int(args.budget_gib * 2**30))
        if args.tile is None
        else Tiling(args.tile).for_model(model)
    )
    tile = tiling if args.child.startswith("tiled") else None
    predictor = Predictor(model, fast_paths=not args.child.endswith("_plain"), tile=tile)
    image = make_image(height, width)
    built = harness.current_rss_bytes()
    start = time.perf_counter()
    mask = predictor.mask(image)
    seconds = time.perf_counter() - start
    np.save(args.mask_out, mask.numpy())
    return harness.print_child_result(
        {
            "seconds": seconds,
            "peak_rss": harness.peak_rss_bytes(),
            "rss_after_build": built,
            "tile_size": tiling.tile_size if tile else None,
            "margin": tiling.margin if tile else None,
        }
    )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--image-size", type=harness.parse_size, default=(3000, 4000), help="HxW (default 3000x4000)")
    parser.add_argument("--width", type=float, default=None, help="channel multiplier (default 1.0; --quick 0.125)")
    parser.add_argument(
        "--budget-gib", type=float, default=None, help="memory budget of inference (default 3; --quick 0.6)"
    )
    parser.add_argument(
        "--mmap-threshold-mib", type=float, default=None, help="run the modes with MALLOC_MMAP_THRESHOLD_ at this size"
    )
    parser.add_argument("--tile", type=int, default=None, help="tile size instead of the one derived from the budget")
    parser.add_argument(
        "--modes", type=lambda s: s.split(","), default=["whole", "tiled"], help=f"some of {','.join(MODES)}"
    )
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--timeout", type=float, default=3600, help="seconds per mode")
    parser.add_argument("--quick", action="store_true", help="a light network (width 0.125) and budget")
    parser.add_argument("--json", type=Path, default=None, help="default benchmarks/results/large_image[_quick].json")
    harness.add_child_argument(parser, choices=MODES)
    parser.add_argument("--mask-out", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.width = args.width or (0.125 if args.quick else 1.0)
    args.budget_gib = args.budget_gib or (0.6 if args.quick else 3.0)
    unknown = set(args.modes) - set(MODES)
    if unknown:
        parser.error(f"unknown modes {sorted(unknown)}; choose from {MODES}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.child:
        return child(args)
    height, width = args.image_size
    info = harness.machine_info(torch.device("cpu"))
    model = build_model(args.width)
    estimate = model.estimate_forward_bytes(height, width)
    tiling = (
        tiling_for_budget(model, int(args.budget_gib * 2**30)) if args.tile is None else Tiling(tile_size=args.tile)
    )
    print(f"{height}x{width} image, fcn8s width {args.width}: whole-image forward estimated {gib(estimate)} GiB; "
          f"budget {args.budget_gib} GiB -> tiles of {tiling.tile_size} px + {tiling.margin} px margin")  # fmt: skip
    del model
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for mode in args.modes:
            mask_path = Path(tmp) / f"{mode}.npy"
            child_args = ["--mask-out", str(mask_path), "--image-size", f"{height}x{width}"]
            child_args += ["--width", str(args.width), "--budget-gib", str(args.budget_gib)]
            child_args += ["--threads", str(args.threads or torch.get_num_threads())]
            if args.tile is not None:
                child_args += ["--tile", str(args.tile)]
            print(f"running {mode} ...", flush=True)
            env = (
                {"MALLOC_MMAP_THRESHOLD_": str(int(args.mmap_threshold_mib * 2**20))}
                if args.mmap_threshold_mib
                else None
            )
            result = harness.run_child(Path(__file__), mode, child_args, timeout=args.timeout, env=env)
            if "error" not in result:
                result["peak_rss_gib"] = gib(result.pop("peak_rss"))
                result["rss_after_build_gib"] = gib(result.pop("rss_after_build"))
                result["inference_rss_gib"] = round(result["peak_rss_gib"] - result["rss_after_build_gib"], 3)
                result["seconds"] = round(result["seconds"], 2)
                result["mask"] = np.load(mask_path)
            results[mode] = result
            print(f"  {mode}: { ({k: v for k, v in result.items() if k != 'mask'}) }", flush=True)
        masks = {mode: r.pop("mask") for mode, r in results.items() if "mask" in r}
    comparisons = {}
    for whole, tiled in (
        ("whole", "tiled"),
        ("whole_plain", "tiled_plain"),
        ("whole_plain", "whole"),
        ("tiled_plain", "tiled"),
    ):
        if whole in masks and tiled in masks:
            agree = float((masks[whole] == masks[tiled]).mean())
            comparisons[f"{tiled}_vs_{whole}_mask_agreement"] = round(agree, 6)
    summary: dict[str, Any] = dict(comparisons)
    for mode in ("tiled", "tiled_plain"):
        if mode in results and "inference_rss_gib" in results[mode]:
            summary[f"{mode}_within_budget"] = results[mode]["inference_rss_gib"] <= args.budget_gib
    for tiled, whole in (("tiled", "whole"), ("tiled_plain", "whole_plain")):
        if "seconds" in results.get(tiled, {}) and "seconds" in results.get(whole, {}):
            summary[f"{tiled}_time_vs_{whole}"] = round(results[tiled]["seconds"] / results[whole]["seconds"], 3)
            summary[f"{tiled}_peak_rss_vs_{whole}"] = round(
                results[tiled]["peak_rss_gib"] / results[whole]["peak_rss_gib"], 3
            )
    output = harness.results_document(
        "large_image",
        info,
        config={
            "image_size": [height, width],
            "width": args.width,
            "budget_gib": args.budget_gib,
            "tile_size": tiling.tile_size,
            "margin": tiling.margin,
            "whole_image_forward_estimate_gib": gib(estimate),
            "quick": args.quick,
            "malloc_mmap_threshold_mib": args.mmap_threshold_mib,
        },  # fmt: skip
        summary=summary,
        results=results,
    )
    rows = [[m, r.get("seconds", "error"), r.get("peak_rss_gib", ""), r.get("inference_rss_gib", ""),
             r.get("tile_size") or "whole"]
            for m, r in results.items()]  # fmt: skip
    print("\n" + harness.format_table(rows, ["mode", "seconds", "peak RSS GiB", "inference RSS GiB", "tile"]))
    print("\n".join(f"{k}: {v}" for k, v in summary.items()))
    harness.write_json(args.json or harness.results_path("large_image", args.quick), output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
