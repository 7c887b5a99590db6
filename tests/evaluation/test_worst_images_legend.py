"""``fcnseg eval --detail --out``: worst_images.png draws exactly the images the text lists, with a legend."""

from __future__ import annotations

import re

from tiny_models import tiny_model

from fcnseg.checkpoint import save_checkpoint
from fcnseg.cli import main
from fcnseg.data import SHAPE_CLASSES
from fcnseg.evaluation import figures


def test_worst_images_png_shows_the_listed_images_and_a_legend_of_the_class_colours(tmp_path, capsys, monkeypatch):
    palette = [(i * 30, 0, 0) for i in range(len(SHAPE_CLASSES))]
    checkpoint = save_checkpoint(
        tmp_path / "m.safetensors",
        tiny_model("fcn32s", len(SHAPE_CLASSES), score_std=1.0),
        classes=SHAPE_CLASSES,
        palette=palette,
    )
    drawn = {}
    real_save = figures._save

    def keep(figure, path, **options):  # the figure object itself, not only the PNG
        drawn[path.name] = figure
        return real_save(figure, path, **options)

    monkeypatch.setattr(figures, "_save", keep)
    for worst in ("3", None):  # the default (6) too: it used to list 5 and draw 6
        out = tmp_path / f"eval{worst}"
        argv = [
            "eval",
            str(checkpoint),
            "--data",
            "synthetic",
            "--data-option",
            "size=48",
            "--data-option",
            "num_images=8",
            "--detail",
            "--out",
            str(out),
        ] + (["--worst", worst] if worst else [])
        assert main(argv) == 0 and (out / "worst_images.png").is_file()
        listed = re.search(r"worst: (.*)", capsys.readouterr().out).group(1).split(", ")
        assert len(listed) == int(worst or 6)
        figure = drawn.pop("worst_images.png")
        titles = [ax.get_ylabel() for ax in figure.axes if ax.get_ylabel()]
        # each row is titled "<id>: <score>", the text "<id> <score>": the same images in the same order
        assert [title.replace(": ", " ") for title in titles] == listed
        assert len([ax for ax in figure.axes if ax.images]) == 3 * len(listed)  # image, truth, prediction per row
        assert len(figure.legends) == 1
        legend = figure.legends[0]
        labels = [text.get_text() for text in legend.get_texts()]
        assert labels and set(labels) <= set(SHAPE_CLASSES)
        for label, patch in zip(labels, legend.get_patches(), strict=True):  # each swatch has its class's colour
            expected = [v / 255 for v in palette[SHAPE_CLASSES.index(label)]]
            assert [round(v, 6) for v in patch.get_facecolor()[:3]] == [round(v, 6) for v in expected]
