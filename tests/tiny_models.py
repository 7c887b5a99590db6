"""Small random models shared by the tests (a tiny width keeps a forward pass in milliseconds).

``tiny_model`` is the one way a test builds a model to run: every random scale it uses is an
argument, so a test that depends on one (masks that differ by image, a quantized model that must
agree) says so where it calls it. The conftest fixture ``tiny_checkpoint`` saves the common case.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

import torch

import fcnseg

#: The narrow width of the test models: VGG16 at 1/16 of its channels.
TINY_WIDTH = 0.0625
#: The classes and palette of the ``tiny_checkpoint`` fixture.
TINY_CLASSES = ["background", "thing", "stuff"]
TINY_PALETTE = [(0, 0, 0), (200, 30, 30), (20, 180, 60)]


def tiny_model(
    name: str = "fcn8s",
    num_classes: int = 3,
    *,
    width: float = TINY_WIDTH,
    seed: int = 0,
    preprocessing: fcnseg.Preprocessing | None = None,
    score_std: float | Mapping[str, float] | None = None,
    score_bias_std: float | None = None,
    bias_std: float | None = None,
    all_std: float | Literal["he"] | None = None,
    **options,
) -> torch.nn.Module:
    """A registered model, built and randomised from ``seed`` alone, in eval mode.

    It is built as ``fcnseg.create_model`` builds it (the paper's zero score layers and biases)
    under ``torch.manual_seed(seed)``, then the parameters the ``*_std`` arguments name are drawn
    (see :func:`randomise`) from the same seeded stream, or, with ``all_std`` (every parameter
    drawn), from a stream started afresh at ``seed``: such a model does not depend on how
    ``create_model`` initialises. Torch's global random state is left as it was. ``preprocessing``
    replaces the model's; ``options`` go to ``create_model`` (``dropout``, ``fast_paths`` ...).
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = fcnseg.create_model(name, num_classes=num_classes, width=width, **options)
        if all_std is not None:
            torch.manual_seed(seed)
        _draw(model, score_std, score_bias_std, bias_std, all_std)
    if preprocessing is not None:
        model.preprocessing = preprocessing
    return model.eval()


def randomise(
    model: torch.nn.Module,
    *,
    seed: int,
    score_std: float | Mapping[str, float] | None = None,
    score_bias_std: float | None = None,
    bias_std: float | None = None,
    all_std: float | Literal["he"] | None = None,
) -> torch.nn.Module:
    """Draw some of ``model``'s parameters again, in place, from ``seed`` (the global state is left as it was).

    In the order of ``named_parameters()``:

    - ``score_std``: the score layers' weights (``score*`` modules) ~ N(0, score_std^2), so that
      the logits depend on the image; a mapping {layer: std} draws only the layers it names;
    - ``score_bias_std``: the score layers' biases ~ N(0, score_bias_std^2);
    - ``bias_std``: every other trainable bias (and the score biases, unless ``score_bias_std``);
    - ``all_std``: every parameter, upsampling kernels included, ~ N(0, all_std^2); ``"he"``:
      weights ~ N(0, 2 / fan_in) (activations neither vanish nor explode) and biases ~ N(0, 0.1^2).

    Everything else keeps its value.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        _draw(model, score_std, score_bias_std, bias_std, all_std)
    return model


def _draw(model: torch.nn.Module, score_std, score_bias_std, bias_std, all_std) -> None:
    """Draw the parameters in index order, whatever their memory layout (the fast paths keep channels-last).

    ``randn * std`` and ``normal_(0, std)`` differ in the last bit on tensors under 16 elements; each
    mode keeps the one its tests were written with, so that their models stay the same to the bit.
    """
    with torch.no_grad():
        for key, parameter in model.named_parameters():
            std = _std_of(key, parameter, score_std, score_bias_std, bias_std, all_std)
            if std is None:
                continue
            if all_std is not None:
                parameter.copy_(torch.randn(parameter.shape) * std)
            else:
                parameter.copy_(torch.empty(parameter.shape).normal_(0.0, std))


def _std_of(key: str, parameter: torch.nn.Parameter, score_std, score_bias_std, bias_std, all_std) -> float | None:
    """The standard deviation ``tiny_model`` draws ``key`` from, or None to keep it as built."""
    module, _, kind = key.rpartition(".")
    is_bias = kind == "bias"
    if all_std == "he":
        return 0.1 if is_bias else (2.0 / parameter[0].numel()) ** 0.5
    if all_std is not None:
        return all_std
    layer = module.rpartition(".")[2]
    if layer.startswith("score"):
        if is_bias:
            return score_bias_std if score_bias_std is not None else bias_std
        return score_std.get(layer) if isinstance(score_std, Mapping) else score_std
    return bias_std if is_bias and parameter.requires_grad else None
