"""Training as plain functions: build a run, step it, validate it, save it, resume it.

A run directory holds::

    run.json          the TrainConfig (what to rebuild on --resume)
    train_state.pt    weights, optimiser, step, training seconds, best mean IU, RNG states (weights_only)
    last.safetensors  self-describing checkpoint of the latest saved step
    best.safetensors  the checkpoint with the best validation mean IU so far
    metrics.jsonl     one JSON object per line: training loss records and validation records
    curves.png        loss and mean-IU curves (redrawn at every validation)
    val_overlays.png  predictions of the final weights on validation images

A run trains for ``recipe.steps`` optimiser steps, or, with ``recipe.minutes``, to the
clock: the learning-rate schedule then spans that many minutes of training (validation
time excluded), and ``--resume`` continues the clock where it stopped. Either way
validations fall at ``recipe.evals`` evenly spaced moments, the last at the end (a
step-counted run with ``recipe.val_every`` validates every that many steps instead);
:class:`~fcnseg.engine.run_length.RunLength` owns all of this. Each validation logs one
line with its mean IU. The state is saved at every validation (or every
``checkpoint_every`` steps), at least every ``checkpoint_minutes`` of training, at the
end, and when SIGINT (Ctrl-C) or SIGTERM stops the run. With ``tensorboard`` the run
also writes live curves (:mod:`fcnseg.engine.live_curves`).

The global batch (``recipe.batch_size`` images per optimiser step) is split over
processes (DDP) and micro-batches (``accumulate``); the loss normaliser is
computed for the whole global batch, so the gradients are the same however the
batch is split (see :mod:`fcnseg.engine.loss`). The data order is a function of
(seed, step) (see :mod:`fcnseg.engine.sampling`), so ``resume`` continues exactly.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import shutil
import signal
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, cast

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader

from ..checkpoint import save_checkpoint
from ..data import NO_SPLIT, DatasetError, PadCollate, SegmentationDataset, TrainTransform, open_dataset
from ..data.doctor import diagnose
from ..data.statistics import class_statistics, median_frequency_weights
from ..evaluation.figures import plot_curves, validation_overlays
from ..evaluation.loop import evaluate
from ..evaluation.metrics import json_safe
from ..files import atomic_write_text, sweep_temporary_files
from ..inference.predictor import Predictor
from ..models import SegmentationModel, create_model
from ..progress import Progress
from .config import TrainConfig, get_value, resolve_key, set_value
from .data_cache import cache_splits, in_memory  # noqa: F401 (in_memory: the engine's name for it before)
from .distributed import DistContext, all_reduce_sum, barrier, broadcast_object, gather_objects, init_distributed
from .initial_weights import apply_initial_weights
from .live_curves import IMAGES_SHOWN, LiveCurves, require_tensorboard
from .loss import SegmentationLoss, build_loss, effective_number_weights, loss_for_model
from .optim import LRFactor, build_optimizer
from .recipes import CROP_TO_RESIZE
from .run_length import Position, RunLength
from .sampling import EpochBatchSampler, SeededSamples
from .state import STATE_FILE, capture_rng_state, load_train_state, restore_rng_state, save_train_state

logger = logging.getLogger("fcnseg.train")

RUN_FILE = "run.json"
METRICS_FILE = "metrics.jsonl"
LAST_CHECKPOINT = "last.safetensors"
BEST_CHECKPOINT = "best.safetensors"
CURVES_FILE = "curves.png"
OVERLAYS_FILE = "val_overlays.png"
#: Exit codes of a run stopped by a signal (128 + the signal number, as shells report them).
SIGNAL_EXIT_CODES = {signal.SIGINT: 130, signal.SIGTERM: 143}


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the run stopped without saving the bad weights."""


class TrainingInterrupted(RuntimeError):
    """SIGINT or SIGTERM stopped the run after it saved its state; ``exit_code`` is 130 or 143."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


@dataclass
class Run:
    """The live objects of a run (built by :func:`build_run`)."""

    config: TrainConfig
    ctx: DistContext
    out_dir: Path
    model: SegmentationModel  # the bare model (what gets saved)
    network: nn.Module  # what training calls: the model, or its DDP wrapper
    optimizer: torch.optim.Optimizer
    lr_factor: LRFactor  # over steps, or over CLOCK_RESOLUTION moments of the clock
    loss: SegmentationLoss
    train_set: Any
    val_set: Any
    micro_batch: int
    amp_dtype: torch.dtype | None
    scaler: torch.amp.GradScaler | None
    length: RunLength  # steps or clock: what finished, validation due, schedule and progress ask
    step: int = 0
    train_seconds: float = 0.0  # training time so far (validation excluded), carried over by resume
    best_mean_iu: float = -math.inf
    init_description: str = ""

    @property
    def position(self) -> Position:
        return Position(self.step, self.train_seconds)

    @property
    def finished(self) -> bool:
        return self.length.finished(self.position)

    @property
    def classes(self) -> list[str]:
        return list(self.train_set.classes)


@dataclass
class TrainResult:
    step: int
    best_mean_iu: float
    last_metrics: dict[str, Any]
    out_dir: Path
    seconds: float


# --- building ---------------------------------------------------------------------------------


@contextlib.contextmanager
def determinism(threads: int | None, device: torch.device) -> Iterator[None]:
    """On the CPU: a fixed thread count and deterministic kernels, so a resumed run computes bit for bit
    the same. On a GPU speed wins (cuDNN autotuning); a resumed run matches only to rounding there.
    The process's previous settings come back afterwards."""
    saved = (
        torch.get_num_threads(),
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
        torch.backends.cudnn.benchmark,
    )
    try:
        if threads is not None:
            torch.set_num_threads(threads)
        if device.type == "cpu":
            torch.use_deterministic_algorithms(True, warn_only=True)
        else:
            torch.backends.cudnn.benchmark = True
        yield
    finally:
        torch.set_num_threads(saved[0])
        torch.use_deterministic_algorithms(saved[1], warn_only=saved[2])
        torch.backends.cudnn.benchmark = saved[3]


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    """Torch on one CPU thread for a while (the previous count comes back). Reading and augmenting items is many
    small operations that a second thread slows down, on a busy machine tenfold (0.04 s against 1.3 s per CamVid
    batch); a DataLoader worker runs on one thread for the same reason, and the items come out the same."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def cpu_has_native_bf16() -> bool:
    """True on CPUs with bf16 arithmetic (AVX512-BF16 or AMX), where bf16 autocast speeds convolutions up;
    elsewhere bf16 is emulated and slower than fp32."""
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(torch.cpu, name, lambda: False)() for name in checks)


def micro_batch_size(batch_size: int, world_size: int, accumulate: int) -> int:
    """Images per process per micro-batch; the global batch must split evenly."""
    pieces = world_size * accumulate
    if accumulate < 1 or batch_size % pieces:
        raise ValueError(
            f"batch size {batch_size} does not split over {world_size} process(es) x {accumulate} accumulation step(s)"
        )
    return batch_size // pieces


def build_run(config: TrainConfig, out_dir: str | Path, ctx: DistContext, *, check_data: bool = False) -> Run:
    """Datasets, model (initialised), loss, optimiser and schedule for ``config``; step 0.

    ``val_split`` ``none`` trains without validation. ``check_data`` runs the dataset doctor's
    quick check first (:func:`check_datasets`).
    """
    recipe = config.recipe
    micro = micro_batch_size(recipe.batch_size, ctx.world_size, config.accumulate)
    train_set = open_dataset(config.data, config.root, config.train_split, **config.data_options)
    val_set = None
    if config.val_split != NO_SPLIT:
        val_set = open_dataset(
            config.data, config.root, config.val_split, **{**config.data_options, **config.val_data_options}
        )
        if list(val_set.classes) != list(train_set.classes):
            raise ValueError(f"validation classes {val_set.classes} differ from training classes {train_set.classes}")
    if check_data and ctx.is_main:
        check_datasets(train_set, val_set)
    with one_thread():
        train_set, val_set = cache_splits(
            config.cache_in_memory, train_set, val_set, processes=ctx.world_size, say=ctx.is_main
        )
    if recipe.name == "paper" and config.init in (None, "", "scratch"):
        logger.warning(
            "warning: the paper recipe's learning rates (1e-10 ... 1e-14 on a summed loss) assume ImageNet or "
            "coarser-FCN weights; from scratch it will not learn (give --init vgg16-torchvision or caffe:PATH)"
        )

    torch.manual_seed(config.seed)  # the same initial weights on every rank (DDP also broadcasts rank 0's)
    options = {key: value for key, value in config.model.items() if key != "name"}
    model = create_model(
        config.model["name"], num_classes=train_set.num_classes, fast_paths=config.fast_paths, **options
    )
    init_description = apply_initial_weights(model, config.init)
    model.to(ctx.device)

    loss = _training_loss(config, train_set, model)

    optimizer = build_optimizer(
        cast(nn.Module, model),  # every SegmentationModel is an nn.Module
        name=recipe.optimizer,
        lr=recipe.lr,
        momentum=recipe.momentum,
        weight_decay=recipe.weight_decay,
        bias_lr_mult=recipe.bias_lr_mult,
        bias_decay=recipe.bias_decay,
        norm_decay=recipe.norm_decay,
    )
    for group in optimizer.param_groups:
        group["initial_lr"] = group["lr"]  # the factor of the schedule multiplies this
    lr_factor = schedule_for(recipe)

    amp_dtype, scaler = _mixed_precision(config, ctx)

    network = cast(nn.Module, model)
    if ctx.distributed:
        if ctx.device.type == "cuda":  # one set of BatchNorm statistics over all GPUs (gloo CPU runs keep their own)
            network = nn.SyncBatchNorm.convert_sync_batchnorm(
                network
            )  # same parameter tensors: the optimiser holds them
            model = cast(SegmentationModel, network)
        network = DistributedDataParallel(network, device_ids=[ctx.device.index] if ctx.device.type == "cuda" else None)
    # Each rank draws its own dropout masks from here on.
    torch.manual_seed(config.seed * 1000 + 1 + ctx.rank)
    return Run(
        config=config,
        ctx=ctx,
        out_dir=Path(out_dir),
        model=model,
        network=network,
        optimizer=optimizer,
        lr_factor=lr_factor,
        loss=loss,
        train_set=train_set,
        val_set=val_set,
        micro_batch=micro,
        amp_dtype=amp_dtype,
        scaler=scaler,
        length=RunLength.of(recipe),
        init_description=init_description,
    )


def _training_loss(config: TrainConfig, train_set: SegmentationDataset, model: SegmentationModel) -> SegmentationLoss:
    """The recipe's loss with the configured class weights; one loss per head of a multi-head net."""
    recipe, weight = config.recipe, None
    if config.class_weights is not None:
        statistics = class_statistics(train_set, train_set.num_classes)
        weight = (
            median_frequency_weights(statistics)
            if config.class_weights == "median-frequency"
            else effective_number_weights(statistics, _beta(config.class_weight_beta, statistics.pixel_counts))
        )
    return loss_for_model(
        build_loss(
            recipe.loss,
            reduction=cast(Literal["sum", "mean"], recipe.reduction),  # Recipe checks it is one of REDUCTIONS
            ignore_index=train_set.ignore_index,
            weight=weight,
            **recipe.loss_options,
        ),
        model,
    )


def _mixed_precision(config: TrainConfig, ctx: DistContext) -> tuple[torch.dtype | None, Any]:
    """The autocast dtype (bf16, or fp16 with a gradient scaler on GPUs without bf16), or None: float32."""
    if config.recipe.amp and ctx.device.type == "cuda":
        amp_dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return amp_dtype, torch.amp.GradScaler("cuda") if amp_dtype == torch.float16 else None
    if config.cpu_bf16 and ctx.device.type == "cpu" and cpu_has_native_bf16():
        return torch.bfloat16, None
    return None, None


def _beta(beta: float | None, pixel_counts: Any) -> float:
    """The effective number's beta: as given, or 1 - 1/n for the median pixel count n of the classes that occur,
    so that weights differ across the classes' range of counts (with pixel counts, 0.9999 would make them equal)."""
    if beta is not None:
        return beta
    present = torch.as_tensor(pixel_counts, dtype=torch.float64)
    return 1.0 - 1.0 / float(present[present > 0].median().clamp(min=2))


def check_datasets(train_set: SegmentationDataset, val_set: SegmentationDataset | None) -> None:
    """The dataset doctor on 64 items per split: problems are logged; those that make items unusable stop the run.

    Errors stop it, e.g. 0/255 masks whose 255 is the ignore value (no trainable foreground:
    every score would read perfect); bad items do not when their split skips them (``skip_bad``).
    """
    findings = diagnose(train_set, val_set, max_items=64, decode_images=False)
    skipped = {"bad-item": train_set.skip_bad, "other-bad-item": val_set is not None and val_set.skip_bad}
    fatal = [f for f in findings if f.severity == "error" and not skipped.get(f.code, False)]
    for finding in findings:
        if finding.severity != "info" and not (fatal and finding is fatal[0]):  # the first fatal one is the error line
            logger.warning("data check: %s%s", finding.message, f"\n{finding.detail}" if finding.detail else "")
    if fatal:
        raise DatasetError(f"{fatal[0].message} (fcnseg data lists every problem; --fix writes a corrected copy)")


def schedule_for(recipe: Any) -> LRFactor:
    """The recipe's learning-rate factor over its steps, or over ``CLOCK_RESOLUTION`` moments of its clock."""
    total = RunLength.of(recipe).schedule_steps
    warmup = int(round(recipe.warmup_fraction * total)) if recipe.schedule == "poly" else 0
    return LRFactor(recipe.schedule, total, warmup, power=recipe.poly_power)


def _apply_lr(run: Run) -> None:
    """Set every group's learning rate for the coming step: by step, or by the share of the clock spent."""
    factor = run.lr_factor(run.length.schedule_moment(run.position))
    for group in run.optimizer.param_groups:
        group["lr"] = group["initial_lr"] * factor


def train_crop_size(config: TrainConfig) -> int | tuple[int, int] | None:
    """The recipe's crop as TrainTransform takes it: ``"resize"`` is the dataset's resize (H, W), so every batch
    has exactly that size (scaled-down images padded with the ignore label, scaled-up ones cropped); data at its
    native size (no resize) has no one size, so there it means native: each batch padded to its largest image."""
    crop = config.recipe.crop_size
    if crop == CROP_TO_RESIZE:
        resize = config.data_options.get("resize")
        return (int(resize[0]), int(resize[1])) if resize else None
    return crop  # type: ignore[return-value]


def train_loader(run: Run) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Endless micro-batches for this rank, starting where ``run.step`` is."""
    recipe, config = run.config.recipe, run.config
    fill = run.model.mean_pixel()  # one value per input channel (six for colour + HHA)
    transform = None
    if recipe.augment or recipe.crop_size is not None:
        transform = TrainTransform(
            crop_size=train_crop_size(run.config),
            scale_range=recipe.scale_range if recipe.augment else None,
            hflip=recipe.hflip and recipe.augment,
            color_jitter=recipe.color_jitter if recipe.augment else None,
            fill=fill,
            ignore_index=run.train_set.ignore_index,
        )
    sampler = EpochBatchSampler(
        len(run.train_set),
        run.micro_batch,
        seed=config.seed,
        rank=run.ctx.rank,
        world_size=run.ctx.world_size,
        start_batch=run.step * config.accumulate,
    )
    loader = DataLoader(
        SeededSamples(run.train_set, transform),
        batch_sampler=sampler,
        collate_fn=PadCollate(fill=fill, ignore_index=run.train_set.ignore_index),
        num_workers=config.workers,
        persistent_workers=config.workers > 0,
        pin_memory=run.ctx.device.type == "cuda",
        generator=torch.Generator(),  # keeps the loader from drawing on the global RNG
    )
    return _on_one_thread(iter(loader))


def _on_one_thread(batches: Iterator[Any]) -> Iterator[Any]:
    """Each batch loaded (read, augmented, collated) on one thread, the compute keeping its threads."""
    while True:
        with one_thread():
            batch = next(batches)
        yield batch


# --- one step ---------------------------------------------------------------------------------


def _to_input(run: Run, images: torch.Tensor) -> torch.Tensor:
    return run.model.prepare_input(images.to(run.ctx.device, non_blocking=True))


def train_step(run: Run, batches: list[tuple[torch.Tensor, torch.Tensor]]) -> float:
    """One optimiser step on this rank's micro-batches; returns the global batch's loss.

    Raises :class:`TrainingDiverged` (before touching the weights) if the loss is not finite.
    """
    _apply_lr(run)
    device, world = run.ctx.device, run.ctx.world_size
    masks = [m.to(device, non_blocking=True) for _, m in batches]
    total_normalizer = cast(torch.Tensor, sum(run.loss.normalizer(m) for m in masks))  # one batch at least
    normalizer = all_reduce_sum(total_normalizer.reshape(1).float())
    # DDP averages gradients over ranks; scaling by the world size makes that the global sum / normaliser.
    scale = world / normalizer.clamp(min=torch.finfo(torch.float32).tiny)
    total = torch.zeros(1, device=device)
    for index, ((images, _), target) in enumerate(zip(batches, masks, strict=True)):
        last = index == len(batches) - 1
        sync = (
            contextlib.nullcontext()
            if last or not run.ctx.distributed
            else cast(DistributedDataParallel, run.network).no_sync()
        )
        autocast = torch.autocast(device.type, dtype=run.amp_dtype) if run.amp_dtype else contextlib.nullcontext()
        with sync:
            with autocast:
                logits = run.network(_to_input(run, images))
            loss = run.loss.summed(logits, target) * scale
            (run.scaler.scale(loss) if run.scaler else loss).backward()
        total += loss.detach()
    total = all_reduce_sum(total) / world
    value = float(total)
    if not math.isfinite(value):
        run.optimizer.zero_grad(set_to_none=True)
        raise TrainingDiverged(
            f"loss is {value} at step {run.step + 1} (lr {run.optimizer.param_groups[0]['lr']:.3g}): training stopped "
            f"without saving these weights; {_kept(run)} (lower the learning rate or check the data)"
        )
    if run.scaler:
        run.scaler.step(run.optimizer)
        run.scaler.update()
    else:
        run.optimizer.step()
    run.optimizer.zero_grad(set_to_none=True)
    run.step += 1
    return value


def _kept(run: Run) -> str:
    last = run.out_dir / LAST_CHECKPOINT
    return (
        f"the last good checkpoint {last} (step {_saved_step(run)}) is kept"
        if last.is_file()
        else "no checkpoint was saved yet"
    )


def _saved_step(run: Run) -> Any:
    state = run.out_dir / STATE_FILE
    try:
        return int(load_train_state(state)["step"]) if state.is_file() else "?"
    except Exception:  # a damaged state: say what is known
        return "?"


# --- validation -------------------------------------------------------------------------------


def validate(run: Run) -> dict[str, Any] | None:
    """The four metrics (and per-class IU) on the validation split, via :func:`fcnseg.evaluation.loop.evaluate`;
    None for a run without validation.

    Each rank evaluates every ``world_size``-th image; the confusion matrices are summed
    over ranks. With ``val_batch_size`` 1 images go one at a time at native size (the
    paper); larger batches are padded to the largest image with the mean colour.
    """
    config, ctx = run.config, run.ctx
    if run.val_set is None:
        return None
    count = len(run.val_set) if config.val_limit is None else min(config.val_limit, len(run.val_set))
    data: Any = torch.utils.data.Subset(run.val_set, list(range(count)))
    if config.val_batch_size > 1:
        data = DataLoader(
            torch.utils.data.Subset(run.val_set, list(range(ctx.rank, count, ctx.world_size))),
            batch_size=config.val_batch_size,
            collate_fn=PadCollate(fill=run.model.preprocessing.mean_rgb_uint8(), ignore_index=run.val_set.ignore_index),
            num_workers=config.workers,
            generator=torch.Generator(),
        )
    predictor = Predictor(run.model, dtype=run.amp_dtype)
    return evaluate(
        predictor,
        data,
        run.val_set.num_classes,
        ignore_index=run.val_set.ignore_index,
        num_workers=config.workers,
        progress=config.progress and ctx.is_main,
    )


# --- saving and resuming ----------------------------------------------------------------------


def _checkpoint_extra(run: Run, metrics: dict[str, Any] | None) -> dict[str, Any]:
    config = run.config  # the data: `fcnseg eval CKPT` evaluates on it by default, with the validation options
    # The root resolved: `--root a` typed in one folder must still name the data when evaluated from another.
    root = os.path.abspath(config.root) if config.root else config.root
    data = {"kind": config.data, "root": root, "options": {**config.data_options, **config.val_data_options}}
    extra: dict[str, Any] = {"step": run.step, "init": run.init_description, "data": data, "seed": config.seed}
    if metrics:
        extra["val"] = {k: v for k, v in metrics.items() if k != "iu"}
    return extra


def save_model(run: Run, path: Path, metrics: dict[str, Any] | None) -> None:
    """A self-describing checkpoint of the current weights (rank 0 only)."""
    if run.ctx.is_main:
        save_checkpoint(
            path,
            run.model,
            classes=run.classes,
            palette=run.train_set.palette,
            ignore_index=run.train_set.ignore_index,
            recipe=run.config.recipe.to_dict(),
            extra=_checkpoint_extra(run, metrics),
        )


def save_state(run: Run) -> None:
    """``train_state.pt``: everything to continue exactly (RNG states gathered from every rank)."""
    rng = gather_objects(capture_rng_state())
    if run.ctx.is_main:
        save_train_state(
            run.out_dir / STATE_FILE,
            {
                "step": run.step,
                "best_mean_iu": run.best_mean_iu,
                "model": run.model.state_dict(),
                "optimizer": run.optimizer.state_dict(),
                "train_seconds": run.train_seconds,
                "scaler": run.scaler.state_dict() if run.scaler else {},
                "rng": rng,
                "world_size": run.ctx.world_size,
            },
        )
    barrier()


def restore_state(run: Run, state: dict[str, Any]) -> None:
    """Put a run back where ``state`` (from :func:`save_state`) left it."""
    if state.get("world_size", 1) != run.ctx.world_size:
        raise ValueError(
            f"the run was saved with {state['world_size']} process(es); resume it with as many "
            f"(this one has {run.ctx.world_size})"
        )
    run.model.load_state_dict(state["model"])
    run.optimizer.load_state_dict(state["optimizer"])
    if run.scaler and state.get("scaler"):
        run.scaler.load_state_dict(state["scaler"])
    run.step = int(state["step"])
    run.best_mean_iu = float(state["best_mean_iu"])
    run.train_seconds = float(state.get("train_seconds", 0.0))
    restore_rng_state(state["rng"][run.ctx.rank])


def _append_record(run: Run, record: dict[str, Any]) -> None:
    if run.ctx.is_main:
        with open(run.out_dir / METRICS_FILE, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(json_safe(record), allow_nan=False) + "\n")


def _truncate_records(path: Path, step: int) -> None:
    """Drop log records written after ``step`` by a run that was killed before saving them."""
    if not path.is_file():
        return
    kept = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            if json.loads(line).get("step", 0) <= step:
                kept.append(line)
        except json.JSONDecodeError:  # a line torn by the kill
            continue
    atomic_write_text(path, "".join(line + "\n" for line in kept))


def _draw_pictures(run: Run, *, overlays: bool) -> None:
    """Loss / metric curves and, when asked, validation overlays (rank 0)."""
    if not run.ctx.is_main:
        return
    plot_curves(run.out_dir / METRICS_FILE, run.out_dir / CURVES_FILE)
    if overlays and run.config.overlays > 0 and run.val_set is not None:
        predictor = Predictor(run.model, dtype=run.amp_dtype)
        validation_overlays(predictor, run.val_set, run.out_dir / OVERLAYS_FILE, count=run.config.overlays)


# --- the loop ---------------------------------------------------------------------------------


def train(
    config: TrainConfig | None,
    out_dir: str | Path,
    *,
    resume: bool = False,
    overwrite: bool = False,
    changes: Sequence[tuple[str, Any]] = (),
    ctx: DistContext | None = None,
) -> TrainResult:
    """Train ``config`` into ``out_dir``, or, with ``resume``, continue the run saved there (``config`` unused).

    A new run refuses an ``out_dir`` that already holds a run unless ``overwrite``.
    ``changes`` (dotted key, value) apply to a resumed run's settings, e.g.
    ``[("recipe.steps", 40000)]`` extends it (the schedule is recomputed for the new length).
    Raises :class:`TrainingInterrupted` after saving when SIGINT or SIGTERM stops the run.
    """
    out_dir = Path(out_dir)
    saved_state = None
    if resume:
        config = load_run_config(out_dir)
        if changes:
            data, effective = config.to_dict(), []
            for key, value in changes:
                before = get_value(data, key)
                set_value(data, key, value)
                if get_value(data, key) != before:  # only what really changes is recorded and said
                    effective.append((resolve_key(key), get_value(data, key)))
            config, changes = TrainConfig.from_dict(data), effective
        saved_state = load_train_state(out_dir / STATE_FILE)
        _refuse_a_finished_resume(config, saved_state, out_dir)
    elif config is None:
        raise ValueError("train needs a TrainConfig unless it resumes a run")
    elif (out_dir / RUN_FILE).exists() and not overwrite:
        raise ValueError(
            f"{out_dir} already holds a run: continue it with --resume {out_dir}, or replace it with --overwrite"
        )
    if config.tensorboard:
        require_tensorboard()
    ctx = ctx or init_distributed(config.device)
    created = not out_dir.exists()
    try:
        with determinism(config.threads, ctx.device), _stop_signals() as stop:
            return _train(config, out_dir, ctx, saved_state, stop, list(changes))
    except BaseException as error:
        # A run that failed before saving anything leaves no half-made folder behind.
        if (
            created
            and ctx.is_main
            and not (out_dir / STATE_FILE).exists()
            and not isinstance(error, TrainingInterrupted)
        ):
            shutil.rmtree(out_dir, ignore_errors=True)
        raise


def _refuse_a_finished_resume(config: TrainConfig, state: dict[str, Any], out_dir: Path) -> None:
    """A resume with nothing left to train is a one-line error, before run.json records the new length."""
    position = Position(int(state.get("step", 0)), float(state.get("train_seconds", 0.0)))
    length, minutes = RunLength.of(config.recipe), position.seconds / 60.0
    if length.finished(position):
        raise ValueError(
            f"{out_dir} has trained {position.step} steps ({minutes:.1f} min), which covers "
            f"{length.describe()}: nothing to train; to continue, ask for more with --steps N "
            f"(over {position.step}) or --minutes N (over {minutes:.1f})"
        )


@contextlib.contextmanager
def _stop_signals() -> Iterator[dict[str, Any]]:
    """Turn the first SIGINT/SIGTERM into a request to stop after the current step; a second one stops at once."""
    stop: dict[str, Any] = {"signal": None}
    if threading.current_thread() is not threading.main_thread():
        yield stop  # signal handlers can only be set from the main thread
        return

    def request(number: int, frame: Any) -> None:
        stop["signal"] = signal.Signals(number)
        for sig in SIGNAL_EXIT_CODES:  # the next one acts at once
            signal.signal(sig, signal.SIG_DFL if sig == signal.SIGTERM else signal.default_int_handler)

    previous = {sig: signal.signal(sig, request) for sig in SIGNAL_EXIT_CODES}
    try:
        yield stop
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _train(
    config: TrainConfig,
    out_dir: Path,
    ctx: DistContext,
    saved_state: dict[str, Any] | None,
    stop: dict[str, Any],
    changes: list[tuple[str, Any]],
) -> TrainResult:
    """The body of :func:`train`, under the run's determinism settings."""
    run = _start(config, out_dir, ctx, saved_state, changes)
    curves = None
    if config.tensorboard and ctx.is_main:
        curves = LiveCurves(out_dir, resumed_at=run.step if saved_state is not None else None)
    progress = _progress(run)
    try:
        with _logs_beside(progress):
            return _loop(run, stop, progress, curves)
    finally:
        progress.close()
        if curves is not None:
            curves.close()


def _start(
    config: TrainConfig,
    out_dir: Path,
    ctx: DistContext,
    saved_state: dict[str, Any] | None,
    changes: list[tuple[str, Any]],
) -> Run:
    """The run folder made (or swept), the run built and, on resume, restored; run.json written; the first line said."""
    resume = saved_state is not None
    if ctx.is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
        for tmp in sweep_temporary_files(out_dir):
            logger.info("removed %s, left by an interrupted write", tmp)
        if not resume:
            (out_dir / METRICS_FILE).unlink(missing_ok=True)
    barrier()
    run = build_run(config, out_dir, ctx, check_data=not resume)
    if ctx.is_main and (not resume or changes):
        _write_run_file(run, resume)
    if saved_state is not None:
        restore_state(run, saved_state)
        if ctx.is_main:
            _truncate_records(out_dir / METRICS_FILE, run.step)
    if ctx.is_main:
        recipe = config.recipe
        where = f"resuming at step {run.step} ({run.train_seconds / 60:.1f} min trained)" if resume else "training"
        logger.info(
            "%s %s width %g, %d classes, init %s; recipe %s; %s of %d images (%d process(es) x %d x %d)",
            where,
            config.model["name"],
            config.model.get("width", 1.0),
            run.model.num_classes,
            run.init_description,
            recipe.name,
            run.length.describe(),
            recipe.batch_size,
            ctx.world_size,
            config.accumulate,
            run.micro_batch,
        )
        if changes:
            logger.info(
                "changed on resume: %s (schedule recomputed for the new length)",
                ", ".join(f"{key}={value}" for key, value in changes),
            )
    return run


def _write_run_file(run: Run, resume: bool) -> None:
    """run.json: the settings and how the splits were made (a resume that changes settings keeps the recorded
    splits: it rebuilt the same ones). Written once per start, after the run was built."""
    if resume:
        splits = json.loads((run.out_dir / RUN_FILE).read_text(encoding="utf-8")).get("splits")
    else:
        splits = {"train": run.train_set.split_info, "val": run.val_set.split_info if run.val_set else None}
    data = {**run.config.to_dict(), **({"splits": splits} if splits is not None else {})}
    atomic_write_text(run.out_dir / RUN_FILE, json.dumps(data, indent=2) + "\n")


def _loop(run: Run, stop: dict[str, Any], progress: Any, curves: LiveCurves | None) -> TrainResult:
    """Steps until the run's length is trained: log, validate when due, save, stop on a signal."""
    config, length, out_dir = run.config, run.length, run.out_dir
    batches = train_loader(run)
    started, images_seen = time.perf_counter(), 0
    last_metrics: dict[str, Any] = {}
    saved_at = run.train_seconds
    run.network.train()
    while not run.finished:
        before = run.position
        step_started = time.perf_counter()
        loss = train_step(run, [next(batches) for _ in range(config.accumulate)])
        lr = run.optimizer.param_groups[0]["lr"]
        step_seconds = time.perf_counter() - step_started
        if length.clocked:  # every rank follows rank 0's clock, so all decide alike
            step_seconds = float(broadcast_object(step_seconds))
        run.train_seconds += step_seconds
        images_seen += config.recipe.batch_size
        final = run.finished
        if run.step % config.log_every == 0 or final:
            elapsed = time.perf_counter() - started
            _append_record(
                run,
                {
                    "step": run.step,
                    "loss": loss,
                    "lr": lr,
                    "images_per_s": images_seen / elapsed,
                    "time": elapsed,
                    "train_seconds": round(run.train_seconds, 3),
                },
            )
            progress.set_postfix(loss=f"{loss:.4g}", lr=f"{lr:.3g}")
            if curves is not None:
                curves.training(run.step, loss, lr)
        progress.update(length.along(run.position) - length.along(before))
        validating = length.validation_due(before, run.position) or final
        metrics = None
        if validating:
            metrics = _validation(run, final, started, curves)
            last_metrics = metrics or last_metrics
            if metrics is not None:
                progress.set_postfix(loss=f"{loss:.4g}", mean_iu=f"{metrics['mean_iu']:.3f}")
        stopping = broadcast_object(stop["signal"])
        by_clock = run.train_seconds - saved_at >= 60.0 * config.checkpoint_minutes
        by_steps = run.step % config.checkpoint_every == 0 if config.checkpoint_every else validating
        if by_steps or by_clock or final or stopping:
            save_model(run, out_dir / LAST_CHECKPOINT, metrics)
            save_state(run)
            saved_at = run.train_seconds
            if curves is not None:
                curves.flush()  # the curves on disk reach the saved step: a resume continues from there
        if stopping and not final:
            raise TrainingInterrupted(
                f"stopped by {stopping.name} at step {run.step}; the state is saved in {out_dir}: continue with "
                f"fcnseg train --resume {out_dir}",
                SIGNAL_EXIT_CODES[stopping],
            )
    return TrainResult(
        step=run.step,
        best_mean_iu=run.best_mean_iu,
        last_metrics=last_metrics,
        out_dir=out_dir,
        seconds=time.perf_counter() - started,
    )


def _validation(run: Run, final: bool, started: float, curves: LiveCurves | None) -> dict[str, Any] | None:
    """Validate (None without a validation split), record and say the result, keep the best weights, redraw."""
    began = time.perf_counter()
    metrics = validate(run)
    if metrics is not None:
        _append_record(
            run,
            {
                "step": run.step,
                "val": metrics,
                "time": time.perf_counter() - started,
                "train_seconds": round(run.train_seconds, 3),
            },
        )
    better = metrics is not None and metrics["mean_iu"] > run.best_mean_iu
    if better or (final and not (run.out_dir / BEST_CHECKPOINT).exists()):  # no validation: best = final
        run.best_mean_iu = max(run.best_mean_iu, metrics["mean_iu"]) if metrics else run.best_mean_iu
        save_model(run, run.out_dir / BEST_CHECKPOINT, metrics)
    if metrics is not None and run.ctx.is_main:
        logger.info(
            "val: %s, mean IU %.4f (best %.4f), pixel acc %.3f, %.1f s",
            run.length.where(run.position),
            metrics["mean_iu"],
            run.best_mean_iu,
            metrics["pixel_acc"],
            time.perf_counter() - began,
        )
        if curves is not None:
            curves.validation(run.step, metrics, run.classes)
            if run.config.overlays > 0:
                curves.images(
                    run.step,
                    Predictor(run.model, dtype=run.amp_dtype),
                    run.val_set,
                    min(run.config.overlays, IMAGES_SHOWN),
                )
    _draw_pictures(run, overlays=final)
    return metrics


def load_run_config(out_dir: str | Path) -> TrainConfig:
    """The :class:`TrainConfig` saved in a run directory (the recorded ``splits`` are information only)."""
    path = Path(out_dir) / RUN_FILE
    if not path.is_file():
        raise ValueError(f"{out_dir} is not a run directory: {RUN_FILE} is missing")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        data.pop("splits", None)
        return TrainConfig.from_dict(data)
    except (json.JSONDecodeError, TypeError, KeyError, ValueError) as error:
        raise ValueError(f"{path}: not a valid run configuration ({error})") from None


def _progress(run: Run) -> Progress:
    """A bar over the steps (or the seconds of the clock) on a terminal; elsewhere a plain line every 30 s."""
    length = run.length
    return Progress(
        length.total,
        initial=length.along(run.position),
        label="train",
        unit=length.unit,
        show=run.config.progress and run.ctx.is_main,
    )


@contextlib.contextmanager
def _logs_beside(progress: Progress) -> Iterator[None]:
    """Log lines (each validation's) printed above a progress bar on a terminal, so the bar stays whole."""
    from tqdm.contrib.logging import logging_redirect_tqdm

    with logging_redirect_tqdm() if progress.bar is not None else contextlib.nullcontext():
        yield
