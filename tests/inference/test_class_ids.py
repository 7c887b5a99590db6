"""The Predictor's arg-max over classes: torch.argmax's answer on every layout, ties included."""

import pytest
import torch

from fcnseg.inference.predictor import class_ids


def scores_with_ties(shape: tuple[int, ...], dim: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    # Few distinct values, so many pixels hold a tie between classes: the first class must win, as argmax.
    return torch.randint(0, 4, shape, generator=generator).float()


@pytest.mark.parametrize("layout", ["contiguous", "channels_last", "sliced"])
def test_class_ids_equals_argmax_over_dim_1(layout: str) -> None:
    scores = scores_with_ties((3, 7, 20, 24), 1)
    if layout == "channels_last":
        scores = scores.contiguous(memory_format=torch.channels_last)
    elif layout == "sliced":
        scores = scores[:, :, 2:18, 3:21]  # a tile's core: strided rows
    expected = scores.argmax(1)
    ids = class_ids(scores, 1)
    assert ids.dtype == torch.int64 and torch.equal(ids, expected)


def test_class_ids_over_dim_0_in_the_mask_dtype() -> None:
    scores = scores_with_ties((11, 30, 40), 0)
    ids = class_ids(scores, 0, torch.uint8)
    assert ids.dtype == torch.uint8 and torch.equal(ids.long(), scores.argmax(0))


def test_class_ids_of_bfloat16_and_negative_scores() -> None:
    scores = -torch.rand(2, 5, 9, 9, generator=torch.Generator().manual_seed(1)).bfloat16() * 100
    assert torch.equal(class_ids(scores, 1), scores.argmax(1))
