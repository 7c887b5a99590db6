"""Training: recipes, optimiser groups and schedules, the loss, the loop, resume and DDP.

Plain functions over plain data (no trainer object): :func:`train` runs a :class:`TrainConfig` into a run directory;
``fcnseg train`` and ``fcnseg demo`` are thin layers over it.
"""

from .config import TrainConfig, build_config, known_keys, set_value
from .loss import LOSSES, SegmentationLoss, build_loss, effective_number_weights, segmentation_loss
from .optim import LRFactor, build_optimizer, parameter_groups
from .recipes import Recipe, list_presets, load_preset
from .train import TrainingDiverged, TrainingInterrupted, TrainResult, load_run_config, train, validate

__all__ = [
    "LOSSES",
    "LRFactor",
    "Recipe",
    "SegmentationLoss",
    "TrainConfig",
    "TrainResult",
    "TrainingDiverged",
    "TrainingInterrupted",
    "build_config",
    "build_loss",
    "build_optimizer",
    "effective_number_weights",
    "known_keys",
    "list_presets",
    "load_preset",
    "load_run_config",
    "parameter_groups",
    "segmentation_loss",
    "set_value",
    "train",
    "validate",
]
