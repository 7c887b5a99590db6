"""Published Caffe weights as fcnseg checkpoints, and registry names wherever a checkpoint is taken.

:func:`resolve_checkpoint` is what a command calls on its checkpoint argument: a file path is
returned as it is; a registry name (``fcn8s-voc``) is fetched, verified and converted once into
``<cache>/checkpoints/<name>.safetensors``, whose path is returned.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import cast

from ..checkpoint import CheckpointError, save_checkpoint
from ..models import create_model, list_models
from ..models.contract import ReferenceNet
from ..preprocessing import Preprocessing
from . import registry
from .caffe import load_caffe_weights
from .checks import WeightsError
from .download import cache_dir, fetch
from .registry import KnownWeights

#: Class sets a published FCN can be converted with: the names and palette fcnseg's datasets give them.
CLASS_SETS = ("voc", "siftflow", "nyud")


def class_set(name: str) -> tuple[list[str], list[tuple[int, int, int]]]:
    """The class names (in the published nets' output order) and palette of ``name`` (one of :data:`CLASS_SETS`)."""
    from ..data import VOC_CLASSES, voc_palette
    from ..data.nyud import NYUD_CLASSES
    from ..data.palette import default_palette
    from ..data.siftflow import GEOMETRIC_CLASSES, SEMANTIC_CLASSES

    if name == "voc":
        return list(VOC_CLASSES), voc_palette(len(VOC_CLASSES))
    names = {"siftflow": SEMANTIC_CLASSES + GEOMETRIC_CLASSES, "nyud": NYUD_CLASSES}.get(name)
    if names is None:
        raise WeightsError(f"unknown class set {name!r}; expected one of {', '.join(CLASS_SETS)}")
    return list(names), default_palette(len(names))


def _caffe_input(name: str) -> Preprocessing | None:
    """The preprocessing a published file was trained with, where the model's own Caffe one is not it."""
    from ..models.latefusion import HHA_CAFFE, NYUD_CAFFE

    inputs = {"": None, "nyud-color": NYUD_CAFFE, "nyud-hha": HHA_CAFFE}
    if name not in inputs:
        raise WeightsError(f"unknown Caffe input {name!r}; expected one of {', '.join(k for k in inputs if k)}")
    return inputs[name]


def convert_caffemodel(
    path: str | os.PathLike[str],
    model_name: str,
    out: str | os.PathLike[str],
    *,
    width: float = 1.0,
    extra: dict | None = None,
    classes: str = "voc",
    caffe_input: str = "",
) -> Path:
    """Write a published FCN ``.caffemodel`` as an fcnseg checkpoint with the names and palette of ``classes``.

    ``classes`` is a class set of :data:`CLASS_SETS` (PASCAL VOC's 21 by default; "siftflow": 33 semantic
    + 3 geometric for the two-headed nets; "nyud": NYUDv2's 40). ``caffe_input`` names the mean the file
    was trained with where it is not the model's own Caffe preprocessing ("nyud-color", "nyud-hha").
    The file must hold exactly the model's layers (the bilinear upsampling may be absent): an
    ImageNet VGG16 (no score layers) or another FCN variant is refused with :class:`WeightsError`
    rather than saved half-initialised. The checkpoint is written atomically.
    """
    if model_name not in list_models():
        raise WeightsError(f"{path}: model {model_name!r} is not in this fcnseg (models: {', '.join(list_models())})")
    names, palette = class_set(classes)
    model = create_model(model_name, num_classes=len(names), width=width)
    preprocessing = _caffe_input(caffe_input)
    if preprocessing is not None:
        # load_caffe_weights sets it as the model's preprocessing (every registered model is a ReferenceNet)
        cast(ReferenceNet, model).caffe_preprocessing = preprocessing
    load_caffe_weights(model, path, complete=True)
    return save_checkpoint(
        out, model, classes=names, palette=palette, extra={"converted_from": Path(path).name, **(extra or {})}
    )


def checkpoint_path(entry: KnownWeights) -> Path:
    """Where the conversion of ``entry`` is cached."""
    return cache_dir() / "checkpoints" / f"{entry.name}.safetensors"


def check_convertible(entry: KnownWeights) -> None:
    """:class:`WeightsError` saying why ``entry`` cannot become a segmentation checkpoint, if it cannot."""
    if entry.unsupported:
        raise WeightsError(f"{entry.name}: not supported yet: {entry.unsupported}")
    if entry.is_backbone:
        raise WeightsError(
            f"{entry.name} is an ImageNet backbone, not a segmentation model: it initialises "
            f"training (fcnseg weights fetch {entry.name}, then train --init with that file)"
        )
    if entry.model not in list_models():
        raise WeightsError(
            f"{entry.name} needs the model {entry.model!r}, which this fcnseg does not have yet "
            f"(models: {', '.join(list_models())})"
        )


def convert_known(entry: KnownWeights, *, progress: bool = True) -> Path:
    """The cached checkpoint of ``entry``: fetched, verified and converted on first use."""
    check_convertible(entry)
    out = checkpoint_path(entry)
    if not out.is_file():
        source = fetch(entry, progress=progress)
        assert entry.model is not None  # check_convertible refused entries without a registered model
        convert_caffemodel(
            source,
            entry.model,
            out,
            width=entry.width,
            classes=entry.classes,
            caffe_input=entry.caffe_input,
            extra={"weights": entry.name, "url": entry.urls[0]},
        )
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
            raise CheckpointError(
                f"{name_or_path}: neither a checkpoint file nor a known weights name ({', '.join(known)})"
            )
        return path
    return convert_known(known[str(name_or_path)], progress=progress)
