"""fcnseg: Fully Convolutional Networks for semantic segmentation, exact to the paper."""

from __future__ import annotations

from . import metrics  # noqa: F401  (fcnseg.metrics.ConfusionMatrix without a second import)
from ._version import __version__
from .models import create_model, list_models
from .preprocessing import CAFFE, TORCHVISION, Preprocessing, preprocess
from .weights import load_caffe_weights

__all__ = ["CAFFE", "TORCHVISION", "Preprocessing", "create_model", "list_models", "load_caffe_weights", "preprocess", "__version__"]
