"""--runtime auto: a checkpoint compiled to OpenVINO fp32 once, cached by fingerprint, reused, never trusted blindly."""

from __future__ import annotations

import json

import pytest
import torch
from tiny_models import TINY_CLASSES, TINY_PALETTE, tiny_model

from fcnseg.checkpoint import load_checkpoint, save_checkpoint

pytest.importorskip("onnxruntime", reason="the export extra is not installed (pip install 'fcnseg[export]')")
pytest.importorskip("openvino", reason="openvino is not installed (fcnseg[runtimes])")

from fcnseg.inference import compiled  # noqa: E402
from fcnseg.inference.predictor import Predictor, load_predictor  # noqa: E402
from fcnseg.inference.runtimes import OnnxModel, load_model_file  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread", "fcnseg_home")


@pytest.fixture(autouse=True)
def compile_tiny_vgg(monkeypatch):
    """The tiny test nets are VGG FCN-8s, which auto leaves in torch (not faster compiled): compile them here."""
    monkeypatch.setattr(compiled, "COMPILED_FAMILIES", ("fcn8s",))
    monkeypatch.setattr(compiled, "EXPORTERS", ("torchscript",))  # seconds, not tens of seconds


@pytest.fixture
def export_calls(monkeypatch):
    """A list that grows by one checkpoint path per export made."""
    calls, export = [], compiled._export
    monkeypatch.setattr(
        compiled, "_export", lambda checkpoint, out: calls.append(checkpoint) or export(checkpoint, out)
    )
    return calls


def _images(count: int = 3) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(5)
    return [
        torch.randint(0, 256, (3, 40 + 9 * i, 52 - 5 * i), dtype=torch.uint8, generator=generator) for i in range(count)
    ]


def test_compiled_masks_equal_the_torch_forwards(tiny_checkpoint):
    loaded, dtype = load_model_file(tiny_checkpoint, "auto", device="cpu")
    assert isinstance(loaded.model, OnnxModel) and loaded.model.runtime == "openvino" and dtype == "float32"
    assert loaded.classes == TINY_CLASSES and loaded.palette == TINY_PALETTE
    reference = Predictor(load_checkpoint(tiny_checkpoint).model, device="cpu")
    fast = Predictor(loaded.model)
    masks = [(fast.mask(image), reference.mask(image)) for image in _images()]
    assert all(torch.equal(mask, expected) for mask, expected in masks)
    assert all(len(expected.unique()) > 1 for _, expected in masks)  # masks that depend on the image


def test_the_cache_is_made_once_and_reused(tiny_checkpoint, export_calls, fcnseg_home):
    load_model_file(tiny_checkpoint, "auto", device="cpu")
    load_model_file(tiny_checkpoint, "auto", device="cpu")
    assert export_calls == [tiny_checkpoint]
    entries = sorted(path.suffix for path in (fcnseg_home / "compiled").iterdir())
    assert entries == [".json", ".onnx"]


def test_a_changed_checkpoint_gets_a_new_fingerprint_and_export(tiny_checkpoint, export_calls):
    before = compiled.fingerprint(tiny_checkpoint)
    load_model_file(tiny_checkpoint, "auto", device="cpu")
    save_checkpoint(
        tiny_checkpoint,
        tiny_model("fcn8s", len(TINY_CLASSES), score_std=1.0, seed=1),
        classes=TINY_CLASSES,
        palette=TINY_PALETTE,
    )
    assert compiled.fingerprint(tiny_checkpoint) != before
    loaded, _ = load_model_file(tiny_checkpoint, "auto", device="cpu")
    assert len(export_calls) == 2
    image = _images(1)[0]
    expected = Predictor(load_checkpoint(tiny_checkpoint).model).mask(image)
    assert torch.equal(Predictor(loaded.model).mask(image), expected)


def test_a_damaged_cache_file_is_made_again_never_trusted(tiny_checkpoint, export_calls, fcnseg_home, capsys):
    load_model_file(tiny_checkpoint, "auto", device="cpu")
    onnx_file = next((fcnseg_home / "compiled").glob("*.onnx"))
    data = bytearray(onnx_file.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte in the weights: a file that may still load
    onnx_file.write_bytes(bytes(data))
    load_model_file(tiny_checkpoint, "auto", device="cpu")
    assert len(export_calls) == 2 and "damaged" in capsys.readouterr().err
    entry = next((fcnseg_home / "compiled").glob("*.json"))
    entry.write_text("{not json")
    loaded, _ = load_model_file(tiny_checkpoint, "auto", device="cpu")
    assert len(export_calls) == 3 and isinstance(loaded.model, OnnxModel)


def test_runtime_torch_and_library_default_bypass_it(tiny_checkpoint, export_calls):
    for runtime in ("torch", None):
        loaded, _ = load_model_file(tiny_checkpoint, runtime, device="cpu")
        assert not isinstance(loaded.model, OnnxModel)
    assert export_calls == []


@pytest.mark.parametrize("options", [{"dtype": "bfloat16"}, {"fast_paths": False}])
def test_options_the_compiled_path_cannot_honour_run_torch(tiny_checkpoint, export_calls, options):
    predictor, _ = load_predictor(tiny_checkpoint, runtime="auto", device="cpu", **options)
    assert not isinstance(predictor.model, OnnxModel) and export_calls == []


def test_a_family_not_faster_compiled_stays_in_torch(tiny_checkpoint, export_calls, monkeypatch):
    monkeypatch.setattr(compiled, "COMPILED_FAMILIES", ("mobilenet_v3",))
    loaded, _ = load_model_file(tiny_checkpoint, "auto", device="cpu")
    assert not isinstance(loaded.model, OnnxModel) and export_calls == []


def test_a_failed_export_runs_torch_with_one_line_and_is_not_retried(tiny_checkpoint, monkeypatch, capsys):
    import fcnseg.export.onnx

    calls = []

    def refuse(checkpoint, out, exporter):
        calls.append(exporter)
        raise fcnseg.export.onnx.ExportError("refused")

    monkeypatch.setattr(compiled, "EXPORTERS", ("torchscript", "dynamo"))
    monkeypatch.setattr(fcnseg.export.onnx, "export_onnx", refuse)
    for _ in range(2):
        loaded, _ = load_model_file(tiny_checkpoint, "auto", device="cpu")
        assert not isinstance(loaded.model, OnnxModel)
    assert calls == ["torchscript", "dynamo"]  # each exporter tried once, the failure recorded
    assert not list(compiled.cache_folder().glob("*.onnx"))
    notes = [line for line in capsys.readouterr().err.splitlines() if "runs in torch" in line]
    assert len(notes) == 2 and "refused" in notes[-1] and "delete it to try again" in notes[-1]


def test_the_checkpoints_description_travels_with_the_compiled_model(tmp_path):
    path = save_checkpoint(
        tmp_path / "m.safetensors",
        tiny_model("fcn8s", len(TINY_CLASSES), score_std=1.0),
        classes=TINY_CLASSES,
        palette=TINY_PALETTE,
        ignore_index=7,
        extra={"data": {"kind": "synthetic"}},
    )
    loaded, _ = load_model_file(path, "auto", device="cpu")
    assert isinstance(loaded.model, OnnxModel) and loaded.ignore_index == 7
    assert loaded.extra["data"] == {"kind": "synthetic"}  # fcnseg eval finds the training data through it
    assert json.loads(next(compiled.cache_folder().glob("*.json")).read_text())["exporter"] == "torchscript"


def test_mc_dropout_in_fcnseg_predict_runs_torch(tiny_checkpoint, tmp_path, export_calls):
    from PIL import Image

    from fcnseg.cli import main

    Image.fromarray(_images(1)[0].permute(1, 2, 0).numpy()).save(tmp_path / "a.png")
    status = main(
        [
            "predict",
            str(tiny_checkpoint),
            str(tmp_path / "a.png"),
            "--out",
            str(tmp_path / "out"),
            "--device",
            "cpu",
            "--workers",
            "0",
            "--mc-dropout",
            "2",
            "--confidence",
        ]
    )
    assert status == 0 and export_calls == [] and (tmp_path / "out" / "a_mutual_info.png").is_file()


def test_a_gpu_runs_torch(tiny_checkpoint, export_calls, monkeypatch):
    monkeypatch.setattr(compiled, "resolve_device", lambda device: torch.device("cuda"))
    assert compiled.load_compiled_checkpoint(tiny_checkpoint, device="cuda") is None and export_calls == []


def test_test_time_augmentation_runs_compiled_with_the_torch_masks(tiny_checkpoint):
    tta = {"tta_scales": (0.75, 1.0), "tta_flip": True}
    predictor, _ = load_predictor(tiny_checkpoint, runtime="auto", device="cpu", **tta)
    reference, _ = load_predictor(tiny_checkpoint, runtime="torch", device="cpu", **tta)
    assert isinstance(predictor.model, OnnxModel)
    assert all(torch.equal(predictor.mask(image), reference.mask(image)) for image in _images(2))


def test_serve_runs_the_compiled_model(tiny_checkpoint):
    pytest.importorskip("fastapi", reason="the serve extra is not installed")
    from fcnseg.serve import create_app

    assert isinstance(create_app(tiny_checkpoint, runtime="auto").state.segmenter.predictor.model, OnnxModel)


def test_a_squeeze_and_excitation_net_compiled_still_refuses_inexact_tiles(tmp_path, monkeypatch):
    """The ONNX file does not say whether tiles are exact; the compiled model takes it from the model's config."""
    monkeypatch.setattr(compiled, "COMPILED_FAMILIES", ("mobilenet_v3",))
    path = save_checkpoint(
        tmp_path / "se.safetensors",
        tiny_model("fcn8s_mobilenet_v3_large", 3, width=1.0),
        classes=TINY_CLASSES,
        palette=TINY_PALETTE,
    )
    with pytest.raises(ValueError, match="squeeze-and-excitation"):
        load_predictor(path, runtime="auto", device="cpu", tile=64)
    predictor, _ = load_predictor(path, runtime="auto", device="cpu")
    assert isinstance(predictor.model, OnnxModel) and predictor.model.exact_tiling is False


def test_mc_dropout_on_an_onnx_file_says_it_has_no_dropout(tiny_checkpoint, tmp_path, capsys):
    from PIL import Image

    from fcnseg.cli import main
    from fcnseg.export.onnx import export_onnx

    export_onnx(tiny_checkpoint, tmp_path / "m.onnx", exporter="torchscript", check_shapes=[(1, 3, 32, 32)])
    Image.fromarray(_images(1)[0].permute(1, 2, 0).numpy()).save(tmp_path / "a.png")
    status = main(
        [
            "predict",
            str(tmp_path / "m.onnx"),
            str(tmp_path / "a.png"),
            "--out",
            str(tmp_path / "out"),
            "--workers",
            "0",
            "--mc-dropout",
            "2",
        ]
    )
    assert status == 2 and "no dropout layers" in capsys.readouterr().err
