"""The one error type of weight loading, and the checks every loader uses (shapes, finite values, no code)."""

from __future__ import annotations

import os
import pickle
import warnings
from collections.abc import Mapping
from typing import Any

import torch

from ..checkpoint import check_finite
from ..models.contract import ReferenceNet


class WeightsError(ValueError):
    """Weights that cannot be loaded: a missing or malformed file, or a tensor of the wrong shape.

    The message names the file (or source) and the layer, and says what was expected.
    """


def reference_tensors(model: ReferenceNet) -> dict[str, torch.Tensor]:
    """The model's weights keyed ``"<reference layer>.<weight|bias>"`` (e.g. ``"fc6.weight"``).

    The tensors are the model's own parameters, so writing into them loads the model.
    """
    tensors: dict[str, torch.Tensor] = {}
    for layer, module in model.reference_layers().items():
        for kind, tensor in module.named_parameters(recurse=False):
            tensors[f"{layer}.{kind}"] = tensor
    return tensors


def assign_reference_weights(model: ReferenceNet, weights: Mapping[str, torch.Tensor], source: str) -> list[str]:
    """Copy ``weights`` (keyed as :func:`reference_tensors`) into ``model``; returns the layers loaded.

    Every key must exist in the model and every shape must match exactly; otherwise nothing is written and
    :class:`WeightsError` names the layer, both shapes and ``source``.
    """
    targets = reference_tensors(model)
    unknown = sorted(set(weights) - set(targets))
    if unknown:
        raise WeightsError(f"{source}: the model has no tensor {unknown[0]!r} (it has {', '.join(targets)})")
    for key, value in weights.items():
        check_finite(key, value, source, WeightsError)
        if tuple(value.shape) != tuple(targets[key].shape):
            raise WeightsError(
                f"{source}: layer {key.rsplit('.', 1)[0]!r}: {key} has shape {tuple(value.shape)} "
                f"but the model expects {tuple(targets[key].shape)}"
            )
    with torch.no_grad():
        for key, value in weights.items():
            targets[key].copy_(value)
    return list(dict.fromkeys(key.rsplit(".", 1)[0] for key in weights))


def check_same_shape(key: str, value: torch.Tensor, expected: torch.Tensor, source: str) -> None:
    """Raise :class:`WeightsError` unless ``value`` has ``expected``'s shape."""
    if tuple(value.shape) != tuple(expected.shape):
        raise WeightsError(
            f"{source}: {key} has shape {tuple(value.shape)} but the target expects {tuple(expected.shape)}"
        )


def load_without_code(path: str | os.PathLike[str], what: str) -> Any:
    """``torch.load(path, weights_only=True)``: tensors and plain containers only, never code.

    A file holding anything else is refused with this project's own message (torch's would
    suggest turning the safety off); other damage is one line naming ``what`` was expected.
    """
    try:
        with warnings.catch_warnings():  # torch's notes on pickle protocols are not the user's business
            warnings.simplefilter("ignore")
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise WeightsError(
            f"{path}: refused: it holds Python objects other than tensors and plain containers, and "
            f"loading those could run code from the file; fcnseg loads {what} without running any code"
        ) from None
    except Exception as error:  # torch raises RuntimeError, EOFError, ... for damaged files
        first_line = str(error).strip().splitlines()[0][:200] if str(error).strip() else ""
        raise WeightsError(f"{path}: not a readable {what} ({type(error).__name__}: {first_line})") from None
