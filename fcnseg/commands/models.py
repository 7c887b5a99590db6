"""``fcnseg models``: list the registered models with their parameter counts."""

from __future__ import annotations

import argparse

import torch

from ..models import create_model, describe_model, list_models

NAME = "models"
HELP = "list the models with their parameter counts"


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(NAME, help=HELP, description=HELP)
    parser.add_argument("--num-classes", type=int, default=21, help="classes to count parameters for (default 21, VOC)")
    parser.add_argument("--width", type=float, default=1.0, help="channel multiplier (default 1.0, the paper's net)")


def run(args: argparse.Namespace) -> int:
    names = list_models()
    column = max(map(len, names))
    print(f"{'model':<{column}} {'parameters':>12} {'learnable':>12} {'frozen':>10}  description")
    for name in names:
        try:
            with torch.device("meta"):  # shapes only: counting needs no memory or initialisation
                model = create_model(name, num_classes=args.num_classes, width=args.width)
        except ValueError as error:  # e.g. a fixed-width ResNet asked for another width
            print(f"{name:<{column}} {'-':>12} {'-':>12} {'-':>10}  {str(error).split(' (')[0]}")
            continue
        total = sum(p.numel() for p in model.parameters())
        learnable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        print(f"{name:<{column}} {total:>12,} {learnable:>12,} {total - learnable:>10,}  {describe_model(name)}")
    return 0
