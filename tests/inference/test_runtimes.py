"""Runtime backends: an ONNX export run by ONNX Runtime or OpenVINO through the one Predictor equals torch."""

from __future__ import annotations

import importlib.util
import sys

import numpy as np
import pytest
import torch
from tiny_models import tiny_model

import fcnseg
from fcnseg.checkpoint import load_checkpoint, save_checkpoint
from fcnseg.inference.predictor import Predictor, load_predictor

onnx = pytest.importorskip("onnx", reason="the export extra is not installed (pip install 'fcnseg[export]')")
pytest.importorskip("onnxruntime", reason="the export extra is not installed (pip install 'fcnseg[export]')")

from fcnseg.export.onnx import export_onnx  # noqa: E402
from fcnseg.inference.runtimes import OnnxModel, RuntimeBackendError, resolve_runtime  # noqa: E402

CLASSES = ["background", "road", "car", "sky"]
PALETTE = [(0, 0, 0), (128, 64, 128), (64, 0, 128), (128, 128, 128)]
RUNTIMES = [
    "onnxruntime",
    pytest.param(
        "openvino",
        marks=pytest.mark.skipif(
            importlib.util.find_spec("openvino") is None, reason="openvino is not installed (fcnseg[runtimes])"
        ),
    ),
]

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """(checkpoint path, onnx path) of one tiny FCN-8s, exported once for the module."""
    folder = tmp_path_factory.mktemp("runtime")
    # random score layers, weights and biases: every skip and crop shapes the logits
    model = tiny_model("fcn8s", len(CLASSES), seed=1, score_std=0.5, score_bias_std=0.5)
    checkpoint = save_checkpoint(folder / "model.safetensors", model, classes=CLASSES, palette=PALETTE)
    export_onnx(checkpoint, folder / "model.onnx", exporter="torchscript")
    return checkpoint, folder / "model.onnx"


def assert_close(actual: torch.Tensor, expected: torch.Tensor) -> None:
    """The export's own tolerance: max|diff| <= 1e-4 max|logit| + 1e-5."""
    assert actual.shape == expected.shape
    max_logit = float(expected.abs().max())
    assert max_logit > 0.1, "the model must produce non-trivial logits for the test to mean anything"
    assert float((actual - expected).abs().max()) <= 1e-4 * max_logit + 1e-5


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_runtime_equals_torch_logits_masks_and_confidence(exported, runtime):
    checkpoint_path, onnx_path = exported
    torch_predictor, _ = load_predictor(checkpoint_path, device="cpu")
    predictor, loaded = load_predictor(onnx_path, runtime=runtime)
    assert isinstance(predictor.model, OnnxModel) and predictor.model.runtime == runtime
    assert loaded.classes == CLASSES and loaded.palette == PALETTE and loaded.preprocessing == fcnseg.TORCHVISION
    image = torch.randint(0, 256, (3, 45, 71), dtype=torch.uint8)
    expected = torch_predictor.logits(image)
    assert_close(predictor.logits(image), expected)
    assert torch.equal(predictor.mask(image), expected.argmax(0).to(torch.uint8))
    confidence = predictor.confidence(image)
    torch.testing.assert_close(confidence.top1, torch.softmax(expected, 0).amax(0), atol=1e-5, rtol=1e-4)
    batch = torch.randint(0, 256, (2, 3, 33, 40), dtype=torch.uint8)
    assert torch.equal(predictor.masks(batch).cpu(), torch_predictor.masks(batch).cpu())


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_tiling_through_the_runtime_gives_the_whole_image_result(exported, runtime):
    checkpoint_path, onnx_path = exported
    model = load_checkpoint(checkpoint_path).model
    image = torch.randint(0, 256, (3, 70, 100), dtype=torch.uint8)
    whole = Predictor(model, device="cpu").logits(image)
    tiled, _ = load_predictor(onnx_path, runtime=runtime, tile=32)
    assert tiled.tiling_for(70, 100).margin == model.context_margin() == 288  # the model's, read from the file
    assert_close(tiled.logits(image), whole)
    # A memory budget chooses the same tiling as the torch model would.
    budget = model.estimate_forward_bytes(900, 900)
    by_budget, _ = load_predictor(onnx_path, runtime=runtime, memory_budget_bytes=budget)
    assert (
        by_budget.tiling_for(2000, 2000)
        == Predictor(model, memory_budget_bytes=budget).tiling_for(2000, 2000)
        is not None
    )
    assert by_budget.tiling_for(70, 100) is None


def test_tiling_metadata_matches_the_model_and_old_files_fall_back(exported, tmp_path):
    checkpoint_path, onnx_path = exported
    model = load_checkpoint(checkpoint_path).model
    runtime_model = OnnxModel(onnx_path, "onnxruntime")
    sizes = [(1, 1), (37, 53), (500, 375), (3000, 4000)]
    assert runtime_model.grid == model.grid == 32
    assert [runtime_model.estimate_forward_bytes(h, w) for h, w in sizes] == [
        model.estimate_forward_bytes(h, w) for h, w in sizes
    ]
    # A file exported before the 'tiling' entry existed: the geometry comes from the model config.
    proto = onnx.load(str(onnx_path))
    kept = [entry for entry in proto.metadata_props if entry.key != "tiling"]
    del proto.metadata_props[:]
    proto.metadata_props.extend(kept)
    old = tmp_path / "old.onnx"
    onnx.save(proto, str(old))
    old_model = OnnxModel(old, "onnxruntime")
    assert "tiling" not in old_model.metadata
    assert (old_model.grid, old_model.context_margin()) == (32, 288)
    assert [old_model.estimate_forward_bytes(h, w) for h, w in sizes] == [
        model.estimate_forward_bytes(h, w) for h, w in sizes
    ]


def test_probabilities_export_gives_the_same_masks_and_probabilities(tmp_path):
    model = tiny_model("fcn32s", len(CLASSES), score_std=0.5, score_bias_std=0.5)
    checkpoint = save_checkpoint(tmp_path / "m.safetensors", model, classes=CLASSES, palette=PALETTE)
    export_onnx(checkpoint, tmp_path / "p.onnx", exporter="torchscript", probabilities=True)
    predictor, _ = load_predictor(tmp_path / "p.onnx", runtime="onnxruntime")
    image = torch.randint(0, 256, (3, 29, 41), dtype=torch.uint8)
    logits = Predictor(model).logits(image)
    assert torch.equal(predictor.mask(image), logits.argmax(0).to(torch.uint8))
    torch.testing.assert_close(predictor.probabilities(image), torch.softmax(logits, 0), atol=1e-5, rtol=1e-4)


def test_runtime_choice_is_checked_in_one_line(exported):
    checkpoint_path, onnx_path = exported
    assert resolve_runtime(checkpoint_path) == "torch"
    assert resolve_runtime(onnx_path) == ("openvino" if importlib.util.find_spec("openvino") else "onnxruntime")
    assert resolve_runtime(onnx_path, "onnxruntime") == "onnxruntime"
    cases = [
        (lambda: load_predictor(onnx_path, runtime="torch"), "ONNX export: run it with onnxruntime or openvino"),
        (lambda: load_predictor(checkpoint_path, runtime="onnxruntime"), "not an .onnx file; export it first"),
        (lambda: load_predictor(onnx_path, runtime="tensorrt"), "unknown runtime 'tensorrt'"),
        (lambda: load_predictor(onnx_path, runtime="onnxruntime", device="cuda"), "runs on the CPU, not on cuda"),
        (lambda: load_predictor(onnx_path, runtime="onnxruntime", dtype="bfloat16"), "onnxruntime runs float32"),
        (
            lambda: load_predictor(
                checkpoint_path.with_suffix(".onnx").with_name("absent.onnx"), runtime="onnxruntime"
            ),
            "absent.onnx: no such ONNX file",
        ),
    ]
    for call, message in cases:
        with pytest.raises(RuntimeBackendError, match=message) as caught:
            call()
        assert "\n" not in str(caught.value)
    predictor, _ = load_predictor(onnx_path, runtime="onnxruntime")
    with pytest.raises(ValueError, match="MC-dropout needs dropout layers"):
        predictor.confidence(torch.zeros(3, 8, 8, dtype=torch.uint8), mc_samples=2)


def test_a_missing_runtime_extra_is_one_clear_line(exported, monkeypatch):
    _, onnx_path = exported
    monkeypatch.setitem(sys.modules, "openvino", None)  # the default runtime missing: onnxruntime runs the file
    assert load_predictor(onnx_path)[0].model.runtime == "onnxruntime"
    for runtime in ("openvino", "onnxruntime"):
        monkeypatch.setitem(sys.modules, runtime, None)  # import fails as if not installed
        with pytest.raises(RuntimeBackendError) as caught:
            load_predictor(onnx_path, runtime=runtime)
        assert str(caught.value) == f"the {runtime} runtime is not installed: pip install 'fcnseg[runtimes]'"


@pytest.mark.skipif(importlib.util.find_spec("openvino") is None, reason="openvino is not installed")
def test_openvino_bfloat16_is_a_named_option_that_changes_numerics_slightly(exported):
    checkpoint_path, onnx_path = exported
    image = torch.randint(0, 256, (3, 45, 71), dtype=torch.uint8)
    expected = load_predictor(checkpoint_path, device="cpu")[0].logits(image)
    bf16, _ = load_predictor(onnx_path, runtime="openvino", dtype="bfloat16")
    difference = float((bf16.logits(image) - expected).abs().max())
    # bf16 keeps 8 bits of mantissa: close to fp32, but not to the export's fp32 tolerance on a CPU that has it.
    assert difference <= 0.05 * float(expected.abs().max())
    assert float((bf16.mask(image) == expected.argmax(0)).float().mean()) >= 0.95


def test_predict_and_serve_take_an_onnx_export_and_a_runtime(tmp_path):
    from PIL import Image

    from fcnseg.checkpoint import save_checkpoint
    from fcnseg.cli import main
    from fcnseg.export.onnx import export_onnx

    pytest.importorskip("fastapi", reason="the serve extra is not installed")
    from fcnseg.serve import create_app

    model = tiny_model("fcn8s", 3, score_std=0.5, score_bias_std=0.5)  # masks that show several classes
    path = save_checkpoint(
        tmp_path / "m.safetensors", model, classes=["a", "b", "c"], palette=[(0, 0, 0), (9, 9, 9), (7, 7, 7)]
    )
    export_onnx(path, tmp_path / "m.onnx", exporter="torchscript")
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (30, 40, 3), dtype=np.uint8)).save(tmp_path / "p.png")
    assert main(["predict", str(path), str(tmp_path / "p.png"), "--out", str(tmp_path / "torch")]) == 0
    assert (
        main(
            [
                "predict",
                str(tmp_path / "m.onnx"),
                str(tmp_path / "p.png"),
                "--out",
                str(tmp_path / "ort"),
                "--runtime",
                "onnxruntime",
            ]
        )
        == 0
    )
    torch_mask = np.array(Image.open(tmp_path / "torch" / "p.png"))
    assert len(np.unique(torch_mask)) > 1  # a zero model's one-class masks would agree whatever ran them
    np.testing.assert_array_equal(np.array(Image.open(tmp_path / "ort" / "p.png")), torch_mask)
    app = create_app(tmp_path / "m.onnx", runtime="onnxruntime")
    assert type(app.state.segmenter.model).__name__ == "OnnxModel"
