"""``fcnseg predict``: class masks (palette PNGs) and overlays for images, files, folders or globs."""

from __future__ import annotations

import argparse
import functools
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from tqdm import tqdm

from ..checkpoint import CheckpointError
from ..confidence_maps import normalised_entropy, save_float16_npy, save_unit_png16
from ..predict import (ImageError, list_images, load_image, max_pixels_for, overlay_image, save_image, save_mask_png,
                       with_legend)
from ..tiling import Tiling
from .arguments import add_tta_arguments

if TYPE_CHECKING:
    import torch

    from ..inference import Predictor

NAME = "predict"
HELP = "predict class masks for images (palette PNGs, optional overlays, confidence and probabilities)"
DEFAULT_BUDGET_MB = 4096
EPILOG = """confidence files (--confidence):
  <stem>_confidence.png  top-1 class probability p_max, in [1/C, 1]
  <stem>_entropy.png     entropy -sum_c p_c ln p_c divided by ln C, in [0, 1] (0: certain, 1: uniform)
  <stem>_mutual_info.png with --mc-dropout: mutual information divided by ln C, in [0, 1]
  16-bit greyscale PNGs: stored value v = round(x * 65535), read x = v / 65535;
  with --confidence-format npy the same maps as float16 .npy (H, W) instead.
--probabilities writes <stem>_probs.npy: the softmax over the classes, float16 (C, H, W).
--mc-dropout N: fc6/fc7 dropout stays on, N passes are averaged in probability space; mask,
  confidence, entropy and probabilities are those of the mean; seeded (--seed) per image."""


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(NAME, help=HELP, description=HELP, epilog=EPILOG,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", help="an fcnseg checkpoint (.safetensors)")
    parser.add_argument("inputs", nargs="+", metavar="INPUT", help="image files, folders of images, or glob patterns")
    parser.add_argument("--out", required=True, type=Path, help="output folder: <stem>.png masks (class ids, palette PNG)")
    parser.add_argument("--overlay", action="store_true", help="also write <stem>_overlay.<format>: the image blended with the mask")
    parser.add_argument("--overlay-format", choices=("png", "jpg"), default="png", help="overlay file format (default png)")
    parser.add_argument("--alpha", type=float, default=0.5, help="overlay opacity of the class colours (default 0.5)")
    parser.add_argument("--device", default="auto", help="auto (default: cuda when available), cpu, cuda, cuda:1, ...")
    parser.add_argument("--tile-size", type=int, default=None,
                        help="always predict in tiles with this core size in px (multiple of 32); same masks as whole-image")
    parser.add_argument("--margin", type=int, default=None, help="context around each tile (default: the receptive field, 288 px)")
    parser.add_argument("--no-fast-paths", action="store_true",
                        help="run every layer as written instead of the model's exact fast paths "
                             "(same masks; the fast paths take ~0.7x the time on the CPU)")
    add_tta_arguments(parser)
    parser.add_argument("--memory-budget-mb", type=float, default=DEFAULT_BUDGET_MB,
                        help="images whose forward pass would need more are tiled to fit; images too large to hold "
                             "decoded within it (budget / 12 bytes per pixel) are refused from their header "
                             "(default %(default)s MiB)")
    parser.add_argument("--confidence", action="store_true",
                        help="also write <stem>_confidence and <stem>_entropy maps (encodings below)")
    parser.add_argument("--confidence-format", choices=("png", "npy"), default="png",
                        help="confidence maps as 16-bit PNGs (default) or float16 .npy")
    parser.add_argument("--probabilities", action="store_true", help="also write <stem>_probs.npy: float16 softmax (C, H, W)")
    parser.add_argument("--mc-dropout", type=int, default=0, metavar="N",
                        help="MC-dropout: average N passes with fc6/fc7 dropout on (N forward passes per image; default 0: off)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the MC-dropout masks, per image (default 0)")


def run(args: argparse.Namespace) -> int:
    from ..inference import load_predictor

    if args.mc_dropout < 0:
        print(f"fcnseg predict: error: --mc-dropout must be a number of passes >= 0, got {args.mc_dropout}", file=sys.stderr)
        return 2
    try:
        predictor, checkpoint = load_predictor(
            args.checkpoint, device=args.device, fast_paths=not args.no_fast_paths,
            memory_budget_bytes=int(args.memory_budget_mb * 2**20), margin=args.margin,
            tile=None if args.tile_size is None else Tiling(args.tile_size, args.margin),
            tta_scales=args.tta_scales, tta_flip=args.tta_flip,
        )  # fmt: skip
    except (CheckpointError, ValueError) as error:  # also a budget too small for even one tile
        print(f"fcnseg predict: error: {error}", file=sys.stderr)
        return 2
    rates = predictor.dropout_rates()
    if args.mc_dropout and not rates:
        print(f"fcnseg predict: error: --mc-dropout: {args.checkpoint} has no dropout layers", file=sys.stderr)
        return 2
    if args.mc_dropout and not any(rates):
        print(f"fcnseg predict: note: {args.checkpoint} has dropout rate 0: every MC-dropout pass is the same",
              file=sys.stderr)
    paths, problems, skipped = list_images(args.inputs)
    writers: dict[str, Path] = {}
    for path in paths:
        for name in output_names(path.stem, args):
            if name in writers:
                print(f"fcnseg predict: error: {writers[name]} and {path} would both write {args.out / name}; "
                      "predict them into different --out folders", file=sys.stderr)
                return 2
            writers[name] = path
    palette = checkpoint.palette
    failed: list[str] = list(problems)
    written = 0
    max_pixels = max_pixels_for(int(args.memory_budget_mb * 2**20))
    terminal = sys.stderr.isatty()
    for number, path in enumerate(tqdm(paths, desc="predict", unit="image", disable=None), start=1):
        if not terminal:  # a log file gets a plain line per image instead of a bar
            print(f"predict {number}/{len(paths)}: {path}", file=sys.stderr, flush=True)
        try:
            image = load_image(path, max_pixels=max_pixels)
        except ImageError as error:
            failed.append(str(error))
            tqdm.write(f"fcnseg predict: skipped {error}", file=sys.stderr)
            continue
        tile_bar = functools.partial(tqdm, desc=path.name, unit="tile", leave=False, disable=None)
        mask = write_predictions(predictor, image, args, args.out / path.stem, tile_bar)
        save_mask_png(mask, palette, args.out / f"{path.stem}.png")
        if args.overlay:
            picture = with_legend(overlay_image(image, mask, palette, alpha=args.alpha), mask, checkpoint.classes, palette)
            save_image(picture, args.out / f"{path.stem}_overlay.{args.overlay_format}")
        written += 1
    print(f"wrote {written} mask(s) to {args.out}")
    if skipped:
        print(f"fcnseg predict: left out {len(skipped)} folder entr{'y' if len(skipped) == 1 else 'ies'} that are not "
              "images:", file=sys.stderr)
        for reason in skipped[:20] + ([f"... and {len(skipped) - 20} more"] if len(skipped) > 20 else []):
            print(f"  {reason}", file=sys.stderr)
    if failed:
        print(f"fcnseg predict: {len(failed)} input(s) failed:", file=sys.stderr)
        for problem in failed:
            print(f"  {problem}", file=sys.stderr)
        return 1
    return 0


def output_names(stem: str, args: argparse.Namespace) -> list[str]:
    """The files ``fcnseg predict`` writes for an image named ``stem``."""
    names = [f"{stem}.png"] + ([f"{stem}_overlay.{args.overlay_format}"] if args.overlay else [])
    if args.confidence:
        maps = ["confidence", "entropy"] + (["mutual_info"] if args.mc_dropout else [])
        names += [f"{stem}_{name}.{args.confidence_format}" for name in maps]
    return names + ([f"{stem}_probs.npy"] if args.probabilities else [])


def write_predictions(predictor: Predictor, image: torch.Tensor, args: argparse.Namespace, stem: Path,
                      progress: Callable | None) -> torch.Tensor:
    """Predict ``image`` and write the confidence maps and probabilities ``args`` asks for beside ``stem``; the mask."""
    if not (args.confidence or args.probabilities or args.mc_dropout):
        return predictor.mask(image, progress)
    result = predictor.confidence(image, progress, mc_samples=args.mc_dropout, seed=args.seed,
                                  keep_probabilities=args.probabilities)
    if args.probabilities:
        save_float16_npy(result.probabilities, f"{stem}_probs.npy")
    if args.confidence:
        maps = {"confidence": result.top1, "entropy": normalised_entropy(result.entropy, predictor.num_classes)}
        if result.mutual_information is not None:
            maps["mutual_info"] = normalised_entropy(result.mutual_information, predictor.num_classes)
        for name, values in maps.items():
            if args.confidence_format == "png":
                save_unit_png16(values, f"{stem}_{name}.png")
            else:
                save_float16_npy(values, f"{stem}_{name}.npy")
    return result.mask
