"""FCN models: the registry and the building blocks."""

from __future__ import annotations

from typing import Any

from .fcn import FCN
from .latefusion import LateFusionFCN, preprocess_color_hha
from .registry import create_model, describe_model, list_models, register_model
from .upsampling import BilinearUpsampling, bilinear_kernel
from .vgg import VGG16Backbone


@register_model("fcn32s", "FCN-32s on VGG16: score_fr upsampled x32 (crop 19)")
def fcn32s(*, num_classes: int, width: float = 1.0, **options: Any) -> FCN:
    return FCN(num_classes, stride=32, width=width, **options)


@register_model("fcn16s", "FCN-16s on VGG16: + pool4 skip, upsampled x16 (crops 5, 27)")
def fcn16s(*, num_classes: int, width: float = 1.0, **options: Any) -> FCN:
    return FCN(num_classes, stride=16, width=width, **options)


@register_model("fcn8s", "FCN-8s on VGG16: + pool4 and pool3 skips, upsampled x8 (crops 5, 9, 31)")
def fcn8s(*, num_classes: int, width: float = 1.0, **options: Any) -> FCN:
    return FCN(num_classes, stride=8, width=width, **options)


@register_model("fcn8s_atonce", "FCN-8s at-once: pool4 x0.01 and pool3 x0.0001 before the skip scores")
def fcn8s_atonce(*, num_classes: int, width: float = 1.0, **options: Any) -> FCN:
    return FCN(num_classes, stride=8, width=width, atonce=True, **options)


from . import siftflow  # noqa: E402  (registers siftflow_fcn32s/16s/8s; imports the registry above)


__all__ = [
    "FCN",
    "BilinearUpsampling",
    "LateFusionFCN",
    "VGG16Backbone",
    "bilinear_kernel",
    "create_model",
    "describe_model",
    "list_models",
    "preprocess_color_hha",
    "register_model",
]
