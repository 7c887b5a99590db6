"""int8 export: calibrated on the user's images, kept only when its masks agree with fp32, atomic, the CLI."""

from __future__ import annotations

import argparse
import importlib.util
import sys

import numpy as np
import pytest
import torch
from PIL import Image
from tiny_models import tiny_model

import fcnseg
from fcnseg.checkpoint import load_checkpoint, save_checkpoint

onnx = pytest.importorskip("onnx", reason="the export extra is not installed (pip install 'fcnseg[export]')")
ort = pytest.importorskip("onnxruntime", reason="the export extra is not installed (pip install 'fcnseg[export]')")

from fcnseg.export import int8 as quantize  # noqa: E402
from fcnseg.export.int8 import QuantizationError, calibration_folder, calibration_split, export_int8  # noqa: E402
from fcnseg.export.onnx import read_onnx_metadata  # noqa: E402

CLASSES = ["background", "disc", "square", "triangle"]
PALETTE = [(0, 0, 0), (128, 64, 128), (64, 0, 128), (128, 128, 128)]
HAS_NNCF = importlib.util.find_spec("nncf") is not None

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def centred_model(seed: int, images: list[torch.Tensor]) -> torch.nn.Module:
    """A tiny FCN-8s with random N(0, 0.5^2) score weights, centred on ``images`` so that every class wins somewhere."""
    model = tiny_model("fcn8s", len(CLASSES), seed=seed, score_std=0.5)
    with torch.no_grad():  # score_pool3's bias reaches the logits through the bilinear upsampling alone
        model.score_pool3.bias -= model(fcnseg.preprocess(torch.stack(images), model.preprocessing)).mean((0, 2, 3))
    return model


@pytest.fixture(scope="module")
def calibration():
    """Four labelled synthetic images (64 px): shapes on texture, the classes of the checkpoint."""
    return calibration_split("synthetic", None, "val", limit=4, num_images=4, size=64, classes=CLASSES)


@pytest.fixture(scope="module")
def checkpoint_path(tmp_path_factory, calibration):
    model = centred_model(0, calibration.images)
    return save_checkpoint(
        tmp_path_factory.mktemp("int8") / "model.safetensors", model, classes=CLASSES, palette=PALETTE
    )


def independent_agreement(int8_path, model, images) -> float:
    """fp32 torch vs the int8 file in ONNX Runtime, without the Predictor: pooled share of equal pixels."""
    session = ort.InferenceSession(str(int8_path), providers=["CPUExecutionProvider"])
    same = total = 0
    for image in images:
        blob = fcnseg.preprocess(image[None], model.preprocessing)
        with torch.no_grad():
            expected = model(blob)[0].argmax(0).numpy()
        actual = session.run(None, {"input": blob.numpy()})[0][0].argmax(0)
        same, total = same + int((actual == expected).sum()), total + expected.size
    return same / total


def mean_iu(predictions, labels, num_classes) -> float:
    """Mean IU by hand (numpy): classes present in labels or predictions, 255 ignored."""
    matrix = np.zeros((num_classes, num_classes), np.int64)
    for predicted, label in zip(predictions, labels, strict=True):
        keep = label.numpy() != 255
        np.add.at(matrix, (label.numpy()[keep], predicted.numpy()[keep]), 1)
    union = matrix.sum(0) + matrix.sum(1) - np.diag(matrix)
    present = union > 0
    return float((np.diag(matrix)[present] / union[present]).mean())


@pytest.mark.parametrize(
    "quantizer",
    [
        pytest.param("nncf", marks=pytest.mark.skipif(not HAS_NNCF, reason="nncf is not installed (fcnseg[int8])")),
        "onnxruntime",
    ],
)
def test_int8_export_is_kept_when_it_agrees_and_reports_agreement_and_mean_iu(
    tmp_path, checkpoint_path, calibration, quantizer
):
    out = tmp_path / "int8.onnx"
    # A random net has many near-ties between classes, which int8 flips: ~96% agreement here (a trained
    # one agrees far more, benchmarks/runtimes.py), so the threshold is 0.9.
    report = export_int8(
        checkpoint_path, out, calibration, quantizer=quantizer, exporter="torchscript", min_agreement=0.9
    )
    assert report.ok and out.is_file()
    graph = onnx.load(str(out)).graph
    assert any(node.op_type == "QuantizeLinear" for node in graph.node), "the file must be quantized"
    assert any(init.data_type == onnx.TensorProto.INT8 for init in graph.initializer), "int8 weights"
    metadata = read_onnx_metadata(out)
    assert metadata["classes"] == CLASSES and metadata["quantization"]["quantizer"] == quantizer
    assert metadata["quantization"]["images"] == 4

    model = load_checkpoint(checkpoint_path).model.eval()
    by_runtime = {a.runtime: a for a in report.agreements}
    assert by_runtime["onnxruntime"].pixels == pytest.approx(
        independent_agreement(out, model, calibration.images), abs=1e-9
    )
    assert min(a.pixels for a in report.agreements) >= 0.9
    with torch.no_grad():
        fp32_masks = [
            model(fcnseg.preprocess(image[None], model.preprocessing))[0].argmax(0) for image in calibration.images
        ]
    assert len(torch.cat([m.flatten() for m in fp32_masks]).unique()) == len(CLASSES), "every class must win somewhere"
    fp32_iu, _ = by_runtime["onnxruntime"].mean_iu
    assert fp32_iu == pytest.approx(mean_iu(fp32_masks, calibration.masks, len(CLASSES)), abs=1e-6)


def test_a_file_that_disagrees_with_fp32_is_refused_and_nothing_is_left(
    tmp_path, checkpoint_path, calibration, monkeypatch
):
    out = tmp_path / "int8.onnx"
    out.write_bytes(b"previous export")
    # The quantizer returns another network's graph: its masks cannot agree with the checkpoint's.
    impostor = save_checkpoint(
        tmp_path / "impostor.safetensors", centred_model(7, calibration.images), classes=CLASSES, palette=PALETTE
    )
    fcnseg.export.onnx.export_onnx(impostor, tmp_path / "impostor.onnx", exporter="torchscript")
    monkeypatch.setattr(quantize, "_quantize_onnxruntime", lambda *a: onnx.load(str(tmp_path / "impostor.onnx")))
    with pytest.raises(QuantizationError, match="(?s)does not agree with fp32.*onnxruntime: masks agree .*REFUSED"):
        export_int8(
            checkpoint_path,
            out,
            calibration,
            quantizer="onnxruntime",
            exporter="torchscript",
            runtimes=["onnxruntime"],
            min_agreement=0.9,
        )
    assert out.read_bytes() == b"previous export"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_an_impossible_threshold_refuses_and_leaves_nothing(tmp_path, checkpoint_path, calibration):
    # Every pixel equal is out of reach for int8 on this random net (near-ties everywhere).
    with pytest.raises(
        QuantizationError,
        match=r"(?s)was not written.*onnxruntime: masks agree with fp32 on 9\d\.\d\d% "
        r"of pixels \(worst image .*; need 100%\).*REFUSED",
    ):
        export_int8(
            checkpoint_path,
            tmp_path / "int8.onnx",
            calibration,
            quantizer="onnxruntime",
            exporter="torchscript",
            min_agreement=1.0,
        )
    assert list(tmp_path.iterdir()) == []


def test_a_threshold_outside_0_1_is_refused_before_any_work(tmp_path, checkpoint_path, calibration):
    for threshold in (0, 1.5):
        with pytest.raises(QuantizationError, match=rf"a fraction in \(0, 1\], got {threshold}"):
            export_int8(checkpoint_path, tmp_path / "int8.onnx", calibration, min_agreement=threshold)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(not HAS_NNCF, reason="nncf is not installed (fcnseg[int8])")
def test_accuracy_control_puts_layers_back_in_fp32_until_the_bar_is_met(tmp_path, checkpoint_path, calibration):
    # Plain NNCF int8 misses 99% on this random net (near-ties everywhere) and says what would help ...
    with pytest.raises(QuantizationError, match=r"(?s)REFUSED.*--accuracy-control keeps the layers"):
        export_int8(checkpoint_path, tmp_path / "plain.onnx", calibration, exporter="torchscript", min_agreement=0.99)
    # ... accuracy control reaches it, with some layers left in fp32, as an independent ONNX Runtime run confirms.
    out = tmp_path / "controlled.onnx"
    report = export_int8(
        checkpoint_path, out, calibration, exporter="torchscript", min_agreement=0.99, accuracy_control=True
    )
    assert report.ok and min(a.pixels for a in report.agreements) >= 0.99
    model = load_checkpoint(checkpoint_path).model.eval()
    assert independent_agreement(out, model, calibration.images) >= 0.99
    left, layers = report.fp32_layers
    assert 0 < left < layers, "some layers back in fp32, not all of them"
    assert quantize.count_fp32_layers(onnx.load(str(out))) == (left, layers)
    assert read_onnx_metadata(out)["quantization"]["accuracy_control"] is True


def test_count_fp32_layers_by_hand():
    from onnx import TensorProto, helper

    def conv(name, weight):
        return helper.make_node("Conv", ["x", weight], [name])

    nodes = [
        helper.make_node("DequantizeLinear", ["w_q", "s"], ["w_dq"]),
        conv("a", "w_dq"),
        conv("b", "w_fp32"),
        helper.make_node("Relu", ["a"], ["r"]),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 1, 1])],
        [helper.make_tensor_value_info("b", TensorProto.FLOAT, [1, 1, 1, 1])],
    )
    assert quantize.count_fp32_layers(helper.make_model(graph)) == (1, 2)


def write_images(folder, sizes):
    folder.mkdir()
    generator = np.random.default_rng(0)
    for index, (height, width) in enumerate(sizes):
        Image.fromarray(generator.integers(0, 256, (height, width, 3), dtype=np.uint8)).save(folder / f"img{index}.png")
    (folder / "notes.txt").write_text("not an image")


def test_calibration_from_a_folder_spreads_over_its_images(tmp_path):
    write_images(tmp_path / "photos", [(20 + i, 30) for i in range(6)])
    everything = calibration_folder(tmp_path / "photos", limit=None)
    assert [tuple(image.shape) for image in everything.images] == [(3, 20 + i, 30) for i in range(6)]
    assert everything.masks is None
    three = calibration_folder(tmp_path / "photos", limit=3)
    assert [image.shape[1] for image in three.images] == [20, 22, 24]  # images 0, 2, 4 of the sorted six
    with pytest.raises(ValueError, match="not a folder of images"):
        calibration_folder(tmp_path / "absent")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="holds no image files"):
        calibration_folder(tmp_path / "empty")


def run_cli(argv: list[str]) -> int:
    from fcnseg.commands import export as command

    parser = argparse.ArgumentParser(prog="fcnseg")
    command.add_parser(parser.add_subparsers(dest="command", required=True))
    return command.run(parser.parse_args(["export", *argv]))


def test_cli_int8_from_a_folder_of_images_of_different_sizes(tmp_path, checkpoint_path, capsys):
    write_images(tmp_path / "photos", [(40, 50), (33, 61), (64, 64)])
    out = tmp_path / "int8.onnx"
    code = run_cli(
        [
            str(checkpoint_path),
            "--out",
            str(out),
            "--int8",
            "--calibrate",
            str(tmp_path / "photos"),
            "--quantizer",
            "onnxruntime",
            "--exporter",
            "torchscript",
        ]
    )
    printed = capsys.readouterr().out
    assert code == 0 and out.is_file(), printed
    assert "calibrated on 3 images" in printed and "onnxruntime: masks agree with fp32 on" in printed
    assert "mean IU" not in printed  # unlabelled images


def test_cli_int8_errors_are_one_line(tmp_path, checkpoint_path, capsys, monkeypatch):
    out = str(tmp_path / "int8.onnx")
    cases = [
        ([str(checkpoint_path), "--out", out, "--int8"], 2, "--int8 needs --calibrate"),
        ([str(checkpoint_path), "--out", out, "--calibrate", str(tmp_path)], 2, "--calibrate is for --int8"),
        (
            [str(checkpoint_path), "--out", out, "--int8", "--calibrate", str(tmp_path / "nothing")],
            2,
            "not a folder of images",
        ),
        (
            [
                str(checkpoint_path),
                "--out",
                out,
                "--int8",
                "--calibrate",
                "val",
                "--calibrate-data",
                "synthetic",
                "--calibrate-option",
                "num_images=2",
                "--calibrate-option",
                "num_classes=3",
            ],
            2,
            "predicts 4 classes but the dataset has 3",
        ),
        (
            [
                str(checkpoint_path),
                "--out",
                out,
                "--int8",
                "--calibrate",
                "val",
                "--calibrate-data",
                "synthetic",
                "--method",
                "percentile",
            ],
            2,
            "the nncf quantizer has methods performance, mixed, not 'percentile'",
        ),
        (
            [
                str(checkpoint_path),
                "--out",
                out,
                "--int8",
                "--calibrate",
                "val",
                "--calibrate-data",
                "synthetic",
                "--quantizer",
                "onnxruntime",
                "--accuracy-control",
            ],
            2,
            "--accuracy-control is NNCF's",
        ),
    ]
    for argv, expected_code, message in cases:
        assert run_cli(argv) == expected_code
        error = capsys.readouterr().err
        assert message in error and error.count("\n") == 1, error
    monkeypatch.setitem(sys.modules, "nncf", None)  # as if the int8 extra were not installed
    write_images(tmp_path / "photos", [(32, 32)])
    assert (
        run_cli(
            [
                str(checkpoint_path),
                "--out",
                out,
                "--int8",
                "--calibrate",
                str(tmp_path / "photos"),
                "--exporter",
                "torchscript",
            ]
        )
        == 1
    )
    error = capsys.readouterr().err
    assert "the nncf quantizer needs the 'int8' extra: pip install 'fcnseg[int8]'" in error and error.count("\n") == 1
    assert not (tmp_path / "int8.onnx").exists()


def activation_scales(path) -> dict[str, float]:
    graph = onnx.load(str(path)).graph
    values = {init.name: onnx.numpy_helper.to_array(init) for init in graph.initializer}
    return {
        node.input[0]: float(values[node.input[1]])
        for node in graph.node
        if node.op_type == "QuantizeLinear" and values[node.input[1]].size == 1
    }


def test_onnxruntime_percentile_calibration_clips_ranges_that_minmax_keeps(tmp_path, checkpoint_path, calibration):
    scales = {}
    for method in ("minmax", "percentile"):
        report = export_int8(
            checkpoint_path,
            tmp_path / f"{method}.onnx",
            calibration,
            quantizer="onnxruntime",
            method=method,
            exporter="torchscript",
            min_agreement=0.9,
        )
        assert report.ok and read_onnx_metadata(tmp_path / f"{method}.onnx")["quantization"]["method"] == method
        scales[method] = activation_scales(tmp_path / f"{method}.onnx")
    assert scales["minmax"].keys() == scales["percentile"].keys()
    # A percentile range lies inside the min-max range: never a larger scale, and smaller somewhere.
    assert all(scales["percentile"][k] <= scales["minmax"][k] * (1 + 1e-6) for k in scales["minmax"])
    assert any(scales["percentile"][k] < scales["minmax"][k] * 0.99 for k in scales["minmax"])


def test_camvid_calibration_split_with_resize(camvid_root):
    calibration = calibration_split("folder", str(camvid_root), "train", limit=2, resize=[90, 120])
    assert [tuple(image.shape) for image in calibration.images] == [(3, 90, 120)] * 2
    assert calibration.classes[:2] == ["sky", "building"] and calibration.masks[0].shape == (90, 120)


def refusing_session(path, dtype, threads):
    """An ONNX Runtime that refuses the file's nodes, as it does NNCF's int8 MobileNetV3 (per-channel zero points)."""
    raise RuntimeError("QLinearConv : input zero point must be a scalar or 1D tensor of size 1")


@pytest.mark.skipif(importlib.util.find_spec("openvino") is None, reason="openvino is not installed (fcnseg[runtimes])")
def test_a_file_one_runtime_cannot_run_is_kept_for_the_runtime_that_agrees(
    tmp_path, checkpoint_path, calibration, monkeypatch
):
    from fcnseg.inference import runtimes

    monkeypatch.setitem(runtimes._SESSIONS, "onnxruntime", refusing_session)
    out = tmp_path / "int8.onnx"
    report = export_int8(
        checkpoint_path,
        out,
        calibration,
        quantizer="onnxruntime",
        exporter="torchscript",
        runtimes=["openvino", "onnxruntime"],
        min_agreement=0.9,
    )
    assert report.ok and out.is_file()
    assert [a.runtime for a in report.ran] == ["openvino"]
    refused = report.agreements[1]
    assert refused.runtime == "onnxruntime" and "input zero point" in refused.describe(0.9)
    assert "not for this runtime" in refused.describe(0.9)


def test_a_file_no_runtime_can_run_is_refused_and_nothing_is_left(tmp_path, checkpoint_path, calibration, monkeypatch):
    from fcnseg.inference import runtimes

    monkeypatch.setitem(runtimes._SESSIONS, "onnxruntime", refusing_session)
    with pytest.raises(QuantizationError, match="(?s)cannot be run by any installed runtime.*input zero point"):
        export_int8(
            checkpoint_path,
            tmp_path / "int8.onnx",
            calibration,
            quantizer="onnxruntime",
            exporter="torchscript",
            runtimes=["onnxruntime"],
            min_agreement=0.9,
        )
    assert list(tmp_path.iterdir()) == []
