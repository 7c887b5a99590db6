"""Published Caffe weights as fcnseg checkpoints, and registry names wherever a checkpoint is taken.

:func:`resolve_checkpoint` is what a command calls on its checkpoint argument: a file path is
returned as it is; a registry name (``fcn8s-voc``) is fetched, verified and converted once into
``<cache>/checkpoints/<name>.safetensors``, whose path is returned.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..checkpoint import CheckpointError, save_checkpoint
from ..models import create_model, list_models
from .caffe import load_caffe_weights
from .checks import WeightsError
from .download import cache_dir, fetch
from . import registry
from .registry import KnownWeights


def convert_caffemodel(
    path: str | os.PathLike[str], model_name: str, out: str | os.PathLike[str], *, width: float = 1.0,
    extra: dict | None = None,
) -> Path:
    """Write a ``.caffemodel`` of the PASCAL VOC FCNs as an fcnseg checkpoint (21 VOC classes and palette).

    The file must hold exactly the model's layers (the bilinear upsampling may be absent): an
    ImageNet VGG16 (no score layers) or another FCN variant is refused with :class:`WeightsError`
    rather than saved half-initialised. The checkpoint is written atomically.
    """
    from ..data import VOC_CLASSES, voc_palette

    if model_name not in list_models():
        raise WeightsError(f"{path}: model {model_name!r} is not in this fcnseg (models: {', '.join(list_models())})")
    model = create_model(model_name, num_classes=len(VOC_CLASSES), width=width)
    load_caffe_weights(model, path, complete=True)
    return save_checkpoint(out, model, classes=VOC_CLASSES, palette=voc_palette(len(VOC_CLASSES)),
                           extra={"converted_from": Path(path).name, **(extra or {})})


def checkpoint_path(entry: KnownWeights) -> Path:
    """Where the conversion of ``entry`` is cached."""
    return cache_dir() / "checkpoints" / f"{entry.name}.safetensors"


def check_convertible(entry: KnownWeights) -> None:
    """:class:`WeightsError` saying why ``entry`` cannot become a segmentation checkpoint, if it cannot."""
    if entry.unsupported:
        raise WeightsError(f"{entry.name}: not supported yet: {entry.unsupported}")
    if entry.is_backbone:
        raise WeightsError(f"{entry.name} is an ImageNet backbone, not a segmentation model: it initialises "
                           f"training (fcnseg weights fetch {entry.name}, then train --init with that file)")
    if entry.model not in list_models():
        raise WeightsError(f"{entry.name} needs the model {entry.model!r}, which this fcnseg does not have yet "
                           f"(models: {', '.join(list_models())})")


def convert_known(entry: KnownWeights, *, progress: bool = True) -> Path:
    """The cached checkpoint of ``entry``: fetched, verified and converted on first use."""
    check_convertible(entry)
    out = checkpoint_path(entry)
    if not out.is_file():
        source = fetch(entry, progress=progress)
        convert_caffemodel(source, entry.model, out, width=entry.width,
                           extra={"weights": entry.name, "url": entry.urls[0]})
    return out


def resolve_checkpoint(name_or_path: str | os.PathLike[str], *, progress: bool = True) -> Path:
    """A checkpoint path for a file path or a registry name (``fcnseg weights list``).

    An existing file wins over a registry name of the same spelling. Raises
    :class:`~fcnseg.checkpoint.CheckpointError` for neither a file nor a name, and
    :class:`WeightsError` when a name cannot be fetched or converted (the message says why).
    """
    path = Path(name_or_path)
    known = registry.KNOWN_WEIGHTS
    if path.exists() or str(name_or_path) not in known:
        if not path.exists() and not path.suffix and len(path.parts) == 1:  # a bare word: a mistyped name?
            raise CheckpointError(f"{name_or_path}: neither a checkpoint file nor a known weights name "
                                  f"({', '.join(known)})")
        return path
    return convert_known(known[str(name_or_path)], progress=progress)
