"""predict --confidence: beside the exact 16-bit map, a picture a person can read (colour map and colour bar)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from matplotlib import colormaps
from PIL import Image

import fcnseg
from fcnseg.checkpoint import save_checkpoint
from fcnseg.cli import main
from fcnseg.inference.confidence import VIEW_BAND, read_unit_png16, unit_map_view
from fcnseg.inference.predictor import Predictor
from fcnseg.predict.images import load_image

CLASSES = ["background", "road", "car"]
PALETTE = [(0, 0, 0), (128, 64, 128), (64, 0, 128)]

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def viridis(values: np.ndarray) -> np.ndarray:
    """matplotlib's viridis of values in [0, 1], as uint8 RGB (the reference)."""
    return np.rint(np.asarray(colormaps["viridis"](np.asarray(values, np.float64)))[..., :3] * 255).astype(np.uint8)


def test_confidence_gets_a_colour_view_and_the_16_bit_file_stays_exact(tmp_path):
    model = fcnseg.create_model("fcn8s", num_classes=len(CLASSES), width=0.0625)
    for layer in ("score_fr", "score_pool4", "score_pool3"):
        torch.nn.init.normal_(getattr(model, layer).weight, std=0.1)
    checkpoint = save_checkpoint(tmp_path / "m.safetensors", model.eval(), classes=CLASSES, palette=PALETTE)
    image_path = tmp_path / "in" / "street.png"
    image_path.parent.mkdir()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8)).save(image_path)
    out = tmp_path / "out"
    assert (
        main(["predict", str(checkpoint), str(image_path), "--out", str(out), "--device", "cpu", "--confidence"]) == 0
    )

    # the exact file: 16-bit, v = round(p * 65535) of the Predictor's top-1 probability (another run of the
    # model: +-1 level of float rounding)
    top1 = (
        Predictor(fcnseg.checkpoint.load_checkpoint(checkpoint).model).confidence(load_image(image_path)).top1.numpy()
    )
    with Image.open(out / "street_confidence.png") as exact:
        assert exact.mode == "I;16"
        stored = np.asarray(exact).astype(np.int64)
    assert np.abs(stored - np.rint(np.clip(top1, 0, 1) * 65535)).max() <= 1 and stored.std() > 100
    values = read_unit_png16(out / "street_confidence.png")

    for name in ("confidence", "entropy"):
        with Image.open(out / f"street_{name}_view.png") as view:
            assert view.mode == "RGB" and view.size == (64 + VIEW_BAND, 120)
            pixels = np.asarray(view)
        picture = pixels[:48, :64].astype(int)
        assert (picture.max(-1) - picture.min(-1)).mean() > 40, "colours, not grey"
        if name == "confidence":  # each pixel is viridis of its value (the 8-bit step of the colour map: +-1 level)
            expected = viridis(np.rint(values * 255) / 255).astype(int)
            assert np.abs(picture - expected).max() <= 1
        bar = pixels[18:112, 64 + 10 + 7].astype(int)  # the colour bar's middle column: viridis from 1 down to 0
        np.testing.assert_allclose(bar, viridis(np.linspace(1, 0, len(bar))).astype(int), atol=3)


def test_a_view_of_a_uniform_map_still_shows_the_whole_scale():
    view = np.asarray(unit_map_view(np.full((200, 30), 0.25, np.float32), "confidence"))
    assert (view[:200, :30] == viridis(np.array(64 / 255))).all()  # 0.25 -> level 64 of 255
    assert view.shape == (200, 30 + VIEW_BAND, 3)
    with pytest.raises(ValueError, match="expected a map"):
        unit_map_view(np.zeros((2, 3, 4)), "x")
