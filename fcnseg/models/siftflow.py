"""The paper's SIFT Flow nets: one VGG16 trunk, two score heads (semantic and geometric classes).

As the reference ``siftflow-fcn32s/16s/8s/net.py`` (shelhamer/fcn.berkeleyvision.org): after
``fc7`` each head has its own score, skip and upsampling layers, named with the suffix ``_sem``
or ``_geo`` (``score_fr_sem``, ``score_pool4_geo``, ``upscore8_sem``, ...), and its own softmax
loss (``normalize: false``, 255 ignored); the net's loss is their sum. The model is an
:class:`~fcnseg.models.FCN` with ``heads=(("sem", C - 3), ("geo", 3))``: its logits are the two
heads' concatenated along the channels, semantic first — what the ``siftflow`` dataset's
``labels="both"`` masks and :class:`fcnseg.engine.loss.HeadsLoss` expect.

The published weights take BGR pixels in 0..255 minus the SIFT Flow mean (114.578, 115.294,
108.353) (``siftflow_layers.py``), not the ImageNet one: loading them with
:func:`fcnseg.load_caffe_weights` sets that preprocessing.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..preprocessing import Preprocessing
from .fcn import FCN
from .registry import register_model

#: The reference's geometric classes: sky, horizontal, vertical.
GEOMETRIC_CLASSES = 3
SIFTFLOW_CAFFE = Preprocessing("BGR", 1.0, (114.578, 115.294, 108.353), (1.0, 1.0, 1.0))


def siftflow_heads(num_classes: int) -> tuple[tuple[str, int], tuple[str, int]]:
    """``(("sem", num_classes - 3), ("geo", 3))``: the semantic head takes the classes before the geometric ones."""
    if num_classes <= GEOMETRIC_CLASSES:
        raise ValueError(
            f"a SIFT Flow net has {GEOMETRIC_CLASSES} geometric classes after the semantic ones; "
            f"num_classes={num_classes} leaves none for the semantic head (the paper's: 33 + 3 = 36)"
        )
    return ("sem", num_classes - GEOMETRIC_CLASSES), ("geo", GEOMETRIC_CLASSES)


def _siftflow(
    stride: int, num_classes: int, width: float, heads: Sequence[tuple[str, int]] | None, options: dict[str, Any]
) -> FCN:
    model = FCN(num_classes, stride=stride, width=width, heads=heads or siftflow_heads(num_classes), **options)
    model.config["name"] = f"siftflow_fcn{stride}s"
    model.caffe_preprocessing = SIFTFLOW_CAFFE
    return model


@register_model("siftflow_fcn32s", "SIFT Flow FCN-32s: two heads (semantic C-3, geometric 3) on one trunk")
def siftflow_fcn32s(
    *, num_classes: int, width: float = 1.0, heads: Sequence[tuple[str, int]] | None = None, **options: Any
) -> FCN:
    return _siftflow(32, num_classes, width, heads, options)


@register_model("siftflow_fcn16s", "SIFT Flow FCN-16s: two heads, each with its pool4 skip")
def siftflow_fcn16s(
    *, num_classes: int, width: float = 1.0, heads: Sequence[tuple[str, int]] | None = None, **options: Any
) -> FCN:
    return _siftflow(16, num_classes, width, heads, options)


@register_model("siftflow_fcn8s", "SIFT Flow FCN-8s: two heads, each with its pool4 and pool3 skips")
def siftflow_fcn8s(
    *, num_classes: int, width: float = 1.0, heads: Sequence[tuple[str, int]] | None = None, **options: Any
) -> FCN:
    return _siftflow(8, num_classes, width, heads, options)
