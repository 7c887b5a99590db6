"""``fcnseg train``: train an FCN from a recipe, a config file, flags and ``--set key=value``.

Works the same under ``torchrun --nproc-per-node N`` (DDP: gloo on the CPU, NCCL on GPUs).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from .arguments import key_value
from .errors import CommandError, reports_errors

NAME = "train"
HELP = "train an FCN (a recipe preset, a config file, flags, --set key=value); --resume RUN_DIR continues a run"

#: The common flags: (flag, dotted setting it sets, help). Each value goes through the one typed
#: conversion of :func:`fcnseg.engine.config.set_value`; anything else is ``--set key=value``.
FLAGS = [
    ("--model", "model.name", "model name (fcnseg models lists them)"),
    ("--width", "model.width", "channel multiplier (1.0 is the paper's net)"),
    ("--dropout", "model.dropout", "dropout after fc6/fc7"),
    (
        "--init",
        "init",
        "initial weights: imagenet[:NAME|PATH] (torchvision, any backbone but AlexNet), "
        "vgg16-torchvision[:PATH], caffe:PATH.caffemodel, checkpoint:PATH or scratch",
    ),
    ("--data", "data", "dataset kind: synthetic, voc, sbd, folder, coco, pascal_context, siftflow, nyud"),
    ("--root", "root", "dataset folder (none for synthetic)"),
    ("--train-split", "train_split", "training split name or id-list file"),
    ("--val-split", "val_split", "validation split name or id-list file"),
    ("--val-limit", "val_limit", "validate on the first N images only"),
    ("--val-batch-size", "val_batch_size", "validation batch (1: native size; more pads with the mean colour)"),
    ("--workers", "workers", "DataLoader worker processes"),
    ("--optimizer", "recipe.optimizer", "sgd or adamw"),
    ("--lr", "recipe.lr", "base learning rate (biases x2)"),
    ("--momentum", "recipe.momentum", "SGD momentum or AdamW beta1"),
    ("--weight-decay", "recipe.weight_decay", "weight decay on weights"),
    ("--schedule", "recipe.schedule", "fixed or poly (with warm-up)"),
    ("--loss", "recipe.loss", "ce (the paper's), focal, ohem or lovasz; options as --set recipe.loss_options.gamma=2"),
    ("--reduction", "recipe.reduction", "loss over each image: sum (the paper) or mean over pixels"),
    ("--steps", "recipe.steps", "optimiser steps, also over a clock recipe (with --resume: extend the run to N steps)"),
    (
        "--minutes",
        "recipe.minutes",
        "train to the clock: the schedule spans N minutes of training (with --resume: extend)",
    ),
    ("--batch-size", "recipe.batch_size", "images per optimiser step, over all processes"),
    (
        "--crop-size",
        "recipe.crop_size",
        "crop side in px, [H,W], resize (the dataset's resize size, if any: every "
        "batch exactly that size) or native (batches padded to their largest image)",
    ),
    ("--val-every", "recipe.val_every", "validate every N steps (step-based runs; over --evals)"),
    ("--evals", "recipe.evals", "validations evenly spaced over the run, steps or clock, the last at the end"),
    ("--accumulate", "accumulate", "micro-batches per step (gradient accumulation)"),
    ("--class-weights", "class_weights", "none, median-frequency or effective-number (beta: class_weight_beta)"),
    ("--checkpoint-every", "checkpoint_every", "save the state every N steps (default: at every validation)"),
    ("--checkpoint-minutes", "checkpoint_minutes", "... and at least every N minutes of training"),
    ("--log-every", "log_every", "log the loss every N steps"),
    ("--seed", "seed", "data order, augmentation and initial weights"),
    ("--device", "device", "auto (CUDA when present), cpu, cuda, cuda:N"),
    ("--threads", "threads", "torch CPU threads (recorded for resume)"),
    ("--overlays", "overlays", "validation images drawn in val_overlays.png"),
]
#: Switches: (flag, setting, value it sets, help).
SWITCHES = [
    (
        "--learnable-upsampling",
        "model.learnable_upsampling",
        True,
        "train the bilinear deconvolutions (frozen in the paper)",
    ),
    ("--no-augment", "recipe.augment", False, "no random scale, flip or colour jitter"),
    ("--no-amp", "recipe.amp", False, "no mixed precision on the GPU"),
    (
        "--cpu-bf16",
        "cpu_bf16",
        True,
        "bf16 autocast on a CPU with native bf16 (AVX512-BF16 or AMX): faster, bf16 numerics",
    ),
    (
        "--no-cache",
        "cache_in_memory",
        False,
        "read, decode and resize every item every step, even when the decoded "
        "splits fit in memory (by default cached when within min(2 GiB, memory/4))",
    ),
    ("--no-fast-paths", "fast_paths", False, "every layer as written (the exact fast paths give the same gradients)"),
    ("--no-progress", "progress", False, "no progress bar"),
    (
        "--tensorboard",
        "tensorboard",
        True,
        "TensorBoard event files in RUN_DIR/tensorboard: loss, lr, validation metrics, "
        "per-class IU, images (pip install 'fcnseg[tensorboard]')",
    ),
]
#: Settings a resumed run may change (its length and its bookkeeping, not its numerics).
RESUMABLE = {
    "recipe.steps",
    "recipe.minutes",
    "recipe.evals",
    "recipe.val_every",
    "checkpoint_every",
    "checkpoint_minutes",
    "log_every",
    "progress",
    "workers",
    "val_limit",
    "overlays",
    "tensorboard",
    "cache_in_memory",
}


def _destination(key: str) -> str:
    return "setting:" + key


def _raw_pair(text: str) -> tuple[str, str]:
    """``KEY=VALUE`` with VALUE kept as text: the setting's own type decides how it is read."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key.strip(), value


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    from ..engine.recipes import list_presets

    presets = "\n".join(f"  {name:<8} {text}" for name, text in list_presets().items())
    parser = subparsers.add_parser(
        NAME,
        help=HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=HELP + ".\n\nSettings are layered: the recipe preset, then --config, then the flags, then --set "
        "(in order).\nEvery setting has a dotted key (seed, model.width, recipe.lr, data_options.size); the flags "
        "below "
        f'are the common ones.\n\nrecipes (--recipe NAME, or a .json/.yaml file with an optional "base"):\n{presets}',
    )
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--out", metavar="RUN_DIR", help="new run directory (checkpoints, metrics.jsonl, pictures)")
    where.add_argument(
        "--resume",
        metavar="RUN_DIR",
        help="continue the run in RUN_DIR where it stopped (its run.json); "
        f"only {', '.join(sorted(RESUMABLE))} may change",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace a run already in --out")
    parser.add_argument(
        "--recipe", default=None, help="recipe preset or file (default: modern with a GPU, cpu without)"
    )
    parser.add_argument("--config", metavar="FILE", help="a run.json or YAML file of settings, over the recipe")
    parser.add_argument(
        "--set",
        dest="settings",
        type=_raw_pair,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="any setting by its dotted key, e.g. recipe.poly_power=1.0 (typed and checked; repeatable)",
    )
    parser.add_argument(
        "--data-option",
        type=key_value,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="dataset option for both splits (data_options.KEY), e.g. size=64 (JSON values)",
    )
    flags = parser.add_argument_group("common settings (defaults from the recipe)")
    for flag, key, text in FLAGS:
        flags.add_argument(
            flag,
            dest=_destination(key),
            default=None,
            metavar=flag[2:].upper().replace("-", "_"),
            help=f"{text} [{key}]",
        )
    for flag, key, value, text in SWITCHES:
        flags.add_argument(
            flag, dest=_destination(key), action="store_const", const=value, default=None, help=f"{text} [{key}]"
        )


def settings_from_args(args: argparse.Namespace) -> list[tuple[str, object]]:
    """The (dotted key, value) pairs the command line gives, in the order they apply.

    A length given as steps alone (``--steps N``) means steps, even over a recipe that trains to the clock (``cpu``,
    ``camvid``): the run stops at N steps, not after the recipe's minutes. Likewise ``--evals N`` alone means N
    validations, even over a recipe that validates every so many steps (``modern``, ``paper``, ``demo``); given both,
    ``--val-every`` wins for a step-counted run.
    """
    pairs = [(f"data_options.{key}", value) for key, value in args.data_option]
    pairs += [
        (name[len("setting:") :], value)
        for name, value in vars(args).items()
        if name.startswith("setting:") and value is not None
    ]
    pairs += list(args.settings)
    from ..engine.config import resolve_key

    keys = {resolve_key(key) for key, _ in pairs}
    if "recipe.steps" in keys and "recipe.minutes" not in keys:
        pairs.append(("recipe.minutes", None))
    if "recipe.evals" in keys and "recipe.val_every" not in keys:
        pairs.append(("recipe.val_every", None))
    return pairs


def default_recipe(settings: list[tuple[str, object]]) -> str:
    """``modern`` where training runs on a GPU, else ``cpu`` (a light net on a clock: minutes, not days); said in one
    line."""
    import torch

    device = dict(settings).get("device", "auto")
    gpu = str(device).startswith(("cuda", "gpu")) or (device == "auto" and torch.cuda.is_available())
    if not gpu:
        keys = {key for key, _ in settings}
        length = (
            "the length you gave"
            if keys & {"recipe.steps", "recipe.minutes"}
            else "10 minutes of training plus validation"
        )
        logging.getLogger("fcnseg.train").info(
            "no --recipe and no GPU: the 'cpu' recipe (FCN-8s on MobileNetV3-Large, %s); "
            "--recipe modern trains the full-width net for 20,000 steps",
            length,
        )
    return "modern" if gpu else "cpu"


@reports_errors(NAME, bad_input=(ValueError, NotImplementedError, OSError))
def run(args: argparse.Namespace) -> int:
    from ..engine import TrainingDiverged, TrainingInterrupted, build_config, train
    from ..engine.distributed import shutdown_distributed

    rank = int(os.environ.get("RANK", "0"))
    logging.basicConfig(level=logging.INFO if rank == 0 else logging.WARNING, format="%(message)s")
    try:
        settings = settings_from_args(args)
        if args.resume:
            refused = sorted({key for key, _ in settings} - RESUMABLE)
            if refused:
                raise CommandError(
                    f"--resume keeps the run's settings; {', '.join(refused)} cannot change "
                    f"(these can: {', '.join(sorted(RESUMABLE))})"
                )
            result = train(None, args.resume, resume=True, changes=settings)
        else:
            result = train(
                build_config(args.recipe or default_recipe(settings), args.config, settings),
                args.out,
                overwrite=args.overwrite,
            )
    except TrainingDiverged as error:
        print(f"fcnseg train: stopped: {error}", file=sys.stderr)
        return 1
    except TrainingInterrupted as error:
        print(f"fcnseg train: {error}", file=sys.stderr)
        return error.exit_code
    finally:
        shutdown_distributed()
    if rank == 0:
        metrics = result.last_metrics
        print(
            f"done: {result.step} steps in {result.seconds:.1f} s; "
            f"val mean IU {metrics.get('mean_iu', float('nan')):.4f} (best {result.best_mean_iu:.4f}); "
            f"run directory {result.out_dir}"
        )
    return 0
