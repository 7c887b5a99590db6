"""``fcnseg data``: the dataset doctor, class statistics and weights, and a fixed copy (``--fix OUT``)."""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import sys
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from .arguments import key_value

if TYPE_CHECKING:
    from ..data import SegmentationDataset

NAME = "data"
HELP = "check a dataset (0/255, colour or JPEG masks, missing classes, ...) and print its class frequencies and weights"

#: The folder kind's layout and options, for ``--help`` texts.
FOLDER_OPTIONS_HELP = """\
folder datasets (--data folder --root DIR): DIR/images/<stem>.jpg|png|..., DIR/masks/<stem>.png
(class ids, one channel: grey or palette PNG), optional DIR/classes.txt (line i = name of id i)
and DIR/<split>.txt (one stem per line). Options, each --data-option KEY=VALUE (JSON values):
  classes=["sky","road"]  class names, if there is no classes.txt
  num_classes=N           or just the number of classes (names class_0, class_1, ...)
  ignore_index=255        the mask value that means "not labelled" (not trained, not scored)
  images_dir=images       the sub-folder of the images
  masks_dir=masks         the sub-folder of the masks
  palette=[[R,G,B],...]   colour of each class (default: distinct colours, none black)
  binary=true             0/255 (0/nonzero) masks: 0 -> class 0 "background", any other value -> 1
  colors=FILE             RGB colour masks, read through a table, one line per colour:
                          "R G B ID [name]" (ID 255 = ignore); fcnseg data proposes one: ids
                          0..K-1, and 255 for a colour that looks unlabelled (black under 10%
                          of the pixels; with more colours than classes, black first, then the
                          colours lying most on region borders)
  val_fraction=0.2        with neither train.txt nor val.txt, splits "train" and "val" are
  split_seed=0            automatic: val = this fraction of the images, picked by the seed
  skip_bad=true           replace unreadable items by the next good one instead of stopping
The split "none" means no split (train --val-split none: no validation); no none.txt is read."""


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    from ..data import DATASET_KINDS

    parser = subparsers.add_parser(
        NAME,
        help=HELP,
        description=HELP,
        epilog=FOLDER_OPTIONS_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--data", default="synthetic", metavar="KIND", help="dataset kind: " + ", ".join(DATASET_KINDS))
    parser.add_argument("--root", default=None, metavar="PATH", help="dataset folder (none for synthetic)")
    parser.add_argument("--split", default="train", help="split name or path to an id list (default train)")
    parser.add_argument(
        "--val-split",
        default=None,
        metavar="SPLIT",
        help="split checked against --split (classes only in one, identical files); "
        "default val for --split train (when it opens), none to skip",
    )
    parser.add_argument(
        "--data-option",
        type=key_value,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="dataset option, e.g. num_classes=11, binary=true, colors=FILE (JSON values; see below)",
    )
    parser.add_argument(
        "--no-check", action="store_true", help="read masks only (no image decoding, size or EXIF checks)"
    )
    parser.add_argument(
        "--fix",
        default=None,
        metavar="OUT",
        help="write a corrected copy of the items of --split and --val-split (folder datasets) to "
        "the new folder OUT; the original is not touched",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")


@contextlib.contextmanager
def _quiet_skips() -> Iterator[None]:
    """Silence the "skipping: ..." log lines of an open: the doctor lists those items as findings instead."""
    log = logging.getLogger("fcnseg.data")
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        log.setLevel(level)


def open_listing_missing(kind: str, root: str | None, split: str, options: dict[str, Any]) -> SegmentationDataset:
    """``open_dataset`` as the options say, except that an item with a missing file does not stop the open.

    The split is opened with ``skip_bad=True`` so that one missing mask does not hide the
    other problems: the dropped items are in the dataset's ``dropped`` and become findings
    (and items ``--fix`` leaves out). ``skip_bad`` is then set back to the user's value.
    """
    from ..data import open_dataset

    with _quiet_skips():
        dataset = open_dataset(kind, root, split, **{**options, "skip_bad": True})
    dataset.skip_bad = bool(options.get("skip_bad", False))
    return dataset


def _open_other(args: argparse.Namespace, options: dict) -> SegmentationDataset | None:
    """The split to check against --split, or None (an unavailable default val split is skipped quietly)."""
    from ..data import NO_SPLIT, DatasetError

    if args.val_split is None and args.split != "train":
        return None
    name = args.val_split or "val"
    if name in (NO_SPLIT, args.split):
        return None
    try:
        return open_listing_missing(args.data, args.root, name, options)
    except DatasetError:
        if args.val_split is not None:
            raise
        return None


def _split_text(info: dict | None) -> str:
    if not info:
        return ""
    if info["source"] == "automatic":
        return (f" (automatic split, val_fraction {info['val_fraction']}, seed {info['seed']}: "
                f"{info['items']} of {info['of']} images)")  # fmt: skip
    return f" (from {info['source']})"


def _fail(message: str) -> int:
    """One line on stderr (stdout holds the report), exit status 2: the dataset is not usable as it is."""
    print(f"fcnseg data: error: {' '.join(message.splitlines())}", file=sys.stderr)
    return 2


def run(args: argparse.Namespace) -> int:
    from ..data import DatasetError, class_statistics, diagnose, write_fixed_copy

    options = dict(args.data_option)
    try:
        dataset = open_listing_missing(args.data, args.root, args.split, options)
        other = _open_other(args, options)
        findings = diagnose(dataset, other, decode_images=not args.no_check)
        fixed = write_fixed_copy([dataset] + ([other] if other is not None else []), args.fix) if args.fix else []
        errors = sum(finding.severity == "error" for finding in findings)
        stats = None if errors or args.fix else class_statistics(dataset, progress=not args.json)
    except DatasetError as error:
        return _fail(str(error))
    except OSError as error:  # e.g. --fix OUT cannot be written (no space, no permission, ...)
        return _fail(f"cannot write the fixed copy to {args.fix}: {error}" if args.fix else str(error))
    # A written copy is the answer to the errors; without one, errors are a dataset error (2) like any other.
    closing = (
        None
        if args.fix or not errors
        else (
            f"{errors} error{'s' if errors > 1 else ''} above: the dataset cannot be used as it is; --fix OUT writes a "
            "corrected copy (converting what it can, leaving out and listing the items it cannot)"
        )
    )
    items = len(dataset) + len(getattr(dataset, "dropped", ()))
    rows = [] if stats is None else [
        {"id": index, "class": name, "pixels": int(stats.pixel_counts[index]),
         "share": int(stats.pixel_counts[index]) / max(1, int(stats.pixel_counts.sum())),
         "images": int(stats.image_counts[index]), "frequency": float(stats.frequencies[index]),
         "weight": float(weight)}
        for (index, name), weight in zip(enumerate(dataset.classes), stats.median_frequency_weights(), strict=True)
    ]  # fmt: skip
    if args.json:
        print(
            json.dumps(
                {
                    "items": items,
                    "ignore_index": dataset.ignore_index,
                    "split": dataset.split_info,
                    "findings": [vars(finding) for finding in findings],
                    "fixed": fixed,
                    "classes": rows,
                }
            )
        )
        return _fail(closing) if closing else 0
    print(
        f"{items} items{_split_text(dataset.split_info)}, {dataset.num_classes} classes, "
        f"ignore value {dataset.ignore_index}" + ("" if errors else ": all readable")
    )
    for finding in findings:
        print(f"{finding.severity}: {finding.message}")
        print("".join(f"    {line}\n" for line in finding.detail.splitlines()), end="")
    for line in fixed:
        print(line)
    if rows:
        print(f"{'id':>3} {'class':<16} {'pixels':>12} {'share':>7} {'images':>7} {'freq':>7} {'weight':>8}")
        for row in rows:
            print(
                f"{row['id']:>3} {row['class']:<16} {row['pixels']:>12,} {row['share']:>7.2%} {row['images']:>7} "
                f"{row['frequency']:>7.4f} {row['weight']:>8.4f}"
            )
        print("weight = median(freq) / freq, freq = class pixels / pixels of the images holding the class (SegNet)")
    return _fail(closing) if closing else 0
