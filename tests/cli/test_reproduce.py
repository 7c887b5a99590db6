"""``fcnseg reproduce`` end to end: served weights, a tiny VOC/SBD layout, hand-computed metrics."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch
from caffe_encoder import fcn_caffemodel
from dataset_files import write_list, write_voc_item
from weights_server import FileServer

import fcnseg
from fcnseg.cli import main
from fcnseg.weights import registry
from fcnseg.weights.registry import Checksum, KnownWeights, Published


def background_everywhere_model() -> torch.nn.Module:
    """An FCN-8s whose only non-zero weights are the score_fr bias of class 0 (and the bilinear upsampling).

    Every logit of class 0 is then > 0 (positive bilinear weights) and every other logit exactly 0:
    the prediction is background at every pixel, whatever the image.
    """
    model = fcnseg.create_model("fcn8s", num_classes=21, width=0.0625)
    with torch.no_grad():
        for name, layer in model.reference_layers().items():
            if not name.startswith("upscore"):
                for param in layer.parameters():
                    param.zero_()
        model.score_fr.bias[0] = 1.0
    return model


@pytest.fixture
def layout(tmp_path: Path) -> tuple[Path, Path]:
    """VOC2012 images a, b, c; VOC2011 val = a, b, c; SBD train = c, so seg11valid = a, b.

    a: class 1 on 18 labelled pixels; b: 9 background and 9 class-2 pixels; c (excluded): class 3.
    Row 0 of every mask is void (255).
    """
    voc = tmp_path / "VOCdevkit" / "VOC2012"
    a = np.ones((4, 6), np.uint8)
    b = np.zeros((4, 6), np.uint8)
    b[:, 3:] = 2
    c = np.full((4, 6), 3, np.uint8)
    for item, mask in (("a", a), ("b", b), ("c", c)):
        mask[0] = 255
        write_voc_item(voc, item, mask)
    write_list(tmp_path / "VOCdevkit" / "VOC2011" / "ImageSets" / "Segmentation" / "val.txt", ["a", "b", "c"])
    sbd = tmp_path / "benchmark_RELEASE" / "dataset"
    write_list(sbd / "train.txt", ["c"])
    return voc, sbd


@pytest.fixture
def served_entry(fcnseg_home, monkeypatch):
    data = fcn_caffemodel(background_everywhere_model())
    with FileServer({"/bg.caffemodel": data}) as server:
        entry = KnownWeights(
            "bg-fcn8s-voc",
            "bg.caffemodel",
            (server.url + "/bg.caffemodel",),
            Checksum("sha256", hashlib.sha256(data).hexdigest()),
            "fcn8s",
            "voc",
            "caffe",
            "test",
            width=0.0625,
            published=(
                Published("source A", {"pixel_acc": 20.0, "mean_iu": 10.0}),
                Published("source B", {"fw_iu": 5.0}),
            ),
        )
        monkeypatch.setattr(
            registry,
            "KNOWN_WEIGHTS",
            {
                entry.name: entry,
                "no-figures": KnownWeights(
                    "no-figures", "x.caffemodel", (server.url + "/x",), None, "fcn8s", "voc", "caffe", "test"
                ),
            },
        )
        yield entry


def table(printed: str) -> dict[str, list[str]]:
    rows = {}
    for line in printed.splitlines():
        words = line.split()
        if len(words) > 2 and " ".join(words[:2]) in ("pixel acc", "mean acc", "mean IU", "fw IU"):
            rows[" ".join(words[:2])] = words[2:]
    return rows


def test_reproduce_prints_metrics_beside_the_published_ones(layout, served_entry, capsys):
    voc, sbd = layout
    assert main(["reproduce", served_entry.name, "--voc", str(voc), "--sbd", str(sbd), "--device", "cpu"]) == 0
    printed = capsys.readouterr().out
    assert "bg-fcn8s-voc (fcn8s) on seg11valid: 2 of 2 images, cpu" in printed
    # By hand, all 36 labelled pixels of a and b predicted background: n[0,0]=9, n[1,0]=18, n[2,0]=9.
    # pixel acc 9/36; mean acc (1+0+0)/3; IU_0 = 9/(9+36-9) = 1/4, IU_1 = IU_2 = 0, mean IU 1/12;
    # fw IU = 9/36 * 1/4. Differences: measured - published, in points.
    assert table(printed) == {
        "pixel acc": ["25.00", "20.0", "+5.00", "-", "-"],
        "mean acc": ["33.33", "-", "-", "-", "-"],
        "mean IU": ["8.33", "10.0", "-1.67", "-", "-"],
        "fw IU": ["6.25", "-", "-", "5.0", "+1.25"],
    }
    assert "[1] source A" in printed and "[2] source B" in printed and "subset" not in printed


def test_reproduce_limit_scores_a_subset_and_says_so(layout, served_entry, capsys):
    voc, sbd = layout
    assert main(["reproduce", served_entry.name, "--voc", str(voc), "--sbd", str(sbd), "--limit", "1"]) == 0
    printed = capsys.readouterr().out
    assert "1 of 2 images" in printed and "not comparable with the published figures" in printed
    # Image a alone: 18 class-1 pixels, all predicted background: every metric 0.
    assert [row[0] for row in table(printed).values()] == ["0.00"] * 4


def test_reproduce_errors_are_one_line(layout, served_entry, tmp_path, capsys):
    voc, _ = layout
    assert main(["reproduce", served_entry.name, "--voc", str(voc), "--sbd", str(tmp_path / "nowhere")]) == 2
    err = capsys.readouterr().err
    assert "SBD train list" in err and "nowhere" in err and len(err.strip().splitlines()) == 1
    assert main(["reproduce", "no-figures", "--voc", str(voc), "--sbd", str(tmp_path)]) == 2
    assert "no-figures: no published seg11valid figures" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["reproduce", served_entry.name, "--voc", str(voc), "--sbd", str(tmp_path), "--limit", "0"])
