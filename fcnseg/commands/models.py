"""``fcnseg models``: list the registered models with their parameter counts."""

from __future__ import annotations

import argparse

from ..models import create_model, describe_model, list_models

NAME = "models"
HELP = "list the models with their parameter counts"


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(NAME, help=HELP, description=HELP)
    parser.add_argument("--num-classes", type=int, default=21, help="classes to count parameters for (default 21, VOC)")
    parser.add_argument("--width", type=float, default=1.0, help="channel multiplier (default 1.0, the paper's net)")


def run(args: argparse.Namespace) -> int:
    print(f"{'model':<14} {'parameters':>14} {'learnable':>14} {'frozen':>10}  description")
    for name in list_models():
        model = create_model(name, num_classes=args.num_classes, width=args.width)
        total = sum(p.numel() for p in model.parameters())
        learnable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        print(f"{name:<14} {total:>14,} {learnable:>14,} {total - learnable:>10,}  {describe_model(name)}")
    return 0
