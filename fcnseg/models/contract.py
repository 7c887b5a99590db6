"""The model contract: what every consumer of a segmentation model may rely on, written down.

:class:`SegmentationModel` is what the Predictor and tiling (:mod:`fcnseg.inference`), training
(:mod:`fcnseg.engine`), export (:mod:`fcnseg.export`), evaluation, checkpoints and ``fcnseg serve``
use of a model, and nothing else: they read these members directly, never probe for them.
Every model :func:`fcnseg.create_model` builds satisfies it (:class:`~fcnseg.models.FCN`,
:class:`~fcnseg.models.LateFusionFCN`), and so do an ONNX export run by a runtime
(:class:`fcnseg.inference.runtimes.OnnxModel`) and the export's softmax wrapper
(:class:`fcnseg.export.onnx.WithSoftmax`); ``tests/models/test_model_contract.py`` checks
each of them, members and behaviour, over :func:`fcnseg.list_models`.

:class:`ReferenceNet` is the weight loaders' (:mod:`fcnseg.weights`): torch modules whose layers
carry the reference (Caffe) names. Every registered model keeps both.

:class:`ForwardMemory` is a model's memory estimate as data, so that an export can carry it
and a runtime that has only the file estimates exactly what the torch model does.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass
from typing import Any, Protocol, cast, runtime_checkable

import torch
from torch import nn

from ..preprocessing import Preprocessing


@dataclass(frozen=True)
class ForwardMemory:
    """A safe bound on the memory of one inference pass, as data.

    ``bytes(H, W) = int(per_padded_pixel * (H + 2 * padding) * (W + 2 * padding)) + fixed``:
    a backbone's activations scale with the input area padded by its first layer, and
    ``fixed`` holds what does not (e.g. a re-laid-out copy of the weights).
    """

    per_padded_pixel: float
    padding: int
    fixed: int = 0

    def bytes(self, height: int, width: int) -> int:
        """The bound (bytes) for an ``height`` x ``width`` input."""
        padded = (height + 2 * self.padding) * (width + 2 * self.padding)
        return int(self.per_padded_pixel * padded) + self.fixed

    def times(self, copies: int) -> ForwardMemory:
        """The bound of ``copies`` such passes held at once (e.g. two trunks side by side)."""
        return ForwardMemory(copies * self.per_padded_pixel, self.padding, copies * self.fixed)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able form (the ``tiling`` metadata of an ONNX export)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> ForwardMemory:
        return cls(values["per_padded_pixel"], int(values["padding"]), int(values["fixed"]))


@runtime_checkable
class SegmentationModel(Protocol):
    """What a consumer may rely on of a segmentation model (see the module docstring).

    Every implementation is a :class:`torch.nn.Module`: consumers also use its Module API
    (``eval``/``train``, ``to``, ``parameters``, ``modules``, ``state_dict``).
    """

    num_classes: int
    """C >= 1: the output's channels; equals ``config["num_classes"]`` and, with heads, the sum of their classes."""

    in_channels: int
    """Channels of the uint8 images :meth:`prepare_input` takes and of the blob the model takes: 3 (RGB);
    6 for the colour + HHA late-fusion net."""

    preprocessing: Preprocessing
    """The convention of the RGB input its weights expect; stored in checkpoints and exports, and set by
    the weight loaders. :meth:`prepare_input` applies it."""

    config: dict[str, Any]
    """JSON: ``config["name"]`` is a registered model name and ``create_model(config["name"], **rest)``
    builds the torch model again (what checkpoints and exports store)."""

    heads: tuple[tuple[str, int], ...] | None
    """None for one head; else ``(name, classes)`` pairs in channel order summing to :attr:`num_classes`
    (the SIFT Flow nets): training sums one loss per head, evaluation reports each head."""

    grid: int
    """Period (px, >= 1) of the model's pooling grid: tiles whose cores start on it see the whole image's grid."""

    exact_tiling: bool
    """Whether tiles with :meth:`context_margin` reproduce whole-image logits; False (a layer sees the
    whole image): inference refuses to tile."""

    fast_paths: bool
    """Whether ``forward`` takes its exact fast paths now (always False for a model without any)."""

    training: bool
    """The Module API's mode flag (consumers save and restore it around inference)."""

    def __call__(self, blob: torch.Tensor) -> torch.Tensor:
        """Logits (N, C, H, W) for a blob (N, in_channels, H, W) from :meth:`prepare_input`, aligned pixel for
        pixel to the input, for every H, W >= 1; several heads are concatenated along C."""
        ...

    def prepare_input(self, images: torch.Tensor) -> torch.Tensor:
        """The float32 blob (N, in_channels, H, W) (or (in_channels, H, W)) of uint8 images of that shape:
        the one place preprocessing is applied for this model."""
        ...

    def mean_pixel(self) -> tuple[int, ...]:
        """``in_channels`` uint8 values: the pixel :meth:`prepare_input` maps closest to zero (training pads
        augmented images with it)."""
        ...

    def set_fast_paths(self, enabled: bool) -> SegmentationModel:
        """Switch the exact fast paths on or off (same logits to fp32 rounding); returns the model itself.
        A model without fast paths ignores it."""
        ...

    def context_margin(self) -> int:
        """Context (px, >= 0, a multiple of :attr:`grid`) around a tile that makes tiled logits equal
        whole-image ones."""
        ...

    def estimate_forward_bytes(self, height: int, width: int) -> int:
        """A safe bound (bytes, > 0) on the memory of one inference pass on an H x W image; it grows with
        H and W, and equals ``forward_memory().bytes(height, width)``. Tiling plans with it."""
        ...

    def forward_memory(self) -> ForwardMemory:
        """:meth:`estimate_forward_bytes` as data: what an ONNX export writes so that its runtime model
        estimates the same."""
        ...

    # The parts of the torch Module API that consumers use (every implementation is an nn.Module).
    def to(self, *args: Any, **kwargs: Any) -> Any: ...

    def parameters(self, recurse: bool = True) -> Iterator[nn.Parameter]: ...

    def modules(self) -> Iterator[nn.Module]: ...

    def eval(self) -> Any: ...

    def train(self, mode: bool = True) -> Any: ...

    def state_dict(self, *args: Any, **kwargs: Any) -> dict[str, Any]: ...

    def load_state_dict(self, *args: Any, **kwargs: Any) -> Any: ...


@runtime_checkable
class ReferenceNet(Protocol):
    """What the weight loaders (:mod:`fcnseg.weights`) rely on: a torch module whose layers carry the reference
    (Caffe) names. Every registered model, and each stream of the late-fusion net (the reference initialised
    both streams from VGG16)."""

    caffe_preprocessing: Preprocessing | None
    """The preprocessing its published Caffe weights were trained with (:data:`fcnseg.CAFFE` unless its dataset's
    mean differs): loading a ``.caffemodel`` sets the model's ``preprocessing`` to it. None for a part of a model
    (a late-fusion stream), whose preprocessing the model holds."""

    def reference_layers(self) -> dict[str, nn.Module]:
        """Every layer with weights, under its reference (Caffe) name."""
        ...

    def fixed_scales(self) -> dict[str, torch.Tensor]:
        """The fixed scale buffers under their reference names (FCN-8s at-once: ``scale_pool4``,
        ``scale_pool3``); empty for other models."""
        ...


def bare_model(model: nn.Module | SegmentationModel) -> SegmentationModel:
    """The model inside a ``DistributedDataParallel`` or ``DataParallel`` wrapper, or ``model`` itself."""
    parallel = (nn.parallel.DistributedDataParallel, nn.DataParallel)
    inner = model.module if isinstance(model, parallel) else model
    return cast(SegmentationModel, inner)  # callers pass fcnseg's models (bare or wrapped for training)
