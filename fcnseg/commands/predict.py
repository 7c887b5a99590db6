"""``fcnseg predict``: class masks (palette PNGs) and overlays for images, files, folders or globs."""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import fields
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from ..files import atomic_write_bytes
from ..inference.tiling import Tiling
from ..predict.images import list_images, max_pixels_for
from ..predict.manifest import MANIFEST_FOLDER, RESUME_CHECKS, settings_fingerprint
from ..predict.stream import PredictOptions, Summary, output_names, predict_files
from .arguments import add_runtime_arguments, add_tta_arguments
from .errors import CommandError, reports_errors

if TYPE_CHECKING:
    from ..checkpoint import Checkpoint
    from ..engine.distributed import DistContext
    from ..inference.predictor import Predictor

NAME = "predict"
HELP = "predict class masks for images (palette PNGs, optional overlays, confidence and probabilities)"
DEFAULT_BUDGET_MB = 4096
FAILED_LIST = "failed.txt"
EPILOG = """confidence files (--confidence):
  <stem>_confidence.png  top-1 class probability p_max, in [1/C, 1]
  <stem>_entropy.png     entropy -sum_c p_c ln p_c divided by ln C, in [0, 1] (0: certain, 1: uniform)
  <stem>_mutual_info.png with --mc-dropout: mutual information divided by ln C, in [0, 1]
  16-bit greyscale PNGs: stored value v = round(x * 65535), read x = v / 65535;
  with --confidence-format npy the same maps as float16 .npy (H, W) instead.
  <stem>_<map>_view.png  each map as a person reads it: viridis colours on a 0..1 scale, with a colour bar
--probabilities writes <stem>_probs.npy: the softmax over the classes, float16 (C, H, W).
--mc-dropout N: fc6/fc7 dropout stays on, N passes are averaged in probability space; mask,
  confidence, entropy and probabilities are those of the mean; seeded (--seed) per image.

streaming, resuming, torchrun:
  Worker processes (--workers) decode ahead, images of one size are predicted --batch-size at a time, a
  thread writes the files. Each finished input is recorded in <out>/.fcnseg-predict/manifest-rank<r>.jsonl
  (the input's size and time, each output's size and SHA-256): the same command started again predicts only
  inputs without a record, changed inputs, and inputs whose outputs are missing or damaged (--overwrite: all).
  An input counts as changed when its size or modification time differ (default), or with --resume-check hash
  when the SHA-256 of its bytes differs (the input's hash is then recorded too).
  Failures are listed in <out>/failed.txt. Under torchrun each process predicts every world-th input of the
  sorted list; rank 0 prints the summary of all.
mosaics (with the geo extra, rasterio):
  A GeoTIFF, or a TIFF with more pixels than the budget holds decoded, is read and predicted window by window
  (the same tiles as --tile-size/--memory-budget-mb give) into <stem>.tif: a palette GeoTIFF with the input's
  transform and CRS (and <stem>_overlay.tif with --overlay). PNG/JPEG are decoded whole (Pillow cannot read
  them by windows), so one larger than the budget holds is refused from its header."""


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        NAME, help=HELP, description=HELP, epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "checkpoint", help="an fcnseg checkpoint (.safetensors), a registry name, or an ONNX export (.onnx)"
    )
    parser.add_argument("inputs", nargs="+", metavar="INPUT", help="image files, folders of images, or glob patterns")
    parser.add_argument(
        "--out", required=True, type=Path, help="output folder: <stem>.png masks (class ids, palette PNG)"
    )
    parser.add_argument(
        "--overlay", action="store_true", help="also write <stem>_overlay.<format>: the image blended with the mask"
    )
    parser.add_argument(
        "--overlay-format", choices=("png", "jpg"), default="png", help="overlay file format (default png)"
    )
    parser.add_argument("--alpha", type=float, default=0.5, help="overlay opacity of the class colours (default 0.5)")
    parser.add_argument("--device", default="auto", help="auto (default: cuda when available), cpu, cuda, cuda:1, ...")
    parser.add_argument(
        "--tile-size",
        type=int,
        default=None,
        help="always predict in tiles with this core size in px (multiple of 32); same masks as whole-image",
    )
    parser.add_argument(
        "--margin", type=int, default=None, help="context around each tile (default: the receptive field, 288 px)"
    )
    parser.add_argument(
        "--no-fast-paths",
        action="store_true",
        help="run every layer as written instead of the model's exact fast paths "
        "(same masks; the fast paths take ~0.7x the time on the CPU)",
    )
    add_tta_arguments(parser)
    add_runtime_arguments(parser)
    parser.add_argument(
        "--memory-budget-mb",
        type=float,
        default=DEFAULT_BUDGET_MB,
        help="images whose forward pass would need more are tiled to fit; images too large to hold "
        "decoded within it (budget / 12 bytes per pixel) are refused from their header "
        "(default %(default)s MiB)",
    )
    parser.add_argument(
        "--confidence",
        action="store_true",
        help="also write <stem>_confidence and <stem>_entropy maps (encodings below)",
    )
    parser.add_argument(
        "--confidence-format",
        choices=("png", "npy"),
        default="png",
        help="confidence maps as 16-bit PNGs (default) or float16 .npy",
    )
    parser.add_argument(
        "--probabilities", action="store_true", help="also write <stem>_probs.npy: float16 softmax (C, H, W)"
    )
    parser.add_argument(
        "--mc-dropout",
        type=int,
        default=0,
        metavar="N",
        help="MC-dropout: average N passes with fc6/fc7 dropout on (N forward passes per image; default 0: off)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the MC-dropout masks, per image (default 0)")
    parser.add_argument(
        "--workers",
        type=int,
        default=max(0, min(4, (os.cpu_count() or 1) - 1)),
        help="processes that decode images ahead of the model (default: one core fewer than the "
        "machine has, at most 4: %(default)s here)",
    )
    parser.add_argument(
        "--batch-size",
        type=int,
        default=8,
        help="images of one size predicted together (default 8; fewer when the memory budget needs it)",
    )
    parser.add_argument(
        "--overwrite", action="store_true", help="predict every input again, whatever the manifest records"
    )
    parser.add_argument(
        "--resume-check",
        choices=RESUME_CHECKS,
        default=RESUME_CHECKS[0],
        help="how an input recorded in the manifest is found unchanged: by its size and modification "
        "time (default %(default)s, reads nothing) or by the SHA-256 of its bytes (hash: reads "
        "each input once more; catches a file rewritten with the same size and time)",
    )
    parser.add_argument(
        "--no-stream",
        action="store_true",
        help="the one-at-a-time loop: read, predict and write each image in turn, in one thread",
    )


#: Arguments that do not change what is written: a run resumed with other values reuses the manifest.
RUNTIME_ONLY = {"command", "inputs", "out", "device", "workers", "batch_size", "no_stream", "overwrite", "resume_check"}
#: How long a process waits for the others at the end (the slowest shard may hold hours more work).
GATHER_TIMEOUT = timedelta(hours=24)


@reports_errors(NAME)
def run(args: argparse.Namespace) -> int:
    from ..engine.distributed import init_distributed, shutdown_distributed
    from ..inference.predictor import load_predictor
    from ..inference.runtimes import is_onnx_file

    for name, value, least, what in (
        ("--mc-dropout", args.mc_dropout, 0, "passes"),
        ("--workers", args.workers, 0, "processes"),
        ("--batch-size", args.batch_size, 1, "images"),
    ):
        if value < least:
            raise CommandError(f"{name} must be a number of {what} >= {least}, got {value}")
    try:  # not a checkpoint, a budget too small for even one tile, a missing GPU: bad input (status 2)
        context = init_distributed(args.device, timeout=GATHER_TIMEOUT)
        predictor, checkpoint = load_predictor(
            args.checkpoint, device=context.device, fast_paths=not args.no_fast_paths,
            memory_budget_bytes=int(args.memory_budget_mb * 2**20), margin=args.margin,
            tile=None if args.tile_size is None else Tiling(args.tile_size, args.margin),
            tta_scales=args.tta_scales, tta_flip=args.tta_flip, dtype=args.dtype,
            runtime="torch" if args.mc_dropout and args.runtime == "auto" and not is_onnx_file(args.checkpoint)
            else args.runtime,  # MC-dropout needs the torch model's dropout
        )  # fmt: skip
        return _predict(args, predictor, checkpoint, context)
    finally:
        shutdown_distributed()


def _predict(args: argparse.Namespace, predictor: Predictor, checkpoint: Checkpoint, context: DistContext) -> int:
    from ..engine.distributed import gather_objects

    main = context.is_main
    say = print if main else (lambda *_, **__: None)
    rates = predictor.dropout_rates()
    if args.mc_dropout and not rates:  # every process refuses; the first one says why
        raise CommandError(f"--mc-dropout: {args.checkpoint} has no dropout layers", quiet=not main)
    if args.mc_dropout and not any(rates):
        say(
            f"fcnseg predict: note: {args.checkpoint} has dropout rate 0: every MC-dropout pass is the same",
            file=sys.stderr,
        )
    options = PredictOptions(
        **{f.name: getattr(args, f.name) for f in fields(PredictOptions) if f.name != "max_pixels"},
        max_pixels=max_pixels_for(int(args.memory_budget_mb * 2**20)),
    )
    paths, problems, skipped = list_images(args.inputs)
    writers: dict[str, Path] = {}
    inputs = {path.resolve() for path in paths}
    out = args.out.resolve()
    for path in paths:
        for name in output_names(path, options):
            if name in writers or out / name in inputs:
                problem = (
                    f"{writers[name]} and {path} would both write {args.out / name}"
                    if name in writers
                    else f"predicting {path} would overwrite the input {args.out / name}"
                )
                raise CommandError(f"{problem}; predict them into different --out folders", quiet=not main)
            writers[name] = path
    summary = predict_files(
        predictor,
        checkpoint.classes,
        checkpoint.palette,
        paths,
        args.out,
        options,
        settings_fingerprint(_settings(args)),
        context.rank,
        context.world_size,
    )
    summaries = gather_objects(summary)
    failed = list(problems) + [line for each in summaries for line in each.failed]
    if main:
        _report(args, summaries, failed, skipped)
    return 1 if failed else 0


def _settings(args: argparse.Namespace) -> dict:
    """The arguments that shape the outputs, and the checkpoint file's identity (a changed file is a new model)."""
    settings = {key: value for key, value in vars(args).items() if key not in RUNTIME_ONLY}
    if Path(args.checkpoint).is_file():
        status = Path(args.checkpoint).stat()
        settings["checkpoint"] = [str(Path(args.checkpoint).resolve()), status.st_size, status.st_mtime_ns]
    return settings


def _report(args: argparse.Namespace, summaries: list[Summary], failed: list[str], skipped: list[str]) -> None:
    predicted = sum(each.predicted for each in summaries)
    done = sum(each.already_done for each in summaries)
    seconds = max(each.seconds for each in summaries)
    kept = f"; {done} found done in {args.out / MANIFEST_FOLDER} and kept" if done else ""
    processes = f" by {len(summaries)} processes" if len(summaries) > 1 else ""
    print(
        f"wrote {predicted} mask(s) to {args.out}{kept}; {seconds:.1f} s{processes}, "
        f"{predicted / max(seconds, 1e-9):.2f} images/s"
    )
    if skipped:
        print(
            f"fcnseg predict: left out {len(skipped)} folder entr{'y' if len(skipped) == 1 else 'ies'} that are not "
            "images:",
            file=sys.stderr,
        )
        for reason in skipped[:20] + ([f"... and {len(skipped) - 20} more"] if len(skipped) > 20 else []):
            print(f"  {reason}", file=sys.stderr)
    failures = args.out / FAILED_LIST
    if failed:
        # A file name that is not UTF-8 (held by Python as surrogates) is written back as its own bytes, as the
        # file system spells it; the rest of the list is UTF-8.
        atomic_write_bytes(failures, "".join(f"{problem}\n" for problem in failed).encode("utf-8", "surrogateescape"))
        print(f"fcnseg predict: {len(failed)} input(s) failed (listed in {failures}):", file=sys.stderr)
        for problem in failed:
            print(f"  {problem}", file=sys.stderr)
    else:
        failures.unlink(missing_ok=True)  # a list left by an earlier run no longer holds
