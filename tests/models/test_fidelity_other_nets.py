"""The SIFT Flow two-headed nets and the NYUDv2 late-fusion net against OpenCV's Caffe-semantics forward.

Each test writes the reference deploy net (layer names of siftflow-fcn*s/net.py and
nyud-fcn32s-color-hha/net.py: ``score_fr_sem``, ``upscore2_geo``, ``conv1_1color``,
``score_frhha``, ...; crop offsets typed in from the VOC nets, which share the geometry) and a
caffemodel in the published layout (the tests' own encoder, every weight random), loads the
caffemodel into a fresh fcnseg model with ``load_caffe_weights`` and compares its forward with
OpenCV DNN's (no fcnseg code). The late-fusion net's ``score_fused`` is an Eltwise SUM with
coefficients 0.5 and 0.5, as in the reference.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from caffe_encoder import fcn_caffemodel
from test_fidelity_opencv import NUM_CLASSES, TOLERANCE, WIDTH, _conv, _crop, _deconv, _relu, _sum, cv2, relative_error
from tiny_models import tiny_model

import fcnseg
from fcnseg.models.latefusion import HHA_CAFFE, NYUD_CAFFE, preprocess_color_hha
from fcnseg.models.siftflow import SIFTFLOW_CAFFE

SIZES = [(1, 1), (17, 17), (37, 23)]
HEADS = (("sem", 2), ("geo", 3))  # the random models' 5 classes, split as a SIFT Flow net splits them
CROPS = {32: 19, 16: 27, 8: 31}  # final crops of the reference VOC nets


def trunk(layers: dict, bottom: str, suffix: str = "") -> str:
    """conv1_1..fc7 (+ ReLU, pools; dropout is the identity at test time) with ``suffix`` on every name."""
    text = ""
    for stage, count in enumerate((2, 2, 3, 3, 3), start=1):
        for index in range(1, count + 1):
            conv = f"conv{stage}_{index}{suffix}"
            text += _conv(conv, bottom, layers[conv].out_channels, 3, pad=100 if conv.startswith("conv1_1") else 1)
            text += _relu(f"relu{stage}_{index}{suffix}", conv)
            bottom = conv
        text += (
            f'layer {{ name: "pool{stage}{suffix}" type: "Pooling" bottom: "{bottom}" top: "pool{stage}{suffix}" '
            "pooling_param { pool: MAX kernel_size: 2 stride: 2 } }\n"
        )
        bottom = f"pool{stage}{suffix}"
    for fc, kernel in (("fc6", 7), ("fc7", 1)):
        text += _conv(fc + suffix, bottom, layers[fc + suffix].out_channels, kernel) + _relu(
            f"relu{fc}{suffix}", fc + suffix
        )
        bottom = fc + suffix
    return text


def siftflow_prototxt(stride: int, model: torch.nn.Module, height: int, width: int) -> str:
    """siftflow-fcn{stride}s: the trunk, then per head its score, skips, upsampling and crop (score_sem, score_geo)."""
    text = f'input: "data"\ninput_shape {{ dim: 1 dim: 3 dim: {height} dim: {width} }}\n'
    text += trunk(model.reference_layers(), "data")
    for head, classes in HEADS:
        s = f"_{head}"
        text += _conv(f"score_fr{s}", "fc7", classes, 1)
        if stride == 32:
            text += _deconv(f"upscore{s}", f"score_fr{s}", classes, 64, 32)
            text += _crop(f"score{s}", f"upscore{s}", "data", CROPS[32])
            continue
        text += _deconv(f"upscore2{s}", f"score_fr{s}", classes, 4, 2)
        text += _conv(f"score_pool4{s}", "pool4", classes, 1) + _crop(
            f"score_pool4{s}c", f"score_pool4{s}", f"upscore2{s}", 5
        )
        text += _sum(f"fuse_pool4{s}", f"upscore2{s}", f"score_pool4{s}c")
        fused = f"fuse_pool4{s}"
        if stride == 8:
            text += _deconv(f"upscore_pool4{s}", fused, classes, 4, 2)
            text += _conv(f"score_pool3{s}", "pool3", classes, 1)
            text += _crop(f"score_pool3{s}c", f"score_pool3{s}", f"upscore_pool4{s}", 9)
            text += _sum(f"fuse_pool3{s}", f"upscore_pool4{s}", f"score_pool3{s}c")
            fused = f"fuse_pool3{s}"
        up = f"upscore{stride}{s}"
        text += _deconv(up, fused, classes, 2 * stride, stride) + _crop(f"score{s}", up, "data", CROPS[stride])
    return text


def late_fusion_prototxt(model: torch.nn.Module, height: int, width: int) -> str:
    """nyud-fcn32s-color-hha: two trunks on inputs color and hha, score_fused = 0.5 a + 0.5 b, upscore, crop."""
    shape = f"input_shape {{ dim: 1 dim: 3 dim: {height} dim: {width} }}\n"
    text = f'input: "color"\n{shape}input: "hha"\n{shape}'
    layers = model.reference_layers()
    for stream in ("color", "hha"):
        text += trunk(layers, stream, stream) + _conv(f"score_fr{stream}", f"fc7{stream}", NUM_CLASSES, 1)
    text += (
        'layer { name: "score_fused" type: "Eltwise" bottom: "score_frcolor" bottom: "score_frhha" '
        'top: "score_fused" eltwise_param { operation: SUM coeff: 0.5 coeff: 0.5 } }\n'
    )
    return text + _deconv("upscore", "score_fused", NUM_CLASSES, 64, 32) + _crop("score", "upscore", "color", CROPS[32])


def opencv_outputs(prototxt: str, caffemodel: bytes, inputs: dict[str, np.ndarray], directory, outputs: list[str]):
    (directory / "deploy.prototxt").write_text(prototxt)
    (directory / "weights.caffemodel").write_bytes(caffemodel)
    network = cv2.dnn.readNetFromCaffe(str(directory / "deploy.prototxt"), str(directory / "weights.caffemodel"))
    network.setPreferableBackend(cv2.dnn.DNN_BACKEND_OPENCV)
    network.setPreferableTarget(cv2.dnn.DNN_TARGET_CPU)
    network.enableWinograd(False)
    for name, value in inputs.items():
        network.setInput(value, name)
    return network.forward(outputs)


def load_published_layout(name: str, tmp_path) -> tuple[torch.nn.Module, bytes]:
    """A random model written as a caffemodel and loaded into a fresh fcnseg model (every layer, complete)."""
    caffemodel = fcn_caffemodel(tiny_model(name, NUM_CLASSES, width=WIDTH, seed=7, all_std="he"))
    path = tmp_path / f"{name}.caffemodel"
    path.write_bytes(caffemodel)
    fresh = fcnseg.create_model(name, num_classes=NUM_CLASSES, width=WIDTH).eval()
    loaded = fcnseg.load_caffe_weights(fresh, path, complete=True)
    assert set(loaded) == set(fresh.reference_layers())
    return fresh, caffemodel


@pytest.mark.parametrize("stride", [32, 16, 8])
def test_siftflow_nets_load_the_reference_layout_and_match_both_heads(tmp_path, stride):
    model, caffemodel = load_published_layout(f"siftflow_fcn{stride}s", tmp_path)
    assert model.heads == HEADS and model.preprocessing == SIFTFLOW_CAFFE
    assert {"score_fr_sem", "score_fr_geo", f"upscore{'' if stride == 32 else stride}_geo"} <= set(
        model.reference_layers()
    )
    generator = np.random.default_rng(stride)
    for height, width in SIZES:
        image = generator.standard_normal((1, 3, height, width)).astype(np.float32)
        semantic, geometric = opencv_outputs(
            siftflow_prototxt(stride, model, height, width),
            caffemodel,
            {"data": image},
            tmp_path,
            ["score_sem", "score_geo"],
        )
        with torch.no_grad():
            ours = model(torch.from_numpy(image)).numpy()
        assert ours.shape == (1, 5, height, width) and semantic.shape[1] == 2 and geometric.shape[1] == 3
        assert np.abs(semantic).max() > 0 and np.abs(geometric).max() > 0
        assert relative_error(ours[:, :2], semantic) < TOLERANCE and relative_error(ours[:, 2:], geometric) < TOLERANCE


def test_late_fusion_net_loads_the_reference_layout_and_matches(tmp_path):
    model, caffemodel = load_published_layout("nyud_fcn32s_color_hha", tmp_path)
    assert model.preprocessing == NYUD_CAFFE and model.hha_preprocessing == HHA_CAFFE
    assert {"conv1_1color", "conv1_1hha", "fc7hha", "score_frcolor", "score_frhha", "upscore"} <= set(
        model.reference_layers()
    )
    generator = np.random.default_rng(3)
    for height, width in SIZES:
        color, hha = (generator.standard_normal((1, 3, height, width)).astype(np.float32) for _ in range(2))
        (reference,) = opencv_outputs(
            late_fusion_prototxt(model, height, width), caffemodel, {"color": color, "hha": hha}, tmp_path, ["score"]
        )
        with torch.no_grad():
            ours = model(torch.from_numpy(np.concatenate([color, hha], axis=1))).numpy()
            colour_only = model(torch.from_numpy(np.concatenate([color, 0 * hha], axis=1))).numpy()
        assert ours.shape == reference.shape == (1, NUM_CLASSES, height, width) and np.abs(reference).max() > 0
        assert relative_error(ours, reference) < TOLERANCE
        assert relative_error(colour_only, reference) > 0.01  # the HHA stream counts


def test_colour_hha_preprocessing_subtracts_each_streams_mean():
    model = fcnseg.create_model("nyud_fcn32s_color_hha", num_classes=3, width=WIDTH)
    model.preprocessing = NYUD_CAFFE
    images = torch.zeros(6, 2, 2, dtype=torch.uint8)
    images[0], images[5] = 200, 100  # R of the colour image, angle channel of the HHA image
    blob = preprocess_color_hha(images, model)
    # Colour: BGR, so R lands in channel 2 and loses the red mean 92.318; HHA keeps its order (angle last).
    assert blob[:, 0, 0].tolist() == pytest.approx([-116.190, -97.203, 200 - 92.318, -132.431, -94.076, 100 - 118.477])
    with pytest.raises(ValueError, match=r"colour \+ HHA images"):
        preprocess_color_hha(images[:3], model)


def test_each_stream_takes_a_vgg16_file_under_the_plain_names(tmp_path):
    """Initialising the streams as the reference did (both from VGG16): each stream answers to conv1_1 ... fc7."""
    source = tiny_model("fcn32s", NUM_CLASSES, width=WIDTH, seed=9, all_std="he")
    path = tmp_path / "vgg.caffemodel"
    path.write_bytes(fcn_caffemodel(source))
    model = fcnseg.create_model("nyud_fcn32s_color_hha", num_classes=NUM_CLASSES, width=WIDTH)
    for stream in (model.color, model.hha):
        assert "conv1_1" in fcnseg.load_caffe_weights(stream, path)
        assert torch.equal(stream.backbone.fc7.weight, source.backbone.fc7.weight)
