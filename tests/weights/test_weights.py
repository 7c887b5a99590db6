"""Weight surgery: torchvision VGG16 into the FCN trunk, FCN -> FCN, and new class counts."""

from __future__ import annotations

import urllib.error

import pytest
import torch
import torchvision
from safetensors.torch import save_file
from tiny_models import randomise, tiny_model

import fcnseg
from fcnseg.models.upsampling import bilinear_kernel
from fcnseg.weights import (
    WeightsError,
    change_num_classes_state,
    class_index_map,
    load_vgg16_torchvision,
    transfer_fcn,
    transfer_fcn_state,
    vgg16_from_torchvision,
    with_num_classes,
)

TINY = 0.0625
#: Positions of the 13 convolutions in torchvision's ``vgg16().features`` (ReLUs and pools between).
TV_CONV_INDICES = [0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28]
CONV_NAMES = [f"conv{s}_{i}" for s, n in enumerate((2, 2, 3, 3, 3), 1) for i in range(1, n + 1)]


#: The scale of a "trained" model's weights here: every parameter random, upsampling kernels included.
TRAINED = 0.1


def fake_torchvision_state(width: float = TINY, seed: int = 0) -> dict[str, torch.Tensor]:
    """A random state dict in torchvision's VGG16 layout, with a tiny model's channel counts."""
    generator = torch.Generator().manual_seed(seed)
    layers = tiny_model("fcn32s", width=width).reference_layers()
    state = {}
    for index, name in zip(TV_CONV_INDICES, CONV_NAMES, strict=True):
        state[f"features.{index}.weight"] = torch.randn(layers[name].weight.shape, generator=generator)
        state[f"features.{index}.bias"] = torch.randn(layers[name].bias.shape, generator=generator)
    fc = layers["fc6"].out_channels
    pool5 = layers["conv5_3"].out_channels
    for index, (outputs, inputs) in {0: (fc, pool5 * 49), 3: (fc, fc), 6: (1000, fc)}.items():
        state[f"classifier.{index}.weight"] = torch.randn(outputs, inputs, generator=generator)
        state[f"classifier.{index}.bias"] = torch.randn(outputs, generator=generator)
    return state


def test_fake_state_has_torchvisions_vgg16_layout():
    with torch.device("meta"):
        real = torchvision.models.vgg16().state_dict()
    assert list(real) == list(fake_torchvision_state())
    assert real["classifier.0.weight"].shape == (4096, 512 * 7 * 7)


# --- torchvision VGG16 ------------------------------------------------------------------------


def check_loaded(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    layers = model.reference_layers()
    for index, name in zip(TV_CONV_INDICES, CONV_NAMES, strict=True):
        assert torch.equal(layers[name].weight, state[f"features.{index}.weight"]), name
        assert torch.equal(layers[name].bias, state[f"features.{index}.bias"]), name
    fc6, fc7 = layers["fc6"], layers["fc7"]
    linear6 = state["classifier.0.weight"]
    # fc6[o, c, y, x] is the linear weight of pool5 pixel (c, y, x), flattened as (c * 7 + y) * 7 + x.
    for o, c, y, x in [(0, 0, 0, 0), (3, 5, 2, 6), (fc6.out_channels - 1, fc6.in_channels - 1, 6, 6)]:
        assert fc6.weight[o, c, y, x] == linear6[o, (c * 7 + y) * 7 + x]
    assert torch.equal(fc6.weight.flatten(1), linear6)
    assert torch.equal(fc6.bias, state["classifier.0.bias"])
    assert torch.equal(fc7.weight[:, :, 0, 0], state["classifier.3.weight"])
    assert torch.equal(fc7.bias, state["classifier.3.bias"])


def test_torchvision_state_dict_loads_bit_exactly():
    state = fake_torchvision_state()
    copy = {k: v.clone() for k, v in state.items()}
    model = tiny_model("fcn8s")
    model.preprocessing = fcnseg.CAFFE
    loaded = load_vgg16_torchvision(model, state)
    assert loaded == CONV_NAMES + ["fc6", "fc7"]
    check_loaded(model, state)
    assert not model.score_fr.weight.any(), "fc8 is not copied: the score layer stays at zero"
    assert model.preprocessing == fcnseg.TORCHVISION
    assert all(torch.equal(state[k], copy[k]) for k in state), "the source must not change"


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_torchvision_file_loads(tmp_path, suffix):
    state = fake_torchvision_state(seed=3)
    path = tmp_path / f"vgg16{suffix}"
    if suffix == ".pth":
        torch.save(state, path)
    else:
        save_file(state, str(path))
    model = tiny_model("fcn32s")
    load_vgg16_torchvision(model, path)
    check_loaded(model, state)


class NotATensor:
    pass


def test_pickled_code_is_refused(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"features.0.weight": NotATensor()}, path)
    with pytest.raises(WeightsError, match="evil.pth: refused: .*could run code"):
        load_vgg16_torchvision(tiny_model("fcn32s"), path)


def test_missing_file_is_named(tmp_path):
    with pytest.raises(WeightsError, match="nothere.pth: no such"):
        load_vgg16_torchvision(tiny_model("fcn32s"), tmp_path / "nothere.pth")


def test_nan_classifier_is_refused_as_feature_only_weights():
    state = fake_torchvision_state()
    state["classifier.0.weight"][0, 0] = float("nan")
    with pytest.raises(WeightsError, match="IMAGENET1K_FEATURES"):
        load_vgg16_torchvision(tiny_model("fcn32s"), state)


def test_imagenet1k_features_is_refused_without_downloading(monkeypatch):
    monkeypatch.setattr(torch.hub, "download_url_to_file", _no_network_allowed)
    with pytest.raises(WeightsError, match="IMAGENET1K_FEATURES.*NaN"):
        load_vgg16_torchvision(_meta_model(), torchvision.models.VGG16_Weights.IMAGENET1K_FEATURES)


def test_other_layouts_are_refused():
    with pytest.raises(WeightsError, match="13"):
        vgg16_from_torchvision({"conv1.weight": torch.zeros(64, 3, 7, 7)})
    state = fake_torchvision_state()
    state["features.1.running_mean"] = torch.zeros(4)
    with pytest.raises(WeightsError, match="vgg16_bn"):
        vgg16_from_torchvision(state)
    state = fake_torchvision_state()
    del state["classifier.3.bias"]
    with pytest.raises(WeightsError, match="classifier.3.bias"):
        vgg16_from_torchvision(state)


def test_wrong_width_names_the_layer_and_the_width():
    state = fake_torchvision_state(width=0.125)
    model = tiny_model("fcn32s")
    before = model.backbone.conv1_1.weight.clone()
    with pytest.raises(WeightsError, match=r"'conv1_1'.*\(8, 3, 3, 3\).*\(4, 3, 3, 3\).*width=0.0625"):
        load_vgg16_torchvision(model, state)
    assert torch.equal(model.backbone.conv1_1.weight, before), "nothing is loaded on error"


def _no_network_allowed(*args, **kwargs):
    raise urllib.error.URLError("no network (simulated by the test)")


def _meta_model() -> torch.nn.Module:
    with torch.device("meta"):  # the paper's width without allocating 540 MB
        return fcnseg.create_model("fcn32s", num_classes=21)


def test_download_offline_says_which_file_to_place_where(monkeypatch, tmp_path):
    monkeypatch.setattr(torch.hub, "_hub_dir", str(tmp_path / "hub"))
    monkeypatch.setattr(torch.hub, "download_url_to_file", _no_network_allowed)
    with pytest.raises(WeightsError) as error:
        load_vgg16_torchvision(_meta_model())
    message = str(error.value)
    assert str(tmp_path / "hub" / "checkpoints" / "vgg16-397923af.pth") in message
    assert "https://download.pytorch.org/models/vgg16-397923af.pth" in message


def test_download_uses_the_cached_file(monkeypatch, tmp_path):
    """A file already in the torch hub cache is read (no download): here a tiny one, which then
    does not fit the full-width model, and the error shows it was read."""
    monkeypatch.setattr(torch.hub, "_hub_dir", str(tmp_path / "hub"))
    monkeypatch.setattr(torch.hub, "download_url_to_file", _no_network_allowed)
    cached = tmp_path / "hub" / "checkpoints" / "vgg16-397923af.pth"
    cached.parent.mkdir(parents=True)
    torch.save(fake_torchvision_state(), cached)
    with pytest.raises(WeightsError, match=r"'conv1_1'.*\(4, 3, 3, 3\).*\(64, 3, 3, 3\)"):
        load_vgg16_torchvision(_meta_model())


def test_download_needs_the_full_width(monkeypatch):
    monkeypatch.setattr(torch.hub, "download_url_to_file", _no_network_allowed)
    with pytest.raises(WeightsError, match="width=1.0 models only"):
        load_vgg16_torchvision(tiny_model("fcn32s"))


# --- FCN -> FCN -------------------------------------------------------------------------------


def test_fcn32s_to_fcn16s_to_fcn8s():
    fcn32s = tiny_model("fcn32s", seed=1, all_std=TRAINED)
    fcn16s = tiny_model("fcn16s")
    copied = transfer_fcn(fcn32s, fcn16s)
    assert copied == CONV_NAMES + ["fc6", "fc7", "score_fr"]
    for name in copied:
        for (_, a), (_, b) in zip(
            fcn32s.reference_layers()[name].named_parameters(),
            fcn16s.reference_layers()[name].named_parameters(),
            strict=True,
        ):
            assert torch.equal(a, b), name
    assert not fcn16s.score_pool4.weight.any() and not fcn16s.score_pool4.bias.any()
    assert torch.equal(fcn16s.upscore2.weight[1, 1], bilinear_kernel(4))
    assert torch.equal(fcn16s.upscore16.weight[2, 2], bilinear_kernel(32))

    randomise(fcn16s, seed=2, all_std=TRAINED)  # "trained" 16s, learned upsampling included
    fcn8s = tiny_model("fcn8s")
    transfer_fcn(fcn16s, fcn8s)
    for key in [
        "backbone.conv3_1.weight",
        "score_fr.bias",
        "score_pool4.weight",
        "score_pool4.bias",
        "upscore2.weight",
    ]:
        assert torch.equal(fcn8s.state_dict()[key], fcn16s.state_dict()[key]), key
    assert not fcn8s.score_pool3.weight.any()
    assert torch.equal(fcn8s.upscore8.weight[0, 0], bilinear_kernel(16))
    assert not fcn8s.upscore8.weight[0, 1].any()


def test_transfer_is_pure_and_shape_checked():
    source = tiny_model("fcn32s", seed=5, all_std=TRAINED).state_dict()
    snapshot = {k: v.clone() for k, v in source.items()}
    target = tiny_model("fcn16s").state_dict()
    out = transfer_fcn_state(source, target)
    out["score_fr.weight"].add_(1)
    assert all(torch.equal(source[k], snapshot[k]) for k in source), "source changed"
    assert out.keys() == target.keys()

    wider = tiny_model("fcn16s", width=0.125).state_dict()
    with pytest.raises(WeightsError, match=r"backbone.conv1_1.weight has shape \(4, 3, 3, 3\).*\(8, 3, 3, 3\)"):
        transfer_fcn_state(source, wider)
    other_classes = tiny_model("fcn16s", num_classes=5).state_dict()
    with pytest.raises(WeightsError, match="score_fr.weight has 3 classes.*5.*with_num_classes"):
        transfer_fcn_state(source, other_classes)
    with pytest.raises(WeightsError, match="backbone.fc7.bias"):
        transfer_fcn_state({k: v for k, v in source.items() if k != "backbone.fc7.bias"}, target)


def test_fcn8s_and_atonce_transfer_fold_the_fixed_scales():
    fcn8s = tiny_model("fcn8s", seed=6, all_std=TRAINED)
    atonce = tiny_model("fcn8s_atonce")
    transfer_fcn(fcn8s, atonce)
    assert atonce.scale_pool4.item() == pytest.approx(0.01)
    back = tiny_model("fcn8s")
    transfer_fcn(atonce, back)
    x = torch.randn(1, 3, 41, 37)
    with torch.no_grad():
        reference = fcn8s(x)
        assert torch.allclose(atonce(x), reference, rtol=1e-4, atol=1e-5 * reference.abs().max().item())
        assert torch.allclose(back(x), reference, rtol=1e-4, atol=1e-5 * reference.abs().max().item())
    assert torch.allclose(atonce.score_pool3.weight, fcn8s.score_pool3.weight * 1e4, rtol=1e-6)


# --- new number of classes --------------------------------------------------------------------


def test_with_num_classes_restarts_the_scores():
    model = tiny_model("fcn8s", num_classes=21, learnable_upsampling=True, seed=7, all_std=TRAINED)
    snapshot = {k: v.clone() for k, v in model.state_dict().items()}
    new = with_num_classes(model, 5)
    assert new.num_classes == 5 and new.config["num_classes"] == 5 and new.config["learnable_upsampling"]
    assert all(torch.equal(model.state_dict()[k], v) for k, v in snapshot.items()), "the old model changed"
    for key in ["backbone.conv1_1.weight", "backbone.fc7.weight"]:
        assert torch.equal(new.state_dict()[key], snapshot[key])
    for layer in ["score_fr", "score_pool4", "score_pool3"]:
        assert getattr(new, layer).weight.shape[0] == 5 and not getattr(new, layer).weight.any()
    assert torch.equal(new.upscore8.weight[4, 4], bilinear_kernel(16))
    assert new(torch.randn(1, 3, 9, 9)).shape == (1, 5, 9, 9)


def test_with_num_classes_keeps_shared_classes():
    old_classes = ["background", "cat", "dog", "person"]
    new_classes = ["background", "person", "bicycle"]
    keep = class_index_map(old_classes, new_classes)
    assert keep == {0: 0, 1: 3}
    model = tiny_model("fcn16s", num_classes=4, seed=8, all_std=TRAINED)
    new = with_num_classes(model, 3, keep)
    for layer in ["score_fr", "score_pool4"]:
        old_w, new_w = getattr(model, layer).weight, getattr(new, layer).weight
        old_b, new_b = getattr(model, layer).bias, getattr(new, layer).bias
        assert torch.equal(new_w[0], old_w[0]) and torch.equal(new_w[1], old_w[3])
        assert torch.equal(new_b[1], old_b[3]) and not new_w[2].any() and new_b[2] == 0
    # The upsampling keeps the kept classes' block (here random: "learned") and is bilinear elsewhere.
    assert torch.equal(new.upscore2.weight[1, 0], model.upscore2.weight[3, 0])
    assert torch.equal(new.upscore2.weight[1, 1], model.upscore2.weight[3, 3])
    assert torch.equal(new.upscore2.weight[2, 2], bilinear_kernel(4))
    assert not new.upscore2.weight[2, 0].any()


def test_bad_keep_is_an_error():
    state = tiny_model("fcn32s", num_classes=4).state_dict()
    with pytest.raises(WeightsError, match="keep maps class 3 <- 9"):
        change_num_classes_state(state, 4, {3: 9})
    with pytest.raises(WeightsError, match="score_fr"):
        change_num_classes_state({"x.weight": torch.zeros(1)}, 4)
