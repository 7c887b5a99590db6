"""Per-pixel probabilities, confidence maps, MC-dropout and their files (fcnseg predict)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.stats
import torch
from PIL import Image
from tiny_models import tiny_model

import fcnseg
from fcnseg.checkpoint import save_checkpoint
from fcnseg.cli import main
from fcnseg.inference.confidence import read_unit_png16, save_unit_png16
from fcnseg.inference.predictor import Predictor

CLASSES = ["background", "thing", "stuff", "other"]
PALETTE = [(0, 0, 0), (200, 30, 30), (20, 180, 60), (30, 30, 200)]

#: The score layers' random scale: small enough that the probabilities are neither 0 nor 1.
SOFT_SCORES = 0.1

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def random_image(height: int, width: int) -> torch.Tensor:
    return torch.randint(0, 256, (3, height, width), dtype=torch.uint8)


def test_probabilities_and_confidence_are_the_softmax_of_the_logits():
    predictor = Predictor(tiny_model("fcn8s", len(CLASSES), score_std=SOFT_SCORES))
    image = random_image(45, 61)
    expected = torch.softmax(predictor.logits(image), dim=0)
    probabilities = predictor.probabilities(image)
    assert probabilities.shape == (4, 45, 61) and probabilities.dtype == torch.float32
    torch.testing.assert_close(probabilities, expected, rtol=0, atol=1e-6)
    result = predictor.confidence(image)
    assert result.mutual_information is None and result.probabilities is None
    assert torch.equal(result.mask, predictor.mask(image))
    torch.testing.assert_close(result.top1, expected.max(0).values, rtol=0, atol=1e-6)
    assert result.top1.min() < 0.9, "the model must be unsure somewhere for the test to mean anything"
    # Entropy by formula, independently: scipy's -sum p ln p over the classes.
    reference = scipy.stats.entropy(expected.double().numpy(), axis=0)
    np.testing.assert_allclose(result.entropy.numpy(), reference, rtol=0, atol=1e-5)
    assert float(result.entropy.max()) <= math.log(4) + 1e-6


def test_tiled_probabilities_equal_whole_image_ones():
    model = tiny_model("fcn8s", len(CLASSES), score_std=SOFT_SCORES)
    image = random_image(70, 90)
    whole = Predictor(model).confidence(image, keep_probabilities=True)
    tiled_predictor = Predictor(model, tile=32)
    assert tiled_predictor.tiling_for(70, 90) is not None
    tiled = tiled_predictor.confidence(image, keep_probabilities=True)
    torch.testing.assert_close(tiled.probabilities, whole.probabilities, rtol=0, atol=1e-5)
    torch.testing.assert_close(tiled_predictor.probabilities(image), whole.probabilities, rtol=0, atol=1e-5)
    torch.testing.assert_close(tiled.top1, whole.top1, rtol=0, atol=1e-5)
    torch.testing.assert_close(tiled.entropy, whole.entropy, rtol=0, atol=1e-5)
    assert torch.equal(tiled.mask, whole.mask)


def manual_mc_dropout(model: torch.nn.Module, image: torch.Tensor, samples: int, seed: int) -> list[torch.Tensor]:
    """N softmaxes written out: eval mode but Dropout modules training, the global RNG seeded once."""
    model.eval()
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.train()
    torch.manual_seed(seed)
    blob = fcnseg.preprocess(image[None], model.preprocessing)
    with torch.no_grad():
        return [torch.softmax(model(blob)[0], dim=0) for _ in range(samples)]


def test_mc_dropout_averages_n_passes_seeded():
    model = tiny_model("fcn8s", len(CLASSES), score_std=SOFT_SCORES, dropout=0.5).eval()
    image = random_image(40, 52)
    predictor = Predictor(model)
    rng_before = torch.random.get_rng_state()
    result = predictor.confidence(image, mc_samples=3, seed=7, keep_probabilities=True)
    assert torch.equal(torch.random.get_rng_state(), rng_before), "the caller's RNG must be left as it was"
    assert not any(m.training for m in model.modules()), "dropout must be off again after the call"

    samples = manual_mc_dropout(model, image, 3, seed=7)
    assert not torch.allclose(samples[0], samples[1]), "dropout must change the passes for the test to mean anything"
    mean = torch.stack(samples).mean(0)
    torch.testing.assert_close(result.probabilities, mean, rtol=0, atol=1e-6)
    torch.testing.assert_close(predictor.probabilities(image, mc_samples=3, seed=7), mean, rtol=0, atol=1e-6)
    assert torch.equal(result.mask, mean.argmax(0).to(result.mask.dtype))
    torch.testing.assert_close(result.top1, mean.max(0).values, rtol=0, atol=1e-6)
    entropy = lambda p: -(p.double() * p.double().clamp_min(1e-300).log()).sum(0)  # noqa: E731
    torch.testing.assert_close(result.entropy.double(), entropy(mean), rtol=0, atol=1e-5)
    information = entropy(mean) - torch.stack([entropy(p) for p in samples]).mean(0)
    torch.testing.assert_close(result.mutual_information.double(), information.clamp_min(0), rtol=0, atol=1e-5)
    assert float(result.mutual_information.max()) > 1e-3

    again = predictor.probabilities(image, mc_samples=3, seed=7)
    other_seed = predictor.probabilities(image, mc_samples=3, seed=8)
    assert torch.equal(again, result.probabilities)
    assert not torch.allclose(other_seed, result.probabilities)


def test_mc_dropout_with_rate_zero_equals_the_plain_probabilities():
    predictor = Predictor(tiny_model("fcn8s", len(CLASSES), score_std=SOFT_SCORES, dropout=0.0))
    image = random_image(33, 47)
    plain = predictor.confidence(image, keep_probabilities=True)
    mc = predictor.confidence(image, mc_samples=4, seed=1, keep_probabilities=True)
    torch.testing.assert_close(mc.probabilities, plain.probabilities, rtol=0, atol=1e-6)
    torch.testing.assert_close(mc.entropy, plain.entropy, rtol=0, atol=1e-5)
    assert float(mc.mutual_information.max()) < 1e-5


def test_mc_dropout_needs_dropout_layers_and_a_valid_count():
    model = tiny_model("fcn8s", len(CLASSES), score_std=SOFT_SCORES)
    model.backbone.drop6 = model.backbone.drop7 = torch.nn.Identity()
    predictor = Predictor(model)
    image = random_image(20, 20)
    with pytest.raises(ValueError, match="MC-dropout needs dropout layers"):
        predictor.probabilities(image, mc_samples=2)
    with pytest.raises(ValueError, match="mc_samples must be an integer >= 0"):
        Predictor(tiny_model("fcn8s", len(CLASSES), score_std=SOFT_SCORES)).confidence(image, mc_samples=-1)


def test_png16_round_trip(tmp_path):
    values = np.array([[0.0, 1.0, 0.5, 1 / 3], [0.25, 1e-6, 0.999999, 0.123456]], dtype=np.float32)
    path = save_unit_png16(torch.from_numpy(values), tmp_path / "c.png")
    with Image.open(path) as picture:
        assert picture.mode == "I;16" and picture.size == (4, 2)
        stored = np.array(picture)
    expected = np.array([[0, 65535, 32768, 21845], [16384, 0, 65535, 8091]])  # round(x * 65535) by hand
    np.testing.assert_array_equal(stored, expected)
    np.testing.assert_allclose(read_unit_png16(path), values, rtol=0, atol=0.5 / 65535 + 1e-9)
    clipped = save_unit_png16(np.array([[-0.5, 2.0]]), tmp_path / "clip.png")
    np.testing.assert_array_equal(np.array(Image.open(clipped)), [[0, 65535]])


@pytest.fixture
def checkpoint(tmp_path):
    model = tiny_model("fcn8s", len(CLASSES), score_std=SOFT_SCORES)
    return save_checkpoint(tmp_path / "model.safetensors", model, classes=CLASSES, palette=PALETTE)


def test_predict_writes_confidence_entropy_and_probabilities(tmp_path, checkpoint):
    picture = random_image(37, 41)
    Image.fromarray(picture.permute(1, 2, 0).numpy()).save(tmp_path / "photo.png")
    out = tmp_path / "out"
    code = main(
        [
            "predict",
            str(checkpoint),
            str(tmp_path / "photo.png"),
            "--out",
            str(out),
            "--device",
            "cpu",
            "--confidence",
            "--probabilities",
        ]
    )
    assert code == 0
    predictor, _ = fcnseg.inference.predictor.load_predictor(checkpoint, device="cpu")
    softmax = torch.softmax(predictor.logits(picture), dim=0).numpy()
    np.testing.assert_array_equal(np.array(Image.open(out / "photo.png")), predictor.mask(picture).numpy())
    np.testing.assert_allclose(read_unit_png16(out / "photo_confidence.png"), softmax.max(0), atol=1e-5)
    entropy = scipy.stats.entropy(softmax.astype(np.float64), axis=0) / math.log(len(CLASSES))
    np.testing.assert_allclose(read_unit_png16(out / "photo_entropy.png"), entropy, atol=2e-5)
    probabilities = np.load(out / "photo_probs.npy")
    assert probabilities.dtype == np.float16 and probabilities.shape == (4, 37, 41)
    np.testing.assert_allclose(probabilities, softmax, rtol=1e-3, atol=1e-4)
    assert not (out / "photo_mutual_info.png").exists()

    npy = tmp_path / "npy"
    code = main(
        [
            "predict",
            str(checkpoint),
            str(tmp_path / "photo.png"),
            "--out",
            str(npy),
            "--device",
            "cpu",
            "--confidence",
            "--confidence-format",
            "npy",
            "--mc-dropout",
            "2",
            "--seed",
            "3",
        ]
    )
    assert code == 0
    result = predictor.confidence(picture, mc_samples=2, seed=3)
    top1 = np.load(npy / "photo_confidence.npy")
    assert top1.dtype == np.float16 and top1.shape == (37, 41)
    np.testing.assert_allclose(top1, result.top1.numpy(), rtol=1e-3)
    np.testing.assert_allclose(
        np.load(npy / "photo_entropy.npy"), result.entropy.numpy() / math.log(4), rtol=1e-3, atol=1e-4
    )
    np.testing.assert_allclose(
        np.load(npy / "photo_mutual_info.npy"), result.mutual_information.numpy() / math.log(4), rtol=1e-3, atol=1e-4
    )
    np.testing.assert_array_equal(np.array(Image.open(npy / "photo.png")), result.mask.numpy())


def test_predict_refuses_colliding_outputs_and_bad_counts(tmp_path, checkpoint, capsys):
    picture = Image.fromarray(random_image(8, 8).permute(1, 2, 0).numpy())
    picture.save(tmp_path / "a.png")
    picture.save(tmp_path / "a_confidence.jpg")
    code = main(
        [
            "predict",
            str(checkpoint),
            str(tmp_path / "a.png"),
            str(tmp_path / "a_confidence.jpg"),
            "--out",
            str(tmp_path / "out"),
            "--confidence",
            "--device",
            "cpu",
        ]
    )
    assert code == 2 and "would both write" in capsys.readouterr().err
    code = main(
        ["predict", str(checkpoint), str(tmp_path / "a.png"), "--out", str(tmp_path / "out"), "--mc-dropout", "-1"]
    )
    error = capsys.readouterr().err
    assert code == 2 and "--mc-dropout must be a number of passes >= 0, got -1" in error and "Traceback" not in error


def test_predict_help_documents_the_encodings(capsys):
    with pytest.raises(SystemExit):
        main(["predict", "--help"])
    text = capsys.readouterr().out
    assert "round(x * 65535)" in text and "divided by ln C" in text and "float16 (C, H, W)" in text
