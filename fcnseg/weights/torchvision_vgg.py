"""torchvision's ImageNet VGG16 (``IMAGENET1K_V1``) as the FCN trunk.

torchvision stores VGG16 as ``features.N`` (13 convolutions among ReLUs and pools) and ``classifier.0/3/6`` (fc6, fc7,
fc8 as linear layers on the flattened 512x7x7 pool5). FCN turns fc6 into a 7x7 convolution and fc7 into a 1x1 one: the
linear weights are reshaped, never re-learned; fc8 (the 1000 ImageNet classes) is dropped, the score layers start at
zero.

These weights take RGB input in 0..1 normalised by the ImageNet mean and std,
so loading them sets ``model.preprocessing = TORCHVISION``.
"""

from __future__ import annotations

import os
import re
import urllib.error
from collections.abc import Mapping
from pathlib import Path
from typing import Any, cast

import torch

from ..models.contract import ReferenceNet, SegmentationModel
from ..preprocessing import TORCHVISION
from .checks import WeightsError, assign_reference_weights, load_without_code

#: Reference names of the 13 VGG16 convolutions, in order.
VGG16_CONV_NAMES = tuple(
    f"conv{stage}_{index}" for stage, count in enumerate((2, 2, 3, 3, 3), start=1) for index in range(1, count + 1)
)
#: torchvision classifier index -> (reference name, kernel side of the equivalent convolution).
CLASSIFIER_LAYERS = {0: ("fc6", 7), 3: ("fc7", 1)}

Source = None | str | os.PathLike | Mapping[str, torch.Tensor] | Any


def vgg16_from_torchvision(
    state: Mapping[str, torch.Tensor], source: str = "torchvision VGG16"
) -> dict[str, torch.Tensor]:
    """Rename a torchvision VGG16 state dict to reference names, fc6/fc7 reshaped into convolutions.

    Pure: returns new tensors keyed ``"conv1_1.weight"`` ... ``"fc7.bias"`` (the layout of
    :func:`fcnseg.weights.checks.reference_tensors`) and leaves ``state`` untouched. fc8 (``classifier.6``) is not used.

    Raises :class:`WeightsError` for anything that is not a plain VGG16 state
    dict, and for NaN classifier weights (``IMAGENET1K_FEATURES`` has no usable fc6/fc7).
    """
    if any(key.endswith("running_mean") for key in state):
        raise WeightsError(f"{source}: a batch-norm VGG (vgg16_bn); the FCN trunk is plain VGG16")
    conv_indices = sorted(
        int(match.group(1))
        for key, value in state.items()
        if (match := re.fullmatch(r"features\.(\d+)\.weight", key)) and value.dim() == 4
    )
    if len(conv_indices) != len(VGG16_CONV_NAMES):
        raise WeightsError(
            f"{source}: not a torchvision VGG16 state dict: {len(conv_indices)} convolutions under "
            f"'features.N.weight', VGG16 has {len(VGG16_CONV_NAMES)}"
        )
    out: dict[str, torch.Tensor] = {}
    for name, index in zip(VGG16_CONV_NAMES, conv_indices, strict=True):
        out[f"{name}.weight"] = state[f"features.{index}.weight"].detach().clone()
        out[f"{name}.bias"] = _require(state, f"features.{index}.bias", source).detach().clone()
    for index, (name, kernel) in CLASSIFIER_LAYERS.items():
        weight = _require(state, f"classifier.{index}.weight", source)
        bias = _require(state, f"classifier.{index}.bias", source)
        if torch.isnan(weight).any() or torch.isnan(bias).any():
            raise WeightsError(
                f"{source}: classifier.{index} ({name}) holds NaN: these are feature-only weights "
                "(torchvision IMAGENET1K_FEATURES), which cannot supply fc6/fc7; use IMAGENET1K_V1"
            )
        outputs, inputs = weight.shape
        if inputs % (kernel * kernel):
            raise WeightsError(
                f"{source}: classifier.{index}.weight ({name}) has {inputs} inputs, not a multiple of {kernel}x{kernel}"
            )
        # torchvision flattens pool5 as (channel, row, column): exactly a conv weight's layout.
        out[f"{name}.weight"] = weight.detach().reshape(outputs, inputs // (kernel * kernel), kernel, kernel).clone()
        out[f"{name}.bias"] = bias.detach().clone()
    return out


def _require(state: Mapping[str, torch.Tensor], key: str, source: str) -> torch.Tensor:
    if key not in state:
        raise WeightsError(f"{source}: not a torchvision VGG16 state dict: no {key!r}")
    return state[key]


def read_state_dict_file(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """A state dict from ``.safetensors``, or from a ``.pth`` read with ``torch.load(weights_only=True)``.

    Never unpickles code.
    """
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{path}: no such weights file")
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except (SafetensorError, OSError, ValueError) as error:
            raise WeightsError(f"{path}: not a readable safetensors file ({error})") from None
    state = load_without_code(path, "state dict")
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise WeightsError(f"{path}: holds a {type(state).__name__}, not a state dict of tensors")
    return dict(state)


def torchvision_cache_path(weights: Any = None) -> Path:
    """Where torchvision's weights API keeps (and looks for) a downloaded file (VGG16's by default)."""
    import torchvision

    weights = weights or torchvision.models.VGG16_Weights.IMAGENET1K_V1
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(weights.url)


def download_torchvision_state(weights: Any, local_hint: str, progress: bool = True) -> dict[str, torch.Tensor]:
    """The state dict of a torchvision weights enum member, through its weights API (downloaded once, then cached).

    Offline, raises :class:`WeightsError` naming the file, where to place it, and ``local_hint``
    (how to pass a local file instead).
    """
    cache = torchvision_cache_path(weights)
    try:
        return weights.get_state_dict(progress=progress, check_hash=True, weights_only=True)
    except (urllib.error.URLError, OSError) as error:
        raise WeightsError(
            f"cannot download torchvision {weights} weights from {weights.url} ({error}). "
            f"Offline, place that file at {cache} (the torch hub cache; $TORCH_HOME moves it), or {local_hint}"
        ) from None
    except Exception as error:  # a corrupt cached file, a hash mismatch after download
        raise WeightsError(
            f"torchvision {weights} weights at {cache} could not be read ({type(error).__name__}: {error}); "
            "delete the file to download it again"
        ) from None


def download_vgg16_state(weights: Any = None, progress: bool = True) -> dict[str, torch.Tensor]:
    """torchvision's VGG16 weights through its weights API (downloaded once, then cached).

    Offline, raises :class:`WeightsError` saying which file to place where.
    """
    import torchvision

    weights = weights or torchvision.models.VGG16_Weights.IMAGENET1K_V1
    _refuse_feature_weights(weights)
    hint = "pass a local file: load_vgg16_torchvision(model, 'path/to/vgg16-397923af.pth')"
    return download_torchvision_state(weights, hint, progress)


def _refuse_feature_weights(weights: Any) -> None:
    if getattr(weights, "name", "") == "IMAGENET1K_FEATURES":
        raise WeightsError(
            "VGG16_Weights.IMAGENET1K_FEATURES has NaN classifier weights and cannot supply fc6/fc7; "
            "use VGG16_Weights.IMAGENET1K_V1"
        )


def load_vgg16_torchvision(model: SegmentationModel, source: Source = None, *, progress: bool = True) -> list[str]:
    """Load torchvision's ImageNet VGG16 into an FCN's trunk; returns the layers loaded.

    Args:
        model: an FCN from :func:`fcnseg.create_model` (width 1.0 for the real weights).
        source: a state dict, a local file (``.safetensors`` or ``.pth``), a
            ``torchvision.models.VGG16_Weights`` member, or ``None`` for ``IMAGENET1K_V1`` through torchvision's weights
            API (download once, then the torch hub cache).
        progress: show the download progress bar.

    conv1_1 ... fc7 are overwritten (fc6/fc7 reshaped into convolutions); the score layers and the upsampling keep their
    initialisation. Sets ``model.preprocessing`` to :data:`fcnseg.TORCHVISION`.
    """
    width = model.config.get("width", 1.0)
    state: Mapping[str, torch.Tensor]
    if source is None or hasattr(source, "get_state_dict"):
        _refuse_feature_weights(source)
        if width != 1.0:
            raise WeightsError(f"torchvision's VGG16 weights fit width=1.0 models only; this model has width={width}")
        name = f"torchvision VGG16_Weights.{getattr(source, 'name', 'IMAGENET1K_V1')}"
        state = download_vgg16_state(source, progress=progress)
    elif isinstance(source, (str, os.PathLike)):
        name = str(source)
        state = read_state_dict_file(source)
    elif isinstance(source, Mapping):
        name = "torchvision VGG16 state dict"
        state = source
    else:
        raise TypeError(f"source must be None, a path, a state dict or VGG16_Weights, got {type(source).__name__}")
    try:
        # every registered model is a ReferenceNet
        loaded = assign_reference_weights(cast(ReferenceNet, model), vgg16_from_torchvision(state, name), name)
    except WeightsError as error:
        if width != 1.0:
            raise WeightsError(f"{error} (VGG16 weights fit width=1.0; this model has width={width})") from None
        raise
    model.preprocessing = TORCHVISION
    return loaded
