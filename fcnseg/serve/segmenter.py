"""The model behind the service: one checkpoint, one lock, the same masks as ``fcnseg predict``."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

import torch

from ..checkpoint import Checkpoint
from ..models.fast import optimize_for_inference
from ..predict import predict_mask
from ..tiling import needs_tiling, tiling_for_budget


@dataclass(frozen=True)
class ClassCount:
    """Pixels of one class in a mask."""

    id: int
    name: str
    color: tuple[int, int, int]
    pixels: int
    fraction: float

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "color": list(self.color), "pixels": self.pixels, "fraction": self.fraction}


class Segmenter:
    """Predicts masks with a checkpoint's model, one request at a time.

    Inference is CPU-bound and already uses every core through torch's own
    threads, so requests queue on a lock instead of sharing the model (which
    :func:`~fcnseg.predict.predict_mask` switches to eval mode and moves to the
    device). Images whose forward pass would need more than
    ``memory_budget_bytes`` are predicted in tiles, exactly as ``fcnseg predict``
    decides, which gives the same mask as a whole-image pass. ``fast_paths``
    (default on, as in ``fcnseg predict``) runs the model's exact inference twin
    (:func:`fcnseg.models.fast.optimize_for_inference`).
    """

    def __init__(
        self, checkpoint: Checkpoint, *, device: str | torch.device = "cpu", memory_budget_bytes: int, fast_paths: bool = True
    ) -> None:
        self.checkpoint = checkpoint
        self.model = checkpoint.model.eval().to(device)
        if fast_paths:  # the exact inference twin, as fcnseg predict uses by default
            self.model = optimize_for_inference(self.model)
        self.device = torch.device(device)
        self.memory_budget_bytes = int(memory_budget_bytes)
        self.mask_dtype = torch.uint8 if self.model.num_classes <= 256 else torch.int64
        self._lock = threading.Lock()
        self._counter_lock = threading.Lock()
        self.in_flight = 0
        #: The most requests that were waiting for or running inference at once (observability, tests).
        self.peak_in_flight = 0

    @property
    def classes(self) -> list[str]:
        return self.checkpoint.classes

    @property
    def palette(self) -> list[tuple[int, int, int]]:
        return self.checkpoint.palette

    @property
    def model_name(self) -> str:
        return str(getattr(self.model, "config", {}).get("name", type(self.model).__name__))

    def segment(self, image: torch.Tensor) -> torch.Tensor:
        """Class ids (H, W) for a uint8 RGB image (3, H, W)."""
        with self._counter_lock:
            self.in_flight += 1
            self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
        try:
            with self._lock:
                tiling = None
                if needs_tiling(self.model, image.shape[-2], image.shape[-1], self.memory_budget_bytes):
                    tiling = tiling_for_budget(self.model, self.memory_budget_bytes)
                return predict_mask(self.model, image, device=self.device, tile=tiling, dtype=self.mask_dtype)
        finally:
            with self._counter_lock:
                self.in_flight -= 1

    def class_counts(self, mask: torch.Tensor) -> list[ClassCount]:
        """Pixels per class, for every class of the model (absent ones with 0)."""
        counts = torch.bincount(mask.flatten().long(), minlength=len(self.classes)).tolist()
        total = max(1, mask.numel())
        return [
            ClassCount(index, name, tuple(self.palette[index]), int(counts[index]), counts[index] / total)
            for index, name in enumerate(self.classes)
        ]
