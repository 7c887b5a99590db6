"""Measuring a model: the paper's four metrics and the ones that see small things.

- :mod:`.metrics` — :class:`ConfusionMatrix`: pixel acc, mean acc, mean IU, fw IU from one matrix.
- :mod:`.detail_metrics` — IU by object size, boundary IoU, Dice, per-image IU.
- :mod:`.calibration_error` — expected calibration error of per-pixel confidence, reliability diagram.
- :mod:`.loop` — :func:`evaluate`: a model or Predictor over a dataset, under torch.distributed too.
- :mod:`.figures` — curves, overlays, confusion matrices and worst images as pictures.
"""

from .loop import confusion_matrix, evaluate, evaluate_heads
from .metrics import ConfusionMatrix, format_report, json_safe

__all__ = ["ConfusionMatrix", "confusion_matrix", "evaluate", "evaluate_heads", "format_report", "json_safe"]
