"""curves.png of a short run: each of a few points is marked (a line through one point draws nothing)."""

from __future__ import annotations

import json

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg

from fcnseg.evaluation import figures


def drawn_curves(tmp_path, monkeypatch, lines: list[dict]):
    log = tmp_path / "metrics.jsonl"
    log.write_text("".join(json.dumps(line) + "\n" for line in lines))
    kept = []
    real_save = figures._save

    def keep(figure, path, **options):
        kept.append(figure)
        return real_save(figure, path, **options)

    monkeypatch.setattr(figures, "_save", keep)
    figures.plot_curves(log, tmp_path / "curves.png")
    return kept[0]


def blue_pixels(figure, axes) -> int:
    """Pixels of tab:blue inside ``axes`` (the legend excluded), as drawn."""
    canvas = FigureCanvasAgg(figure)
    legend = axes.get_legend()
    legend.set_visible(False)
    canvas.draw()
    pixels = np.asarray(canvas.buffer_rgba())[..., :3].astype(int)
    box = axes.get_window_extent()
    height = pixels.shape[0]
    inside = pixels[int(height - box.y1) : int(height - box.y0), int(box.x0) : int(box.x1)]
    return int((np.abs(inside - np.array([31, 119, 180])).max(-1) <= 10).sum())


def test_a_short_run_marks_each_of_its_points(tmp_path, monkeypatch):
    lines = [{"step": s, "loss": 2.0 - 0.1 * s} for s in (10, 20, 30)]
    lines.append({"step": 30, "val": {"mean_iu": 0.3, "pixel_acc": 0.6}})
    figure = drawn_curves(tmp_path, monkeypatch, lines)
    loss_axes, metric_axes = figure.axes[:2]
    loss = loss_axes.get_lines()[0]
    assert list(loss.get_xdata()) == [10, 20, 30] and loss.get_marker() == "o" and loss.get_markersize() > 0
    assert all(line.get_marker() == "o" for line in metric_axes.get_lines())  # one validation point: a dot each


def test_one_loss_point_is_visible(tmp_path, monkeypatch):
    figure = drawn_curves(tmp_path, monkeypatch, [{"step": 5, "loss": 1.7}])
    assert blue_pixels(figure, figure.axes[0]) > 10


def test_a_long_run_keeps_plain_lines(tmp_path, monkeypatch):
    figure = drawn_curves(tmp_path, monkeypatch, [{"step": s, "loss": 1.0 / s} for s in range(1, 101)])
    assert figure.axes[0].get_lines()[0].get_marker() in ("None", None, "")
