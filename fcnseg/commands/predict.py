"""``fcnseg predict``: class masks (palette PNGs) and overlays for images, files, folders or globs."""

from __future__ import annotations

import argparse
import functools
import sys
from pathlib import Path

from tqdm import tqdm

from ..checkpoint import CheckpointError
from ..predict import ImageError, list_images, load_image, overlay_image, save_image, save_mask_png
from ..tiling import Tiling

NAME = "predict"
HELP = "predict class masks for images (palette PNGs, optional overlays)"
DEFAULT_BUDGET_MB = 4096


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(NAME, help=HELP, description=HELP)
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
    parser.add_argument("--memory-budget-mb", type=float, default=DEFAULT_BUDGET_MB,
                        help="images whose forward pass would need more are tiled to fit (default %(default)s MiB)")


def run(args: argparse.Namespace) -> int:
    from ..inference import load_predictor

    try:
        predictor, checkpoint = load_predictor(
            args.checkpoint, device=args.device, fast_paths=not args.no_fast_paths,
            memory_budget_bytes=int(args.memory_budget_mb * 2**20), margin=args.margin,
            tile=None if args.tile_size is None else Tiling(args.tile_size, args.margin),
        )  # fmt: skip
    except (CheckpointError, ValueError) as error:  # also a budget too small for even one tile
        print(f"fcnseg predict: error: {error}", file=sys.stderr)
        return 2
    paths, problems = list_images(args.inputs)
    stems: dict[str, Path] = {}
    for path in paths:
        if path.stem in stems:
            print(f"fcnseg predict: error: {stems[path.stem]} and {path} would both write {args.out / (path.stem + '.png')}; "
                  "predict them into different --out folders", file=sys.stderr)
            return 2
        stems[path.stem] = path
    palette = checkpoint.palette
    failed: list[str] = list(problems)
    written = 0
    for path in tqdm(paths, desc="predict", unit="image", disable=None):
        try:
            image = load_image(path)
        except ImageError as error:
            failed.append(str(error))
            tqdm.write(f"fcnseg predict: skipped {error}", file=sys.stderr)
            continue
        tile_bar = functools.partial(tqdm, desc=path.name, unit="tile", leave=False, disable=None)
        mask = predictor.mask(image, progress=tile_bar)
        save_mask_png(mask, palette, args.out / f"{path.stem}.png")
        if args.overlay:
            picture = overlay_image(image, mask, palette, alpha=args.alpha)
            save_image(picture, args.out / f"{path.stem}_overlay.{args.overlay_format}")
        written += 1
    print(f"wrote {written} mask(s) to {args.out}")
    if failed:
        print(f"fcnseg predict: {len(failed)} input(s) failed:", file=sys.stderr)
        for problem in failed:
            print(f"  {problem}", file=sys.stderr)
        return 1
    return 0
