"""Paired transforms keep image and mask aligned; PadCollate pads correctly."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as torch_f

from fcnseg.data import EvalTransform, PadCollate, TrainTransform
from fcnseg.data.transforms import RandomScale

HEIGHT, WIDTH = 100, 120
PAD_FILL = (0, 0, 255)


def coordinate_pair() -> tuple[torch.Tensor, torch.Tensor]:
    """Image whose red/green value is the pixel's x/y; mask = (7x + 3y) mod 11.

    Neighbouring labels jump (by 7 or 3 mod 11), so a bilinear-resized mask
    gets labels that no nearest sample has, and a one-pixel shift changes every label.
    """
    y, x = torch.meshgrid(torch.arange(HEIGHT), torch.arange(WIDTH), indexing="ij")
    image = torch.stack([x, y, torch.zeros_like(x)]).to(torch.uint8)
    return image, label_of(x, y)


def label_of(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return (7 * x + 3 * y) % 11


def agreement(image: torch.Tensor, mask: torch.Tensor) -> float:
    """Share of interior pixels whose label is the label of the source pixel the image says they came from.

    The bilinear image carries the (rounded) source coordinate; pixels at the source
    border are left out because bilinear sampling clamps there.
    """
    padded = image[2] == 255
    source_x, source_y = image[0].long(), image[1].long()
    interior = ~padded & (source_x > 0) & (source_x < WIDTH - 1) & (source_y > 0) & (source_y < HEIGHT - 1)
    assert interior.sum() > 100
    expected = label_of(source_x, source_y)
    return (expected[interior] == mask[interior]).float().mean().item()


@pytest.mark.parametrize("seed", range(12))
def test_random_scale_crop_flip_keep_mask_aligned(seed: int) -> None:
    image, mask = coordinate_pair()
    transform = TrainTransform(crop_size=(90, 110), scale_range=(0.6, 1.7), hflip=True, fill=PAD_FILL)
    torch.manual_seed(seed)
    out_image, out_mask = transform(image, mask)
    assert out_image.shape == (3, 90, 110) and out_mask.shape == (90, 110)
    assert out_image.dtype == torch.uint8 and out_mask.dtype == torch.int64
    assert type(out_image) is torch.Tensor and type(out_mask) is torch.Tensor  # no tv_tensors leak out
    padded = out_image[2] == 255
    assert torch.equal(out_mask[padded], torch.full_like(out_mask[padded], 255))  # padding = ignore
    assert not (out_mask[~padded] == 255).any()  # ignore only where padded
    assert agreement(out_image, out_mask) >= 0.9  # misses are uint8 rounding of the coordinate
    # The same check rejects a mask off by one pixel, so the threshold above means something.
    assert agreement(out_image, torch.roll(out_mask, 1, dims=1)) < 0.6
    assert agreement(out_image, torch.roll(out_mask, 1, dims=0)) < 0.6


def test_flips_happen_and_move_both() -> None:
    image, mask = coordinate_pair()
    transform = TrainTransform(crop_size=None, scale_range=None, hflip=True)
    flipped = 0
    for seed in range(20):
        torch.manual_seed(seed)
        out_image, out_mask = transform(image, mask)
        if out_image[0, 0, 0] == WIDTH - 1:
            flipped += 1
            assert torch.equal(out_mask, mask.flip(-1))
        else:
            assert torch.equal(out_image, image) and torch.equal(out_mask, mask)
    assert 3 <= flipped <= 17


@pytest.mark.parametrize("scale", [0.55, 0.8, 1.37, 1.9])
def test_mask_resize_is_nearest_on_the_image_grid(scale: float) -> None:
    image, mask = coordinate_pair()
    out_image, out_mask = RandomScale((scale, scale))(image, mask)
    out_height, out_width = out_mask.shape
    assert (out_height, out_width) == (round(HEIGHT * scale), round(WIDTH * scale))
    # Nearest neighbour at pixel centres: output pixel i takes source pixel floor((i + 0.5) * in / out).
    rows = ((torch.arange(out_height) + 0.5) * HEIGHT / out_height).floor().long()
    cols = ((torch.arange(out_width) + 0.5) * WIDTH / out_width).floor().long()
    expected = label_of(cols[None, :], rows[:, None])
    assert torch.equal(out_mask, expected)
    # The image is on the same grid: its red value is the centre-aligned source x (up to rounding).
    centre_x = (torch.arange(out_width) + 0.5) * WIDTH / out_width - 0.5
    interior = slice(3, out_width - 3)
    assert (out_image[0, :, interior].float() - centre_x[interior]).abs().max() <= 1.0
    # Controls: a bilinear-resized mask, torch's corner-aligned "nearest" and a 1-px shift all differ.
    size = (out_height, out_width)
    bilinear = torch_f.interpolate(mask[None, None].float(), size=size, mode="bilinear", align_corners=False)
    assert (bilinear[0, 0].round().long() == expected).float().mean() < 0.8
    if scale not in (0.8, 1.9):  # near these factors the two nearest conventions happen to coincide often
        corner_nearest = torch_f.interpolate(mask[None, None].float(), size=size, mode="nearest")[0, 0].long()
        assert (corner_nearest == expected).float().mean() < 0.8
    assert (torch.roll(out_mask, 1, dims=1) == expected).float().mean() < 0.6


def test_crop_pads_small_images_with_fill_and_ignore() -> None:
    image = torch.randint(0, 200, (3, 20, 30), dtype=torch.uint8)
    mask = torch.randint(0, 5, (20, 30))
    transform = TrainTransform(crop_size=64, scale_range=None, hflip=False, fill=(1, 2, 3), ignore_index=250)
    out_image, out_mask = transform(image, mask)
    assert out_image.shape == (3, 64, 64) and out_mask.shape == (64, 64)
    labelled = (out_mask != 250).nonzero()
    top, left = labelled.min(0).values.tolist()
    assert (out_mask != 250).sum() == 20 * 30
    assert torch.equal(out_mask[top : top + 20, left : left + 30], mask)
    assert torch.equal(out_image[:, top : top + 20, left : left + 30], image)
    outside = out_mask == 250
    for channel, value in enumerate((1, 2, 3)):
        assert (out_image[channel][outside] == value).all()


def test_color_jitter_changes_image_only() -> None:
    image = torch.randint(30, 220, (3, 32, 40), dtype=torch.uint8)
    mask = torch.randint(0, 5, (32, 40))
    transform = TrainTransform(scale_range=None, hflip=False, color_jitter=(0.5, 0.5, 0.5, 0.1))
    out_image, out_mask = transform(image, mask)
    assert out_image.dtype == torch.uint8 and out_image.shape == image.shape
    assert not torch.equal(out_image, image)
    assert torch.equal(out_mask, mask)


def test_eval_transform_native_size_is_identity_and_resize_keeps_labels() -> None:
    image, mask = coordinate_pair()
    same_image, same_mask = EvalTransform()(image, mask)
    assert same_image is image and same_mask is mask
    out_image, out_mask = EvalTransform(size=(50, 60))(image, mask)
    assert out_image.shape == (3, 50, 60) and out_mask.shape == (50, 60)
    assert type(out_image) is torch.Tensor and type(out_mask) is torch.Tensor
    assert agreement(out_image, out_mask) >= 0.9


def test_bad_transform_arguments() -> None:
    with pytest.raises(ValueError, match="scale_range"):
        TrainTransform(scale_range=(2.0, 1.0))
    with pytest.raises(ValueError, match="fill"):
        TrainTransform(fill=(0, 0, 300))
    with pytest.raises(ValueError, match="crop_size"):
        TrainTransform(crop_size=(0, 5))


def test_pad_collate_pads_to_largest_with_fill_and_ignore() -> None:
    first = (torch.full((3, 4, 5), 9, dtype=torch.uint8), torch.full((4, 5), 1))
    second = (torch.full((3, 6, 3), 7, dtype=torch.uint8), torch.full((6, 3), 2))
    images, masks = PadCollate(fill=(10, 20, 30), ignore_index=255)([first, second])
    assert images.shape == (2, 3, 6, 5) and images.dtype == torch.uint8
    assert masks.shape == (2, 6, 5) and masks.dtype == torch.int64
    expected_images = torch.tensor([10, 20, 30], dtype=torch.uint8).view(1, 3, 1, 1).repeat(2, 1, 6, 5)
    expected_images[0, :, :4, :5] = 9
    expected_images[1, :, :6, :3] = 7
    expected_masks = torch.full((2, 6, 5), 255)
    expected_masks[0, :4, :5] = 1
    expected_masks[1, :6, :3] = 2
    assert torch.equal(images, expected_images)
    assert torch.equal(masks, expected_masks)


def test_pad_collate_size_divisor_and_errors() -> None:
    item = (torch.zeros((3, 5, 9), dtype=torch.uint8), torch.zeros((5, 9), dtype=torch.int64))
    images, masks = PadCollate(size_divisor=4)([item])
    assert images.shape == (1, 3, 8, 12) and masks.shape == (1, 8, 12)
    assert (masks[0, 5:, :] == 255).all() and (masks[0, :, 9:] == 255).all() and (masks[0, :5, :9] == 0).all()
    with pytest.raises(ValueError, match="does not match"):
        PadCollate()([(item[0], torch.zeros((4, 9), dtype=torch.int64))])
    with pytest.raises(TypeError, match="uint8"):
        PadCollate()([(item[0].float(), item[1])])
