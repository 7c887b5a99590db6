"""A small model registry: ``create_model(name, ...)`` and ``list_models()``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

from torch import nn

from .contract import SegmentationModel

_BUILDERS: dict[str, Callable[..., nn.Module]] = {}
_DESCRIPTIONS: dict[str, str] = {}


def register_model(name: str, description: str) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Decorator that registers a model builder under ``name``."""

    def decorate(builder: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in _BUILDERS:
            raise ValueError(f"model {name!r} is already registered")
        _BUILDERS[name] = builder
        _DESCRIPTIONS[name] = description
        return builder

    return decorate


def list_models() -> list[str]:
    """Names of every registered model, sorted."""
    return sorted(_BUILDERS)


def describe_model(name: str) -> str:
    """One-line description of a registered model."""
    _check_name(name)
    return _DESCRIPTIONS[name]


def _check_name(name: str) -> None:
    if name not in _BUILDERS:
        raise ValueError(f"unknown model {name!r}; available: {', '.join(list_models())}")


def create_model(
    name: str, *, num_classes: int, width: float = 1.0, fast_paths: bool = True, **options: Any
) -> SegmentationModel:
    """Build a registered model.

    Args:
        name: one of :func:`list_models`, e.g. ``"fcn8s"``.
        num_classes: number of output classes.
        width: channel multiplier (1.0 = the paper's network; 0.25 is a light variant).
        fast_paths: the model's exact fast paths (default); False runs every layer as written.
        **options: model options, e.g. ``learnable_upsampling=True`` or ``dropout=0.0``.

    The returned model carries ``model.config`` (everything needed to build it
    again, as stored in checkpoints) and ``model.preprocessing``, and keeps the model
    contract (:class:`fcnseg.models.contract.SegmentationModel` and ``ReferenceNet``).
    """
    _check_name(name)
    try:
        model = _BUILDERS[name](num_classes=num_classes, width=width, fast_paths=fast_paths, **options)
    except TypeError as error:  # an option the model does not take
        raise ValueError(f"model {name!r}: {error}") from None
    return cast(SegmentationModel, model)  # every registered builder makes a model that keeps the contract
