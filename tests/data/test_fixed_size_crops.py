"""Scale, then crop or pad back to a fixed size: batches of exactly that size, padding only where the scale shrank
the image; and the whole augmentation works on uint8 images."""

from __future__ import annotations

import pytest
import torch

from fcnseg.data import PadCollate, TrainTransform

HEIGHT, WIDTH, IGNORE = 18, 24, 255


def _item(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    image = torch.randint(0, 256, (3, HEIGHT, WIDTH), dtype=torch.uint8, generator=generator)
    mask = torch.randint(0, 11, (HEIGHT, WIDTH), generator=generator)  # no ignore label in the source
    return image, mask


@pytest.mark.parametrize("scale", [0.75, 0.8, 0.9])
def test_a_shrunk_image_is_padded_to_the_size_with_the_ignore_label_and_nothing_more(scale):
    transform = TrainTransform(crop_size=(HEIGHT, WIDTH), scale_range=(scale, scale), hflip=False, ignore_index=IGNORE)
    image, mask = transform(*_item())
    assert image.shape == (3, HEIGHT, WIDTH) and mask.shape == (HEIGHT, WIDTH)
    shrunk = round(HEIGHT * scale) * round(WIDTH * scale)
    assert int((mask == IGNORE).sum()) == HEIGHT * WIDTH - shrunk  # the padding is exactly what the scale removed


@pytest.mark.parametrize("scale", [1.0, 1.1, 1.25])
def test_an_enlarged_image_is_cropped_to_the_size_without_padding(scale):
    transform = TrainTransform(
        crop_size=(HEIGHT, WIDTH), scale_range=(scale, scale), hflip=True, color_jitter=0.1, ignore_index=IGNORE
    )
    for seed in range(5):
        torch.manual_seed(seed)
        image, mask = transform(*_item(seed))
        assert image.shape == (3, HEIGHT, WIDTH) and mask.shape == (HEIGHT, WIDTH)
        assert not (mask == IGNORE).any()


def test_every_batch_of_fixed_size_crops_has_exactly_the_size_while_native_batches_grow():
    fixed = TrainTransform(crop_size=(HEIGHT, WIDTH), scale_range=(0.75, 1.25), ignore_index=IGNORE)
    native = TrainTransform(crop_size=None, scale_range=(0.75, 1.25), ignore_index=IGNORE)
    collate = PadCollate(ignore_index=IGNORE)
    native_sizes = set()
    for batch in range(6):
        torch.manual_seed(batch)
        images, masks = collate([fixed(*_item(batch * 4 + k)) for k in range(4)])
        assert images.shape == (4, 3, HEIGHT, WIDTH) and masks.shape == (4, HEIGHT, WIDTH)
        torch.manual_seed(batch)
        native_sizes.add(tuple(collate([native(*_item(batch * 4 + k)) for k in range(4)])[0].shape[-2:]))
    # the old setting (crop_size None) pads each batch to its largest scaled image: mostly more than the size
    assert any(h > HEIGHT and w > WIDTH for h, w in native_sizes)


def test_every_step_of_the_augmentation_gets_and_gives_uint8_images():
    transform = TrainTransform(crop_size=(HEIGHT, WIDTH), scale_range=(0.75, 1.25), hflip=True, color_jitter=0.2)
    seen: list[tuple[str, torch.dtype]] = []

    def spy(step):
        def run(*inputs):
            seen.append((type(step).__name__, inputs[0].dtype))
            return step(*inputs)

        return run

    transform.pipeline.transforms = [spy(step) for step in transform.pipeline.transforms]
    names = {"RandomScale", "RandomCrop", "RandomHorizontalFlip", "ColorJitter"}
    for seed in range(4):
        torch.manual_seed(seed)
        image, mask = transform(*_item(seed))
        assert image.dtype == torch.uint8 and mask.dtype == torch.int64
    assert {name for name, _ in seen} == names
    assert all(dtype == torch.uint8 for _, dtype in seen), seen
