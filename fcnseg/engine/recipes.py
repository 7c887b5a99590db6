"""Recipes: how a model is optimised (:class:`Recipe`), and named presets shipped as package data.

A preset (``fcnseg/recipes/<name>.json``, listed by ``fcnseg recipes``) is a partial training configuration: a
``description``, the :class:`Recipe` fields it sets under ``"recipe"``, and any other
:class:`~fcnseg.engine.config.TrainConfig` fields (the model, the data options...). A value
``{"by_model": {"fcn32s": ..., "default": ...}}`` depends on the model being trained (the paper's learning rates do). A
JSON or YAML file of the same shape, with an optional ``"base"`` preset, is a preset too.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

OPTIMIZERS, SCHEDULES, REDUCTIONS = ("sgd", "adamw"), ("fixed", "poly"), ("sum", "mean")
#: ``recipe.crop_size`` naming the dataset's own ``resize`` size: every batch has exactly that size.
CROP_TO_RESIZE = "resize"


@dataclass(frozen=True)
class Recipe:
    """Everything about how a model is optimised (what a checkpoint records as its recipe)."""

    name: str = "custom"
    optimizer: str = "sgd"  # "sgd" or "adamw"
    lr: float = 0.01
    momentum: float = 0.9  # SGD momentum, or AdamW's beta1
    weight_decay: float = 5e-4  # on weights; biases get none unless bias_decay
    bias_lr_mult: float = 2.0
    bias_decay: bool = False
    norm_decay: bool = True  # False: normalisation-layer scales get no weight decay (BatchNorm trunks)
    schedule: str = "poly"  # "fixed" or "poly" (with linear warm-up)
    warmup_fraction: float = 0.05  # of the steps (or of the clock), for "poly"
    poly_power: float = 0.9
    loss: str = "ce"  # a name of fcnseg.engine.loss.LOSSES: ce (the paper's), focal, ohem, lovasz
    loss_options: dict[str, Any] = dataclasses.field(default_factory=dict)  # e.g. {"gamma": 2} for focal
    reduction: str = "mean"  # "sum" (over each image, the paper) or "mean" (over valid pixels)
    batch_size: int = 8  # images per optimiser step, over all processes
    # A side in px, (height, width), "resize" (the dataset's resize size; native where it has none) or None (native
    # size: the batch is padded to its largest image). A crop pads where the scaled image is smaller (ignore label).
    crop_size: int | tuple[int, int] | str | None = 320
    scale_range: tuple[float, float] = (0.5, 2.0)
    hflip: bool = True
    color_jitter: float = 0.2
    augment: bool = True
    steps: int = 20_000
    minutes: float | None = None  # train to the clock: the schedule spans this many minutes of training
    val_every: int | None = None  # steps between validations of a step-counted run (None: ``evals`` of them)
    evals: int = 10  # validations evenly spaced over the run (steps or clock), the last at its end
    amp: bool = True  # bf16 (or fp16 with loss scaling) autocast, on a GPU only

    def __post_init__(self) -> None:
        for name, allowed in (("optimizer", OPTIMIZERS), ("schedule", SCHEDULES), ("reduction", REDUCTIONS)):
            if getattr(self, name) not in allowed:
                raise ValueError(f"recipe.{name} must be one of {', '.join(allowed)}, got {getattr(self, name)!r}")
        positive = {
            "lr": self.lr,
            "batch_size": self.batch_size,
            "steps": self.steps,
            "evals": self.evals,
            "val_every": self.val_every if self.val_every is not None else 1,
            "minutes": self.minutes if self.minutes is not None else 1,
        }
        for name, value in positive.items():
            if not value > 0:
                raise ValueError(f"recipe.{name} must be > 0, got {value!r}")
        if not 0 <= self.warmup_fraction < 1:
            raise ValueError(f"recipe.warmup_fraction must be in [0, 1), got {self.warmup_fraction!r}")
        _check_crop_size(self.crop_size)

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["scale_range"] = list(self.scale_range)
        data["loss_options"] = dict(self.loss_options)
        if isinstance(self.crop_size, tuple):
            data["crop_size"] = list(self.crop_size)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Recipe:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - names
        if unknown:
            raise ValueError(f"unknown recipe field(s) {sorted(unknown)}; known: {sorted(names)}")
        data = dict(data)
        if "scale_range" in data:
            data["scale_range"] = tuple(float(v) for v in data["scale_range"])
        if isinstance(data.get("crop_size"), list):
            data["crop_size"] = tuple(data["crop_size"])
        return cls(**data)

    def replace(self, **changes: Any) -> Recipe:
        """A copy with some fields changed (unknown field names are an error)."""
        return Recipe.from_dict({**self.to_dict(), **changes})


def _check_crop_size(value: Any) -> None:
    sides = value if isinstance(value, tuple) else (value,)
    whole = all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in sides)
    if value is None or value == CROP_TO_RESIZE or (whole and len(sides) in (1, 2)):
        return
    raise ValueError(
        f"recipe.crop_size must be a side in px, [height, width], {CROP_TO_RESIZE!r} (the dataset's "
        f"resize size) or null (native size, batches padded to their largest image); got {value!r}"
    )


def list_presets() -> dict[str, str]:
    """Name -> description of every preset shipped with fcnseg."""
    folder = resources.files("fcnseg").joinpath("recipes")
    names = sorted(entry.name[:-5] for entry in folder.iterdir() if entry.name.endswith(".json"))
    return {name: load_preset(name).get("description", "") for name in names}


def load_preset(spec: str) -> dict[str, Any]:
    """A preset by name (``paper``, ``modern``, ``demo``, ``camvid``...) or from a .json/.yaml file.

    A file may name a ``"base"`` preset; its own fields are laid over the base's.
    """
    shipped = resources.files("fcnseg").joinpath("recipes").joinpath(f"{spec}.json")
    if "/" not in spec and shipped.is_file():
        data = json.loads(shipped.read_text(encoding="utf-8"))
        return {**data, "recipe": {"name": spec, **data.get("recipe", {})}}
    path = Path(spec)
    if path.suffix.lower() not in (".json", ".yaml", ".yml"):
        raise ValueError(f"unknown recipe {spec!r}: give one of {', '.join(list_presets())} or a .json/.yaml file")
    data = read_config_file(path)
    base = data.pop("base", None)
    data["recipe"] = {"name": data.get("recipe", {}).get("name", path.stem), **data.get("recipe", {})}
    return merge(load_preset(base), data) if base else data


def read_config_file(path: Path) -> dict[str, Any]:
    """A JSON or YAML file holding one object (a preset, or a run's ``run.json``)."""
    if not path.is_file():
        raise ValueError(f"{path}: no such file")
    text = path.read_text(encoding="utf-8")
    try:
        if path.suffix.lower() in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text)
        else:
            data = json.loads(text)
    except Exception as error:  # json and yaml raise their own error types
        raise ValueError(f"{path}: not valid {path.suffix[1:].upper()} ({error})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected an object of settings, got {type(data).__name__}")
    return data


def merge(base: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    """``base`` with ``changes`` laid over it; nested objects are merged key by key."""
    merged = dict(base)
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict) and "by_model" not in value:
            merged[key] = merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def resolve_by_model(value: Any, model_name: str) -> Any:
    """A ``{"by_model": {...}}`` value for ``model_name`` (or its ``default``); other values unchanged."""
    if isinstance(value, dict) and set(value) == {"by_model"}:
        table = value["by_model"]
        if model_name not in table and "default" not in table:
            raise ValueError(f"the recipe has no value for model {model_name!r}; it knows {', '.join(table)}")
        return table.get(model_name, table.get("default"))
    if isinstance(value, dict):
        return {key: resolve_by_model(item, model_name) for key, item in value.items()}
    return value
