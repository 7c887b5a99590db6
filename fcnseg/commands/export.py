"""``fcnseg export``: a checkpoint to ONNX, verified against PyTorch before it is kept."""

from __future__ import annotations

import argparse
import sys

NAME = "export"
HELP = "export a checkpoint to ONNX (dynamic batch/height/width), verified with ONNX Runtime"


def _shape(text: str) -> tuple[int, int, int, int]:
    try:
        shape = tuple(int(part) for part in text.lower().split("x"))
    except ValueError:
        shape = ()
    if len(shape) != 4 or shape[1] != 3 or min(shape) < 1:
        raise argparse.ArgumentTypeError(f"expected NxCxHxW with C=3, e.g. 1x3x37x53, got {text!r}")
    return shape  # type: ignore[return-value]


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    from ..export import DEFAULT_CHECK_SHAPES, EXPORTERS, ParityTolerance

    defaults = ParityTolerance()
    parser = subparsers.add_parser(NAME, help=HELP, description=HELP)
    parser.add_argument("checkpoint", help="an fcnseg checkpoint (.safetensors) or a published weights name (fcnseg weights list)")
    parser.add_argument("--format", choices=["onnx"], default="onnx", help="export format (default onnx)")
    parser.add_argument("--out", required=True, help="output file, e.g. model.onnx (written atomically, only if verified)")
    parser.add_argument(
        "--exporter",
        choices=EXPORTERS,
        default="dynamo",
        help="torch.onnx exporter: dynamo (default, torch.export based) or torchscript (legacy, faster, deprecated by PyTorch)",
    )
    parser.add_argument("--probabilities", action="store_true",
                        help="append a Softmax over the classes: the graph outputs 'probabilities' (N, C, H, W) instead of "
                             "'logits' (metadata 'output' says which); verified against torch.softmax of the logits")
    parser.add_argument("--opset", type=int, default=None, help="ONNX opset (default: the exporter's own)")
    parser.add_argument(
        "--check-shape",
        type=_shape,
        action="append",
        dest="check_shapes",
        metavar="NxCxHxW",
        help="input shape to verify at (repeatable; default " + ", ".join("x".join(map(str, s)) for s in DEFAULT_CHECK_SHAPES) + ")",
    )
    parser.add_argument("--rtol", type=float, default=defaults.rtol, help=f"allowed max|diff| per max|logit| (default {defaults.rtol:g})")
    parser.add_argument("--atol", type=float, default=defaults.atol, help=f"allowed absolute max|diff| on top (default {defaults.atol:g})")
    parser.add_argument(
        "--min-mask-agreement",
        type=float,
        default=defaults.min_mask_agreement,
        help=f"fraction of pixels whose arg-max must agree (default {defaults.min_mask_agreement:g})",
    )


def run(args: argparse.Namespace) -> int:
    from ..checkpoint import CheckpointError
    from ..export import DEFAULT_CHECK_SHAPES, ExportError, ParityTolerance, export_onnx
    from ..weights import WeightsError, resolve_checkpoint

    tolerance = ParityTolerance(rtol=args.rtol, atol=args.atol, min_mask_agreement=args.min_mask_agreement)
    try:
        report = export_onnx(
            resolve_checkpoint(args.checkpoint),
            args.out,
            exporter=args.exporter,
            opset=args.opset,
            check_shapes=args.check_shapes or DEFAULT_CHECK_SHAPES,
            tolerance=tolerance,
            probabilities=args.probabilities,
        )
    except (CheckpointError, WeightsError) as error:
        print(f"fcnseg export: error: {error}", file=sys.stderr)
        return 2
    except ExportError as error:
        print(f"fcnseg export: error: {error}", file=sys.stderr)
        return 1
    output = "probability" if args.probabilities else "logit"
    print(f"verified with ONNX Runtime ({report.exporter} exporter; pass if max|diff| <= {tolerance.rtol:g} * max|{output}| + {tolerance.atol:g}):")
    for result in report.results:
        print(f"  {result.describe()}")
    print(f"wrote {report.path}")
    return 0
