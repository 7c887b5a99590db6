"""FCN heads on torchvision's trunks: geometry, alignment, dilation, BatchNorm, ImageNet weights.

Independent references: the layer geometry composed by hand; torchvision's own modules run on
the padded input; the head re-implemented with ``F.interpolate(align_corners=True)`` (bilinear
between cells) and slicing. The registry contract test covers size sweeps, gradients,
checkpoints and fast paths of every registered model.
"""

from __future__ import annotations

import math
import subprocess
import sys
import urllib.error
from fractions import Fraction

import pytest
import torch
import torch.nn.functional as F
import torchvision
from safetensors.torch import save_file
from tiny_models import tiny_model

import fcnseg
from fcnseg.engine.initial_weights import apply_initial_weights
from fcnseg.weights import WeightsError, load_imagenet, transfer_fcn

CLASSES = 3
MOBILENET_WIDTH = 0.25
#: Random score layers, weights and biases (the paper's zero init would hide the head).
RANDOM_SCORES = {"score_std": 0.3, "score_bias_std": 0.3}


def model(name: str, **options) -> torch.nn.Module:
    """``name`` at its real width (a ResNet has only one; MobileNetV3 at MOBILENET_WIDTH); options for tiny_model."""
    return tiny_model(name, CLASSES, width=MOBILENET_WIDTH if "mobilenet" in name else 1.0, **options)


# --- geometry ---------------------------------------------------------------------------------------


def _map(kernel: int, stride: int, pad: int, dilation: int = 1) -> tuple[Fraction, Fraction]:
    return Fraction(stride), Fraction((kernel - 1) * dilation, 2) - pad


def _compose(layers) -> tuple[Fraction, Fraction]:
    scale, shift = Fraction(1), Fraction(0)
    for layer_scale, layer_shift in layers:
        scale, shift = scale * layer_scale, scale * layer_shift + shift
    return scale, shift


def test_resnet_feature_maps_by_hand():
    """ResNet: input pad 31, conv1 7x7/2 pad 3, maxpool 3x3/2 pad 1, then a 3x3/2 pad-1 convolution opens
    layer2, layer3, layer4 (3x3 pad-1 and 1x1 convolutions elsewhere map y to y)."""
    stem = [_map(1, 1, 31), _map(7, 2, 3), _map(3, 2, 1)]
    expected = {
        8: _compose(stem + [_map(3, 2, 1)]),
        16: _compose(stem + [_map(3, 2, 1)] * 2),
        32: _compose(stem + [_map(3, 2, 1)] * 3),
    }
    assert expected == {8: (8, -31), 16: (16, -31), 32: (32, -31)}
    for name in ("fcn8s_resnet18", "fcn8s_resnet50"):
        maps = model(name).backbone.coord_maps
        assert {stride: (m.scale, m.shift) for stride, m in maps.items()} == expected, name


def test_channels_and_crops():
    assert model("fcn8s_resnet18").backbone.channels == {8: 128, 16: 256, 32: 512}
    assert model("fcn8s_resnet50").backbone.channels == {8: 512, 16: 1024, 32: 2048}
    full = fcnseg.create_model("fcn8s_mobilenet_v3_large", num_classes=CLASSES)
    assert full.backbone.channels == {8: 40, 16: 112, 32: 960}
    for name in ("fcn32s_resnet18", "fcn16s_resnet18", "fcn8s_resnet18"):
        net = model(name)
        assert net.crop_offsets() == {
            "final": 31,
            **{s: 0 for s in ("score_pool4", "score_pool3")[: 32 // net.stride // 2]},
        }
        assert [
            (m.kernel_size[0], m.stride[0], m.padding[0])
            for m in net.modules()
            if isinstance(m, fcnseg.models.BilinearUpsampling)
        ] == {32: [(63, 32, 31)], 16: [(3, 2, 1), (31, 16, 15)], 8: [(3, 2, 1), (3, 2, 1), (15, 8, 7)]}[net.stride]


def test_input_padding_31_is_the_least_that_covers_every_size():
    """The derivation of the module docstring, checked over 1..2048: with padding P the coarsest map has
    n = ceil((H + 2P) / 32) cells at 32 y - P; the upsampled logits span -P .. 32 (n - 1) - P."""

    def covers(size: int, padding: int) -> bool:
        cells = math.ceil((size + 2 * padding) / 32)
        return 32 * (cells - 1) - padding >= size - 1

    assert all(covers(size, 31) for size in range(1, 2049))
    assert not all(covers(size, 30) for size in range(1, 2049))
    assert model("fcn8s_resnet18").backbone.input_padding == 31


@pytest.mark.parametrize("name", ["fcn8s_resnet18", "fcn32s_mobilenet_v3_large"])
def test_forward_succeeds_at_every_size_up_to_64(name):
    with torch.device("meta"):
        net = fcnseg.create_model(name, num_classes=2).eval()
    with torch.no_grad():
        for height in range(1, 65):  # two periods of the stride 32
            assert net(torch.empty(1, 3, height, 65 - height, device="meta")).shape[-2:] == (height, 65 - height)


# --- the trunk is torchvision's, the head interpolates between cells --------------------------------


def _reference_head(net: torch.nn.Module, features: dict[int, torch.Tensor], height: int, width: int) -> torch.Tensor:
    """The FCN head written with ``F.interpolate(align_corners=True)``: each upsampling puts f - 1 points
    between neighbouring cells; the skips add the first cells of the finer map; the crop drops the padding."""
    coarsest = max(features)
    score = net.score_fr(features[coarsest])
    stride = coarsest
    for skip_stride, score_name in ((16, "score_pool4"), (8, "score_pool3")):
        if net.stride <= skip_stride < coarsest:
            factor, stride = stride // skip_stride, skip_stride
            size = [(n - 1) * factor + 1 for n in score.shape[-2:]]
            score = F.interpolate(score, size=size, mode="bilinear", align_corners=True)
            score = score + getattr(net, score_name)(features[skip_stride])[..., : size[0], : size[1]]
    size = [(n - 1) * stride + 1 for n in score.shape[-2:]]
    padding = net.backbone.input_padding
    full = F.interpolate(score, size=size, mode="bilinear", align_corners=True)
    return full[..., padding : padding + height, padding : padding + width]


@pytest.mark.parametrize("name", ["fcn32s_resnet18", "fcn16s_resnet18", "fcn8s_resnet18", "fcn8s_mobilenet_v3_large"])
def test_logits_equal_torchvision_features_through_an_interpolating_head(name):
    net = model(name, fast_paths=False, **RANDOM_SCORES)
    padding = net.backbone.input_padding
    if "resnet" in name:
        tv = torchvision.models.resnet18()
        tv.load_state_dict({**tv.state_dict(), **net.backbone.body.state_dict()})
        stages = [tv.conv1, tv.bn1, tv.relu, tv.maxpool, tv.layer1, tv.layer2, tv.layer3, tv.layer4]
        taps = {5: 8, 6: 16, 7: 32}
    else:
        tv = torchvision.models.mobilenet_v3_large(width_mult=MOBILENET_WIDTH)
        tv.features.load_state_dict(net.backbone.body.state_dict())
        stages, taps = list(tv.features), {6: 8, 12: 16, 16: 32}
    tv.eval()
    for height, width in [(1, 1), (5, 40), (33, 47)]:
        x = torch.randn(1, 3, height, width)
        features, blob = {}, F.pad(x, (padding,) * 4)
        with torch.no_grad():
            for index, stage in enumerate(stages):
                blob = stage(blob)
                if index in taps:
                    features[taps[index]] = blob
            expected = _reference_head(net, features, height, width)
            torch.testing.assert_close(net(x), expected, rtol=1e-4, atol=1e-5)


def test_staged_fcn16s_from_fcn32s_computes_the_same_logits():
    """Linear interpolation x2 then x16 is linear interpolation x32: the finer net starts where the coarser stopped."""
    coarse = model("fcn32s_resnet18", **RANDOM_SCORES)
    fine = model("fcn16s_resnet18")
    transfer_fcn(coarse, fine)
    x = torch.randn(1, 3, 45, 50)
    with torch.no_grad():
        torch.testing.assert_close(fine(x), coarse(x), rtol=1e-4, atol=1e-5)


# --- output stride by dilation ------------------------------------------------------------------------


def test_output_stride_8_and_16_by_dilation():
    os8 = model("fcn8s_resnet50", output_stride=8)
    assert os8.backbone.channels == {8: 2048} and os8.crop_offsets() == {"final": 7}
    assert (os8.backbone.coord_maps[8].scale, os8.backbone.coord_maps[8].shift) == (8, -7)
    os16 = model("fcn8s_resnet50", output_stride=16)
    assert os16.backbone.channels == {8: 512, 16: 2048} and os16.crop_offsets() == {"score_pool3": 0, "final": 15}
    assert model("fcn16s_mobilenet_v3_large", output_stride=16).backbone.channels[16] == 240
    for net in (os8, os16):
        with torch.no_grad():
            for size in [(1, 1), (9, 13), (24, 17)]:
                assert net(torch.randn(1, 3, *size)).shape[-2:] == size
        assert net.config["output_stride"] in (8, 16)


def test_dilated_trunk_is_torchvisions_and_the_logits_interpolate_it():
    net = model("fcn8s_resnet50", output_stride=8, fast_paths=False, **RANDOM_SCORES)
    tv = torchvision.models.resnet50(replace_stride_with_dilation=[False, True, True]).eval()
    tv.load_state_dict({**tv.state_dict(), **net.backbone.body.state_dict()})
    x = torch.randn(1, 3, 11, 14)
    with torch.no_grad():
        layer4 = torch.nn.Sequential(*list(tv.children())[:-2])(F.pad(x, (7,) * 4))
        torch.testing.assert_close(net(x), _reference_head(net, {8: layer4}, 11, 14), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(
    "name, options, message",
    [
        ("fcn8s_resnet18", {"output_stride": 8}, "BasicBlock .resnet18/34. does not have"),
        (
            "fcn32s_resnet50",
            {"output_stride": 16},
            "stride 32 needs the backbone's stride-32 features; it has strides \\[8, 16\\]",
        ),
        ("fcn8s_mobilenet_v3_large", {"output_stride": 8}, "output_stride must be 32 or 16"),
        ("fcn8s_resnet50", {"output_stride": 4}, "output_stride must be 32, 16 or 8"),
    ],
)
def test_impossible_output_strides_are_refused(name, options, message):
    with pytest.raises(ValueError, match=message):
        fcnseg.create_model(name, num_classes=2, **options)


def test_resnet_width_is_refused_and_mobilenet_width_scales():
    with pytest.raises(ValueError, match="resnet18: width must be 1.0"):
        fcnseg.create_model("fcn8s_resnet18", num_classes=2, width=0.5)
    narrow = fcnseg.create_model("fcn8s_mobilenet_v3_large", num_classes=2, width=0.5)
    assert narrow.backbone.channels[32] == 480 and narrow.config["width"] == 0.5


# --- BatchNorm ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("frozen", [False, True])
def test_frozen_bn_keeps_statistics_while_the_affine_parameters_learn(frozen):
    net = model("fcn8s_resnet18", frozen_bn=frozen, **RANDOM_SCORES).train()
    bn = net.backbone.body.bn1
    before = bn.running_mean.clone()
    logits = net(torch.randn(1, 3, 20, 24) * 3 + 1)
    F.cross_entropy(logits, torch.randint(0, CLASSES, (1, 20, 24))).backward()
    assert bn.training is not frozen and net.training and net.score_fr.training
    assert torch.equal(bn.running_mean, before) is frozen
    assert bn.weight.grad is not None and bn.weight.grad.abs().sum() > 0
    assert net.config["frozen_bn"] is frozen


# --- ImageNet weights -----------------------------------------------------------------------------------


def _no_network(*args, **kwargs):
    raise urllib.error.URLError("no network (simulated by the test)")


@pytest.fixture
def offline_hub(monkeypatch, tmp_path):
    """An empty torch hub cache and no network."""
    monkeypatch.setattr(torch.hub, "_hub_dir", str(tmp_path / "hub"))
    monkeypatch.setattr(torch.hub, "download_url_to_file", _no_network)
    return tmp_path / "hub" / "checkpoints"


def test_offline_error_names_the_file_and_where_to_put_it(offline_hub):
    with pytest.raises(WeightsError) as error:
        apply_initial_weights(model("fcn8s_resnet18"), "imagenet")
    message = str(error.value)
    assert str(offline_hub / "resnet18-f37072fd.pth") in message
    assert "https://download.pytorch.org/models/resnet18-f37072fd.pth" in message and "--init imagenet:PATH" in message
    with pytest.raises(WeightsError, match="vgg16-397923af.pth"):  # VGG16 goes the same way
        with torch.device("meta"):
            vgg = fcnseg.create_model("fcn32s", num_classes=21)
        apply_initial_weights(vgg, "imagenet")


def test_weights_by_name_come_from_the_hub_cache(offline_hub):
    source = torchvision.models.resnet18()
    offline_hub.mkdir(parents=True)
    torch.save(source.state_dict(), offline_hub / "resnet18-f37072fd.pth")
    for spec in ("imagenet", "imagenet:IMAGENET1K_V1", "imagenet:ResNet18_Weights.IMAGENET1K_V1"):
        net = model("fcn8s_resnet18")
        assert "layer4" in apply_initial_weights(net, spec)
        assert torch.equal(net.backbone.body.layer3[1].conv2.weight, source.layer3[1].conv2.weight)
        assert torch.equal(net.backbone.body.bn1.running_var, source.bn1.running_var)
        assert net.preprocessing == fcnseg.TORCHVISION and not net.score_fr.weight.any()
    with pytest.raises(
        WeightsError,
        match=r"'IMAGENET1K_V7': neither a file nor a weights name of torchvision's "
        r"resnet18 \(IMAGENET1K_V1, DEFAULT\)",
    ):
        apply_initial_weights(model("fcn8s_resnet18"), "imagenet:IMAGENET1K_V7")


def test_local_file_loads_and_a_wrong_one_is_refused_without_loading(tmp_path):
    source = torchvision.models.mobilenet_v3_large()
    path = tmp_path / "mobilenet.safetensors"
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, str(path))
    net = fcnseg.create_model("fcn8s_mobilenet_v3_large", num_classes=CLASSES)
    net.preprocessing = fcnseg.CAFFE
    apply_initial_weights(net, f"imagenet:{path}")
    assert torch.equal(net.backbone.body[16][0].weight, source.features[16][0].weight)
    assert net.preprocessing == fcnseg.TORCHVISION
    resnet = model("fcn8s_resnet18")
    before = resnet.backbone.body.conv1.weight.clone()
    with pytest.raises(WeightsError, match=r"'features.0.0.weight' is not a tensor of torchvision's resnet18"):
        load_imagenet(resnet, source.state_dict())
    state = torchvision.models.resnet18().state_dict()
    state["layer1.0.conv1.weight"] = state["layer1.0.conv1.weight"][:, :32]
    with pytest.raises(WeightsError, match=r"layer1.0.conv1.weight has shape \(64, 32, 3, 3\).*\(64, 64, 3, 3\)"):
        load_imagenet(resnet, state)
    del state["layer1.0.conv1.weight"]
    # 120 = conv1 + bn1 (weight, bias, running mean and variance, batch count) + 8 blocks x (2 convs + 2 BNs)
    # + 3 downsamples x (conv + BN): 1 + 5 + 8 * 12 + 3 * 6
    with pytest.raises(WeightsError, match="no 'layer1.0.conv1.weight' .1 of its 120 trunk tensors missing"):
        load_imagenet(resnet, state)
    assert torch.equal(resnet.backbone.body.conv1.weight, before), "nothing is loaded on error"


def test_models_without_torchvision_weights_say_so(offline_hub):
    with pytest.raises(WeightsError, match="width=1.0 models only; this model has width=0.25"):
        load_imagenet(model("fcn8s_mobilenet_v3_large"))
    with pytest.raises(WeightsError, match="fcn_alexnet has no torchvision ImageNet weights.*bvlc_alexnet.caffemodel"):
        load_imagenet(fcnseg.create_model("fcn_alexnet", num_classes=2, width=0.0625))


# --- DDP ----------------------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.skipif(
    not torch.distributed.is_available() or not torch.distributed.is_gloo_available(),
    reason="torch.distributed with gloo is not available",
)
def test_two_gloo_processes_with_frozen_bn_match_one_process(tmp_path):
    """With frozen statistics BatchNorm is the same function in every process, so DDP on the CPU (no
    SyncBatchNorm there: it needs GPUs) trains the one-process weights."""
    from command_runs import TRAIN_ARGS
    from command_runs import subprocess_env as _env
    from safetensors.torch import load_file

    args = [*TRAIN_ARGS, "--set", "model.frozen_bn=true"]
    args[args.index("fcn8s")] = "fcn8s_mobilenet_v3_large"
    one, two = tmp_path / "one", tmp_path / "two"
    single = subprocess.run(
        [sys.executable, "-m", "fcnseg", "train", "--out", str(one), *args],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert single.returncode == 0, single.stdout + single.stderr
    pair = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc-per-node",
            "2",
            "-m",
            "fcnseg",
            "train",
            "--out",
            str(two),
            *args,
        ],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert pair.returncode == 0, pair.stdout + pair.stderr
    a, b = load_file(one / "last.safetensors"), load_file(two / "last.safetensors")
    assert not torch.equal(a["score_fr.weight"], torch.zeros_like(a["score_fr.weight"]))
    for key in a:
        torch.testing.assert_close(b[key], a[key], rtol=1e-4, atol=1e-6, msg=f"{key} differs")


def test_models_command_lists_every_model_and_says_which_widths_do_not_apply(capsys):
    from fcnseg.cli import main

    assert main(["models", "--width", "0.25"]) == 0
    rows = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()[1:]}
    assert sorted(rows) == fcnseg.list_models()
    assert rows["fcn8s_resnet50"].split()[1:] == ["-", "-", "-", "resnet50:", "width", "must", "be", "1.0"]
