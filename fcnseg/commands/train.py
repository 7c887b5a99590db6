"""``fcnseg train``: train an FCN on a dataset with a named recipe; ``--resume`` continues a run.

Works the same under ``torchrun --nproc-per-node N`` (DDP: gloo on the CPU, NCCL on GPUs).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import Any

from .arguments import key_value

NAME = "train"
HELP = "train an FCN (recipes: paper, modern, demo); --resume RUN_DIR continues a killed run"

#: CLI option -> Recipe field, for the options that override the recipe.
RECIPE_OVERRIDES = {
    "lr": "lr", "momentum": "momentum", "weight_decay": "weight_decay", "steps": "steps",
    "batch_size": "batch_size", "val_every": "val_every", "optimizer": "optimizer", "loss": "loss",
    "schedule": "schedule",
}


def _crop_size(text: str) -> int | None:
    if text == "native":
        return None
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"crop size must be a positive integer or 'native', got {text}")
    return value


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(NAME, help=HELP, description=HELP + ".")
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--out", metavar="RUN_DIR", help="new run directory (checkpoints, metrics.jsonl, pictures)")
    where.add_argument("--resume", metavar="RUN_DIR",
                       help="continue the run in RUN_DIR exactly where it stopped (its run.json is used; "
                            "the other options are ignored)")

    model = parser.add_argument_group("model")
    model.add_argument("--model", default="fcn8s", help="fcn32s, fcn16s, fcn8s or fcn8s_atonce (default %(default)s)")
    model.add_argument("--width", type=float, default=1.0, help="channel multiplier (default 1.0, the paper's net)")
    model.add_argument("--learnable-upsampling", action="store_true", default=None,
                       help="train the bilinear deconvolutions (frozen in the paper)")
    model.add_argument("--dropout", type=float, default=None, help="dropout after fc6/fc7 (recipe default)")
    model.add_argument("--init", default=None, metavar="SPEC",
                       help="initial weights: vgg16-torchvision[:PATH], caffe:PATH.caffemodel, checkpoint:PATH "
                            "(staged 32s->16s->8s) or scratch")

    data = parser.add_argument_group("data")
    data.add_argument("--data", default="synthetic", metavar="KIND", help="dataset kind: synthetic (default), voc, sbd, folder")
    data.add_argument("--root", default=None, metavar="PATH", help="dataset folder (none for synthetic)")
    data.add_argument("--train-split", default="train")
    data.add_argument("--val-split", default="val")
    data.add_argument("--data-option", type=key_value, action="append", default=[], metavar="KEY=VALUE",
                      help="dataset option for both splits, e.g. size=64 or num_images=256 (JSON values)")
    data.add_argument("--val-limit", type=int, default=None, metavar="N", help="validate on the first N images only")
    data.add_argument("--val-batch-size", type=int, default=1,
                      help="validation batch (default 1: native size); >1 pads images of different sizes with the mean colour")
    data.add_argument("--workers", type=int, default=2, help="DataLoader worker processes (default %(default)s)")

    recipe = parser.add_argument_group("recipe (defaults come from --recipe)")
    recipe.add_argument("--recipe", default="modern", help="paper, modern (default), demo, or a JSON file {\"base\": ..., field: value}")
    recipe.add_argument("--optimizer", choices=["sgd", "adamw"], default=None)
    recipe.add_argument("--lr", type=float, default=None, help="base learning rate (biases x2)")
    recipe.add_argument("--momentum", type=float, default=None)
    recipe.add_argument("--weight-decay", type=float, default=None)
    recipe.add_argument("--schedule", choices=["fixed", "poly"], default=None)
    recipe.add_argument("--loss", choices=["sum", "mean"], default=None, help="sum over each image (paper) or mean")
    recipe.add_argument("--steps", type=int, default=None, help="optimiser steps")
    recipe.add_argument("--batch-size", type=int, default=None, help="images per optimiser step, over all processes")
    recipe.add_argument("--crop-size", type=_crop_size, default=argparse.SUPPRESS, help="crop side, or 'native'")
    recipe.add_argument("--no-augment", action="store_true", help="no random scale, flip or colour jitter")
    recipe.add_argument("--no-amp", action="store_true", help="no mixed precision on the GPU")
    recipe.add_argument("--val-every", type=int, default=None, help="validate every N steps")
    recipe.add_argument("--accumulate", type=int, default=1, help="micro-batches per step (gradient accumulation; default 1)")
    recipe.add_argument("--class-weights", choices=["none", "median-frequency"], default="none",
                        help="class-weighted loss (default none)")

    run = parser.add_argument_group("run")
    run.add_argument("--checkpoint-every", type=int, default=None, help="save state every N steps (default: --val-every)")
    run.add_argument("--log-every", type=int, default=10, help="log the loss every N steps (default %(default)s)")
    run.add_argument("--seed", type=int, default=0, help="data order, augmentation and initial weights (default 0)")
    run.add_argument("--device", default="auto", help="auto (default: CUDA when present), cpu, cuda, cuda:N")
    run.add_argument("--threads", type=int, default=None, help="torch CPU threads (recorded for resume)")
    run.add_argument("--overlays", type=int, default=6, help="validation images in val_overlays.png (default %(default)s)")
    run.add_argument("--cpu-bf16", action="store_true",
                     help="bf16 autocast when training on a CPU that computes bf16 natively (AVX512-BF16 or AMX): "
                          "faster steps, bf16 numerics; plain fp32 on other CPUs (the GPU uses the recipe's amp)")
    run.add_argument("--no-fast-paths", action="store_true",
                     help="train through the plain layer-by-layer forward (the default exact fast paths, padding "
                          "trim and matmul fc6/fc7, give the same gradients up to fp32 rounding)")
    run.add_argument("--no-progress", action="store_true", help="no progress bar")


def config_from_args(args: argparse.Namespace) -> Any:
    """The :class:`~fcnseg.engine.TrainConfig` the options describe."""
    from ..engine import TrainConfig, get_recipe

    recipe = get_recipe(args.recipe, args.model)
    changes: dict[str, Any] = {field: getattr(args, option) for option, field in RECIPE_OVERRIDES.items()
                               if getattr(args, option) is not None}
    if hasattr(args, "crop_size"):
        changes["crop_size"] = args.crop_size
    if args.no_augment:
        changes["augment"] = False
    if args.no_amp:
        changes["amp"] = False
    model_options = dict(recipe.model_options)
    if args.learnable_upsampling is not None:
        model_options["learnable_upsampling"] = True
    if args.dropout is not None:
        model_options["dropout"] = args.dropout
    changes["model_options"] = model_options
    recipe = recipe.replace(**changes)
    return TrainConfig(
        model=args.model, width=args.width, recipe=recipe, init=args.init, data=args.data, root=args.root,
        train_split=args.train_split, val_split=args.val_split, data_options=dict(args.data_option),
        accumulate=args.accumulate, class_weights=None if args.class_weights == "none" else args.class_weights,
        seed=args.seed, device=args.device, workers=args.workers, threads=args.threads or _default_threads(),
        checkpoint_every=args.checkpoint_every, log_every=args.log_every, val_limit=args.val_limit,
        val_batch_size=args.val_batch_size, overlays=args.overlays, fast_paths=not args.no_fast_paths,
        progress=not args.no_progress, cpu_bf16=args.cpu_bf16,
    )


def _default_threads() -> int:
    import torch

    return torch.get_num_threads()


def run(args: argparse.Namespace) -> int:
    from ..engine import TrainingDiverged, train
    from ..engine.distributed import shutdown_distributed

    rank = int(os.environ.get("RANK", "0"))
    logging.basicConfig(level=logging.INFO if rank == 0 else logging.WARNING, format="%(message)s")
    try:
        if args.resume:
            result = train(None, args.resume, resume=True)
        else:
            result = train(config_from_args(args), args.out)
    except TrainingDiverged as error:
        print(f"fcnseg train: stopped: {error}", file=sys.stderr)
        return 1
    except (ValueError, NotImplementedError, OSError) as error:
        print(f"fcnseg train: error: {error}", file=sys.stderr)
        return 2
    finally:
        shutdown_distributed()
    if rank == 0:
        metrics = result.last_metrics
        print(f"done: {result.step} steps in {result.seconds:.1f} s; "
              f"val mean IU {metrics.get('mean_iu', float('nan')):.4f} (best {result.best_mean_iu:.4f}); "
              f"run directory {result.out_dir}")
    return 0
