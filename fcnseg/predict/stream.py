"""Prediction over many files: decoded ahead by worker processes, batched by size, written behind, resumable.

The pipeline of ``fcnseg predict`` (:func:`predict_files`):

- a DataLoader's worker processes (``workers``) read and decode the inputs ahead of the model, each within
  the decode budget (``max_pixels``, refused from the header when larger);
- consecutive images of one size go through :meth:`Predictor.masks` ``batch_size`` at a time (fewer when the
  memory budget cannot hold the batch's forward pass); an image that needs tiles, test-time augmentation or
  the confidence outputs goes alone (:meth:`Predictor.mask` / :meth:`Predictor.confidence`), a mosaic by
  windows (:mod:`fcnseg.predict.mosaic`), a video frame by frame (:mod:`fcnseg.predict.video`);
- a writer thread saves a batch's files while the model runs the next one, then records each input in the
  manifest (:mod:`fcnseg.predict.manifest`). The model hands over a batch only once the writer has finished
  the previous one, so a kill loses the batch being written and the one in the model; only when writing is
  the slower side (a fast GPU) can a second finished batch be waiting, never more.

Under torchrun every process takes every world-th input of the sorted list from its rank on (the same split
on every run, whatever is already done), and writes only those inputs' outputs and its own manifest file.
"""

from __future__ import annotations

import functools
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import torch
from torch.utils.data import DataLoader, Dataset

from ..files import sweep_temporary_files
from ..inference.confidence import normalised_entropy, save_float16_npy, save_unit_map_view, save_unit_png16
from ..inference.predictor import Predictor
from ..progress import Progress
from .images import ImageError, ImageTooLarge, load_image, overlay_image, save_image, save_mask_png, with_legend
from .manifest import Manifest, input_state
from .mosaic import WINDOWED_SUFFIXES, MosaicError, predict_mosaic, reads_by_windows
from .video import VideoError, is_video, predict_video

TOO_LARGE_HINT = (
    "raise --memory-budget-mb (the decoded image takes 12 bytes per pixel; --tile-size bounds only the "
    "forward pass), or convert it to a tiled GeoTIFF (gdal_translate -co TILED=YES) and install the geo "
    "extra (pip install 'fcnseg[geo]') to predict it by windows"
)


@dataclass(frozen=True)
class PredictOptions:
    """What ``fcnseg predict`` writes for each image, and how it streams."""

    overlay: bool = False
    overlay_format: str = "png"
    alpha: float = 0.5
    confidence: bool = False
    confidence_format: str = "png"
    probabilities: bool = False
    mc_dropout: int = 0
    seed: int = 0
    workers: int = 2
    batch_size: int = 8
    no_stream: bool = False  # the one-at-a-time loop: decode, predict, write, in turn, in this thread
    overwrite: bool = False  # predict every input again, whatever the manifest says
    resume_check: str = "size-mtime"  # how an input is found unchanged since its record (manifest.RESUME_CHECKS)
    max_pixels: int | None = None  # decode budget per image

    @property
    def per_image_maps(self) -> bool:
        return self.confidence or self.probabilities or bool(self.mc_dropout)


@dataclass
class Summary:
    """What one process did: inputs predicted, found done in the manifest, failed (one line each), seconds."""

    predicted: int = 0
    already_done: int = 0
    failed: list[str] = field(default_factory=list)
    seconds: float = 0.0


def output_names(path: Path, options: PredictOptions) -> list[str]:
    """The files ``fcnseg predict`` may write for the input ``path`` (a TIFF's mosaic files included)."""
    stem = path.stem
    names = [f"{stem}.png"] + ([f"{stem}_overlay.{options.overlay_format}"] if options.overlay else [])
    if options.confidence:
        maps = ["confidence", "entropy"] + (["mutual_info"] if options.mc_dropout else [])
        names += [f"{stem}_{name}.{options.confidence_format}" for name in maps]
        names += [f"{stem}_{name}_view.png" for name in maps]
    names += [f"{stem}_probs.npy"] if options.probabilities else []
    if path.suffix.lower() in WINDOWED_SUFFIXES:
        names += [f"{stem}.tif"] + ([f"{stem}_overlay.tif"] if options.overlay else [])
    if is_video(path):  # a folder of frame masks, and the overlay video
        names = [stem] + ([f"{stem}_overlay.mp4"] if options.overlay else [])
    return list(dict.fromkeys(names))


def shard(paths: Sequence[Path], rank: int, world_size: int) -> list[Path]:
    """This process's inputs: every ``world_size``-th of the sorted list, from ``rank`` on."""
    return sorted(paths)[rank::world_size]


class Loaded(NamedTuple):
    """One input as a worker read it: the image, or why not, or that it is a mosaic or a video (read later)."""

    index: int  # type: ignore[assignment]  # the field shadows tuple.index; every reader says item.index
    state: list | None = None  # the input's size and mtime (and hash) when it was read (for the manifest)
    image: torch.Tensor | None = None
    error: str | None = None
    kind: str = "image"  # or "mosaic" (read by windows) or "video" (read frame by frame)


class ImageFiles(Dataset):
    """Decodes input files in the DataLoader's workers; errors come back as one line, not as exceptions."""

    def __init__(self, paths: Sequence[Path], max_pixels: int | None, resume_check: str = "size-mtime") -> None:
        self.paths, self.max_pixels, self.resume_check = list(paths), max_pixels, resume_check

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> Loaded:
        path = self.paths[index]
        try:
            state = input_state(path, self.resume_check)  # before the read: a file changed meanwhile is predicted again
        except OSError:
            state = None  # load_image names the problem
        try:
            if is_video(path) or reads_by_windows(path, self.max_pixels):
                return Loaded(index, state, kind="video" if is_video(path) else "mosaic")
            return Loaded(index, state, image=load_image(path, max_pixels=self.max_pixels))
        except ImageTooLarge as error:
            return Loaded(index, error=f"{error}: {TOO_LARGE_HINT}")
        except ImageError as error:
            return Loaded(index, error=str(error))


def _image(item: Loaded) -> torch.Tensor:
    """The image of an input read as one: the only inputs batched or predicted alone as images."""
    assert item.image is not None
    return item.image


class Finished(NamedTuple):
    """A predicted input: the files still to save (target, save function), then the files already written."""

    path: Path
    state: list | None  # as Loaded.state
    saves: list[tuple[Path, Callable[[Path], object]]]
    written: list[Path] = []


class Writer:
    """Saves finished inputs' files and records them in the manifest, on a background thread (or inline)."""

    def __init__(self, manifest: Manifest, summary: Summary, report: Callable[[str], None], background: bool) -> None:
        self.manifest, self.summary, self.report = manifest, summary, report
        self.queue: queue.Queue = queue.Queue(maxsize=1)
        self.error: BaseException | None = None
        self.thread = (
            threading.Thread(target=self._drain, name="fcnseg-predict-writer", daemon=True) if background else None
        )
        if self.thread:
            self.thread.start()

    def put(self, batch: list[Finished]) -> None:
        if self.thread is None:
            return self._write(batch)
        self.queue.join()  # the previous batch is saved and recorded: what a kill loses stays bounded
        self._raise()
        self.queue.put(batch)

    def close(self) -> None:
        if self.thread:
            self.queue.put(None)
            self.thread.join()
        self._raise()

    def _raise(self) -> None:
        if self.error is not None:
            error, self.error = self.error, None
            raise error

    def _drain(self) -> None:
        while (batch := self.queue.get()) is not None:
            try:
                self._write(batch)
            except BaseException as error:  # handed to the model's thread at its next put
                self.error = error
            finally:
                self.queue.task_done()

    def _write(self, batch: list[Finished]) -> None:
        for item in batch:
            try:
                for target, save in item.saves:
                    save(target)
                self.manifest.record(item.path, item.state, [target for target, _ in item.saves] + item.written)
            except OSError as error:
                self.report(f"{item.path}: its outputs cannot be written ({error})")
                continue
            self.summary.predicted += 1


def predict_files(
    predictor: Predictor,
    classes: Sequence[str],
    palette: Sequence[Sequence[int]],
    paths: Sequence[Path],
    out: Path,
    options: PredictOptions,
    settings: str,
    rank: int = 0,
    world_size: int = 1,
) -> Summary:
    """Predict this process's share of ``paths`` into ``out``, skipping what the manifest says is done.

    ``settings`` is the fingerprint of everything that shapes the outputs
    (:func:`fcnseg.predict.manifest.settings_fingerprint`). Failures are reported on stderr as they happen
    and returned, one line each; only rank 0 shows progress.
    """
    start = time.perf_counter()
    mine = shard(paths, rank, world_size)
    manifest = Manifest(out, rank, settings, options.resume_check)
    todo = mine if options.overwrite else [path for path in mine if not manifest.is_done(path)]
    # what a killed run's atomic writes of these outputs left; not another process's, which may be writing beside
    sweep_temporary_files(out, {name for path in todo for name in output_names(path, options)}, below=False)
    summary = Summary(already_done=len(mine) - len(todo))
    try:
        _Run(predictor, classes, palette, out, options, manifest, summary, rank == 0).run(todo)
    finally:
        manifest.close()
    summary.seconds = time.perf_counter() - start
    return summary


class _Run:
    """One process's loop over its inputs: loader -> (batches, single images, mosaics) -> writer."""

    def __init__(
        self,
        predictor: Predictor,
        classes: Sequence[str],
        palette: Sequence[Sequence[int]],
        out: Path,
        options: PredictOptions,
        manifest: Manifest,
        summary: Summary,
        show: bool,
    ) -> None:
        self.predictor, self.classes, self.palette, self.out, self.options = predictor, classes, palette, out, options
        self.manifest, self.summary, self.show = manifest, summary, show
        self.batch_limits: dict[tuple[int, int], int] = {}

    def report(self, problem: str) -> None:
        self.summary.failed.append(problem)
        self.progress.write(f"fcnseg predict: skipped {problem}")

    def run(self, todo: list[Path]) -> None:
        workers = 0 if self.options.no_stream else min(self.options.workers, len(todo))
        files = ImageFiles(todo, self.options.max_pixels, self.options.resume_check)
        loader = iter(DataLoader(files, batch_size=None, num_workers=workers))
        self.out.mkdir(parents=True, exist_ok=True)
        # Threads (the writer's, tqdm's monitor) start after the workers are forked.
        self.progress = Progress(len(todo), label="predict", unit="image", show=self.show)
        self.writer = Writer(self.manifest, self.summary, self.report, background=not self.options.no_stream)
        self.todo = todo
        self.pending: list[Loaded] = []
        try:
            for item in loader:
                path = todo[item.index]
                try:
                    alone = item.error is None and (item.kind != "image" or self._alone(item.image))
                except ValueError as error:  # it needs tiles, and this model's tiles would change its logits
                    item, alone = item._replace(error=f"{path}: {error}"), False
                if item.error is not None:
                    self.report(item.error)
                elif alone:
                    self._flush()
                    {"mosaic": self._mosaic, "video": self._video}.get(item.kind, self._single)(path, item)
                else:
                    if self.pending and _image(self.pending[0]).shape != _image(item).shape:
                        self._flush()
                    self.pending.append(item)
                    if len(self.pending) >= self._batch_limit(_image(item)):
                        self._flush()
                    continue
                self.progress.update()
            self._flush()
        finally:
            self.writer.close()
            self.progress.close()

    def _alone(self, image: torch.Tensor) -> bool:
        return (
            self.options.per_image_maps
            or self.predictor.augments
            or self.predictor.tiling_for(*image.shape[-2:]) is not None
        )

    def _batch_limit(self, image: torch.Tensor) -> int:
        """``batch_size`` (1 with ``no_stream``), or fewer if the memory budget cannot hold the batch's forward pass."""
        if self.options.no_stream:
            return 1
        size = (int(image.shape[-2]), int(image.shape[-1]))
        if size not in self.batch_limits:
            budget = self.predictor.memory_budget_bytes
            each = self.predictor.model.estimate_forward_bytes(*size)
            self.batch_limits[size] = max(
                1, min(self.options.batch_size, budget // each if budget else self.options.batch_size)
            )
        return self.batch_limits[size]

    def _flush(self) -> None:
        """Predict the pending images (one size) as one batch and hand their files to the writer."""
        batch, self.pending = self.pending, []
        if not batch:
            return
        masks = self.predictor.masks(torch.stack([_image(item) for item in batch])).to("cpu", self.predictor.mask_dtype)
        paths = [self.todo[item.index] for item in batch]
        self.writer.put(
            [
                Finished(path, item.state, self._saves(path.stem, _image(item), mask))
                for path, item, mask in zip(paths, batch, masks, strict=True)
            ]
        )
        self.progress.update(len(batch))

    def _saves(self, stem: str, image: torch.Tensor, mask: torch.Tensor) -> list[tuple[Path, Callable[[Path], object]]]:
        saves: list[tuple[Path, Callable[[Path], object]]] = [
            (self.out / f"{stem}.png", functools.partial(save_mask_png, mask, self.palette))
        ]
        if self.options.overlay:
            saves.append(
                (
                    self.out / f"{stem}_overlay.{self.options.overlay_format}",
                    functools.partial(_save_overlay, image, mask, self.classes, self.palette, self.options.alpha),
                )
            )
        return saves

    def _single(self, path: Path, item: Loaded) -> None:
        """An image that goes alone: tiled, augmented, or with confidence maps and probabilities."""
        options, tiles = self.options, self.progress.parts_bar(path.name, "tile")
        image = _image(item)
        if not options.per_image_maps:
            mask = self.predictor.mask(image, tiles)
            return self.writer.put([Finished(path, item.state, self._saves(path.stem, image, mask))])
        result = self.predictor.confidence(
            image,
            tiles,
            mc_samples=options.mc_dropout,
            seed=options.seed,
            keep_probabilities=options.probabilities,
        )
        saves = self._saves(path.stem, image, result.mask)
        if options.probabilities:
            assert result.probabilities is not None  # keep_probabilities=options.probabilities
            saves.append(
                (self.out / f"{path.stem}_probs.npy", functools.partial(save_float16_npy, result.probabilities))
            )
        if options.confidence:
            maps = {
                "confidence": result.top1,
                "entropy": normalised_entropy(result.entropy, self.predictor.num_classes),
            }
            if result.mutual_information is not None:
                maps["mutual_info"] = normalised_entropy(result.mutual_information, self.predictor.num_classes)
            save = save_unit_png16 if options.confidence_format == "png" else save_float16_npy
            saves += [
                (self.out / f"{path.stem}_{name}.{options.confidence_format}", functools.partial(save, values))
                for name, values in maps.items()
            ]
            saves += [
                (
                    self.out / f"{path.stem}_{name}_view.png",
                    functools.partial(save_unit_map_view, values, name.replace("_", " ")),
                )
                for name, values in maps.items()
            ]  # the same maps as a person can read them
        self.writer.put([Finished(path, item.state, saves)])

    def _mosaic(self, path: Path, item: Loaded) -> None:
        """A raster read and written by windows (:mod:`fcnseg.predict.mosaic`): masks (and overlays) as GeoTIFFs."""
        if self.options.per_image_maps or self.predictor.augments:
            return self.report(
                f"{path}: is predicted by windows (a GeoTIFF, or larger than --memory-budget-mb holds), "
                "where --confidence, --probabilities, --mc-dropout and --tta-* are not available"
            )
        try:
            written = predict_mosaic(
                self.predictor,
                path,
                self.out,
                self.palette,
                self.options.alpha if self.options.overlay else None,
                self.progress.parts_bar(path.name, "tile"),
            )
        except MosaicError as error:
            return self.report(str(error))
        self.writer.put([Finished(path, item.state, [], written)])

    def _video(self, path: Path, item: Loaded) -> None:
        """A video, frame by frame (:mod:`fcnseg.predict.video`): a mask per frame (and an overlay video)."""
        if self.options.per_image_maps:
            return self.report(
                f"{path}: is a video, where --confidence, --probabilities and --mc-dropout are not available"
            )
        frames = self.progress.parts_bar(path.name, "frame")
        sweep_temporary_files(self.out / path.stem, below=False)  # what a killed run left among this video's frames
        try:
            written = predict_video(
                self.predictor,
                path,
                self.out,
                self.palette,
                self._batch_limit,
                self.options.alpha if self.options.overlay else None,
                frames,
            )
        except VideoError as error:
            return self.report(str(error))
        self.writer.put([Finished(path, item.state, [], written)])


def _save_overlay(
    image: torch.Tensor,
    mask: torch.Tensor,
    classes: Sequence[str],
    palette: Sequence[Sequence[int]],
    alpha: float,
    target: Path,
) -> None:
    save_image(with_legend(overlay_image(image, mask, palette, alpha=alpha), mask, classes, palette), target)
