"""Pictures a person would rather look at than read: curves, overlays, confusion matrices.

Drawn with matplotlib's object API on the Agg canvas (no display, no pyplot global
state, safe in worker processes and on servers); every file is written atomically.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from ..files import atomic_path

Colour = Sequence[int]


def _save(figure: Figure, path: str | os.PathLike[str], dpi: int = 110) -> Path:
    FigureCanvasAgg(figure)
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", dpi=dpi, bbox_inches="tight")
    return Path(path)


def read_jsonl(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The records of a JSON-lines file; a torn last line (a killed writer) is skipped."""
    records = []
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            line = line.strip()
            if not line:
                continue
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return records


def _series(records: list[dict[str, Any]], key: str) -> tuple[list[float], list[float]]:
    """(steps, values) of ``key``, looked up at the top level or in a record's ``val`` dict."""
    steps, values = [], []
    for record in records:
        value = record.get(key, (record.get("val") or {}).get(key))
        if "step" in record and isinstance(value, (int, float)) and math.isfinite(value):
            steps.append(float(record["step"]))
            values.append(float(value))
    return steps, values


#: Up to this many points a curve marks each one: a line through one or two points is hard to see, or invisible.
FEW_POINTS = 20


def _markers_if_few(steps: Sequence[float]) -> dict[str, Any]:
    return {"marker": "o"} if len(steps) <= FEW_POINTS else {}


def plot_curves(metrics_jsonl: str | os.PathLike[str], out_png: str | os.PathLike[str]) -> Path:
    """Training loss and validation metrics against the step, from a run's ``metrics.jsonl``.

    Records are JSON objects with a ``step`` and either a ``loss`` (training) or the
    validation metrics (``mean_iu``, ``pixel_acc``, ... at the top level or under ``val``).
    """
    records = read_jsonl(metrics_jsonl)
    figure = Figure(figsize=(10, 3.8))
    loss_axes, metric_axes = figure.subplots(1, 2)

    steps, losses = _series(records, "loss")
    if steps:
        loss_axes.plot(
            steps,
            losses,
            color="tab:blue",
            linewidth=1,
            alpha=0.35 if len(steps) > 20 else 1,
            label="loss",
            markersize=4,
            **_markers_if_few(steps),
        )
        if len(steps) > 20:  # a running mean makes the trend readable through the noise
            window = max(2, len(steps) // 20)
            smooth = np.convolve(losses, np.ones(window) / window, mode="valid")
            loss_axes.plot(steps[window - 1 :], smooth, color="tab:blue", linewidth=2, label=f"mean of {window}")
        if min(losses) > 0 and max(losses) / min(losses) > 50:
            loss_axes.set_yscale("log")
        loss_axes.legend(loc="upper right")
    else:
        loss_axes.text(0.5, 0.5, "no training loss yet", ha="center", va="center", transform=loss_axes.transAxes)
    loss_axes.set(title="training loss", xlabel="step", ylabel="loss")
    loss_axes.grid(alpha=0.3)

    drawn = False
    for key, label, style in (
        ("mean_iu", "mean IU", "-"),
        ("pixel_acc", "pixel acc", "--"),
        ("mean_acc", "mean acc", ":"),
        ("fw_iu", "fw IU", "-."),
    ):
        steps, values = _series(records, key)
        if steps:
            marks = {"marker": "o"} if key == "mean_iu" else _markers_if_few(steps)  # mean IU: always marked
            metric_axes.plot(
                steps, values, style, label=label, linewidth=2 if key == "mean_iu" else 1, markersize=3, **marks
            )
            drawn = True
    if drawn:
        steps, values = _series(records, "mean_iu")
        if values:
            best = int(np.argmax(values))
            metric_axes.annotate(
                f"best {values[best]:.3f}",
                (steps[best], values[best]),
                textcoords="offset points",
                xytext=(0, -14),
                ha="center",
                fontsize=8,
            )
        metric_axes.legend(loc="lower right")
    else:
        metric_axes.text(0.5, 0.5, "no validation yet", ha="center", va="center", transform=metric_axes.transAxes)
    metric_axes.set(title="validation", xlabel="step", ylim=(0, 1.02))
    metric_axes.grid(alpha=0.3)
    return _save(figure, out_png)


def _as_hwc(image: torch.Tensor | np.ndarray) -> np.ndarray:
    array = image.cpu().numpy() if isinstance(image, torch.Tensor) else np.asarray(image)
    return array.transpose(1, 2, 0) if array.ndim == 3 and array.shape[0] == 3 else array


def _unit_rgb(colour: Sequence[int]) -> tuple[float, float, float]:
    """An 8-bit (R, G, B) as matplotlib's 0..1 floats."""
    red, green, blue = colour
    return red / 255, green / 255, blue / 255


def overlay_grid(
    images: Sequence[torch.Tensor],
    masks_pred: Sequence[torch.Tensor],
    masks_gt: Sequence[torch.Tensor] | None,
    palette: Sequence[Colour],
    png: str | os.PathLike[str],
    *,
    titles: Sequence[str] | None = None,
    alpha: float = 0.5,
    classes: Sequence[str] | None = None,
) -> Path:
    """One row per image: the image, the ground truth over it (if given), the prediction over it.

    Images are uint8 RGB (3, H, W); masks are class ids (H, W); ids without a palette colour (the ignore value) leave
    the image visible. With ``classes``, a legend names the colour of every class present in the masks.
    """
    from ..predict.images import overlay_image

    if len(images) == 0 or len(images) != len(masks_pred) or (masks_gt is not None and len(masks_gt) != len(images)):
        raise ValueError(
            f"overlay_grid needs as many masks as images, got {len(images)} images, "
            f"{len(masks_pred)} predictions, {None if masks_gt is None else len(masks_gt)} ground truths"
        )
    columns = ["image"] + (["ground truth"] if masks_gt is not None else []) + ["prediction"]
    height, width = images[0].shape[-2:]
    cell = 2.6
    figure = Figure(figsize=(cell * len(columns), cell * len(images) * height / width + 0.4))
    axes = np.asarray(figure.subplots(len(images), len(columns), squeeze=False))
    for row, image in enumerate(images):
        panels = [_as_hwc(image)]
        if masks_gt is not None:
            panels.append(np.asarray(overlay_image(image, torch.as_tensor(masks_gt[row]), palette, alpha)))
        panels.append(np.asarray(overlay_image(image, torch.as_tensor(masks_pred[row]), palette, alpha)))
        for column, panel in enumerate(panels):
            ax = axes[row, column]
            ax.imshow(panel, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if row == 0:
                ax.set_title(columns[column], fontsize=10)
        if titles is not None:
            axes[row, 0].set_ylabel(titles[row], fontsize=8)
    figure.subplots_adjust(wspace=0.03, hspace=0.08)
    if classes is not None:
        from matplotlib.patches import Patch

        shown = sorted({int(v) for m in [*masks_pred, *(masks_gt or [])] for v in torch.as_tensor(m).unique().tolist()
                        if 0 <= int(v) < len(classes)})  # fmt: skip
        handles = [Patch(color=_unit_rgb(palette[c]), label=classes[c]) for c in shown]
        figure.legend(handles=handles, loc="lower center", ncol=min(6, max(1, len(handles))), fontsize=8, frameon=False)
        figure.subplots_adjust(bottom=0.04 + 0.25 / max(1, len(images)))
    return _save(figure, png)


def validation_overlays(
    predictor: Any,
    dataset: Any,
    png: str | os.PathLike[str],
    *,
    count: int = 6,
    palette: Sequence[Colour] | None = None,
) -> Path:
    """Predict ``count`` images spread over ``dataset`` with a :class:`~fcnseg.inference.predictor.Predictor`
    and draw them with :func:`overlay_grid`."""
    count = max(1, min(count, len(dataset)))
    indices = np.linspace(0, len(dataset) - 1, count).round().astype(int).tolist()
    images, gts, preds, titles = [], [], [], []
    for index in indices:
        image, mask = dataset[index]
        images.append(image)
        gts.append(mask)
        preds.append(predictor.mask(image))
        describe = getattr(dataset, "describe", None)
        titles.append(Path(describe(index)).stem if describe else str(index))
    return overlay_grid(
        images,
        preds,
        gts,
        palette if palette is not None else dataset.palette,
        png,
        titles=titles,
        classes=getattr(dataset, "classes", None),
    )


def confusion_matrix_figure(
    matrix: torch.Tensor | np.ndarray, classes: Sequence[str], png: str | os.PathLike[str], *, title: str | None = None
) -> Path:
    """Heat map of the confusion matrix ``n[gt, pred]``, each row normalised by its ground-truth count.

    The diagonal is each class's accuracy (recall); off-diagonal cells show where a
    class's pixels went. With up to 25 classes each cell carries its percentage.
    """
    counts = matrix.cpu().numpy() if isinstance(matrix, torch.Tensor) else np.asarray(matrix)
    counts = counts.astype(np.float64)
    n = len(classes)
    if counts.shape != (n, n):
        raise ValueError(f"confusion matrix of shape {counts.shape} for {n} classes")
    totals = counts.sum(axis=1, keepdims=True)
    rates = np.divide(counts, totals, out=np.zeros_like(counts), where=totals > 0)
    side = max(4.0, 0.45 * n + 2.5)
    figure = Figure(figsize=(side + 1.2, side))
    ax = figure.subplots()
    shown = ax.imshow(rates, cmap="Blues", vmin=0, vmax=1, interpolation="nearest")
    figure.colorbar(shown, ax=ax, fraction=0.046, pad=0.04, label="fraction of the ground-truth class")
    ax.set_xticks(range(n), labels=list(classes), rotation=60, ha="right", fontsize=8)
    ax.set_yticks(
        range(n), labels=[f"{name} ({int(t):,})" for name, t in zip(classes, totals[:, 0], strict=True)], fontsize=8
    )
    ax.set_xlabel("predicted class")
    ax.set_ylabel("ground-truth class (pixels)")
    if n <= 25:
        for gt in range(n):
            for pred in range(n):
                if totals[gt, 0] > 0 and counts[gt, pred] > 0:
                    value = rates[gt, pred]
                    ax.text(
                        pred,
                        gt,
                        f"{100 * value:.0f}" if value >= 0.005 else "<1",
                        ha="center",
                        va="center",
                        fontsize=7,
                        color="white" if value > 0.5 else "black",
                    )
    ax.set_title(title or "confusion matrix (% of each ground-truth row)", fontsize=10)
    return _save(figure, png)


def worst_images_figure(
    images: Sequence[torch.Tensor],
    targets: Sequence[torch.Tensor],
    preds: Sequence[torch.Tensor],
    scores: Sequence[float],
    palette: Sequence[Colour],
    path: str | os.PathLike[str],
    k: int = 8,
    *,
    ids: Sequence[Any] | None = None,
    classes: Sequence[str] | None = None,
) -> Path:
    """The ``k`` images with the lowest ``scores`` (e.g. per-image mean IU), worst first, drawn
    by :func:`overlay_grid` (image, ground truth, prediction) with each one's id and score.

    Images whose score is NaN (nothing to score) are left out. Only the chosen items of ``images``, ``targets`` and
    ``preds`` are indexed, so lazy sequences work. With ``classes``, a legend names the colour of every class present.
    """
    values = np.asarray(scores, dtype=np.float64)
    if k < 1:
        raise ValueError(f"worst_images_figure: k must be at least 1, got {k}")
    if not len(images) == len(targets) == len(preds) == len(values) or (ids is not None and len(ids) != len(values)):
        raise ValueError(
            f"worst_images_figure needs one target, prediction, score (and id) per image, "
            f"got {len(images)} images, {len(targets)} targets, {len(preds)} predictions, {len(values)} scores"
        )
    order = [int(i) for i in np.argsort(values, kind="stable") if not math.isnan(values[i])][:k]
    if not order:
        raise ValueError("worst_images_figure: no image has a score (all NaN or none given)")
    titles = [f"{ids[i] if ids is not None else i}: {values[i]:.3f}" for i in order]
    return overlay_grid(
        [images[i] for i in order],
        [preds[i] for i in order],
        [targets[i] for i in order],
        palette,
        path,
        titles=titles,
        classes=classes,
    )
