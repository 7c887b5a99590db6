"""``--init``: where a new run's weights come from.

* ``imagenet`` — torchvision's ImageNet weights of the backbone (VGG16, ResNet-18/34/50/101,
  MobileNetV3-Large; its ``DEFAULT`` weights, downloaded once through torchvision, then cached);
  ``imagenet:NAME`` — another of its weights (``IMAGENET1K_V1``); ``imagenet:PATH`` — a local file;
* ``vgg16-torchvision`` — torchvision's ImageNet VGG16 (downloaded once through
  torchvision, then cached); ``vgg16-torchvision:PATH`` — the same weights from a local file;
* ``caffe:PATH.caffemodel`` — the paper's VGG16 or a published FCN (Caffe preprocessing);
* ``checkpoint:PATH`` — an fcnseg checkpoint of a coarser (or the same) FCN: staged
  training 32s -> 16s -> 8s, the new skip scores starting at zero;
* ``scratch`` (or nothing) — He initialisation, score layers at zero.
"""

from __future__ import annotations

from pathlib import Path

from ..models.contract import SegmentationModel

INIT_KINDS = ("scratch", "imagenet", "vgg16-torchvision", "caffe", "checkpoint")


def apply_initial_weights(model: SegmentationModel, spec: str | None) -> str:
    """Initialise ``model`` in place from ``spec`` (see the module docstring); returns a description."""
    if spec in (None, "", "scratch"):
        return "scratch (He initialisation, score layers at zero)"
    kind, _, path = spec.partition(":")
    if kind not in INIT_KINDS:
        raise ValueError(
            f"unknown --init {spec!r}; expected one of {', '.join(INIT_KINDS)} (with ':PATH' where needed)"
        )
    try:
        from .. import weights
    except ImportError as error:  # the models engineer's package; named so the lead can see what is missing
        raise NotImplementedError(
            f"--init {kind} is not available yet: fcnseg.weights cannot be imported ({error})"
        ) from None
    if kind == "imagenet":  # a PATH that does not exist is taken as a weights name (the error lists both)
        loaded = weights.load_imagenet(model, path or None)
        return f"torchvision ImageNet weights ({path or 'DEFAULT'}): {', '.join(loaded)}"
    if kind == "vgg16-torchvision":
        loaded = weights.load_vgg16_torchvision(model, _existing(path, spec) if path else None)
        return f"torchvision VGG16 ({path or 'IMAGENET1K_V1'}): {len(loaded)} layers"
    if not path:
        raise ValueError(f"--init {kind} needs a file: --init {kind}:PATH")
    if kind == "caffe":
        loaded = weights.load_caffe_weights(model, _existing(path, spec))
        return f"Caffe weights {path}: {', '.join(loaded)}"
    from ..checkpoint import load_checkpoint

    source = load_checkpoint(_existing(path, spec))
    if source.model.num_classes != model.num_classes:
        raise ValueError(
            f"--init {spec}: the checkpoint has {source.model.num_classes} classes, the data {model.num_classes}; "
            "change its classes first (fcnseg.weights.with_num_classes)"
        )
    loaded = weights.transfer_fcn(source.model, model)
    return f"{source.model.config.get('name')} checkpoint {path}: {len(loaded)} layers"


def _existing(path: str, spec: str) -> Path:
    file = Path(path)
    if not file.is_file():
        raise ValueError(f"--init {spec}: no such file {file}")
    return file
