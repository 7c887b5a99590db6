"""Prediction: sizes, preprocessing, palette PNGs, overlays, and the ``fcnseg predict`` command."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from tiny_models import TINY_CLASSES as CLASSES
from tiny_models import TINY_PALETTE as PALETTE
from tiny_models import tiny_model

import fcnseg
from fcnseg.cli import main
from fcnseg.predict.images import (
    ImageError,
    list_images,
    load_image,
    overlay_image,
    predict_logits,
    predict_mask,
    save_mask_png,
)


def random_image(height: int, width: int) -> torch.Tensor:
    return torch.randint(0, 256, (3, height, width), dtype=torch.uint8)


@pytest.mark.parametrize("height,width", [(1, 1), (37, 53), (65, 31), (100, 3)])
def test_mask_and_logits_have_the_input_size(height, width):
    model = tiny_model("fcn8s", len(CLASSES), score_std=1.0)
    image = random_image(height, width)
    logits = predict_logits(model, image)
    mask = predict_mask(model, image)
    assert logits.shape == (3, height, width) and logits.dtype == torch.float32
    assert mask.shape == (height, width) and mask.dtype == torch.int64
    assert torch.equal(mask, logits.argmax(0))


def test_prediction_applies_the_models_preprocessing():
    # Independent reference: the Caffe convention written out by hand (BGR, 0..255, minus the mean).
    model = tiny_model("fcn8s", len(CLASSES), score_std=1.0).eval()
    model.preprocessing = fcnseg.CAFFE
    image = random_image(40, 44)
    bgr = image.flip(0).float() - torch.tensor([104.00698793, 116.66876762, 122.67891434]).view(3, 1, 1)
    with torch.no_grad():
        expected = model(bgr.unsqueeze(0))[0]
    torch.testing.assert_close(predict_logits(model, image), expected, rtol=1e-5, atol=1e-4)
    model.preprocessing = fcnseg.TORCHVISION
    assert not torch.allclose(predict_logits(model, image), expected, atol=1e-2)


def test_prediction_runs_in_eval_mode_and_restores_training_mode():
    model = tiny_model("fcn8s", len(CLASSES), score_std=1.0).train()  # dropout active in training mode
    image = random_image(48, 48)
    first, second = predict_logits(model, image), predict_logits(model, image)
    assert torch.equal(first, second)  # no dropout during prediction
    assert model.training
    assert not torch.is_inference_mode_enabled()


def test_mask_png_is_a_palette_image_of_class_ids(tmp_path):
    mask = torch.tensor([[0, 1, 2], [2, 1, 0]])
    path = save_mask_png(mask, PALETTE, tmp_path / "m.png")
    with Image.open(path) as picture:
        assert picture.mode == "P" and picture.size == (3, 2)
        np.testing.assert_array_equal(np.array(picture), mask.numpy())
        assert picture.getpalette()[:9] == [0, 0, 0, 200, 30, 30, 20, 180, 60]
    with pytest.raises(ValueError, match="0..255"):
        save_mask_png(torch.tensor([[256]]), PALETTE, tmp_path / "bad.png")


def test_overlay_blends_towards_the_class_colour_and_keeps_ignored_pixels():
    image = torch.tensor([[[100, 100]], [[100, 100]], [[100, 100]]], dtype=torch.uint8)  # (3, 1, 2) grey
    mask = torch.tensor([[1, 255]])
    picture = np.array(overlay_image(image, mask, PALETTE, alpha=0.25))
    # 0.75 * 100 + 0.25 * (200, 30, 30) = (125, 82.5, 82.5) -> rounded half to even
    assert picture[0, 0].tolist() == [125, 82, 82]
    assert picture[0, 1].tolist() == [100, 100, 100]  # 255 has no colour: the image shows through
    # taller than one band of rows: every band blended the same way
    image = random_image(600, 7)
    mask = torch.randint(0, 3, (600, 7))
    mask[::5] = 255
    colours = np.array(PALETTE + [(0, 0, 0)] * 253, dtype=np.float64)[mask.numpy()]
    expected = np.rint(0.6 * image.permute(1, 2, 0).numpy() + 0.4 * colours)
    expected[::5] = image.permute(1, 2, 0).numpy()[::5]
    np.testing.assert_array_equal(np.array(overlay_image(image, mask, PALETTE, alpha=0.4)), expected)


def test_load_image_gives_rgb_and_names_bad_files(tmp_path):
    Image.new("L", (5, 4), 77).save(tmp_path / "grey.png")
    image = load_image(tmp_path / "grey.png")
    assert image.shape == (3, 4, 5) and image.dtype == torch.uint8 and bool((image == 77).all())
    (tmp_path / "junk.jpg").write_bytes(b"not an image at all")
    with pytest.raises(ImageError, match="junk.jpg"):
        load_image(tmp_path / "junk.jpg")
    Image.new("RGB", (64, 64), (1, 2, 3)).save(tmp_path / "full.png")
    (tmp_path / "cut.png").write_bytes((tmp_path / "full.png").read_bytes()[:60])
    with pytest.raises(ImageError, match="cut.png"):
        load_image(tmp_path / "cut.png")
    with pytest.raises(ImageError, match="missing.png"):
        load_image(tmp_path / "missing.png")


def test_list_images_expands_folders_and_globs(tmp_path):
    for name in ("b.png", "a.jpg", "notes.txt"):
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "c.png").write_bytes(b"x")
    paths, problems, skipped = list_images(
        [tmp_path, str(tmp_path / "sub" / "*.png"), tmp_path / "a.jpg", "nowhere/*.png"]
    )
    assert [p.name for p in paths] == ["a.jpg", "b.png", "c.png"]  # folder sorted, glob, duplicate dropped
    assert len(problems) == 1 and "nowhere/*.png" in problems[0]
    assert sorted(reason.split(":")[0].rsplit("/", 1)[-1] for reason in skipped) == ["notes.txt", "sub"]


def test_a_folder_scan_names_every_entry_it_does_not_predict(tmp_path):
    import os

    (tmp_path / "good.png").write_bytes(b"x")
    (tmp_path / "anim.gif").write_bytes(b"GIF89a")
    (tmp_path / "x.jpg").mkdir()
    (tmp_path / "gone.png").symlink_to(tmp_path / "nowhere.png")
    os.mkfifo(tmp_path / "pipe.png")
    paths, problems, skipped = list_images([tmp_path])
    assert [p.name for p in paths] == ["good.png"]
    reasons = {Path(r.split(": ")[0]).name: r.split(": ", 1)[1] for r in problems + skipped}
    assert reasons == {
        "anim.gif": reasons["anim.gif"],
        "x.jpg": "a folder, not an image",
        "gone.png": "a link to nothing",
        "pipe.png": "not a regular file, not an image",
    }
    assert "not an image file name" in reasons["anim.gif"]


def test_predict_refuses_a_decompression_bomb_from_its_header(tmp_path, tiny_checkpoint, capsys):
    import subprocess
    import sys

    # A 65000x65000 JPEG header over almost no data: 48 KB that would decode to 12.7 GB.
    from PIL import Image as PILImage

    small = tmp_path / "small.jpg"
    PILImage.new("RGB", (16, 16)).save(small, quality=50)
    data = bytearray(small.read_bytes())
    marker = data.index(b"\xff\xc0")  # SOF0: [marker 2][length 2][precision 1][height 2][width 2]
    data[marker + 5 : marker + 9] = (65000).to_bytes(2, "big") * 2
    bomb = tmp_path / "bomb.jpg"
    bomb.write_bytes(bytes(data))
    code = (
        f"import resource, sys; from fcnseg.cli import main; "
        f"rc = main(['predict', {str(tiny_checkpoint)!r}, {str(bomb)!r}, '--out', {str(tmp_path / 'out')!r}]); "
        f"print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss); sys.exit(rc)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 1, done.stderr
    assert "bomb.jpg" in done.stderr and "65000x65000" in done.stderr.replace(" x ", "x")
    peak_kib = int(done.stdout.strip().splitlines()[-1])
    assert peak_kib < 2 * 2**20, f"peak RSS {peak_kib / 2**20:.1f} GiB"  # refused from the header, never decoded


def test_predict_command_writes_masks_and_overlays_and_reports_bad_images(tmp_path, tiny_checkpoint, capsys):
    inputs = tmp_path / "in"
    inputs.mkdir()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (33, 47, 3), dtype=np.uint8)).save(inputs / "one.png")
    Image.fromarray(np.random.default_rng(1).integers(0, 255, (20, 9, 3), dtype=np.uint8)).save(inputs / "two.jpg")
    (inputs / "broken.png").write_bytes(b"\x89PNG garbage")
    out = tmp_path / "out"
    code = main(["predict", str(tiny_checkpoint), str(inputs), "--out", str(out), "--overlay", "--device", "cpu"])
    assert code == 1  # the bad image makes the run fail, after the good ones were written
    err = capsys.readouterr().err
    assert "broken.png" in err
    for stem, size in (("one", (47, 33)), ("two", (9, 20))):
        with Image.open(out / f"{stem}.png") as mask:
            assert mask.mode == "P" and mask.size == size
            assert int(np.array(mask).max()) < len(CLASSES)
        with (
            Image.open(out / f"{stem}_overlay.png") as overlay,
            Image.open(inputs / f"{stem}.{'png' if stem == 'one' else 'jpg'}"),
        ):
            # the overlay of the image, and below it a legend band naming the classes present
            assert overlay.mode == "RGB" and overlay.width == size[0] and overlay.height > size[1]
            present = np.unique(np.array(Image.open(out / f"{stem}.png")))
            legend = np.array(overlay)[size[1] :]
            for class_id in present:  # every class present has its colour swatch in the band
                assert (legend == PALETTE[class_id]).all(axis=-1).any(), class_id
    assert not (out / "broken.png").exists()
    # the mask equals the library's prediction for the same file
    model = fcnseg.checkpoint.load_checkpoint(tiny_checkpoint).model
    expected = predict_mask(model, load_image(inputs / "one.png"))
    np.testing.assert_array_equal(np.array(Image.open(out / "one.png")), expected.numpy())
    # the plain module (no exact fast paths) gives the same masks
    assert (
        main(
            [
                "predict",
                str(tiny_checkpoint),
                str(inputs / "one.png"),
                "--out",
                str(tmp_path / "plain"),
                "--no-fast-paths",
            ]
        )
        == 0
    )
    np.testing.assert_array_equal(np.array(Image.open(tmp_path / "plain" / "one.png")), expected.numpy())


def test_predict_command_runs_the_fast_paths_unless_told_not_to(tmp_path, tiny_checkpoint, monkeypatch):
    import fcnseg.inference.predictor as inference

    built = []
    original = inference.Predictor.__init__

    def recording(self, model, **options):
        original(self, model, **options)
        built.append(self.model.fast_paths)

    monkeypatch.setattr(inference.Predictor, "__init__", recording)
    Image.fromarray(np.random.default_rng(3).integers(0, 255, (40, 52, 3), dtype=np.uint8)).save(tmp_path / "a.png")
    assert main(["predict", str(tiny_checkpoint), str(tmp_path / "a.png"), "--out", str(tmp_path / "fast")]) == 0
    assert (
        main(
            [
                "predict",
                str(tiny_checkpoint),
                str(tmp_path / "a.png"),
                "--out",
                str(tmp_path / "plain"),
                "--no-fast-paths",
            ]
        )
        == 0
    )
    assert built == [True, False]
    np.testing.assert_array_equal(
        np.array(Image.open(tmp_path / "fast" / "a.png")), np.array(Image.open(tmp_path / "plain" / "a.png"))
    )


def test_predict_command_tiles_when_asked_and_gives_the_same_mask(tmp_path, tiny_checkpoint):
    Image.fromarray(np.random.default_rng(2).integers(0, 255, (32, 600, 3), dtype=np.uint8)).save(tmp_path / "wide.png")
    assert main(["predict", str(tiny_checkpoint), str(tmp_path / "wide.png"), "--out", str(tmp_path / "whole")]) == 0
    assert (
        main(
            [
                "predict",
                str(tiny_checkpoint),
                str(tmp_path / "wide.png"),
                "--out",
                str(tmp_path / "tiled"),
                "--tile-size",
                "192",
            ]
        )
        == 0
    )
    np.testing.assert_array_equal(
        np.array(Image.open(tmp_path / "whole" / "wide.png")), np.array(Image.open(tmp_path / "tiled" / "wide.png"))
    )


def test_predict_command_rejects_a_file_that_is_not_a_checkpoint(tmp_path, capsys):
    bogus = tmp_path / "bogus.safetensors"
    bogus.write_bytes(b"definitely not safetensors")
    Image.new("RGB", (8, 8)).save(tmp_path / "x.png")
    assert main(["predict", str(bogus), str(tmp_path / "x.png"), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "bogus.safetensors" in err and "not an fcnseg checkpoint" in err and "Traceback" not in err


def test_predict_command_rejects_a_memory_budget_too_small_for_one_tile(tmp_path, tiny_checkpoint, capsys):
    Image.new("RGB", (8, 8)).save(tmp_path / "x.png")
    code = main(
        [
            "predict",
            str(tiny_checkpoint),
            str(tmp_path / "x.png"),
            "--out",
            str(tmp_path / "o"),
            "--memory-budget-mb",
            "1",
        ]
    )
    assert code == 2 and "too small" in capsys.readouterr().err
