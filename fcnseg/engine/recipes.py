"""Named training recipes: the paper's, a modern default, and the CPU demo's.

A :class:`Recipe` holds every optimisation choice; a run may override single
fields (``--lr``, ``--batch-size``...), and a JSON file may name a base recipe
and the fields it changes (``configs/*.json``).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: Fixed learning rates of the published (PAMI "heavy") models, DESIGN §3.
PAPER_LR = {"fcn32s": 1e-10, "fcn16s": 1e-12, "fcn8s": 1e-14, "fcn8s_atonce": 1e-10}


@dataclass(frozen=True)
class Recipe:
    """Everything about how a model is optimised (what a checkpoint records as its recipe)."""

    name: str
    optimizer: str = "sgd"  # "sgd" or "adamw"
    lr: float = 0.01
    momentum: float = 0.9  # SGD momentum, or AdamW's beta1
    weight_decay: float = 5e-4  # on weights; biases get none unless bias_decay
    bias_lr_mult: float = 2.0
    bias_decay: bool = False
    schedule: str = "poly"  # "fixed" or "poly" (with linear warm-up)
    warmup_fraction: float = 0.05  # of the steps, for "poly"
    poly_power: float = 0.9
    loss: str = "mean"  # "sum" (over each image, the paper) or "mean" (over valid pixels)
    batch_size: int = 8  # images per optimiser step and per process... see global_batch in train.py
    crop_size: int | None = 320  # None = native size (images padded to the largest in the batch)
    scale_range: tuple[float, float] = (0.5, 2.0)
    hflip: bool = True
    color_jitter: float = 0.2
    augment: bool = True
    steps: int = 20_000
    val_every: int = 1_000
    amp: bool = True  # bf16 (or fp16 with loss scaling) autocast, on a GPU only
    model_options: dict[str, Any] = field(default_factory=dict)  # e.g. dropout, learnable_upsampling

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["scale_range"] = list(self.scale_range)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Recipe":
        return cls(**_checked_fields(data, "recipe"))

    def replace(self, **changes: Any) -> "Recipe":
        """A copy with some fields changed (unknown field names are an error)."""
        return dataclasses.replace(self, **_checked_fields(changes, "recipe override"))


def _checked_fields(data: dict[str, Any], what: str) -> dict[str, Any]:
    names = {f.name for f in dataclasses.fields(Recipe)}
    unknown = set(data) - names
    if unknown:
        raise ValueError(f"unknown {what} field(s) {sorted(unknown)}; known: {sorted(names)}")
    data = dict(data)
    if "scale_range" in data:
        data["scale_range"] = tuple(float(v) for v in data["scale_range"])
    return data


def paper_recipe(model_name: str) -> Recipe:
    """DESIGN §3: SGD, fixed lr by model, momentum 0.99, batch 1 at native size, summed loss, no augmentation."""
    if model_name not in PAPER_LR:
        raise ValueError(f"the paper recipe has no learning rate for {model_name!r}; known: {sorted(PAPER_LR)}")
    return Recipe(
        name="paper",
        optimizer="sgd",
        lr=PAPER_LR[model_name],
        momentum=0.99,
        weight_decay=5e-4,
        bias_lr_mult=2.0,
        schedule="fixed",
        warmup_fraction=0.0,
        loss="sum",
        batch_size=1,
        crop_size=None,
        augment=False,
        color_jitter=0.0,
        hflip=False,
        steps=300_000 if model_name == "fcn8s_atonce" else 100_000,
        val_every=4_000,
        amp=False,
        model_options={"dropout": 0.5},
    )


def modern_recipe(model_name: str) -> Recipe:
    """Batched random crops with scale/flip/jitter, mean loss, SGD 0.9 with poly + warm-up, AMP on GPU."""
    return Recipe(name="modern", optimizer="sgd", lr=0.01, momentum=0.9, weight_decay=1e-4, schedule="poly",
                  warmup_fraction=0.02, loss="mean", batch_size=8, crop_size=320, steps=20_000, val_every=1_000)


def demo_recipe(model_name: str) -> Recipe:
    """The CPU demo: a light net from scratch on synthetic images in about two minutes.

    Measured on the synthetic set (fcn8s width 0.125; see the training notes in the
    README): AdamW learns it several times faster than SGD from scratch, and 4e-3
    beats 1e-3, 2e-3 and 6e-3; large images use the CPU better than many small ones
    (the 100-px margin of conv1_1 costs the same for every image) and make the thin
    bars and small dots larger against the net's stride of 8; batches of 4 leave the
    initial all-background plateau sooner than batches of 2. No dropout (small net,
    few steps); learnable upsampling lets the head sharpen the x8 output of a tiny net.
    """
    return Recipe(
        name="demo",
        optimizer="adamw",
        lr=4e-3,
        momentum=0.9,
        weight_decay=1e-4,
        schedule="poly",
        warmup_fraction=0.05,
        loss="mean",
        batch_size=4,
        crop_size=None,
        augment=False,
        hflip=False,
        color_jitter=0.0,
        steps=1000,
        val_every=250,
        amp=False,
        model_options={"dropout": 0.0, "learnable_upsampling": True},
    )


RECIPES = {"paper": paper_recipe, "modern": modern_recipe, "demo": demo_recipe}


def get_recipe(spec: str, model_name: str) -> Recipe:
    """A recipe by name (``paper``, ``modern``, ``demo``) or from a JSON file.

    The JSON file is an object with ``"base"`` (a recipe name) and any
    :class:`Recipe` fields to change, e.g. ``{"base": "modern", "lr": 0.02}``.
    """
    if spec in RECIPES:
        return RECIPES[spec](model_name)
    path = Path(spec)
    if path.suffix != ".json":
        raise ValueError(f"unknown recipe {spec!r}: give one of {sorted(RECIPES)} or a .json file")
    if not path.is_file():
        raise ValueError(f"recipe file {path} does not exist")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"recipe file {path} is not valid JSON: {error}") from None
    if not isinstance(data, dict) or data.get("base") not in RECIPES:
        raise ValueError(f"recipe file {path} must be a JSON object with \"base\" one of {sorted(RECIPES)}")
    base = RECIPES[data.pop("base")](model_name)
    return base.replace(name=data.pop("name", f"{base.name}+{path.stem}"), **data)
