"""``fcnseg data``: open a dataset, check every item, print class statistics and weights."""

from __future__ import annotations

import argparse
import json

from .arguments import key_value

NAME = "data"
HELP = "check a dataset and print its class frequencies and median-frequency weights"


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(NAME, help=HELP, description=HELP)
    parser.add_argument("--data", default="synthetic", metavar="KIND", help="dataset kind: synthetic, voc, sbd, folder")
    parser.add_argument("--root", default=None, metavar="PATH", help="dataset folder (none for synthetic)")
    parser.add_argument("--split", default="train", help="split name or path to an id list (default train)")
    parser.add_argument("--data-option", type=key_value, action="append", default=[], metavar="KEY=VALUE",
                        help="dataset option, e.g. num_classes=11, ignore_index=0, sbd_root=PATH (JSON values)")
    parser.add_argument("--no-check", action="store_true", help="skip decoding every image (counts masks only)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")


def run(args: argparse.Namespace) -> int:
    from ..data import DatasetError, class_statistics, open_dataset

    try:
        dataset = open_dataset(args.data, args.root, args.split, **dict(args.data_option))
        bad = [] if args.no_check else dataset.find_bad_items()
        if not bad:
            stats = class_statistics(dataset, progress=not args.json)
    except DatasetError as error:
        print(f"error: {error}")
        return 2
    if bad:
        for index, message in bad:
            print(f"bad item {index}: {message}")
        print(f"{len(bad)} of {len(dataset)} items are bad (open with skip_bad=true to skip them)")
        return 1
    weights = stats.median_frequency_weights()
    total = max(1, int(stats.pixel_counts.sum()))
    rows = [
        {"id": index, "class": name, "pixels": int(stats.pixel_counts[index]),
         "share": int(stats.pixel_counts[index]) / total, "images": int(stats.image_counts[index]),
         "frequency": float(stats.frequencies[index]), "weight": float(weights[index])}
        for index, name in enumerate(dataset.classes)
    ]  # fmt: skip
    if args.json:
        print(json.dumps({"items": len(dataset), "ignore_index": dataset.ignore_index, "classes": rows}))
        return 0
    print(f"{len(dataset)} items, {dataset.num_classes} classes, ignore value {dataset.ignore_index}: all readable")
    print(f"{'id':>3} {'class':<16} {'pixels':>12} {'share':>7} {'images':>7} {'freq':>7} {'weight':>8}")
    for row in rows:
        print(f"{row['id']:>3} {row['class']:<16} {row['pixels']:>12,} {row['share']:>7.2%} {row['images']:>7} "
              f"{row['frequency']:>7.4f} {row['weight']:>8.4f}")
    print("weight = median(freq) / freq, freq = class pixels / pixels of the images holding the class (SegNet)")
    return 0
