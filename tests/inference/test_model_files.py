"""load_model_file: the one place that decides between a checkpoint and an ONNX export, and its runtime."""

from __future__ import annotations

import importlib.util

import pytest
import torch
from tiny_models import tiny_model

from fcnseg.checkpoint import save_checkpoint
from fcnseg.inference.predictor import load_predictor

pytest.importorskip("onnxruntime", reason="the export extra is not installed (pip install 'fcnseg[export]')")

from fcnseg.export.onnx import export_onnx  # noqa: E402
from fcnseg.inference.runtimes import OnnxModel, RuntimeBackendError, load_model_file  # noqa: E402

CLASSES = ["background", "road", "car", "sky"]
PALETTE = [(0, 0, 0), (128, 64, 128), (64, 0, 128), (128, 128, 128)]

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """(checkpoint path, ONNX path) of one tiny model."""
    folder = tmp_path_factory.mktemp("model_files")
    checkpoint = save_checkpoint(
        folder / "model.safetensors",
        tiny_model("fcn32s", len(CLASSES), score_std=1.0),
        classes=CLASSES,
        palette=PALETTE,
    )
    export_onnx(checkpoint, folder / "model.onnx", exporter="torchscript", check_shapes=[(1, 3, 32, 32)])
    return checkpoint, folder / "model.onnx"


def test_a_checkpoint_runs_in_torch_with_the_dtype_asked_for(files):
    checkpoint, _ = files
    loaded, dtype = load_model_file(checkpoint, dtype="bfloat16")
    assert isinstance(loaded.model, torch.nn.Module) and not isinstance(loaded.model, OnnxModel)
    assert loaded.classes == CLASSES and dtype == "bfloat16"  # the Predictor autocasts


def test_an_export_runs_in_its_runtime_and_the_predictor_in_float32(files):
    _, onnx_path = files
    loaded, dtype = load_model_file(onnx_path, "onnxruntime", device="cpu")
    assert isinstance(loaded.model, OnnxModel) and loaded.model.runtime == "onnxruntime"
    assert loaded.classes == CLASSES and loaded.palette == PALETTE and dtype == "float32"
    with pytest.raises(RuntimeBackendError, match="runs on the CPU"):
        load_model_file(onnx_path, "onnxruntime", device="cuda")
    with pytest.raises(RuntimeBackendError, match="not an .onnx file"):
        load_model_file(files[0], "onnxruntime")


@pytest.mark.skipif(importlib.util.find_spec("openvino") is None, reason="openvino is not installed (fcnseg[runtimes])")
def test_bfloat16_goes_to_the_runtime_not_the_predictor_in_predict_and_serve(files):
    """fcnseg predict/eval (load_predictor) and fcnseg serve (create_app) load an export the same way."""
    _, onnx_path = files
    loaded, dtype = load_model_file(onnx_path, "openvino", dtype="bfloat16")
    assert loaded.model.dtype == "bfloat16" and dtype == "float32"
    predictor, _ = load_predictor(onnx_path, runtime="openvino", dtype="bfloat16")
    predictors = [predictor]
    if importlib.util.find_spec("fastapi") is not None:
        from fcnseg.serve import create_app

        predictors.append(create_app(onnx_path, runtime="openvino", dtype="bfloat16").state.segmenter.predictor)
    for each in predictors:
        assert each.model.dtype == "bfloat16" and each.amp_dtype is None
