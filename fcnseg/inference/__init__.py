"""Running a model on images: the one inference path and what it relies on.

- :mod:`.predictor` — :class:`Predictor` owns device, dtype, fast paths, tiling, test-time
  augmentation and outputs; :func:`load_predictor` builds one from a checkpoint or an export.
- :mod:`.tiling` — tiles that reproduce the whole-image result exactly, and the memory budget.
- :mod:`.runtimes` — ONNX Runtime and OpenVINO as backends of the Predictor.
- :mod:`.confidence` — per-pixel confidence maps and their exact file encodings.
"""

from .predictor import DTYPES, Confidence, Predictor, check_image, load_predictor
from .tiling import Tile, Tiling, iter_tiles, plan_tiles, tiling_for_budget

__all__ = [
    "DTYPES",
    "Confidence",
    "Predictor",
    "Tile",
    "Tiling",
    "check_image",
    "iter_tiles",
    "load_predictor",
    "plan_tiles",
    "tiling_for_budget",
]
