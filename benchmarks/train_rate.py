"""``fcnseg train`` against the compute it runs: the training loop's rate as a share of the pure step's.

In one run, in rounds (one of each per round, each in a fresh process, medians over rounds):

- ``pure``: forward + backward + optimiser step of the camvid recipe's model on one fixed batch of the
  nominal size (8 x 3 x 180 x 240), built from the same pieces as ``fcnseg train`` (model, loss,
  optimiser, bf16 autocast where the CPU has it, the same thread count and determinism settings);
- ``fcnseg train --recipe camvid`` for ``--steps`` steps (no validation until the last step), in each
  variant: ``before`` (``--set recipe.crop_size=native --no-cache``: batches padded to their largest
  scaled image, every item read from disk), ``after`` (the recipe's defaults: crops of exactly 180x240,
  the decoded splits cached), and, when asked, ``crop_only`` and ``cache_only``.

A training step is timed as ``fcnseg train`` times it (loading its batch included; the run's
``train_seconds``), skipping the first ``--skip`` steps (kernel set-up). Reported per variant: s/step,
the pure step's share of it (``pure_over_train``: 1.0 means the loop costs nothing beyond the
compute), steps per 30 minutes of training, and the seconds the process spent outside the training loop
(start-up, reading the cache, the final validation of one image and save).

    .venv/bin/python benchmarks/train_rate.py                       # quiet machine: 3 rounds of 60 steps
    .venv/bin/python benchmarks/train_rate.py --rounds 1 --steps 12 --pure-steps 8   # a smoke run

Results: benchmarks/results/train_rate.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import harness
from harness import PROJECT_ROOT

MODEL = ["--set", "model.name=fcn8s_mobilenet_v3_large", "--set", "model.width=1"]
#: Variant -> the settings it gives ``fcnseg train`` over the camvid recipe.
VARIANTS: dict[str, list[str]] = {
    "before": ["--set", "recipe.crop_size=native", "--no-cache"],
    "after": [],
    "crop_only": ["--no-cache"],
    "cache_only": ["--set", "recipe.crop_size=native"],
}
NOMINAL = (180, 240)
BATCH = 8
HALF_HOUR = 1800.0


def default_root() -> Path:
    shared_data = os.environ.get("FCNSEG_SHARED_DATA")
    return Path(shared_data) / "camvid" if shared_data else harness.SHARED / "data" / "camvid"


# --- the pure step (run in a child process: --child pure) --------------------------------------


def pure_step_probe(steps: int, skip: int, threads: int) -> dict[str, Any]:
    """Seconds per forward + backward + optimiser step of the camvid model on one nominal batch."""
    import torch

    from fcnseg.engine import build_config, build_loss, build_optimizer
    from fcnseg.engine.loss import loss_for_model
    from fcnseg.engine.train import cpu_has_native_bf16, determinism
    from fcnseg.models import create_model

    config = build_config("camvid", settings=[("model.name", "fcn8s_mobilenet_v3_large"), ("model.width", 1)])
    recipe, classes = config.recipe, 11
    bf16 = cpu_has_native_bf16()
    with determinism(threads, torch.device("cpu")):
        torch.manual_seed(0)
        options = {key: value for key, value in config.model.items() if key != "name"}
        model = create_model(config.model["name"], num_classes=classes, fast_paths=config.fast_paths, **options)
        loss = loss_for_model(build_loss(recipe.loss, reduction=recipe.reduction, ignore_index=255), model)
        optimizer = build_optimizer(
            model,
            name=recipe.optimizer,
            lr=recipe.lr,
            momentum=recipe.momentum,
            weight_decay=recipe.weight_decay,
            bias_lr_mult=recipe.bias_lr_mult,
            bias_decay=recipe.bias_decay,
            norm_decay=recipe.norm_decay,
        )
        generator = torch.Generator().manual_seed(0)
        images = torch.randint(0, 256, (BATCH, 3, *NOMINAL), dtype=torch.uint8, generator=generator)
        masks = torch.randint(0, classes, (BATCH, *NOMINAL), generator=generator)
        model.train()

        def step() -> None:
            autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16)
            with autocast:
                logits = model(model.prepare_input(images))
            (loss.summed(logits, masks) / loss.normalizer(masks)).backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

        times = []
        for _ in range(skip + steps):
            started = time.perf_counter()
            step()
            times.append(time.perf_counter() - started)
    timed = times[skip:]
    return {
        "s_per_step": statistics.mean(timed),
        "median_s_per_step": statistics.median(timed),
        "steps": steps,
        "bf16": bf16,
        "threads": threads,
    }


# --- fcnseg train ------------------------------------------------------------------------------


def train_variant(name: str, args: argparse.Namespace, bf16: bool) -> dict[str, Any]:
    """One ``fcnseg train`` run of the camvid recipe with MobileNetV3 in variant ``name``."""
    return timed_train(args.runs / name, args.root, MODEL + VARIANTS[name], args.steps, args.threads, args.skip, bf16)


def timed_train(
    out: Path, root: Path, options: list[str], steps: int, threads: int, skip: int, bf16: bool, recipe: str = "camvid"
) -> dict[str, Any]:
    """``fcnseg train --recipe RECIPE OPTIONS`` for ``steps`` steps in a fresh process; its per-step times.

    A step is timed as the run times it (loading its batch included: ``train_seconds`` in metrics.jsonl),
    the first ``skip`` steps left out (kernel set-up).
    """
    command = [
        sys.executable,
        "-m",
        "fcnseg",
        "train",
        "--recipe",
        recipe,
        "--root",
        str(root),
        "--out",
        str(out),
        "--overwrite",
        "--steps",
        str(steps),
        "--evals",
        "1",
        "--val-limit",
        "1",
        "--overlays",
        "0",
        "--threads",
        str(threads),
        "--seed",
        "0",
        "--log-every",
        "1",
        "--no-progress",
        *(["--cpu-bf16"] if bf16 else []),
        *options,
    ]
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT)}
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, cwd=PROJECT_ROOT, env=env)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"fcnseg train ({out.name}) failed (exit {done.returncode}): {done.stderr[-2000:]}")
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    clock = [0.0] + [r["train_seconds"] for r in records if "loss" in r]
    durations = [b - a for a, b in zip(clock, clock[1:], strict=False)][skip:]
    cache_line = next((line for line in done.stderr.splitlines() if "cached in memory" in line), None)
    return {
        "s_per_step": statistics.mean(durations),
        "median_s_per_step": statistics.median(durations),
        "steps_timed": len(durations),
        "wall_s": round(wall, 1),
        "outside_loop_s": round(wall - max(r["time"] for r in records), 1),
        "cache": cache_line,
        "command": " ".join(command[1:]),
    }


# --- rounds and the summary --------------------------------------------------------------------


def summarise(rounds: list[dict[str, Any]], variants: list[str]) -> dict[str, Any]:
    pure = statistics.median(r["pure"]["s_per_step"] for r in rounds)
    summary: dict[str, Any] = {"pure": {"s_per_step": round(pure, 4), "steps_per_30_min": round(HALF_HOUR / pure)}}
    for name in variants:
        per_step = statistics.median(r[name]["s_per_step"] for r in rounds)
        summary[name] = {
            "s_per_step": round(per_step, 4),
            "pure_over_train": round(pure / per_step, 3),
            "steps_per_30_min": round(HALF_HOUR / per_step),
            "outside_loop_s": statistics.median(r[name]["outside_loop_s"] for r in rounds),
        }
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=60, help="training steps of each fcnseg train run (default 60)")
    parser.add_argument("--pure-steps", type=int, default=30, help="timed pure steps per round (default 30)")
    parser.add_argument("--skip", type=int, default=3, help="first steps left out of every timing (default 3)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of (pure, each variant); medians (default 3)")
    parser.add_argument("--variants", default="before,after", help=f"of {', '.join(VARIANTS)} (default before,after)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--root", type=Path, default=default_root(), help="CamVid folder")
    parser.add_argument("--runs", type=Path, default=PROJECT_ROOT / "runs" / "train_rate")
    parser.add_argument("--json", type=Path, default=PROJECT_ROOT / "benchmarks" / "results" / "train_rate.json")
    harness.add_child_argument(parser, choices=["pure"])
    args = parser.parse_args(argv)
    if args.child:
        return harness.print_child_result(pure_step_probe(args.pure_steps, args.skip, args.threads))
    if not (args.root / "train.txt").is_file():
        print(f"CamVid not found at {args.root} (give --root)", file=sys.stderr)
        return 2
    variants = args.variants.split(",")
    unknown = [name for name in variants if name not in VARIANTS]
    if unknown:
        parser.error(f"unknown variant(s) {unknown}; known: {', '.join(VARIANTS)}")
    import torch

    from fcnseg.engine.train import cpu_has_native_bf16

    bf16 = cpu_has_native_bf16()
    machine = harness.machine_info(torch.device("cpu"))
    rounds = []
    for index in range(args.rounds):
        record: dict[str, Any] = {
            "pure": harness.run_child(
                Path(__file__),
                "pure",
                [
                    "--pure-steps",
                    str(args.pure_steps),
                    "--skip",
                    str(args.skip),
                    "--threads",
                    str(args.threads),
                ],
            )
        }
        if "error" in record["pure"]:
            raise SystemExit(record["pure"]["error"])
        for name in variants:
            record[name] = train_variant(name, args, bf16)
        rounds.append(record)
        print(
            f"round {index + 1}/{args.rounds}: "
            + ", ".join(f"{name} {r['s_per_step']:.3f} s/step" for name, r in record.items()),
            flush=True,
        )
    summary = summarise(rounds, variants)
    machine["load_average_end"] = list(os.getloadavg())
    config = {
        "recipe": "camvid",
        "model": "fcn8s_mobilenet_v3_large width 1",
        "batch": [BATCH, 3, *NOMINAL],
        "bf16": bf16,
        "threads": args.threads,
        "steps": args.steps,
        "pure_steps": args.pure_steps,
        "skip": args.skip,
        "rounds": args.rounds,
        "variants": {name: VARIANTS[name] for name in variants},
    }
    harness.write_json(
        args.json,
        {
            "benchmark": "train_rate",
            "command": " ".join(["benchmarks/train_rate.py", *(argv or sys.argv[1:])]),
            "machine": machine,
            "config": config,
            "summary": summary,
            "rounds": rounds,
        },
    )
    for name, figures in summary.items():
        print(
            f"{name:>10}: {figures['s_per_step']:.3f} s/step, {figures['steps_per_30_min']} steps per 30 min"
            + (f", pure/train {figures['pure_over_train']:.2f}" if name != "pure" else "")
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
