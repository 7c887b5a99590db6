"""The FCN family: output geometry, crops, parameter counts, initialisation, gradients.

Reference facts (DESIGN §1, from the paper's Caffe prototxts) are written here as
literal numbers, never taken from the code under test.
"""

from __future__ import annotations

from fractions import Fraction

import pytest
import torch
from tiny_models import tiny_model
from torch import nn

import fcnseg
from fcnseg.models import bilinear_kernel

MODELS = ["fcn32s", "fcn16s", "fcn8s", "fcn8s_atonce"]
TINY = 0.0625  # geometry does not depend on width

#: Crop offsets of the reference Caffe models (voc-fcn32s/16s/8s prototxts: Crop layers' offsets).
REFERENCE_CROPS = {
    "fcn32s": {"final": 19},
    "fcn16s": {"score_pool4": 5, "final": 27},
    "fcn8s": {"score_pool4": 5, "score_pool3": 9, "final": 31},
    "fcn8s_atonce": {"score_pool4": 5, "score_pool3": 9, "final": 31},
}
#: Parameter counts for 21 classes (DESIGN §1): (all, learnable).
REFERENCE_PARAMS = {
    "fcn8s": (134_489_759, 134_362_751),
    "fcn8s_atonce": (134_489_759, 134_362_751),
    "fcn16s": (134_815_994, None),
    "fcn32s": (136_152_917, None),
}
#: Upsampling layers of each model: (name, kernel, stride).
UPSAMPLING = {
    "fcn32s": [("upscore", 64, 32)],
    "fcn16s": [("upscore2", 4, 2), ("upscore16", 32, 16)],
    "fcn8s": [("upscore2", 4, 2), ("upscore_pool4", 4, 2), ("upscore8", 16, 8)],
    "fcn8s_atonce": [("upscore2", 4, 2), ("upscore_pool4", 4, 2), ("upscore8", 16, 8)],
}
SCORE_LAYERS = {
    "fcn32s": ["score_fr"],
    "fcn16s": ["score_fr", "score_pool4"],
    "fcn8s": ["score_fr", "score_pool4", "score_pool3"],
    "fcn8s_atonce": ["score_fr", "score_pool4", "score_pool3"],
}


# --- output size ------------------------------------------------------------------------------


def _pool(size: int) -> int:
    """Caffe/ceil-mode 2x2 stride-2 pooling, no padding."""
    return -(-(size - 2) // 2) + 1


def _deconv(size: int, kernel: int, stride: int) -> int:
    return (size - 1) * stride + kernel


def test_crops_fit_every_size_up_to_2048_analytically():
    """Blob sizes from the layer formulas (conv1_1 pad 100, 3x3 pad-1 convs keep the size, ceil
    pooling, fc6 7x7 unpadded) for every input size 1..2048: each crop window must fit."""
    for size in range(1, 2049):
        conv1 = size + 2 * 100 - 2
        pool1 = _pool(conv1)
        pool2 = _pool(pool1)
        pool3 = _pool(pool2)
        pool4 = _pool(pool3)
        pool5 = _pool(pool4)
        fc7 = pool5 - 6
        assert fc7 >= 1, size
        # FCN-32s
        assert _deconv(fc7, 64, 32) >= 19 + size, size
        # FCN-16s / FCN-8s share the first skip
        up2 = _deconv(fc7, 4, 2)
        assert pool4 >= 5 + up2, size
        assert _deconv(up2, 32, 16) >= 27 + size, size
        up4 = _deconv(up2, 4, 2)
        assert pool3 >= 9 + up4, size
        assert _deconv(up4, 16, 8) >= 31 + size, size


def test_fcn8s_forward_succeeds_at_every_size_up_to_512():
    """The model's own forward (on the meta device: shapes only, no arithmetic) at every height
    and width in 1..512 (paired as h, 513 - h): sixteen periods of the stride 32, beyond which
    the size formulas above repeat."""
    with torch.device("meta"):
        model = fcnseg.create_model("fcn8s", num_classes=2, width=TINY).eval()
    with torch.no_grad():
        for height in range(1, 513):
            out = model(torch.empty(1, 3, height, 513 - height, device="meta"))
            assert out.shape[-2:] == (height, 513 - height)


@pytest.mark.parametrize("name", ["fcn32s", "fcn16s", "fcn8s_atonce"])
def test_forward_succeeds_at_every_small_size(name):
    with torch.device("meta"):
        model = fcnseg.create_model(name, num_classes=2, width=TINY).eval()
    with torch.no_grad():
        for height in range(1, 161):  # five periods of the stride 32
            out = model(torch.empty(1, 3, height, 161 - height, device="meta"))
            assert out.shape[-2:] == (height, 161 - height)


# --- crops ------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", MODELS)
def test_crop_offsets_are_the_reference_numbers(name):
    assert tiny_model(name).crop_offsets() == REFERENCE_CROPS[name]


def _map(kernel: int, stride: int, pad: int) -> tuple[Fraction, Fraction]:
    """(scale, shift) of y_in = scale * y_out + shift for a conv/pool layer."""
    return Fraction(stride), Fraction(kernel - 1, 2) - pad


def _compose(*layers: tuple[Fraction, Fraction]) -> tuple[Fraction, Fraction]:
    scale, shift = Fraction(1), Fraction(0)
    for layer_scale, layer_shift in layers:
        scale, shift = scale * layer_scale, scale * layer_shift + shift
    return scale, shift


def _inverse(layer: tuple[Fraction, Fraction]) -> tuple[Fraction, Fraction]:
    return 1 / layer[0], -layer[1] / layer[0]


def test_reference_crops_follow_from_the_coordinate_maps():
    """An independent derivation of 5, 9, 19, 27, 31 from the VGG16 layer list."""
    conv1 = [_map(3, 1, 100), _map(3, 1, 1)]
    block = lambda n: [_map(3, 1, 1)] * n + [_map(2, 2, 0)]  # noqa: E731
    pool3 = conv1 + [_map(2, 2, 0)] + block(2) + block(3)
    pool4 = pool3 + block(3)
    fc7 = pool4 + block(3) + [_map(7, 1, 0), _map(1, 1, 0)]
    up2 = _inverse(_map(4, 2, 0))

    def crop(blob, reference):
        (scale_b, shift_b), (scale_r, shift_r) = blob, reference
        assert scale_b == scale_r
        offset = (shift_r - shift_b) / scale_b
        assert offset.denominator == 1
        return int(offset)

    score16 = _compose(*fc7, up2)
    assert crop(_compose(*pool4), score16) == 5
    score8 = _compose(*fc7, up2, up2)
    assert crop(_compose(*pool3), score8) == 9
    image = (Fraction(1), Fraction(0))
    assert crop(_compose(*fc7, _inverse(_map(64, 32, 0))), image) == 19
    assert crop(_compose(*fc7, up2, _inverse(_map(32, 16, 0))), image) == 27
    assert crop(_compose(*fc7, up2, up2, _inverse(_map(16, 8, 0))), image) == 31


# --- parameters -------------------------------------------------------------------------------


@pytest.mark.parametrize("name", MODELS)
def test_parameter_counts_for_21_classes(name):
    with torch.device("meta"):  # no memory, no arithmetic: counting needs neither
        model = fcnseg.create_model(name, num_classes=21)
    total = sum(p.numel() for p in model.parameters())
    learnable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    frozen_deconv = sum(21 * 21 * kernel * kernel for _, kernel, _ in UPSAMPLING[name])
    expected_total, expected_learnable = REFERENCE_PARAMS[name]
    assert total == expected_total
    assert learnable == total - frozen_deconv
    if expected_learnable is not None:
        assert learnable == expected_learnable


def test_width_scales_every_channel_count():
    model = fcnseg.create_model("fcn8s", num_classes=21, width=0.25)
    layers = model.reference_layers()
    assert layers["conv1_1"].out_channels == 16
    assert layers["conv5_3"].out_channels == 128
    assert layers["fc6"].weight.shape == (1024, 128, 7, 7)
    assert layers["fc7"].weight.shape == (1024, 1024, 1, 1)
    assert layers["score_pool3"].in_channels == 64


# --- initialisation ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", MODELS)
def test_score_layers_start_at_zero(name):
    model = tiny_model(name)
    for layer in SCORE_LAYERS[name]:
        module = getattr(model, layer)
        assert not module.weight.any() and not module.bias.any(), layer


def _kernel_by_formula(size: int) -> list[list[float]]:
    factor = (size + 1) // 2
    center = factor - 1 if size % 2 == 1 else factor - 0.5
    ramp = [1 - abs(i - center) / factor for i in range(size)]
    return [[a * b for b in ramp] for a in ramp]


@pytest.mark.parametrize("size", [1, 2, 3, 4, 5, 16, 32, 64])
def test_bilinear_kernel_matches_formula(size):
    expected = torch.tensor(_kernel_by_formula(size), dtype=torch.float32)
    assert torch.allclose(bilinear_kernel(size), expected, atol=1e-7, rtol=0)


def test_bilinear_kernel_literal_values():
    ramp4 = torch.tensor([0.25, 0.75, 0.75, 0.25])
    assert torch.equal(bilinear_kernel(4), ramp4[:, None] * ramp4[None, :])
    ramp3 = torch.tensor([0.5, 1.0, 0.5])
    assert torch.equal(bilinear_kernel(3), ramp3[:, None] * ramp3[None, :])


@pytest.mark.parametrize("name", MODELS)
def test_upsampling_is_bilinear_on_the_channel_diagonal_and_frozen(name):
    model = tiny_model(name, num_classes=4)
    for layer, kernel, stride in UPSAMPLING[name]:
        module = getattr(model, layer)
        assert module.kernel_size == (kernel, kernel) and module.stride == (stride, stride) and module.bias is None
        assert not module.weight.requires_grad
        expected = torch.zeros(4, 4, kernel, kernel)
        for c in range(4):
            expected[c, c] = torch.tensor(_kernel_by_formula(kernel))
        assert torch.allclose(module.weight, expected, atol=1e-7, rtol=0), layer


def test_bilinear_upsampling_interpolates_linearly():
    """Away from the borders, x2 upsampling of a ramp is the ramp at half-pixel steps."""
    module = fcnseg.models.BilinearUpsampling(1, 2)
    ramp = torch.arange(8, dtype=torch.float32).view(1, 1, 1, 8).expand(1, 1, 8, 8)
    with torch.no_grad():
        out = module(ramp)[0, 0]
    # Output pixel j (kernel 4, stride 2) sits at input coordinate (j - 1.5) / 2.
    row = out[8, 3:13]
    expected = (torch.arange(3, 13, dtype=torch.float32) - 1.5) / 2
    assert torch.allclose(row, expected, atol=1e-6)


def test_learnable_upsampling_option():
    model = tiny_model("fcn8s", learnable_upsampling=True)
    for layer, _, _ in UPSAMPLING["fcn8s"]:
        assert getattr(model, layer).weight.requires_grad
    assert all(p.requires_grad for p in model.parameters())


def test_dropout_is_elementwise_with_p_one_half():
    model = tiny_model("fcn8s")
    assert not any(isinstance(m, nn.Dropout2d) for m in model.modules())
    dropouts = [model.backbone.drop6, model.backbone.drop7]
    assert all(type(d) is nn.Dropout and d.p == 0.5 for d in dropouts)
    drop = model.backbone.drop6.train()
    out = drop(torch.ones(1, 8, 32, 32))
    for channel in out[0]:
        zeros = (channel == 0).float().mean().item()
        assert 0.3 < zeros < 0.7, "a whole channel dropped or kept: channel-wise dropout"
    assert set(out.unique().tolist()) == {0.0, 2.0}


def test_dropout_option_and_eval_is_deterministic():
    assert tiny_model("fcn8s", dropout=0.0).backbone.drop6.p == 0.0
    model = tiny_model("fcn8s")
    with torch.no_grad():
        model.score_fr.weight.normal_()
        x = torch.randn(1, 3, 21, 21)
        assert torch.equal(model(x), model(x))


# --- at-once ----------------------------------------------------------------------------------


def test_atonce_scales_the_skip_features():
    model = tiny_model("fcn8s_atonce")
    seen: dict[str, torch.Tensor] = {}
    model.backbone.register_forward_hook(lambda m, i, out: seen.update(features=out))
    model.score_pool4.register_forward_hook(lambda m, i, o: seen.update(pool4=i[0]))
    model.score_pool3.register_forward_hook(lambda m, i, o: seen.update(pool3=i[0]))
    with torch.no_grad():
        model(torch.randn(1, 3, 45, 45))
    features = seen["features"]
    assert features[16].abs().max() > 0
    assert torch.allclose(seen["pool4"], features[16] * 0.01, rtol=1e-6, atol=0)
    assert torch.allclose(seen["pool3"], features[8] * 0.0001, rtol=1e-6, atol=0)


def test_plain_fcn8s_does_not_scale_the_skips():
    model = tiny_model("fcn8s")
    seen: dict[str, torch.Tensor] = {}
    model.backbone.register_forward_hook(lambda m, i, out: seen.update(features=out))
    model.score_pool4.register_forward_hook(lambda m, i, o: seen.update(pool4=i[0]))
    with torch.no_grad():
        model(torch.randn(1, 3, 45, 45))
    assert torch.equal(seen["pool4"], seen["features"][16])


# --- registry and config ----------------------------------------------------------------------


def test_registry_lists_the_voc_models_the_other_datasets_nets_and_the_other_backbones():
    torchvision_heads = {
        "resnet18": "32 16 8",
        "resnet34": "8",
        "resnet50": "32 16 8",
        "resnet101": "8",
        "mobilenet_v3_large": "32 16 8",
    }
    others = [
        "nyud_fcn32s_color_hha",
        "siftflow_fcn16s",
        "siftflow_fcn32s",
        "siftflow_fcn8s",
        "fcn_alexnet",
        "fcn4s",
        "fcn2s",
    ]
    others += [f"fcn{s}s_{arch}" for arch, strides in torchvision_heads.items() for s in strides.split()]
    assert fcnseg.list_models() == sorted(MODELS + others)
    with pytest.raises(ValueError, match="unknown model"):
        fcnseg.create_model("fcn1s", num_classes=2)


def test_config_describes_the_model_built_directly():
    model = fcnseg.models.FCN(3, stride=16, width=TINY, learnable_upsampling=True, dropout=0.1)
    config = dict(model.config)
    rebuilt = fcnseg.create_model(config.pop("name"), **config)
    assert type(rebuilt) is type(model) and rebuilt.stride == 16
    assert {k: v.shape for k, v in rebuilt.state_dict().items()} == {k: v.shape for k, v in model.state_dict().items()}
    assert rebuilt.backbone.drop6.p == 0.1 and rebuilt.upscore2.weight.requires_grad


def test_reference_layer_names():
    names = list(tiny_model("fcn8s").reference_layers())
    assert names[:13] == [f"conv{s}_{i}" for s, n in enumerate((2, 2, 3, 3, 3), 1) for i in range(1, n + 1)]
    assert set(names[13:]) == {
        "fc6",
        "fc7",
        "score_fr",
        "score_pool4",
        "score_pool3",
        "upscore2",
        "upscore_pool4",
        "upscore8",
    }


def test_fcn4s_and_fcn2s_crops_by_hand():
    # pool2 sits at 4y - 97.5 and pool1 at 2y - 98.5 in the image (conv1_1 pads 100, each 2x2 pool adds 0.5 of
    # its input step); after upscore_pool4 the score is at 8y - 23.5, after upscore_pool3 (k4 s2) at 4y - 29.5,
    # after upscore_pool2 at 2y - 32.5: pool2 crops (97.5 - 29.5) / 4 = 17, pool1 (98.5 - 32.5) / 2 = 33; the
    # final k8 s4 upsampling leaves y - 33, the final k4 s2 one y - 34.
    assert tiny_model("fcn4s").crop_offsets() == {"score_pool4": 5, "score_pool3": 9, "score_pool2": 17, "final": 33}
    assert tiny_model("fcn2s").crop_offsets() == {
        "score_pool4": 5,
        "score_pool3": 9,
        "score_pool2": 17,
        "score_pool1": 33,
        "final": 34,
    }


def test_fcn4s_starts_from_fcn8s_as_the_paper_stages_its_nets():
    from fcnseg.weights import transfer_fcn

    coarse = tiny_model("fcn8s")
    with torch.no_grad():
        for parameter in coarse.parameters():
            if parameter.requires_grad:  # trained weights; the upsampling stays bilinear
                parameter.normal_(std=0.1)
    fine = tiny_model("fcn4s")
    transfer_fcn(coarse, fine)
    assert not fine.score_pool2.weight.any()  # the new skip starts at zero ...
    x = torch.randn(1, 3, 45, 61)
    with torch.no_grad():  # ... so FCN-4s starts out close to FCN-8s (bilinear x2 then x4 is nearly bilinear x8)
        got, expected = fine(x), coarse(x)
    assert (got - expected).abs().mean() < 0.1 * expected.abs().mean()
    assert (got.argmax(1) == expected.argmax(1)).float().mean() > 0.9
