"""Tiled inference equals whole-image inference; tile plans and memory budgets."""

from __future__ import annotations

import pytest
import torch
from tiny_models import tiny_model

import fcnseg
from fcnseg.inference.tiling import TILING_HEADROOM, Tiling, plan_tiles, tiling_for_budget
from fcnseg.predict.images import predict_logits, predict_mask

# Whole-image and tiled passes run convolutions on different sizes, so float sums
# differ in the last bits: logits of magnitude ~10 agree to ~1e-5.
LOGIT_TOLERANCE = 1e-4
# The test models' score weights are random N(0, 1): the paper's zero init would give constant logits.


def textured_image(height: int, width: int) -> torch.Tensor:
    """Blobs at several scales, so the mask has many regions and class borders."""
    coarse = torch.rand(1, 3, max(2, height // 24), max(2, width // 24)) * 255
    smooth = torch.nn.functional.interpolate(coarse, size=(height, width), mode="bilinear", align_corners=False)
    noise = torch.rand(1, 3, height, width) * 40
    return (smooth + noise).clamp(0, 255)[0].to(torch.uint8)


def test_receptive_field_and_default_margin_from_the_vgg16_geometry():
    model = tiny_model("fcn8s", 5, score_std=1.0)
    # VGG16: 1 + 2*(2*1 + 2*2 + 3*4 + 3*8 + 3*16) + (1 + 2 + 4 + 8 + 16) + 6*32 = 404 (fc7 cell)
    assert model.backbone.receptive_field == 404
    assert model.context_margin() == 288  # 202 + 64 rounded up to a multiple of 32
    assert Tiling(100).for_model(model) == Tiling(128, 288)
    assert Tiling(100, 50).for_model(model) == Tiling(128, 64)  # both rounded up to the grid


@pytest.mark.parametrize("height,width,tile", [(70, 100, 32), (257, 31, 64), (1, 1, 32), (600, 700, 256)])
def test_plan_covers_every_pixel_once_with_aligned_windows(height, width, tile):
    tiling = Tiling(tile, 96)
    covered = torch.zeros(height, width, dtype=torch.int64)
    for t in plan_tiles(height, width, tiling):
        top, bottom, left, right = t.core
        wtop, wbottom, wleft, wright = t.window
        covered[top:bottom, left:right] += 1
        assert wtop % 32 == 0 and wleft % 32 == 0  # the pooling grid of the tile is the image's grid
        assert wtop <= top and wleft <= left and bottom <= wbottom and right <= wright
        # margin on every side that is not the image border
        assert top - wtop == min(top, 96) and wbottom - bottom == min(height - bottom, 96)
        assert left - wleft == min(left, 96) and wright - right == min(width - right, 96)
    assert bool((covered == 1).all())


@pytest.mark.parametrize("name,height,width", [("fcn8s", 72, 900), ("fcn32s", 900, 72)])
def test_tiled_equals_whole_image(name, height, width):
    # 900 px along one axis with tiles of 192 and the 288-px margin: the middle tiles see
    # an interior edge on both sides, so the margin (not the image border) is what is tested.
    model = tiny_model(name, 5, score_std=1.0)
    image = textured_image(height, width)
    with torch.no_grad():  # centre each class's scores on this image, so the mask has several classes
        model.score_fr.bias -= predict_logits(model, image).flatten(1).median(dim=1).values
    whole = predict_logits(model, image)
    assert whole.argmax(0).unique().numel() >= 3  # a non-trivial prediction with class borders
    tiling = Tiling(192)
    windows = [t.window for t in plan_tiles(height, width, tiling)]
    assert any(w[2] > 0 and w[3] < width for w in windows) or any(w[0] > 0 and w[1] < height for w in windows)
    tiled = predict_logits(model, image, tile=tiling)
    assert tiled.shape == whole.shape
    assert (tiled - whole).abs().max() < LOGIT_TOLERANCE
    assert torch.equal(predict_mask(model, image, tile=tiling), whole.argmax(0))


def test_too_small_margin_breaks_equality():
    # The counter-test: without enough context the tile borders show in the logits.
    model = tiny_model("fcn8s", 5, score_std=1.0)
    image = textured_image(96, 700)
    whole = predict_logits(model, image)
    tiled = predict_logits(model, image, tile=Tiling(128, margin=64))
    assert (tiled - whole).abs().max() > 100 * LOGIT_TOLERANCE


def test_budget_picks_the_largest_tile_that_fits():
    model = tiny_model("fcn8s", 5, score_std=1.0)
    budget = 200 * 2**20
    tiling = tiling_for_budget(model, budget)
    assert tiling.margin == model.context_margin()
    share = TILING_HEADROOM * budget  # the rest is held back for caches kept across tiles
    assert model.estimate_forward_bytes(tiling.window_size, tiling.window_size) <= share
    bigger = Tiling(tiling.tile_size + 32).for_model(model).window_size
    assert model.estimate_forward_bytes(bigger, bigger) > share
    assert tiling_for_budget(model, 4 * budget).tile_size > tiling.tile_size
    with pytest.raises(ValueError, match="too small"):
        tiling_for_budget(model, 2**20)


def test_estimate_grows_with_width_and_image_size():
    small, wide = tiny_model("fcn8s", 5, score_std=1.0), fcnseg.create_model("fcn8s", num_classes=5, width=0.25)
    # 4 bytes x padded area x (3 x conv1 channels + 3 x classes + 16): 4 vs 16 conv1 channels
    assert small.estimate_forward_bytes(500, 500) == 4 * 700 * 700 * (3 * 4 + 3 * 5 + 16)
    assert wide.estimate_forward_bytes(500, 500) == 4 * 700 * 700 * (3 * 16 + 3 * 5 + 16)
    assert small.estimate_forward_bytes(1000, 300) == 4 * 1200 * 500 * (3 * 4 + 3 * 5 + 16)
