"""Test-time augmentation: scales and flips averaged in logit space; exact per pass under tiling."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from tiny_models import tiny_model

import fcnseg
from fcnseg.inference.predictor import Predictor
from fcnseg.inference.tiling import Tiling


def test_flip_averages_the_image_and_its_mirror():
    model = tiny_model("fcn8s", 4, score_std=0.5, score_bias_std=0.5)
    image = torch.randint(0, 256, (3, 45, 70), dtype=torch.uint8)
    plain = Predictor(model)
    expected = (plain.logits(image) + plain.logits(image.flip(-1)).flip(-1)) / 2
    got = Predictor(model, tta_flip=True).logits(image)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(got, plain.logits(image), atol=1e-3)  # the mirror did change something


def test_scales_resize_the_image_and_the_logits_back():
    model = tiny_model("fcn8s", 4, score_std=0.5, score_bias_std=0.5)
    image = torch.randint(0, 256, (3, 40, 60), dtype=torch.uint8)
    plain = Predictor(model)
    half = F.interpolate(image[None].float(), size=(20, 30), mode="bilinear", align_corners=False, antialias=True)
    half = half[0].round().clamp(0, 255).to(torch.uint8)
    back = F.interpolate(plain.logits(half)[None], size=(40, 60), mode="bilinear", align_corners=False)[0]
    expected = (plain.logits(image) + back) / 2
    torch.testing.assert_close(Predictor(model, tta_scales=(1.0, 0.5)).logits(image), expected, rtol=1e-5, atol=1e-5)


def test_augmented_prediction_in_tiles_equals_the_whole_image():
    model = tiny_model("fcn8s", 4, score_std=0.5, score_bias_std=0.5)
    image = torch.randint(0, 256, (3, 64, 700), dtype=torch.uint8)
    options = {"tta_scales": (0.75, 1.0), "tta_flip": True}
    whole = Predictor(model, **options).logits(image)
    tiled = Predictor(model, tile=Tiling(128), **options).logits(image)
    assert (tiled - whole).abs().max() < 1e-4
    assert torch.equal(Predictor(model, tile=Tiling(128), **options).mask(image), whole.argmax(0).to(torch.uint8))


def test_bad_scales_and_mc_dropout_with_tta_are_refused():
    model = tiny_model("fcn8s", 4, score_std=0.5, score_bias_std=0.5)
    with pytest.raises(ValueError, match="scales"):
        Predictor(model, tta_scales=(0.0,))
    with pytest.raises(ValueError, match="cannot be combined"):
        Predictor(model, tta_flip=True).confidence(torch.zeros(3, 8, 8, dtype=torch.uint8), mc_samples=2)


def test_predict_and_eval_take_tta_options(tmp_path):
    from fcnseg.checkpoint import save_checkpoint
    from fcnseg.cli import main
    from fcnseg.data import SHAPE_CLASSES

    model = fcnseg.create_model("fcn8s", num_classes=len(SHAPE_CLASSES), width=0.0625)
    path = save_checkpoint(tmp_path / "m.safetensors", model, classes=SHAPE_CLASSES, palette=[(9, 9, 9)] * 7)
    assert (
        main(
            [
                "eval",
                str(path),
                "--data",
                "synthetic",
                "--data-option",
                "size=24",
                "--data-option",
                "num_images=2",
                "--tta-scales",
                "0.5,1",
                "--tta-flip",
            ]
        )
        == 0
    )
    with pytest.raises(SystemExit):
        main(["eval", str(path), "--data", "synthetic", "--tta-scales", "big"])
