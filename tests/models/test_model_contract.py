"""The contract every registered model keeps, checked over ``fcnseg.list_models()``.

A model registered later is covered without editing this file: the model contract
(:class:`fcnseg.models.SegmentationModel`, its members and how they behave), output aligned
to the input over a size sweep, gradients to every learnable parameter and no frozen one, a
checkpoint round trip, and the exact fast paths equal to the plain forward. The ONNX runtime
model and the export's softmax wrapper keep the same contract, and an export carries each
model's tiling (memory estimate included) to its runtime model unchanged.

The input has ``model.in_channels`` channels (3 unless a model says otherwise: the NYUDv2
late-fusion net takes colour + HHA, 6). A model with several heads (SIFT Flow's) returns
them concatenated along the channels, so its output is still one (N, C, H, W) tensor.
"""

from __future__ import annotations

import json

import pytest
import torch
from tiny_models import tiny_model
from torch import nn

import fcnseg
from fcnseg.checkpoint import load_checkpoint, save_checkpoint
from fcnseg.models import ForwardMemory, ReferenceNet, SegmentationModel

TINY = 0.0625
CLASSES = 5  # a SIFT Flow net splits them 2 semantic + 3 geometric
SIZES = [(1, 1), (2, 3), (1, 7), (7, 1), (13, 13), (31, 2), (32, 32), (33, 47), (64, 63), (97, 101)]


#: Models with more parameters than this at the test width (torchvision's fixed-width ResNets
#: beyond ResNet-18) take 5-20 s per test on the 2-core CPU: they run with the slow tests.
SLOW_PARAMETERS = 15_000_000


def width_of(name: str) -> float:
    """The tiny width, or the model's only width (torchvision's ResNets refuse others, and say so)."""
    try:
        with torch.device("meta"):  # shapes only: no memory, no initialisation arithmetic
            fcnseg.create_model(name, num_classes=CLASSES, width=TINY)
    except ValueError as error:
        assert "width must be 1.0" in str(error)
        return 1.0
    return TINY


def _parameters(name: str) -> int:
    with torch.device("meta"):
        return sum(p.numel() for p in fcnseg.create_model(name, num_classes=CLASSES, width=width_of(name)).parameters())


MODELS = [
    pytest.param(name, marks=pytest.mark.slow) if _parameters(name) > SLOW_PARAMETERS else name
    for name in fcnseg.list_models()
]


def build(name: str, **options) -> nn.Module:
    """The model at the tiny width, or at its only width (torchvision's ResNets refuse others)."""
    return fcnseg.create_model(name, num_classes=CLASSES, width=width_of(name), **options)


def random_model(name: str, fast_paths: bool = True) -> nn.Module:
    """``name`` with every parameter non-zero: random biases and score layers (zero ones would hide whole paths)."""
    return tiny_model(name, CLASSES, width=width_of(name), score_std=0.3, bias_std=0.3, fast_paths=fast_paths)


def blob(model: nn.Module, *shape: int) -> torch.Tensor:
    """A random input (N, in_channels, H, W) for ``model``."""
    batch, *size = shape
    return torch.randn(batch, model.in_channels, *size)


@pytest.mark.parametrize("name", MODELS)
def test_output_has_the_input_height_and_width(name):
    model = random_model(name).eval()
    with torch.inference_mode():
        for height, width in SIZES:
            assert model(blob(model, 1, height, width)).shape == (1, CLASSES, height, width), (height, width)
        assert model(blob(model, 2, 5, 9)).shape == (2, CLASSES, 5, 9)


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("fast_paths", [False, True])
def test_gradients_reach_every_learnable_parameter_and_no_frozen_one(name, fast_paths):
    model = random_model(name, fast_paths=fast_paths).train()
    logits = model(blob(model, 2, 19, 23))
    nn.functional.cross_entropy(logits, torch.randint(0, CLASSES, (2, 19, 23))).backward()
    for key, parameter in model.named_parameters():
        if parameter.requires_grad:
            assert parameter.grad is not None and parameter.grad.abs().sum() > 0, key
        else:
            assert parameter.grad is None, key


@pytest.mark.parametrize("name", MODELS)
def test_checkpoint_round_trip_gives_the_same_model_and_logits(name, tmp_path):
    model = random_model(name).eval()
    classes = [f"c{i}" for i in range(CLASSES)]
    path = save_checkpoint(
        tmp_path / "m.safetensors", model, classes=classes, palette=[(i, i, i) for i in range(CLASSES)]
    )
    loaded = load_checkpoint(path)
    assert loaded.model.config == model.config and loaded.classes == classes
    x = blob(model, 1, 45, 38)
    with torch.inference_mode():
        torch.testing.assert_close(loaded.model.eval()(x), model(x))


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("size", [(1, 1), (37, 61), (123, 200)])
def test_fast_paths_equal_the_plain_forward(name, size):
    plain = random_model(name, fast_paths=False).eval()
    fast = random_model(name, fast_paths=True).eval()
    assert fast.fast_paths and not plain.fast_paths
    x = blob(plain, 2, *size)
    with torch.inference_mode():
        expected, got = plain(x), fast(x)
    scale = expected.abs().max().item()
    assert scale > 0.1, "the test model must produce non-trivial logits"
    assert (got - expected).abs().max().item() <= 1e-4 * scale  # fp32 summation order, not arithmetic
    assert torch.equal(got.argmax(1), expected.argmax(1))


@pytest.mark.parametrize("name", fcnseg.list_models())
def test_tiles_on_the_models_grid_with_its_margin_give_the_whole_image_logits(name):
    from fcnseg.inference.predictor import Predictor
    from fcnseg.inference.tiling import Tiling

    model = random_model(name).eval()
    image = torch.randint(0, 256, (model.in_channels, 40, 700), dtype=torch.uint8)
    whole = Predictor(model).logits(image)
    if not model.exact_tiling:  # a layer sees the whole image: inference refuses to tile it
        with pytest.raises(ValueError, match="sees the whole image"):
            Predictor(model, tile=Tiling(96))
        return
    tiled = Predictor(model, tile=Tiling(96)).logits(image)  # several tiles with interior edges
    assert (tiled - whole).abs().max() <= 1e-4 * whole.abs().max() + 1e-5


# --- the model contract (fcnseg.models.contract): members and behaviour --------------------------

#: Image sizes the memory estimates are compared at: tiny, odd, photo, large, very large.
ESTIMATE_SIZES = [(1, 1), (37, 53), (500, 375), (1024, 2048), (3000, 4000)]


def closest_to_zero(model, pixel: tuple[int, ...]) -> bool:
    """Whether no one-level step of one channel brings the blob of ``pixel`` closer to zero (summed |blob|)."""

    def distance(values):
        return float(model.prepare_input(torch.tensor(values, dtype=torch.uint8).view(-1, 1, 1)).abs().sum())

    start = distance(pixel)
    steps = [pixel[:c] + (pixel[c] + d,) + pixel[c + 1 :] for c in range(len(pixel)) for d in (-1, 1)]
    return all(start <= distance(step) for step in steps if min(step) >= 0 and max(step) <= 255)


def check_contract(model, name: str) -> None:
    """Every member of the SegmentationModel contract, as its consumers use it."""
    assert isinstance(model, SegmentationModel) and isinstance(model, nn.Module)
    assert model.num_classes == CLASSES == model.config["num_classes"]
    assert model.config["name"] == name and json.loads(json.dumps(model.config)) == model.config
    assert model.in_channels in (3, 6)
    assert model.heads is None or sum(classes for _, classes in model.heads) == model.num_classes
    assert isinstance(model.preprocessing, fcnseg.Preprocessing)
    assert isinstance(model.grid, int) and model.grid >= 1
    margin = model.context_margin()
    assert isinstance(margin, int) and margin >= 0 and margin % model.grid == 0
    assert isinstance(model.exact_tiling, bool)
    assert model.set_fast_paths(False) is model and model.fast_paths is False
    assert model.set_fast_paths(True) is model and isinstance(model.fast_paths, bool)

    memory = model.forward_memory()
    assert ForwardMemory.from_dict(json.loads(json.dumps(memory.to_dict()))) == memory
    for height, width in ESTIMATE_SIZES:
        estimate = model.estimate_forward_bytes(height, width)
        assert isinstance(estimate, int) and estimate > 0 and estimate == memory.bytes(height, width)
        assert model.estimate_forward_bytes(height + model.grid, width) > estimate
        assert model.estimate_forward_bytes(height, width + model.grid) > estimate

    pixel = model.mean_pixel()
    assert len(pixel) == model.in_channels and all(isinstance(v, int) and 0 <= v <= 255 for v in pixel)
    assert closest_to_zero(model, pixel)
    images = torch.randint(0, 256, (2, model.in_channels, 5, 7), dtype=torch.uint8)
    blob = model.prepare_input(images)
    assert blob.dtype == torch.float32 and blob.shape == images.shape
    torch.testing.assert_close(model.prepare_input(images[1]), blob[1])
    with torch.inference_mode():
        assert model.eval()(blob).shape == (2, model.num_classes, 5, 7)


@pytest.mark.parametrize("name", MODELS)
def test_every_registered_model_keeps_the_model_contract(name):
    model = random_model(name)
    check_contract(model, name)
    assert isinstance(model, ReferenceNet)  # what the weight loaders rely on
    assert isinstance(model.caffe_preprocessing, fcnseg.Preprocessing)
    layers = model.reference_layers()
    assert layers and all(any(True for _ in layer.parameters()) for layer in layers.values())
    scales = model.fixed_scales()
    assert set(scales) == ({"scale_pool4", "scale_pool3"} if name == "fcn8s_atonce" else set())
    assert all(torch.is_tensor(scale) and scale.numel() == 1 for scale in scales.values())


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A tiny FCN-8s, its checkpoint and its ONNX export (the legacy exporter: seconds, not minutes)."""
    pytest.importorskip("onnxruntime")
    from fcnseg.export.onnx import export_onnx

    folder = tmp_path_factory.mktemp("contract")
    model = random_model("fcn8s").eval()
    classes = [f"c{i}" for i in range(CLASSES)]
    palette = [(i, i, i) for i in range(CLASSES)]
    path = save_checkpoint(folder / "m.safetensors", model, classes=classes, palette=palette)
    export_onnx(path, folder / "m.onnx", exporter="torchscript", check_shapes=[(1, 3, 37, 53)])
    return model, folder / "m.onnx"


def same_tiling(runtime_model, model) -> None:
    """The runtime model's tiling members equal the torch model's, the memory estimate at every size."""
    assert runtime_model.grid == model.grid and runtime_model.context_margin() == model.context_margin()
    assert runtime_model.exact_tiling == model.exact_tiling and runtime_model.heads == model.heads
    assert runtime_model.forward_memory() == model.forward_memory()
    for height, width in ESTIMATE_SIZES + [(h + 1, w + 3) for h, w in ESTIMATE_SIZES]:
        assert runtime_model.estimate_forward_bytes(height, width) == model.estimate_forward_bytes(height, width)


def test_the_onnx_runtime_model_keeps_the_model_contract(exported):
    from fcnseg.inference.runtimes import OnnxModel

    model, path = exported
    runtime_model = OnnxModel(path, "onnxruntime")
    check_contract(runtime_model, "fcn8s")
    same_tiling(runtime_model, model)
    assert runtime_model.config == model.config and runtime_model.preprocessing == model.preprocessing
    assert runtime_model.mean_pixel() == model.mean_pixel()


def test_the_export_wrapper_keeps_the_model_contract():
    from fcnseg.export.onnx import WithSoftmax

    model = random_model("fcn8s")
    wrapped = WithSoftmax(model)
    check_contract(wrapped, "fcn8s")
    same_tiling(wrapped, model)
    blob = model.prepare_input(torch.randint(0, 256, (1, 3, 21, 17), dtype=torch.uint8))
    with torch.inference_mode():
        torch.testing.assert_close(wrapped(blob), torch.softmax(model(blob), 1))


def stub_export(path, model) -> None:
    """An ONNX file with ``model``'s export metadata around an Identity graph: the runtime model reads only
    the metadata for everything but the logits."""
    onnx = pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    from onnx import TensorProto, helper

    from fcnseg.checkpoint import Checkpoint
    from fcnseg.export.onnx import onnx_metadata

    shape = ["batch", 3, "height", "width"]
    graph = helper.make_graph(
        [helper.make_node("Identity", ["input"], ["logits"])],
        "stub",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, shape)],
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    checkpoint = Checkpoint(
        model=model, classes=[f"c{i}" for i in range(CLASSES)], palette=[(i, i, i) for i in range(CLASSES)]
    )
    for key, value in onnx_metadata(checkpoint).items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(proto, str(path))


@pytest.mark.parametrize("name", fcnseg.list_models())
def test_an_export_carries_the_models_tiling_and_memory_estimate_to_the_runtime_model(name, tmp_path):
    from fcnseg.inference.runtimes import OnnxModel

    with torch.device("meta"):  # the metadata needs shapes only
        model = build(name)
    stub_export(tmp_path / "m.onnx", model)
    runtime_model = OnnxModel(tmp_path / "m.onnx", "onnxruntime")
    same_tiling(runtime_model, model)
    assert runtime_model.config == model.config and runtime_model.num_classes == model.num_classes


@pytest.mark.parametrize("name", ["fcn8s_mobilenet_v3_large", "siftflow_fcn16s"])
def test_a_file_with_the_first_tiling_entry_rebuilds_the_tiling_from_the_config(name, tmp_path):
    """Files exported before the entry held ``exact_tiling`` and ``forward_memory`` (it held fitted coefficients)."""
    from fcnseg.inference.runtimes import OnnxModel

    onnx = pytest.importorskip("onnx")
    with torch.device("meta"):
        model = build(name)
    stub_export(tmp_path / "m.onnx", model)
    proto = onnx.load(str(tmp_path / "m.onnx"))
    first = {
        "grid": model.grid,
        "context_margin": model.context_margin(),
        "forward_bytes": {"hw": 1.0, "h": 0.0, "w": 0.0, "one": 0.0},
    }
    next(entry for entry in proto.metadata_props if entry.key == "tiling").value = json.dumps(first)
    onnx.save(proto, str(tmp_path / "old.onnx"))
    same_tiling(OnnxModel(tmp_path / "old.onnx", "onnxruntime"), model)


def test_consumers_refuse_what_is_not_an_fcnseg_model(tmp_path):
    from fcnseg.checkpoint import CheckpointError
    from fcnseg.weights import WeightsError, with_num_classes

    layer = nn.Conv2d(3, CLASSES, 1)
    assert not isinstance(layer, SegmentationModel)
    with pytest.raises(CheckpointError, match="Conv2d is not an fcnseg model"):
        save_checkpoint(tmp_path / "m.safetensors", layer, classes=list("abcde"), palette=[(0, 0, 0)] * CLASSES)
    with pytest.raises(WeightsError, match="Conv2d is not an fcnseg model"):
        with_num_classes(layer, 3)
    with pytest.raises(TypeError, match="needs an fcnseg model"):
        fcnseg.load_caffe_weights(layer, tmp_path / "none.caffemodel")
