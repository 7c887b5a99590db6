"""``fcnseg eval``: the paper's four metrics and per-class IU of a checkpoint on a dataset split."""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

import torch

from ..checkpoint import Checkpoint, CheckpointError, load_checkpoint
from ..files import atomic_write_text
from ..metrics import ConfusionMatrix
from ..models.fast import optimize_for_inference
from ..tiling import Tiling

NAME = "eval"
HELP = "evaluate a checkpoint on a dataset split (pixel acc, mean acc, mean IU, fw IU, per-class IU)"


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    from ..data import DATASET_KINDS

    parser = subparsers.add_parser(NAME, help=HELP, description=HELP)
    parser.add_argument("checkpoint", help="an fcnseg checkpoint (.safetensors)")
    parser.add_argument("--data", required=True, choices=DATASET_KINDS, help="dataset kind")
    parser.add_argument("--root", default=None, help="dataset folder (not for synthetic)")
    parser.add_argument("--split", default="val", help="split name or list file (default val)")
    parser.add_argument("--data-option", action="append", default=[], metavar="KEY=VALUE",
                        help="dataset option, VALUE as JSON if it parses (e.g. num_images=32, sbd_root=PATH); repeatable")
    parser.add_argument("--limit", type=int, default=None, help="evaluate only the first N images")
    parser.add_argument("--json", type=Path, default=None, help="write the metrics, per-class IU and the matrix as JSON")
    parser.add_argument("--out", type=Path, default=None, help="folder for metrics.json and confusion_matrix.png")
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:1, ... (default: cuda when available)")
    parser.add_argument("--tile-size", type=int, default=None, help="evaluate in tiles (same result, bounded memory)")
    parser.add_argument("--no-fast-paths", action="store_true",
                        help="run the plain layer-by-layer model instead of its exact inference twin "
                             "(fcnseg.models.fast: same geometry, logits equal to fp32 rounding, ~0.7x the time on the CPU)")
    parser.add_argument("--workers", type=int, default=0, help="data loading processes (default 0)")


def _data_options(pairs: list[str]) -> dict[str, Any]:
    options: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"--data-option expects KEY=VALUE, got {pair!r}")
        try:
            options[key] = json.loads(value)
        except json.JSONDecodeError:
            options[key] = value
    return options


def _open_data(args: argparse.Namespace, checkpoint: Checkpoint):
    from ..data import open_dataset

    options = _data_options(args.data_option)
    has_names = args.data == "folder" and args.root and (Path(args.root) / "classes.txt").is_file()
    if args.data == "folder" and not has_names and not {"classes", "num_classes"} & set(options):
        options["classes"] = checkpoint.classes  # a folder without classes.txt takes the checkpoint's names
    options.setdefault("ignore_index", checkpoint.ignore_index)
    return open_dataset(args.data, args.root, args.split, **options)


def check_classes(checkpoint_classes: list[str], data_classes: list[str], checkpoint_path: str) -> None:
    """Raise :class:`CheckpointError` when the checkpoint's classes are not the dataset's."""
    if len(checkpoint_classes) != len(data_classes):
        raise CheckpointError(f"{checkpoint_path} predicts {len(checkpoint_classes)} classes but the dataset has "
                              f"{len(data_classes)} ({', '.join(data_classes)})")
    differ = [(i, a, b) for i, (a, b) in enumerate(zip(checkpoint_classes, data_classes)) if a != b]
    if differ:
        shown = "; ".join(f"id {i}: checkpoint {a!r}, dataset {b!r}" for i, a, b in differ[:5])
        raise CheckpointError(f"{checkpoint_path}: class names differ from the dataset's ({shown})")


def _nan_to_none(value: Any) -> Any:
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, list):
        return [_nan_to_none(v) for v in value]
    if isinstance(value, dict):
        return {k: _nan_to_none(v) for k, v in value.items()}
    return value


def report(matrix: ConfusionMatrix, classes: list[str]) -> dict[str, Any]:
    """The metrics plus a per-class table (IU, accuracy, ground-truth pixels) and the raw matrix."""
    metrics = matrix.compute()
    counts = matrix.matrix.cpu().to(torch.float64)
    totals = counts.sum(dim=1)
    nan = torch.tensor(float("nan"), dtype=torch.float64)
    accuracy = torch.where(totals > 0, counts.diag() / totals.clamp(min=1), nan)
    per_class = {name: {"iu": iu, "acc": float(acc), "pixels": int(t)}
                 for name, iu, acc, t in zip(classes, metrics["iu"], accuracy.tolist(), totals.tolist())}
    return {**metrics, "classes": list(classes), "per_class": per_class,
            "confusion_matrix": matrix.matrix.cpu().tolist()}


def format_report(result: dict[str, Any]) -> str:
    """The four metrics and the per-class table, as printed by ``fcnseg eval``."""
    lines = [f"{label:<10} {result[key]:.4f}" for key, label in
             (("pixel_acc", "pixel acc"), ("mean_acc", "mean acc"), ("mean_iu", "mean IU"), ("fw_iu", "fw IU"))]
    width = max(12, *(len(name) for name in result["classes"]))
    lines += ["", f"{'class':<{width}} {'IU':>7} {'acc':>7} {'pixels':>12}"]
    for name, row in result["per_class"].items():
        iu = "-" if math.isnan(row["iu"]) else f"{row['iu']:.4f}"  # '-': absent from GT and prediction
        acc = "-" if math.isnan(row["acc"]) else f"{row['acc']:.4f}"
        lines.append(f"{name:<{width}} {iu:>7} {acc:>7} {row['pixels']:>12,}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from ..data import DatasetError
    from ..evaluate import confusion_matrix
    from ..visualize import confusion_matrix_figure

    def fail(message: str) -> int:
        print(f"fcnseg eval: error: {message}", file=sys.stderr)
        return 2

    try:
        checkpoint = load_checkpoint(args.checkpoint)
        dataset = _open_data(args, checkpoint)
        check_classes(checkpoint.classes, list(dataset.classes), args.checkpoint)
    except (CheckpointError, DatasetError, ValueError) as error:
        return fail(str(error))
    if args.limit is not None:
        dataset = torch.utils.data.Subset(dataset, range(min(args.limit, len(dataset))))
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          "cpu" if args.device == "auto" else args.device)
    tile = Tiling(args.tile_size) if args.tile_size else None
    model = checkpoint.model.to(device).eval()
    if not args.no_fast_paths:
        model = optimize_for_inference(model)
    try:
        matrix = confusion_matrix(model, dataset, len(checkpoint.classes), device, checkpoint.ignore_index,
                                  tile=tile, num_workers=args.workers)
    except (DatasetError, ValueError) as error:  # a bad file or a label outside the classes
        return fail(str(error))
    result = report(matrix, checkpoint.classes)
    name = checkpoint.model.config.get("name", "model")
    print(f"{args.checkpoint} ({name}, {len(checkpoint.classes)} classes) on {args.data} {args.split}: {len(dataset)} images")
    print(format_report(result))
    document = _nan_to_none({"checkpoint": str(args.checkpoint), "data": {"kind": args.data, "root": args.root,
                             "split": args.split, "images": len(dataset)}, **result})
    text = json.dumps(document, indent=2) + "\n"
    if args.json:
        atomic_write_text(args.json, text)
        print(f"wrote {args.json}")
    if args.out:
        atomic_write_text(args.out / "metrics.json", text)
        confusion_matrix_figure(matrix.matrix, checkpoint.classes, args.out / "confusion_matrix.png",
                                title=f"{Path(args.checkpoint).name} on {args.data} {args.split}: mean IU {result['mean_iu']:.3f}")
        print(f"wrote {args.out / 'metrics.json'} and {args.out / 'confusion_matrix.png'}")
    return 0
