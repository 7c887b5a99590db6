"""FCN models: the registry, the building blocks, and the model contract consumers rely on (:mod:`.contract`)."""

from __future__ import annotations

from typing import Any

from .alexnet import AlexNetBackbone
from .contract import ForwardMemory, ReferenceNet, SegmentationModel, bare_model
from .fcn import BACKBONES, FCN
from .latefusion import LateFusionFCN, preprocess_color_hha
from .registry import create_model, describe_model, list_models, register_model
from .torchvision_trunks import ARCHITECTURES, TorchvisionBackbone
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


@register_model("fcn4s", "FCN-4s on VGG16: the skips carried on to pool2, upsampled x4 (staged from fcn8s)")
def fcn4s(*, num_classes: int, width: float = 1.0, **options: Any) -> FCN:
    return FCN(num_classes, stride=4, width=width, **options)


@register_model("fcn2s", "FCN-2s on VGG16: the skips carried on to pool2 and pool1, upsampled x2 (staged from fcn4s)")
def fcn2s(*, num_classes: int, width: float = 1.0, **options: Any) -> FCN:
    return FCN(num_classes, stride=2, width=width, **options)


@register_model("fcn_alexnet", "FCN-AlexNet (paper Table 1): LRN, grouped convs, fc6 6x6, upscore k63 (crop 18)")
def fcn_alexnet(*, num_classes: int, width: float = 1.0, **options: Any) -> FCN:
    return FCN(num_classes, stride=32, width=width, backbone="alexnet", name="fcn_alexnet", **options)


def _register_torchvision(arch: str, stride: int) -> None:
    """``fcn{stride}s_{arch}``: the paper's head on torchvision's trunk (no dropout unless asked)."""
    name = f"fcn{stride}s_{arch}"

    @register_model(name, f"FCN-{stride}s head on torchvision's {arch} (input padded by 31 px)")
    def build(*, num_classes: int, width: float = 1.0, dropout: float = 0.0, **options: Any) -> FCN:
        return FCN(num_classes, stride=stride, width=width, dropout=dropout, backbone=arch, name=name, **options)


#: The registered heads of each torchvision trunk (any other pair: ``FCN(C, stride, backbone=arch)``).
TORCHVISION_HEADS = {
    "resnet18": (32, 16, 8),
    "resnet34": (8,),
    "resnet50": (32, 16, 8),
    "resnet101": (8,),
    "mobilenet_v3_large": (32, 16, 8),
}
for _arch, _strides in TORCHVISION_HEADS.items():
    for _stride in _strides:
        _register_torchvision(_arch, _stride)


from . import siftflow as siftflow  # noqa: E402  (registers siftflow_fcn32s/16s/8s; imports the registry above)

__all__ = [
    "ARCHITECTURES",
    "AlexNetBackbone",
    "BACKBONES",
    "FCN",
    "TorchvisionBackbone",
    "BilinearUpsampling",
    "ForwardMemory",
    "LateFusionFCN",
    "ReferenceNet",
    "SegmentationModel",
    "VGG16Backbone",
    "bare_model",
    "bilinear_kernel",
    "create_model",
    "describe_model",
    "list_models",
    "preprocess_color_hha",
    "register_model",
]
