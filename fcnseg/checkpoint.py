"""Self-describing checkpoints: one safetensors file that needs nothing else.

The file holds the model's weights as tensors and, in the safetensors header
metadata, a JSON description: model name and options (``model.config``),
class names, palette, ignore value, preprocessing and the training recipe.
Predict, evaluate, export and serve rebuild the model from it alone. Loading
never unpickles anything: safetensors stores raw tensors and JSON.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .files import atomic_path
from .models import create_model
from .preprocessing import Preprocessing

FORMAT = "fcnseg-checkpoint"
VERSION = 1
_METADATA_KEY = "fcnseg"


class CheckpointError(ValueError):
    """A file that is not an fcnseg checkpoint, or one that does not fit what it is used for."""


@dataclass
class Checkpoint:
    """What a checkpoint file describes, with the model rebuilt from it."""

    model: torch.nn.Module
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
    model: torch.nn.Module,
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
    config = getattr(model, "config", None)
    if not config:
        raise CheckpointError(f"{type(model).__name__} has no config: only fcnseg models can be checkpointed")
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
    """The JSON description of a checkpoint, without loading its weights."""
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
        raise CheckpointError(f"{path}: a safetensors file, but not an fcnseg checkpoint (no '{_METADATA_KEY}' metadata)")
    description = json.loads(metadata[_METADATA_KEY])
    if description.get("format") != FORMAT:
        raise CheckpointError(f"{path}: unknown checkpoint format {description.get('format')!r}")
    if description.get("version", 0) > VERSION:
        raise CheckpointError(f"{path}: checkpoint version {description['version']} is newer than this fcnseg reads ({VERSION})")
    return description


def load_checkpoint(path: str | os.PathLike[str], map_location: str | torch.device = "cpu", *,
                    fast_paths: bool = True) -> Checkpoint:
    """Rebuild the model described by a checkpoint and load its weights (no pickle involved).

    ``fast_paths`` as for :func:`fcnseg.create_model` (the exact fast paths, on by default).
    """
    description = read_description(path)
    config = dict(description["config"])
    name = config.pop("name")
    model = create_model(name, fast_paths=fast_paths, **config)
    state = load_file(str(path), device=str(map_location))
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise CheckpointError(f"{path}: weights do not fit {name}: missing {missing[:5]}, unexpected {unexpected[:5]}")
    model.preprocessing = Preprocessing.from_dict(description["preprocessing"])
    return Checkpoint(
        model=model,
        classes=list(description["classes"]),
        palette=[tuple(colour) for colour in description["palette"]],
        ignore_index=int(description.get("ignore_index", 255)),
        recipe=dict(description.get("recipe", {})),
        extra=dict(description.get("extra", {})),
    )
