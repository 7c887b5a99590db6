"""FCN-AlexNet (paper Table 1) against the reference voc-fcn-alexnet net.

The reference facts are typed in here from the published net definition: conv1 11x11/4 pad 100
(96), pool 3x3/2 then LRN (5, 1e-4, 0.75) after conv1 and conv2, conv2 5x5 pad 2 (256, 2 groups),
conv3 3x3 (384), conv4 3x3 (384, 2 groups), conv5 3x3 (256, 2 groups), pool5, fc6 6x6 (4096),
fc7 1x1 (4096), score_fr, upscore 63/32 without bias, Crop offset 18. The fidelity test runs
that deploy net in OpenCV's DNN module (Caffe semantics, no fcnseg code) with the same random
weights, written by the tests' own caffemodel encoder.
"""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from caffe_encoder import fcn_caffemodel
from tiny_models import tiny_model

import fcnseg
from fcnseg.weights import WeightsError

WIDTH = 0.0625
NUM_CLASSES = 5
SIZES = [(1, 1), (17, 17), (37, 23), (53, 61)]
TOLERANCE = 1e-4
#: Input scale of the fidelity test: Caffe's inputs are 0..255 minus the mean, so activations are
#: large enough for the LRN (alpha 1e-4) to matter; asserted below.
INPUT_SCALE = 60.0


# --- geometry and size, from the reference numbers ------------------------------------------------


def test_final_crop_is_18_and_follows_from_the_reference_layers():
    """y_in = s * y_out + (k - 1) / 2 - pad per layer, composed by hand; the deconvolution inverts its map."""
    layers = [
        (11, 4, 100),
        (3, 2, 0),
        (5, 1, 2),
        (3, 2, 0),
        (3, 1, 1),
        (3, 1, 1),
        (3, 1, 1),
        (3, 2, 0),
        (6, 1, 0),
        (1, 1, 0),
    ]
    scale, shift = Fraction(1), Fraction(0)
    for kernel, stride, pad in layers:
        scale, shift = scale * stride, scale * (Fraction(kernel - 1, 2) - pad) + shift
    assert (scale, shift) == (32, 13)
    upscore_shift = -Fraction(63 - 1, 2) / 32  # inverse of the 63/32 convolution's map
    assert -(shift + scale * upscore_shift) == 18
    assert fcnseg.create_model("fcn_alexnet", num_classes=2, width=WIDTH).crop_offsets() == {"final": 18}


def test_parameter_count_for_21_classes():
    """Counted by hand from the layer shapes (grouped convolutions see half their input channels)."""
    conv1 = 96 * 3 * 11 * 11 + 96
    conv2 = 256 * (96 // 2) * 5 * 5 + 256
    conv3 = 384 * 256 * 3 * 3 + 384
    conv4 = 384 * (384 // 2) * 3 * 3 + 384
    conv5 = 256 * (384 // 2) * 3 * 3 + 256
    fc6 = 4096 * 256 * 6 * 6 + 4096
    fc7 = 4096 * 4096 + 4096
    score_fr = 21 * 4096 + 21
    upscore = 21 * 21 * 63 * 63
    learnable = conv1 + conv2 + conv3 + conv4 + conv5 + fc6 + fc7 + score_fr
    assert (learnable, upscore) == (56_954_261, 1_750_329)
    with torch.device("meta"):
        model = fcnseg.create_model("fcn_alexnet", num_classes=21)
    assert sum(p.numel() for p in model.parameters()) == learnable + upscore == 58_704_590
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == learnable
    assert tuple(model.backbone.conv4.weight.shape) == (384, 192, 3, 3) and model.backbone.conv4.groups == 2


def test_forward_succeeds_at_every_size_up_to_192():
    with torch.device("meta"):
        model = fcnseg.create_model("fcn_alexnet", num_classes=2, width=WIDTH).eval()
    with torch.no_grad():
        for height in range(1, 193):  # six periods of the stride 32
            assert model(torch.empty(1, 3, height, 193 - height, device="meta")).shape[-2:] == (height, 193 - height)


def test_lrn_is_caffes_formula():
    """Caffe ACROSS_CHANNELS: a / (1 + alpha / 5 * sum of a^2 over channels c-2..c+2)^0.75, computed here with numpy."""
    x = np.random.default_rng(0).standard_normal((1, 7, 2, 3)).astype(np.float64) * 40
    padded = np.pad(x**2, ((0, 0), (2, 2), (0, 0), (0, 0)))
    window = sum(padded[:, i : i + 7] for i in range(5))
    expected = x / (1 + 1e-4 / 5 * window) ** 0.75
    from fcnseg.models.alexnet import LRN

    got = torch.nn.functional.local_response_norm(torch.from_numpy(x), **LRN).numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-12)


def test_pooling_is_caffes_ceil_mode_at_every_size():
    from fcnseg.models.alexnet import caffe_pool

    for height in range(3, 41):
        x = torch.randn(1, 2, height, 43 - height)
        torch.testing.assert_close(caffe_pool(x), F.max_pool2d(x, 3, 2, ceil_mode=True), rtol=0, atol=0)


@pytest.mark.slow  # torch.export and ONNX Runtime: ~10 s
def test_fcn_alexnet_exports_to_onnx_with_the_default_exporter(tmp_path):
    pytest.importorskip("onnxruntime")
    from fcnseg.checkpoint import save_checkpoint
    from fcnseg.export.onnx import export_onnx

    model = tiny_model("fcn_alexnet", NUM_CLASSES, width=WIDTH, all_std="he")
    path = save_checkpoint(
        tmp_path / "alexnet.safetensors",
        model,
        classes=[f"c{i}" for i in range(NUM_CLASSES)],
        palette=[(i, i, i) for i in range(NUM_CLASSES)],
    )
    assert export_onnx(path, tmp_path / "alexnet.onnx").ok


def test_width_keeps_the_groups_even_and_odd_widths_work():
    model = fcnseg.create_model("fcn_alexnet", num_classes=3, width=0.3).eval()
    assert all(getattr(model.backbone, f"conv{i}").out_channels % 2 == 0 for i in range(1, 6))
    with torch.no_grad():
        assert model(torch.randn(1, 3, 9, 14)).shape == (1, 3, 9, 14)


# --- fidelity: OpenCV's Caffe-semantics forward -----------------------------------------------------


def deploy_prototxt(model: torch.nn.Module, height: int, width: int) -> str:
    """The reference deploy net (voc-fcn-alexnet layout) with this model's channel counts."""
    layers = model.reference_layers()

    def conv(name: str, bottom: str, kernel: int, stride: int = 1, pad: int = 0, group: int = 1) -> str:
        return (
            f'layer {{ name: "{name}" type: "Convolution" bottom: "{bottom}" top: "{name}" convolution_param {{ '
            f"num_output: {layers[name].out_channels} kernel_size: {kernel} stride: {stride} pad: {pad} "
            f'group: {group} }} }}\nlayer {{ name: "relu_{name}" type: "ReLU" bottom: "{name}" top: "{name}" }}\n'
        )

    def pool_norm(index: int, bottom: str, norm: bool) -> str:
        text = (
            f'layer {{ name: "pool{index}" type: "Pooling" bottom: "{bottom}" top: "pool{index}" '
            "pooling_param { pool: MAX kernel_size: 3 stride: 2 } }\n"
        )
        if norm:
            text += (
                f'layer {{ name: "norm{index}" type: "LRN" bottom: "pool{index}" top: "norm{index}" '
                "lrn_param { local_size: 5 alpha: 0.0001 beta: 0.75 } }\n"
            )
        return text

    c = NUM_CLASSES
    return (
        f'name: "fcn_alexnet"\ninput: "data"\ninput_shape {{ dim: 1 dim: 3 dim: {height} dim: {width} }}\n'
        + conv("conv1", "data", 11, stride=4, pad=100)
        + pool_norm(1, "conv1", True)
        + conv("conv2", "norm1", 5, pad=2, group=2)
        + pool_norm(2, "conv2", True)
        + conv("conv3", "norm2", 3, pad=1)
        + conv("conv4", "conv3", 3, pad=1, group=2)
        + conv("conv5", "conv4", 3, pad=1, group=2)
        + pool_norm(5, "conv5", False)
        + conv("fc6", "pool5", 6)
        + conv("fc7", "fc6", 1)
        + f'layer {{ name: "score_fr" type: "Convolution" bottom: "fc7" top: "score_fr" '
        f"convolution_param {{ num_output: {c} kernel_size: 1 }} }}\n"
        + f'layer {{ name: "upscore" type: "Deconvolution" bottom: "score_fr" top: "upscore" '
        f"convolution_param {{ num_output: {c} kernel_size: 63 stride: 32 bias_term: false }} }}\n"
        + 'layer { name: "score" type: "Crop" bottom: "upscore" bottom: "data" top: "score" '
        "crop_param { axis: 2 offset: 18 } }\n"
    )


@pytest.fixture
def opencv():
    """OpenCV's forward and the relative error, from the VGG fidelity test (skips without cv2)."""
    pytest.importorskip("cv2")
    import test_fidelity_opencv as fidelity

    return fidelity.opencv_forward, fidelity.relative_error


def test_fcn_alexnet_matches_the_caffe_semantics_forward(tmp_path, opencv, monkeypatch):
    forward, relative_error = opencv
    model = tiny_model("fcn_alexnet", NUM_CLASSES, width=WIDTH, all_std="he")
    caffemodel = fcn_caffemodel(model)
    generator = np.random.default_rng(1)
    for height, width in SIZES:
        image = (generator.standard_normal((1, 3, height, width)) * INPUT_SCALE).astype(np.float32)
        reference = forward(deploy_prototxt(model, height, width), caffemodel, image, tmp_path)
        with torch.no_grad():
            ours = model(torch.from_numpy(image)).numpy()
        assert ours.shape == reference.shape == (1, NUM_CLASSES, height, width)
        error = relative_error(ours, reference)
        assert error < TOLERANCE, f"fcn_alexnet at {height}x{width}: relative error {error:.2e}"
    # The check can fail: without the LRN the same net is far off the reference.
    monkeypatch.setattr(torch.nn.functional, "local_response_norm", lambda x, *args, **kwargs: x)
    with torch.no_grad():
        assert relative_error(model(torch.from_numpy(image)).numpy(), reference) > 1e-2


def test_published_layout_loads_and_matches_opencv(tmp_path, opencv):
    """The fcn-alexnet-pascal.caffemodel layout (here V1 layers with legacy 4-D blob shapes) loads
    into fcn_alexnet, and the loaded model matches OpenCV's forward of the same file."""
    forward, relative_error = opencv
    source = tiny_model("fcn_alexnet", NUM_CLASSES, width=WIDTH, seed=3, all_std="he")
    path = tmp_path / "fcn-alexnet.caffemodel"
    path.write_bytes(fcn_caffemodel(source, version="v1", shape="legacy"))
    loaded = fcnseg.create_model("fcn_alexnet", num_classes=NUM_CLASSES, width=WIDTH).eval()
    names = fcnseg.load_caffe_weights(loaded, path, complete=True)
    assert names == ["conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7", "score_fr", "upscore"]
    assert loaded.preprocessing == fcnseg.CAFFE
    image = np.random.default_rng(2).standard_normal((1, 3, 29, 31)).astype(np.float32) * INPUT_SCALE
    reference = forward(deploy_prototxt(loaded, 29, 31), path.read_bytes(), image, tmp_path)
    with torch.no_grad():
        assert relative_error(loaded(torch.from_numpy(image)).numpy(), reference) < TOLERANCE


def test_imagenet_alexnet_layout_loads_fc6_as_a_6x6_convolution(tmp_path):
    """The ImageNet AlexNet caffemodel stores fc6/fc7 as InnerProduct (4096 x 256*6*6, 4096 x 4096)."""
    source = tiny_model("fcn_alexnet", NUM_CLASSES, width=WIDTH, seed=4, all_std="he")
    path = tmp_path / "alexnet.caffemodel"
    path.write_bytes(fcn_caffemodel(source, inner_product=True))
    loaded = fcnseg.create_model("fcn_alexnet", num_classes=NUM_CLASSES, width=WIDTH)
    fcnseg.load_caffe_weights(loaded, path)
    for name, layer in source.reference_layers().items():
        assert torch.equal(loaded.reference_layers()[name].weight, layer.weight), name


def test_wrong_model_files_are_refused(tmp_path):
    alexnet_file, vgg_file = tmp_path / "alexnet.caffemodel", tmp_path / "vgg.caffemodel"
    alexnet_file.write_bytes(fcn_caffemodel(tiny_model("fcn_alexnet", NUM_CLASSES, width=WIDTH, all_std="he")))
    vgg_file.write_bytes(fcn_caffemodel(fcnseg.create_model("fcn32s", num_classes=NUM_CLASSES, width=WIDTH)))
    with pytest.raises(WeightsError, match=r"the file has layers the model lacks: \['conv1', 'conv2'"):
        fcnseg.load_caffe_weights(
            fcnseg.create_model("fcn32s", num_classes=NUM_CLASSES, width=WIDTH), alexnet_file, complete=True
        )
    with pytest.raises(WeightsError, match=r"the file has layers the model lacks: \['conv1_1', 'conv1_2'"):
        fcnseg.load_caffe_weights(
            tiny_model("fcn_alexnet", NUM_CLASSES, width=WIDTH, all_std="he"), vgg_file, complete=True
        )
    wider = fcnseg.create_model("fcn_alexnet", num_classes=NUM_CLASSES, width=2 * WIDTH)
    with pytest.raises(WeightsError, match=r"layer 'conv1' \(Convolution\) weight has shape \(6, 3, 11, 11\)"):
        fcnseg.load_caffe_weights(wider, alexnet_file)
