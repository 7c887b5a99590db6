"""ImageNet initialisation of every backbone that has torchvision weights (``--init imagenet``).

The torchvision trunks (ResNet-18/34/50/101, MobileNetV3-Large) are torchvision's own modules,
so their ImageNet state dict loads under torchvision's names; the classifier (``fc`` /
``classifier``) is dropped, every trunk tensor must be present and of the right shape. VGG16
goes through :func:`~fcnseg.weights.load_vgg16_torchvision` (fc6/fc7 reshaped). FCN-AlexNet has
no torchvision weights: torchvision's AlexNet is another net (64-192 channels, no groups, no LRN);
its ImageNet weights are the Caffe ``bvlc_alexnet.caffemodel`` (``--init caffe:PATH``).

Weights are taken by name through torchvision's weights API (``DEFAULT``, ``IMAGENET1K_V1``,
``ResNet50_Weights.IMAGENET1K_V2``...; downloaded once into the torch hub cache), or from a local
``.pth`` / ``.safetensors``. Offline, the error names the file and where to put it.
Loading sets ``model.preprocessing = TORCHVISION`` (RGB, /255, ImageNet mean and std).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..models.torchvision_trunks import ARCHITECTURES, TorchvisionBackbone
from ..models.vgg import VGG16Backbone
from ..preprocessing import TORCHVISION
from .checks import WeightsError, check_same_shape
from .torchvision_vgg import download_torchvision_state, load_vgg16_torchvision, read_state_dict_file


def torchvision_weights(arch: str, name: str = "DEFAULT") -> Any:
    """The member of torchvision's weights enum of ``arch`` called ``name`` (``IMAGENET1K_V1``,
    ``ResNet50_Weights.IMAGENET1K_V2``, ``DEFAULT``); :class:`WeightsError` listing them otherwise."""
    import torchvision

    enum = torchvision.models.get_model_weights(arch)
    try:
        return enum[name.rsplit(".", 1)[-1]]
    except KeyError:
        raise WeightsError(
            f"{name!r}: neither a file nor a weights name of torchvision's {arch} ({', '.join(enum.__members__)})"
        ) from None


def trunk_state_from_torchvision(
    state: Mapping[str, torch.Tensor], backbone: TorchvisionBackbone, source: str
) -> dict[str, torch.Tensor]:
    """torchvision's state dict of ``backbone.arch`` keyed as ``backbone.body``, classifier dropped (pure)."""
    prefix = ARCHITECTURES[backbone.arch]
    expected = backbone.body.state_dict()
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        body_key = key[len(prefix) :] if key.startswith(prefix) else None
        if body_key in expected:
            check_same_shape(key, value, expected[body_key], source)
            out[body_key] = value.detach()
        elif not key.startswith(("fc.", "classifier.")):
            raise WeightsError(f"{source}: {key!r} is not a tensor of torchvision's {backbone.arch}")
    missing = [key for key in expected if key not in out]
    if missing:
        raise WeightsError(
            f"{source}: not a torchvision {backbone.arch} state dict: no {prefix + missing[0]!r} "
            f"({len(missing)} of its {len(expected)} trunk tensors missing)"
        )
    return out


def load_imagenet(
    model: nn.Module, source: str | os.PathLike | Mapping[str, torch.Tensor] | None = None, *, progress: bool = True
) -> list[str]:
    """Load torchvision's ImageNet weights into ``model``'s backbone; returns the layers (stages) loaded.

    ``source``: ``None`` (the architecture's ``DEFAULT`` weights through torchvision's API), a
    weights name, a local file, or a state dict. The head keeps its initialisation (scores at zero,
    bilinear upsampling). Raises :class:`WeightsError` (nothing loaded) for a file or state dict
    that is not the backbone's, and for a model without torchvision weights.
    """
    backbone = getattr(model, "backbone", None)
    arch = "vgg16" if isinstance(backbone, VGG16Backbone) else getattr(backbone, "arch", None)
    if arch is None:
        name = getattr(model, "config", {}).get("name", type(model).__name__)
        raise WeightsError(
            f"{name} has no torchvision ImageNet weights; FCN-AlexNet's are the Caffe "
            "bvlc_alexnet.caffemodel (--init caffe:PATH): torchvision's AlexNet is another net"
        )
    if isinstance(source, (str, os.PathLike)) and not Path(source).is_file():
        source = torchvision_weights(arch, str(source))
    if isinstance(backbone, VGG16Backbone):
        return load_vgg16_torchvision(model, source, progress=progress)
    width = model.config.get("width", 1.0)
    if source is None or hasattr(source, "get_state_dict"):
        weights = source or torchvision_weights(arch)
        if width != 1.0:
            raise WeightsError(f"torchvision's {arch} weights fit width=1.0 models only; this model has width={width}")
        name = f"torchvision {weights}"
        state = download_torchvision_state(weights, "pass a local file: --init imagenet:PATH", progress)
    elif isinstance(source, (str, os.PathLike)):
        name, state = str(source), read_state_dict_file(source)
    else:
        name, state = "the state dict given", source
    trunk = trunk_state_from_torchvision(state, backbone, name)
    with torch.no_grad():
        for key, tensor in backbone.body.state_dict(keep_vars=True).items():
            tensor.copy_(trunk[key])
    model.preprocessing = TORCHVISION
    return list(dict.fromkeys(ARCHITECTURES[backbone.arch] + key.split(".")[0] for key in trunk))
