"""Training as plain functions: build a run, step it, validate it, save it, resume it.

A run directory holds::

    run.json          the TrainConfig (what to rebuild on --resume)
    train_state.pt    weights, optimiser, scheduler, step, best mean IU, RNG states (weights_only)
    last.safetensors  self-describing checkpoint of the latest saved step
    best.safetensors  the checkpoint with the best validation mean IU so far
    metrics.jsonl     one JSON object per line: training loss records and validation records
    curves.png        loss and mean-IU curves (redrawn at every validation)
    val_overlays.png  predictions of the final weights on validation images

The global batch (``recipe.batch_size`` images per optimiser step) is split over
processes (DDP) and micro-batches (``accumulate``); the loss normaliser is
computed for the whole global batch, so the gradients are the same however the
batch is split (see :mod:`fcnseg.engine.loss`). The data order is a function of
(seed, step) (see :mod:`fcnseg.engine.sampling`), so ``resume`` continues exactly.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader

from ..checkpoint import save_checkpoint
from ..data import PadCollate, SegmentationDataset, TrainTransform, open_dataset
from ..data.base import InMemoryDataset
from ..data.statistics import class_statistics, median_frequency_weights
from ..files import atomic_write_text
from ..evaluate import evaluate
from ..models import FCN, VGG16Backbone, create_model
from ..models.fast import enable_fast_training
from ..preprocessing import preprocess
from ..visualize import plot_curves, validation_overlays
from .distributed import DistContext, all_reduce_sum, barrier, gather_objects, init_distributed
from .initial_weights import apply_initial_weights
from .loss import SegmentationLoss
from .optim import LRFactor, build_optimizer, build_scheduler
from .recipes import Recipe, get_recipe
from .sampling import EpochBatchSampler, SeededSamples
from .state import STATE_FILE, capture_rng_state, load_train_state, restore_rng_state, save_train_state

logger = logging.getLogger("fcnseg.train")

RUN_FILE = "run.json"
METRICS_FILE = "metrics.jsonl"
LAST_CHECKPOINT = "last.safetensors"
BEST_CHECKPOINT = "best.safetensors"
CURVES_FILE = "curves.png"
OVERLAYS_FILE = "val_overlays.png"


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the run stopped without saving the bad weights."""


@dataclass
class TrainConfig:
    """Everything that defines a run (saved as ``run.json``; ``--resume`` rebuilds the run from it)."""

    model: str = "fcn8s"
    width: float = 1.0
    recipe: Recipe = field(default_factory=lambda: get_recipe("modern", "fcn8s"))
    init: str | None = None
    data: str = "synthetic"
    root: str | None = None
    train_split: str = "train"
    val_split: str = "val"
    data_options: dict[str, Any] = field(default_factory=dict)  # to open_dataset, both splits
    val_data_options: dict[str, Any] = field(default_factory=dict)  # val only, over data_options
    accumulate: int = 1  # micro-batches per optimiser step
    class_weights: str | None = None  # None or "median-frequency"
    seed: int = 0
    device: str = "auto"
    workers: int = 0
    threads: int | None = None  # torch CPU threads; recorded so a resumed run computes identically
    checkpoint_every: int | None = None  # default: the recipe's val_every
    log_every: int = 10
    val_limit: int | None = None  # validate on the first N images only
    val_batch_size: int = 1  # >1 pads images of different sizes (exact when all have one size)
    overlays: int = 6  # validation images drawn in val_overlays.png (0: none)
    channels_last: bool = True
    cache_in_memory: bool = False  # read both splits once and keep them in memory (small sets, the demo)
    cpu_bf16: bool = False  # bf16 autocast on CPUs that compute bf16 natively (faster; numerics change)
    fast_paths: bool = True  # exact (fcnseg.models.fast.enable_fast_training): same gradients, ~1.4x faster steps
    progress: bool = True

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["recipe"] = self.recipe.to_dict()
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TrainConfig":
        data = dict(data)
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - names
        if unknown:
            raise ValueError(f"unknown run settings {sorted(unknown)}")
        data["recipe"] = Recipe.from_dict(data["recipe"])
        return cls(**data)


@dataclass
class Run:
    """The live objects of a run (built by :func:`build_run`)."""

    config: TrainConfig
    ctx: DistContext
    out_dir: Path
    model: nn.Module  # the bare model (what gets saved)
    network: nn.Module  # what training calls: the model, or its DDP wrapper
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    loss: SegmentationLoss
    train_set: Any
    val_set: Any
    micro_batch: int
    amp_dtype: torch.dtype | None
    scaler: torch.amp.GradScaler | None
    step: int = 0
    best_mean_iu: float = -math.inf
    init_description: str = ""

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
    saved = (torch.get_num_threads(), torch.are_deterministic_algorithms_enabled(),
             torch.is_deterministic_algorithms_warn_only_enabled(), torch.backends.cudnn.benchmark)
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


def in_memory(dataset: SegmentationDataset) -> InMemoryDataset:
    """``dataset`` read once into memory (masks as uint8 when the labels fit)."""
    items = [dataset[index] for index in range(len(dataset))]
    small = dataset.ignore_index <= 255 and dataset.num_classes <= 255
    return InMemoryDataset([image for image, _ in items], [mask.to(torch.uint8) if small else mask for _, mask in items],
                           classes=dataset.classes, ids=dataset.ids, palette=dataset.palette,
                           ignore_index=dataset.ignore_index)


def build_run(config: TrainConfig, out_dir: str | Path, ctx: DistContext) -> Run:
    """Datasets, model (initialised), loss, optimiser and schedule for ``config``; step 0."""
    recipe = config.recipe
    micro = micro_batch_size(recipe.batch_size, ctx.world_size, config.accumulate)
    train_set = open_dataset(config.data, config.root, config.train_split, **config.data_options)
    val_set = open_dataset(config.data, config.root, config.val_split, **{**config.data_options, **config.val_data_options})
    if config.cache_in_memory:
        train_set, val_set = in_memory(train_set), in_memory(val_set)
    if list(val_set.classes) != list(train_set.classes):
        raise ValueError(f"validation classes {val_set.classes} differ from training classes {train_set.classes}")

    torch.manual_seed(config.seed)  # the same initial weights on every rank (DDP also broadcasts rank 0's)
    model = create_model(config.model, num_classes=train_set.num_classes, width=config.width, **recipe.model_options)
    init_description = apply_initial_weights(model, config.init)
    model.to(ctx.device)
    if config.channels_last:
        model.to(memory_format=torch.channels_last)

    weight = None
    if config.class_weights == "median-frequency":
        weight = median_frequency_weights(class_statistics(train_set, train_set.num_classes))
    elif config.class_weights not in (None, "none"):
        raise ValueError(f"unknown class weighting {config.class_weights!r}; expected 'median-frequency' or none")
    loss = SegmentationLoss(recipe.loss, ignore_index=train_set.ignore_index, weight=weight)

    optimizer = build_optimizer(model, name=recipe.optimizer, lr=recipe.lr, momentum=recipe.momentum,
                                weight_decay=recipe.weight_decay, bias_lr_mult=recipe.bias_lr_mult,
                                bias_decay=recipe.bias_decay)
    warmup = int(round(recipe.warmup_fraction * recipe.steps)) if recipe.schedule == "poly" else 0
    scheduler = build_scheduler(optimizer, LRFactor(recipe.schedule, recipe.steps, warmup, power=recipe.poly_power))

    amp_dtype, scaler = None, None
    if recipe.amp and ctx.device.type == "cuda":
        amp_dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        if amp_dtype == torch.float16:
            scaler = torch.amp.GradScaler("cuda")
    elif config.cpu_bf16 and ctx.device.type == "cpu" and cpu_has_native_bf16():
        amp_dtype = torch.bfloat16

    if config.fast_paths and isinstance(model, FCN) and isinstance(model.backbone, VGG16Backbone):
        enable_fast_training(model)  # padding trim + matmul fc6/fc7: the same function, computed faster
    network: nn.Module = model
    if ctx.distributed:
        network = DistributedDataParallel(network, device_ids=[ctx.device.index] if ctx.device.type == "cuda" else None)
    # Each rank draws its own dropout masks from here on.
    torch.manual_seed(config.seed * 1000 + 1 + ctx.rank)
    return Run(config=config, ctx=ctx, out_dir=Path(out_dir), model=model, network=network, optimizer=optimizer,
               scheduler=scheduler, loss=loss, train_set=train_set, val_set=val_set, micro_batch=micro,
               amp_dtype=amp_dtype, scaler=scaler, init_description=init_description)


def train_loader(run: Run) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Endless micro-batches for this rank, starting where ``run.step`` is."""
    recipe, config = run.config.recipe, run.config
    fill = run.model.preprocessing.mean_rgb_uint8()
    transform = None
    if recipe.augment or recipe.crop_size is not None:
        transform = TrainTransform(
            crop_size=recipe.crop_size,
            scale_range=recipe.scale_range if recipe.augment else None,
            hflip=recipe.hflip and recipe.augment,
            color_jitter=recipe.color_jitter if recipe.augment else None,
            fill=fill,
            ignore_index=run.train_set.ignore_index,
        )
    sampler = EpochBatchSampler(len(run.train_set), run.micro_batch, seed=config.seed, rank=run.ctx.rank,
                                world_size=run.ctx.world_size, start_batch=run.step * config.accumulate)
    loader = DataLoader(
        SeededSamples(run.train_set, transform),
        batch_sampler=sampler,
        collate_fn=PadCollate(fill=fill, ignore_index=run.train_set.ignore_index),
        num_workers=config.workers,
        persistent_workers=config.workers > 0,
        pin_memory=run.ctx.device.type == "cuda",
        generator=torch.Generator(),  # keeps the loader from drawing on the global RNG
    )
    return iter(loader)


# --- one step ---------------------------------------------------------------------------------


def _to_input(run: Run, images: torch.Tensor) -> torch.Tensor:
    blob = preprocess(images.to(run.ctx.device, non_blocking=True), run.model.preprocessing)
    return blob.contiguous(memory_format=torch.channels_last) if run.config.channels_last else blob


def train_step(run: Run, batches: list[tuple[torch.Tensor, torch.Tensor]]) -> float:
    """One optimiser step on this rank's micro-batches; returns the global batch's loss.

    Raises :class:`TrainingDiverged` (before touching the weights) if the loss is not finite.
    """
    device, world = run.ctx.device, run.ctx.world_size
    masks = [m.to(device, non_blocking=True) for _, m in batches]
    normalizer = all_reduce_sum(sum(run.loss.normalizer(m) for m in masks).reshape(1).float())
    # DDP averages gradients over ranks; scaling by the world size makes that the global sum / normaliser.
    scale = world / normalizer.clamp(min=torch.finfo(torch.float32).tiny)
    total = torch.zeros(1, device=device)
    for index, ((images, _), target) in enumerate(zip(batches, masks)):
        last = index == len(batches) - 1
        sync = contextlib.nullcontext() if last or not run.ctx.distributed else run.network.no_sync()
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
            f"loss is {value} at step {run.step + 1} (lr {run.optimizer.param_groups[0]['lr']:.3g}): training stopped; "
            f"the last good checkpoint in {run.out_dir} is kept (lower the learning rate or check the data)"
        )
    if run.scaler:
        run.scaler.step(run.optimizer)
        run.scaler.update()
    else:
        run.optimizer.step()
    run.optimizer.zero_grad(set_to_none=True)
    run.scheduler.step()
    run.step += 1
    return value


# --- validation -------------------------------------------------------------------------------


def validate(run: Run) -> dict[str, Any]:
    """The four metrics (and per-class IU) on the validation split, via :func:`fcnseg.evaluate.evaluate`.

    Each rank evaluates every ``world_size``-th image; the confusion matrices are summed
    over ranks. With ``val_batch_size`` 1 images go one at a time at native size (the
    paper); larger batches are padded to the largest image with the mean colour.
    """
    config, ctx = run.config, run.ctx
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
    return evaluate(run.model, data, run.val_set.num_classes, ctx.device, run.val_set.ignore_index,
                    amp_dtype=run.amp_dtype, num_workers=config.workers, progress=False)


# --- saving and resuming ----------------------------------------------------------------------


def _checkpoint_extra(run: Run, metrics: dict[str, Any] | None) -> dict[str, Any]:
    extra: dict[str, Any] = {"step": run.step, "init": run.init_description, "data": run.config.data,
                             "seed": run.config.seed}
    if metrics:
        extra["val"] = {k: v for k, v in metrics.items() if k != "iu"}
    return extra


def save_model(run: Run, path: Path, metrics: dict[str, Any] | None) -> None:
    """A self-describing checkpoint of the current weights (rank 0 only)."""
    if run.ctx.is_main:
        save_checkpoint(path, run.model, classes=run.classes, palette=run.train_set.palette,
                        ignore_index=run.train_set.ignore_index, recipe=run.config.recipe.to_dict(),
                        extra=_checkpoint_extra(run, metrics))


def save_state(run: Run) -> None:
    """``train_state.pt``: everything to continue exactly (RNG states gathered from every rank)."""
    rng = gather_objects(capture_rng_state())
    if run.ctx.is_main:
        save_train_state(run.out_dir / STATE_FILE, {
            "step": run.step,
            "best_mean_iu": run.best_mean_iu,
            "model": run.model.state_dict(),
            "optimizer": run.optimizer.state_dict(),
            "scheduler": run.scheduler.state_dict(),
            "scaler": run.scaler.state_dict() if run.scaler else {},
            "rng": rng,
            "world_size": run.ctx.world_size,
        })
    barrier()


def restore_state(run: Run, state: dict[str, Any]) -> None:
    """Put a run back where ``state`` (from :func:`save_state`) left it."""
    if state.get("world_size", 1) != run.ctx.world_size:
        raise ValueError(f"the run was saved with {state['world_size']} process(es); resume it with as many "
                         f"(this one has {run.ctx.world_size})")
    run.model.load_state_dict(state["model"])
    run.optimizer.load_state_dict(state["optimizer"])
    run.scheduler.load_state_dict(state["scheduler"])
    if run.scaler and state.get("scaler"):
        run.scaler.load_state_dict(state["scaler"])
    run.step = int(state["step"])
    run.best_mean_iu = float(state["best_mean_iu"])
    restore_rng_state(state["rng"][run.ctx.rank])


def json_safe(value: Any) -> Any:
    """NaN (e.g. the IU of a class absent from ground truth and prediction) becomes null: strict JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(item) for item in value]
    return value


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
    if overlays and run.config.overlays > 0:
        validation_overlays(run.model, run.val_set, run.out_dir / OVERLAYS_FILE, count=run.config.overlays)


# --- the loop ---------------------------------------------------------------------------------


def train(config: TrainConfig | None, out_dir: str | Path, *, resume: bool = False,
          ctx: DistContext | None = None) -> TrainResult:
    """Train ``config`` into ``out_dir``, or, with ``resume``, continue the run saved there (``config`` unused).

    Validates every ``recipe.val_every`` steps and at the end (best and last
    checkpoints), saves the training state every ``checkpoint_every`` steps.
    """
    out_dir = Path(out_dir)
    saved_state = None
    if resume:
        config = load_run_config(out_dir)
        saved_state = load_train_state(out_dir / STATE_FILE)
    elif config is None:
        raise ValueError("train needs a TrainConfig unless it resumes a run")
    ctx = ctx or init_distributed(config.device)
    with determinism(config.threads, ctx.device):
        return _train(config, out_dir, ctx, saved_state)


def _train(config: TrainConfig, out_dir: Path, ctx: DistContext, saved_state: dict[str, Any] | None) -> TrainResult:
    """The body of :func:`train`, under the run's determinism settings."""
    resume = saved_state is not None
    if ctx.is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
        if not resume:
            atomic_write_text(out_dir / RUN_FILE, json.dumps(config.to_dict(), indent=2) + "\n")
            (out_dir / METRICS_FILE).unlink(missing_ok=True)
    barrier()
    run = build_run(config, out_dir, ctx)
    if saved_state is not None:
        restore_state(run, saved_state)
        if ctx.is_main:
            _truncate_records(out_dir / METRICS_FILE, run.step)
    recipe = config.recipe
    checkpoint_every = config.checkpoint_every or recipe.val_every
    if ctx.is_main:
        logger.info("%s %s width %g, %d classes, init %s; recipe %s; %d steps of %d images (%d process(es) x %d x %d)",
                    "resuming" if resume else "training", config.model, config.width, run.model.num_classes,
                    run.init_description, recipe.name, recipe.steps, recipe.batch_size, ctx.world_size,
                    config.accumulate, run.micro_batch)
    batches = train_loader(run)
    started, images_seen, last_metrics = time.perf_counter(), 0, {}
    progress = _progress(run, recipe.steps)
    run.network.train()
    try:
        while run.step < recipe.steps:
            step_batches = [next(batches) for _ in range(config.accumulate)]
            lr = run.optimizer.param_groups[0]["lr"]
            loss = train_step(run, step_batches)
            images_seen += recipe.batch_size
            progress.update(1)
            if run.step % config.log_every == 0 or run.step == recipe.steps:
                elapsed = time.perf_counter() - started
                _append_record(run, {"step": run.step, "loss": loss, "lr": lr, "images_per_s": images_seen / elapsed,
                                     "time": elapsed})
                progress.set_postfix(loss=f"{loss:.4g}", lr=f"{lr:.3g}")
            final = run.step == recipe.steps
            metrics = None
            if run.step % recipe.val_every == 0 or final:
                metrics = last_metrics = validate(run)
                _append_record(run, {"step": run.step, "val": metrics, "time": time.perf_counter() - started})
                if metrics["mean_iu"] > run.best_mean_iu or not (out_dir / BEST_CHECKPOINT).exists():
                    run.best_mean_iu = max(run.best_mean_iu, metrics["mean_iu"])
                    save_model(run, out_dir / BEST_CHECKPOINT, metrics)
                _draw_pictures(run, overlays=final)
                progress.set_postfix(loss=f"{loss:.4g}", mean_iu=f"{metrics['mean_iu']:.3f}")
            if run.step % checkpoint_every == 0 or final:
                save_model(run, out_dir / LAST_CHECKPOINT, metrics)
                save_state(run)
    finally:
        progress.close()
    return TrainResult(step=run.step, best_mean_iu=run.best_mean_iu, last_metrics=last_metrics, out_dir=out_dir,
                       seconds=time.perf_counter() - started)


def load_run_config(out_dir: str | Path) -> TrainConfig:
    """The :class:`TrainConfig` saved in a run directory."""
    path = Path(out_dir) / RUN_FILE
    if not path.is_file():
        raise ValueError(f"{out_dir} is not a run directory: {RUN_FILE} is missing")
    try:
        return TrainConfig.from_dict(json.loads(path.read_text(encoding="utf-8")))
    except (json.JSONDecodeError, TypeError, KeyError, ValueError) as error:
        raise ValueError(f"{path}: not a valid run configuration ({error})") from None


def _progress(run: Run, total: int) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=run.step, desc="train", unit="step", dynamic_ncols=True,
                disable=not (run.config.progress and run.ctx.is_main))
