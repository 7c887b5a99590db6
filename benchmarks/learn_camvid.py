"""Learning curve on real data: CamVid val mean IU (and the other three metrics) against training time.

A thin caller of the engine: it runs ``fcnseg train --recipe camvid`` (the recipe ships in
``fcnseg/recipes/camvid.json``) with the same settings a user would give, then reads the run's
``metrics.jsonl`` and writes the curve as JSON and a picture. The engine trains to the
clock (``--minutes``): the schedule spans the budget of training time, validations fall at
evenly spaced moments of it, and the clock excludes validation. Two set-ups:

* CPU (default there): the recipe as shipped: a light FCN-8s (width 0.25) from scratch on
  CamVid resized to 180x240, AdamW with poly decay over the clock, flips and mild scaling.
* GPU: the full FCN-8s (width 1.0) at the native 360x480 with bf16 autocast (the recipe's ``amp``).

The same run from the command line (what this script records)::

    fcnseg train --recipe camvid --root ../shared/data/camvid --minutes 30 --out runs/camvid

``--class-weights median-frequency`` weights the loss by median frequency (SegNet's remedy
for CamVid's class imbalance; the weights computed from the training masks are printed
beside SegNet's published ones).

    .venv/bin/python benchmarks/learn_camvid.py                       # CPU: 30 min + validations
    .venv/bin/python benchmarks/learn_camvid.py --quick               # 2 minutes, 3 validations on 20 images
    .venv/bin/python benchmarks/learn_camvid.py --class-weights median-frequency
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import harness
import torch
from harness import PROJECT_ROOT

from fcnseg.checkpoint import read_description
from fcnseg.engine import build_config, train

CAMVID = harness.CAMVID
#: SegNet's median-frequency weights for CamVid (shared/data/camvid README), by class id.
SEGNET_WEIGHTS = [0.2595, 0.1826, 4.5640, 0.1417, 0.9051, 0.3826, 9.6446, 1.8418, 0.6823, 6.2478, 7.3614]
METRICS = ("mean_iu", "pixel_acc", "mean_acc", "fw_iu")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, default=CAMVID, help="CamVid folder (images/, masks/, train.txt, val.txt)")
    parser.add_argument("--device", default="auto")
    parser.add_argument(
        "--minutes", type=float, default=None, help="training wall-clock budget (default 30; --quick 2)"
    )
    parser.add_argument(
        "--evals", type=int, default=None, help="validations spread over the budget (default 10; --quick 3)"
    )
    parser.add_argument(
        "--width", type=float, default=None, help="channel multiplier (default: the recipe's on CPU, 1.0 on GPU)"
    )
    parser.add_argument(
        "--resolution",
        default=None,
        help="HxW to train and validate at, or native (default: the recipe's on CPU, native on GPU)",
    )
    parser.add_argument("--recipe", default="camvid", help="engine recipe (default camvid)")
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument(
        "--steps", type=int, default=None, help="step-based schedule of this length (default: over the clock)"
    )
    parser.add_argument("--class-weights", choices=["none", "median-frequency"], default="none")
    parser.add_argument(
        "--init", default=None, help="initial weights for the engine (e.g. a VGG16 source); default scratch"
    )
    parser.add_argument("--val-limit", type=int, default=None, help="validate on the first N val images only")
    parser.add_argument("--no-fast-paths", action="store_true", help="train every layer as written (same gradients)")
    parser.add_argument(
        "--cpu-bf16", action="store_true", help="bf16 autocast on a CPU with native bf16 (default fp32)"
    )
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None, help="run folder (default runs/learn_camvid_<device>)")
    parser.add_argument(
        "--json", type=Path, default=None, help="curve JSON (default benchmarks/results/learn_camvid_<device>.json)"
    )
    parser.add_argument("--quick", action="store_true", help="2-minute smoke run")
    args = parser.parse_args(argv)
    args.minutes = args.minutes if args.minutes is not None else (2.0 if args.quick else 30.0)
    args.evals = args.evals or (3 if args.quick else 10)
    if args.quick and args.val_limit is None:
        args.val_limit = 20
    return args


def settings_for(args: argparse.Namespace, device: torch.device) -> list[tuple[str, Any]]:
    """The engine settings (dotted keys, as ``fcnseg train --set``) of this benchmark run."""
    gpu = device.type == "cuda"
    settings: list[tuple[str, Any]] = [
        ("root", str(args.root)), ("device", str(device)), ("seed", args.seed), ("threads", args.threads),
        ("val_limit", args.val_limit), ("progress", False), ("overlays", 0), ("recipe.evals", args.evals),
        ("cpu_bf16", args.cpu_bf16), ("fast_paths", not args.no_fast_paths), ("init", args.init),
        ("class_weights", None if args.class_weights == "none" else args.class_weights),
    ]  # fmt: skip
    if args.steps:
        settings += [
            ("recipe.minutes", None),
            ("recipe.steps", args.steps),
            ("recipe.val_every", max(1, args.steps // args.evals)),
        ]
    else:
        settings.append(("recipe.minutes", args.minutes))
    if args.width or gpu:
        settings.append(("model.width", args.width or 1.0))
    resolution = args.resolution or ("native" if gpu else None)
    if resolution == "native":
        settings.append(("data_options.resize", None))
    elif resolution:
        settings.append(("data_options.resize", [int(v) for v in resolution.lower().split("x")]))
    if args.batch_size:
        settings.append(("recipe.batch_size", args.batch_size))
    return settings


def read_curve(run_dir: Path) -> tuple[list[dict[str, Any]], list[tuple[float, float]]]:
    """Validation points and (training seconds, loss) pairs from a run's metrics.jsonl."""
    curve, losses = [], []
    for line in (run_dir / "metrics.jsonl").read_text(encoding="utf-8").splitlines():
        record = json.loads(line)
        if "val" in record:
            val = record["val"]
            curve.append({"train_seconds": round(record["train_seconds"], 1), "step": record["step"],
                          **{m: round(float(val[m]), 4) for m in METRICS},
                          "iu": [None if v is None else round(float(v), 4) for v in val["iu"]]})  # fmt: skip
        elif "loss" in record:
            losses.append((record["train_seconds"], record["loss"]))
    return curve, losses


def plot(curve: list[dict[str, Any]], losses: list[tuple[float, float]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    minutes = [point["train_seconds"] / 60 for point in curve]
    for metric in METRICS:
        left.plot(minutes, [point[metric] for point in curve], marker="o", label=metric)
    left.set_xlabel("training wall time (min)")
    left.set_ylabel("CamVid val")
    left.set_ylim(0, 1)
    left.grid(alpha=0.3)
    left.legend()
    if losses:
        times, values = [t / 60 for t, _ in losses], [value for _, value in losses]
        right.plot(times, values, linewidth=0.6, alpha=0.4, label="per step")
        window = max(1, len(values) // 30)
        smooth = [
            sum(values[max(0, i - window + 1) : i + 1]) / len(values[max(0, i - window + 1) : i + 1])
            for i in range(len(values))
        ]
        right.plot(times, smooth, linewidth=1.5, label=f"mean of {window}")
        right.legend()
    right.set_xlabel("training wall time (min)")
    right.set_ylabel("training loss")
    right.grid(alpha=0.3)
    figure.suptitle(title)
    figure.tight_layout()
    with harness.atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", dpi=110)
    plt.close(figure)
    print(f"wrote {path}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not (args.root / "train.txt").is_file():
        print(f"CamVid not found at {args.root} (expected images/, masks/, train.txt, val.txt)", file=sys.stderr)
        return 2
    device = harness.resolve_device(args.device)
    config = build_config(args.recipe, settings=settings_for(args, device))
    info = harness.machine_info(device)
    print(f"machine: {info['cpu']}, GPU: {info['gpu']}, load {info['load_average_start']}")
    out_dir = args.out or PROJECT_ROOT / "runs" / f"learn_camvid_{device.type}"
    result = train(config, out_dir, overwrite=True)
    curve, losses = read_curve(out_dir)
    for point in curve:
        print(f"[{point['train_seconds'] / 60:5.1f} min, step {point['step']}] "
              + ", ".join(f"{m} {point[m]:.3f}" for m in METRICS))  # fmt: skip
    if config.class_weights:
        print("SegNet's published median-frequency weights:", SEGNET_WEIGHTS)
    final, trained = curve[-1], curve[-1]["train_seconds"]
    images = result.step * config.recipe.batch_size
    model, resize = config.model, config.data_options.get("resize")
    resolution = "x".join(map(str, resize)) if resize else "native 360x480"
    result_json = harness.results_document(
        "learn_camvid", info,
        equivalent="fcnseg train --recipe " + args.recipe + " "
        + " ".join(f"--set {k}={json.dumps(v)}" for k, v in settings_for(args, device)),
        config=config.to_dict() | {"resolution": resolution},
        final={m: final[m] for m in METRICS} | {"train_minutes": round(trained / 60, 2), "steps": result.step,
                                                 "images": images,
                                                 "train_images_per_s": round(images / max(trained, 1e-9), 3)},
        classes=read_description(out_dir / "last.safetensors")["classes"],
        curve=curve,
        loss=[[round(t, 1), round(v, 5)] for t, v in losses[:: max(1, len(losses) // 400)]],
    )  # fmt: skip
    print(f"final after {trained / 60:.1f} min ({result.step} steps, {images / max(trained, 1e-9):.2f} images/s): "
          + ", ".join(f"{m} {final[m]:.3f}" for m in METRICS))  # fmt: skip
    json_path = args.json or harness.results_path(f"learn_camvid_{device.type}", args.quick)
    harness.write_json(json_path, result_json)
    title = f"CamVid val, {model['name']} width {model.get('width')} at {resolution} on {device.type}"
    plot(curve, losses, json_path.with_suffix(".png"), title)
    return 0


if __name__ == "__main__":
    sys.exit(main())
