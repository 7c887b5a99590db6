"""The paper's NYUDv2 late-fusion net: colour and HHA FCN-32s streams whose scores are averaged.

As the reference ``nyud-fcn32s-color-hha/net.py`` (shelhamer/fcn.berkeleyvision.org): each
modality has a whole VGG16 trunk and its own ``score_fr``, the layer names suffixed with the
modality (``conv1_1color`` ... ``fc7color``, ``score_frcolor``; ``conv1_1hha`` ...,
``score_frhha``); ``score_fused`` is an Eltwise SUM with coefficients 0.5 and 0.5; one bilinear
``upscore`` (kernel 64, stride 32) and a crop onto the colour input follow (offset 19, computed
from the coordinate maps as in :class:`~fcnseg.models.FCN`).

Input: a blob (N, 6, H, W) — channels 0-2 the colour image preprocessed with
``model.preprocessing``, channels 3-5 the HHA image with ``model.hha_preprocessing``.
:func:`preprocess_color_hha` makes it from the ``nyud`` dataset's ``modality="color_hha"``
items, uint8 (6, H, W) = RGB then HHA. The HHA convention is fixed: the channels as stored
(disparity, height, angle), 0..255, minus the NYUDv2 HHA mean of ``nyud_layers.py``. The
published colour stream takes BGR minus the NYUDv2 colour mean (116.190, 97.203, 92.318):
:func:`fcnseg.load_caffe_weights` sets it.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from ..preprocessing import TORCHVISION, Preprocessing, preprocess
from .contract import ForwardMemory
from .fcn import crop_like
from .geometry import IDENTITY, crop_offset, deconv_map
from .registry import register_model
from .upsampling import BilinearUpsampling
from .vgg import VGG16Backbone

_ONES = (1.0, 1.0, 1.0)
NYUD_CAFFE = Preprocessing("BGR", 1.0, (116.190, 97.203, 92.318), _ONES)
#: HHA images keep their stored channel order (disparity, height, angle); "RGB" here means "as stored".
HHA_CAFFE = Preprocessing("RGB", 1.0, (132.431, 94.076, 118.477), _ONES)
STREAMS = ("color", "hha")
#: The reference's ``score_fused`` coefficients.
FUSION_WEIGHT = 0.5


class FusionStream(nn.Module):
    """One modality: a VGG16 trunk and its ``score_fr`` (an FCN-32s before the upsampling).

    A :class:`~fcnseg.models.contract.ReferenceNet` of its own, so that VGG16 weights load into each
    stream as the reference initialised them; the late-fusion model holds the preprocessing.
    """

    caffe_preprocessing = None

    def __init__(self, num_classes: int, width: float, dropout: float) -> None:
        super().__init__()
        self.backbone = VGG16Backbone(width=width, dropout=dropout)
        self.score_fr = nn.Conv2d(self.backbone.channels[32], num_classes, 1)
        nn.init.zeros_(self.score_fr.weight)  # the paper starts score layers at zero
        if self.score_fr.bias is not None:
            nn.init.zeros_(self.score_fr.bias)

    def reference_layers(self) -> dict[str, nn.Module]:
        """Its layers under the plain reference names (``conv1_1`` ... ``score_fr``): VGG16 weights load into it."""
        return {**self.backbone.reference_layers(), "score_fr": self.score_fr}

    def fixed_scales(self) -> dict[str, torch.Tensor]:
        return {}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.score_fr(self.backbone(x)[32])


class LateFusionFCN(nn.Module):
    """Colour + HHA FCN-32s with late fusion (see the module docstring); ``in_channels`` is 6.

    Args as :class:`~fcnseg.models.FCN` (stride 32 only, as the paper's net). It keeps the model
    contract (:class:`~fcnseg.models.contract.SegmentationModel`, ``ReferenceNet``) with one head.
    """

    in_channels = 6
    heads = None

    def __init__(
        self,
        num_classes: int,
        width: float = 1.0,
        learnable_upsampling: bool = False,
        dropout: float = 0.5,
        fast_paths: bool = True,
    ) -> None:
        super().__init__()
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
            raise ValueError(f"num_classes must be an integer >= 1, got {num_classes!r}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")
        self.num_classes = num_classes
        self.color = FusionStream(num_classes, width, dropout)
        self.hha = FusionStream(num_classes, width, dropout)
        self.upscore = BilinearUpsampling(num_classes, 32, learnable_upsampling)
        self.final_offset = crop_offset(self.color.backbone.coord_maps[32].then(deconv_map(64, 32)), IDENTITY)
        self.preprocessing: Preprocessing = TORCHVISION
        self.hha_preprocessing = HHA_CAFFE
        self.caffe_preprocessing = NYUD_CAFFE
        self.config: dict[str, Any] = {
            "name": "nyud_fcn32s_color_hha",
            "num_classes": num_classes,
            "width": width,
            "learnable_upsampling": learnable_upsampling,
            "dropout": dropout,
        }
        self.set_fast_paths(fast_paths)

    def prepare_input(self, images: torch.Tensor) -> torch.Tensor:
        """The 6-channel blob of uint8 colour + HHA images (see :func:`preprocess_color_hha`)."""
        return preprocess_color_hha(images, self)

    def mean_pixel(self) -> tuple[int, ...]:
        """The colour then HHA uint8 values that preprocess to about zero (training pads with them)."""
        return self.preprocessing.mean_rgb_uint8() + self.hha_preprocessing.mean_rgb_uint8()

    @property
    def fast_paths(self) -> bool:
        return self.color.backbone.fast_paths

    def set_fast_paths(self, enabled: bool) -> LateFusionFCN:
        """Switch the exact fast paths of both trunks and the upsampling on or off."""
        for stream in (self.color, self.hha):
            stream.backbone.set_fast_paths(enabled)
        self.upscore.fast_paths = bool(enabled)
        return self

    @property
    def grid(self) -> int:
        return self.color.backbone.grid

    @property
    def exact_tiling(self) -> bool:
        """Whether tiles reproduce whole-image logits: the trunks' (VGG16's: yes)."""
        return self.color.backbone.exact_tiling

    def context_margin(self) -> int:
        """As :meth:`FCN.context_margin`: the trunks' receptive-field radius plus the upsampling's reach."""
        reach = self.color.backbone.receptive_field / 2 + 2 * self.grid
        return int(math.ceil(reach / self.grid) * self.grid)

    def estimate_forward_bytes(self, height: int, width: int) -> int:
        """Two trunks: twice one FCN's bound."""
        return self.forward_memory().bytes(height, width)

    def forward_memory(self) -> ForwardMemory:
        """:meth:`estimate_forward_bytes` as data: one trunk's bound, twice."""
        return self.color.backbone.forward_memory(self.num_classes).times(2)

    def reference_layers(self) -> dict[str, nn.Module]:
        """Every layer with weights under its reference name (``conv1_1color``, ``score_frhha``, ``upscore``)."""
        layers = {
            name + stream: layer
            for stream in STREAMS
            for name, layer in getattr(self, stream).reference_layers().items()
        }
        return {**layers, "upscore": self.upscore}

    def fixed_scales(self) -> dict[str, torch.Tensor]:
        """Empty: the late-fusion net has no fixed scale layers."""
        return {}

    def crop_offsets(self) -> dict[str, int]:
        return {"final": self.final_offset}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"expected a blob (N, 6, H, W): colour then HHA channels, got {tuple(x.shape)}")
        height, width = x.shape[-2:]
        fused = FUSION_WEIGHT * self.color(x[:, :3]) + FUSION_WEIGHT * self.hha(x[:, 3:])
        return crop_like(self.upscore(fused), self.final_offset, height, width)


def preprocess_color_hha(images: torch.Tensor, model: LateFusionFCN) -> torch.Tensor:
    """The blob (N, 6, H, W) of uint8 colour + HHA images (6, H, W) or (N, 6, H, W) for a late-fusion model."""
    if images.dim() not in (3, 4) or images.shape[-3] != 6:
        raise ValueError(f"expected uint8 colour + HHA images (6, H, W) or (N, 6, H, W), got {tuple(images.shape)}")
    color = preprocess(images[..., :3, :, :], model.preprocessing)
    return torch.cat([color, preprocess(images[..., 3:, :, :], model.hha_preprocessing)], dim=-3)


@register_model(
    "nyud_fcn32s_color_hha", "NYUDv2 late fusion: colour and HHA FCN-32s streams, scores averaged (6-channel input)"
)
def nyud_fcn32s_color_hha(*, num_classes: int, width: float = 1.0, **options: Any) -> LateFusionFCN:
    return LateFusionFCN(num_classes, width=width, **options)
