"""``fcnseg export``: a checkpoint to ONNX, verified against PyTorch before it is kept."""

from __future__ import annotations

import argparse
import sys

from ..export.onnx import DEFAULT_CHECK_SHAPES, EXPORTERS, ExportError, ParityTolerance
from .errors import CommandError, reports_errors

NAME = "export"
HELP = "export a checkpoint to ONNX (dynamic batch/height/width), verified with ONNX Runtime"


def _shape(text: str) -> tuple[int, int, int, int]:
    try:
        shape = tuple(int(part) for part in text.lower().split("x"))
    except ValueError:
        shape = ()
    if len(shape) != 4 or shape[1] != 3 or min(shape) < 1:
        raise argparse.ArgumentTypeError(f"expected NxCxHxW with C=3, e.g. 1x3x37x53, got {text!r}")
    return shape


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    defaults = ParityTolerance()
    parser = subparsers.add_parser(NAME, help=HELP, description=HELP)
    parser.add_argument(
        "checkpoint", help="an fcnseg checkpoint (.safetensors) or a published weights name (fcnseg weights list)"
    )
    parser.add_argument("--format", choices=["onnx"], default="onnx", help="export format (default onnx)")
    parser.add_argument(
        "--out", required=True, help="output file, e.g. model.onnx (written atomically, only if verified)"
    )
    parser.add_argument(
        "--exporter",
        choices=EXPORTERS,
        default="dynamo",
        help="torch.onnx exporter: dynamo (default, torch.export based) or torchscript "
        "(legacy, faster, deprecated by PyTorch)",
    )
    parser.add_argument(
        "--probabilities",
        action="store_true",
        help="append a Softmax over the classes: the graph outputs 'probabilities' (N, C, H, W) instead of "
        "'logits' (metadata 'output' says which); verified against torch.softmax of the logits",
    )
    parser.add_argument("--opset", type=int, default=None, help="ONNX opset (default: the exporter's own)")
    parser.add_argument(
        "--check-shape",
        type=_shape,
        action="append",
        dest="check_shapes",
        metavar="NxCxHxW",
        help="input shape to verify at (repeatable; default "
        + ", ".join("x".join(map(str, s)) for s in DEFAULT_CHECK_SHAPES)
        + ")",
    )
    parser.add_argument(
        "--rtol",
        type=float,
        default=defaults.rtol,
        help=f"allowed max|diff| per max|logit| (default {defaults.rtol:g})",
    )
    parser.add_argument(
        "--atol",
        type=float,
        default=defaults.atol,
        help=f"allowed absolute max|diff| on top (default {defaults.atol:g})",
    )
    parser.add_argument(
        "--min-mask-agreement",
        type=float,
        default=defaults.min_mask_agreement,
        help=f"fraction of pixels whose arg-max must agree (default {defaults.min_mask_agreement:g})",
    )
    add_int8_arguments(parser)


def add_int8_arguments(parser: argparse.ArgumentParser) -> None:
    from ..export.int8 import DEFAULT_CALIBRATION_IMAGES, DEFAULT_MIN_AGREEMENT, METHODS, QUANTIZERS
    from .arguments import key_value

    group = parser.add_argument_group("int8 (post-training static quantization, calibrated on your images)")
    group.add_argument(
        "--int8",
        action="store_true",
        help="write an int8 QDQ model instead of fp32, kept only if its masks agree with fp32's on the "
        "calibration images (run it with fcnseg predict --runtime openvino)",
    )
    group.add_argument(
        "--calibrate",
        metavar="DIR_OR_SPLIT",
        help="a folder of images (files that cannot be read are skipped and listed), or with "
        "--calibrate-data the split of a dataset (labelled: mean IU reported)",
    )
    group.add_argument("--calibrate-data", metavar="KIND", help="dataset kind of --calibrate (e.g. folder, voc)")
    group.add_argument("--calibrate-root", metavar="PATH", help="dataset folder of --calibrate-data")
    group.add_argument(
        "--calibrate-option",
        type=key_value,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="dataset option, e.g. resize=[180,240] (repeatable)",
    )
    group.add_argument(
        "--calibrate-images",
        type=int,
        default=DEFAULT_CALIBRATION_IMAGES,
        metavar="N",
        help="use N images spread over the folder or split (default %(default)s; 0: all)",
    )
    group.add_argument("--quantizer", choices=QUANTIZERS, default=QUANTIZERS[0], help="default %(default)s")
    group.add_argument(
        "--method",
        default=None,
        help="; ".join(f"{q}: {', '.join(m)}" for q, m in METHODS.items()) + " (default: the first)",
    )
    group.add_argument(
        "--min-agreement",
        type=float,
        default=DEFAULT_MIN_AGREEMENT,
        help="share of calibration pixels whose int8 class must equal fp32's (default %(default)s)",
    )
    group.add_argument(
        "--accuracy-control",
        action="store_true",
        help="nncf: put the layers that cost most agreement back in fp32, one at a time, until "
        "--min-agreement is met (a slower export; for models whose plain int8 file is refused)",
    )


def check_int8_arguments(args: argparse.Namespace) -> None:
    """The ``--int8`` arguments, refused in one line (status 2) before anything is loaded."""
    from ..export.int8 import check_int8_settings

    if args.calibrate and not args.int8:
        raise CommandError("--calibrate is for --int8 exports")
    if not args.int8:
        return
    if args.probabilities:
        raise CommandError("--int8 exports logits; --probabilities is for fp32 exports")
    if not args.calibrate:
        raise CommandError("--int8 needs --calibrate DIR (images like yours) or a split with --calibrate-data")
    check_int8_settings(args.quantizer, args.method, args.min_agreement, args.accuracy_control)
    if args.calibrate_images < 0:
        raise CommandError(f"--calibrate-images must be >= 0 (0: all), got {args.calibrate_images}")


def export_int8_from_args(args: argparse.Namespace, tolerance: ParityTolerance) -> int:
    """The ``--int8`` path of :func:`run` (its arguments checked by :func:`check_int8_arguments`)."""
    from ..checkpoint import load_checkpoint
    from ..export.int8 import calibration_folder, calibration_split, export_int8
    from ..weights import resolve_checkpoint
    from .eval import check_classes

    checkpoint = load_checkpoint(resolve_checkpoint(args.checkpoint), fast_paths=False)
    limit = args.calibrate_images or None
    if args.calibrate_data:
        options = {"ignore_index": checkpoint.ignore_index, **dict(args.calibrate_option)}
        calibration = calibration_split(args.calibrate_data, args.calibrate_root, args.calibrate, limit, **options)
        assert calibration.classes is not None  # a calibration split of a dataset carries its classes
        check_classes(checkpoint.classes, calibration.classes, args.checkpoint)
    else:
        calibration = calibration_folder(args.calibrate, limit)
    if calibration.skipped:  # the export goes on with the readable images, as predict does
        print(
            f"fcnseg export: skipped {len(calibration.skipped)} file(s) of {args.calibrate} that cannot be read "
            f"(calibrating on {len(calibration.images)} image(s)):",
            file=sys.stderr,
        )
        for reason in calibration.skipped:
            print(f"  {reason}", file=sys.stderr)
    report = export_int8(
        checkpoint,
        args.out,
        calibration,
        quantizer=args.quantizer,
        method=args.method,
        min_agreement=args.min_agreement,
        accuracy_control=args.accuracy_control,
        exporter=args.exporter,
        opset=args.opset,
        check_shapes=args.check_shapes or DEFAULT_CHECK_SHAPES,
        tolerance=tolerance,
    )
    print(
        f"int8 ({report.quantizer} {report.method}) calibrated on {report.images} images of {calibration.source}, "
        f"{report.seconds:.0f} s; {report.fp32_layers[0]} of {report.fp32_layers[1]} layers with weights left in "
        f"fp32; verified against fp32 on them:"
    )
    for agreement in report.agreements:
        print(f"  {agreement.describe(report.min_agreement)}")
    print(f"wrote {report.path}")
    return 0


# A checkpoint, dataset or setting that is not right: status 2; an export that fails its verification: 1.
@reports_errors(NAME, failed=(ExportError,))
def run(args: argparse.Namespace) -> int:
    from ..export.onnx import export_onnx
    from ..weights import resolve_checkpoint

    tolerance = ParityTolerance(rtol=args.rtol, atol=args.atol, min_mask_agreement=args.min_mask_agreement)
    check_int8_arguments(args)
    if args.int8:
        return export_int8_from_args(args, tolerance)
    report = export_onnx(
        resolve_checkpoint(args.checkpoint),
        args.out,
        exporter=args.exporter,
        opset=args.opset,
        check_shapes=args.check_shapes or DEFAULT_CHECK_SHAPES,
        tolerance=tolerance,
        probabilities=args.probabilities,
    )
    output = "probability" if args.probabilities else "logit"
    print(
        f"verified with ONNX Runtime ({report.exporter} exporter; pass if max|diff| <= {tolerance.rtol:g} * "
        f"max|{output}| + {tolerance.atol:g}):"
    )
    for result in report.results:
        print(f"  {result.describe()}")
    print(f"wrote {report.path}")
    return 0
