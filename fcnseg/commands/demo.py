"""``fcnseg demo``: the main job — train a light FCN-8s on the synthetic set on the CPU, evaluate, predict."""

from __future__ import annotations

import argparse
import logging

from .errors import reports_errors

NAME = "demo"
HELP = "train a light FCN-8s on the built-in synthetic set (CPU, ~2 min), evaluate it and draw its predictions"


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        NAME, help=HELP, description=HELP + ".", formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    parser.add_argument("--out", default="runs/demo", metavar="DIR", help="output folder")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=None, help="optimiser steps (default: the demo recipe's)")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    smaller = parser.add_argument_group(
        "a smaller demo (quick looks and smoke tests; the README's figures need the defaults)"
    )
    smaller.add_argument("--train-images", type=int, default=None, help="synthetic training images")
    smaller.add_argument("--val-images", type=int, default=None, help="synthetic validation images (default 64)")
    smaller.add_argument("--size", type=int, default=None, help="image side in pixels")


@reports_errors(NAME, bad_input=(ValueError, OSError))
def run(args: argparse.Namespace) -> int:
    from ..engine.demo import run_demo, summary

    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    result = run_demo(
        args.out,
        steps=args.steps,
        seed=args.seed,
        threads=args.threads,
        progress=not args.no_progress,
        train_images=args.train_images,
        val_images=args.val_images,
        size=args.size,
    )
    print(summary(result))
    return 0
