"""``load_caffe_weights``: the paper's Caffe weights into an fcnseg model, no Caffe needed.

Layers are matched by their reference name (conv1_1 ... fc7, score_fr, score_pool4/3, upscore*, scale_pool4/3); Caffe's
blob layouts equal PyTorch's (convolution out,in,kh,kw; deconvolution in,out,kh,kw). Two conversions are needed and made
explicitly: InnerProduct fc6/fc7 (the VGG16 ILSVRC file) become 7x7 / 1x1 convolutions, and legacy 4-D blob shapes with
leading ones ((1, 1, 1, N) biases) drop those ones. Any other difference is a shape mismatch, reported with the layer
and both shapes.
"""

from __future__ import annotations

import logging
import math
import os

import numpy as np
import torch

from ..models.contract import ReferenceNet, SegmentationModel
from .caffemodel import CaffeLayer, read_caffemodel
from .checks import WeightsError, assign_reference_weights

logger = logging.getLogger(__name__)

#: Fixed skip scales of FCN-8s at-once: scale layer -> the skip score layer it feeds.
SCALE_LAYERS = {"scale_pool4": "score_pool4", "scale_pool3": "score_pool3"}
#: Every reference layer name of the FCN family (the layer names of the reference Caffe prototxts:
#: VGG16's conv1_1 ... conv5_3 and AlexNet's conv1 ... conv5).
REFERENCE_NAMES = frozenset(
    [f"conv{s}_{i}" for s, n in enumerate((2, 2, 3, 3, 3), start=1) for i in range(1, n + 1)]
    + [f"conv{s}" for s in range(1, 6)]
    + ["fc6", "fc7", "score_fr", "score_pool4", "score_pool3"]
    + ["upscore", "upscore2", "upscore16", "upscore_pool4", "upscore8"]
    + list(SCALE_LAYERS)
)


def _without_leading_ones(shape: tuple[int, ...]) -> tuple[int, ...]:
    index = 0
    while index < len(shape) and shape[index] == 1:
        index += 1
    return shape[index:]


def _fit_blob(layer: CaffeLayer, index: int, kind: str, target: tuple[int, ...], source: str) -> torch.Tensor:
    """Blob ``index`` of ``layer`` shaped like the model tensor ``target``, or a clear error."""
    stored = layer.blob_shapes()[index]
    fits = stored == target or _without_leading_ones(stored) == _without_leading_ones(target)
    if not fits and layer.type == "InnerProduct" and len(target) == 4:
        # fc6/fc7 as InnerProduct: (out, in*kh*kw), rows flattened as (channel, row, column).
        fits = _without_leading_ones(stored) == (target[0], math.prod(target[1:]))
    if not fits:
        raise WeightsError(
            f"{source}: layer {layer.name!r} ({layer.type}) {kind} has shape {stored} in the file "
            f"but the model expects {target}"
        )
    return torch.from_numpy(layer.blob(index, source).reshape(target))


def _check_scale(model: ReferenceNet, layer: CaffeLayer, source: str) -> float:
    """The value of an at-once scale layer, checked against what the model can hold."""
    scales = model.fixed_scales()
    if layer.name not in scales:
        raise WeightsError(
            f"{source}: the file has {layer.name!r}, the fixed skip scale of FCN-8s at-once; "
            "its skip scores only fit that model: create 'fcn8s_atonce'"
        )
    if len(layer) != 1:
        raise WeightsError(f"{source}: layer {layer.name!r} has {len(layer)} blobs; a fixed scale has exactly 1")
    channels = model.reference_layers()[SCALE_LAYERS[layer.name]].in_channels
    shape = _without_leading_ones(layer.blob_shapes()[0])
    if shape not in ((), (channels,)):
        raise WeightsError(
            f"{source}: layer {layer.name!r} has shape {layer.blob_shapes()[0]}; expected ({channels},) or (1,)"
        )
    values = layer.blob(0, source)
    if values.size and not np.all(values == values.flat[0]):
        raise WeightsError(
            f"{source}: layer {layer.name!r} scales channels differently ({values.min()}..{values.max()}); "
            "the at-once model has one fixed scale per skip"
        )
    value = float(values.flat[0])
    expected = float(scales[layer.name])
    if value != expected:
        logger.warning(
            "%s: %s is %g in the file (the model had %g); using the file's value", source, layer.name, value, expected
        )
    return value


def load_caffe_weights(model: SegmentationModel, path: str | os.PathLike[str], *, complete: bool = False) -> list[str]:
    """Load a ``.caffemodel`` into ``model``; returns the names of the layers loaded, in file order.

    Works for the VGG16 ILSVRC file (V1 ``layers``, InnerProduct fc6/fc7) and the published FCN files (fcn32s/16s/8s
    heavy, fcn8s at-once, fcn-alexnet-pascal into ``fcn_alexnet``, whose grouped blobs are (out, in/2, k, k) as in
    PyTorch). Layers the model lacks (e.g. fc8) are skipped and logged; at-once ``scale_pool4/3`` blobs are checked and
    loaded into the model's fixed scales. Sets ``model.preprocessing`` to :data:`fcnseg.CAFFE` (BGR, 0..255, minus the
    mean), or to the model's ``caffe_preprocessing`` where its published weights were trained with another mean (the
    SIFT Flow and NYUDv2 nets subtract their datasets' means).

    ``complete=True`` (converting a trained FCN) also refuses a file that is not exactly this model's: one with
    reference layers the model lacks (an FCN-8s file into an FCN-32s), or without a layer the model has (scores, at-once
    scales; the bilinear ``upscore*`` may be absent).

    Raises :class:`~fcnseg.weights.WeightsError` (nothing loaded) for a file that is not a caffemodel, or a blob whose
    shape does not fit, naming the layer and both shapes.
    """
    source = str(path)
    if not isinstance(model, ReferenceNet):
        raise TypeError("load_caffe_weights needs an fcnseg model (fcnseg.models.ReferenceNet: reference_layers())")
    targets = model.reference_layers()
    weights: dict[str, torch.Tensor] = {}
    scales: dict[str, float] = {}
    loaded: list[str] = []
    skipped: list[str] = []
    layers = list(read_caffemodel(path))
    if complete:  # the wrong model is named as such, before any blob shape could differ
        known = [layer.name for layer in layers if layer.name in targets or layer.name in SCALE_LAYERS]
        _require_same_layers(model, source, known, [layer.name for layer in layers if layer.name not in known])
    for layer in layers:
        if layer.name in SCALE_LAYERS:
            scales[layer.name] = _check_scale(model, layer, source)
            loaded.append(layer.name)
            continue
        module = targets.get(layer.name)
        if module is None:
            skipped.append(layer.name)
            continue
        params = list(module.named_parameters(recurse=False))
        if len(layer) != len(params):
            raise WeightsError(
                f"{source}: layer {layer.name!r} has {len(layer)} blobs in the file but the model's layer has "
                f"{len(params)} ({', '.join(kind for kind, _ in params)})"
            )
        for index, (kind, param) in enumerate(params):
            weights[f"{layer.name}.{kind}"] = _fit_blob(layer, index, kind, tuple(param.shape), source)
        loaded.append(layer.name)
    assign_reference_weights(model, weights, source)
    with torch.no_grad():
        fixed = model.fixed_scales()
        for name, value in scales.items():
            fixed[name].fill_(value)
    if model.caffe_preprocessing is not None:  # None: a part of a model (a late-fusion stream)
        model.preprocessing = model.caffe_preprocessing
    _report(source, skipped, [name for name in targets if name not in loaded])
    return loaded


def _require_same_layers(model: ReferenceNet, source: str, loaded: list[str], skipped: list[str]) -> None:
    extra = [name for name in skipped if name in REFERENCE_NAMES]
    wanted = list(model.reference_layers()) + [name for name in SCALE_LAYERS if name in model.fixed_scales()]
    missing = [name for name in wanted if name not in loaded and not name.startswith("upscore")]
    if extra or missing:
        name = model.config["name"] if isinstance(model, SegmentationModel) else type(model).__name__
        raise WeightsError(
            f"{source}: not the weights of a trained {name}: "
            + "; ".join(
                f"{what} {names}"
                for what, names in (
                    ("the file has layers the model lacks:", extra),
                    ("the model has layers the file lacks:", missing),
                )
                if names
            )
        )


def _report(source: str, skipped: list[str], missing: list[str]) -> None:
    unexpected = [name for name in skipped if name in REFERENCE_NAMES]
    if unexpected:  # e.g. an FCN-8s file into an FCN-32s: probably the wrong model
        logger.warning("%s: the model has no layers %s; they were not loaded", source, unexpected)
    if len(skipped) > len(unexpected):
        logger.info("%s: skipped layers the model lacks: %s", source, [n for n in skipped if n not in unexpected])
    if missing:
        logger.info("%s: not in the file, kept their initialisation: %s", source, missing)
