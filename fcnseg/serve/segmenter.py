"""The model behind the service: one checkpoint, one lock, the same masks as ``fcnseg predict``."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any, cast

import torch

from ..checkpoint import Checkpoint
from ..inference.predictor import Confidence, Predictor

Colour = tuple[int, int, int]


@dataclass(frozen=True)
class ClassCount:
    """Pixels of one class in a mask."""

    id: int
    name: str
    color: tuple[int, int, int]
    pixels: int
    fraction: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "color": list(self.color),
            "pixels": self.pixels,
            "fraction": self.fraction,
        }


class Segmenter:
    """Predicts masks with a checkpoint's model, one request at a time.

    Inference is CPU-bound and already uses every core through torch's own
    threads, so requests queue on a lock instead of sharing the model. The
    :class:`~fcnseg.inference.predictor.Predictor` is the one ``fcnseg predict`` uses: images
    whose forward pass would need more than ``memory_budget_bytes`` are predicted in
    tiles (the same mask as a whole-image pass); ``fast_paths`` (default on) are the
    model's exact fast paths.
    """

    def __init__(
        self,
        checkpoint: Checkpoint,
        *,
        device: str | torch.device = "cpu",
        memory_budget_bytes: int,
        fast_paths: bool = True,
        **predictor_options: Any,
    ) -> None:
        self.checkpoint = checkpoint
        self.predictor = Predictor(
            checkpoint.model,
            device=device,
            fast_paths=fast_paths,
            memory_budget_bytes=int(memory_budget_bytes),
            **predictor_options,
        )
        self.model = self.predictor.model
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
        return str(self.model.config["name"])

    def segment(self, image: torch.Tensor, *, confidence: bool = False) -> torch.Tensor | Confidence:
        """Class ids (H, W) for a uint8 RGB image (3, H, W); with ``confidence``, the Predictor's Confidence."""
        with self._counter_lock:
            self.in_flight += 1
            self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
        try:
            with self._lock:
                return self.predictor.confidence(image) if confidence else self.predictor.mask(image)
        finally:
            with self._counter_lock:
                self.in_flight -= 1

    def class_counts(self, mask: torch.Tensor) -> list[ClassCount]:
        """Pixels per class, for every class of the model (absent ones with 0)."""
        counts = torch.bincount(mask.flatten().long(), minlength=len(self.classes)).tolist()
        total = max(1, mask.numel())
        return [
            ClassCount(index, name, cast(Colour, tuple(self.palette[index])), int(counts[index]), counts[index] / total)
            for index, name in enumerate(self.classes)
        ]
