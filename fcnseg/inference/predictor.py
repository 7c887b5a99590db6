"""The one inference path: a :class:`Predictor` owns device, dtype, fast paths, tiling and outputs.

``fcnseg predict``, ``fcnseg eval``, ``fcnseg serve``, validation during training, the
demo and the benchmarks all run a model through a Predictor, so an image is predicted
the same way everywhere: the model's own preprocessing, eval mode under
``torch.inference_mode``, and tiles (with the exact whole-image result, see
:mod:`fcnseg.inference.tiling`) where a whole-image pass would exceed the memory budget.

Probabilities and confidence
    :meth:`Predictor.probabilities` is the softmax of the logits over the classes; being
    per pixel, it commutes with tiling, so tiled and whole-image results agree as the
    logits do. :meth:`Predictor.confidence` keeps only (H, W) maps (arg-max, top-1
    probability p_max, entropy H = -sum_c p_c ln p_c in nats, 0 <= H <= ln C), computed
    tile by tile so only one tile's logits exist at a time.

MC-dropout (Gal & Ghahramani, 2016), ``mc_samples=N > 0``
    The model runs in eval mode except its dropout layers (fc6/fc7 in the FCNs), which
    stay in training mode; N forward passes are averaged in probability space,
    p = (1/N) sum_n softmax(logits_n). Its arg-max, top-1 and entropy are reported, and the
    mutual information MI = H(p) - (1/N) sum_n H(softmax(logits_n)) (>= 0; clamped at 0
    against rounding), the part of the uncertainty that comes from the weights. The
    global RNG is seeded with ``seed`` at the start of each image (inside
    ``torch.random.fork_rng``: the caller's RNG state is left as it was), so a result is
    reproducible for the same image, seed, device, fast-path setting and tiling. Tiles draw
    their own dropout masks, and the fast paths change the feature-map shape that dropout
    draws over, so those settings change the samples (not their distribution).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F

from ..device import resolve_device
from ..models.contract import SegmentationModel, bare_model
from .tiling import Tile, Tiling, iter_tiles, tiling_for_budget

if TYPE_CHECKING:
    from ..checkpoint import Checkpoint

#: The base class of nn.Dropout, Dropout2d, AlphaDropout, ...: the layers MC-dropout keeps on.
_DROPOUT = torch.nn.modules.dropout._DropoutNd
#: Autocast dtypes by name (``float32`` runs without autocast).
DTYPES = {"float32": None, "bfloat16": torch.bfloat16, "float16": torch.float16}


def check_image(image: torch.Tensor, channels: int = 3) -> None:
    if image.dtype != torch.uint8 or image.dim() != 3 or image.shape[0] != channels:
        raise ValueError(f"expected a uint8 image ({channels}, H, W), got {image.dtype} {tuple(image.shape)}")


def _entropy(probabilities: torch.Tensor) -> torch.Tensor:
    """-sum_c p_c ln p_c over dim 0 (0 ln 0 = 0), in nats."""
    return torch.special.entr(probabilities).sum(0)


@dataclass(frozen=True)
class Confidence:
    """Per-pixel outputs of :meth:`Predictor.confidence`, each (H, W) on the CPU.

    ``mask``: class ids (the arg-max of the logits; of the mean probability under MC-dropout);
    ``top1``: float32 probability of the most likely class, in [1/C, 1];
    ``entropy``: float32 entropy of the (mean) class distribution in nats, in [0, ln C];
    ``mutual_information``: float32, MC-dropout only (else None), in [0, entropy];
    ``probabilities``: the (mean) softmax (C, H, W) when asked for with ``keep_probabilities`` (else None).
    """

    mask: torch.Tensor
    top1: torch.Tensor
    entropy: torch.Tensor
    mutual_information: torch.Tensor | None = None
    probabilities: torch.Tensor | None = None


class Predictor:
    """Runs an FCN on uint8 RGB images (3, H, W) and returns logits or masks of the same H, W.

    Args:
        model: any :class:`~fcnseg.models.contract.SegmentationModel`: an FCN (a DDP wrapper is
            unwrapped), or an ONNX export in a runtime (:class:`fcnseg.inference.runtimes.OnnxModel`).
            Not copied: a training loop may validate its live model; its training flag is restored
            after every call.
        device: ``auto``, ``cpu``, ``cuda[:N]`` (see :func:`fcnseg.device.resolve_device`);
            None keeps the model where it is. The model is moved there.
        fast_paths: switch the model's exact fast paths on or off (None: leave them as they are).
        dtype: ``float32`` (default), or ``bfloat16``/``float16`` autocast (changes numerics).
        memory_budget_bytes: predict in tiles when a whole-image pass would need more (None: never).
        tile: always predict in tiles (a :class:`~fcnseg.inference.tiling.Tiling` or a core size in px).
        margin: context around each tile (None: the model's, which gives the whole-image result).
        compile: run the model through ``torch.compile`` (one graph per input size).
        tta_scales, tta_flip: test-time augmentation (off by default): the image is predicted at
            each scale (resized, bilinear) and, with ``tta_flip``, mirrored too; each result's
            logits are turned back (mirrored, resized bilinearly to the input) and averaged. Each
            pass may be tiled as usual (tiling stays exact per pass); the averaged logits of the
            whole image are held (C x H x W float32).
    """

    def __init__(
        self,
        model: SegmentationModel | torch.nn.Module,
        *,
        device: str | torch.device | None = None,
        fast_paths: bool | None = None,
        dtype: str | torch.dtype | None = "float32",
        memory_budget_bytes: int | None = None,
        tile: Tiling | int | None = None,
        margin: int | None = None,
        compile: bool = False,
        tta_scales: tuple[float, ...] = (1.0,),
        tta_flip: bool = False,
    ) -> None:
        self.model: SegmentationModel = bare_model(model)  # DDP would sync buffers at every forward
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
        self.tiling = (
            None
            if tile is None
            else (tile if isinstance(tile, Tiling) else Tiling(int(tile), margin)).for_model(self.model)
        )
        if self.tiling is not None:
            self._refuse_inexact_tiling("tiling was asked for")
        if memory_budget_bytes is not None:  # a budget too small for one tile is an error now, not per image
            tiling_for_budget(self.model, memory_budget_bytes, margin)
        self.forward: Callable[[torch.Tensor], torch.Tensor] = (
            torch.compile(self.model, dynamic=False) if compile else self.model
        )
        self.num_classes = int(self.model.num_classes)
        self.in_channels = int(self.model.in_channels)  # 6 for colour + HHA
        self.mask_dtype = torch.uint8 if self.num_classes <= 256 else torch.int64
        if not tta_scales or any(not 0 < s <= 8 for s in tta_scales):
            raise ValueError(f"test-time scales must be numbers in (0, 8], got {tta_scales!r}")
        self.tta_scales, self.tta_flip = tuple(float(s) for s in tta_scales), bool(tta_flip)

    def dropout_rates(self) -> list[float]:
        """The rates of the model's dropout layers: the ones MC-dropout keeps on."""
        return [float(m.p) for m in self.model.modules() if isinstance(m, _DROPOUT)]

    @contextlib.contextmanager
    def _running(self, mc_dropout_seed: int | None = None) -> Iterator[None]:
        """Eval mode, inference mode, autocast; with a seed, dropout on and the RNG seeded (see MC-dropout)."""
        was_training = self.model.training
        self.model.eval()
        try:
            with contextlib.ExitStack() as stack:
                stack.enter_context(torch.inference_mode())
                if self.amp_dtype:
                    stack.enter_context(torch.autocast(self.device.type, dtype=self.amp_dtype))
                if mc_dropout_seed is not None:
                    cuda = [self.device.index or 0] if self.device.type == "cuda" else []
                    stack.enter_context(torch.random.fork_rng(devices=cuda))
                    torch.manual_seed(mc_dropout_seed)
                    for module in self.model.modules():
                        if isinstance(module, _DROPOUT):
                            module.train()
                yield
        finally:
            self.model.train(was_training)

    def _logits(self, images: torch.Tensor) -> torch.Tensor:
        """Logits (N, C, H, W) on the device for uint8 images (N, 3, H, W); call inside :meth:`_running`."""
        blob = self.model.prepare_input(images.to(self.device, non_blocking=True))
        return self.forward(blob)

    def tiling_for(self, height: int, width: int) -> Tiling | None:
        """The tiling an H x W image is predicted with (None: whole image)."""
        if self.tiling is not None:
            return self.tiling
        budget = self.memory_budget_bytes
        if budget is not None and self.model.estimate_forward_bytes(height, width) > budget:
            self._refuse_inexact_tiling(f"a {height}x{width} image needs tiles under the memory budget")
            return tiling_for_budget(self.model, budget, self.margin)
        return None

    def _refuse_inexact_tiling(self, why: str) -> None:
        if not self.model.exact_tiling:
            raise ValueError(
                f"{why}, but {self.model.config['name']} has a layer that sees the whole image "
                "(squeeze-and-excitation): tiles would change its logits; give a larger memory budget, "
                "or a smaller image"
            )

    @property
    def augments(self) -> bool:
        """Whether test-time augmentation is on."""
        return self.tta_flip or self.tta_scales != (1.0,)

    def _augmented_logits(self, image: torch.Tensor, progress: Callable | None) -> torch.Tensor:
        """The mean of the logits (C, H, W) over the test-time scales and flips, on the device."""
        height, width = image.shape[-2:]
        total: torch.Tensor | None = None
        passes = 0
        for scale in self.tta_scales:
            size = (max(1, round(height * scale)), max(1, round(width * scale)))
            scaled = (
                image
                if size == (height, width)
                else F.interpolate(
                    image[None].float(), size=size, mode="bilinear", align_corners=False, antialias=scale < 1
                )[0]
                .round()
                .clamp(0, 255)
                .to(torch.uint8)
            )
            for flip in (False, True) if self.tta_flip else (False,):
                logits = torch.empty((self.num_classes, *size), dtype=torch.float32, device=self.device)
                for tile, core in self._per_tile(scaled.flip(-1) if flip else scaled, progress, augment=False):
                    top, bottom, left, right = tile.core
                    logits[:, top:bottom, left:right] = core.float()
                logits = logits.flip(-1) if flip else logits
                if size != (height, width):
                    logits = F.interpolate(logits[None], size=(height, width), mode="bilinear", align_corners=False)[0]
                total = logits if total is None else total.add_(logits)
                passes += 1
        assert total is not None  # tta_scales is never empty (checked in __init__)
        return total / passes

    def _per_tile(
        self,
        image: torch.Tensor,
        progress: Callable | None,
        run: Callable[[torch.Tensor], torch.Tensor] | None = None,
        augment: bool = True,
    ) -> Iterator[tuple[Tile, torch.Tensor]]:
        """``(tile, run(window) cut to the core)`` per tile; ``run`` defaults to the logits (C, h, w).

        With test-time augmentation (and the default ``run``), one tile: the whole image's averaged logits.
        """
        if augment and run is None and self.augments:
            full = (0, image.shape[-2], 0, image.shape[-1])
            yield Tile(full, full), self._augmented_logits(image, progress)
            return
        run = run or (lambda window: self._logits(window[None])[0])
        tiling = self.tiling_for(*image.shape[-2:])
        if tiling is None:
            full = (0, image.shape[-2], 0, image.shape[-1])
            yield Tile(full, full), run(image)
            return
        yield from iter_tiles(run, image, tiling, progress)

    def _mc_dropout_run(self, samples: int) -> Callable[[torch.Tensor], torch.Tensor]:
        """A tile function: the mean of ``samples`` softmaxes stacked with the mean of their entropies, (C + 1, h,
        w)."""

        def run(window: torch.Tensor) -> torch.Tensor:
            total: torch.Tensor | None = None
            sample_entropy: torch.Tensor | None = None
            for _ in range(samples):
                probabilities = torch.softmax(self._logits(window[None])[0].float(), 0)
                entropy = _entropy(probabilities)
                total = probabilities if total is None else total.add_(probabilities)
                sample_entropy = entropy if sample_entropy is None else sample_entropy.add_(entropy)
            assert total is not None and sample_entropy is not None  # samples >= 1
            return torch.cat([total, sample_entropy[None]]) / samples

        return run

    def _probability_tiles(
        self, image: torch.Tensor, progress: Callable | None, mc_samples: int
    ) -> Iterator[tuple[Tile, torch.Tensor, torch.Tensor | None, torch.Tensor]]:
        """Per tile core: (tile, probabilities (C, h, w), mean entropy of the MC samples or None, arg-max (h, w))."""
        if not mc_samples:
            for tile, logits in self._per_tile(image, progress):
                yield tile, torch.softmax(logits.float(), 0), None, class_ids(logits, 0)  # the arg-max mask() gives
            return
        for tile, stacked in self._per_tile(image, progress, self._mc_dropout_run(mc_samples)):
            yield tile, stacked[:-1], stacked[-1], class_ids(stacked[:-1], 0)

    def logits(self, image: torch.Tensor) -> torch.Tensor:
        """Class scores (C, H, W), float32 on the CPU, for a uint8 RGB image (3, H, W)."""
        check_image(image, self.in_channels)
        logits = torch.empty((self.num_classes, *image.shape[-2:]), dtype=torch.float32)
        with self._running():
            for tile, core in self._per_tile(image, None):
                top, bottom, left, right = tile.core
                logits[:, top:bottom, left:right] = core.float().cpu()
        return logits

    def mask(
        self, image: torch.Tensor, progress: Callable[[Iterator[Tile]], Iterator[Tile]] | None = None
    ) -> torch.Tensor:
        """Class ids (H, W) on the CPU (uint8 up to 256 classes) for a uint8 RGB image (3, H, W).

        Only one tile's logits exist at a time (the arg-max is taken on the device).
        ``progress`` wraps the tile iterator of a tiled image (e.g. a tqdm bar).
        """
        check_image(image, self.in_channels)
        mask = torch.empty(image.shape[-2:], dtype=self.mask_dtype)
        with self._running():
            for tile, core in self._per_tile(image, progress):
                top, bottom, left, right = tile.core
                mask[top:bottom, left:right] = class_ids(core, 0, self.mask_dtype).cpu()
        return mask

    def probabilities(self, image: torch.Tensor, *, mc_samples: int = 0, seed: int = 0) -> torch.Tensor:
        """Class probabilities (C, H, W), float32 on the CPU: the softmax of :meth:`logits` over C.

        With ``mc_samples`` N > 0: the mean of N MC-dropout softmaxes (module docstring), seeded with ``seed``.
        """
        probabilities = self.confidence(image, mc_samples=mc_samples, seed=seed, keep_probabilities=True).probabilities
        assert probabilities is not None  # keep_probabilities=True keeps them
        return probabilities

    def confidence(
        self,
        image: torch.Tensor,
        progress: Callable[[Iterator[Tile]], Iterator[Tile]] | None = None,
        *,
        mc_samples: int = 0,
        seed: int = 0,
        keep_probabilities: bool = False,
    ) -> Confidence:
        """Class ids with top-1 probability and entropy maps (and mutual information under MC-dropout).

        Computed tile by tile: only one tile's logits exist at a time, unless ``keep_probabilities``
        asks for the whole (C, H, W) softmax as well. ``mc_samples`` and ``seed`` as for
        :meth:`probabilities`; ``progress`` as for :meth:`mask`.
        """
        check_image(image, self.in_channels)
        if isinstance(mc_samples, bool) or not isinstance(mc_samples, int) or mc_samples < 0:
            raise ValueError(f"mc_samples must be an integer >= 0 (0: no MC-dropout), got {mc_samples!r}")
        if mc_samples and self.augments:
            raise ValueError("MC-dropout and test-time augmentation cannot be combined; choose one")
        if mc_samples and not self.dropout_rates():
            raise ValueError(f"MC-dropout needs dropout layers, and this {type(self.model).__name__} has none")
        size = image.shape[-2:]
        mask = torch.empty(size, dtype=self.mask_dtype)
        top1, entropy = torch.empty(size, dtype=torch.float32), torch.empty(size, dtype=torch.float32)
        information = torch.empty(size, dtype=torch.float32) if mc_samples else None
        kept = torch.empty((self.num_classes, *size), dtype=torch.float32) if keep_probabilities else None
        with self._running(seed if mc_samples else None):
            for tile, probabilities, sample_entropy, classes in self._probability_tiles(image, progress, mc_samples):
                core = (slice(tile.core[0], tile.core[1]), slice(tile.core[2], tile.core[3]))
                mask[core] = classes.to("cpu", self.mask_dtype)
                top1[core] = probabilities.amax(0).cpu()
                tile_entropy = _entropy(probabilities)
                entropy[core] = tile_entropy.cpu()
                if information is not None:
                    assert sample_entropy is not None  # MC-dropout tiles carry their samples' mean entropy
                    information[core] = (tile_entropy - sample_entropy).clamp_min(0).cpu()
                if kept is not None:
                    kept[:, core[0], core[1]] = probabilities.cpu()
        return Confidence(mask, top1, entropy, information, kept)

    def masks(self, images: torch.Tensor) -> torch.Tensor:
        """Class ids (N, H, W) on the device for a batch of uint8 images (N, 3, H, W) of one size."""
        if self.augments or self.tiling_for(*images.shape[-2:]) is not None:
            return torch.stack([self.mask(image) for image in images]).to(self.device)
        with self._running():
            return class_ids(self._logits(images), 1)


def class_ids(scores: torch.Tensor, dim: int, dtype: torch.dtype = torch.int64) -> torch.Tensor:
    """``scores.argmax(dim)`` as ``dtype``, fast whatever the memory layout (ties: the first class, as argmax).

    torch's CPU arg-max over a dimension that is not the innermost reads with a stride and ran 5x slower than
    the model for an ONNX runtime's (N, C, H, W) output (benchmarks/predict_backend.py); the model's own
    channels-last logits are read in place. Elsewhere: one pass per class over contiguous planes.
    """
    if scores.device.type != "cpu" or scores.stride(dim) == 1 or scores.shape[dim] > 256:
        return scores.argmax(dim).to(dtype)
    planes = scores.unbind(dim)
    best = planes[0].clone()
    ids = torch.zeros(best.shape, dtype=dtype)
    for index, plane in enumerate(planes[1:], start=1):
        better = plane > best  # strict: a tie keeps the earlier class
        ids.masked_fill_(better, index)
        torch.maximum(best, plane, out=best)
    return ids


def load_predictor(
    checkpoint: str | os.PathLike[str], runtime: str | None = None, **options: Any
) -> tuple[Predictor, Checkpoint]:
    """A :class:`Predictor` for a checkpoint file or a registry name (``fcnseg weights list``), and the checkpoint.

    ``options`` go to :class:`Predictor` (``device`` defaults to ``auto``). An ``.onnx`` export
    runs in ``runtime`` (``onnxruntime`` or ``openvino``; None: :func:`fcnseg.inference.runtimes.resolve_runtime`;
    ``dtype`` goes to the runtime) through the same Predictor: :func:`fcnseg.inference.runtimes.load_model_file`.
    """
    from .runtimes import load_model_file

    options.setdefault("device", "auto")
    loaded, options["dtype"] = load_model_file(
        checkpoint,
        runtime,
        dtype=options.get("dtype", "float32"),
        device=options["device"],
        fast_paths=options.get("fast_paths") is not False,
    )
    return Predictor(loaded.model, **options), loaded
