"""``fcnseg eval``: the paper's four metrics and per-class IU of a checkpoint on a dataset split."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from ..checkpoint import Checkpoint, CheckpointError
from ..evaluation.metrics import format_report, json_safe
from ..files import atomic_write_text
from .arguments import add_runtime_arguments, add_tta_arguments, key_value
from .errors import reports_errors

if TYPE_CHECKING:
    from ..evaluation.calibration_error import ReliabilityBins
    from ..evaluation.metrics import ConfusionMatrix
    from ..inference.predictor import Predictor

NAME = "eval"
HELP = "evaluate a checkpoint on a dataset split (pixel acc, mean acc, mean IU, fw IU, per-class IU)"


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    from ..data import DATASET_KINDS

    parser = subparsers.add_parser(
        NAME,
        help=HELP,
        description=HELP + ". Without --data, the dataset the checkpoint "
        "was trained on (kind, root and options, as recorded in it).",
    )
    parser.add_argument(
        "checkpoint", help="an fcnseg checkpoint (.safetensors), a registry name, or an ONNX export (.onnx)"
    )
    parser.add_argument(
        "--data", default=None, choices=DATASET_KINDS, help="dataset kind (default: the training data's)"
    )
    parser.add_argument(
        "--root",
        default=None,
        help="dataset folder (not for synthetic); alone (no --data), it overrides the recorded root "
        "and keeps the recorded options: the same data, moved",
    )
    parser.add_argument("--split", default="val", help="split name or list file (default val)")
    parser.add_argument(
        "--data-option",
        type=key_value,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="dataset option, VALUE as JSON if it parses (e.g. num_images=32, sbd_root=PATH); repeatable; "
        "on the training data's kind and root, over the options recorded in the checkpoint",
    )
    parser.add_argument("--limit", type=int, default=None, help="evaluate only the first N images")
    parser.add_argument(
        "--json", type=Path, default=None, help="write the metrics, per-class IU and the matrix as JSON"
    )
    parser.add_argument("--out", type=Path, default=None, help="folder for metrics.json and confusion_matrix.png")
    parser.add_argument("--device", default="auto", help="auto (default: cuda when available), cpu, cuda, cuda:1, ...")
    parser.add_argument("--tile-size", type=int, default=None, help="evaluate in tiles (same result, bounded memory)")
    parser.add_argument(
        "--no-fast-paths",
        action="store_true",
        help="run every layer as written instead of the model's exact fast paths (same masks)",
    )
    add_tta_arguments(parser)
    add_runtime_arguments(parser)
    parser.add_argument("--workers", type=int, default=0, help="data loading processes (default 0)")
    parser.add_argument(
        "--no-progress",
        action="store_true",
        help="no progress on stderr (by default a bar on a terminal, elsewhere a line every 30 s)",
    )
    parser.add_argument(
        "--detail",
        action="store_true",
        help="also IU by object size (segments < 32x32, 32x32-96x96, > 96x96 px), boundary IoU (band 2%% of "
        "the diagonal), Dice/F1 per class and per-image mean IU; with --out, worst_images.png",
    )
    parser.add_argument(
        "--worst",
        type=int,
        default=6,
        metavar="K",
        help="worst images listed and drawn in worst_images.png (default 6)",
    )
    parser.add_argument(
        "--calibration",
        action="store_true",
        help="also report the expected calibration error of the top-1 probability: ECE = sum_b (n_b/N) "
        "|acc_b - conf_b| over 15 equal-width bins (b/15, (b+1)/15] of all non-ignored pixels; "
        "with --out, also reliability_diagram.png",
    )


def _same_root(given: str | None, recorded: str | None) -> bool:
    """Whether a root names the recorded one (``--root a`` and the absolute path of ``a`` are the same folder)."""
    if not given or not recorded:
        return not given and not recorded
    return os.path.abspath(given) == os.path.abspath(recorded)


def data_spec(args: argparse.Namespace, checkpoint: Checkpoint) -> tuple[str, str | None, dict[str, Any]]:
    """(kind, root, options) to evaluate on: the command line's, over what the checkpoint recorded of its training
    data."""
    recorded = checkpoint.extra.get("data")
    recorded = recorded if isinstance(recorded, dict) else {}
    kind = args.data or recorded.get("kind")
    if kind is None:
        raise CheckpointError(f"{args.checkpoint} records no training data: give --data (and --root)")
    from_checkpoint = args.root is None and not args.data
    root = recorded.get("root") if from_checkpoint else args.root
    if from_checkpoint and root and not Path(root).exists():
        where = "" if Path(root).is_absolute() else " (relative to the folder training ran in)"
        raise CheckpointError(
            f"dataset folder {root}{where} does not exist; it is the training data's root recorded in "
            f"{args.checkpoint}: give --root DIR, which overrides the recorded root"
        )
    # --root alone moves the training data (its options still apply); --data names other data unless it is the same.
    same = kind == recorded.get("kind") and (not args.data or _same_root(root, recorded.get("root")))
    options = {**(recorded.get("options") or {} if same else {}), **dict(args.data_option)}
    has_names = kind == "folder" and root and (Path(root) / "classes.txt").is_file()
    if kind == "folder" and not has_names and not {"classes", "num_classes"} & set(options):
        options["classes"] = checkpoint.classes  # a folder without classes.txt takes the checkpoint's names
    options.setdefault("ignore_index", checkpoint.ignore_index)
    return kind, root, options


def check_classes(checkpoint_classes: list[str], data_classes: list[str], checkpoint_path: str) -> None:
    """Raise :class:`CheckpointError` when the checkpoint's classes are not the dataset's."""
    if len(checkpoint_classes) != len(data_classes):
        raise CheckpointError(
            f"{checkpoint_path} predicts {len(checkpoint_classes)} classes but the dataset has "
            f"{len(data_classes)} ({', '.join(data_classes)})"
        )
    differ = [(i, a, b) for i, (a, b) in enumerate(zip(checkpoint_classes, data_classes, strict=True)) if a != b]
    if differ:
        shown = "; ".join(f"id {i}: checkpoint {a!r}, dataset {b!r}" for i, a, b in differ[:5])
        raise CheckpointError(f"{checkpoint_path}: class names differ from the dataset's ({shown})")


def worst_images(scores: list[float], count: int) -> list[int]:
    """Indices of the ``count`` lowest per-image scores, worst first (ties in dataset order; NaN left out)."""
    return sorted((i for i, v in enumerate(scores) if v == v), key=lambda i: scores[i])[:count]  # v == v: not NaN


def format_detail(detail: dict[str, Any], dataset: Any, worst: int = 5) -> str:
    """The small-object figures of ``--detail``, as printed; the ``worst`` images by mean IU are listed."""
    lines = [
        "",
        "by object size (ground-truth segments): "
        + "  ".join(
            f"{b['name']} {b['segments']:,} segments, pixel acc {b['pixel_acc']:.4f}, mean IU {b['mean_iu']:.4f}"
            for b in detail["size"]["bins"]
        ),
    ]
    lines.append(
        f"mean boundary IoU {detail['boundary']['mean_boundary_iou']:.4f} (band "
        f"{detail['boundary']['ratio']:.0%} of the diagonal); mean Dice {detail['dice']['mean_dice']:.4f}"
    )
    per_image = detail["per_image"]
    scores = per_image["mean_iu"]
    lines.append(
        f"per-image mean IU: mean {per_image['mean']:.4f}; worst: "
        + ", ".join(f"{_image_id(dataset, i)} {scores[i]:.3f}" for i in worst_images(scores, worst))
    )
    return "\n".join(lines)


def _image_id(dataset: Any, index: int) -> str:
    base = getattr(dataset, "dataset", dataset)  # a Subset (--limit) keeps the ids of its dataset
    ids = getattr(base, "ids", None)
    return str(ids[getattr(dataset, "indices", range(len(dataset)))[index]]) if ids is not None else str(index)


def _run_heads(args: argparse.Namespace, predictor: Any, checkpoint: Checkpoint, dataset: Any) -> int:
    """``fcnseg eval`` of a model with several heads: the four metrics and the class table of each head."""
    from ..evaluation.loop import head_confusion_matrices

    matrices = head_confusion_matrices(
        predictor,
        dataset,
        ignore_index=checkpoint.ignore_index,
        num_workers=args.workers,
        progress=not args.no_progress,
    )
    reports, start = {}, 0
    for name, matrix in matrices.items():
        classes = checkpoint.classes[start : start + matrix.num_classes]
        start += matrix.num_classes
        reports[name] = matrix.report(classes)
        print(f"head {name} ({len(classes)} classes):\n{format_report(reports[name])}\n")
    text = json.dumps(json_safe({"checkpoint": str(args.checkpoint), "heads": reports}), indent=2) + "\n"
    for path in [args.json] + ([args.out / "metrics.json"] if args.out else []):
        if path:
            atomic_write_text(path, text)
            print(f"wrote {path}")
    return 0


@reports_errors(NAME)
def run(args: argparse.Namespace) -> int:
    from ..data import SegmentationDataset, open_dataset
    from ..evaluation.calibration_error import calibrate
    from ..evaluation.detail_metrics import BoundaryIoU, DiceScore, PerImageIU, SizeIU
    from ..evaluation.loop import confusion_matrix
    from ..inference.predictor import load_predictor

    predictor, checkpoint = load_predictor(
        args.checkpoint,
        device=args.device,
        fast_paths=not args.no_fast_paths,
        tile=args.tile_size,
        tta_scales=args.tta_scales,
        tta_flip=args.tta_flip,
        runtime=args.runtime,
        dtype=args.dtype,
    )
    kind, root, options = data_spec(args, checkpoint)
    opened = open_dataset(kind, root, args.split, **options)
    check_classes(checkpoint.classes, list(opened.classes), args.checkpoint)
    dataset: torch.utils.data.Subset | SegmentationDataset = opened
    if args.limit is not None:
        dataset = torch.utils.data.Subset(opened, range(min(args.limit, len(opened))))
    n, ignore = len(checkpoint.classes), checkpoint.ignore_index
    if checkpoint.model.heads:  # e.g. SIFT Flow: one report per head
        return _run_heads(args, predictor, checkpoint, dataset)
    detail: dict[str, SizeIU | BoundaryIoU | DiceScore | PerImageIU] = (
        {
            "size": SizeIU(n, ignore),
            "boundary": BoundaryIoU(n, ignore),
            "dice": DiceScore(n, ignore),
            "per_image": PerImageIU(n, ignore),
        }
        if args.detail
        else {}
    )
    # A bad file or a label outside the classes raises a DatasetError or ValueError: one line, status 2.
    if args.calibration:  # one pass gives both: the masks are the arg-max of the probabilities binned
        matrix, bins = calibrate(
            predictor,
            dataset,
            n,
            ignore,
            num_workers=args.workers,
            progress=not args.no_progress,
            accumulators=list(detail.values()),
        )
    else:
        matrix = confusion_matrix(
            predictor,
            dataset,
            n,
            ignore_index=ignore,
            num_workers=args.workers,
            progress=not args.no_progress,
            accumulators=list(detail.values()),
        )
    result = matrix.report(checkpoint.classes)
    name = checkpoint.model.config.get("name", "model")
    shown_options = {k: v for k, v in options.items() if k not in ("classes", "ignore_index")}
    print(
        f"{args.checkpoint} ({name}, {len(checkpoint.classes)} classes) on {kind} {args.split}"
        f"{' ' + json.dumps(shown_options) if shown_options else ''}: {len(dataset)} images"
    )
    print(format_report(result))
    if args.calibration:
        result["calibration"] = calibration = bins.compute()
        print(
            f"calibration: ECE {calibration['ece']:.4f}, MCE {calibration['mce']:.4f} ({bins.num_bins} bins, "
            f"{calibration['pixels']:,} pixels; accuracy {calibration['accuracy']:.4f}, "
            f"mean top-1 probability {calibration['mean_confidence']:.4f})"
        )
    if detail:
        result["detail"] = {name: accumulator.compute() for name, accumulator in detail.items()}
        print(format_detail(result["detail"], dataset, args.worst))  # the images of worst_images.png
    document = json_safe(
        {
            "checkpoint": str(args.checkpoint),
            "data": {"kind": kind, "root": root, "options": options, "split": args.split, "images": len(dataset)},
            **result,
        }
    )
    text = json.dumps(document, indent=2) + "\n"
    if args.json:
        atomic_write_text(args.json, text)
        print(f"wrote {args.json}")
    if args.out:
        _write_outputs(
            args, text, kind, checkpoint, predictor, dataset, matrix, result, bins if args.calibration else None
        )
    return 0


def _write_outputs(
    args: argparse.Namespace,
    text: str,
    kind: str,
    checkpoint: Checkpoint,
    predictor: Predictor,
    dataset: Any,
    matrix: ConfusionMatrix,
    result: dict[str, Any],
    bins: ReliabilityBins | None,
) -> None:
    """``--out``: metrics.json, the confusion matrix, and with --detail / --calibration their pictures."""
    from ..evaluation.calibration_error import reliability_diagram
    from ..evaluation.figures import confusion_matrix_figure, worst_images_figure

    title = f"{Path(args.checkpoint).name} on {kind} {args.split}"
    atomic_write_text(args.out / "metrics.json", text)
    confusion_matrix_figure(
        matrix.matrix,
        checkpoint.classes,
        args.out / "confusion_matrix.png",
        title=f"{title}: mean IU {result['mean_iu']:.3f}",
    )
    print(f"wrote {args.out / 'metrics.json'} and {args.out / 'confusion_matrix.png'}")
    if "detail" in result:
        scores = result["detail"]["per_image"]["mean_iu"]
        worst = worst_images(scores, args.worst)
        items = [dataset[i] for i in worst]  # predicted again: only these k masks are kept
        worst_images_figure(
            [image for image, _ in items],
            [mask for _, mask in items],
            [predictor.mask(image) for image, _ in items],
            [scores[i] for i in worst],
            checkpoint.palette,
            args.out / "worst_images.png",
            args.worst,
            ids=[_image_id(dataset, i) for i in worst],
            classes=checkpoint.classes,
        )
        print(f"wrote {args.out / 'worst_images.png'}")
    if bins is not None:
        reliability_diagram(bins, args.out / "reliability_diagram.png", title=title)
        print(f"wrote {args.out / 'reliability_diagram.png'}")
