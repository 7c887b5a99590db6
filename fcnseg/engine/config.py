"""The definition of a training run (:class:`TrainConfig`), and how one is put together.

A run is built from layers, each over the one before: the defaults below, a recipe
preset (:mod:`fcnseg.engine.recipes`), a config file (a ``run.json`` or YAML), the
command line's flags, and ``--set key=value`` pairs. Every layer names settings by the
same dotted keys (``seed``, ``model.width``, ``recipe.lr``, ``data_options.size``), and
every value goes through one typed, checked conversion (:func:`set_value`).
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import types
import typing
from dataclasses import dataclass, field
from typing import Any

from .recipes import Recipe, load_preset, merge, read_config_file, resolve_by_model


@dataclass
class TrainConfig:
    """Everything that defines a run (saved as ``run.json``; ``--resume`` rebuilds the run from it)."""

    model: dict[str, Any] = field(default_factory=lambda: {"name": "fcn8s", "width": 1.0})  # create_model's arguments
    recipe: Recipe = field(default_factory=lambda: Recipe(name="modern"))
    init: str | None = None  # imagenet[:NAME|PATH], vgg16-torchvision[:PATH], caffe:PATH, checkpoint:PATH or scratch
    data: str = "synthetic"
    root: str | None = None
    train_split: str = "train"
    val_split: str = "val"
    data_options: dict[str, Any] = field(default_factory=dict)  # to open_dataset, both splits
    val_data_options: dict[str, Any] = field(default_factory=dict)  # val only, over data_options
    accumulate: int = 1  # micro-batches per optimiser step
    class_weights: str | None = None  # None, "median-frequency" or "effective-number"
    class_weight_beta: float | None = None  # effective number's beta (None: 1 - 1 / median class pixel count)
    seed: int = 0
    device: str = "auto"
    workers: int = 0
    threads: int | None = None  # torch CPU threads; recorded so a resumed run computes identically
    checkpoint_every: int | None = None  # steps between saved states (default: at every validation)
    checkpoint_minutes: float = 5.0  # ... and at least this often by the clock
    log_every: int = 10
    val_limit: int | None = None  # validate on the first N images only
    val_batch_size: int = 1  # >1 pads images of different sizes (exact when all have one size)
    overlays: int = 6  # validation images drawn in val_overlays.png (0: none)
    # Decoded items kept in memory: None caches each split that fits the budget (engine.data_cache), True always,
    # False never (read, decode and resize every step). Items are the same either way: only the speed changes.
    cache_in_memory: bool | None = None
    cpu_bf16: bool = False  # bf16 autocast on CPUs that compute bf16 natively (faster; numerics change)
    fast_paths: bool = True  # the model's exact fast paths: same gradients to fp32 rounding, faster steps
    progress: bool = True
    tensorboard: bool = False  # TensorBoard event files in RUN_DIR/tensorboard (the tensorboard extra)

    def __post_init__(self) -> None:
        if not isinstance(self.model, dict) or not isinstance(self.model.get("name"), str):
            raise ValueError(f"model must be an object with a 'name', got {self.model!r}")
        for name in ("accumulate", "log_every", "val_batch_size"):
            if not getattr(self, name) >= 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)!r}")
        if self.class_weights not in (None, "median-frequency", "effective-number"):
            raise ValueError(
                f"class_weights must be none, median-frequency or effective-number, got {self.class_weights!r}"
            )

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["recipe"] = self.recipe.to_dict()
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        data = _upgrade(dict(data))
        unknown = set(data) - set(_FIELDS)
        if unknown:
            raise ValueError(f"unknown run setting(s) {sorted(unknown)}{_suggest(sorted(unknown)[0], _FIELDS)}")
        data["recipe"] = Recipe.from_dict(data.get("recipe", {}))
        return cls(**data)


_FIELDS = {f.name: f for f in dataclasses.fields(TrainConfig)}


def _upgrade(data: dict[str, Any]) -> dict[str, Any]:
    """A ``run.json`` written before the model had one description (model/width/recipe.model_options)."""
    if isinstance(data.get("model"), str):
        recipe = dict(data.get("recipe", {}))
        data["model"] = {"name": data["model"], "width": data.pop("width", 1.0), **recipe.pop("model_options", {})}
        if "loss" in recipe:
            recipe["reduction"] = recipe.pop("loss")
        data["recipe"] = recipe
        data.pop("channels_last", None)
    return data


def _suggest(key: str, known: typing.Iterable[str]) -> str:
    close = difflib.get_close_matches(key, list(known), n=3, cutoff=0.5)
    return f"; did you mean {' or '.join(close)}?" if close else ""


def known_keys() -> list[str]:
    """Every settable dotted key (``.KEY`` marks an object whose sub-keys are free)."""
    keys = []
    for prefix, cls in (("", TrainConfig), ("recipe.", Recipe)):
        for name, hint in typing.get_type_hints(cls).items():
            if name != "recipe" or cls is not TrainConfig:
                keys.append(f"{prefix}{name}" + (".KEY" if typing.get_origin(hint) is dict else ""))
    return sorted(keys)


def _key_type(key: str) -> Any:
    """The declared type of a dotted key (``Any`` below an object field); ValueError for an unknown key."""
    parts = key.split(".")
    cls: type = TrainConfig
    if parts[0] == "recipe" and len(parts) > 1:
        parts, cls = parts[1:], Recipe
    hint = None if (cls is TrainConfig and parts[0] == "recipe") else typing.get_type_hints(cls).get(parts[0])
    if hint is not None and len(parts) == 1:
        return hint
    if hint is not None and len(parts) == 2 and typing.get_origin(hint) is dict:
        return Any
    leaf = [k for k in known_keys() if k.split(".")[-1] == key]
    hint = f"; did you mean {leaf[0]}?" if len(leaf) == 1 else _suggest(key, known_keys())
    raise ValueError(f"unknown setting {key!r}{hint} (fcnseg train --help lists them)")


def convert(text: Any, kind: Any, key: str) -> Any:
    """``text`` (a command-line string or a parsed value) as a value of type ``kind``, checked."""
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if origin in (typing.Union, types.UnionType) and type(None) in args:
        if text is None or (isinstance(text, str) and text.strip().lower() in ("none", "null", "native")):
            return None
        return _convert_to_one_of([a for a in args if a is not type(None)], text, key)
    value = text
    if isinstance(text, str) and kind is not str:
        try:
            value = json.loads(text)
        except json.JSONDecodeError:
            value = text
    if kind is Any:
        return value
    if kind is bool:
        table = {
            "true": True,
            "yes": True,
            "on": True,
            "1": True,
            "false": False,
            "no": False,
            "off": False,
            "0": False,
        }
        if isinstance(value, bool):
            return value
        if str(text).strip().lower() in table:
            return table[str(text).strip().lower()]
    elif kind is int and isinstance(value, (int, float)) and not isinstance(value, bool) and float(value).is_integer():
        return int(value)
    elif kind is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    elif kind is str and isinstance(value, str):
        return value
    elif origin in (tuple, list) and isinstance(value, (list, tuple)):
        items = [convert(item, args[0], key) for item in value]
        if origin is tuple and len(args) == 2 and args[1] is not Ellipsis and len(items) != 2:
            raise ValueError(f"{key} expects 2 values, got {len(items)}")
        return tuple(items) if origin is tuple else items
    elif origin is dict and isinstance(value, dict):
        return value
    name = getattr(kind, "__name__", str(kind))
    raise ValueError(f"{key}: expected {name}, got {text!r}")


def _convert_to_one_of(kinds: list[Any], text: Any, key: str) -> Any:
    """``text`` as the first of ``kinds`` it converts to (``int | tuple[int, int] | str``: 320, [180,240], resize)."""
    for kind in kinds[:-1]:
        try:
            return convert(text, kind, key)
        except ValueError:
            continue
    return convert(text, kinds[-1], key)


def resolve_key(key: str) -> str:
    """The full dotted key a setting names: an unambiguous last part stands for it ("lr" is recipe.lr)."""
    if key.split(".")[-1] == key and key not in _FIELDS:
        matches = [k for k in known_keys() if k.split(".")[-1] == key]
        key = matches[0] if len(matches) == 1 else key
    return key


def get_value(settings: dict[str, Any], key: str) -> Any:
    """The value at dotted ``key`` (or its short form) of a nested settings dict; None where it is absent."""
    value: Any = settings
    for part in resolve_key(key).split("."):
        if not isinstance(value, dict):
            return None
        value = value.get(part)
    return value


def set_value(settings: dict[str, Any], key: str, value: Any) -> None:
    """Set dotted ``key`` in a nested settings dict, converting ``value`` to the key's type."""
    key = resolve_key(key)
    typed = convert(value, _key_type(key), key)
    *path, last = key.split(".")
    for part in path:  # copies on the way down: a preset's nested objects are never changed in place
        settings[part] = dict(settings.get(part) or {})
        settings = settings[part]
    settings[last] = typed


def build_config(
    preset: str | None = None, config_file: str | None = None, settings: typing.Sequence[tuple[str, Any]] = ()
) -> TrainConfig:
    """Defaults, then ``preset``, then ``config_file``, then ``settings`` (``(dotted key, value)`` pairs, in order)."""
    data = TrainConfig(recipe=Recipe()).to_dict()
    if preset:
        layer = load_preset(preset)
        layer.pop("description", None)
        data = merge(data, layer)
    if config_file:
        from pathlib import Path

        data = merge(data, read_config_file(Path(config_file)))
    keys = [key for key, _ in settings]
    for key, value in settings:
        before = data["recipe"].get("loss")
        set_value(data, key, value)
        changed_loss = key == "recipe.loss" and data["recipe"].get("loss") != before
        if changed_loss and not any(k.startswith("recipe.loss_options") for k in keys):
            # another loss than the recipe's starts without the recipe's options (focal's gamma means nothing to ce)
            data["recipe"]["loss_options"] = {}
    data = resolve_by_model(data, data["model"].get("name", ""))
    return TrainConfig.from_dict(data)
