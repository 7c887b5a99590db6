"""``fcnseg weights list | fetch NAME | convert FILE.caffemodel``: published weights by name."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..checkpoint import CheckpointError
from ..weights import WeightsError
from ..weights.registry import KnownWeights
from .errors import reports_errors

NAME = "weights"
HELP = "list, download (verified, resumable) and convert the published FCN and VGG16 weights"


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        NAME,
        help=HELP,
        description=HELP + ". Cache: $FCNSEG_HOME, else ~/.cache/fcnseg; "
        "$FCNSEG_WEIGHTS_MIRROR=<base URL> is tried before the published links.",
    )
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    actions.add_parser("list", help="the known weights: model, classes, preprocessing, size, checksum, URL, status")
    fetch = actions.add_parser("fetch", help="download NAME into the cache (and convert it to a checkpoint)")
    fetch.add_argument("name", help="a name from 'fcnseg weights list', e.g. fcn8s-voc")
    convert = actions.add_parser(
        "convert",
        help="a published FCN .caffemodel to an fcnseg checkpoint (PASCAL VOC's "
        "21 classes, or --classes / --like for SIFT Flow and NYUDv2)",
    )
    convert.add_argument("caffemodel", type=Path, help="e.g. fcn8s-heavy-pascal.caffemodel")
    convert.add_argument(
        "--model",
        help="the fcnseg model the file holds: fcn32s, fcn16s, fcn8s, fcn8s_atonce, siftflow_fcn8s, ... (or --like)",
    )
    convert.add_argument(
        "--like",
        metavar="NAME",
        help="take the model, classes and input of a name of "
        "'fcnseg weights list' (e.g. fcn32s-nyud-hha) for a copy of that file",
    )
    convert.add_argument(
        "--classes",
        choices=("voc", "siftflow", "nyud"),
        default=None,
        help="class names and palette (default voc; with --like: that entry's)",
    )
    convert.add_argument("--out", required=True, type=Path, help="checkpoint to write (.safetensors, atomically)")
    convert.add_argument("--width", type=float, default=1.0, help="channel multiplier of the model (default 1.0)")


def _status(entry: KnownWeights) -> str:
    from ..models import list_models
    from ..weights.convert import checkpoint_path
    from ..weights.download import download_path

    if entry.unsupported:
        return f"not supported yet: {entry.unsupported}"
    if entry.model and entry.model not in list_models():
        return f"needs the model {entry.model!r} (not in this fcnseg yet)"
    found = [
        label
        for label, path in (("downloaded", download_path(entry)), ("converted", checkpoint_path(entry)))
        if path.is_file()
    ]
    return ", ".join(found) or "not downloaded"


def _list() -> int:
    from ..weights import registry
    from ..weights.download import cache_dir

    print(f"cache: {cache_dir()}")
    print(f"{'name':<22} {'model':<13} {'classes':<14} {'input':<12} {'size':>8}  checksum / status")
    for entry in registry.KNOWN_WEIGHTS.values():
        size = (
            f"{entry.size_bytes / 1e6:.0f} MB"
            if entry.size_bytes
            else f"~{entry.approx_mb} MB"
            if entry.approx_mb
            else "?"
        )
        print(
            f"{entry.name:<22} {entry.model or 'backbone':<13} {entry.classes.split(' ')[0]:<14} "
            f"{entry.preprocessing:<12} {size:>8}  {entry.checksum or 'no checksum published'}"
        )
        print(f"{'':<22} {entry.description}; {_status(entry)}")
        for url in entry.urls:
            print(f"{'':<22} {url}")
    return 0


# A name not in the list, a file that does not convert, a download that failed: all status 1.
@reports_errors(NAME, bad_input=(), failed=(WeightsError, CheckpointError))
def run(args: argparse.Namespace) -> int:
    from ..weights import convert_caffemodel, fetch, known_weights
    from ..weights.convert import check_convertible, convert_known

    if args.action == "list":
        return _list()
    if args.action == "convert":
        like = known_weights(args.like) if args.like else None
        if like is not None:
            check_convertible(like)
        model = args.model or (like.model if like else None)
        if not model:
            raise WeightsError("weights convert: say which model the file holds: --model NAME or --like NAME")
        classes = args.classes or (like.classes if like else "voc")
        out = convert_caffemodel(
            args.caffemodel,
            model,
            args.out,
            width=args.width,
            classes=classes,
            caffe_input=like.caffe_input if like else "",
        )
        print(
            f"wrote {out} ({model}, {classes} classes, Caffe preprocessing"
            f"{' (' + like.caffe_input + ' mean)' if like and like.caffe_input else ''})"
        )
        return 0
    entry = known_weights(args.name)
    if entry.is_backbone:
        path = fetch(entry)
        init = "caffe" if entry.preprocessing == "caffe" else "vgg16-torchvision"
        print(f"{path}\n(initial weights for training: fcnseg train --init {init}:{path} ...)")
    else:
        checkpoint = convert_known(entry)
        print(f"{checkpoint}\n(a checkpoint; commands that take one also take the name {entry.name})")
    return 0
