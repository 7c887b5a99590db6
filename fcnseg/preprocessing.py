"""Input preprocessing: metadata that travels with the weights, applied in one place.

Weights expect the input convention they were trained with: the paper's Caffe
weights take BGR pixels in 0..255 minus the Caffe mean; torchvision's VGG16
takes RGB in 0..1 normalised by the ImageNet mean and std. The convention is
stored on the model (``model.preprocessing``) and in every checkpoint and
export, and :func:`preprocess` is the single function that data loading,
prediction, export and serving all call.

It is not folded into ``conv1_1``: the 100-pixel zero padding of ``conv1_1``
would then pad with ``-mean`` instead of zero.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import torch

CAFFE_BGR_MEAN = (104.00698793, 116.66876762, 122.67891434)
IMAGENET_RGB_MEAN = (0.485, 0.456, 0.406)
IMAGENET_RGB_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class Preprocessing:
    """How uint8 RGB pixels become the network's input blob.

    ``blob[c] = (pixel[c'] * scale - mean[c]) / std[c]`` where ``c'`` is the
    RGB channel that lands in position ``c`` after ordering by ``channel_order``.
    ``mean`` and ``std`` are given in the network's channel order and in scaled units.
    """

    channel_order: str = "RGB"
    scale: float = 1 / 255
    mean: tuple[float, float, float] = IMAGENET_RGB_MEAN
    std: tuple[float, float, float] = IMAGENET_RGB_STD

    def __post_init__(self) -> None:
        if self.channel_order not in ("RGB", "BGR"):
            raise ValueError(f"channel_order must be 'RGB' or 'BGR', got {self.channel_order!r}")
        for field_name in ("mean", "std"):
            values = getattr(self, field_name)
            if len(values) != 3:
                raise ValueError(f"{field_name} needs 3 values, got {values!r}")
            object.__setattr__(self, field_name, tuple(float(v) for v in values))
        if any(s == 0 for s in self.std):
            raise ValueError(f"std must be non-zero, got {self.std!r}")
        if (
            isinstance(self.scale, bool)
            or not isinstance(self.scale, (int, float))
            or not 0 < self.scale < float("inf")
        ):
            raise ValueError(f"scale must be a positive number, got {self.scale!r}")
        if not all(math.isfinite(v) for v in self.mean + self.std):
            raise ValueError(f"mean and std must be finite, got {self.mean!r} and {self.std!r}")

    def mean_rgb_uint8(self) -> tuple[int, int, int]:
        """The mean as an RGB uint8 colour: padding an image with it gives ~0 after :func:`preprocess`."""
        mean = self.mean[::-1] if self.channel_order == "BGR" else self.mean
        return tuple(int(round(min(255.0, max(0.0, m / self.scale)))) for m in mean)  # type: ignore[return-value]

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able form (for checkpoints and export metadata)."""
        return asdict(self) | {"mean": list(self.mean), "std": list(self.std)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Preprocessing:
        """Inverse of :meth:`to_dict`; unknown or missing keys are an error."""
        keys = {"channel_order", "scale", "mean", "std"}
        if not isinstance(data, Mapping) or set(data) != keys:
            raise ValueError(f"expected exactly the keys {sorted(keys)}")
        values: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}
        return cls(**values)


#: The paper's Caffe weights (VGG_ILSVRC_16_layers and the published FCN models).
CAFFE = Preprocessing("BGR", 1.0, CAFFE_BGR_MEAN, (1.0, 1.0, 1.0))
#: torchvision's ImageNet weights (VGG16 ``IMAGENET1K_V1``); also the default for new models.
TORCHVISION = Preprocessing("RGB", 1 / 255, IMAGENET_RGB_MEAN, IMAGENET_RGB_STD)


def preprocess(images: torch.Tensor, spec: Preprocessing) -> torch.Tensor:
    """Turn uint8 RGB images (3, H, W) or (N, 3, H, W) into a float32 network blob."""
    if images.dtype != torch.uint8:
        raise TypeError(f"preprocess expects uint8 RGB images, got dtype {images.dtype}")
    if images.dim() not in (3, 4) or images.shape[-3] != 3:
        raise ValueError(f"preprocess expects (3, H, W) or (N, 3, H, W), got shape {tuple(images.shape)}")
    blob = images.float()
    if spec.channel_order == "BGR":
        blob = blob.flip(-3)
    mean = torch.tensor(spec.mean, dtype=blob.dtype, device=blob.device).view(3, 1, 1)
    std = torch.tensor(spec.std, dtype=blob.dtype, device=blob.device).view(3, 1, 1)
    return (blob * spec.scale - mean) / std
