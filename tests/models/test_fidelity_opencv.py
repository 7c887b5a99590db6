"""Fidelity against an independent Caffe-semantics forward: OpenCV's DNN module.

For each model the test writes a deploy prototxt in the reference Caffe layout
(the layer names, pad 100, ceil pooling, Crop layers with axis 2 and the
published offsets 5, 9 and 19/27/31 typed in here) and a caffemodel with the
same random weights (by the tests' own encoder), runs it with
``cv2.dnn.readNetFromCaffe`` and compares fcnseg's output. Every weight is
random, upsampling included (a random kernel is not symmetric, so a flipped or
transposed deconvolution would show). Caffe's Dropout is the identity at test
time, as is fcnseg's in eval mode.

The seed's FCN-8s (../shared/reference/seed_fcn8s.py) fails the same check:
its output is the reference shifted by 3 pixels.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch
from caffe_encoder import V1_DECONVOLUTION, blob, fcn_caffemodel, layer_v1, layer_v2, net
from tiny_models import tiny_model

import fcnseg

cv2 = pytest.importorskip("cv2")
if not hasattr(cv2, "dnn") or not hasattr(cv2.dnn, "readNetFromCaffe"):
    pytest.skip("this OpenCV has no Caffe importer (opencv-python-headless 4.x has one)", allow_module_level=True)

SEED_PATH = Path(__file__).resolve().parents[3] / "shared" / "reference" / "seed_fcn8s.py"
WIDTH = 0.0625
NUM_CLASSES = 5
SIZES = [(1, 1), (17, 17), (37, 23), (53, 61)]
TOLERANCE = 1e-4


# --- the reference prototxt -------------------------------------------------------------------


def _conv(name: str, bottom: str, outputs: int, kernel: int, pad: int = 0) -> str:
    return (
        f'layer {{ name: "{name}" type: "Convolution" bottom: "{bottom}" top: "{name}" '
        f"convolution_param {{ num_output: {outputs} kernel_size: {kernel} pad: {pad} }} }}\n"
    )


def _relu(name: str, blob_name: str) -> str:
    return f'layer {{ name: "{name}" type: "ReLU" bottom: "{blob_name}" top: "{blob_name}" }}\n'


def _deconv(name: str, bottom: str, outputs: int, kernel: int, stride: int) -> str:
    return (
        f'layer {{ name: "{name}" type: "Deconvolution" bottom: "{bottom}" top: "{name}" '
        f"convolution_param {{ num_output: {outputs} kernel_size: {kernel} stride: {stride} bias_term: false }} }}\n"
    )


def _crop(name: str, bottom: str, like: str, offset: int) -> str:
    return (
        f'layer {{ name: "{name}" type: "Crop" bottom: "{bottom}" bottom: "{like}" top: "{name}" '
        f"crop_param {{ axis: 2 offset: {offset} }} }}\n"
    )


def _sum(name: str, a: str, b: str) -> str:
    return (
        f'layer {{ name: "{name}" type: "Eltwise" bottom: "{a}" bottom: "{b}" top: "{name}" '
        "eltwise_param { operation: SUM } }\n"
    )


def _scale(name: str, bottom: str) -> str:
    """A fixed per-channel scale (its blob comes from the caffemodel), as in voc-fcn8s-atonce."""
    return (
        f'layer {{ name: "{name}" type: "Scale" bottom: "{bottom}" top: "{name}" '
        "scale_param { bias_term: false } }\n"
    )


def deploy_prototxt(name: str, model: torch.nn.Module, height: int, width: int) -> str:
    """The reference deploy net (voc-fcn*s layout) with this model's channel counts."""
    layers = model.reference_layers()
    text = f'name: "{name}"\ninput: "data"\ninput_shape {{ dim: 1 dim: 3 dim: {height} dim: {width} }}\n'
    bottom = "data"
    for stage, count in enumerate((2, 2, 3, 3, 3), start=1):
        for index in range(1, count + 1):
            conv = f"conv{stage}_{index}"
            text += _conv(conv, bottom, layers[conv].out_channels, 3, pad=100 if conv == "conv1_1" else 1)
            text += _relu(f"relu{stage}_{index}", conv)
            bottom = conv
        text += (
            f'layer {{ name: "pool{stage}" type: "Pooling" bottom: "{bottom}" top: "pool{stage}" '
            "pooling_param { pool: MAX kernel_size: 2 stride: 2 } }\n"
        )
        bottom = f"pool{stage}"
    for fc, kernel in (("fc6", 7), ("fc7", 1)):
        text += _conv(fc, bottom, layers[fc].out_channels, kernel) + _relu(f"relu{fc[2]}", fc)
        text += (
            f'layer {{ name: "drop{fc[2]}" type: "Dropout" bottom: "{fc}" top: "{fc}" '
            "dropout_param { dropout_ratio: 0.5 } }\n"
        )
        bottom = fc
    c = NUM_CLASSES
    text += _conv("score_fr", "fc7", c, 1)
    if name == "fcn32s":
        return text + _deconv("upscore", "score_fr", c, 64, 32) + _crop("score", "upscore", "data", 19)
    text += _deconv("upscore2", "score_fr", c, 4, 2)
    pool4 = "pool4"
    if name == "fcn8s_atonce":
        text += _scale("scale_pool4", "pool4")
        pool4 = "scale_pool4"
    text += _conv("score_pool4", pool4, c, 1) + _crop("score_pool4c", "score_pool4", "upscore2", 5)
    text += _sum("fuse_pool4", "upscore2", "score_pool4c")
    if name == "fcn16s":
        return text + _deconv("upscore16", "fuse_pool4", c, 32, 16) + _crop("score", "upscore16", "data", 27)
    text += _deconv("upscore_pool4", "fuse_pool4", c, 4, 2)
    pool3 = "pool3"
    if name == "fcn8s_atonce":
        text += _scale("scale_pool3", "pool3")
        pool3 = "scale_pool3"
    text += _conv("score_pool3", pool3, c, 1) + _crop("score_pool3c", "score_pool3", "upscore_pool4", 9)
    text += _sum("fuse_pool3", "upscore_pool4", "score_pool3c")
    return text + _deconv("upscore8", "fuse_pool3", c, 16, 8) + _crop("score", "upscore8", "data", 31)


# --- helpers ----------------------------------------------------------------------------------


def random_model(name: str, seed: int = 0) -> torch.nn.Module:
    """A tiny model with every weight random: He-scaled convolutions (activations neither
    vanish nor explode), random biases, score layers and upsampling kernels. At-once skip
    scores are divided by their fixed scale, so that the skips weigh as much as in FCN-8s."""
    model = tiny_model(name, NUM_CLASSES, width=WIDTH, seed=seed, all_std="he")
    with torch.no_grad():
        for score, scale in (("score_pool4", "scale_pool4"), ("score_pool3", "scale_pool3")):
            if hasattr(model, scale):  # as training would: make the scaled skips matter
                getattr(model, score).weight.div_(getattr(model, scale))
    return model


def opencv_forward(prototxt: str, caffemodel: bytes, image: np.ndarray, directory: Path, output: str = "score"):
    proto_path, model_path = directory / "deploy.prototxt", directory / "weights.caffemodel"
    proto_path.write_text(prototxt)
    model_path.write_bytes(caffemodel)
    network = cv2.dnn.readNetFromCaffe(str(proto_path), str(model_path))
    network.setPreferableBackend(cv2.dnn.DNN_BACKEND_OPENCV)
    network.setPreferableTarget(cv2.dnn.DNN_TARGET_CPU)
    network.enableWinograd(False)  # plain fp32 convolutions
    network.setInput(image)
    return network.forward(output)


def relative_error(actual: np.ndarray, reference: np.ndarray) -> float:
    return float(np.abs(actual - reference).max() / np.abs(reference).max())


# --- does OpenCV follow Caffe? ----------------------------------------------------------------


def test_opencv_pooling_is_caffe_ceil_mode(tmp_path):
    x = np.arange(25, dtype=np.float32).reshape(1, 1, 5, 5)
    proto = (
        'input: "data"\ninput_shape { dim: 1 dim: 1 dim: 5 dim: 5 }\n'
        'layer { name: "pool" type: "Pooling" bottom: "data" top: "pool" '
        "pooling_param { pool: MAX kernel_size: 2 stride: 2 } }\n"
    )
    (tmp_path / "p.prototxt").write_text(proto)
    network = cv2.dnn.readNetFromCaffe(str(tmp_path / "p.prototxt"))
    network.setInput(x)
    # ceil((5 - 2) / 2) + 1 = 3 windows per axis; the last one holds a single row/column.
    expected = np.array([[6, 8, 9], [16, 18, 19], [21, 23, 24]], dtype=np.float32)
    assert np.array_equal(network.forward("pool")[0, 0], expected)


def test_opencv_crop_uses_the_offset_on_both_axes(tmp_path):
    a = np.arange(42, dtype=np.float32).reshape(1, 1, 6, 7)
    proto = (
        'input: "a"\ninput_shape { dim: 1 dim: 1 dim: 6 dim: 7 }\n'
        'input: "b"\ninput_shape { dim: 1 dim: 1 dim: 3 dim: 4 }\n'
        'layer { name: "crop" type: "Crop" bottom: "a" bottom: "b" top: "crop" crop_param { axis: 2 offset: 2 } }\n'
    )
    (tmp_path / "c.prototxt").write_text(proto)
    network = cv2.dnn.readNetFromCaffe(str(tmp_path / "c.prototxt"))
    network.setInput(a, "a")
    network.setInput(np.zeros((1, 1, 3, 4), np.float32), "b")
    assert np.array_equal(network.forward("crop"), a[:, :, 2:5, 2:6])


@pytest.mark.parametrize("version", ["v2", "v1"])
def test_opencv_deconvolution_scatters_the_kernel(tmp_path, version):
    """Caffe's Deconvolution: out[s*i + u, s*j + v] += x[i, j] * w[u, v]. Also checks that OpenCV
    reads the test encoder's caffemodels, V2 with BlobShape and V1 with legacy dims."""
    kernel = np.arange(16, dtype=np.float32).reshape(1, 1, 4, 4)  # not symmetric
    x = np.array([[1, 2], [3, 4]], dtype=np.float32).reshape(1, 1, 2, 2)
    expected = np.zeros((6, 6), np.float32)
    for i in range(2):
        for j in range(2):
            expected[2 * i : 2 * i + 4, 2 * j : 2 * j + 4] += x[0, 0, i, j] * kernel[0, 0]
    proto = 'input: "data"\ninput_shape { dim: 1 dim: 1 dim: 2 dim: 2 }\n' + _deconv("up", "data", 1, 4, 2)
    weights = (
        net([layer_v2("up", "Deconvolution", [blob(kernel)])])
        if version == "v2"
        else net(layers_v1=[layer_v1("up", V1_DECONVOLUTION, [blob(kernel, shape="legacy")])])
    )
    out = opencv_forward(proto, weights, x, tmp_path, output="up")
    assert np.array_equal(out[0, 0], expected)


# --- fcnseg against the Caffe-semantics forward -----------------------------------------------


@pytest.mark.parametrize("name", ["fcn32s", "fcn16s", "fcn8s", "fcn8s_atonce"])
def test_fcnseg_matches_the_caffe_semantics_forward(tmp_path, name):
    model = random_model(name)
    caffemodel = fcn_caffemodel(model)
    generator = np.random.default_rng(1)
    for height, width in SIZES:
        image = generator.standard_normal((1, 3, height, width)).astype(np.float32)
        reference = opencv_forward(deploy_prototxt(name, model, height, width), caffemodel, image, tmp_path)
        with torch.no_grad():
            ours = model(torch.from_numpy(image)).numpy()
        assert ours.shape == reference.shape == (1, NUM_CLASSES, height, width)
        assert np.abs(reference).max() > 0
        error = relative_error(ours, reference)
        assert error < TOLERANCE, f"{name} at {height}x{width}: relative error {error:.2e}"


def test_caffemodel_round_trip_through_opencv_and_fcnseg(tmp_path):
    """The same file read by both: fcnseg's loader gives a model that matches OpenCV's net."""
    source = random_model("fcn8s", seed=3)
    path = tmp_path / "fcn8s.caffemodel"
    path.write_bytes(fcn_caffemodel(source, version="v1", shape="legacy", inner_product=False))
    loaded = fcnseg.create_model("fcn8s", num_classes=NUM_CLASSES, width=WIDTH).eval()
    fcnseg.load_caffe_weights(loaded, path)
    image = np.random.default_rng(2).standard_normal((1, 3, 29, 31)).astype(np.float32)
    reference = opencv_forward(deploy_prototxt("fcn8s", loaded, 29, 31), path.read_bytes(), image, tmp_path)
    with torch.no_grad():
        assert relative_error(loaded(torch.from_numpy(image)).numpy(), reference) < TOLERANCE


# --- the seed fails it ------------------------------------------------------------------------


def load_seed_fcn8s(model: torch.nn.Module) -> torch.nn.Module:
    """The seed's FCN-8s (its own forward, crops 5, 9, 28) carrying ``model``'s layers.

    The seed hard-codes the full VGG16 widths, so it is built on the meta device and
    every layer with weights is replaced by a copy of fcnseg's tiny one.
    """
    if not SEED_PATH.is_file():
        pytest.skip(f"the seed is not present: {SEED_PATH}")
    spec = importlib.util.spec_from_file_location("seed_fcn8s", SEED_PATH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    with torch.device("meta"):
        seed = module.FCN(n_class=NUM_CLASSES)
    layers = {name: layer for name, layer in model.reference_layers().items()}
    convs = [f"conv{s}_{i}" for s, n in enumerate((2, 2, 3, 3, 3), 1) for i in range(1, n + 1)]
    slots = [(seed.features_123, i) for i in (0, 2, 5, 7, 10, 12, 14)]
    slots += [(seed.features_4, i) for i in (0, 2, 4)] + [(seed.features_5, i) for i in (0, 2, 4)]
    slots += [(seed.classifier, 0), (seed.classifier, 3), (seed.classifier, 6)]
    for (container, index), name in zip(slots, convs + ["fc6", "fc7", "score_fr"], strict=True):
        container[index] = _copy(layers[name])
    seed.score_feat4, seed.score_feat3 = _copy(layers["score_pool4"]), _copy(layers["score_pool3"])
    seed.upscore_5, seed.upscore_4 = _copy(layers["upscore2"]), _copy(layers["upscore_pool4"])
    seed.upscore = _copy(layers["upscore8"])
    assert not any(p.is_meta for p in seed.parameters())
    return seed.eval()


def _copy(layer: torch.nn.Module) -> torch.nn.Module:
    import copy

    return copy.deepcopy(layer)


def test_seed_fcn8s_is_shifted_by_three_pixels(tmp_path):
    model = random_model("fcn8s", seed=5)
    seed = load_seed_fcn8s(model)
    height, width = 37, 41
    image = np.random.default_rng(4).standard_normal((1, 3, height, width)).astype(np.float32)
    reference = opencv_forward(deploy_prototxt("fcn8s", model, height, width), fcn_caffemodel(model), image, tmp_path)
    with torch.no_grad():
        ours = model(torch.from_numpy(image)).numpy()
        theirs = seed(torch.from_numpy(image)).numpy()
    assert theirs.shape == reference.shape
    assert relative_error(ours, reference) < TOLERANCE
    assert relative_error(theirs, reference) > 0.1, "the seed should fail the fidelity check"
    # seed[i + 3] == reference[i]: the seed's final crop is 28 where the reference's is 31.
    assert relative_error(theirs[:, :, 3:, 3:], reference[:, :, :-3, :-3]) < TOLERANCE
