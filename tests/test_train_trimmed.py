"""The trimmed training forward is the faithful network: same logits, same gradients, same parameters."""

from __future__ import annotations

import pytest
import torch

import fcnseg
from fcnseg.engine.trimmed import TrimmedBackbone, trimmed_twin
from fcnseg.models.fast import padding_plan


@pytest.mark.parametrize("name, size", [("fcn8s", (40, 40)), ("fcn16s", (37, 50)), ("fcn8s_atonce", (64, 23))])
def test_twin_has_the_faithful_logits_and_gradients(name, size):
    model = fcnseg.create_model(name, num_classes=5, width=0.0625, dropout=0.5)
    with torch.no_grad():  # non-zero scores, so gradients reach the trunk
        for parameter_name, parameter in model.named_parameters():
            if "score" in parameter_name:
                parameter.normal_(0, 0.5)
    twin = trimmed_twin(model)
    assert isinstance(twin.backbone, TrimmedBackbone) and isinstance(model.backbone, fcnseg.models.VGG16Backbone)
    plan = padding_plan(model.backbone, *size)
    assert plan is not None and plan[0].pad_start < 100  # the trim really applies at this size
    assert {id(p) for p in twin.parameters()} == {id(p) for p in model.parameters()}

    x = torch.randn(2, 3, *size)
    target = torch.randint(0, 5, (2, *size))
    results = []
    for network in (model, twin):
        model.zero_grad()
        torch.manual_seed(7)  # the same dropout masks: both draw the same number of values
        logits = network.train()(x)
        torch.nn.functional.cross_entropy(logits, target).backward()
        results.append((logits.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}))
    (faithful, faithful_grads), (trimmed, trimmed_grads) = results
    assert trimmed.shape == faithful.shape == (2, 5, *size)
    _assert_close_to_scale(trimmed, faithful, "logits")
    assert faithful_grads.keys() == trimmed_grads.keys() and "backbone.conv1_1.weight" in faithful_grads
    for key, grad in faithful_grads.items():
        _assert_close_to_scale(trimmed_grads[key], grad, key)


def _assert_close_to_scale(actual: torch.Tensor, expected: torch.Tensor, what: str) -> None:
    """Equal up to fp32 summation order: max |difference| <= 1e-4 of the largest magnitude."""
    scale = expected.abs().max().item()
    assert scale > 0, f"{what}: all zero, the comparison would prove nothing"
    assert (actual - expected).abs().max().item() <= 1e-4 * scale, what


def test_twin_leaves_the_model_and_its_checkpoint_layout_alone():
    model = fcnseg.create_model("fcn8s", num_classes=3, width=0.0625)
    keys = list(model.state_dict())
    trimmed_twin(model)
    assert isinstance(model.backbone, fcnseg.models.VGG16Backbone) and list(model.state_dict()) == keys
