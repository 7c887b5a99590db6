"""Which model for a CPU: parameters, GFLOP, latency against the seed FCN-8s, peak memory, file size.

Candidates: ``fcn8s`` (VGG16, width 1 and 0.25), ``fcn_alexnet``, ``fcn8s_resnet18``,
``fcn8s_resnet50``, ``fcn8s_mobilenet_v3_large``, 21 classes, random weights, each with its exact
fast paths (as prediction runs them), and the seed FCN-8s (``../shared/reference/seed_fcn8s.py``,
loaded as ``benchmarks/speed.py`` does) as the time baseline.

* parameters: all of them (learnable and the frozen bilinear upsampling);
* GFLOP: one forward at the input size as executed (fast paths included), counted by
  ``torch.utils.flop_counter`` (2 per multiply-add);
* latency: batch 1, fp32, interleaved rounds (one call of each candidate per round, warm-up excluded),
  median, as a ratio to the seed's median in the same run;
* peak memory: the peak RSS of a fresh process that builds the model and runs one forward, and
  the part of it above the process's RSS before building (weights and activations);
* file size: the model's fcnseg checkpoint (safetensors: weights and description).

    .venv/bin/python benchmarks/models_table.py            # 500x500, 5 rounds (quiet machine: ~10 min)
    .venv/bin/python benchmarks/models_table.py --quick    # smoke run: 192x192, 2 rounds
    .venv/bin/python benchmarks/models_table.py --plain --no-memory   # + each model without its fast paths
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import harness
import torch
from harness import SEED_PATH, median
from speed import load_seed_module
from torch import nn

import fcnseg
from fcnseg.checkpoint import save_checkpoint

NUM_CLASSES = 21
#: Candidate label -> (registered model, width).
CANDIDATES = {
    "fcn8s": ("fcn8s", 1.0),
    "fcn8s_w0.25": ("fcn8s", 0.25),
    "fcn_alexnet": ("fcn_alexnet", 1.0),
    "fcn8s_resnet18": ("fcn8s_resnet18", 1.0),
    "fcn8s_resnet50": ("fcn8s_resnet50", 1.0),
    "fcn8s_mobilenet_v3_large": ("fcn8s_mobilenet_v3_large", 1.0),
}


def build(label: str, seed_path: Path = SEED_PATH) -> nn.Module:
    """A candidate (or ``seed``) in eval mode, random weights, score layers non-zero."""
    torch.manual_seed(0)
    if label == "seed":
        return load_seed_module(seed_path).FCN(n_class=NUM_CLASSES).eval()
    name, width = CANDIDATES[label.removesuffix("_plain")]
    model = fcnseg.create_model(name, num_classes=NUM_CLASSES, width=width, fast_paths=not label.endswith("_plain"))
    model.eval()
    with torch.no_grad():
        for key, parameter in model.named_parameters():
            if key.startswith("score"):
                nn.init.normal_(parameter, std=1e-3)
    return model


def memory_child(label: str, size: int, seed_path: Path) -> int:
    """Child process: build one candidate, run one forward, print its peak RSS (and the RSS before building) as JSON."""
    before = harness.current_rss_bytes()
    model = build(label, seed_path)
    with torch.inference_mode():
        model(torch.randn(1, 3, size, size))
    return harness.print_child_result({"peak_rss": harness.peak_rss_bytes(), "rss_before_build": before})


def checkpoint_bytes(model: nn.Module) -> int:
    with tempfile.TemporaryDirectory() as directory:
        path = save_checkpoint(
            Path(directory) / "model.safetensors",
            model,
            classes=[f"c{i}" for i in range(NUM_CLASSES)],
            palette=[(0, 0, 0)] * NUM_CLASSES,
        )
        return path.stat().st_size


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=None, help="square input side (default 500; --quick 192)")
    parser.add_argument("--repeats", type=int, default=None, help="timed rounds (default 5; --quick 2)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--plain", action="store_true", help="add each model without its fast paths (<name>_plain)")
    parser.add_argument("--no-memory", action="store_true", help="skip the per-candidate peak-memory processes")
    parser.add_argument("--quick", action="store_true", help="smoke run: 192 px, 2 rounds")
    parser.add_argument(
        "--json", type=Path, default=None, help="output (default benchmarks/results/models_table[_quick].json)"
    )
    parser.add_argument("--markdown", type=Path, default=None, help="also write the table as markdown here")
    parser.add_argument("--seed", type=Path, default=SEED_PATH, help=f"the seed FCN-8s (default {SEED_PATH})")
    harness.add_child_argument(parser)  # a candidate's label: its peak memory, measured in a fresh process
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    size = args.size or (192 if args.quick else 500)
    if args.child:
        return memory_child(args.child, size, args.seed)
    if load_seed_module(args.seed) is None:
        raise SystemExit(f"the seed FCN-8s (the time baseline) is not at {args.seed}; give its path with --seed")
    repeats = args.repeats or (2 if args.quick else 5)
    device = torch.device("cpu")
    info = harness.machine_info(device)
    print(
        f"machine: {info['cpu']} ({info['usable_cpus']} usable CPUs, {info['torch_threads']} threads), "
        f"torch {info['torch']}, load {info['load_average_start']}; {size}x{size}, {repeats} rounds"
    )
    x = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(1))
    labels = ["seed", *CANDIDATES, *([f"{label}_plain" for label in CANDIDATES] if args.plain else [])]
    models = {label: build(label, args.seed) for label in labels}
    runs: dict[str, Callable[[], Any]] = {label: (lambda m=model: m(x)) for label, model in models.items()}
    with torch.inference_mode():
        times = harness.interleaved_times(runs, repeats=repeats, warmup=1, device=device)
        flops = {label: harness.count_flops(run) for label, run in runs.items()}
    seed_s = median(times["seed"])
    records = []
    for label in labels:
        model = models[label]
        record = {
            "candidate": label,
            "parameters": sum(p.numel() for p in model.parameters()),
            "gflop": round(flops[label] / 1e9, 1),
            "median_s": round(median(times[label]), 4),
            "times_s": [round(t, 4) for t in times[label]],
            "time_vs_seed": round(median(times[label]) / seed_s, 3),
        }
        if label != "seed":
            record["checkpoint_mb"] = round(checkpoint_bytes(model) / 1e6, 1)
        records.append(record)
    del models, runs
    if not args.no_memory:
        print("peak memory: one fresh process per candidate")
        for record in records:
            result = harness.run_child(
                Path(__file__),
                record["candidate"],
                ["--size", str(size), "--seed", str(args.seed)],
                env={"OMP_NUM_THREADS": str(torch.get_num_threads())},
            )
            if "peak_rss" in result:
                record["peak_rss_gib"] = harness.gib(result["peak_rss"])
                record["peak_over_imports_gib"] = harness.gib(result["peak_rss"] - result["rss_before_build"])
            if "error" in result:
                print(f"  {record['candidate']}: {result['error'][:300]}")
    header = [
        "model",
        "parameters",
        f"GFLOP {size}px",
        "median s",
        "time vs seed",
        "peak RSS GiB",
        "of which model GiB",
        "checkpoint MB",
    ]
    rows = [
        [
            r["candidate"],
            f"{r['parameters']:,}",
            r["gflop"],
            r["median_s"],
            r["time_vs_seed"],
            r.get("peak_rss_gib", ""),
            r.get("peak_over_imports_gib", ""),
            r.get("checkpoint_mb", ""),
        ]
        for r in records
    ]
    text = harness.format_table(rows, header)
    print("\n" + text)
    result = harness.results_document(
        "models_table",
        info,
        config={
            "size": size,
            "repeats": repeats,
            "num_classes": NUM_CLASSES,
            "dtype": "float32",
            "batch": 1,
            "quick": args.quick,
        },
        time=time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        results=records,
    )
    harness.write_json(args.json or harness.results_path("models_table", args.quick), result)
    if args.markdown:
        harness.atomic_write_text(args.markdown, text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
