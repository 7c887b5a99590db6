"""The one inference path: a :class:`Predictor` owns device, dtype, fast paths, tiling and outputs.

``fcnseg predict``, ``fcnseg eval``, ``fcnseg serve``, validation during training, the
demo and the benchmarks all run a model through a Predictor, so an image is predicted
the same way everywhere: the model's own preprocessing, eval mode under
``torch.inference_mode``, and tiles (with the exact whole-image result, see
:mod:`fcnseg.tiling`) where a whole-image pass would exceed the memory budget.
"""

from __future__ import annotations

import contextlib
import os
from typing import Callable, Iterator

import torch

from .device import resolve_device
from .preprocessing import preprocess
from .tiling import Tile, Tiling, iter_tiles, tiling_for_budget

#: Autocast dtypes by name (``float32`` runs without autocast).
DTYPES = {"float32": None, "bfloat16": torch.bfloat16, "float16": torch.float16}


def check_image(image: torch.Tensor) -> None:
    if image.dtype != torch.uint8 or image.dim() != 3 or image.shape[0] != 3:
        raise ValueError(f"expected a uint8 RGB image (3, H, W), got {image.dtype} {tuple(image.shape)}")


class Predictor:
    """Runs an FCN on uint8 RGB images (3, H, W) and returns logits or masks of the same H, W.

    Args:
        model: an FCN (a DDP wrapper is unwrapped). Not copied: a training loop may
            validate its live model; its training flag is restored after every call.
        device: ``auto``, ``cpu``, ``cuda[:N]`` (see :func:`fcnseg.device.resolve_device`);
            None keeps the model where it is. The model is moved there.
        fast_paths: switch the model's exact fast paths on or off (None: leave them as they are).
        dtype: ``float32`` (default), or ``bfloat16``/``float16`` autocast (changes numerics).
        memory_budget_bytes: predict in tiles when a whole-image pass would need more (None: never).
        tile: always predict in tiles (a :class:`~fcnseg.tiling.Tiling` or a core size in px).
        margin: context around each tile (None: the model's, which gives the whole-image result).
        compile: run the model through ``torch.compile`` (one graph per input size).
    """

    def __init__(
        self,
        model: torch.nn.Module,
        *,
        device: str | torch.device | None = None,
        fast_paths: bool | None = None,
        dtype: str | torch.dtype | None = "float32",
        memory_budget_bytes: int | None = None,
        tile: Tiling | int | None = None,
        margin: int | None = None,
        compile: bool = False,
    ) -> None:
        self.model = getattr(model, "module", model)  # DDP would sync buffers at every forward
        if device is not None:
            self.model.to(resolve_device(device))
        parameter = next(self.model.parameters(), None)
        self.device = parameter.device if parameter is not None else torch.device("cpu")
        if fast_paths is not None:
            self.model.set_fast_paths(fast_paths)
        if isinstance(dtype, torch.dtype) or dtype is None:
            self.amp_dtype = None if dtype in (None, torch.float32) else dtype
        elif dtype in DTYPES:
            self.amp_dtype = DTYPES[dtype]
        else:
            raise ValueError(f"unknown dtype {dtype!r}; expected one of {', '.join(DTYPES)}")
        self.memory_budget_bytes, self.margin = memory_budget_bytes, margin
        self.tiling = None if tile is None else (tile if isinstance(tile, Tiling) else Tiling(int(tile), margin)).for_model(self.model)
        if memory_budget_bytes is not None:  # a budget too small for one tile is an error now, not per image
            tiling_for_budget(self.model, memory_budget_bytes, margin)
        self.forward: Callable[[torch.Tensor], torch.Tensor] = torch.compile(self.model, dynamic=False) if compile else self.model
        self.num_classes = int(self.model.num_classes)
        self.mask_dtype = torch.uint8 if self.num_classes <= 256 else torch.int64

    @contextlib.contextmanager
    def _running(self) -> Iterator[None]:
        was_training = self.model.training
        self.model.eval()
        autocast = torch.autocast(self.device.type, dtype=self.amp_dtype) if self.amp_dtype else contextlib.nullcontext()
        try:
            with torch.inference_mode(), autocast:
                yield
        finally:
            self.model.train(was_training)

    def _logits(self, images: torch.Tensor) -> torch.Tensor:
        """Logits (N, C, H, W) on the device for uint8 images (N, 3, H, W); call inside :meth:`_running`."""
        blob = preprocess(images.to(self.device, non_blocking=True), self.model.preprocessing)
        return self.forward(blob)

    def tiling_for(self, height: int, width: int) -> Tiling | None:
        """The tiling an H x W image is predicted with (None: whole image)."""
        if self.tiling is not None:
            return self.tiling
        budget = self.memory_budget_bytes
        if budget is not None and self.model.estimate_forward_bytes(height, width) > budget:
            return tiling_for_budget(self.model, budget, self.margin)
        return None

    def _per_tile(self, image: torch.Tensor, progress: Callable | None) -> Iterator[tuple[Tile, torch.Tensor]]:
        tiling = self.tiling_for(*image.shape[-2:])
        if tiling is None:
            full = (0, image.shape[-2], 0, image.shape[-1])
            yield Tile(full, full), self._logits(image[None])[0]
            return
        yield from iter_tiles(lambda window: self._logits(window[None])[0], image, tiling, progress)

    def logits(self, image: torch.Tensor) -> torch.Tensor:
        """Class scores (C, H, W), float32 on the CPU, for a uint8 RGB image (3, H, W)."""
        check_image(image)
        logits = torch.empty((self.num_classes, *image.shape[-2:]), dtype=torch.float32)
        with self._running():
            for tile, core in self._per_tile(image, None):
                top, bottom, left, right = tile.core
                logits[:, top:bottom, left:right] = core.float().cpu()
        return logits

    def mask(self, image: torch.Tensor, progress: Callable[[Iterator[Tile]], Iterator[Tile]] | None = None) -> torch.Tensor:
        """Class ids (H, W) on the CPU (uint8 up to 256 classes) for a uint8 RGB image (3, H, W).

        Only one tile's logits exist at a time (the arg-max is taken on the device).
        ``progress`` wraps the tile iterator of a tiled image (e.g. a tqdm bar).
        """
        check_image(image)
        mask = torch.empty(image.shape[-2:], dtype=self.mask_dtype)
        with self._running():
            for tile, core in self._per_tile(image, progress):
                top, bottom, left, right = tile.core
                mask[top:bottom, left:right] = core.argmax(0).to("cpu", self.mask_dtype)
        return mask

    def masks(self, images: torch.Tensor) -> torch.Tensor:
        """Class ids (N, H, W) on the device for a batch of uint8 images (N, 3, H, W) of one size."""
        if self.tiling_for(*images.shape[-2:]) is not None:
            return torch.stack([self.mask(image) for image in images]).to(self.device)
        with self._running():
            return self._logits(images).argmax(1)


def load_predictor(checkpoint: str | os.PathLike[str], **options) -> tuple[Predictor, "Checkpoint"]:  # noqa: F821
    """A :class:`Predictor` for a checkpoint file or a registry name (``fcnseg weights list``), and the checkpoint.

    ``options`` go to :class:`Predictor` (``device`` defaults to ``auto``).
    """
    from .checkpoint import load_checkpoint
    from .weights import resolve_checkpoint

    loaded = load_checkpoint(resolve_checkpoint(checkpoint))
    options.setdefault("device", "auto")
    return Predictor(loaded.model, **options), loaded
