"""Self-describing checkpoints: one safetensors file that needs nothing else.

The file holds the model's weights as tensors and, in the safetensors header metadata, a JSON description: model name
and options (``model.config``), class names, palette, ignore value, preprocessing and the training recipe. Predict,
evaluate, export and serve rebuild the model from it alone. Loading never unpickles anything: safetensors stores raw
tensors and JSON.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .files import atomic_path
from .models import SegmentationModel, create_model
from .preprocessing import Preprocessing

FORMAT = "fcnseg-checkpoint"
VERSION = 1
_METADATA_KEY = "fcnseg"


class CheckpointError(ValueError):
    """A file that is not an fcnseg checkpoint, or one that does not fit what it is used for."""


def check_finite(key: str, value: torch.Tensor, source: str, error: type[ValueError] = CheckpointError) -> None:
    """Raise ``error`` if ``value`` holds NaN or infinite numbers (a damaged or diverged file).

    Every loader checks its tensors with it: checkpoints here, other weight files in
    :mod:`fcnseg.weights` (with its ``WeightsError``).
    """
    if value.is_floating_point() and not bool(torch.isfinite(value).all()):
        bad = int((~torch.isfinite(value)).sum())
        raise error(f"{source}: {key} holds {bad} NaN or infinite value(s); refusing weights that cannot be used")


@dataclass
class Checkpoint:
    """What a checkpoint file describes, with the model rebuilt from it."""

    model: SegmentationModel
    classes: list[str]
    palette: list[tuple[int, int, int]]
    ignore_index: int = 255
    recipe: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def preprocessing(self) -> Preprocessing:
        return self.model.preprocessing


def save_checkpoint(
    path: str | os.PathLike[str],
    model: SegmentationModel,
    *,
    classes: Sequence[str],
    palette: Sequence[Sequence[int]],
    ignore_index: int = 255,
    recipe: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write ``model`` and its description to ``path`` atomically; returns the path.

    ``model`` is any fcnseg model (its ``config`` says how to build it again).
    ``extra`` is free JSON for the caller (e.g. the step and the best mean IU).
    """
    if not isinstance(model, SegmentationModel):
        raise CheckpointError(
            f"{type(model).__name__} is not an fcnseg model (fcnseg.models.SegmentationModel): "
            "only fcnseg models can be checkpointed"
        )
    config = model.config
    if len(classes) != config["num_classes"]:
        raise CheckpointError(f"{len(classes)} class names for a model with {config['num_classes']} classes")
    if len(palette) < len(classes):
        raise CheckpointError(f"palette has {len(palette)} colours for {len(classes)} classes")
    description = {
        "format": FORMAT,
        "version": VERSION,
        "config": config,
        "classes": list(classes),
        "palette": [list(map(int, colour)) for colour in palette],
        "ignore_index": int(ignore_index),
        "preprocessing": model.preprocessing.to_dict(),
        "recipe": recipe or {},
        "extra": extra or {},
    }
    state = {name: tensor.detach().to("cpu").contiguous() for name, tensor in model.state_dict().items()}
    with atomic_path(path) as tmp:
        save_file(state, str(tmp), metadata={_METADATA_KEY: json.dumps(description)})
    return Path(path)


def read_description(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The JSON description of a checkpoint, checked (:func:`check_description`), without loading its weights."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
    except (SafetensorError, OSError, ValueError) as error:
        raise CheckpointError(f"{path}: not an fcnseg checkpoint (not a safetensors file: {error})") from None
    if _METADATA_KEY not in metadata:
        raise CheckpointError(
            f"{path}: a safetensors file, but not an fcnseg checkpoint (no '{_METADATA_KEY}' metadata)"
        )
    try:
        description = json.loads(metadata[_METADATA_KEY])
    except json.JSONDecodeError as error:
        raise CheckpointError(f"{path}: the '{_METADATA_KEY}' metadata is not valid JSON ({error})") from None
    return check_description(description, path)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_description(description: Any, path: str | os.PathLike[str]) -> dict[str, Any]:
    """``description`` if it is a well-formed checkpoint description; else :class:`CheckpointError` naming the field."""

    def fail(field: str, expected: str, value: Any) -> None:
        shown = repr(value) if len(repr(value)) < 80 else repr(value)[:77] + "..."
        raise CheckpointError(f"{path}: checkpoint field {field} is {shown}; expected {expected}")

    if not isinstance(description, dict):
        fail("(the description)", "a JSON object", description)
    if description.get("format") != FORMAT:
        fail("format", repr(FORMAT), description.get("format"))
    version = description.get("version")
    if not _is_int(version) or not 1 <= version <= VERSION:
        fail("version", f"an integer from 1 to {VERSION} (a newer fcnseg wrote it?)", version)
    config = description.get("config")
    if not isinstance(config, dict) or not isinstance(config.get("name"), str):
        fail("config", "an object with the model's 'name'", config)
    classes = description.get("classes")
    num_classes = config.get("num_classes")
    if not _is_int(num_classes) or num_classes < 1:
        fail("config.num_classes", "an integer >= 1", num_classes)
    if (
        not isinstance(classes, list)
        or len(classes) != num_classes
        or not all(isinstance(c, str) and c for c in classes)
    ):
        fail("classes", f"a list of {num_classes} non-empty names", classes)
    palette = description.get("palette")
    colours_ok = isinstance(palette, list) and all(
        isinstance(c, list) and len(c) == 3 and all(_is_int(v) and 0 <= v <= 255 for v in c) for c in palette
    )
    if not colours_ok or len(palette) < num_classes:
        fail("palette", f"at least {num_classes} [R, G, B] colours of integers 0..255", palette)
    if not _is_int(description.get("ignore_index", 255)) or not 0 <= description.get("ignore_index", 255) <= 65535:
        fail("ignore_index", "an integer 0..65535", description.get("ignore_index"))
    for key in ("recipe", "extra"):
        if not isinstance(description.get(key, {}), dict):
            fail(key, "a JSON object", description.get(key))
    try:
        Preprocessing.from_dict(description.get("preprocessing"))
    except (TypeError, ValueError, AttributeError) as error:
        fail("preprocessing", f"channel_order, scale, mean and std ({error})", description.get("preprocessing"))
    return description


def load_checkpoint(
    path: str | os.PathLike[str], map_location: str | torch.device = "cpu", *, fast_paths: bool = True
) -> Checkpoint:
    """Rebuild the model described by a checkpoint and load its weights (no pickle involved).

    Every field is checked (:func:`check_description`), and every tensor against the model the
    config builds: names, shapes, float32, finite values. ``fast_paths`` as for
    :func:`fcnseg.create_model` (the exact fast paths, on by default).
    """
    description = read_description(path)
    config = dict(description["config"])
    name = config.pop("name")
    try:
        model = create_model(name, fast_paths=fast_paths, **config)
    except (TypeError, ValueError) as error:
        raise CheckpointError(f"{path}: checkpoint field config does not build a model: {error}") from None
    try:
        state = load_file(str(path), device=str(map_location))
    except (SafetensorError, OSError, ValueError) as error:
        raise CheckpointError(f"{path}: the weights cannot be read ({error})") from None
    expected = model.state_dict()
    missing, unexpected = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    if missing or unexpected:
        raise CheckpointError(f"{path}: weights do not fit {name}: missing {missing[:5]}, unexpected {unexpected[:5]}")
    for key, tensor in state.items():
        if tensor.dtype != expected[key].dtype or tensor.shape != expected[key].shape:
            raise CheckpointError(
                f"{path}: tensor {key} is {tensor.dtype} {tuple(tensor.shape)}; {name} expects "
                f"{expected[key].dtype} {tuple(expected[key].shape)}"
            )
        check_finite(key, tensor, str(path))
    model.load_state_dict(state)
    model.preprocessing = Preprocessing.from_dict(description["preprocessing"])
    return described_checkpoint(model, description)


def described_checkpoint(
    model: SegmentationModel, description: dict[str, Any], extra: dict[str, Any] | None = None
) -> Checkpoint:
    """A :class:`Checkpoint` of ``model`` with the classes, palette, ignore value and recipe of a checkpoint's
    (checked) description; ``extra`` adds to the description's own."""
    return Checkpoint(
        model=model,
        classes=list(description["classes"]),
        palette=[tuple(colour) for colour in description["palette"]],
        ignore_index=int(description.get("ignore_index", 255)),
        recipe=dict(description.get("recipe", {})),
        extra={**description.get("extra", {}), **(extra or {})},
    )
