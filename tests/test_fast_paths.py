"""Every inference fast path gives the faithful model's logits (fcnseg.models.fast).

Tolerance: fp32 summation-order noise, ``max|fast - faithful| <= 1e-4 * max|faithful|``
(the kernels differ, the arithmetic does not). Models are tiny (width 1/16) with
random non-zero biases and score layers, so the padding band holds non-zero values
and every skip contributes.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import fcnseg
from fcnseg.models import fast
from fcnseg.models.fast import (
    DepthwiseBilinearUpsampling,
    FastVGG16Backbone,
    conv_as_matmul,
    optimize_for_inference,
    padding_plan,
)
from fcnseg.models.upsampling import BilinearUpsampling

WIDTH = 0.0625
OPTIONS = ("channels_last", "trim_padding", "matmul_classifier", "depthwise_upsampling")


def random_model(name: str = "fcn8s", num_classes: int = 5, **options) -> torch.nn.Module:
    model = fcnseg.create_model(name, num_classes=num_classes, width=WIDTH, **options).eval()
    with torch.no_grad():
        for module_name, module in model.named_modules():
            if isinstance(module, torch.nn.Conv2d) and not isinstance(module, BilinearUpsampling):
                torch.nn.init.normal_(module.bias, std=0.5)
                if module_name.startswith("score"):
                    torch.nn.init.normal_(module.weight, std=0.2)
    return model


def assert_same_logits(fast_out: torch.Tensor, faithful: torch.Tensor) -> None:
    assert fast_out.shape == faithful.shape
    assert fast_out.dtype == faithful.dtype
    scale = faithful.abs().max().item()
    assert scale > 0.1, "the test model must produce non-trivial logits"
    error = (fast_out - faithful).abs().max().item()
    assert error <= 1e-4 * scale, f"max error {error} against logits up to {scale}"


@pytest.mark.parametrize("name", ["fcn32s", "fcn16s", "fcn8s", "fcn8s_atonce"])
@pytest.mark.parametrize("size", [(64, 64), (37, 61), (1, 1), (123, 200)])
def test_all_fast_paths_match_faithful(name, size):
    model = random_model(name)
    x = torch.randn(2, 3, *size)
    with torch.inference_mode():
        assert_same_logits(optimize_for_inference(model)(x), model(x))


@pytest.mark.parametrize("option", OPTIONS)
def test_each_fast_path_alone_matches_faithful(option):
    model = random_model()
    only = {o: o == option for o in OPTIONS}
    x = torch.randn(1, 3, 101, 86)
    with torch.inference_mode():
        assert_same_logits(optimize_for_inference(model, **only)(x), model(x))


def test_padding_trim_at_500_is_48_pixels_per_side():
    # By hand: after pool3 the rows of the 100-pixel margin are [0, 2] touched by the canvas
    # edge, [3, 9] identical (the band), [10, ...] touched by the image. Keeping one band row
    # leaves 6 of 7 removable at stride 8, i.e. 48 input pixels: conv1_1 pads 52 instead of 100.
    rows, cols = padding_plan(random_model().backbone, 500, 500)
    assert (rows.pad_start, rows.pad_end) == (52, 52)
    assert cols == rows
    assert [count for _, count, _ in rows.inserts] == [6, 6]


def test_padding_trim_rejects_removing_the_whole_band():
    backbone = random_model().backbone
    padding, layers = fast.trim_geometry(backbone)
    intern = fast._Interner()
    faithful = fast._simulate_axis(500, padding, padding, layers, intern)
    for trim, accepted in ((48, True), (56, False), (96, False)):
        trimmed = fast._simulate_axis(500, padding - trim, padding, layers, intern)
        assert (fast._expansion(trimmed, faithful, trim // 8, 0) is not None) == accepted, trim


def test_trimmed_stage3_blob_equals_faithful_blob():
    model = random_model()
    x = torch.randn(1, 3, 77, 90)
    twin = FastVGG16Backbone(model.backbone, channels_last=False, trim_padding=True, matmul_classifier=False)
    with torch.inference_mode():
        expected, got = model.backbone(x), twin(x)
    for stride in (8, 16, 32):
        assert got[stride].shape == expected[stride].shape
        torch.testing.assert_close(got[stride], expected[stride], rtol=1e-4, atol=1e-4 * expected[stride].abs().max().item())


def test_conv_as_matmul_equals_conv2d_in_slabs(monkeypatch):
    torch.manual_seed(1)
    x = torch.randn(2, 6, 19, 13)
    weight, bias = torch.randn(10, 6, 7, 7), torch.randn(10)
    monkeypatch.setattr(fast, "UNFOLD_BUDGET_BYTES", 6 * 49 * 7 * 4 * 3)  # three output rows per slab
    torch.testing.assert_close(conv_as_matmul(x, weight, bias), F.conv2d(x, weight, bias), rtol=1e-5, atol=1e-4)
    nhwc = weight.contiguous(memory_format=torch.channels_last)  # viewed in (kh, kw, C) order, not copied
    assert fast._weight_matrix(nhwc)[1]
    torch.testing.assert_close(conv_as_matmul(x, nhwc, bias), F.conv2d(x, weight, bias), rtol=1e-5, atol=1e-4)
    one = torch.randn(10, 6, 1, 1)
    torch.testing.assert_close(conv_as_matmul(x, one, None), F.conv2d(x, one), rtol=1e-5, atol=1e-5)


def test_depthwise_upsampling_only_for_diagonal_weights():
    model = random_model(learnable_upsampling=True)
    with torch.no_grad():
        model.upscore2.weight[0, 1] += 0.3  # trained-looking: channel 0 leaks into channel 1
    twin = optimize_for_inference(model)
    assert isinstance(twin.upscore8, DepthwiseBilinearUpsampling)
    assert not isinstance(twin.upscore2, DepthwiseBilinearUpsampling)
    with pytest.raises(ValueError, match="off-diagonal"):
        DepthwiseBilinearUpsampling(model.upscore2)
    x = torch.randn(1, 3, 45, 45)
    with torch.inference_mode():
        assert_same_logits(twin(x), model(x))


def test_twin_leaves_the_model_alone_and_cannot_train():
    model = random_model().train()
    before = {name: module for name, module in model.named_children()}
    twin = optimize_for_inference(model)
    assert {name: module for name, module in model.named_children()} == before
    assert model.training and model.backbone.training and model.backbone.drop6.training
    assert twin.backbone.fc6_weight.data_ptr() == model.backbone.fc6.weight.data_ptr()  # shared, not copied
    assert twin.preprocessing == model.preprocessing and twin.num_classes == model.num_classes
    with pytest.raises(RuntimeError, match="inference-only"):
        twin.backbone.train()
    assert optimize_for_inference(twin) is twin  # optimising a twin again is a no-op
    with pytest.raises(TypeError, match="FCN"):
        optimize_for_inference(torch.nn.Conv2d(3, 3, 1))


def test_bfloat16_option_is_close_and_returns_float32():
    model = random_model()
    x = torch.randn(1, 3, 64, 64)
    with torch.inference_mode():
        expected = model(x)
        got = optimize_for_inference(model, bfloat16=True)(x)
    assert got.dtype == torch.float32
    assert (got - expected).abs().max().item() <= 0.05 * expected.abs().max().item()


@pytest.mark.slow
def test_compiled_twin_matches_faithful():
    model = random_model()
    x = torch.randn(1, 3, 48, 48)
    with torch.inference_mode():
        assert_same_logits(optimize_for_inference(model, compile=True)(x), model(x))


def _loss_and_grads(model: torch.nn.Module, x: torch.Tensor, target: torch.Tensor) -> tuple[float, dict[str, torch.Tensor]]:
    model.zero_grad(set_to_none=True)
    loss = F.cross_entropy(model(x), target, reduction="sum")
    loss.backward()
    return loss.item(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("channels_last", [False, True])
def test_fast_training_gives_the_faithful_gradients(channels_last):
    model = random_model(dropout=0.0).train()
    if channels_last:
        model.to(memory_format=torch.channels_last)  # as the training engine keeps it
    x = torch.randn(2, 3, 75, 58)
    target = torch.randint(0, model.num_classes, (2, 75, 58))
    expected_loss, expected = _loss_and_grads(model, x, target)
    keys = set(model.state_dict())
    fast.enable_fast_training(model)
    loss, grads = _loss_and_grads(model, x, target)
    assert set(model.state_dict()) == keys  # nothing added to checkpoints
    assert loss == pytest.approx(expected_loss, rel=1e-5)
    assert grads.keys() == expected.keys() and "backbone.conv1_1.weight" in grads
    for name, grad in expected.items():
        scale = grad.abs().max().item()
        assert (grads[name] - grad).abs().max().item() <= 1e-4 * scale + 1e-7, name


def test_fast_training_keeps_dropout_and_can_be_undone():
    model = random_model(dropout=0.5)
    x = torch.randn(1, 3, 40, 40)
    with torch.no_grad():
        faithful_eval = model.eval()(x)
        fast.enable_fast_training(model)
        assert_same_logits(model(x), faithful_eval)  # eval: no dropout, same logits
        model.train()
        assert not torch.allclose(model(x), faithful_eval)  # train: dropout acts
        model.backbone.fast_forward = None
        assert torch.equal(model.eval()(x), faithful_eval)
