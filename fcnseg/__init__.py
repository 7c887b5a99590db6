"""fcnseg: Fully Convolutional Networks for semantic segmentation, exact to the paper.

The packages follow the pipeline: :mod:`fcnseg.data` -> :mod:`fcnseg.models` (initialised by
:mod:`fcnseg.weights`) -> :mod:`fcnseg.engine` (training) -> :mod:`fcnseg.inference` (the one
inference path) -> :mod:`fcnseg.predict` (files in and out), :mod:`fcnseg.export`,
:mod:`fcnseg.serve` -> :mod:`fcnseg.evaluation`. The command line is :mod:`fcnseg.commands`.

After ``import fcnseg`` every package is reachable as an attribute (``fcnseg.data.open_dataset``,
``fcnseg.predict.load_image``); each is imported on first use, so ``import fcnseg`` stays light.
"""

from __future__ import annotations

import importlib
from typing import Any

from .evaluation import metrics  # fcnseg.metrics.ConfusionMatrix without a second import
from .models import create_model, list_models
from .preprocessing import CAFFE, TORCHVISION, Preprocessing, preprocess
from .weights import load_caffe_weights

#: The package version, written only here: pyproject.toml reads this literal without importing the package
#: ([tool.setuptools.dynamic]), so a source checkout on PYTHONPATH reports its own version.
__version__ = "0.2.0"

#: Sub-packages and modules imported on first attribute access.
_LAZY_MODULES = (
    "checkpoint",
    "commands",
    "data",
    "device",
    "engine",
    "evaluation",
    "export",
    "files",
    "inference",
    "predict",
    "serve",
)
#: Public names re-exported from the packages that own them, also imported on first use.
_LAZY_NAMES = {
    "load_checkpoint": "checkpoint",
    "save_checkpoint": "checkpoint",
    "Checkpoint": "checkpoint",
    "open_dataset": "data",
    "Predictor": "inference",
    "load_predictor": "inference",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY_MODULES:
        return importlib.import_module(f".{name}", __name__)
    if name in _LAZY_NAMES:
        return getattr(importlib.import_module(f".{_LAZY_NAMES[name]}", __name__), name)
    raise AttributeError(f"module 'fcnseg' has no attribute {name!r}")


__all__ = [
    "CAFFE",
    "TORCHVISION",
    "Checkpoint",
    "Predictor",
    "Preprocessing",
    "__version__",
    "create_model",
    "list_models",
    "load_caffe_weights",
    "load_checkpoint",
    "load_predictor",
    "metrics",
    "open_dataset",
    "preprocess",
    "save_checkpoint",
]
