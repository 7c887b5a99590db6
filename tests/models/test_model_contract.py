"""The contract every registered model keeps, checked over ``fcnseg.list_models()``.

A model registered later is covered without editing this file: output aligned to the
input over a size sweep, gradients to every learnable parameter and no frozen one, a
checkpoint round trip, and the exact fast paths equal to the plain forward.

The input has ``model.in_channels`` channels (3 unless a model says otherwise: the NYUDv2
late-fusion net takes colour + HHA, 6). A model with several heads (SIFT Flow's) returns
them concatenated along the channels, so its output is still one (N, C, H, W) tensor.
"""

from __future__ import annotations

import pytest
import torch
from tiny_models import tiny_model
from torch import nn

import fcnseg
from fcnseg.checkpoint import load_checkpoint, save_checkpoint

TINY = 0.0625
CLASSES = 5  # a SIFT Flow net splits them 2 semantic + 3 geometric
SIZES = [(1, 1), (2, 3), (1, 7), (7, 1), (13, 13), (31, 2), (32, 32), (33, 47), (64, 63), (97, 101)]


#: Models with more parameters than this at the test width (torchvision's fixed-width ResNets
#: beyond ResNet-18) take 5-20 s per test on the 2-core CPU: they run with the slow tests.
SLOW_PARAMETERS = 15_000_000


def width_of(name: str) -> float:
    """The tiny width, or the model's only width (torchvision's ResNets refuse others, and say so)."""
    try:
        with torch.device("meta"):  # shapes only: no memory, no initialisation arithmetic
            fcnseg.create_model(name, num_classes=CLASSES, width=TINY)
    except ValueError as error:
        assert "width must be 1.0" in str(error)
        return 1.0
    return TINY


def _parameters(name: str) -> int:
    with torch.device("meta"):
        return sum(p.numel() for p in fcnseg.create_model(name, num_classes=CLASSES, width=width_of(name)).parameters())


MODELS = [
    pytest.param(name, marks=pytest.mark.slow) if _parameters(name) > SLOW_PARAMETERS else name
    for name in fcnseg.list_models()
]


def random_model(name: str, fast_paths: bool = True) -> nn.Module:
    """``name`` with every parameter non-zero: random biases and score layers (zero ones would hide whole paths)."""
    return tiny_model(name, CLASSES, width=width_of(name), score_std=0.3, bias_std=0.3, fast_paths=fast_paths)


def blob(model: nn.Module, *shape: int) -> torch.Tensor:
    """A random input (N, in_channels, H, W) for ``model``."""
    batch, *size = shape
    return torch.randn(batch, getattr(model, "in_channels", 3), *size)


@pytest.mark.parametrize("name", MODELS)
def test_output_has_the_input_height_and_width(name):
    model = random_model(name).eval()
    with torch.inference_mode():
        for height, width in SIZES:
            assert model(blob(model, 1, height, width)).shape == (1, CLASSES, height, width), (height, width)
        assert model(blob(model, 2, 5, 9)).shape == (2, CLASSES, 5, 9)


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("fast_paths", [False, True])
def test_gradients_reach_every_learnable_parameter_and_no_frozen_one(name, fast_paths):
    model = random_model(name, fast_paths=fast_paths).train()
    logits = model(blob(model, 2, 19, 23))
    nn.functional.cross_entropy(logits, torch.randint(0, CLASSES, (2, 19, 23))).backward()
    for key, parameter in model.named_parameters():
        if parameter.requires_grad:
            assert parameter.grad is not None and parameter.grad.abs().sum() > 0, key
        else:
            assert parameter.grad is None, key


@pytest.mark.parametrize("name", MODELS)
def test_checkpoint_round_trip_gives_the_same_model_and_logits(name, tmp_path):
    model = random_model(name).eval()
    classes = [f"c{i}" for i in range(CLASSES)]
    path = save_checkpoint(
        tmp_path / "m.safetensors", model, classes=classes, palette=[(i, i, i) for i in range(CLASSES)]
    )
    loaded = load_checkpoint(path)
    assert loaded.model.config == model.config and loaded.classes == classes
    x = blob(model, 1, 45, 38)
    with torch.inference_mode():
        torch.testing.assert_close(loaded.model.eval()(x), model(x))


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("size", [(1, 1), (37, 61), (123, 200)])
def test_fast_paths_equal_the_plain_forward(name, size):
    plain = random_model(name, fast_paths=False).eval()
    fast = random_model(name, fast_paths=True).eval()
    assert fast.fast_paths and not plain.fast_paths
    x = blob(plain, 2, *size)
    with torch.inference_mode():
        expected, got = plain(x), fast(x)
    scale = expected.abs().max().item()
    assert scale > 0.1, "the test model must produce non-trivial logits"
    assert (got - expected).abs().max().item() <= 1e-4 * scale  # fp32 summation order, not arithmetic
    assert torch.equal(got.argmax(1), expected.argmax(1))


@pytest.mark.parametrize("name", fcnseg.list_models())
def test_tiles_on_the_models_grid_with_its_margin_give_the_whole_image_logits(name):
    from fcnseg.inference.predictor import Predictor
    from fcnseg.inference.tiling import Tiling

    model = random_model(name).eval()
    channels = getattr(model, "in_channels", 3)
    image = torch.randint(0, 256, (channels, 40, 700), dtype=torch.uint8)
    whole = Predictor(model).logits(image)
    if not getattr(model, "exact_tiling", True):  # a layer sees the whole image: inference refuses to tile it
        with pytest.raises(ValueError, match="sees the whole image"):
            Predictor(model, tile=Tiling(96))
        return
    tiled = Predictor(model, tile=Tiling(96)).logits(image)  # several tiles with interior edges
    assert (tiled - whole).abs().max() <= 1e-4 * whole.abs().max() + 1e-5
