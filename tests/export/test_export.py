"""ONNX export: parity with PyTorch at odd sizes, metadata, refusal of a bad export, the CLI."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from tiny_models import tiny_model

import fcnseg
from fcnseg.checkpoint import load_checkpoint, save_checkpoint

onnx = pytest.importorskip("onnx", reason="the export extra is not installed (pip install 'fcnseg[export]')")
ort = pytest.importorskip("onnxruntime", reason="the export extra is not installed (pip install 'fcnseg[export]')")

from fcnseg.export import onnx as export_module  # noqa: E402
from fcnseg.export.onnx import ExportError, export_onnx, read_onnx_metadata  # noqa: E402

CLASSES = ["background", "road", "car", "sky"]
PALETTE = [(0, 0, 0), (128, 64, 128), (64, 0, 128), (128, 128, 128)]
#: The test models' score layers, weights and biases, are random N(0, 0.5^2): every skip and crop shapes the logits.
SCORES = {"score_std": 0.5, "score_bias_std": 0.5}
#: Sizes the test checks on its own, none of them among the exporter's check shapes.
TEST_SHAPES = [(1, 3, 1, 1), (1, 3, 33, 97), (2, 3, 50, 31)]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def save(model: torch.nn.Module, path):
    return save_checkpoint(path, model, classes=CLASSES, palette=PALETTE)


def assert_onnx_matches(model: torch.nn.Module, path, shapes=TEST_SHAPES) -> None:
    """Independent of the exporter's own check: ORT vs PyTorch on other sizes, same stated tolerance."""
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for shape in shapes:
        blob = fcnseg.preprocess(torch.randint(0, 256, shape, dtype=torch.uint8), model.preprocessing)
        with torch.no_grad():
            expected = model(blob).numpy()
        (actual,) = session.run(None, {"input": blob.numpy()})
        assert actual.shape == expected.shape == (shape[0], len(CLASSES), *shape[2:])
        max_logit = np.abs(expected).max()
        assert max_logit > 0.1, "the model must produce non-trivial logits for the test to mean anything"
        assert np.abs(actual - expected).max() <= 1e-4 * max_logit + 1e-5, shape
        assert (actual.argmax(1) == expected.argmax(1)).mean() >= 0.999, shape


@pytest.mark.parametrize(
    "name, exporter",
    [
        ("fcn32s", "dynamo"),
        ("fcn8s", "dynamo"),
        ("fcn32s", "torchscript"),
        ("fcn16s", "torchscript"),
        ("fcn8s", "torchscript"),
        ("fcn8s_atonce", "torchscript"),
        pytest.param("fcn16s", "dynamo", marks=pytest.mark.slow),
        pytest.param("fcn8s_atonce", "dynamo", marks=pytest.mark.slow),
    ],
)
def test_export_matches_pytorch_at_odd_sizes(tmp_path, name, exporter):
    model = tiny_model(name, len(CLASSES), **SCORES)
    checkpoint = save(model, tmp_path / "model.safetensors")
    out = tmp_path / "model.onnx"
    report = export_onnx(checkpoint, out, exporter=exporter)
    assert report.ok and out.is_file()
    assert [r.shape for r in report.results] == list(export_module.DEFAULT_CHECK_SHAPES)
    graph = onnx.load(str(out)).graph
    for value in (graph.input[0], graph.output[0]):
        dims = [d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim]
        assert dims == ["batch", 3 if value is graph.input[0] else len(CLASSES), "height", "width"]
    assert_onnx_matches(model, out)


def test_metadata_reproduces_predict_mask_with_onnxruntime_alone(tmp_path):
    from fcnseg.predict.images import predict_mask

    model = tiny_model(
        "fcn16s", len(CLASSES), **SCORES, preprocessing=fcnseg.CAFFE
    )  # not the default, so it must travel
    out = tmp_path / "model.onnx"
    export_onnx(save(model, tmp_path / "m.safetensors"), out, exporter="torchscript")

    metadata = read_onnx_metadata(out)
    assert metadata["classes"] == CLASSES
    assert metadata["palette"] == PALETTE
    assert metadata["preprocessing"] == fcnseg.CAFFE
    assert metadata["ignore_index"] == 255
    assert metadata["model"]["name"] == "fcn16s"

    # A consumer with onnxruntime only: the metadata is plain JSON.
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    props = session.get_modelmeta().custom_metadata_map
    assert json.loads(props["classes"]) == CLASSES
    spec = json.loads(props["preprocessing"])
    assert spec["channel_order"] == "BGR" and spec["mean"] == list(fcnseg.CAFFE.mean)

    image = torch.randint(0, 256, (3, 45, 71), dtype=torch.uint8)
    blob = fcnseg.preprocess(image[None], metadata["preprocessing"]).numpy()
    (logits,) = session.run(None, {"input": blob})
    onnx_mask = torch.from_numpy(logits[0].argmax(0))
    torch_mask = predict_mask(load_checkpoint(tmp_path / "m.safetensors").model, image)
    assert (onnx_mask == torch_mask).float().mean() >= 0.999


def test_mismatching_export_is_refused_and_not_written(tmp_path, monkeypatch):
    model = tiny_model("fcn32s", len(CLASSES), **SCORES)
    checkpoint = save(model, tmp_path / "model.safetensors")
    out = tmp_path / "model.onnx"
    out.write_bytes(b"previous export")

    # The graph of a differently initialised model: ORT then disagrees with the checkpoint's model.
    real_export = export_module._export_proto
    impostor = tiny_model("fcn32s", len(CLASSES), seed=1, **SCORES)  # other weights than the seed-0 model
    monkeypatch.setattr(export_module, "_export_proto", lambda m, *a: real_export(impostor, *a))
    with pytest.raises(ExportError, match="(?s)does not reproduce PyTorch.*MISMATCH"):
        export_onnx(checkpoint, out, exporter="torchscript")
    assert out.read_bytes() == b"previous export"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temporary left behind


def main(argv: list[str]) -> int:
    """``fcnseg export ...`` through the command module's own parser (as fcnseg.cli registers it)."""
    import argparse

    from fcnseg.commands import export as command

    parser = argparse.ArgumentParser(prog="fcnseg")
    command.add_parser(parser.add_subparsers(dest="command", required=True))
    return command.run(parser.parse_args(argv))


def test_export_is_registered_in_the_cli():
    from fcnseg.cli import COMMAND_MODULES

    assert "export" in COMMAND_MODULES


def test_cli_exports_and_reports_tolerance(tmp_path, capsys):
    checkpoint = save(tiny_model("fcn8s", len(CLASSES), **SCORES), tmp_path / "model.safetensors")
    out = tmp_path / "exported" / "fcn8s.onnx"
    code = main(
        [
            "export",
            str(checkpoint),
            "--format",
            "onnx",
            "--out",
            str(out),
            "--exporter",
            "torchscript",
            "--check-shape",
            "1x3x19x23",
        ]
    )
    printed = capsys.readouterr().out
    assert code == 0 and out.is_file()
    assert "1x3x19x23" in printed and "-> ok" in printed and "0.0001 * max|logit| + 1e-05" in printed


def test_cli_fails_on_impossible_tolerance_and_bad_input(tmp_path, capsys):
    checkpoint = save(tiny_model("fcn32s", len(CLASSES), **SCORES), tmp_path / "model.safetensors")
    out = tmp_path / "model.onnx"
    # Agreement above 100% cannot be met: the export must fail and leave nothing.
    code = main(
        ["export", str(checkpoint), "--out", str(out), "--exporter", "torchscript", "--min-mask-agreement", "1.5"]
    )
    assert code == 1 and not out.exists()
    assert "was not written" in capsys.readouterr().err

    not_a_checkpoint = tmp_path / "notes.safetensors"
    not_a_checkpoint.write_text("hello")
    assert main(["export", str(not_a_checkpoint), "--out", str(out)]) == 2
    assert "not an fcnseg checkpoint" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["export", str(checkpoint), "--out", str(out), "--check-shape", "1x1x5x5"])


def test_read_metadata_rejects_foreign_files(tmp_path):
    plain = onnx.helper.make_model(
        onnx.helper.make_graph(
            [onnx.helper.make_node("Identity", ["x"], ["y"])],
            "g",
            [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1])],
            [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1])],
        )
    )
    onnx.save(plain, str(tmp_path / "plain.onnx"))
    with pytest.raises(ExportError, match="not an fcnseg export"):
        read_onnx_metadata(tmp_path / "plain.onnx")
    (tmp_path / "junk.onnx").write_bytes(b"\x00junk")
    with pytest.raises(ExportError, match="not an ONNX model"):
        read_onnx_metadata(tmp_path / "junk.onnx")


def test_core_import_does_not_load_optional_extras():
    code = (
        "import sys, argparse, fcnseg, fcnseg.cli, fcnseg.commands.export as e, fcnseg.commands.serve as s; "
        "sub = argparse.ArgumentParser().add_subparsers(); e.add_parser(sub); s.add_parser(sub); "
        "print(sorted(m for m in sys.modules "
        "if m.split('.')[0] in ('onnx', 'onnxruntime', 'onnxscript', 'fastapi', 'uvicorn')))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def test_missing_extra_gives_install_hint(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # makes `import onnxruntime` fail
    with pytest.raises(ExportError, match=r"pip install 'fcnseg\[export\]'"):
        export_onnx(save(tiny_model("fcn32s", len(CLASSES), **SCORES), tmp_path / "m.safetensors"), tmp_path / "m.onnx")
