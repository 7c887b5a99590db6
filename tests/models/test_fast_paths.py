"""The model's exact fast paths (``fast_paths=True``) compute the plain forward's logits and gradients.

Tolerance: fp32 summation-order noise, ``max|fast - plain| <= 1e-4 * max|plain|`` (the
kernels differ, the arithmetic does not). Models are tiny (width 1/16) with random
non-zero biases and score layers, so the padding band holds non-zero values and every
skip contributes. The registry-wide equality is in ``test_model_contract.py``.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from tiny_models import tiny_model

from fcnseg.inference.predictor import Predictor
from fcnseg.models import kernels, padding_trim, upsampling
from fcnseg.models.kernels import conv_as_matmul
from fcnseg.models.padding_trim import padding_plan
from fcnseg.models.vgg import FIRST_CONV_PADDING

#: Random non-zero biases (every layer) and score weights: the padding band holds non-zero values, every skip counts.
RANDOM = {"score_std": 0.2, "bias_std": 0.5}


def assert_same_logits(fast_out: torch.Tensor, plain: torch.Tensor, rtol: float = 1e-4) -> None:
    assert fast_out.shape == plain.shape and fast_out.dtype == plain.dtype
    scale = plain.abs().max().item()
    assert scale > 0.1, "the test model must produce non-trivial logits"
    error = (fast_out - plain).abs().max().item()
    assert error <= rtol * scale, f"max error {error} against logits up to {scale}"


def test_padding_trim_at_500_is_48_pixels_per_side():
    # By hand: after pool3 the rows of the 100-pixel margin are [0, 2] touched by the canvas
    # edge, [3, 9] identical (the band), [10, ...] touched by the image. Keeping one band row
    # leaves 6 of 7 removable at stride 8, i.e. 48 input pixels: conv1_1 pads 52 instead of 100.
    rows, cols = padding_plan(FIRST_CONV_PADDING, tiny_model("fcn8s", 5).backbone.trim_layers, 500, 500)
    assert (rows.pad_start, rows.pad_end) == (52, 52)
    assert cols == rows
    assert [count for _, count, _ in rows.inserts] == [6, 6]


def test_padding_trim_rejects_removing_the_whole_band():
    layers = tiny_model("fcn8s", 5).backbone.trim_layers
    intern = padding_trim._Interner()
    faithful = padding_trim.simulate_axis(500, 100, 100, layers, intern)
    for trim, accepted in ((48, True), (56, False), (96, False)):
        trimmed = padding_trim.simulate_axis(500, 100 - trim, 100, layers, intern)
        assert (padding_trim.expansion(trimmed, faithful, trim // 8, 0) is not None) == accepted, trim


def test_trimmed_backbone_features_equal_the_plain_ones():
    model = tiny_model("fcn8s", 5, **RANDOM)
    x = torch.randn(1, 3, 77, 90)
    with torch.inference_mode():
        got = model.backbone(x)
        model.set_fast_paths(False)
        expected = model.backbone(x)
    for stride in (8, 16, 32):
        assert got[stride].shape == expected[stride].shape
        torch.testing.assert_close(
            got[stride], expected[stride], rtol=1e-4, atol=1e-4 * expected[stride].abs().max().item()
        )


def test_conv_as_matmul_equals_conv2d_in_slabs(monkeypatch):
    torch.manual_seed(1)
    x = torch.randn(2, 6, 19, 13)
    weight, bias = torch.randn(10, 6, 7, 7), torch.randn(10)
    monkeypatch.setattr(kernels, "UNFOLD_BUDGET_BYTES", 6 * 49 * 7 * 4 * 3)  # three output rows per slab
    torch.testing.assert_close(conv_as_matmul(x, weight, bias), F.conv2d(x, weight, bias), rtol=1e-5, atol=1e-4)
    nhwc = weight.contiguous(memory_format=torch.channels_last)  # viewed in (kh, kw, C) order, not copied
    assert kernels._weight_matrix(nhwc)[1]
    torch.testing.assert_close(conv_as_matmul(x, nhwc, bias), F.conv2d(x, weight, bias), rtol=1e-5, atol=1e-4)
    one = torch.randn(10, 6, 1, 1)
    torch.testing.assert_close(conv_as_matmul(x, one, None), F.conv2d(x, one), rtol=1e-5, atol=1e-5)


def test_depthwise_upsampling_only_for_diagonal_weights(monkeypatch):
    model = tiny_model("fcn8s", 5, **RANDOM, learnable_upsampling=True)
    with torch.no_grad():
        model.upscore2.weight[0, 1] += 0.3  # trained-looking: channel 0 leaks into channel 1
    groups = []
    original = upsampling.F.conv_transpose2d
    monkeypatch.setattr(upsampling.F, "conv_transpose2d", lambda *a: groups.append(a[6]) or original(*a))
    x = torch.randn(1, 3, 45, 45)
    with torch.inference_mode():
        got = model(x)
    assert groups == [1, 5, 5]  # upscore2 ran the full C x C deconvolution; upscore_pool4 and upscore8 depthwise
    model.set_fast_paths(False)
    with torch.inference_mode():
        assert_same_logits(got, model(x))
    with torch.no_grad():  # a weight changed in place is checked again
        model.upscore8.weight[2, 0] += 0.1
    assert not model.upscore8._is_diagonal() and model.upscore_pool4._is_diagonal()


def test_switching_fast_paths_keeps_the_weights_and_changes_their_layout():
    model = tiny_model("fcn8s", 5, **RANDOM)
    state = {key: value.clone() for key, value in model.state_dict().items()}
    assert model.backbone.conv3_1.weight.is_contiguous(memory_format=torch.channels_last)
    model.set_fast_paths(False)
    assert model.backbone.conv3_1.weight.is_contiguous()
    assert all(torch.equal(state[key], value) for key, value in model.state_dict().items())


def test_bfloat16_predictor_is_close_and_returns_float32():
    model = tiny_model("fcn8s", 5, **RANDOM)
    image = torch.randint(0, 256, (3, 64, 64), dtype=torch.uint8)
    expected = Predictor(model).logits(image)
    got = Predictor(model, dtype="bfloat16").logits(image)
    assert got.dtype == torch.float32
    assert (got - expected).abs().max().item() <= 0.05 * expected.abs().max().item()


@pytest.mark.slow
def test_compiled_predictor_matches_the_plain_forward():
    model = tiny_model("fcn8s", 5, **RANDOM)
    image = torch.randint(0, 256, (3, 48, 48), dtype=torch.uint8)
    got = Predictor(model, compile=True).logits(image)
    assert_same_logits(got, Predictor(model, fast_paths=False).logits(image))


def _loss_and_grads(
    model: torch.nn.Module, x: torch.Tensor, target: torch.Tensor
) -> tuple[float, dict[str, torch.Tensor]]:
    model.zero_grad(set_to_none=True)
    loss = F.cross_entropy(model(x), target, reduction="sum")
    loss.backward()
    return loss.item(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("learnable_upsampling", [False, True])
def test_fast_training_gives_the_plain_gradients(learnable_upsampling):
    model = tiny_model("fcn8s", 5, **RANDOM, dropout=0.0, learnable_upsampling=learnable_upsampling).train()
    x = torch.randn(2, 3, 75, 58)
    target = torch.randint(0, model.num_classes, (2, 75, 58))
    loss, grads = _loss_and_grads(model, x, target)
    model.set_fast_paths(False)
    expected_loss, expected = _loss_and_grads(model, x, target)
    assert loss == pytest.approx(expected_loss, rel=1e-5)
    assert grads.keys() == expected.keys() and "backbone.conv1_1.weight" in grads
    for name, grad in expected.items():
        scale = grad.abs().max().item()
        assert (grads[name] - grad).abs().max().item() <= 1e-4 * scale + 1e-7, name


def test_fast_paths_keep_dropout_in_training():
    model = tiny_model("fcn8s", 5, **RANDOM, dropout=0.5)
    x = torch.randn(1, 3, 40, 40)
    with torch.no_grad():
        fast_eval = model.eval()(x)
        assert not torch.allclose(model.train()(x), fast_eval)  # train: dropout acts
        assert_same_logits(model.set_fast_paths(False).eval()(x), fast_eval)


def test_a_model_built_under_inference_mode_runs_its_fast_paths():
    with torch.inference_mode():  # its weights are inference tensors, without version counters
        model = tiny_model("fcn8s", 5, **RANDOM)
        x = torch.randn(1, 3, 40, 40)
        fast = model(x)
        assert_same_logits(fast, model.set_fast_paths(False)(x))
