"""FCN -> FCN weight surgery: staged training (32s -> 16s -> 8s) and fine-tuning to new classes.

The core functions are pure: they take state dicts and return a new one, checking every shape and naming the tensor when
one does not fit. The ``transfer_fcn`` / ``with_num_classes`` wrappers apply them to models.

Layer roles follow the reference names: ``score_*`` layers are the class scores (initialised at zero, as in the paper),
``upscore*`` layers are the bilinear deconvolutions, ``scale_pool*`` the fixed skip scales of FCN-8s at-once.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from typing import cast

import torch
from torch import nn

from ..models import SegmentationModel, create_model
from ..models.upsampling import bilinear_upsampling_weight
from .checks import WeightsError, check_same_shape

logger = logging.getLogger(__name__)

SCORE_LAYERS = ("score_fr", "score_pool4", "score_pool3", "score_pool2", "score_pool1")
#: Skip score layer -> the fixed at-once scale applied to its input.
SKIP_SCALES = {"score_pool4": "scale_pool4", "score_pool3": "scale_pool3"}

StateDict = Mapping[str, torch.Tensor]


def layer_of(key: str) -> str:
    """Reference layer name of a state-dict key: ``"backbone.conv1_1.weight"`` -> ``"conv1_1"``."""
    parts = key.split(".")
    return parts[-2] if len(parts) > 1 else parts[-1]


def _role(layer: str) -> str:
    """A head layer's role without its head suffix (``score_pool4_sem`` -> ``score_pool4``; SIFT Flow's nets)."""
    match = re.fullmatch(r"(score_fr|score_pool\d+|upscore\d*|upscore_pool\d+)_[a-z]+", layer)
    return match.group(1) if match else layer


def _is_upsampling(layer: str) -> bool:
    return layer.startswith("upscore")


def _skip_scale(state: StateDict, score_layer: str) -> float:
    """The at-once scale in front of a skip score layer (1 for models without it)."""
    key = SKIP_SCALES.get(score_layer)
    return float(state[key]) if key is not None and key in state else 1.0


def transfer_fcn_state(
    source: StateDict, target: StateDict, source_name: str = "source FCN"
) -> dict[str, torch.Tensor]:
    """Weights of ``source`` laid onto an FCN of another stride (e.g. FCN-32s -> FCN-16s -> FCN-8s).

    Returns a new state dict shaped like ``target``: every tensor both models have is copied (shapes checked); skip
    score layers that only ``target`` has start at zero and its new upsampling layers are bilinear, so the finer net
    starts out computing exactly what the coarser one did. Tensors only ``source`` has (e.g. the x32 ``upscore`` of
    FCN-32s) are dropped. Between FCN-8s and FCN-8s at-once the fixed skip scales are folded into the skip score
    weights, which keeps the output unchanged.
    """
    out: dict[str, torch.Tensor] = {}
    for key, expected in target.items():
        layer = _role(layer_of(key))
        if layer in SKIP_SCALES.values():
            out[key] = expected.detach().clone()  # a constant of the target architecture
        elif key in source:
            value = source[key].detach()
            if (layer in SCORE_LAYERS or _is_upsampling(layer)) and value.shape[:1] != expected.shape[:1]:
                raise WeightsError(
                    f"{source_name}: {key} has {value.shape[0]} classes but the target has {expected.shape[0]}; "
                    "change the number of classes with fcnseg.weights.with_num_classes first"
                )
            check_same_shape(key, value, expected, source_name)
            factor = _skip_scale(source, layer) / _skip_scale(target, layer) if key.endswith("weight") else 1.0
            out[key] = (value * factor if factor != 1.0 else value.clone()).to(expected.dtype)
        elif layer in SCORE_LAYERS:
            out[key] = torch.zeros_like(expected)
        elif _is_upsampling(layer):
            out[key] = bilinear_upsampling_weight(expected.shape[0], expected.shape[-1]).to(expected)
        else:
            raise WeightsError(f"{source_name}: no tensor {key!r}; is it an FCN of the same backbone?")
    return out


def change_num_classes_state(
    state: StateDict, num_classes: int, keep: Mapping[int, int] | None = None
) -> dict[str, torch.Tensor]:
    """An FCN state dict for ``num_classes`` classes (fine-tuning to a new task).

    The score layers restart at zero and the upsampling layers at the bilinear kernel, except for the classes in
    ``keep`` (``{new_index: old_index}``), whose score rows (and upsampling entries) are copied from ``state``.
    Everything else (the trunk) is copied unchanged.
    """
    if "score_fr.weight" not in state:
        raise WeightsError("not an FCN state dict: no 'score_fr.weight'")
    old_classes = state["score_fr.weight"].shape[0]
    keep = dict(keep or {})
    for new, old in keep.items():
        if not (0 <= new < num_classes and 0 <= old < old_classes):
            raise WeightsError(f"keep maps class {new} <- {old}, outside 0..{num_classes - 1} <- 0..{old_classes - 1}")
    new_index = torch.tensor(list(keep.keys()), dtype=torch.long)
    old_index = torch.tensor(list(keep.values()), dtype=torch.long)
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        layer = layer_of(key)
        value = value.detach()
        if layer in SCORE_LAYERS:
            fresh = torch.zeros((num_classes, *value.shape[1:]), dtype=value.dtype, device=value.device)
            fresh[new_index] = value[old_index]
        elif _is_upsampling(layer):
            fresh = bilinear_upsampling_weight(num_classes, value.shape[-1]).to(value)
            fresh[new_index[:, None], new_index[None, :]] = value[old_index[:, None], old_index[None, :]]
        else:
            fresh = value.clone()
        out[key] = fresh
    return out


def class_index_map(old_classes: Sequence[str], new_classes: Sequence[str]) -> dict[int, int]:
    """``{new_index: old_index}`` for the class names both lists share (for ``keep``)."""
    old = {name: index for index, name in enumerate(old_classes)}
    return {index: old[name] for index, name in enumerate(new_classes) if name in old}


def transfer_fcn(source: SegmentationModel | StateDict, target: SegmentationModel) -> list[str]:
    """Load ``source`` (an FCN or its state dict) into the FCN ``target`` of another stride.

    See :func:`transfer_fcn_state`. Returns the reference layers copied; a source model's preprocessing is carried over.
    """
    source_model = cast(SegmentationModel, source) if isinstance(source, nn.Module) else None
    source_state: StateDict = source_model.state_dict() if source_model is not None else cast(StateDict, source)
    name = source_model.config["name"] if source_model is not None else "source FCN"
    target_state = target.state_dict()
    target.load_state_dict(transfer_fcn_state(source_state, target_state, name))
    copied = [k for k in target_state if k in source_state and layer_of(k) not in SKIP_SCALES.values()]
    fresh = sorted({layer_of(k) for k in target_state if k not in source_state})
    dropped = sorted({layer_of(k) for k in source_state if k not in target_state})
    if fresh or dropped:
        logger.info("FCN transfer from %s: initialised %s; dropped %s", name, fresh or "none", dropped or "none")
    if source_model is not None:
        target.preprocessing = source_model.preprocessing
    return list(dict.fromkeys(layer_of(k) for k in copied))


def with_num_classes(
    model: SegmentationModel, num_classes: int, keep: Mapping[int, int] | None = None
) -> SegmentationModel:
    """A new model like ``model`` (same name and options) for ``num_classes`` classes.

    The trunk is copied; scores restart at zero except the rows in ``keep``
    (``{new_index: old_index}``, see :func:`class_index_map`). ``model`` is not changed.
    """
    if not isinstance(model, SegmentationModel):
        raise WeightsError(
            f"{type(model).__name__} is not an fcnseg model (fcnseg.models.SegmentationModel): "
            "only fcnseg models can change their classes"
        )
    config = dict(model.config)
    name = config.pop("name")
    config["num_classes"] = num_classes
    fresh = create_model(name, fast_paths=model.fast_paths, **config)
    fresh.load_state_dict(change_num_classes_state(model.state_dict(), num_classes, keep))
    fresh.preprocessing = model.preprocessing
    device = next(model.parameters()).device
    return fresh.to(device)
