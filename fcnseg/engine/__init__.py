"""Training: recipes, optimiser groups and schedules, the loss, the loop, resume and DDP.

Plain functions over plain data (no trainer object): :func:`train` runs a
:class:`TrainConfig` into a run directory; ``fcnseg train`` and ``fcnseg demo``
are thin layers over it.
"""

from .loss import LOSSES, SegmentationLoss, build_loss, effective_number_weights, segmentation_loss
from .optim import LRFactor, build_optimizer, build_scheduler, parameter_groups
from .recipes import RECIPES, Recipe, get_recipe
from .train import TrainConfig, TrainingDiverged, TrainResult, load_run_config, train, validate

__all__ = [
    "LOSSES",
    "LRFactor",
    "RECIPES",
    "Recipe",
    "SegmentationLoss",
    "TrainConfig",
    "TrainResult",
    "TrainingDiverged",
    "build_loss",
    "build_optimizer",
    "build_scheduler",
    "effective_number_weights",
    "get_recipe",
    "load_run_config",
    "parameter_groups",
    "segmentation_loss",
    "train",
    "validate",
]
