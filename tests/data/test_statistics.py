"""Class pixel statistics and median-frequency weights against hand-computed values."""

from __future__ import annotations

import logging

import pytest
import torch

from fcnseg.data import (
    DatasetError,
    InMemoryDataset,
    class_pixel_counts,
    class_statistics,
    median_frequency_weights,
)


def hand_made(masks: list[list[list[int]]], num_classes: int = 4, **options) -> InMemoryDataset:
    tensors = [torch.tensor(mask) for mask in masks]
    images = [torch.zeros((3,) + mask.shape, dtype=torch.uint8) for mask in tensors]
    return InMemoryDataset(images, tensors, classes=[f"c{i}" for i in range(num_classes)], **options)


TWO_IMAGES = [
    [[0, 0, 1], [1, 255, 0]],  # 6 pixels: class 0 x3, class 1 x2, one ignored
    [[0, 2], [2, 2]],  # 4 pixels: class 0 x1, class 2 x3
]


def test_counts_exclude_ignore_and_track_images_where_present() -> None:
    stats = class_statistics(hand_made(TWO_IMAGES))
    assert stats.pixel_counts.tolist() == [4, 2, 3, 0]
    assert stats.present_pixels.tolist() == [10, 6, 4, 0]  # all pixels of the images holding the class
    assert stats.image_counts.tolist() == [2, 1, 1, 0]
    assert stats.pixel_counts.dtype == torch.int64
    assert class_pixel_counts(hand_made(TWO_IMAGES), 4).tolist() == [4, 2, 3, 0]


def test_median_frequency_weights_odd_number_of_classes() -> None:
    # freq = 4/10, 2/6, 3/4; median 0.4; class 3 never occurs -> 0.
    weights = class_statistics(hand_made(TWO_IMAGES)).median_frequency_weights()
    assert weights.dtype == torch.float32
    assert torch.allclose(weights, torch.tensor([1.0, 1.2, 0.4 / 0.75, 0.0]))


def test_median_frequency_weights_even_number_takes_the_mean_of_the_middle_two() -> None:
    masks = TWO_IMAGES + [[[3, 3, 0, 255]]]
    stats = class_statistics(hand_made(masks))
    # freq = 5/14, 2/6, 3/4, 2/4 -> median (5/14 + 7/14) / 2 = 3/7.
    assert stats.pixel_counts.tolist() == [5, 2, 3, 2] and stats.present_pixels.tolist() == [14, 6, 4, 4]
    expected = torch.tensor([6 / 5, 9 / 7, 4 / 7, 6 / 7])
    assert torch.allclose(median_frequency_weights(stats), expected)
    assert torch.allclose(median_frequency_weights(stats.pixel_counts, stats.present_pixels), expected)


def test_weights_from_counts_alone_use_the_global_frequency() -> None:
    weights = median_frequency_weights(torch.tensor([4, 2, 3, 0]))
    assert torch.allclose(weights, torch.tensor([0.75, 1.5, 1.0, 0.0]))
    with pytest.raises(ValueError, match="non-negative"):
        median_frequency_weights(torch.tensor([1, -2]))
    with pytest.raises(ValueError, match="present_pixels"):
        median_frequency_weights(torch.tensor([4, 2]), torch.tensor([3, 9]))
    assert median_frequency_weights(torch.tensor([0, 0])).tolist() == [0.0, 0.0]


def test_statistics_read_raw_masks_not_the_transform() -> None:
    def shift_labels(image: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return image[:, :1, :1], torch.zeros((1, 1), dtype=torch.int64)

    dataset = hand_made(TWO_IMAGES, transform=shift_labels)
    assert class_statistics(dataset).pixel_counts.tolist() == [4, 2, 3, 0]


def test_statistics_on_any_dataset_of_pairs() -> None:
    pairs = [(torch.zeros((3, 2, 3), dtype=torch.uint8), torch.tensor(mask)) for mask in TWO_IMAGES]
    assert class_pixel_counts(pairs, 4).tolist() == [4, 2, 3, 0]
    with pytest.raises(ValueError, match="num_classes is needed"):
        class_statistics(pairs)


def test_bad_labels_raise_or_are_skipped(caplog: pytest.LogCaptureFixture) -> None:
    masks = TWO_IMAGES + [[[9, 0]]]
    with pytest.raises(DatasetError, match="label 9"):
        class_statistics(hand_made(masks))
    with caplog.at_level(logging.WARNING, logger="fcnseg.data"):
        stats = class_statistics(hand_made(masks, skip_bad=True))
    assert stats.pixel_counts.tolist() == [4, 2, 3, 0]
    assert "label 9" in caplog.text


def test_synthetic_counts_match_a_direct_count() -> None:
    from fcnseg.data import open_dataset

    dataset = open_dataset("synthetic", None, "val", num_images=6, size=32)
    direct = torch.zeros(7, dtype=torch.int64)
    for index in range(6):
        direct += torch.bincount(dataset[index][1].flatten(), minlength=7)
    assert torch.equal(class_pixel_counts(dataset), direct)
