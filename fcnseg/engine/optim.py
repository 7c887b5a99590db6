"""Optimiser parameter groups and the learning-rate schedules of the recipes.

The reference FCN solvers give biases twice the learning rate and no weight
decay (``lr_mult: 2, decay_mult: 0`` in every prototxt), and never train the
frozen bilinear deconvolutions. :func:`parameter_groups` builds exactly that.
The paper's VGG16 nets have no normalisation layers; for the BatchNorm trunks
(ResNet, MobileNetV3) ``norm_decay=False`` exempts the normalisation scales from
weight decay too, as is usual practice for such nets (a named option: the
default keeps the decay, the behaviour the published figures were measured with).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

# Layers whose weight is a per-channel scale, not a filter: decaying it pulls activations to zero.
NORM_LAYERS = (
    nn.BatchNorm1d,
    nn.BatchNorm2d,
    nn.BatchNorm3d,
    nn.SyncBatchNorm,
    nn.InstanceNorm1d,
    nn.InstanceNorm2d,
    nn.InstanceNorm3d,
    nn.GroupNorm,
    nn.LayerNorm,
)


def parameter_groups(
    model: nn.Module,
    *,
    lr: float,
    weight_decay: float,
    bias_lr_mult: float = 2.0,
    bias_decay: bool = False,
    norm_decay: bool = True,
) -> list[dict[str, Any]]:
    """Optimiser groups: weights (``lr``, ``weight_decay``) and biases (``lr * bias_lr_mult``).

    Biases get no weight decay unless ``bias_decay``. With ``norm_decay=False`` the
    scales of normalisation layers (BatchNorm, GroupNorm, LayerNorm) form a third
    group, ``"norms"``, at ``lr`` without weight decay (their shifts are biases).
    Parameters with ``requires_grad=False`` (the frozen upsampling) are left out
    entirely. Each group carries a ``"name"`` for logs.
    """
    norm_scales = (
        set()
        if norm_decay
        else {
            id(module.weight)
            for module in model.modules()
            if isinstance(module, NORM_LAYERS) and isinstance(getattr(module, "weight", None), nn.Parameter)
        }
    )
    weights: list[nn.Parameter] = []
    biases: list[nn.Parameter] = []
    norms: list[nn.Parameter] = []
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            continue
        if id(parameter) in norm_scales:
            norms.append(parameter)
        else:
            (biases if name.endswith("bias") else weights).append(parameter)
    groups = [
        {"name": "weights", "params": weights, "lr": lr, "weight_decay": weight_decay},
        {
            "name": "biases",
            "params": biases,
            "lr": lr * bias_lr_mult,
            "weight_decay": weight_decay if bias_decay else 0.0,
        },
        {"name": "norms", "params": norms, "lr": lr, "weight_decay": 0.0},
    ]
    return [group for group in groups if group["params"]]


def build_optimizer(
    model: nn.Module,
    *,
    name: str,
    lr: float,
    momentum: float,
    weight_decay: float,
    bias_lr_mult: float = 2.0,
    bias_decay: bool = False,
    norm_decay: bool = True,
) -> torch.optim.Optimizer:
    """``"sgd"`` (with ``momentum``, the paper's solver) or ``"adamw"`` (``momentum`` is beta1)."""
    groups = parameter_groups(
        model, lr=lr, weight_decay=weight_decay, bias_lr_mult=bias_lr_mult, bias_decay=bias_decay, norm_decay=norm_decay
    )
    if not groups:
        raise ValueError("the model has no trainable parameters")
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=momentum)
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=lr, betas=(momentum, 0.999))
    raise ValueError(f"unknown optimizer {name!r}; expected 'sgd' or 'adamw'")


@dataclass
class LRFactor:
    """Multiplier of the base learning rate at a step (0-based).

    ``"fixed"``: 1 throughout (the paper). ``"poly"``: a linear warm-up from
    ``warmup_start`` to 1 over ``warmup_steps`` steps, then
    ``(1 - (step - warmup_steps) / (total_steps - warmup_steps)) ** power``.
    The training loop sets ``lr = initial_lr * factor(step)`` before every step; a run
    trained to the clock evaluates it at the share of the clock spent instead (see
    :func:`fcnseg.engine.train.schedule_for`).
    """

    schedule: str = "fixed"
    total_steps: int = 1
    warmup_steps: int = 0
    warmup_start: float = 0.001
    power: float = 0.9

    def __post_init__(self) -> None:
        if self.schedule not in ("fixed", "poly"):
            raise ValueError(f"unknown lr schedule {self.schedule!r}; expected 'fixed' or 'poly'")
        if self.total_steps < 1:
            raise ValueError(f"total_steps must be >= 1, got {self.total_steps}")
        if self.schedule == "poly" and not 0 <= self.warmup_steps < self.total_steps:
            raise ValueError(f"need 0 <= warmup_steps < total_steps, got {self.warmup_steps} and {self.total_steps}")

    def __call__(self, step: int) -> float:
        if self.schedule == "fixed":
            return 1.0
        if step < self.warmup_steps:
            return self.warmup_start + (1.0 - self.warmup_start) * step / self.warmup_steps
        progress = (step - self.warmup_steps) / (self.total_steps - self.warmup_steps)
        return max(0.0, 1.0 - progress) ** self.power
