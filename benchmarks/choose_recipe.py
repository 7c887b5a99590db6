"""Which CPU recipe: model x loss x resolution (x TTA at evaluation), at equal training time, on an unseen sequence.

Every candidate is the ``camvid`` recipe as it stood when measured (``BASE_RECIPE``: FCN-8s head, AdamW,
poly decay, scale jitter cropped to the training size, bf16 autocast where the CPU has it) with one model,
loss and training resolution. Candidates
get the same *time*, not the same steps: a probe times each one alone (``fcnseg train`` for ``--probe-steps``
steps, at ``--probe-threads``), and each trains for the steps that fit ``--minutes`` at that rate.
Training itself is step-counted, so a loaded machine changes how long a row takes, never its result.

Training leaves out CamVid's sequence 0006R0 (the split of ``small_objects.py``); each final model is
evaluated on val (sequence 0016E5, which training also sees: it flatters) and on 0006R0 ("unseen"), at its
own resolution, with TTA (scales 0.75, 1, 1.5 and flips), and on 0006R0's full 360x480 labels (a 180x240
model predicts at 180x240 and its scores are resized up, as ``--tta-scales 0.5`` does).

The row ``mnv3_ce_180_native`` is the crop's effect on mean IU: ``mnv3_ce_180`` with every batch padded to
its largest scaled image instead of cropped to 180x240, at ``mnv3_ce_180``'s step count (equal steps: the
padded batches cost more time, so at equal time it would get fewer).

    .venv/bin/python benchmarks/choose_recipe.py --seeds 0,1                 # every row (hours on 2 cores)
    .venv/bin/python benchmarks/choose_recipe.py --rows mnv3_ce_180 --minutes 1 --probe-steps 6   # a smoke run

Two processes of one thread each (``--threads 1``, different ``--rows``) share the results file; the probes
(written there first) must run alone: ``--probe-only`` before starting them.

Results: benchmarks/results/choose_recipe.json and a markdown table (.md). Runs are kept under
runs/choose_recipe/<row>_s<seed>; a row whose run finished is not trained again.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import statistics
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import harness
import small_objects
import train_rate
from harness import PROJECT_ROOT
from small_objects import BASE_RECIPE, base_recipe  # noqa: F401  (the base every row varies)

CAMVID = harness.CAMVID
MNV3 = ["model.name=fcn8s_mobilenet_v3_large", "model.width=1"]
THIN_LOSS = ["recipe.loss=focal", "recipe.loss_options.gamma=2", "class_weights=effective-number"]
FULL_SIZE = ["data_options.resize=[360,480]"]
#: Row -> its settings over the camvid recipe (``--set``); ``steps_of``: train as many steps as that row.
ROWS: dict[str, dict[str, Any]] = {
    "vgg_ce_180": {"set": ["model.name=fcn8s", "model.width=0.25"]},
    "mnv3_ce_180": {"set": MNV3},
    "r18_ce_180": {"set": ["model.name=fcn8s_resnet18", "model.width=1"]},
    "mnv3_thin_180": {"set": MNV3 + THIN_LOSS},
    "mnv3_ce_360": {"set": MNV3 + FULL_SIZE},
    "mnv3_thin_360": {"set": MNV3 + THIN_LOSS + FULL_SIZE},
    "mnv3_ce_180_native": {"set": [*MNV3, "recipe.crop_size=native"], "steps_of": "mnv3_ce_180"},
}
TTA = ["--tta-scales", "0.75,1,1.5", "--tta-flip"]
EVALUATIONS = ("val", "unseen", "unseen_tta", "unseen_full")


def settings(row: str) -> list[str]:
    return [option for setting in ROWS[row]["set"] for option in ("--set", setting)]


def full_size(row: str) -> bool:
    return any(setting in FULL_SIZE for setting in ROWS[row]["set"])


@contextlib.contextmanager
def locked(path: Path) -> Iterator[dict[str, Any]]:
    """The results document, read and written under a lock (processes share it)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        document = json.loads(path.read_text()) if path.is_file() else {"probes": {}, "rows": {}}
        yield document
        harness.write_json(path, document)


def probe(row: str, args: argparse.Namespace) -> dict[str, Any]:
    """Seconds per step of ``row``, alone on the machine (it sets every row's step count)."""
    timing = train_rate.timed_train(
        args.runs / f"probe_{row}",
        CAMVID,
        settings(row),
        args.probe_steps,
        args.probe_threads,
        skip=min(3, args.probe_steps // 3),
        bf16=True,
        recipe=str(small_objects.base_recipe(args.runs)),
    )
    return {"s_per_step": timing["median_s_per_step"], "threads": args.probe_threads, "steps": args.probe_steps}


def steps_for(row: str, probes: dict[str, Any], minutes: float) -> int:
    source = ROWS[row].get("steps_of", row)
    return max(1, round(minutes * 60 / probes[source]["s_per_step"]))


def train(row: str, seed: int, steps: int, args: argparse.Namespace, train_split: Path) -> Path:
    out = args.runs / f"{row}_s{seed}"
    return small_objects.train_run(out, train_split, steps, seed, args.threads, ["--cpu-bf16", *settings(row)])


def evaluate(row: str, run: Path, unseen: Path) -> dict[str, Any]:
    torch_only = ["--runtime", "torch"]  # the same masks as the compiled path, without an export per run
    full = [] if full_size(row) else ["--data-option", "resize=[360,480]", "--tta-scales", "0.5"]
    plans = {
        "val": ("val", torch_only),
        "unseen": (unseen, torch_only),
        "unseen_tta": (unseen, torch_only + TTA),
        "unseen_full": (unseen, torch_only + full),
    }
    return {
        name: small_objects.evaluate_row(run, split, options, run / f"eval_{name}.json")
        for name, (split, options) in plans.items()
    }


def summary(rows: dict[str, Any]) -> dict[str, Any]:
    """Per row: the mean over its seeds of every figure."""
    out: dict[str, Any] = {}
    for row in ROWS:
        records = [r for key, r in rows.items() if key.rsplit("_s", 1)[0] == row]
        if records:
            out[row] = {
                "seeds": len(records),
                "steps": records[0]["steps"],
                **{
                    f"{evaluation} {figure}": statistics.mean(r[evaluation][figure] for r in records)
                    for evaluation in EVALUATIONS
                    for figure in ("mean_iu", "thin_mean_iu")
                    if all(r[evaluation][figure] is not None for r in records)
                },
            }
    return out


def table(document: dict[str, Any]) -> str:
    keys = [f"{e} {f}" for e in EVALUATIONS for f in ("mean_iu", "thin_mean_iu")]
    rows = []
    for row, figures in summary(document["rows"]).items():
        per_seed = [
            f"{r['unseen']['mean_iu']:.3f}" for key, r in sorted(document["rows"].items()) if key.startswith(row + "_s")
        ]
        cells = [f"{figures[k]:.3f}" if k in figures else "-" for k in keys]
        rows.append([row, figures["seeds"], figures["steps"], *cells, " / ".join(per_seed)])
    return harness.format_table(rows, ["row", "seeds", "steps", *keys, "unseen mean_iu per seed"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", default=",".join(ROWS), help="comma-separated rows (default all)")
    parser.add_argument("--seeds", default="0", help="comma-separated seeds (default 0)")
    parser.add_argument("--minutes", type=float, default=10.0, help="training time of every row (default 10)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads of each training run")
    parser.add_argument("--probe-steps", type=int, default=30)
    parser.add_argument("--probe-threads", type=int, default=2)
    parser.add_argument("--probe-only", action="store_true", help="time the rows, train nothing")
    parser.add_argument("--runs", type=Path, default=PROJECT_ROOT / "runs" / "choose_recipe")
    parser.add_argument("--json", type=Path, default=harness.results_path("choose_recipe"))
    args = parser.parse_args(argv)
    if not (CAMVID / "train.txt").is_file():
        print(f"CamVid not found at {CAMVID}", file=sys.stderr)
        return 2
    rows = args.rows.split(",")
    unknown = [row for row in rows if row not in ROWS]
    if unknown:
        parser.error(f"unknown row(s) {unknown}; known: {', '.join(ROWS)}")
    import torch

    torch.set_num_threads(args.threads)  # evaluations in this process use the same threads as training
    train_split, unseen = small_objects.splits(args.runs / "splits")
    with locked(args.json) as document:
        document.setdefault("machine", harness.machine_info(torch.device("cpu")))
        document["config"] = {"recipe": "camvid", "minutes": args.minutes, "held_out": small_objects.HELD_OUT}
        for row in rows:
            source = ROWS[row].get("steps_of", row)
            if source not in document["probes"]:
                document["probes"][source] = probe(source, args)
                print(f"probe {source}: {document['probes'][source]['s_per_step']:.3f} s/step", flush=True)
        probes = document["probes"]
    if args.probe_only:
        return 0
    for row in rows:
        for seed in (int(s) for s in args.seeds.split(",")):
            steps = steps_for(row, probes, args.minutes)
            run = train(row, seed, steps, args, train_split)
            record = {"steps": steps, "settings": ROWS[row]["set"], **evaluate(row, run, unseen)}
            with locked(args.json) as document:
                document["rows"][f"{row}_s{seed}"] = record
                markdown = table(document)
            harness.atomic_write_text(args.json.with_suffix(".md"), markdown + "\n")
            print(
                f"{row} seed {seed} ({steps} steps): val {record['val']['mean_iu']:.3f}, unseen "
                f"{record['unseen']['mean_iu']:.3f} (TTA {record['unseen_tta']['mean_iu']:.3f}, full size "
                f"{record['unseen_full']['mean_iu']:.3f}), unseen thin {record['unseen']['thin_mean_iu']:.3f}",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
