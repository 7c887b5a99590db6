"""The synthetic shapes set: deterministic, configurable, colour-uninformative, texture-informative."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from fcnseg.data import SHAPE_CLASSES, DatasetError, PadCollate, SyntheticShapes, TrainTransform, open_dataset


def test_items_have_the_contract_types() -> None:
    dataset = open_dataset("synthetic", None, "train", num_images=5, size=(40, 56))
    assert len(dataset) == 5
    image, mask = dataset[0]
    assert image.dtype == torch.uint8 and image.shape == (3, 40, 56)
    assert mask.dtype == torch.int64 and mask.shape == (40, 56)
    assert dataset.classes == list(SHAPE_CLASSES) and dataset.num_classes == 7
    assert dataset.ignore_index == 255 and len(dataset.palette) == 7
    assert dataset.palette[1] == (128, 0, 0)  # VOC colours
    assert "train" in dataset.describe(3) and "3" in dataset.describe(3)
    assert len(dataset.ids) == 5


def test_deterministic_per_index_and_different_across_indices_splits_seeds() -> None:
    first = SyntheticShapes("train", num_images=4, size=48)
    again = SyntheticShapes("train", num_images=4, size=48)
    image, mask = first[2]
    assert torch.equal(image, again[2][0]) and torch.equal(mask, again[2][1])
    assert torch.equal(image, first[2][0])  # reading twice gives the same item
    assert not torch.equal(image, first[3][0])
    assert not torch.equal(image, SyntheticShapes("val", num_images=4, size=48)[2][0])
    assert not torch.equal(image, SyntheticShapes("train", num_images=4, size=48, seed=1)[2][0])
    # An item does not depend on how many items the set has.
    assert torch.equal(image, SyntheticShapes("train", num_images=100, size=48)[2][0])


def test_default_counts_and_options() -> None:
    assert len(SyntheticShapes("train")) == 512 and len(SyntheticShapes("val")) == 64
    three = SyntheticShapes("train", num_images=20, size=48, num_classes=3)
    assert three.classes == ["background", "disc", "square"]
    labels = set(torch.cat([three[i][1].flatten() for i in range(20)]).unique().tolist())
    assert labels == {0, 1, 2}
    named = SyntheticShapes("train", num_images=20, size=48, classes=["background", "ring", "dot"])
    labels = set(torch.cat([named[i][1].flatten() for i in range(20)]).unique().tolist())
    assert labels == {0, 1, 2}
    varied = SyntheticShapes("train", num_images=12, size_range=(32, 64))
    sizes = {tuple(varied[i][0].shape[-2:]) for i in range(12)}
    assert len(sizes) > 3 and all(32 <= h <= 64 and 32 <= w <= 64 for h, w in sizes)


@pytest.mark.parametrize(
    "options, message",
    [
        ({"num_classes": 9}, "num_classes must be 2..7"),
        ({"classes": ["disc", "background"]}, "starting with 'background'"),
        ({"classes": ["background", "hexagon"]}, "hexagon"),
        ({"num_images": 0}, "num_images must be >= 1"),
        ({"size": 4}, "at least 8x8"),
    ],
)
def test_bad_options_are_clear_errors(options: dict, message: str) -> None:
    with pytest.raises(DatasetError, match=message):
        SyntheticShapes("train", **options)


def test_transform_is_applied() -> None:
    transform = TrainTransform(crop_size=(24, 20), scale_range=(0.8, 1.2))
    dataset = open_dataset("synthetic", None, "train", num_images=3, size=48, transform=transform)
    image, mask = dataset[0]
    assert image.shape == (3, 24, 20) and mask.shape == (24, 20) and image.dtype == torch.uint8


def test_root_is_refused() -> None:
    with pytest.raises(DatasetError, match="no root folder"):
        open_dataset("synthetic", "/some/folder", "train")


def _pixels_by_class(dataset: SyntheticShapes, count: int) -> list[np.ndarray]:
    pixels: list[list[np.ndarray]] = [[] for _ in dataset.classes]
    for index in range(count):
        image, mask = dataset.render(index)
        for label in range(dataset.num_classes):
            pixels[label].append(image[mask == label].astype(np.float64))
    return [np.concatenate(chunks) for chunks in pixels]


def test_class_imbalance_and_every_class_present() -> None:
    dataset = SyntheticShapes("train", size=64)
    masks = np.stack([dataset.render(i)[1] for i in range(60)])
    share = np.bincount(masks.ravel(), minlength=7) / masks.size
    assert (share > 0).all()
    assert share[0] > 0.6  # background dominates
    assert share[SHAPE_CLASSES.index("dot")] < 0.03  # small objects are rare
    assert share.argmin() == SHAPE_CLASSES.index("dot")
    assert share[1:].max() < 0.1


def _colour_histograms(split: str, count: int) -> np.ndarray:
    """(classes, 64) pixel counts per class over a 4x4x4 quantisation of RGB."""
    dataset = SyntheticShapes(split, size=48)
    histograms = np.zeros((dataset.num_classes, 64))
    for index in range(count):
        image, mask = dataset.render(index)
        bins = (image // 64).astype(np.int64)
        code = bins[..., 0] * 16 + bins[..., 1] * 4 + bins[..., 2]
        np.add.at(histograms, (mask.ravel(), code.ravel()), 1)
    return histograms


def test_per_pixel_colour_does_not_tell_the_class() -> None:
    """The best classifier that sees one pixel's colour is no better than chance.

    Fit P(colour bin | class) on train, classify each val pixel by the most likely
    class (equal priors, so the rare classes count as much as the background) and
    measure the mean per-class accuracy: chance is 1/7.
    """
    train, val = _colour_histograms("train", 150), _colour_histograms("val", 150)
    likelihood = (train + 1) / (train + 1).sum(1, keepdims=True)
    predicted = likelihood.argmax(0)  # class chosen for each colour bin
    per_class = [(val[c] * (predicted == c)).sum() / val[c].sum() for c in range(len(val))]
    assert np.mean(per_class) < 0.2, per_class


def test_class_colour_statistics_overlap() -> None:
    pixels = _pixels_by_class(SyntheticShapes("val", size=48), 150)
    means = np.stack([p.mean(0) for p in pixels])
    spreads = np.stack([p.std(0) for p in pixels])
    # Class mean colours differ by much less than the colour spread inside any class, and the spreads are alike.
    assert np.abs(means[:, None, :] - means[None, :, :]).max() < 0.5 * spreads.min()
    assert spreads.max() / spreads.min() < 1.3


def test_textures_differ_in_a_neighbourhood() -> None:
    """Discs are striped horizontally (strong vertical gradient), squares vertically, bars both ways;
    the background is locally solid."""
    dataset = SyntheticShapes("train", size=64, noise=0.0)
    names = ("background", "disc", "square", "bar")
    gradients: dict[str, list[list[np.ndarray]]] = {name: [[], []] for name in names}
    for index in range(40):
        image, mask = dataset.render(index)
        grey = image.astype(np.float64).mean(-1)
        down = np.abs(np.diff(grey, axis=0))[:, :-1]
        right = np.abs(np.diff(grey, axis=1))[:-1, :]
        inner = mask[:-1, :-1]
        same = (inner == mask[1:, :-1]) & (inner == mask[:-1, 1:])  # both neighbours in the same region
        for name in names:
            chosen = same & (inner == SHAPE_CLASSES.index(name))
            gradients[name][0].append(down[chosen])
            gradients[name][1].append(right[chosen])
    mean = {name: [np.concatenate(g).mean() for g in pair] for name, pair in gradients.items()}
    assert mean["disc"][0] > 4 * mean["disc"][1]
    assert mean["square"][1] > 4 * mean["square"][0]
    assert 0.5 < mean["bar"][0] / mean["bar"][1] < 2 and min(mean["bar"]) > 0.3 * mean["disc"][0]
    assert max(mean["background"]) < 0.2 * min(mean["disc"][0], mean["square"][1])


def test_dots_have_a_rim() -> None:
    """Noise-free, a dot's inside is one colour and its one-pixel rim another."""
    dataset = SyntheticShapes("train", size=64, noise=0.0, classes=["background", "dot"])
    checked = 0
    for index in range(10):
        image, mask = dataset.render(index)
        dot = mask == 1
        inner = dot.copy()
        inner[1:, :] &= dot[:-1, :]
        inner[:-1, :] &= dot[1:, :]
        inner[:, 1:] &= dot[:, :-1]
        inner[:, :-1] &= dot[:, 1:]
        rim = np.argwhere(dot & ~inner)
        for row, col in np.argwhere(inner)[:5]:
            nearest = rim[np.abs(rim - (row, col)).sum(1).argmin()]
            assert (image[row, col] != image[tuple(nearest)]).any()
            checked += 1
    assert checked >= 10


def test_picklable_and_works_with_dataloader_workers() -> None:
    dataset = SyntheticShapes("val", num_images=6, size_range=(30, 50))
    clone = pickle.loads(pickle.dumps(dataset))
    assert torch.equal(clone[1][0], dataset[1][0])
    loader = DataLoader(dataset, batch_size=3, num_workers=2, collate_fn=PadCollate(fill=(0, 0, 0)))
    batches = list(loader)
    assert len(batches) == 2
    images, masks = batches[0]
    for slot in range(3):
        image, mask = dataset[slot]
        h, w = mask.shape
        assert torch.equal(images[slot, :, :h, :w], image) and torch.equal(masks[slot, :h, :w], mask)
        assert (masks[slot, h:, :] == 255).all() and (masks[slot, :, w:] == 255).all()
