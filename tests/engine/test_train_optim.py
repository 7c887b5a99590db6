"""Recipe parameter groups, the poly schedule against its formula, and the named recipes."""

from __future__ import annotations

import json

import pytest
import torch
from tiny_models import tiny_model

import fcnseg
from fcnseg.engine import build_config
from fcnseg.engine.optim import LRFactor, build_optimizer, parameter_groups


def test_groups_bias_lr_x2_no_decay_and_frozen_deconvs_left_out():
    model = tiny_model("fcn8s", 3)
    groups = {g["name"]: g for g in parameter_groups(model, lr=0.1, weight_decay=5e-4)}
    by_id = {id(p): name for name, p in model.named_parameters()}
    weights = {by_id[id(p)] for p in groups["weights"]["params"]}
    biases = {by_id[id(p)] for p in groups["biases"]["params"]}
    assert groups["weights"]["lr"] == 0.1 and groups["weights"]["weight_decay"] == 5e-4
    assert groups["biases"]["lr"] == pytest.approx(0.2) and groups["biases"]["weight_decay"] == 0.0
    assert all(name.endswith(".bias") or name == "bias" for name in biases)
    assert all(name.endswith("weight") for name in weights)
    # the frozen bilinear deconvolutions are in no group; every other parameter is in exactly one
    upsampling = {name for name in by_id.values() if name.startswith(("upscore", "upscore2", "upscore_pool4"))}
    assert upsampling and not (upsampling & (weights | biases))
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert weights | biases == trainable and not weights & biases
    assert "score_fr.bias" in biases and "backbone.conv1_1.weight" in weights


def test_learnable_upsampling_joins_the_weights_group():
    model = tiny_model("fcn8s", 3, learnable_upsampling=True)
    groups = {g["name"]: g for g in parameter_groups(model, lr=1.0, weight_decay=0.0)}
    ids = {id(p) for p in groups["weights"]["params"]}
    assert id(model.upscore8.weight) in ids


def test_sgd_step_applies_bias_x2_and_decay_on_weights_only():
    # one SGD step without momentum: w -= lr * (g + wd * w); b -= 2 lr * g
    model = torch.nn.Conv2d(1, 1, 1)
    with torch.no_grad():
        model.weight.fill_(2.0)
        model.bias.fill_(3.0)
    optimizer = build_optimizer(model, name="sgd", lr=0.1, momentum=0.0, weight_decay=0.5)
    model(torch.ones(1, 1, 1, 1)).sum().backward()  # d/dw = 1, d/db = 1
    optimizer.step()
    assert model.weight.item() == pytest.approx(2.0 - 0.1 * (1.0 + 0.5 * 2.0))
    assert model.bias.item() == pytest.approx(3.0 - 0.2 * 1.0)


def test_norm_decay_false_puts_batchnorm_scales_in_an_undecayed_group():
    model = fcnseg.create_model("fcn8s_resnet18", num_classes=3)
    bn_scales = {name + ".weight" for name, module in model.named_modules() if isinstance(module, torch.nn.BatchNorm2d)}
    assert bn_scales
    by_id = {id(p): name for name, p in model.named_parameters()}
    default = {
        g["name"]: {by_id[id(p)] for p in g["params"]} for g in parameter_groups(model, lr=0.1, weight_decay=5e-4)
    }
    assert "norms" not in default and bn_scales <= default["weights"]  # the default keeps today's behaviour
    groups = {g["name"]: g for g in parameter_groups(model, lr=0.1, weight_decay=5e-4, norm_decay=False)}
    names = {key: {by_id[id(p)] for p in group["params"]} for key, group in groups.items()}
    assert names["norms"] == bn_scales and groups["norms"]["weight_decay"] == 0.0 and groups["norms"]["lr"] == 0.1
    assert not names["weights"] & bn_scales and "backbone.body.conv1.weight" in names["weights"]
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert names["weights"] | names["biases"] | names["norms"] == trainable
    assert sum(len(v) for v in names.values()) == len(trainable)  # each parameter in one group only


def test_sgd_step_without_norm_decay_leaves_the_scale_undecayed():
    # w -= lr * (g + wd * w) for the convolution; s -= lr * g for the BatchNorm scale
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 1, 1, bias=False), torch.nn.BatchNorm2d(1))
    with torch.no_grad():
        model[0].weight.fill_(2.0)
        model[1].weight.fill_(2.0)
    optimizer = build_optimizer(model, name="sgd", lr=0.1, momentum=0.0, weight_decay=0.5, norm_decay=False)
    for parameter in model.parameters():
        parameter.grad = torch.ones_like(parameter)
    optimizer.step()
    assert model[0].weight.item() == pytest.approx(2.0 - 0.1 * (1.0 + 0.5 * 2.0))
    assert model[1].weight.item() == pytest.approx(2.0 - 0.1 * 1.0)


def test_norm_decay_is_a_recipe_setting_old_recipes_keep_the_decay():
    from fcnseg.engine.recipes import Recipe

    assert Recipe.from_dict({"lr": 0.1}).norm_decay is True  # a checkpoint written before the field existed
    assert build_config("camvid", settings=[("recipe.norm_decay", False)]).recipe.norm_decay is False


def test_poly_schedule_matches_the_formula():
    total, warmup, start, power = 50, 5, 0.01, 0.9
    factor = LRFactor("poly", total, warmup, warmup_start=start, power=power)
    seen = [factor(step) for step in range(total)]
    for step, value in enumerate(seen):
        if step < warmup:
            expected = start + (1 - start) * step / warmup
        else:
            expected = (1 - (step - warmup) / (total - warmup)) ** power
        assert value == pytest.approx(expected, rel=1e-12), step
    assert seen[warmup] == pytest.approx(1.0) and seen[-1] < 0.1
    assert LRFactor("fixed", 100)(77) == 1.0


#: The published learning rates (DESIGN §3), written here, not read from the recipe.
PAPER_LR = {"fcn32s": 1e-10, "fcn16s": 1e-12, "fcn8s": 1e-14, "fcn8s_atonce": 1e-10}


def test_paper_recipe_is_design_section_3():
    for model_name, lr in PAPER_LR.items():
        recipe = build_config("paper", settings=[("model.name", model_name)]).recipe
        assert recipe.lr == lr and recipe.name == "paper"
        assert (recipe.optimizer, recipe.momentum, recipe.weight_decay, recipe.bias_lr_mult) == ("sgd", 0.99, 5e-4, 2.0)
        assert (recipe.schedule, recipe.reduction, recipe.batch_size, recipe.crop_size, recipe.augment) == (
            "fixed",
            "sum",
            1,
            None,
            False,
        )
        assert recipe.val_every == 4000 and not recipe.bias_decay
        assert recipe.steps == (300_000 if model_name == "fcn8s_atonce" else 100_000)


def test_modern_recipe_and_a_file_over_a_base(tmp_path):
    modern = build_config("modern").recipe
    assert (modern.reduction, modern.momentum, modern.schedule, modern.amp) == ("mean", 0.9, "poly", True)
    path = tmp_path / "mine.json"
    path.write_text(json.dumps({"base": "modern", "recipe": {"lr": 0.02, "batch_size": 4}, "model": {"width": 0.5}}))
    mine = build_config(str(path))
    assert (mine.recipe.lr, mine.recipe.batch_size, mine.recipe.momentum, mine.model["width"]) == (0.02, 4, 0.9, 0.5)
    assert mine.recipe.name == "mine"
    path.write_text(json.dumps({"base": "modern", "recipe": {"learning_rate": 0.02}}))
    with pytest.raises(ValueError, match="learning_rate"):
        build_config(str(path))
    with pytest.raises(ValueError, match="unknown recipe 'fancy'"):
        build_config("fancy")
