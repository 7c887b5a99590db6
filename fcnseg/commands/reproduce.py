"""``fcnseg reproduce NAME --voc PATH --sbd PATH``: a published model on seg11valid beside its published figures."""

from __future__ import annotations

import argparse

from .errors import reports_errors

NAME = "reproduce"
HELP = "score published weights (fcnseg weights list) on seg11valid and print the paper's figures beside them"
METRICS = (("pixel_acc", "pixel acc"), ("mean_acc", "mean acc"), ("mean_iu", "mean IU"), ("fw_iu", "fw IU"))


def _positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}")
    return int(text)


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        NAME,
        help=HELP,
        description=HELP + " (seg11valid = VOC2011 segmentation val "
        "minus SBD train, 736 images; the weights are fetched and converted on first use)",
    )
    parser.add_argument("name", help="published weights, e.g. fcn8s-voc")
    parser.add_argument("--voc", required=True, help="VOCdevkit or VOC20xx folder (VOC2012 holds every VOC2011 image)")
    parser.add_argument("--sbd", required=True, help="the SBD 'dataset' folder holding train.txt (or train.txt itself)")
    parser.add_argument(
        "--voc2011-val",
        default=None,
        help="the VOC2011 segmentation val.txt (default: from a VOC2011 folder beside --voc)",
    )
    parser.add_argument("--limit", type=_positive, default=None, help="score only the first N images (a quick check)")
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:1, ... (default: cuda when available)")


def format_comparison(metrics: dict, published: tuple) -> str:
    """The four metrics in percent, with each published source's figure and the difference (measured - published)."""
    header = f"{'metric':<10} {'measured':>9}" + "".join(
        f" {f'[{i}]':>7} {'diff':>7}" for i in range(1, len(published) + 1)
    )
    lines = [header]
    for key, label in METRICS:
        measured = 100 * metrics[key]
        row = f"{label:<10} {measured:>9.2f}"
        for reference in published:
            value = reference.metrics.get(key)
            row += f" {value:>7.1f} {measured - value:>+7.2f}" if value is not None else f" {'-':>7} {'-':>7}"
        lines.append(row)
    lines += [f"[{i}] {reference.source}" for i, reference in enumerate(published, start=1)]
    lines.append("(percent; diff = measured - published, in points)")
    return "\n".join(lines)


@reports_errors(NAME)
def run(args: argparse.Namespace) -> int:
    import torch

    from ..data import SegmentationDataset, open_dataset
    from ..evaluation.loop import evaluate
    from ..inference.predictor import load_predictor
    from ..weights import WeightsError, known_weights
    from ..weights.convert import convert_known

    entry = known_weights(args.name)
    if not entry.published:
        raise WeightsError(f"{entry.name}: no published seg11valid figures to compare with")
    opened = open_dataset("voc", args.voc, "seg11valid", sbd_root=args.sbd, voc2011_val=args.voc2011_val)
    predictor, checkpoint = load_predictor(convert_known(entry), device=args.device)
    total = len(opened)
    dataset: torch.utils.data.Subset | SegmentationDataset = opened
    if args.limit is not None:
        dataset = torch.utils.data.Subset(opened, range(min(args.limit, total)))
    device = predictor.device
    metrics = evaluate(predictor, dataset, len(checkpoint.classes), ignore_index=checkpoint.ignore_index)
    print(f"{entry.name} ({entry.model}) on seg11valid: {len(dataset)} of {total} images, {device}")
    if len(dataset) < total:
        print("(a subset: not comparable with the published figures, which are over the whole set)")
    print(format_comparison(metrics, entry.published))
    return 0
