"""Live training curves: TensorBoard event files in ``RUN_DIR/tensorboard`` (``fcnseg train --tensorboard``).

They hold the loss and the learning rate at every logged step, each validation's metrics
and per-class IU, and a few validation images (image | ground truth | prediction) at each
validation. Open them while the run goes with ``tensorboard --logdir RUN_DIR``.

A resumed run writes to the same folder and its global step continues; the events a killed run wrote after its last
saved state are dropped by TensorBoard itself (the writer opens with ``purge_step`` at the resumed step), so no step
appears twice. Needs the ``tensorboard`` package: ``pip install 'fcnseg[tensorboard]'``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

#: The folder of the event files inside a run directory.
TENSORBOARD_DIR = "tensorboard"
#: Validation images shown at each validation (at most; ``overlays`` 0 shows none).
IMAGES_SHOWN = 3


def require_tensorboard() -> None:
    """ValueError naming the extra to install when the ``tensorboard`` package is missing."""
    try:
        import tensorboard  # noqa: F401  (torch.utils.tensorboard writes through it)
    except ImportError:
        raise ValueError("--tensorboard needs the tensorboard package: pip install 'fcnseg[tensorboard]'") from None


class LiveCurves:
    """A TensorBoard writer for one run's curves (rank 0 only)."""

    def __init__(self, run_dir: str | Path, *, resumed_at: int | None = None) -> None:
        require_tensorboard()
        from torch.utils.tensorboard import SummaryWriter

        self.log_dir = Path(run_dir) / TENSORBOARD_DIR
        # purge_step: TensorBoard drops events at or after it that earlier writers left (a run killed after its save)
        self.writer = SummaryWriter(str(self.log_dir), purge_step=None if resumed_at is None else resumed_at + 1)

    def training(self, step: int, loss: float, lr: float) -> None:
        self.writer.add_scalar("train/loss", loss, step)
        self.writer.add_scalar("train/lr", lr, step)

    def validation(self, step: int, metrics: dict[str, Any], classes: Sequence[str]) -> None:
        """Every number of ``metrics`` (as :func:`fcnseg.engine.train.validate` returns them), per-class IU by name."""
        heads = metrics.get("heads") or {"": metrics}
        for head, values in heads.items():
            prefix = f"val/{head}/" if head else "val/"
            for key, value in values.items():
                if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
                    self.writer.add_scalar(prefix + key, value, step)
            names = (
                classes
                if len(values.get("iu") or []) == len(classes)
                else [str(index) for index in range(len(values.get("iu") or []))]
            )
            for name, iu in zip(names, values.get("iu") or [], strict=False):
                if iu is not None and math.isfinite(iu):
                    self.writer.add_scalar(f"{prefix}iu/{name}", iu, step)

    def images(self, step: int, predictor: Any, dataset: Any, count: int = IMAGES_SHOWN) -> None:
        """``count`` validation images spread over ``dataset``: image | ground truth | prediction, side by side."""
        from ..predict.images import overlay_image

        count = min(count, len(dataset))
        for number, index in enumerate(np.linspace(0, len(dataset) - 1, count).round().astype(int).tolist()):
            image, truth = dataset[index]
            prediction = predictor.mask(image)
            rgb = image[:3]  # a colour + depth input: its colour channels
            panels = [rgb.permute(1, 2, 0).numpy()] + [
                np.asarray(overlay_image(rgb, torch.as_tensor(mask), dataset.palette)) for mask in (truth, prediction)
            ]
            self.writer.add_image(f"val_images/{number}", np.concatenate(panels, axis=1), step, dataformats="HWC")

    def flush(self) -> None:
        """Everything written so far on disk (at each saved state: a resume continues from there)."""
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()
